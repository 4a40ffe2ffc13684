import numpy as np
import pytest

from symscale.cli import main
from symscale.data.graph import Structure
from symscale.data.readers import open_dataset, write_structures
from symscale.data.toy import toy_structures


def one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_info_and_convert(tmp_path, capsys):
    structures = toy_structures(6, seed=0)
    structures[1].charge = 1
    write_structures(tmp_path / "a.extxyz", structures)
    assert main(["data", "convert", str(tmp_path / "a.extxyz"), str(tmp_path / "b.aselmdb")]) == 0
    assert len(open_dataset(tmp_path / "b.aselmdb")) == 6
    capsys.readouterr()
    assert main(["data", "info", str(tmp_path / "b.aselmdb")]) == 0
    out = capsys.readouterr().out
    assert "structures: 6" in out and "+1/1: 1" in out and "+0/1: 5" in out and "forces (eV/A)" in out
    assert main(["data", "info", str(tmp_path / "b.aselmdb"), "--neutral-only"]) == 0
    assert "structures: 5" in capsys.readouterr().out


def bad_files(tmp_path):
    good = toy_structures(3, seed=1)
    s = good[0]
    pos = s.positions.copy()
    pos[1] = pos[0]
    cases = {
        "missing.aselmdb": None,
        "forces.aselmdb": [good[1], Structure(s.numbers, s.positions, s.energy, None)],
        "nan.aselmdb": [good[1], Structure(s.numbers, s.positions, s.energy, s.forces * np.nan)],
        "overlap.aselmdb": [good[1], Structure(s.numbers, pos, s.energy, s.forces)],
    }
    for name, structures in cases.items():
        if structures is not None:
            write_structures(tmp_path / name, structures)
    head = "energy=1.0 Properties=species:S:1:pos:R:3:forces:R:3"
    (tmp_path / "truncated.xyz").write_text(f"2\n{head}\nH 0 0 0 0 0 0\nH 0 0 1 0 0 0\n3\n{head}\nH 0 0 0 0 0 0\n")
    (tmp_path / "element.xyz").write_text(f"2\n{head}\nH 0 0 0 0 0 0\nH 0 0 1 0 0 0\n1\n{head}\nQq 0 0 0 0 0 0\n")
    (tmp_path / "empty.xyz").write_text("")
    return list(cases) + ["truncated.xyz", "element.xyz", "empty.xyz"]


def test_each_bad_input_is_one_line_or_a_counted_skip(tmp_path, capsys):
    for name in bad_files(tmp_path):
        err = one_line_error(capsys, ["data", "info", str(tmp_path / name)])
        assert name in err, err
        if name not in ("missing.aselmdb", "empty.xyz"):
            assert "structure 1" in err, err
            assert main(["data", "info", str(tmp_path / name), "--skip-invalid"]) == 0
            assert "skipped 1 invalid" in capsys.readouterr().out


def test_generate_rejects_bad_arguments(tmp_path, capsys):
    one_line_error(capsys, ["data", "generate", "--structures", "0", "--out", str(tmp_path / "x.aselmdb")])
    one_line_error(capsys, ["data", "generate", "--structures", "5", "--out", str(tmp_path / "x.xyz")])
    one_line_error(capsys, ["data", "convert", str(tmp_path / "nope.xyz"), str(tmp_path / "o.aselmdb")])


@pytest.mark.slow
def test_generate_command(tmp_path, capsys):
    out = tmp_path / "g.aselmdb"
    assert main(["data", "generate", "--structures", "8", "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    assert "8 structures" in capsys.readouterr().out

"""Hostile inputs and file-system faults outside the run directory (issue 14, items 1, 4, 10, 11).

Every case asserts one clear line on stderr, a non-zero exit and, where the command writes a user's file,
that no file was changed or left behind. The CLI runs through `symscale.cli.main` (with capsys), except where
today's failure is a signal (SIGBUS) that would kill the test process: those run in a subprocess.

File-system faults come two ways: injected (a writer that raises ENOSPC, EACCES or a torch write error) and
real (a small tmpfs, filled up or remounted read-only; mounting needs root, and the tests that need it say so
in their skip reason).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

import symscale.data.readers as readers
from symscale.ase import SymscaleCalculator
from symscale.cli import main
from symscale.data.readers import open_dataset, write_structures
from symscale.data.toy import toy_structures
from symscale.errors import SymscaleError
from symscale.models.registry import build

FORMATS = (".xyz", ".aselmdb", ".db")


# ----------------------------------------------------------------------------------------------------------
# helpers


def one_line_error(capsys, argv: list[str], *expected: str) -> str:
    """Run the CLI; assert a non-zero exit and exactly one stderr line, holding each of `expected`."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0, f"exit code 0 for {argv}"
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text.lower() in err.lower(), err
    return err


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) with the digest of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_bad_energy(path: Path, structures, frame: int) -> None:
    """An extxyz file whose frame `frame` says `energy=abc` on its comment line."""
    write_structures(path, structures)
    lines = path.read_text().splitlines(keepends=True)
    comments = [i for i, line in enumerate(lines) if "energy=" in line]
    lines[comments[frame]] = re.sub(r"energy=\S+", "energy=abc", lines[comments[frame]])
    path.write_text("".join(lines))


def failing_after(n_ok: int, error: OSError):
    """A stand-in for `readers._to_atoms` that raises `error` at the structure after the first `n_ok`."""
    real = readers._to_atoms
    calls = {"n": 0}

    def to_atoms(s):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise error
        return real(s)

    return to_atoms


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 60-structure extxyz file, one with `energy=abc` in frame 30, and a tiny trained mpnn run."""
    root = tmp_path_factory.mktemp("hostile")
    structures = toy_structures(60, seed=0)
    write_structures(root / "toy.xyz", structures)
    write_bad_energy(root / "bad.xyz", structures, frame=30)
    run = root / "run"
    argv = ["train", "--arch", "mpnn", "--width", "4", "--data", str(root / "toy.xyz"), "--structures", "40"]
    assert main(argv + ["--out", str(run), "--set", "n_val=10", "--no-progress"]) == 0
    (root / "junk.pt").write_bytes(b"this is not a checkpoint\n" * 4)
    (root / "zero.pt").write_bytes(b"")
    (root / "torn.pt").write_bytes((run / "checkpoints" / "final.pt").read_bytes()[:300])
    return root


def _mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"a real full disk needs root to mount a tmpfs (running as uid {os.geteuid()})")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"a real full disk needs `mount -t tmpfs`, which failed here: {done.stderr.decode().strip()}")


@pytest.fixture
def disk(tmp_path):
    """A 256 kB tmpfs (unmounted afterwards)."""
    where = tmp_path / "disk"
    _mount_tmpfs(where, "256k")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> None:
    """Fill `disk` to the last byte."""
    with open(disk / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError as err:
            assert err.errno == errno.ENOSPC


# ----------------------------------------------------------------------------------------------------------
# item 1: convert never destroys its input, and a failed convert leaves OUT as it was


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("alias", ["same", "symlink", "relative", "hardlink"])
def test_convert_into_itself_is_refused(tmp_path, capsys, monkeypatch, ext, alias):
    src = tmp_path / f"data{ext}"
    write_structures(src, toy_structures(12, seed=1))
    out = {"same": src, "symlink": tmp_path / f"link{ext}", "hardlink": tmp_path / f"hard{ext}"}.get(alias)
    if alias == "symlink":
        out.symlink_to(src.name)
    elif alias == "hardlink":
        os.link(src, out)
    elif alias == "relative":
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path / "sub")
        out = Path("..") / src.name
    before = snapshot(tmp_path)
    one_line_error(capsys, ["data", "convert", str(src), str(out)], "same file")
    assert snapshot(tmp_path) == before
    assert len(open_dataset(src)) == 12


def test_convert_onto_a_shard_of_its_input_folder_is_refused(tmp_path, capsys):
    (tmp_path / "shards").mkdir()
    write_structures(tmp_path / "shards" / "0.aselmdb", toy_structures(6, seed=1))
    write_structures(tmp_path / "shards" / "1.xyz", toy_structures(6, seed=2))
    before = snapshot(tmp_path)
    one_line_error(capsys, ["data", "convert", str(tmp_path / "shards"), str(tmp_path / "shards" / "1.xyz")], "same")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("ext", FORMATS)
def test_a_convert_never_touches_its_input(tmp_path, capsys, ext):
    src = tmp_path / "in" / f"data{ext}"
    src.parent.mkdir()
    write_structures(src, toy_structures(12, seed=1))
    before = snapshot(src.parent)
    assert main(["data", "convert", str(src), str(tmp_path / "out.xyz")]) == 0
    assert snapshot(src.parent) == before  # no lock file, no journal, same bytes
    assert set(snapshot(tmp_path)) == {f"in/data{ext}", "out.xyz"}


@pytest.mark.parametrize("ext", FORMATS)
def test_a_convert_that_fails_half_way_leaves_the_existing_output(files, tmp_path, capsys, ext):
    out = tmp_path / f"out{ext}"
    write_structures(out, toy_structures(20, seed=2))
    before = snapshot(tmp_path)
    one_line_error(capsys, ["data", "convert", str(files / "bad.xyz"), str(out)], "structure 30", "energy")
    assert snapshot(tmp_path) == before  # not replaced by the 30 structures read before the bad one
    assert len(open_dataset(out)) == 20


@pytest.mark.parametrize("ext", FORMATS)
def test_an_injected_disk_full_is_one_line_and_leaves_the_existing_output(files, tmp_path, capsys, monkeypatch, ext):
    out = tmp_path / f"out{ext}"
    write_structures(out, toy_structures(20, seed=2))
    before = snapshot(tmp_path)
    monkeypatch.setattr(readers, "_to_atoms", failing_after(25, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    one_line_error(capsys, ["data", "convert", str(files / "toy.xyz"), str(out)], str(out), "no space left")
    assert snapshot(tmp_path) == before
    assert len(open_dataset(out)) == 20


def test_an_injected_permission_error_is_one_line(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.xyz"
    monkeypatch.setattr(readers, "_to_atoms", failing_after(0, PermissionError(errno.EACCES, "Permission denied")))
    one_line_error(capsys, ["data", "convert", str(files / "toy.xyz"), str(out)], str(out), "permission denied")
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("ext", FORMATS)
def test_a_convert_into_a_full_disk_keeps_the_old_output(files, disk, capsys, ext):
    out = disk / f"out{ext}"
    write_structures(out, toy_structures(5, seed=3))
    fill(disk)
    before = snapshot(disk)
    one_line_error(capsys, ["data", "convert", str(files / "toy.xyz"), str(out)], str(out))
    assert snapshot(disk) == before
    assert len(open_dataset(out)) == 5


@pytest.mark.parametrize("ext", FORMATS)
def test_a_convert_into_a_read_only_file_system_is_one_line(files, disk, capsys, ext):
    out = disk / f"out{ext}"
    write_structures(out, toy_structures(5, seed=3))
    readers._close_env(out)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    before = snapshot(disk)
    one_line_error(capsys, ["data", "convert", str(files / "toy.xyz"), str(out)], str(out), "read-only")
    assert snapshot(disk) == before


# ----------------------------------------------------------------------------------------------------------
# item 4: disk full in the other commands, and generation on a full disk


def _fsync_enospc(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_eval_json_on_a_full_disk_is_one_line_and_leaves_nothing(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "fsync", _fsync_enospc)
    out = tmp_path / "metrics.json"
    argv = ["eval", str(files / "run"), "--data", str(files / "toy.xyz"), "--limit", "8", "--json", str(out)]
    one_line_error(capsys, argv, str(out), "no space left")
    assert snapshot(tmp_path) == {}


def test_md_json_on_a_full_disk_is_one_line_and_leaves_no_temporary_file(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "fsync", _fsync_enospc)
    argv = ["md", str(files / "run"), "--structure", str(files / "toy.xyz"), "--steps", "4", "--interval", "2"]
    argv += ["--out", str(tmp_path / "t.xyz"), "--json", str(tmp_path / "md.json")]
    one_line_error(capsys, argv, str(tmp_path / "t.xyz"), "no space left")  # the first write, fsynced now
    assert snapshot(tmp_path) == {}  # no partial trajectory, no .tmp file


def test_train_on_a_full_disk_is_one_line(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "fsync", _fsync_enospc)  # the checkpoint's fsync: an OSError that names no file
    argv = ["train", "--arch", "mpnn", "--width", "4", "--data", str(files / "toy.xyz"), "--structures", "40"]
    one_line_error(capsys, argv + ["--out", str(tmp_path / "r"), "--set", "n_val=10", "--no-progress"], "no space")


def test_a_torch_write_error_is_one_line(files, tmp_path, capsys, monkeypatch):
    def torch_save(*args, **kwargs):  # what torch 2.13 raises when the disk fills during torch.save
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", torch_save)
    argv = ["train", "--arch", "mpnn", "--width", "4", "--data", str(files / "toy.xyz"), "--structures", "40"]
    one_line_error(capsys, argv + ["--out", str(tmp_path / "r"), "--set", "n_val=10", "--no-progress"], "disk")


def test_train_into_a_full_tmpfs_is_one_line(files, disk, capsys):
    fill(disk)
    argv = ["train", "--arch", "mpnn", "--width", "4", "--data", str(files / "toy.xyz"), "--structures", "40"]
    one_line_error(capsys, argv + ["--out", str(disk / "r"), "--set", "n_val=10", "--no-progress"], str(disk))


def test_generate_checks_free_space_before_writing(tmp_path, capsys, monkeypatch):
    free = types.SimpleNamespace(total=10**9, used=10**9 - 10_000, free=10_000)  # 10 kB free
    monkeypatch.setattr(shutil, "disk_usage", lambda path: free)
    out = tmp_path / "g.aselmdb"
    argv = ["data", "generate", "--structures", "8", "--out", str(out), "--workers", "0", "--no-progress"]
    one_line_error(capsys, argv, "free disk", "0.0 MB free")
    assert snapshot(tmp_path) == {}


def generate_in_subprocess(out: Path, check_free_space: bool = True) -> subprocess.CompletedProcess:
    """`symscale data generate --structures 8 --out OUT` in a child process (a SIGBUS there is its exit code,
    -7, not the end of the test session); `check_free_space=False` stands for a disk filled by another
    process after the check."""
    script = textwrap.dedent(
        f"""
        import sys
        import symscale.data.generate as g
        from symscale.cli import main
        if not {check_free_space}:
            g.check_free_space = lambda out, n: None
        sys.exit(main(["data", "generate", "--structures", "8", "--out", {str(out)!r}, "--workers", "0",
                       "--no-progress"]))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("check_free_space", [True, False], ids=["free-space check", "disk filled after it"])
def test_generate_on_a_full_tmpfs_is_one_line_never_sigbus(disk, check_free_space):
    fill(disk)
    before = snapshot(disk)
    done = generate_in_subprocess(disk / "g.aselmdb", check_free_space)
    assert done.returncode == 2, (done.returncode, done.stderr)  # -7 is SIGBUS
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert ("free disk" if check_free_space else "no space left") in err.lower(), err
    assert snapshot(disk) == before


# ----------------------------------------------------------------------------------------------------------
# item 10: tracebacks instead of one line


@pytest.mark.parametrize("command", ["info", "convert"])
def test_a_non_numeric_energy_is_one_line(files, tmp_path, capsys, command):
    argv = ["data", command, str(files / "bad.xyz")] + ([str(tmp_path / "o.aselmdb")] if command == "convert" else [])
    one_line_error(capsys, argv, "bad.xyz", "structure 30", "'abc'")
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("command", ["info", "convert"])
def test_a_non_numeric_energy_is_skipped_with_skip_invalid(files, tmp_path, capsys, command):
    argv = ["data", command, str(files / "bad.xyz"), "--skip-invalid"]
    argv += [str(tmp_path / "o.aselmdb")] if command == "convert" else []
    assert main(argv) == 0
    assert "skipped 1 invalid" in capsys.readouterr().out
    if command == "convert":
        assert len(open_dataset(tmp_path / "o.aselmdb")) == 59


def test_train_on_a_non_numeric_energy_is_one_line(files, tmp_path, capsys):
    argv = ["train", "--arch", "mpnn", "--width", "4", "--data", str(files / "bad.xyz"), "--structures", "40"]
    one_line_error(capsys, argv + ["--out", str(tmp_path / "r"), "--set", "n_val=10", "--no-progress"], "'abc'")


def test_eval_on_a_non_numeric_energy_is_one_line_or_skipped(files, capsys):
    argv = ["eval", str(files / "run"), "--data", str(files / "bad.xyz")]
    one_line_error(capsys, argv, "structure 30")
    assert main(argv + ["--skip-invalid", "--limit", "8"]) == 0
    assert "skipped 1 invalid" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["junk.pt", "zero.pt", "torn.pt"])
@pytest.mark.parametrize("command", ["eval", "md"])
def test_a_bad_checkpoint_is_one_line(files, tmp_path, capsys, name, command):
    ckpt = str(files / name)
    if command == "eval":
        argv = ["eval", ckpt, "--data", str(files / "toy.xyz"), "--json", str(tmp_path / "m.json")]
    else:
        argv = ["md", ckpt, "--structure", str(files / "toy.xyz"), "--steps", "2", "--out", str(tmp_path / "t.xyz")]
    one_line_error(capsys, argv, name, "cannot read checkpoint")
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("name", ["junk.pt", "zero.pt", "torn.pt"])
def test_a_bad_checkpoint_in_the_calculator_is_a_symscale_error(files, name):
    with pytest.raises(SymscaleError, match="cannot read checkpoint") as info:
        SymscaleCalculator(files / name)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize(
    "extra",
    [["--limit", "-5"], ["--limit", "0"], ["--rotations", "0"], ["--batch-size", "0"]],
    ids=lambda e: " ".join(e),
)
def test_eval_counts_must_be_positive(files, tmp_path, capsys, extra):
    argv = ["eval", str(files / "run"), "--data", str(files / "toy.xyz"), "--json", str(tmp_path / "m.json")]
    one_line_error(capsys, argv + extra, extra[0], ">= 1")
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize(
    "extra", [["--interval", "0"], ["--interval", "-3"], ["--steps", "0"], ["--dt", "0"]], ids=lambda e: " ".join(e)
)
def test_md_counts_must_be_positive(files, tmp_path, capsys, extra):
    argv = ["md", str(files / "run"), "--structure", str(files / "toy.xyz"), "--steps", "4"]
    one_line_error(capsys, argv + ["--out", str(tmp_path / "t.xyz")] + extra, extra[0])
    assert snapshot(tmp_path) == {}


def test_eval_json_into_a_missing_folder_is_one_line(files, tmp_path, capsys):
    argv = ["eval", str(files / "run"), "--data", str(files / "toy.xyz"), "--limit", "4"]
    one_line_error(capsys, argv + ["--json", str(tmp_path / "nope" / "m.json")], "does not exist")
    assert snapshot(tmp_path) == {}


# ----------------------------------------------------------------------------------------------------------
# item 11 (and item 10's `num_layers: "abc"`): model options validated centrally


@pytest.mark.parametrize("value", ['"abc"', "2.5", "0", "-1", "-100", "true"])
def test_train_refuses_a_bad_num_layers(files, tmp_path, capsys, value):
    argv = ["train", "--arch", "mpnn", "--width", "4", "--data", str(files / "toy.xyz"), "--structures", "40"]
    argv += ["--out", str(tmp_path / "r"), "--set", "n_val=10", "--no-progress"]
    one_line_error(capsys, argv + ["--set", f"model_overrides={{num_layers: {value}}}"], "num_layers")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("arch", "options"),
    [
        ("mpnn", {"num_layers": 0}),
        ("mpnn", {"num_layers": 2.5}),
        ("mpnn", {"num_layers": "3"}),
        ("mpnn", {"num_radial": -1}),
        ("mpnn", {"avg_neighbors": float("nan")}),
        ("egnn", {"num_vectors": 0}),
        ("gemnet_oc", {"num_blocks": 0}),
        ("gemnet_oc", {"chiral": "false"}),
        ("esen", {"lmax": 0}),
        ("esen", {"num_layers": -2}),
    ],
)
def test_build_refuses_bad_family_options(arch, options):
    name = next(iter(options))
    with pytest.raises(SymscaleError, match=f"option {name}"):
        build(arch, 8, elements=[1, 6, 7, 8], **options)


def test_build_accepts_good_family_options():
    assert build("mpnn", 8, elements=[1, 6], num_layers=2).num_layers == 2
    assert build("gemnet_oc", 8, elements=[1, 6], quad_neighbors=None, aeaint_neighbors=None) is not None
    with pytest.raises(SymscaleError, match="unexpected keyword"):
        build("mpnn", 8, elements=[1, 6], num_layer=2)


# ----------------------------------------------------------------------------------------------------------
# the CLI's handler of file-system faults (any command: study, runs, report, fit write through it too)


def test_the_handler_names_the_path_of_a_fault_anywhere_in_the_chain(tmp_path):
    from symscale.cli import filesystem_error

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "laws.csv"))
    assert "cannot write " + str(tmp_path / "laws.csv") in filesystem_error(full, "study")
    try:
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "status.json"))
        except OSError as err:
            raise RuntimeError("run failed") from err
    except RuntimeError as err:
        assert "read-only file system" in filesystem_error(err, "train")
    assert filesystem_error(ValueError("a bug"), "train") is None
    assert filesystem_error(OSError(errno.ECONNREFUSED, "refused"), "study") is None


def test_the_handler_reads_sqlite_faults(tmp_path):
    from symscale.cli import filesystem_error

    db = tmp_path / "catalogue.sqlite"
    sqlite3.connect(db).execute("CREATE TABLE runs (id TEXT)").connection.commit()
    with pytest.raises(sqlite3.Error) as info:
        sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("INSERT INTO runs VALUES ('a')")
    assert "read-only database" in filesystem_error(info.value, "runs")


def test_a_fault_that_is_not_the_users_keeps_its_traceback(monkeypatch):
    import symscale.cli.models as models_cli

    def broken(args):
        raise OSError(errno.ECONNREFUSED, "connection refused")

    monkeypatch.setattr(models_cli, "run", broken)
    with pytest.raises(OSError, match="connection refused"):
        main(["models"])


@pytest.mark.parametrize(
    "content, args, expected",
    [
        (bytes(range(128, 256)) * 3, [], "not a CSV text file"),
        (b"N,D,loss\n1,2,3\n4,5\n", [], "row 3 has 2 fields, expected 3"),
        (b"N,D,loss\n1,2,3\n4,5,6\n7,8,9\n", ["--derive", "D=10**10**10"], "within floating-point range"),
    ],
    ids=["binary", "ragged", "overflowing-derive"],
)
def test_fit_on_a_bad_table_is_one_line(tmp_path, capsys, content, args, expected):
    table = tmp_path / "t.csv"
    table.write_bytes(content)
    one_line_error(capsys, ["fit", str(table), *args], expected)
    assert table.read_bytes() == content


# ----------------------------------------------------------------------------------------------------------
# the one atomic writer (rundir.atomic_path): on any failure the old file stays and no temporary file is left


def _frontier_table(path: Path) -> Path:
    rows = ["N,D,C,loss"] + [f"{n},{d},{6 * n * d},{2.0 + 50 * (6 * n * d) ** -0.2}" for n in (1e4, 1e5, 1e6)
                             for d in (1e5, 1e6, 1e7)]  # fmt: skip
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("fault", ["fsync", "replace", "write"])
def test_fit_json_on_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, capsys, monkeypatch, fault):
    table = _frontier_table(tmp_path / "t.csv")
    out = tmp_path / "fits.json"
    out.write_text('{"an": "earlier result"}\n')
    before = snapshot(tmp_path)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if fault == "fsync":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(full))
    elif fault == "replace":
        real = os.replace

        def replace(a, b):
            if str(b) == str(out):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), a, b)
            return real(a, b)

        monkeypatch.setattr(os, "replace", replace)
    else:  # the write itself: half of the text reaches the temporary file, then ENOSPC
        import symscale.rundir as rd

        class HalfFull:
            def __init__(self, fh):
                self.fh = fh

            def __getattr__(self, name):
                return getattr(self.fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, text):
                self.fh.write(text[: len(text) // 2])
                raise full

        monkeypatch.setattr(rd, "open", lambda *a, **k: HalfFull(open(*a, **k)), raising=False)
    err = one_line_error(capsys, ["fit", str(table), "--law", "frontier", "--bootstrap", "0", "--json", str(out)],
                         str(out), "no space left")  # fmt: skip
    assert "left as it was" in err, err
    assert snapshot(tmp_path) == before  # the earlier fits.json byte-identical, no fits.json.tmp or .fits.json.*


def test_fit_json_into_a_missing_folder_fails_before_fitting(tmp_path, capsys):
    table = _frontier_table(tmp_path / "t.csv")
    one_line_error(capsys, ["fit", str(table), "--json", str(tmp_path / "no" / "f.json")], "does not exist")
    assert "not possible" not in capsys.readouterr().out  # nothing was fitted or printed first


@pytest.mark.parametrize("raised", [KeyboardInterrupt, ValueError, lambda: OSError(errno.ENOSPC, "full")])
def test_the_atomic_writer_removes_its_temporary_file_on_any_exception(tmp_path, raised):
    from symscale.rundir import atomic_file, atomic_path

    target = tmp_path / "f.txt"
    target.write_text("old\n")
    with pytest.raises((KeyboardInterrupt, ValueError, OSError)) as info:
        with atomic_file(target) as fh:
            fh.write("half of the new")
            raise raised()
    if isinstance(info.value, OSError):  # an error that named no file now names the target
        assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with atomic_path(target, companions=("-lock",)) as tmp:
        tmp.write_text("new\n")
        Path(f"{tmp}-lock").write_text("")  # what an LMDB writer leaves beside its file
    assert target.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_every_atomic_writer_of_the_package_is_the_one_in_rundir():
    """A rename over a target outside `rundir.atomic_path` is a second atomic writer that can leave its
    temporary file behind (as `fit --json` did): only the listed, reasoned exceptions may rename."""
    src = Path(__file__).resolve().parents[1] / "src" / "symscale"
    allowed = {
        "rundir.py": "the atomic writer itself, and the rename that breaks a stale lock",
        "data/index.py": "a cached index is a folder: built in a temporary folder, renamed whole",
        "data/builtin.py": "generation resumes its partial file (a fixed name under a lock), renamed when done",
    }
    renames = re.compile(r"os\.(replace|rename)\(|\btmp\w*\.(replace|rename)\(|\.tmp[\"']|\.rename\(")
    offenders = [
        f"{p.relative_to(src)}:{i}: {line.strip()}"
        for p in sorted(src.rglob("*.py"))
        if str(p.relative_to(src)) not in allowed
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if renames.search(line)
    ]
    assert not offenders, offenders


def test_the_atomic_writer_keeps_permissions(tmp_path):
    from symscale.rundir import write_text

    new, old = tmp_path / "new.txt", tmp_path / "old.txt"
    umask = os.umask(0o022)
    try:
        write_text(new, "x")
    finally:
        os.umask(umask)
    assert new.stat().st_mode & 0o777 == 0o644  # a new file as open() makes it, not mkstemp's private 0600
    old.write_text("x")
    old.chmod(0o640)
    write_text(old, "y")
    assert old.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode


def test_report_on_a_full_disk_is_one_line_and_keeps_the_old_report(tmp_path, capsys, monkeypatch):
    from test_report_render import hand_written_fits, make_study

    root = make_study(tmp_path / "study", archs=("mpnn",))
    (root / "fits.json").write_text(json.dumps(hand_written_fits(root, archs=("mpnn",))))
    (root / "report").mkdir()
    for name in ("report.md", "report.html"):  # an earlier report
        (root / "report" / name).write_text(f"an earlier {name}\n")
    before = {name: (root / "report" / name).read_bytes() for name in ("report.md", "report.html")}
    monkeypatch.setattr(os, "fsync", _fsync_enospc)
    one_line_error(capsys, ["report", str(root)], str(root / "report"), "no space left")  # the file it was writing
    assert {name: (root / "report" / name).read_bytes() for name in before} == before  # old report whole
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]

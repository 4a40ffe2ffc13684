import numpy as np
import pytest

from symscale.data.graph import Structure
from symscale.data.readers import open_dataset, write_structures
from symscale.data.toy import toy_structures
from symscale.errors import SymscaleError


def same(a: Structure, b: Structure, atol=0.0):
    assert np.array_equal(a.numbers, b.numbers)
    np.testing.assert_allclose(a.positions, b.positions, atol=atol, rtol=0)
    np.testing.assert_allclose(a.forces, b.forces, atol=atol, rtol=0)
    assert a.energy == pytest.approx(b.energy, abs=atol)
    assert (a.charge, a.spin) == (b.charge, b.spin)


@pytest.mark.parametrize("ext,atol", [(".aselmdb", 0.0), (".db", 0.0), (".extxyz", 1e-7)])
def test_round_trip(tmp_path, ext, atol):
    structures = toy_structures(12, seed=1)
    structures[3].charge, structures[3].spin = -1, 2
    assert write_structures(tmp_path / f"a{ext}", structures) == 12
    ds = open_dataset(tmp_path / f"a{ext}")
    assert len(ds) == 12
    for i in (0, 3, 11, -1):
        same(ds[i], structures[i], atol)
    assert ds[0].info["source"] == "symscale"


def omol25_file(path, n=10):
    """Written directly with ase-db-backends, the way fairchem writes OMol25 (charged rows included)."""
    import ase.db
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    expected = []
    db = ase.db.connect(str(path), use_lock_file=False)
    for i in range(n):
        atoms = Atoms(
            "CH4",
            positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]]
            + rng.normal(0, 0.05, (5, 3)),
        )
        energy, forces = float(-1000 + i), rng.normal(size=(5, 3))
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        charge, spin = [(0, 1), (1, 2), (0, 3), (-1, 1)][i % 4]
        db.write(atoms, data={"charge": charge, "spin": spin, "source": f"omol:{i}"})
        expected.append((atoms.positions.copy(), energy, forces, charge, spin))
    db.close()
    del db
    return expected


def test_omol25_schema_and_neutral_filter(tmp_path):
    expected = omol25_file(tmp_path / "omol.aselmdb")
    ds = open_dataset(tmp_path / "omol.aselmdb")
    assert len(ds) == 10
    for i, (pos, e, f, c, m) in enumerate(expected):
        s = ds[i]
        np.testing.assert_array_equal(s.positions, pos)
        np.testing.assert_array_equal(s.forces, f)
        assert (s.energy, s.charge, s.spin, s.info["source"]) == (e, c, m, f"omol:{i}")
    neutral = open_dataset(tmp_path / "omol.aselmdb", neutral_only=True)
    assert len(neutral) == 3  # rows 0, 4, 8
    assert [neutral[i].info["source"] for i in range(3)] == ["omol:0", "omol:4", "omol:8"]
    assert all((neutral[i].charge, neutral[i].spin) == (0, 1) for i in range(3))


def test_several_files_and_folder_form_one_dataset(tmp_path):
    a, b = toy_structures(5, seed=1), toy_structures(7, seed=2)
    (tmp_path / "shards").mkdir()
    write_structures(tmp_path / "shards" / "0.aselmdb", a)
    write_structures(tmp_path / "shards" / "1.extxyz", b)
    ds = open_dataset(tmp_path / "shards")
    assert len(ds) == 12
    same(ds[5], b[0], 1e-7)
    assert ds.locate(6)[1] == 1
    assert len(open_dataset([tmp_path / "shards" / "1.extxyz", tmp_path / "shards" / "0.aselmdb"])) == 12


def test_extxyz_reads_charge_spin_and_labels(tmp_path):
    text = (
        "2\nenergy=-3.5 charge=1 spin=2 Properties=species:S:1:pos:R:3:forces:R:3\n"
        "H 0 0 0 0.1 0 0\nH 0 0 0.74 -0.1 0 0\n"
        "3\nenergy=-5.0 Properties=species:S:1:pos:R:3:forces:R:3\n"
        "O 0 0 0 0 0 0\nH 0 0 0.96 0 0 1\nH 0.9 0 -0.3 0 0 -1\n"
    )
    (tmp_path / "a.xyz").write_text(text)
    ds = open_dataset(tmp_path / "a.xyz")
    assert len(ds) == 2
    assert (ds[0].energy, ds[0].charge, ds[0].spin) == (-3.5, 1, 2)
    assert ds[1].numbers.tolist() == [8, 1, 1] and (ds[1].charge, ds[1].spin) == (0, 1)
    assert ds[1].forces[1, 2] == 1.0


# ---- bad input: each one a SymscaleError naming the file and the structure, or a counted skip ----


def bad_structures():
    good = toy_structures(4, seed=5)
    missing_forces = Structure(good[1].numbers, good[1].positions, good[1].energy, None)
    nan_energy = Structure(good[2].numbers, good[2].positions, float("nan"), good[2].forces)
    overlap_pos = good[3].positions.copy()
    overlap_pos[1] = overlap_pos[0] + 0.01
    overlap = Structure(good[3].numbers, overlap_pos, good[3].energy, good[3].forces)
    return [good[0], missing_forces, nan_energy, overlap]


@pytest.mark.parametrize("index,message", [(1, "missing forces"), (2, "energy is nan"), (3, "on top of each other")])
def test_bad_structure_raises_with_file_and_index(tmp_path, index, message):
    write_structures(tmp_path / "bad.aselmdb", bad_structures())
    ds = open_dataset(tmp_path / "bad.aselmdb")
    ds[0]
    with pytest.raises(SymscaleError, match=rf"bad.aselmdb: structure {index}: .*{message}"):
        ds[index]


def test_skip_invalid_counts(tmp_path):
    write_structures(tmp_path / "bad.aselmdb", bad_structures())
    ds = open_dataset(tmp_path / "bad.aselmdb", skip_invalid=True)
    assert len(ds) == 1 and ds.skipped == 3
    assert "3 invalid skipped" in ds.description


def test_unknown_element_and_truncated_extxyz(tmp_path):
    (tmp_path / "u.xyz").write_text("1\nenergy=1.0 Properties=species:S:1:pos:R:3:forces:R:3\nXx 0 0 0 0 0 0\n")
    with pytest.raises(SymscaleError, match="u.xyz: structure 0"):
        open_dataset(tmp_path / "u.xyz")[0]
    frames = "2\nenergy=1.0 Properties=species:S:1:pos:R:3:forces:R:3\nH 0 0 0 0 0 0\nH 0 0 1 0 0 0\n"
    (tmp_path / "t.xyz").write_text(frames + "3\nenergy=1.0 Properties=species:S:1:pos:R:3:forces:R:3\nH 0 0 0 0 0 0\n")
    with pytest.raises(SymscaleError, match=r"t.xyz: structure 1: truncated"):
        open_dataset(tmp_path / "t.xyz")
    assert len(open_dataset(tmp_path / "t.xyz", skip_invalid=True)) == 1


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(SymscaleError, match="no such file"):
        open_dataset(tmp_path / "nope.aselmdb")
    (tmp_path / "e.xyz").write_text("")
    with pytest.raises(SymscaleError, match="empty dataset"):
        open_dataset(tmp_path / "e.xyz")
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(SymscaleError, match="invalid dataset file"):
        open_dataset(tmp_path / "x.csv")
    (tmp_path / "g.aselmdb").write_text("not lmdb")
    with pytest.raises(SymscaleError, match="cannot read"):
        open_dataset(tmp_path / "g.aselmdb")

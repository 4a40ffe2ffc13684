"""Label keys (MACE-style REF_energy / REF_forces) and periodic structures refused, in extxyz and ASE databases."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from symscale.data.readers import open_dataset
from symscale.errors import SymscaleError

ENERGY = -12.5
POSITIONS = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.97], [0.0, 0.93, -0.24]]


def _water(pbc: bool = False) -> Atoms:
    atoms = Atoms("OHH", positions=POSITIONS)
    if pbc:
        atoms.set_cell([8.0, 8.0, 8.0])
        atoms.pbc = True
    return atoms


def _forces() -> np.ndarray:
    return np.arange(9, dtype=float).reshape(3, 3) / 10


def _write_mace_xyz(path, frames):
    import ase.io

    for a in frames:
        a.info["REF_energy"] = ENERGY
        a.arrays["REF_forces"] = _forces()
    ase.io.write(path, frames, format="extxyz")


def _write_mace_db(path, frames):
    import ase.db

    with ase.db.connect(str(path)) as db:
        for a in frames:
            db.write(a, key_value_pairs={"REF_energy": ENERGY}, data={"REF_forces": _forces()})


@pytest.mark.parametrize("writer,suffix", [(_write_mace_xyz, "xyz"), (_write_mace_db, "db")])
def test_ref_keys_are_read_when_named(tmp_path, writer, suffix):
    path = tmp_path / f"mace.{suffix}"
    writer(path, [_water(), _water()])
    with pytest.raises(SymscaleError, match="missing energy.*'energy'.*energy-key"):
        open_dataset(path)[0]
    s = open_dataset(path, energy_key="REF_energy", forces_key="REF_forces")[1]
    assert s.energy == pytest.approx(ENERGY)
    np.testing.assert_allclose(s.forces, _forces())


def test_ref_keys_in_aselmdb(tmp_path):
    pytest.importorskip("lmdb")
    from ase.db import connect

    path = tmp_path / "mace.aselmdb"
    with connect(str(path), type="aselmdb") as db:
        db.write(_water(), key_value_pairs={"REF_energy": ENERGY}, data={"REF_forces": _forces()})
    s = open_dataset(path, energy_key="REF_energy", forces_key="REF_forces")[0]
    assert s.energy == pytest.approx(ENERGY)
    np.testing.assert_allclose(s.forces, _forces())


@pytest.mark.parametrize("writer,suffix", [(_write_mace_xyz, "xyz"), (_write_mace_db, "db")])
def test_periodic_structure_is_refused_with_file_and_row(tmp_path, writer, suffix):
    path = tmp_path / f"periodic.{suffix}"
    writer(path, [_water(), _water(pbc=True)])
    ds = open_dataset(path, energy_key="REF_energy", forces_key="REF_forces")
    assert ds[0].energy == pytest.approx(ENERGY)  # the molecule reads
    with pytest.raises(SymscaleError) as err:
        ds[1]
    message = str(err.value)
    assert str(path) in message and "structure 1" in message and "periodic" in message
    assert "\n" not in message


def test_cell_without_pbc_is_a_molecule(tmp_path):
    path = tmp_path / "boxed.xyz"
    a = _water()
    a.set_cell([10.0, 10.0, 10.0])
    _write_mace_xyz(path, [a])
    assert len(open_dataset(path, energy_key="REF_energy", forces_key="REF_forces")[0]) == 3


def test_run_config_and_spec_carry_the_keys_to_the_reader(tmp_path):
    from symscale.config import RunConfig
    from symscale.data.prefix import open_data
    from symscale.study.spec import parse_spec

    path = tmp_path / "mace.xyz"
    _write_mace_xyz(path, [_water()])
    plain = RunConfig.from_dict({"arch": "mpnn", "width": 8, "data": {"source": str(path)}})
    cfg = plain.updated({"energy_key": "REF_energy", "forces_key": "REF_forces"})
    assert open_data(cfg)[0].energy == pytest.approx(ENERGY)
    assert cfg.config_hash() != plain.config_hash()  # other labels, another run
    families = [{"arch": "mpnn", "widths": [8]}]
    dataset = {"path": str(path), "energy_key": "REF_energy", "forces_key": "REF_forces"}
    spec = parse_spec({"name": "keys", "dataset": dataset, "families": families})
    assert spec.dataset.run_keys()["energy_key"] == "REF_energy"
    with pytest.raises(SymscaleError, match="dataset.energy_key"):
        parse_spec({"name": "keys", "dataset": {"path": str(path), "energy_key": 3}, "families": families})


def test_default_keys_leave_run_ids_unchanged():
    from symscale.config import RunConfig

    cfg = RunConfig.from_dict({"arch": "mpnn", "width": 8})
    assert "energy_key" not in cfg.identity()["data"] and "forces_key" not in cfg.identity()["data"]
    assert cfg.to_dict()["data"]["energy_key"] == "energy"  # still written into the resolved config


def test_data_info_cli_reads_ref_keys(tmp_path, capsys):
    from symscale.cli import main

    path = tmp_path / "mace.xyz"
    _write_mace_xyz(path, [_water(), _water()])
    assert main(["data", "info", str(path)]) == 2
    assert "missing energy" in capsys.readouterr().err
    assert main(["data", "info", str(path), "--energy-key", "REF_energy", "--forces-key", "REF_forces"]) == 0
    assert "structures: 2" in capsys.readouterr().out


def test_train_options_set_the_label_keys():
    from symscale.cli import build_parser
    from symscale.cli.train import config_from_args

    args = build_parser().parse_args(
        ["train", "--arch", "mpnn", "--width", "8", "--out", "run", "--energy-key", "REF_energy"]
        + ["--forces-key", "REF_forces"]
    )
    cfg = config_from_args(args)
    assert (cfg.data.energy_key, cfg.data.forces_key) == ("REF_energy", "REF_forces")

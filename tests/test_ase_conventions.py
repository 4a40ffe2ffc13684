"""The calculator's conventions: device="auto", charge/spin in atoms.info (warning, check_state)."""

from __future__ import annotations

import logging

import pytest
import torch
from ase import Atoms

from symscale.ase import SymscaleCalculator, resolve_device
from symscale.errors import SymscaleError
from symscale.models.registry import build


def _model():
    torch.manual_seed(0)
    return build("mpnn", 8, elements=[1, 6, 8]).double().eval()


def _methanol() -> Atoms:
    positions = [[0, 0, 0], [1.42, 0, 0], [-0.36, 1.03, 0], [-0.36, -0.51, 0.89], [-0.36, -0.51, -0.89], [1.75, 0.9, 0]]
    return Atoms("COHHHH", positions=positions)


def test_device_auto_picks_what_is_available():
    calc = SymscaleCalculator(_model(), device="auto")
    assert calc.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert next(calc.model.parameters()).device.type == calc.device.type


def test_unknown_device_is_one_line():
    with pytest.raises(SymscaleError, match="device"):
        resolve_device("gpu")


def test_charged_structure_warns_once_per_calculator(caplog):
    calc = SymscaleCalculator(_model())
    atoms = _methanol()
    atoms.calc = calc
    with caplog.at_level(logging.WARNING, logger="symscale.ase"):
        atoms.get_potential_energy()
        assert not caplog.records  # neutral singlet: nothing to say
        atoms.info["charge"] = 1
        atoms.info["spin"] = 2
        atoms.get_potential_energy()
        atoms.info["charge"] = -1
        atoms.get_potential_energy()
    warnings = [r for r in caplog.records if "ignores charge and spin" in r.getMessage()]
    assert len(warnings) == 1 and "charge 1" in warnings[0].getMessage()
    other = _methanol()
    other.info["spin"] = 3
    other.calc = SymscaleCalculator(_model())
    with caplog.at_level(logging.WARNING, logger="symscale.ase"):
        other.get_potential_energy()
    assert sum("ignores charge and spin" in r.getMessage() for r in caplog.records) == 2


def test_check_state_tracks_charge_and_spin_in_info():
    calc = SymscaleCalculator(_model())
    atoms = _methanol()
    atoms.calc = calc
    atoms.get_potential_energy()
    assert calc.check_state(atoms) == []
    atoms.info["charge"] = 1
    assert "info" in calc.check_state(atoms)
    seen = []
    original = calc.calculate
    calc.calculate = lambda *a, **k: seen.append(1) or original(*a, **k)
    atoms.get_potential_energy()  # the charge changed: recomputed, not served from the cache
    assert seen == [1]
    atoms.get_potential_energy()
    assert seen == [1]
    atoms.info["comment"] = "not a state change"
    assert calc.check_state(atoms) == []

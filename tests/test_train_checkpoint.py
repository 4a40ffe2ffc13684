"""Checkpoints (atomic, weights-only, versioned), the loss, and schedule-free's averaged weights."""

from __future__ import annotations

import pytest
import torch

from symscale.data.graph import collate
from symscale.data.toy import toy_structures
from symscale.errors import SymscaleError
from symscale.models.base import ModelOutput
from symscale.models.registry import build
from symscale.train.checkpoint import FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint
from symscale.train.loss import force_field_loss
from symscale.train.optim import averaged_weights, build_optimizer, effective_warmup


def _model():
    torch.manual_seed(0)
    return build("mpnn", 8, elements=[1, 6, 7, 8], element_energies={1: -10.0}, force_scale=2.0)


def test_checkpoint_roundtrip_is_weights_only_and_atomic(tmp_path):
    model = _model()
    path = tmp_path / "checkpoints" / "last.pt"
    stats = {"element_energies": {"1": -10.0}, "force_rms": 2.0}
    save_checkpoint(path, {"model": model.model_config(), "model_state": model.state_dict(), "stats": stats})
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file left
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION
    loaded, ckpt = load_model(tmp_path)  # a run directory works too
    batch = collate(toy_structures(3, seed=0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).energy, model.eval()(batch).energy)
    assert ckpt["model"]["arch"] == "mpnn"


def test_a_checkpoint_from_before_a_family_revision_rebuilds_the_model_it_was_trained_as(tmp_path):
    """config.MODEL_REVISIONS: an mpnn checkpoint without a revision (made with r_ij / r_cut) rebuilds with
    vector_input="cutoff", not today's r_ij / r^2, so its energies are the ones it was trained to give."""
    old = build("mpnn", 8, elements=[1, 6, 7, 8], vector_input="cutoff")
    config = old.model_config()
    assert config.pop("revision") == 2 and config["overrides"] == {"vector_input": "cutoff"}
    config["overrides"] = {}  # what a checkpoint of revision 1 holds: the input was not an option then
    save_checkpoint(tmp_path / "old.pt", {"model": config, "model_state": old.state_dict(), "stats": {}})
    loaded, _ = load_model(tmp_path / "old.pt")
    assert loaded.vector_input == "cutoff"
    batch = collate(toy_structures(3, seed=0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).energy, old.eval()(batch).energy)
    new = build("mpnn", 8, elements=[1, 6, 7, 8])
    save_checkpoint(tmp_path / "new.pt", {"model": new.model_config(), "model_state": new.state_dict(), "stats": {}})
    assert load_model(tmp_path / "new.pt")[0].vector_input == "inverse"


def test_a_family_revision_changes_its_run_ids_and_no_other():
    """A finished run of the old MPNN is not reused by a study of the new one; other families' ids stay."""
    from symscale import config as config_mod
    from symscale.config import RunConfig

    mpnn, egnn = RunConfig.from_dict({"arch": "mpnn", "width": 8}), RunConfig.from_dict({"arch": "egnn", "width": 8})
    before = {c.arch: c.config_hash() for c in (mpnn, egnn)}
    revisions = config_mod.MODEL_REVISIONS
    try:
        config_mod.MODEL_REVISIONS = {}
        old = {c.arch: c.config_hash() for c in (mpnn, egnn)}
    finally:
        config_mod.MODEL_REVISIONS = revisions
    assert before["mpnn"] != old["mpnn"] and before["egnn"] == old["egnn"]


def test_newer_format_is_a_clear_error(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(SymscaleError, match="newer"):
        load_checkpoint(path)
    with pytest.raises(SymscaleError, match="no checkpoint"):
        load_checkpoint(tmp_path)


def test_loss_is_in_units_of_the_force_rms():
    batch = collate(toy_structures(2, seed=0), dtype=torch.float64)
    n = batch.n_atoms.double()
    pred = ModelOutput(energy=batch.energy + 2.0 * n, forces=batch.forces + torch.tensor([3.0, 0.0, 4.0]).double())
    terms = force_field_loss(pred, batch, force_rms=0.5, energy_weight=1.0, force_weight=2.0)
    assert float(terms.energy) == pytest.approx(2.0 / 0.5)  # 2 eV/atom over 0.5 eV/A x 1 A
    assert float(terms.forces) == pytest.approx(5.0 / 0.5)  # |(3, 0, 4)| = 5 eV/A
    assert float(terms.total) == pytest.approx(4.0 + 2 * 10.0)


def test_averaged_weights_are_schedule_free_x_inside_and_y_outside():
    model = _model()
    opt = build_optimizer(model, 1e-2, warmup_steps=effective_warmup(100, 20))
    batch = collate(toy_structures(4, seed=1))
    for _ in range(5):
        force_field_loss(model(batch), batch, 1.0).total.backward()
        opt.step()
        opt.zero_grad()
    beta1 = opt.param_groups[0]["betas"][0]
    y = [p.detach().clone() for p in model.parameters()]
    z = [opt.state[p]["z"].clone() for p in model.parameters()]
    with averaged_weights(opt, model):
        assert not model.training
        for p, yp, zp in zip(model.parameters(), y, z):
            torch.testing.assert_close(p.detach(), yp + (1 - 1 / beta1) * (zp - yp))  # x from y and z
        assert any(not torch.equal(p.detach(), yp) for p, yp in zip(model.parameters(), y))
    assert model.training
    for p, yp in zip(model.parameters(), y):
        torch.testing.assert_close(p.detach(), yp)


def test_mup_groups_scale_the_learning_rate_with_width():
    wide = build("mpnn", 64, elements=[1, 6])
    opt = build_optimizer(wide, 1e-3)
    lrs = {g.get("role"): g["lr"] for g in opt.param_groups}
    assert lrs["hidden"] == pytest.approx(1e-3 * wide.base_width / 64)
    assert lrs["vector"] == pytest.approx(1e-3)

"""RunConfig: validation, unknown keys, flat/dotted/nested keys, overrides, YAML, hash."""

from __future__ import annotations

import re

import pytest

from symscale.config import RunConfig, allowed_keys
from symscale.errors import SymscaleError


def base(**kw) -> RunConfig:
    return RunConfig.from_dict({"arch": "mpnn", "width": 8, **kw})


def test_defaults_roundtrip_and_hash_stable():
    c = base()
    assert c.training.batch_size == 64 and c.training.epochs == 1 and c.evaluation.eval_points == 24
    assert RunConfig.from_dict(c.to_dict()) == c
    assert c.config_hash() == base().config_hash()
    assert len(c.config_hash()) == 16


def test_flat_dotted_and_nested_keys_agree():
    a = base(lr=3e-4)
    b = base(**{"training.lr": 3e-4})
    c = RunConfig.from_dict({"arch": "mpnn", "width": 8, "training": {"lr": 3e-4}})
    assert a == b == c and a.training.lr == 3e-4


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(SymscaleError, match="unknown config key 'training.lrr'.*training.lr"):
        base(**{"training.lrr": 1})
    with pytest.raises(SymscaleError, match="unknown config key 'bogus'"):
        base(bogus=1)
    assert "training.symmetry_loss_rotations" in allowed_keys()


@pytest.mark.parametrize(
    "kw",
    [
        {"width": 0},
        {"lr": -1.0},
        {"augment": "so2"},
        {"batch_size": 2.5},
        {"device": "tpu"},
        {"n_train": 10, "train_fraction": 0.5},
        {"train_fraction": 1.5},
        {"epochs": 0},
    ],
)
def test_invalid_values_are_user_errors(kw):
    with pytest.raises(SymscaleError):
        base(**kw)


def test_with_overrides_parses_values():
    c = base().with_overrides(["lr=1e-3", "training.epochs=3", "model_overrides={num_layers: 2}", "grad_clip=none"])
    assert c.training.lr == 1e-3 and c.training.epochs == 3
    assert dict(c.model_overrides) == {"num_layers": 2} and c.training.grad_clip is None
    with pytest.raises(SymscaleError, match="key=value"):
        base().with_overrides(["lr"])


def test_data_path_shorthand_and_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("arch: egnn\nwidth: 16\ndata: [a.xyz, b.xyz]\ntraining:\n  lr: 1e-3\n")  # YAML reads 1e-3 as str
    c = RunConfig.from_yaml(p)
    assert c.data.source == ("a.xyz", "b.xyz") and c.training.lr == 1e-3
    assert RunConfig.from_dict(c.to_dict()) == c


def test_differences_ignore_runtime_only_keys():
    a = base()
    assert a.differences(a.with_overrides(["threads=4", "progress=off"])) == []
    assert a.config_hash() == a.with_overrides(["threads=4"]).config_hash()
    assert a.differences(a.with_overrides(["lr=0.1"])) == ["training.lr"]


def test_config_is_frozen():
    c = base()
    with pytest.raises(AttributeError):
        c.width = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.model_overrides["x"] = 1  # type: ignore[index]


def test_loader_workers_do_not_change_what_a_run_is():
    a = RunConfig.from_dict({"arch": "mpnn", "width": 8})
    b = RunConfig.from_dict({"arch": "mpnn", "width": 8, "runtime.loader_workers": 4})
    assert b.runtime.loader_workers == 4 and a.config_hash() == b.config_hash()
    with pytest.raises(SymscaleError):
        RunConfig.from_dict({"arch": "mpnn", "width": 8, "runtime.loader_workers": -1})


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("n_val", "5", "a number (int)"),  # a string is never an integer (the study spec refused it already)
        ("tf32", "false", "true or false"),  # a quoted boolean is text, not False
        ("neutral_only", "no", "true or false"),
        ("width", True, "a number (int)"),
    ],
)
def test_strict_values_one_rule_for_config_and_spec(key, value, expected):
    with pytest.raises(SymscaleError, match=re.escape(expected)):
        RunConfig.from_dict({"arch": "mpnn", "width": 4, key: value})
    assert RunConfig.from_dict({"arch": "mpnn", "width": 4, "lr": "1e-3"}).training.lr == 1e-3  # YAML 1.1 float


def test_one_validation_engine_with_bounds_beside_fields():
    """The run config and the study spec use one engine: the rule sits beside the field, `build` applies it."""
    from dataclasses import fields

    from symscale.config import Bound, TrainingConfig, build
    from symscale.study.spec import SlurmSpec

    bounds = {f.name: f.metadata["bound"] for f in fields(TrainingConfig) if "bound" in f.metadata}
    assert bounds["batch_size"] == Bound(minimum=1)
    assert {f.name for f in fields(SlurmSpec) if "bound" in f.metadata} >= {"time_min", "poll_s", "qos"}
    with pytest.raises(SymscaleError, match=re.escape("invalid training.batch_size: got 0, expected an integer >= 1")):
        RunConfig.from_dict({"arch": "mpnn", "width": 4, "batch_size": 0})
    with pytest.raises(
        SymscaleError, match=re.escape("invalid executor.slurm.time_min: got 0, expected an integer >= 1")
    ):
        build(SlurmSpec, "executor.slurm", {"time_min": 0})
    with pytest.raises(
        SymscaleError, match=re.escape("invalid executor.slurm.time_min: got '5', expected a number (int)")
    ):
        build(SlurmSpec, "executor.slurm", {"time_min": "5"})  # the same number rule as RunConfig's
    assert build(SlurmSpec, "executor.slurm", {"time_min": 5, "mem_gb": "2e1"}).mem_gb == 20.0


def test_prefix_is_the_one_name_and_the_old_name_still_reads_with_the_same_run_id():
    new = RunConfig.from_dict({"arch": "egnn", "width": 16, "prefix": 0.3, "n_val": 50})
    assert new.data.prefix == 0.3 and "prefix" in new.to_dict()["data"]
    for old in ({"train_fraction": 0.3}, {"data.train_fraction": 0.3}, {"data": {"train_fraction": 0.3}}):
        assert RunConfig.from_dict({"arch": "egnn", "width": 16, "n_val": 50, **old}) == new
    # the id of this run as the code before the rename computed it (commit f6b49d4): resumed studies find it
    # (an egnn run: mpnn ids changed with its revision 2, config.MODEL_REVISIONS; f6b49d4 gave 4d8233b0806a3f5f
    # for this mpnn config)
    assert new.config_hash() == "529858e86e4acdcc"
    assert new.with_overrides(["train_fraction=0.5"]).data.prefix == 0.5
    with pytest.raises(SymscaleError, match="not both"):
        RunConfig.from_dict({"arch": "mpnn", "width": 4, "data": {"train_fraction": 0.3, "prefix": 0.3}})

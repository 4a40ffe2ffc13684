"""Study specs: validation errors name the key and the allowed values; run ids are deterministic."""

from __future__ import annotations

import pytest
import yaml

from symscale.config import RunConfig
from symscale.errors import SymscaleError
from symscale.study.spec import expand_runs, load_spec, parse_spec, run_id


def _raw(**extra):
    raw = {
        "name": "tiny",
        "dataset": {"path": "/tmp/x.xyz", "val": 5},
        "families": [{"arch": "mpnn", "widths": [4, 8]}, {"arch": "egnn", "widths": [4]}],
        "prefixes": [0.5, 1.0],
        "seeds": [0, 1],
        "training": {"batch_size": 4, "lr": 1e-3},
    }
    raw.update(extra)
    return raw


@pytest.mark.parametrize(
    "patch, words",
    [
        ({"bogus": 1}, ["unknown key 'bogus' in study spec", "allowed:", "families"]),
        ({"dataset": {"path": "a", "size": 3}}, ["unknown key 'size' in dataset", "builtin"]),
        ({"dataset": {"path": "a", "builtin": 30}}, ["exactly one of 'builtin'"]),
        ({"families": [{"arch": "mpnn", "widths": [4], "depth": 2}]}, ["unknown key 'depth' in families[0]", "ladder"]),
        ({"families": [{"arch": "mpnn"}]}, ["exactly one of 'ladder'"]),
        (
            {"families": [{"arch": "mpnn", "widths": [0]}]},
            ["family 'mpnn' at width 0", "invalid width: got 0, expected an int"],
        ),
        ({"prefixes": [0.0]}, ["invalid prefixes[]", "(0, 1]"]),
        ({"modes": ["rotations"]}, ["invalid modes[]: got 'rotations'", "augmentation", "symmetry_loss"]),
        ({"executor": {"kind": "k8s"}}, ["invalid executor.kind: got 'k8s'", "local, slurm, ray"]),
        ({"executor": {"slurm": {"queue": "gpu"}}}, ["unknown key 'queue' in executor.slurm", "partition"]),
        ({"executor": {"workers": 0}}, ["invalid executor.workers: got 0"]),
        ({"executor": {"slurm": {"array_parallelism": 8}}}, ["array_parallelism is now max_running"]),
        ({"executor": {"slurm": {"qos": ""}}}, ["invalid executor.slurm.qos: got ''", "non-empty string"]),
        ({"executor": {"slurm": {"gpus_per_task": "1"}}}, ["invalid executor.slurm.gpus_per_task: got '1'"]),
        ({"executor": {"slurm": {"setup": [1]}}}, ["invalid executor.slurm.setup", "shell lines"]),
        ({"executor": {"slurm": {"extra": {"exclusive": False}}}}, ["executor.slurm.extra.exclusive", "true"]),
        ({"executor": {"ray": {"cpus_per_run": -1}}}, ["invalid executor.ray.cpus_per_run: got -1"]),
        ({"seeds": []}, ["invalid seeds: got []", "non-empty list"]),
        ({"training": {"learning_rate": 1}}, ["unknown config key 'learning_rate'", "training.lr"]),
    ],
)
def test_invalid_spec_names_key_and_allowed(patch, words):
    with pytest.raises(SymscaleError) as err:
        expand_runs(parse_spec(_raw(**patch), source="tiny.yaml"))
    for w in words:
        assert w in str(err.value)


def test_missing_section_and_bad_yaml(tmp_path):
    with pytest.raises(SymscaleError, match="missing key 'families'"):
        parse_spec({"dataset": {"builtin": 100}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed")
    with pytest.raises(SymscaleError, match="not YAML"):
        load_spec(bad)
    with pytest.raises(SymscaleError, match="quickstart"):
        load_spec(tmp_path / "nope.yaml")


def test_expansion_grid_and_deterministic_ids(tmp_path):
    spec = parse_spec(_raw(), source=str(tmp_path / "tiny.yaml"))
    plans = expand_runs(spec)
    assert len(plans) == 3 * 2 * 2  # (2 + 1 widths) x 2 prefixes x 2 seeds
    assert len({p.run_id for p in plans}) == len(plans)
    again = expand_runs(parse_spec(_raw(), source=str(tmp_path / "tiny.yaml")))
    assert [p.run_id for p in plans] == [p.run_id for p in again]
    # the id is a hash of the configuration: any change gives a new id, key order does not matter
    base = {"arch": "mpnn", "width": 4}
    rid = lambda raw: run_id(RunConfig.from_dict(raw))  # noqa: E731
    a = rid({**base, "lr": 1e-3, "batch_size": 4})
    assert a == rid({"batch_size": 4, "lr": 1e-3, **base}) and a.startswith("mpnn-w4-")
    assert a == rid({**base, "lr": 1e-3, "batch_size": 4, "threads": 3})  # threads: same results
    assert a != rid({**base, "batch_size": 4, "lr": 2e-3})
    changed = expand_runs(parse_spec(_raw(training={"batch_size": 8, "lr": 1e-3}), source="tiny.yaml"))
    assert not {p.run_id for p in plans} & {p.run_id for p in changed}


def test_yaml_file_roundtrip(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_raw(dataset={"path": "data.xyz"})))
    spec = load_spec(path, overrides={"executor": {"workers": 2}})
    assert spec.executor.workers == 2
    assert spec.dataset.path == str((tmp_path / "data.xyz").resolve())  # relative to the spec file


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"report": "false"}, "invalid report"),  # issue 14 item 8: read as True before
        ({"dataset": {"builtin": 100, "neutral_only": "false"}}, "invalid dataset.neutral_only"),
        ({"seeds": ["5"]}, "invalid seeds"),
        ({"training": {"batch_size": "5"}}, "batch_size"),  # the run config's rule, the same as the spec's
    ],
)
def test_spec_values_are_strict(tmp_path, change, expected):
    with pytest.raises(SymscaleError, match=expected):
        expand_runs(parse_spec(_raw(**change), source=str(tmp_path / "s.yaml")))


def test_slurm_section_parses_every_sbatch_option():
    slurm = {
        "partition": "gpu", "qos": "high", "account": "chem", "time_min": 60, "mem_gb": 8, "cpus_per_task": 4,
        "gpus_per_task": 2, "constraint": "a100", "setup": "module load cuda", "extra": {"--mail-type": "END"},
        "max_running": 3,
    }  # fmt: skip
    s = parse_spec(_raw(executor={"kind": "slurm", "slurm": slurm}), source="tiny.yaml").executor.slurm
    assert (s.partition, s.qos, s.account, s.time_min, s.mem_gb) == ("gpu", "high", "chem", 60, 8.0)
    assert (s.cpus_per_task, s.gpus_per_task, s.constraint, s.max_running) == (4, 2, "a100", 3)
    assert s.setup == ("module load cuda",) and s.extra == {"mail-type": "END"}
    default = parse_spec(_raw(), source="tiny.yaml").executor
    assert default.slurm.gpus_per_task is None and default.slurm.cpus_per_task is None  # from the run's device
    assert default.workers is None

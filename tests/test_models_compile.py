"""The compiled forward (`runtime.compile: on`, `symscale.train.compilation`): the same energies and forces as
eager for every family, no recompilation per batch, and a fallback to eager (one warning) instead of a crash.

Tolerance of the compiled path against eager, float32, toy molecules: |dE| and |dF| below 1e-4 x (1 + the
largest |E| or |F|) (measured differences are float32 rounding, compiled kernels add in another order).
Compiling costs 2.5-4.5 min per family (mpnn, egnn, esen) on a 2-core CPU at load 9-10: those tests are
slow-marked. gemnet_oc's (several graphs between its eager index code) did not finish within 15 min there and
has not yet been seen to pass.
"""

from __future__ import annotations

import logging

import pytest
import torch

from symscale.config import RunConfig
from symscale.data.graph import collate
from symscale.data.toy import toy_structures
from symscale.errors import SymscaleError
from symscale.models.registry import build
from symscale.rundir import read_metrics
from symscale.train import compilation
from symscale.train.compilation import CompiledForward
from symscale.train.loop import train_run

ELEMENTS = (1, 6, 7, 8)
WIDTHS = {"mpnn": 8, "egnn": 8, "gemnet_oc": 2, "esen": 2}
RTOL = 1e-4


def _model(arch: str, forces: str = "direct") -> torch.nn.Module:
    torch.manual_seed(0)
    return build(arch, WIDTHS[arch], elements=ELEMENTS, cutoff=6.0, forces=forces).eval()


def _batches(sizes=(6, 3, 8, 5)):
    return [collate(toy_structures(n, seed=10 + n, min_atoms=3, max_atoms=12), cutoff=6.0) for n in sizes]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= RTOL * (1.0 + b.abs().max()))


def _graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(WIDTHS))
def test_compiled_forward_matches_eager_and_does_not_recompile_per_batch(arch):
    torch._dynamo.reset()
    model = _model(arch)
    compiled = CompiledForward(model)
    batches = _batches()
    with torch.no_grad():
        model(batches[0])  # the constant tables (so3), as `warm_up` does
        first = compiled(batches[0])
        graphs = _graphs()
        outputs = [first] + [compiled(b) for b in batches[1:]]
        assert compiled.compiled, compiled.reason
        # batches of other sizes reuse the dynamic-shape graphs: no new graph after the first batch
        assert _graphs() == graphs
        for b, out in zip(batches, outputs):
            ref = model(b)
            assert _close(out.energy, ref.energy) and _close(out.forces, ref.forces)


@pytest.mark.slow
def test_a_compiled_training_step_gives_the_eager_gradients():
    torch._dynamo.reset()
    model = _model("mpnn").train()
    compiled = CompiledForward(model)
    batch = _batches((6,))[0]
    compiled.warm_up(batch)
    assert compiled.compiled, compiled.reason
    grads = []
    for forward in (model, compiled):
        out = forward(batch)
        (out.energy.square().sum() + out.forces.square().sum()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        model.zero_grad(set_to_none=True)
    assert all(_close(c, e) for e, c in zip(*grads))


def _failing_compile(*args, **kwargs):
    def fail(*a, **k):
        raise torch._dynamo.exc.TorchDynamoException("lowering failed for a test")

    return fail


def test_a_failed_compilation_warns_once_and_runs_eagerly(monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", _failing_compile)
    model = _model("mpnn")
    compiled = CompiledForward(model)
    batch = _batches((4,))[0]
    with caplog.at_level(logging.WARNING, logger=compilation.__name__), torch.no_grad():
        out = compiled(batch)
        again = compiled(batch)
        ref = model(batch)
    assert not compiled.compiled and "lowering failed for a test" in compiled.reason
    assert len([r for r in caplog.records if "eager mode" in r.getMessage()]) == 1
    assert torch.equal(out.energy, ref.energy) and torch.equal(again.forces, ref.forces)


def test_no_cxx_compiler_and_conservative_training_are_refused_with_a_reason(monkeypatch):
    assert "double backward" in CompiledForward(_model("mpnn", "conservative")).reason
    monkeypatch.setattr(compilation.shutil, "which", lambda name: None)
    assert "C++ compiler" in CompiledForward(_model("mpnn")).reason


def test_a_run_whose_compilation_fails_trains_to_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", _failing_compile)
    config = RunConfig.from_dict({
        "arch": "mpnn", "width": 8, "data": "toy", "n_val": 20, "batch_size": 8, "eval_points": 2,
        "compute_accounting": False, "progress": "off", "equivariance_structures": 0, "compile": "on",
    })  # fmt: skip
    result = train_run(config, tmp_path / "run", dataset=toy_structures(100, seed=1))
    assert result.status == "finished" and len(read_metrics(tmp_path / "run")) == 2
    assert "eager: compilation failed" in (tmp_path / "run" / "train.log").read_text()


def test_runtime_compile_is_a_choice_and_keeps_the_run_id():
    off = RunConfig.from_dict({"arch": "mpnn", "width": 8})
    on = off.updated({"runtime.compile": "on"})
    assert on.runtime.compile == "on" and on.config_hash() == off.config_hash()
    with pytest.raises(SymscaleError, match="compile"):
        off.updated({"compile": "sometimes"})

"""The arithmetic precision of a run: `runtime.precision`, "fp32" (the default) or "bf16".

"bf16" trains under `torch.autocast(device, dtype=torch.bfloat16)` on CPU (AVX512-BF16 or AMX kernels where the
CPU has them) and on CUDA alike; the backward of an op runs in the dtype its forward ran in. No loss scaling:
bf16 has float32's exponent range.

What runs in bf16: the ops on autocast's lower-precision list, which in these models are the dense layers
(`nn.Linear`), `matmul`, `bmm` and `einsum`: every family's linear layers, eSEN's SO(2) convolutions and its
SH <-> S2-grid projections (inputs, projection matrices and outputs rounded to bf16, products accumulated in
float32 inside the kernel), GemNet-OC's bilinear layers and basis sums, the Transformer's attention. Ops off
that list follow their inputs (torch's type promotion): an activation of a bf16 layer output stays bf16, a
product with a float32 tensor (a radial basis, an envelope, a unit vector) is float32.

What stays float32 (the weights' dtype), and where that is decided:
- weights and the optimiser state: autocast rounds a copy of each weight per forward; updates, the
  schedule-free averages and gradient clipping work on the float32 weights (`train.loop`);
- the geometry: distances, unit vectors, edge frames and the radial and angular bases are elementwise
  functions of the float32 positions;
- sums over neighbours: `models.layers.scatter_sum` sums bf16 summands in float32 (and the backward of
  `layers.gather` sums a bf16 gradient in float32 before rounding it once);
- sums over atoms: `models.base.ForceField` casts the per-atom energies and direct forces to float32 before
  the per-structure sum and the element references (in bf16 a total energy of -1e4 eV would be rounded to
  the nearest 64 eV);
- conservative forces, -dE/dx against the float32 positions: float32 tensors, as precise as the bf16
  backward through the network that produces them;
- the loss (from the float32 energies and forces), and the evaluations: validation runs without autocast,
  in float32, so that a bf16 run's validation loss measures its weights with the same evaluator as an fp32
  run, and a study can fit both in one law. FLOPs are counted under the training autocast (a count does not
  depend on the dtype).
"""

from __future__ import annotations

import contextlib

import torch

from symscale.config import RuntimeConfig


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a training forward (and the loss) runs in: bf16 autocast on `device`, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(runtime: RuntimeConfig, device: torch.device) -> str:
    """The precision as the provenance states it: "float32", "bf16 autocast, float32 weights", "float32, TF32"."""
    if runtime.precision == "bf16":
        return f"bf16 autocast, {runtime.dtype} weights"
    return runtime.dtype + (", TF32 matmuls" if runtime.tf32 and device.type == "cuda" else "")

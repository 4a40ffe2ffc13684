"""Symmetry by frames: the unconstrained MPNN made E(3)-equivariant from the outside (`fa_mpnn`, `canonical_mpnn`).

Frame averaging (Puny et al. 2022, "Frame Averaging for Invariant and Equivariant Network Design", ICLR 2022)
turns any backbone phi into an exactly equivariant model by evaluating it in a small set of frames F(x) that
moves with the input, F(R x + t) = R F(x), and averaging:

    E(x)   = 1/|F| sum_{g in F(x)} E_phi(g^T (x - c))                  (energy, invariant)
    F_i(x) = 1/|F| sum_{g in F(x)} g f_phi,i(g^T (x - c))               (direct forces, rotated back, equivariant)

Here c is the centroid of the structure and the frames come from its principal axes: the eigenvectors
Q = [q_1, q_2, q_3] of the covariance C = 1/n sum_i (x_i - c)(x_i - c)^T (ascending eigenvalues). Each axis
is defined only up to sign, so F(x) = {Q diag(s) : s in {+1, -1}^3}, the 8 frames of O(3). The backbone is the
unconstrained `MPNN` of `symscale.models.mpnn`, unchanged (same parameters, same N): all frames of all
structures of a batch go through it in ONE call, on a batch replicated 8 times (the edges do not change, as
distances are preserved). Compute therefore grows 8-fold at equal N, and the FLOP accounting sees it.

Canonicalisation (`canonical_mpnn`; Kaba et al. 2023, "Equivariance with Learned Canonicalization Functions",
learn the frame, the fixed rule below is their baseline) evaluates the backbone in ONE frame Q diag(s) with the
signs fixed by the geometry: s_k = sign(sum_i (q_k . (x_i - c))^3), the third moment (skewness) of the atoms'
projections on axis k. Where a third moment vanishes (|m3_k| < 1e-5 RMS radius^3, e.g. the normal axis of a
planar molecule) the first such axis takes the sign that makes the frame right-handed (det = +1).

Choices, and where this departs from the papers:
- Uniform weights (centroid and covariance of positions, not the mass-weighted inertia tensor): no mass table
  is needed, hydrogens weigh in, and the centroid is the point about which `symscale.models.symmetry` rotates.
  The principal axes of the covariance are those of the uniform-mass inertia tensor.
- 8 frames (O(3)), not 4 (SO(3)): the energy of a molecule and of its mirror image are the same, so the
  model is made E(3)-equivariant (reflections included) as the force field's physics is.
- Degenerate covariance: eigenvectors of a repeated eigenvalue are arbitrary. The model stays exactly
  equivariant and continuous for
    * single atoms (no edges: the backbone sees no positions, and the 8 sign flips average its force to 0),
    * linear molecules (all atoms on one axis: the two arbitrary axes carry zero coordinates, so the backbone's
      input does not depend on them and the sign average removes their force components),
  and it CANNOT be for symmetric and spherical tops (two or three equal non-zero eigenvalues, e.g. NH3, CH4):
  the frame spins freely in the degenerate plane and the output depends on eigh's choice there; near such a
  geometry it varies quickly, and at it the frame is no longer a function of the input (Dym et al. 2024 show
  that no finite frame can be both equivariant and continuous everywhere). tests/test_models_frame_averaging.py
  measures each case. `canonical_mpnn` has one frame, so nothing averages the arbitrary axes away: for single
  atoms and linear molecules its energy is exact but its force components along those axes are not
  equivariant (nor continuous as a molecule straightens), and it is discontinuous wherever a third moment
  changes sign; reflections of planar molecules (normal axis set by handedness) are not exact either.
- The force readout (the last Dense(width, 3) of the MPNN's force head) is applied after the average, not in
  each frame: the average and the readout are both linear, so F = Q (W_k . mean_s s_k x_s + b_k mean_s s_k)_k
  is the same function with the same parameters (`AxisReadout`). Why: muP. In each frame most of f_phi is even
  in the signs and cancels in the average (after 3 Adam steps the per-frame change of the readout's output
  was 2.8e-2 RMS at width 32, the change of the averaged force 5.3e-4), and the cancelled part of that change
  is the readout's update met by features it is not aligned with, a random sum that falls as width^-1/2;
  the muP coordinate check (tests/test_models_mup.py) saw it as a slope of -0.49 for the per-frame readout. After
  the average only the part the model uses is computed (slope +0.06, the same as the force output's).
- Gradients through the eigenvectors (conservative forces) use a degeneracy-safe eigh backward (the
  1 / (lambda_j - lambda_i) factor is set to 0 for equal eigenvalues), so that single atoms and linear
  molecules get finite forces; in those cases the dropped term multiplies a zero (see the derivation in
  `_SafeEigh`), so their forces are still exact.
"""

from __future__ import annotations

import itertools

import torch

from symscale.data.graph import GraphBatch
from symscale.models.base import Symmetry
from symscale.models.layers import Dense
from symscale.models.mpnn import MPNN
from symscale.models.registry import register

# the 8 sign patterns s in {+1, -1}^3 of the O(3) frames, [8, 3]
O3_SIGNS = tuple(itertools.product((1.0, -1.0), repeat=3))
# below this |third moment| / (RMS radius)^3 the canonical sign of an axis is taken as undefined
THIRD_MOMENT_TOL = 1e-5
# eigenvalue gaps (Angstrom^2) below this count as degenerate in the eigh backward
DEGENERATE_GAP = 1e-12


class _SafeEigh(torch.autograd.Function):
    """torch.linalg.eigh of symmetric [..., 3, 3] matrices with a backward that tolerates equal eigenvalues.

    With A = V diag(L) V^T, the backward is A_bar = V (diag(L_bar) + F * (V^T V_bar)) V^T with
    F_ij = 1 / (L_j - L_i) for i != j. For a repeated eigenvalue the eigenvectors are not differentiable and
    torch returns inf or nan; here F_ij = 0 when |L_j - L_i| < DEGENERATE_GAP. For the degenerate cases this
    model is exact on (single atoms, linear molecules), (V^T V_bar)_ij = 0 within the degenerate block, since
    the energy does not depend on the arbitrary axes, so nothing is lost."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
        ctx.save_for_backward(eigenvalues, eigenvectors)
        return eigenvalues, eigenvectors

    @staticmethod
    def backward(ctx, grad_values: torch.Tensor, grad_vectors: torch.Tensor) -> torch.Tensor:
        eigenvalues, eigenvectors = ctx.saved_tensors
        gap = eigenvalues[..., None, :] - eigenvalues[..., :, None]  # [..., 3, 3], L_j - L_i
        safe = gap.abs() > DEGENERATE_GAP
        inverse_gap = torch.where(safe, 1.0 / torch.where(safe, gap, torch.ones_like(gap)), torch.zeros_like(gap))
        inner = eigenvectors.transpose(-1, -2) @ grad_vectors  # [..., 3, 3]
        middle = inverse_gap * inner + torch.diag_embed(grad_values)
        grad = eigenvectors @ middle @ eigenvectors.transpose(-1, -2)
        return 0.5 * (grad + grad.transpose(-1, -2))


def principal_axes(pos: torch.Tensor, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred coordinates in each structure's principal axes, and the axes.

    Args:
        pos: [n_atoms, 3] positions (Angstrom).
        batch: the graph batch (for the structure index and atom counts).

    Returns:
        local: [n_atoms, 3], Q^T (x_i - c): the centred positions in the principal axes (Angstrom).
        axes: [n_structures, 3, 3], Q: columns are the unit principal axes, ascending variance.
    """
    n_structures = batch.num_structures
    counts = batch.n_atoms.to(pos.dtype)[:, None]  # [n_structures, 1]
    centroid = pos.new_zeros(n_structures, 3).index_add(0, batch.batch, pos) / counts  # [n_structures, 3]
    rel = pos - centroid[batch.batch]  # [n_atoms, 3]
    outer = rel[:, :, None] * rel[:, None, :]  # [n_atoms, 3, 3]
    covariance = pos.new_zeros(n_structures, 3, 3).index_add(0, batch.batch, outer) / counts[:, :, None]
    _, axes = _SafeEigh.apply(covariance)  # [n_structures, 3, 3]
    with torch.autocast(pos.device.type, enabled=False):  # the frame is geometry: float32 under bf16 autocast
        local = torch.einsum("aji,aj->ai", axes[batch.batch], rel)  # [n_atoms, 3]
    return local, axes


def canonical_signs(local: torch.Tensor, axes: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
    """The canonical frame's signs per structure, [n_structures, 3] of +-1 (see the module docstring).

    s_k = sign of the third moment of the projections on axis k; where it is below THIRD_MOMENT_TOL times the
    RMS radius cubed, +1, except the first such axis, which makes det(Q diag(s)) = +1."""
    n_structures = batch.num_structures
    counts = batch.n_atoms.to(local.dtype)[:, None]  # [n_structures, 1]
    third = local.new_zeros(n_structures, 3).index_add(0, batch.batch, local**3) / counts  # [n_structures, 3]
    second = local.new_zeros(n_structures, 3).index_add(0, batch.batch, local**2) / counts
    radius3 = second.sum(-1, keepdim=True) ** 1.5  # [n_structures, 1], Angstrom^3 (0 for one atom: all ambiguous)
    ambiguous = third.abs() <= THIRD_MOMENT_TOL * radius3  # [n_structures, 3]
    signs = torch.where(ambiguous, torch.ones_like(third), torch.sign(third)).detach()  # [n_structures, 3]
    handedness = torch.linalg.det(axes.detach()) * signs.prod(-1)  # [n_structures], +-1
    first = torch.nn.functional.one_hot(ambiguous.to(torch.int64).argmax(-1), 3).bool() & ambiguous
    return torch.where(first, signs * handedness[:, None], signs)


def replicate(batch: GraphBatch, copies: int, pos: torch.Tensor) -> GraphBatch:
    """`copies` copies of a batch as one batch (copy k holds structures k*S .. k*S + S - 1), at `pos`
    [copies * n_atoms, 3]. Edges are copied with their atom offsets; labels are dropped."""
    n, s = batch.num_atoms, batch.num_structures
    device = batch.z.device
    atom_offset = torch.arange(copies, device=device) * n  # [copies]
    edges = (batch.edge_index[:, None, :] + atom_offset[None, :, None]).reshape(2, -1)  # [2, copies * n_edges]
    structure = (batch.batch[None, :] + (torch.arange(copies, device=device) * s)[:, None]).reshape(-1)
    return GraphBatch(
        z=batch.z.repeat(copies),
        pos=pos,
        batch=structure,
        edge_index=edges,
        n_atoms=batch.n_atoms.repeat(copies),
        charge=batch.charge.repeat(copies),
        spin=batch.spin.repeat(copies),
    )


class AxisReadout(Dense):
    """The force readout Dense(width, 3) with one input per output axis: y_k = W_k . x_k + m_k b_k.

    Frame averaging is linear and the readout is linear, so the average passes through the readout:
    1/|F| sum_s diag(s) (W x_s + b) has k-th component W_k . (1/|F| sum_s s_k x_s) + b_k (1/|F| sum_s s_k).
    This layer takes the sign-weighted frame averages x_k [..., 3, width] and the sign means m [..., 3]."""

    def forward(self, x: torch.Tensor, sign_mean: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...kc,kc->...k", x, self.weight) + sign_mean * self.bias  # [..., 3]


@register("fa_mpnn")
class FrameAveragedMPNN(MPNN):
    """The unconstrained MPNN averaged over the 8 principal-axis frames of each structure: E(3)-equivariant."""

    symmetry = Symmetry(group="E(3)", nu=2, l=None, rotation_equivariant=True, reflection_equivariant=True)
    base_width = 32

    def __init__(self, width: int, **options) -> None:
        super().__init__(width, **options)
        if self.force_head is not None:  # the same readout (same parameters, same draw), fed frame averages
            readout = self.force_head[-1]
            with torch.random.fork_rng(devices=[]):  # its own draw is overwritten: the stream stays the MPNN's
                axis_readout = AxisReadout(readout.in_features, readout.out_features, readout=True)
            axis_readout.load_state_dict(readout.state_dict())
            self.force_head[-1] = axis_readout

    def frame_signs(self, local: torch.Tensor, axes: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        """Signs s of the frames Q diag(s) of each structure, [n_structures, n_frames, 3]."""
        signs = torch.tensor(O3_SIGNS, dtype=local.dtype, device=local.device)  # [8, 3]
        return signs.expand(batch.num_structures, -1, -1)

    def interactions(self, species: torch.Tensor, pos: torch.Tensor, batch: GraphBatch):
        local, axes = principal_axes(pos, batch)  # [n_atoms, 3], [n_structures, 3, 3]
        signs = self.frame_signs(local, axes, batch)  # [n_structures, n_frames, 3]
        n_frames = signs.shape[1]
        atom_signs = signs[batch.batch].transpose(0, 1)  # [n_frames, n_atoms, 3]
        framed = (local[None] * atom_signs).reshape(-1, 3)  # [n_frames * n_atoms, 3], g^T (x - c)
        copies = replicate(batch, n_frames, framed)
        h = self.node_states(species.repeat(n_frames), framed, copies)  # [n_frames * n_atoms, width]
        h = h.view(n_frames, batch.num_atoms, -1)  # [n_frames, n_atoms, width]
        energy = self.energy_head(h).mean(0)  # [n_atoms]
        if self.force_head is None:
            return energy, None
        *hidden_layers, readout = self.force_head
        for layer in hidden_layers:
            h = layer(h)  # [n_frames, n_atoms, width]
        per_axis = torch.einsum("fak,fac->akc", atom_signs, h) / n_frames  # [n_atoms, 3, width], mean_s s_k x_s
        in_axes = readout(per_axis, atom_signs.mean(0)).to(axes.dtype)  # [n_atoms, 3], mean_s diag(s) f_s
        with torch.autocast(pos.device.type, enabled=False):  # back to the lab frame in float32, as `local`
            return energy, torch.einsum("aij,aj->ai", axes[batch.batch], in_axes)  # [n_atoms, 3], Q (...)


@register("canonical_mpnn")
class CanonicalMPNN(FrameAveragedMPNN):
    """The unconstrained MPNN in one canonical frame per structure (principal axes, signs by third moments)."""

    symmetry = Symmetry(group="E(3)", nu=2, l=None, rotation_equivariant=True, reflection_equivariant=True)
    base_width = 32

    def frame_signs(self, local: torch.Tensor, axes: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        return canonical_signs(local, axes, batch)[:, None, :]  # [n_structures, 1, 3]

"""Unconstrained message-passing network (`mpnn`): the bottom step of the symmetry staircase.

Messages are MLPs of the two node states and of the raw relative position vector, so the model is
translation invariant (it only sees differences of positions) but has no rotational or reflection symmetry;
forces come from a head that maps node features to 3 numbers (Ngo & Ravanbakhsh 2026, "unconstrained MPNN").

Update rule of one `InteractionBlock` (edge j -> i, r_ij = x_j - x_i, r = |r_ij|):

    m_ij = u(r) * W2 silu(W_h [h_i, h_j] + W_e [v_ij, rbf(r)])             (message, [n_edges, width])
    v_ij = r_ij / r^2 * (1 Angstrom)      (the relative vector, its length weighted by 1/r; `vector_input`)
    h_i  = h_i + MLP_u([h_i, sum_j m_ij / n_avg])                           (residual node update)

Energy: e_i = EnergyHead(h_i); forces: f_i = ForceHead(h_i) (normalised units, see `ForceField`).

Departures from the reference study (whose code is not public) and why:
- the relative vector enters as v_ij = r_ij / r^2 (in 1/Angstrom: the unit vector times 1 Angstrom / r) and
  the distance is expanded in a Bessel basis, so that all inputs are O(1) at init (muP assumes O(1) input
  coordinates) and the nearest neighbours, which carry most of an atom's force, carry most of the directional
  input. The earlier r_ij / r_cut (`vector_input="cutoff"`, kept for ablations and for checkpoints made before
  the change) gave each neighbour a weight growing with its distance: on the built-in set (17 neighbours per
  atom within 6 Angstrom) the bonded neighbours at 1-1.5 Angstrom got 4-5x less directional input than the
  ones at 4-6 Angstrom, and the direct force head stayed at the zero-force error for most of a quickstart run.
  Measured (quickstart settings: built-in set, one epoch, batch 4, lr 3e-2, 8 evaluations from 5% of the run;
  validation loss from the first evaluation to the best; `benchmarks/bench_mpnn_learning.py`): seed 0, width 16
  17.2% -> 32.0%, width 64 19.8% -> 44.1%; seed 1, width 16 16.9% -> 24.7%, width 64 40.3% (new input). At
  width 16, seed 0, other inputs gave: unit vector r_ij / r 21.6%, r_ij / r^3 28.6%, (1.5 Angstrom) r_ij / r^2
  28.7%, raw r_ij in Angstrom 1.8%;
- every message is multiplied by a smooth polynomial envelope u(r) (DimeNet) so that energy and forces are
  continuous as atoms cross the cutoff; the paper does not say how it handles the cutoff;
- the edge input is a separate input layer W_e (not concatenated into the hidden matrix) so that muP can scale
  it as an input weight;
- W_h [h_i, h_j] is computed as W_t h_i + W_s h_j on the nodes before gathering to the edges (the same
  function and parameter count, far fewer FLOPs);
- aggregation is a sum divided by a constant `avg_neighbors` (not the mean over the actual neighbours), which
  keeps activations O(1) without making the model depend on the neighbour count.
"""

from __future__ import annotations

from types import MappingProxyType

import torch
from torch import nn

from symscale.data.graph import GraphBatch, edge_vectors
from symscale.errors import SymscaleError
from symscale.models.base import ForceField, Symmetry
from symscale.models.layers import (
    MLP,
    BesselBasis,
    Dense,
    ElementEmbedding,
    EnergyHead,
    ForceHead,
    PolynomialEnvelope,
    gather,
    scatter_sum,
)
from symscale.models.registry import register

# how the relative vector r_ij enters the messages: r_ij / r^2 (default) or r_ij / r_cut (before 2026-12)
VECTOR_INPUTS = ("inverse", "cutoff")


class InteractionBlock(nn.Module):
    """One round of unconstrained message passing (see the module docstring for the update rule)."""

    def __init__(self, width: int, num_edge_features: int, avg_neighbors: float) -> None:
        super().__init__()
        # W_h [h_i, h_j] = W_t h_i + W_s h_j, applied on nodes before gathering to edges (fewer FLOPs)
        self.node_target = Dense(width, width)  # hidden
        self.node_source = Dense(width, width, bias=False)  # hidden
        self.edge_input = Dense(num_edge_features, width, bias=False)  # input matrix W_e
        self.message = Dense(width, width)  # W2
        self.update = MLP([2 * width, width, width])
        self.avg_neighbors = float(avg_neighbors)

    def forward(self, h: torch.Tensor, edge_feat: torch.Tensor, env: torch.Tensor, edge_index: torch.Tensor):
        j, i = edge_index
        pre = gather(self.node_target(h), i) + gather(self.node_source(h), j)  # [n_edges, width]
        pre = pre + self.edge_input(edge_feat)
        m = env[:, None] * self.message(nn.functional.silu(pre))  # [n_edges, width]
        agg = scatter_sum(m, i, h.shape[0]) / self.avg_neighbors  # [n_atoms, width]
        return h + self.update(torch.cat([h, agg], dim=-1))  # [n_atoms, width]


def parameter_count(
    width: int, num_elements: int, *, num_layers: int = 3, num_radial: int = 8, direct_forces: bool = True
) -> int:
    """N of `MPNN`, itemised (cross-checked against the built model in tests/test_models_mpnn.py)."""
    w = width
    embedding = num_elements * w
    block = (2 * w * w + w) + (3 + num_radial) * w + (w * w + w) + (2 * w * w + w) + (w * w + w)
    energy_head = (w * w + w) + (w + 1)
    force_head = (w * w + w) + (3 * w + 3) if direct_forces else 0
    return embedding + num_layers * block + energy_head + force_head


@register("mpnn")
class MPNN(ForceField):
    """Unconstrained MPNN: raw relative vectors in, direct forces out. Translation invariant only."""

    symmetry = Symmetry(group="T(3)", nu=2, l=None, rotation_equivariant=False, reflection_equivariant=False)
    base_width = 32
    legacy_options = MappingProxyType({1: MappingProxyType({"vector_input": "cutoff"})})  # config.MODEL_REVISIONS

    def __init__(
        self,
        width: int,
        *,
        num_layers: int = 3,
        num_radial: int = 8,
        avg_neighbors: float = 16.0,
        vector_input: str = "inverse",
        **shared,
    ) -> None:
        super().__init__(width, **shared)
        if vector_input not in VECTOR_INPUTS:
            raise SymscaleError.invalid("vector_input", vector_input, f"one of {', '.join(VECTOR_INPUTS)}")
        self.vector_input = vector_input
        self.num_layers = int(num_layers)
        self.embedding = ElementEmbedding(self.num_elements, width)
        self.radial = BesselBasis(self.cutoff, num_radial)
        self.envelope = PolynomialEnvelope(self.cutoff)
        self.blocks = nn.ModuleList(
            InteractionBlock(width, 3 + num_radial, avg_neighbors) for _ in range(self.num_layers)
        )
        self.energy_head = EnergyHead(width)
        self.force_head = ForceHead(width) if self.force_mode == "direct" else None

    def node_states(self, species: torch.Tensor, pos: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        """Node features h after the last interaction block, [n_atoms, width] (positions in Angstrom)."""
        vec = edge_vectors(pos, batch.edge_index)  # [n_edges, 3]
        r = vec.norm(dim=-1)  # [n_edges]
        env = self.envelope(r)  # [n_edges]
        edge_feat = torch.cat([self.vector_features(vec, r), self.radial(r)], dim=-1)  # [n_edges, 3 + num_radial]
        h = self.embedding(species).to(pos.dtype)  # [n_atoms, width]
        for block in self.blocks:
            h = block(h, edge_feat, env, batch.edge_index)  # [n_atoms, width]
        return h

    def vector_features(self, vec: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """v_ij, the relative vector as the messages see it ([n_edges, 3]; see the module docstring):
        r_ij / r^2 in 1/Angstrom ("inverse", the default) or r_ij / r_cut ("cutoff")."""
        if self.vector_input == "cutoff":
            return vec / self.cutoff
        return vec / r.clamp(min=1e-6).square()[:, None]

    def interactions(self, species: torch.Tensor, pos: torch.Tensor, batch: GraphBatch):
        h = self.node_states(species, pos, batch)  # [n_atoms, width]
        forces = self.force_head(h) if self.force_head is not None else None  # [n_atoms, 3]
        return self.energy_head(h), forces

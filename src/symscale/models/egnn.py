"""Multi-channel E(n)-equivariant graph network (`egnn`): Cartesian vectors, nu = 2, l = 1.

EGNN (Satorras, Hoogeboom & Welling 2021, "E(n) Equivariant Graph Neural Networks") with K vector channels
per atom instead of one coordinate (Levy et al. 2023, "Using Multiple Vector Channels Improves E(n)-Equivariant
Graph Neural Networks"), as the MC-EGNN of Ngo & Ravanbakhsh 2026. Each atom carries invariant features
h_i [width] and vectors V_i [K, 3], K = max(1, round(width / vector_ratio)). One `EquivariantBlock`, for the
edge j -> i with r_ij = x_j - x_i, r = |r_ij|, rhat = r_ij / r:

    s_ij = [<V_i^k, V_j^k>, <V_i^k, rhat>, <V_j^k, rhat>]_k                (3K invariants)
    m_ij = u(r) * silu(W2 silu(W_h [h_i, h_j] + W_r rbf(r) + W_s s_ij))       (invariant message, [width])
    h_i  = h_i + MLP_h([h_i, sum_j m_ij / n_avg])
    V_i  = W_mix (V_i + sum_j u(r) phi_x(m_ij) r_ij / (r + 1) / n_avg)      (update along r_ij, then mix)

Energy e_i = EnergyHead(h_i) (invariant); forces f_i = sum_k w_k V_i^k (a linear map of the vector channels,
no bias), equivariant under rotations and reflections. All operations are inner products, norms and linear
combinations of vectors with invariant coefficients, so the model is E(3)-equivariant.

Departures from the original papers and why:
- node vectors are relative (start at zero and accumulate r_ij terms) instead of absolute coordinates copied
  into K channels: translation invariance then holds without subtracting centroids, and forces can be read from
  them directly;
- the distance enters through a Bessel basis with a smooth polynomial envelope (not |r|^2 alone), so energies
  and forces are continuous at the cutoff (Satorras et al. use fully connected graphs without cutoff);
- the vector update is divided by (r + 1) and by a constant neighbour count `avg_neighbors` (the stabilisation
  that Satorras et al. suggest), and the channels are mixed by a bias-free K x K matrix after each update;
- W_h [h_i, h_j] is computed as W_t h_i + W_s h_j on the nodes before gathering to the edges (same function);
- invariants s_ij use channel-wise inner products (3K numbers) instead of all K^2 channel pairs, which keeps the
  parameter count quadratic in width.
"""

from __future__ import annotations

import torch
from torch import nn

from symscale.data.graph import GraphBatch, edge_vectors
from symscale.models.base import ForceField, Symmetry
from symscale.models.heads import (
    MLP,
    BesselBasis,
    Dense,
    ElementEmbedding,
    EnergyHead,
    PolynomialEnvelope,
    gather,
    scatter_sum,
)
from symscale.models.registry import register


class EquivariantBlock(nn.Module):
    """One EGNN layer with K vector channels (see the module docstring for the update rule)."""

    def __init__(self, width: int, num_vectors: int, num_radial: int, avg_neighbors: float) -> None:
        super().__init__()
        # W_h [h_i, h_j] = W_t h_i + W_s h_j, applied on nodes before gathering to edges (fewer FLOPs)
        self.node_target = Dense(width, width)  # hidden
        self.node_source = Dense(width, width, bias=False)  # hidden
        self.radial_input = Dense(num_radial, width, bias=False)  # W_r, input
        self.invariant_input = Dense(3 * num_vectors, width, bias=False)  # W_s, hidden (K grows with width)
        self.message = Dense(width, width)  # W2
        self.update = MLP([2 * width, width, width])
        self.coefficient = Dense(width, num_vectors)  # phi_x: one coefficient per channel and edge
        self.mix = Dense(num_vectors, num_vectors, bias=False)  # W_mix across channels
        self.avg_neighbors = float(avg_neighbors)

    def forward(self, h, vectors, rbf, vec, r, env, edge_index):
        j, i = edge_index
        rhat = vec / r.clamp(min=1e-9)[:, None]  # [n_edges, 3]
        v_i, v_j = gather(vectors, i), gather(vectors, j)  # [n_edges, K, 3] each
        s = torch.cat(
            [
                (v_i * v_j).sum(-1),  # [n_edges, K]
                torch.einsum("ekc,ec->ek", v_i, rhat),  # [n_edges, K]
                torch.einsum("ekc,ec->ek", v_j, rhat),  # [n_edges, K]
            ],
            dim=-1,
        )  # [n_edges, 3K]
        pre = gather(self.node_target(h), i) + gather(self.node_source(h), j)  # [n_edges, width]
        pre = pre + self.radial_input(rbf) + self.invariant_input(s)
        m = env[:, None] * nn.functional.silu(self.message(nn.functional.silu(pre)))  # [n_edges, width]
        agg = scatter_sum(m, i, h.shape[0]) / self.avg_neighbors  # [n_atoms, width]
        h = h + self.update(torch.cat([h, agg], dim=-1))  # [n_atoms, width]
        coef = env[:, None] * self.coefficient(m)  # [n_edges, K]
        step = (coef[:, :, None] * (vec / (r[:, None] + 1.0))[:, None, :]).flatten(1)  # [n_edges, 3K]
        delta = scatter_sum(step, i, vectors.shape[0]).view_as(vectors)  # [n_atoms, K, 3]
        vectors = vectors + delta / self.avg_neighbors  # [n_atoms, K, 3]
        vectors = self.mix(vectors.transpose(1, 2)).transpose(1, 2)  # [n_atoms, K, 3]
        return h, vectors


def parameter_count(
    width: int,
    num_elements: int,
    *,
    num_layers: int = 3,
    vector_ratio: int = 4,
    num_radial: int = 8,
    direct_forces: bool = True,
) -> int:
    """N of `EGNN`, itemised (cross-checked against the built model in tests/test_egnn.py)."""
    w, k = width, max(1, round(width / vector_ratio))
    embedding = num_elements * w
    message = (2 * w * w + w) + num_radial * w + 3 * k * w + (w * w + w)
    node_update = (2 * w * w + w) + (w * w + w)
    vector_update = (w * k + k) + k * k
    energy_head = (w * w + w) + (w + 1)
    force_head = k if direct_forces else 0
    return embedding + num_layers * (message + node_update + vector_update) + energy_head + force_head


@register("egnn")
class EGNN(ForceField):
    """MC-EGNN: invariant features plus K Cartesian vector channels per atom; forces from the channels."""

    symmetry = Symmetry(group="E(3)", nu=2, l=1, rotation_equivariant=True, reflection_equivariant=True)
    base_width = 32

    def __init__(
        self,
        width: int,
        *,
        num_layers: int = 3,
        vector_ratio: int = 4,
        num_radial: int = 8,
        avg_neighbors: float = 16.0,
        **shared,
    ) -> None:
        super().__init__(width, **shared)
        self.num_layers = int(num_layers)
        self.num_vectors = max(1, round(width / vector_ratio))
        self.embedding = ElementEmbedding(self.num_elements, width)
        self.radial = BesselBasis(self.cutoff, num_radial)
        self.envelope = PolynomialEnvelope(self.cutoff)
        self.blocks = nn.ModuleList(
            EquivariantBlock(width, self.num_vectors, num_radial, avg_neighbors) for _ in range(self.num_layers)
        )
        self.energy_head = EnergyHead(width)
        direct = self.force_mode == "direct"
        self.force_head = Dense(self.num_vectors, 1, bias=False, readout=True) if direct else None

    def interactions(self, species: torch.Tensor, pos: torch.Tensor, batch: GraphBatch):
        vec = edge_vectors(pos, batch.edge_index)  # [n_edges, 3]
        r = vec.norm(dim=-1)  # [n_edges]
        env = self.envelope(r)  # [n_edges]
        rbf = self.radial(r)  # [n_edges, num_radial]
        h = self.embedding(species).to(pos.dtype)  # [n_atoms, width]
        vectors = pos.new_zeros(pos.shape[0], self.num_vectors, 3)  # [n_atoms, K, 3]
        for block in self.blocks:
            h, vectors = block(h, vectors, rbf, vec, r, env, batch.edge_index)
        forces = None
        if self.force_head is not None:
            forces = self.force_head(vectors.transpose(1, 2)).squeeze(-1)  # [n_atoms, 3]
        return self.energy_head(h), forces

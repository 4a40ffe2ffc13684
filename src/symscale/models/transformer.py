"""Graph-free Transformer on atoms (`transformer`): no neighbour list, no cutoff, no symmetry built in.

After Kreiman et al. 2025, "Transformers discover molecular structure without graph priors": every atom is a
token, every token attends to every other token of its structure, and the model learns from data what a
message-passing network is given by construction. Update rule (pre-norm blocks, width d = model dimension,
H = d / d_head heads of fixed size d_head):

    h_i^0 = Embed(Z_i) + W_x (x_i - c) / length_scale                     (token, [n_atoms, d]; c = centroid)
    a     = Attention(LN(h)),  softmax(q_i . k_j / d_head) over j in the same structure
    h     = h + W_o a                                                       (attention sub-block)
    h     = h + MLP(LN(h))                                                  (feed-forward sub-block, 4d hidden)
    e_i   = EnergyHead(LN(h_i)),  f_i = ForceHead(LN(h_i))                  (per-token readouts)

The energy is the sum of the per-token energies (sum pooling of the tokens' energy contributions, so that the
energy is extensive); forces come from a per-token head (direct), or as -dE/dx with forces="conservative".

Symmetry: permutation equivariant (attention has no token order) and translation invariant (positions are
centred per structure); not rotation- or reflection-equivariant: the contract suite checks that it measurably
is not. Its `Symmetry` says T(3); nu = 2 counts the pairwise attention logit, though the softmax couples every
atom of the structure.

muP (Yang et al. 2022): q, k, v, output and feed-forward matrices are hidden matrices (fan-in and fan-out grow
with d), the element and position embeddings inputs, the last layers of the heads readouts (`heads.Dense`);
the attention logits are scaled by 1 / d_head (muP) instead of 1 / sqrt(d_head). With the head size fixed,
this is a constant factor (the width grows the number of heads), chosen so that a ladder that grows d_head
instead keeps muP's logit scaling. LayerNorm gains and biases are vectors.

Batching: structures of different sizes are padded to the largest one and padded keys are masked out, so a
structure's outputs do not depend on the rest of the batch. On CUDA the attention is
`torch.nn.functional.scaled_dot_product_attention` (fused kernels, whose FLOPs torch's counter knows); on other
devices, and whenever the graph must be differentiated twice (conservative forces), it is the explicit product
softmax(q k^T / d_head) v, because the CPU fused kernel is invisible to `FlopCounterMode` and the fused CUDA
kernels have no double backward.

Departures from Kreiman et al. and why:
- positions enter through a linear embedding of the centred Cartesian coordinates (scaled by `length_scale`,
  default 5 Angstrom, so that inputs are O(1) as muP assumes); no discretised position tokens, no Fourier
  features: the simplest embedding that keeps the model free of distance priors;
- a SiLU MLP (as elsewhere in symscale), not SwiGLU; LayerNorm, not RMSNorm; no dropout;
- depth 4 and widths of 1e3 to 1e7 parameters (their models reach about 1e9), so that it sits on the same
  axes as the staircase; depth is fixed and only the width is scaled, as for every family;
- no charge or spin tokens (the neutral split, as for every symscale family).
"""

from __future__ import annotations

import torch
from torch import nn

from symscale.data.graph import GraphBatch
from symscale.errors import SymscaleError
from symscale.models.base import ForceField, Symmetry
from symscale.models.layers import MLP, Dense, ElementEmbedding, EnergyHead, ForceHead
from symscale.models.registry import register


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, *, fused: bool) -> torch.Tensor:
    """Masked multi-head attention with muP logit scaling 1 / d_head.

    Args:
        q, k, v: [n_structures, n_heads, n_tokens, d_head].
        mask: [n_structures, 1, 1, n_tokens] bool, True where a key is a real atom.
        fused: use `scaled_dot_product_attention` (else the explicit product, twice differentiable).

    Returns:
        [n_structures, n_heads, n_tokens, d_head].
    """
    scale = 1.0 / q.shape[-1]
    if fused:
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    logits = (q @ k.transpose(-1, -2)) * scale  # [n_structures, n_heads, n_tokens, n_tokens]
    logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1) @ v  # [n_structures, n_heads, n_tokens, d_head]


class SelfAttention(nn.Module):
    """Multi-head self-attention within each structure (heads of fixed size `head_dim`)."""

    def __init__(self, width: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = width // head_dim
        self.head_dim = head_dim
        self.query = Dense(width, width, bias=False)  # hidden
        self.key = Dense(width, width, bias=False)  # hidden
        self.value = Dense(width, width, bias=False)  # hidden
        self.output = Dense(width, width)  # hidden

    def forward(self, h: torch.Tensor, mask: torch.Tensor, fused: bool) -> torch.Tensor:
        s, n, d = h.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(s, n, self.num_heads, self.head_dim).transpose(1, 2)  # [s, heads, n, head_dim]

        a = attention(heads(self.query(h)), heads(self.key(h)), heads(self.value(h)), mask, fused=fused)
        return self.output(a.transpose(1, 2).reshape(s, n, d))  # [s, n, d]


class TransformerBlock(nn.Module):
    """Pre-norm block: h + Attention(LN(h)), then h + MLP(LN(h))."""

    def __init__(self, width: int, head_dim: int, mlp_ratio: int) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = SelfAttention(width, head_dim)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = MLP([width, mlp_ratio * width, width])

    def forward(self, h: torch.Tensor, mask: torch.Tensor, fused: bool) -> torch.Tensor:
        h = h + self.attention(self.attention_norm(h), mask, fused)  # [s, n, d]
        return h + self.mlp(self.mlp_norm(h))  # [s, n, d]


def parameter_count(
    width: int, num_elements: int, *, num_layers: int = 4, mlp_ratio: int = 4, direct_forces: bool = True
) -> int:
    """N of `Transformer`, itemised (cross-checked against the built model in tests/test_models_transformer.py)."""
    d = width
    embedding = num_elements * d + 3 * d  # element table; position embedding (no bias)
    attention_params = 4 * d * d + d  # q, k, v (no bias), output (with bias)
    mlp = (d * mlp_ratio * d + mlp_ratio * d) + (mlp_ratio * d * d + d)
    norms = 2 * (2 * d)
    final_norm = 2 * d
    energy_head = (d * d + d) + (d + 1)
    force_head = (d * d + d) + (3 * d + 3) if direct_forces else 0
    return embedding + num_layers * (attention_params + mlp + norms) + final_norm + energy_head + force_head


def matmul_flops(
    width: int, n_atoms: int, *, num_layers: int = 4, mlp_ratio: int = 4, direct_forces: bool = True
) -> int:
    """Forward FLOPs of the matrix products for ONE structure of `n_atoms` atoms (2 per multiply-add), itemised:
    every weight matrix once per token, and per layer q k^T and (attention) v, 2 n^2 d FLOPs each. This is what
    torch's FLOP counter registers as matmul work (`raw`); cross-checked in tests/test_models_transformer.py."""
    d, n = width, n_atoms
    per_token = (
        3 * d
        + num_layers * (4 * d * d + 2 * mlp_ratio * d * d)
        + (d * d + d)
        + ((d * d + 3 * d) if direct_forces else 0)
    )
    return 2 * n * per_token + num_layers * 2 * (2 * n * n * d)


def padded_slots(batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Position of each atom within its structure [n_atoms] and the key mask [n_structures, 1, 1, n_tokens]
    (n_tokens = atoms of the largest structure; True where a slot holds an atom). Atoms of a structure are
    contiguous in a `GraphBatch`."""
    counts = batch.n_atoms  # [n_structures]
    start = torch.cumsum(counts, 0) - counts  # [n_structures]
    slot = torch.arange(batch.num_atoms, device=counts.device) - start[batch.batch]  # [n_atoms]
    n_tokens = int(counts.max()) if counts.numel() else 0
    mask = torch.arange(n_tokens, device=counts.device)[None, :] < counts[:, None]  # [n_structures, n_tokens]
    return slot, mask[:, None, None, :]


@register("transformer")
class Transformer(ForceField):
    """Graph-free Transformer: element and position tokens, full attention within each structure."""

    symmetry = Symmetry(group="T(3)", nu=2, l=None, rotation_equivariant=False, reflection_equivariant=False)
    base_width = 64
    graph_free = True  # no neighbour list and no cutoff (the contract suite checks smoothness, not the cutoff)

    def __init__(
        self,
        width: int,
        *,
        num_layers: int = 4,
        head_dim: int = 8,
        mlp_ratio: int = 4,
        length_scale: float = 5.0,
        **shared,
    ) -> None:
        super().__init__(width, **shared)
        if head_dim < 1 or width % head_dim:
            raise SymscaleError.invalid("transformer width", width, f"a multiple of head_dim={head_dim}")
        if not length_scale > 0:
            raise SymscaleError.invalid("length_scale", length_scale, "a positive length (Angstrom)")
        self.num_layers = int(num_layers)
        self.length_scale = float(length_scale)
        self.embedding = ElementEmbedding(self.num_elements, width)  # input
        self.position_embedding = Dense(3, width, bias=False)  # input
        self.blocks = nn.ModuleList(TransformerBlock(width, head_dim, mlp_ratio) for _ in range(self.num_layers))
        self.final_norm = nn.LayerNorm(width)
        self.energy_head = EnergyHead(width)
        self.force_head = ForceHead(width) if self.force_mode == "direct" else None

    def interactions(self, species: torch.Tensor, pos: torch.Tensor, batch: GraphBatch):
        counts = batch.n_atoms.to(pos.dtype)[:, None]  # [n_structures, 1]
        centroid = pos.new_zeros(batch.num_structures, 3).index_add(0, batch.batch, pos) / counts
        centred = (pos - centroid[batch.batch]) / self.length_scale  # [n_atoms, 3]
        tokens = self.embedding(species).to(pos.dtype) + self.position_embedding(centred)  # [n_atoms, d]
        slot, mask = padded_slots(batch)
        h = tokens.new_zeros(batch.num_structures, mask.shape[-1], self.width)  # [n_structures, n_tokens, d]
        h = h.index_put((batch.batch, slot), tokens)
        fused = pos.device.type == "cuda" and self.force_mode == "direct"
        for block in self.blocks:
            h = block(h, mask, fused)  # [n_structures, n_tokens, d]
        h = self.final_norm(h[batch.batch, slot])  # [n_atoms, d]
        forces = self.force_head(h) if self.force_head is not None else None  # [n_atoms, 3]
        return self.energy_head(h), forces  # [n_atoms], [n_atoms, 3]

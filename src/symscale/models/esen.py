"""eSEN: equivariant Smooth Energy Network (Fu et al. 2025, "Learning Smooth and Expressive Interatomic
Potentials for Physical Property Prediction"), built on the eSCN convolution (Passaro & Zitnick 2023).

Node features are real spherical-harmonic coefficients up to `lmax` with S sphere channels,
x: [n_atoms, (lmax+1)^2, S] (basis and ordering of `symscale.models.so3`). Edge features are the Gaussian
distance basis and source / target element embeddings of E_c edge channels; H is the hidden width. One
forward pass:

    x_i    = ElementEmbedding(Z_i) on l = 0  +  EdgeDegreeEmbedding (sum over j of D_ij^T [RadialMLP(edge) on m = 0])
    repeat num_layers times (ESENBlock):
        x  = x + Edgewise(Norm(x))        message: rotate [x_j, x_i] into the frame of r_ij (D_ij, |m| <= mmax),
                                          SO2Convolution (its own RadialMLP) -> S2Activation -> SO2Convolution,
                                          times envelope(r_ij), rotate back (D_ij^T), sum over j / avg_num_neighbors
        x  = x + GridFeedForward(Norm(x)) per atom: SH -> S2 grid, pointwise MLP S -> H -> H -> S, grid -> SH
    x      = Norm(x)
    e_i    = MLP(x_i[l=0])                 energy (normalised) per atom, S -> H -> H -> 1
    f_i    = Linear_{S->1}(x_i[l=1])       direct force; the l=1 coefficients are (x, y, z) in this basis

The SO2Convolution is the eSCN trick: in the edge frame (r_ij along +y) an SO(3)-equivariant convolution
with Y(r_ij) reduces to SO(2) maps, one per |m|: for m = 0 any linear map across l (and channels), for m > 0
the complex-multiplication form y_{-m} = W1 x_{-m} - W2 x_{+m}, y_{+m} = W2 x_{-m} + W1 x_{+m}; components
with |m| > mmax are dropped. In the first convolution of each message the inputs of every m-block are
multiplied by per-(l, channel) radial weights from that convolution's own RadialMLP (Linear, LayerNorm,
SiLU twice, then Linear) on the edge features; the second convolution has plain weights (as in eSEN).

Nonlinearities (`activation`):
- "grid" (default, eSEN's): the S2 activation. In the message, the edge-frame coefficients (|m| <= mmax) are
  evaluated on an S2 grid, SiLU is applied pointwise and the result projected back to |m| <= mmax; the l = 0
  output is SiLU of H extra invariant channels of the first convolution ("separable" S2 activation). The
  feed-forward is eSEN's grid MLP (three bias-free linears with SiLU, pointwise on the grid). A grid
  (`so3.s2_grid`) is R x R points: Gauss-Legendre latitudes times equally spaced longitudes about the y axis;
  R = `grid_resolution` (default 2 lmax + 2) in the message, `ff_grid_resolution` (default 4 lmax + 4) in the
  feed-forward. SH -> grid and grid -> SH are constant matrices built once per (lmax, R) and held as float64
  buffers, one matmul each way. A pointwise function of a band-limited signal is not band-limited, so this is
  equivariant only up to the aliasing error of the grid (`equivariance_tolerance`; measured in
  tests/test_models_esen.py: at initialisation in float64, at most about 1% of the mean force for lmax 1-6 at 4 or
  more sphere channels, up to 7% at 2).
- "gate" (for the ablation): SiLU on l = 0 and sigmoid gates from extra l = 0 channels on l > 0 in the message,
  and a gated per-degree feed-forward (SO3Linear S -> H -> S). Exactly equivariant.

Width (`scaling`):
- "sphere" (default, as the reference study scaled eSEN): `width` is the number of sphere channels S; the hidden
  channels H and edge channels E_c stay fixed (`hidden_channels`, `edge_channels`), so N grows linearly with
  width. The muP roles follow from the shapes (`symscale.models.mup`): every S -> H layer (first convolution,
  first feed-forward and energy-head linears; fan-in grows, fan-out fixed) is output-like (lr / m), every
  H -> S layer (second convolution, last feed-forward linear) input-like, and the H -> H and edge-channel
  layers have no width multiplier (lr as given). The S -> H layers keep the standard std 1/sqrt(fan_in), not
  muP's output std ~ 1/fan_in, and muP is not reached with H fixed; see the departures below.
- "all" (the earlier symscale variant): S = H = E_c = `width` (fairchem's default proportions), N ~ width^2.

Symmetry: SO(3)-equivariant (energy invariant, forces equivariant; up to the grid error with "grid"),
translation invariant, body order nu = 2, tensor order l = lmax. Not claimed for reflections: the SO(2)
convolution's W2 terms (and the edge-frame convention) are parity-odd, so a mirror image is not mapped to the
mirrored output; the contract tests only check rotations.

Departures from eSEN (and why), in one place:
- The first layer of each RadialMLP adds a linear map of the distance basis and one of the two element
  embeddings, each of unit variance, (sum / sqrt 2) instead of one linear layer on their concatenation: the same
  function class and parameter count (one bias fewer), but the distance keeps half the variance whatever E_c
  is. With one linear on the concatenation its share would be num_radial / (num_radial + 2 E_c), which changes
  with width in the "all" variant (muP coordinate check).
- Initialisation is muP's (`symscale.models.layers.Dense`: std 1/sqrt(fan_in), readouts 1/fan_in); element
  embeddings are N(0, 1), not eSEN's U(-0.001, 0.001) edge embeddings. The SO(2) convolution's m > 0 blocks
  are drawn with std / sqrt 2 so that W1 x_- - W2 x_+ starts at the m = 0 block's scale.
- muP with scaling="sphere" is not reached, and no initialisation of ours reaches it with H and E_c fixed
  (strict xfail in tests/test_models_mup.py). Every S -> H layer reads the S-wide stream as a readout would: its
  update Delta W x is O(1) with lr / m, but W_0 Delta x (Delta x aligned with W_0 through the backward pass)
  grows as sqrt(S) unless the init std is O(1/S), while its initial output is O(1) only with std O(1/sqrt S);
  no choice gives both.
  Yang & Hu's abc-family leaves only that init scale free: a forward multiplier m^-1/2 on a standard-init
  weight with Adam lr / sqrt(m) is the same function and the same updates as std / sqrt(m) with lr / m
  (measured: the same slopes to 0.04, the difference from Adam's eps). With any O(1/S) init the fixed-width
  parts (the H-space layers, the edge-channel radial MLPs and edge embeddings) reach the outputs only through an
  input layer (H or E_c -> S) and a readout that are independent at initialisation, so their effect on the
  outputs falls as S^-1/2 (one Adam step, zero-init S -> H, forces, widths 32..512, per parameter group:
  first convolution -0.47, feed-forward S -> H -0.60, radial MLPs -0.65..-0.74; readouts and H -> S layers
  -0.03). Worst slopes measured (3 seeds, 3 steps, tests/test_models_mup.py's check with the S -> H init replaced;
  widths 32..256, then 128..1024):
    standard std (as built)                 energy +0.25, then +0.42 with the feed-forward +0.39 (growing)
    std / sqrt(m) (muP, same at base width) energy -0.61, feed-forward -0.75; then forces -0.30, m = 2 -0.34
    the multiplier form of the line above   the same (-0.61, -0.75)
    std 1 / fan_in                          feed-forward -0.55, energy -0.38
    zero                                    feed-forward -0.47, energy -0.28; then feed-forward -0.34
    standard S -> H, zero final readouts    passes (worst +0.23), but not with 6 seeds and 6 steps (+0.33)
                                            nor over 128..1024 (feed-forward +0.57, energy +0.38)
  With every channel grown (scaling="all") the check passes (worst -0.18; the test beside the xfail). The
  standard std is kept: it is the base-width model of the std / sqrt(m) variant, no further from muP over
  32..256 than the others, and the grid's aliasing at 2 sphere channels stays inside the contract tolerance
  (it did not with std / sqrt(m), 2.8x larger there). A learning rate tuned at base width therefore transfers
  along the "sphere" ladder only approximately; with the "all" variant it transfers as muP says.
- Normalisation is an equivariant RMS layer norm (l = 0 centred, one RMS over all degrees with each degree
  weighted equally, per-(l, channel) gains, bias on l = 0), close to eSEN's `rms_norm_sh`.
- Grid sizes: the message grid is (2 lmax + 2)^2 (fairchem: 2 (lmax + 1) latitudes, 2 mmax + 1 longitudes on
  edges, so ours costs about twice as much there), the feed-forward grid (4 lmax + 4)^2, twice fairchem's in
  each direction: at eSEN's size the grid MLP's aliasing made most of the measured equivariance error (5-25% of
  the mean force at initialisation for lmax 4-6 with 4 layers, against 0.1-2.5% at the finer grid, which adds
  per-atom work only). The l > mmax rows of the truncated edge grid are not rescaled as in fairchem: a constant
  per-degree factor that the next layer absorbs.
- Memory: unlike eSEN's, the message S2 activation keeps no [E, R^2, H] grid values for the backward pass: it
  runs in chunks that stay in cache and recomputes the grid in the backward (`_GridSiLU`; the same values and
  gradients to float rounding). Nor does the feed-forward keep its per-atom [G, A, H] hidden values: its grid
  MLP runs fused, in chunks of atoms, recomputed in the backward (`_GridMLP`).
- The edge degree embedding is not divided by eSEN's rescale factor 5 but by avg_num_neighbors like the
  messages; the envelope multiplies every message (eSEN's `use_envelope`), folded into the rotation back.
- The edge frame has no random roll angle (gamma = 0); the SO(2) convolution is exactly invariant to it.
- The direct force head is one bias-free linear map of the l = 1 coefficients to one l = 1 output.
- Family defaults are the `cpu` ladder's (lmax 2, 3 layers, H = E_c = 8, 16 Gaussians); the `paper` ladder
  sets the reference study's lmax 4 and 12 layers with H = E_c = 32 (configs/ladders/esen.yaml, which also
  says how close its N comes to the reference study's). eSEN's own defaults (128 channels of each kind, 512
  Gaussians) are far above the reference study's 3.4M parameters at 32 sphere channels. Messages are scaled by
  1/avg_num_neighbors (default 20, roughly the neighbour count of OMol25 molecules at 6 Angstrom).
- Float64 grid buffers are cast to the input dtype in forward; after `model.float()` they are rounded, so a
  float64 equivariance check needs a model built (or `.double()`-ed) without a float32 round trip.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn import functional

from symscale.data.graph import GraphBatch, edge_vectors
from symscale.errors import SymscaleError
from symscale.models import so3
from symscale.models.base import ForceField, Symmetry
from symscale.models.layers import Dense, ElementEmbedding, PolynomialEnvelope, gather
from symscale.models.registry import register

logger = logging.getLogger(__name__)

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
ACTIVATIONS = ("grid", "gate")
SCALINGS = ("sphere", "all")
# Rotation error of the S2 grids that the contract tests allow (`equivariance_error`: mean energy error per atom
# and mean force-error norm, normalised units, float64, random initialisation, toy molecules). Measured at most
# 3.5e-2 at 2 sphere channels (up to 7% of the mean force; the smallest `cpu` width), 4e-4 at 4 and 8 channels
# (0.1-1%), lmax 1..6: see tests/test_models_esen.py::test_grid_equivariance_error_is_measured_and_small
GRID_EQUIVARIANCE_TOLERANCE = 5e-2


class ScaledDense(Dense):
    """`Dense` with its weight std multiplied by a constant `scale` (1/sqrt 2 for the SO(2) convolution's m > 0
    blocks, whose outputs each add two products, so that they start at the m = 0 block's scale)."""

    def __init__(self, in_features: int, out_features: int, *, scale: float, bias: bool = True) -> None:
        self.scale = float(scale)
        super().__init__(in_features, out_features, bias=bias)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.weight.mul_(self.scale)


class GaussianBasis(nn.Module):
    """`num` Gaussians of the distance d [Angstrom], centres evenly on [0, cutoff], width one spacing.

    Scaled so that the sum of squares over the basis is about `num` at any d inside the cutoff (the squares of
    unit-spaced Gaussians of this width sum to sqrt(pi)): each coordinate then has mean square about 1, like
    the other inputs of a 1/sqrt(fan_in) layer."""

    def __init__(self, num: int, cutoff: float) -> None:
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, cutoff, num), persistent=False)
        self.spacing = cutoff / max(num - 1, 1)
        self.scale = math.sqrt(num / math.sqrt(math.pi))

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        z = (dist[:, None] - self.centres.to(dist.dtype)) / self.spacing
        return self.scale * torch.exp(-0.5 * z**2)  # [E, num]


def gate(x: torch.Tensor, gates: torch.Tensor, gate_of_row: torch.Tensor) -> torch.Tensor:
    """Gate nonlinearity: SiLU on the l = 0 row (row 0), sigmoid(gates[l-1]) times every row of degree l > 0.

    x: [n, rows, c]; gates: [n, lmax, c]; gate_of_row: [rows - 1] = degree - 1 of rows 1.. (row 0 is the only
    l = 0 row). `index_select` on dim 1 (forward and backward) measured 4.6x faster than advanced indexing.
    """
    g = torch.sigmoid(gates).index_select(1, gate_of_row)  # [n, rows - 1, c]
    x0, rest = x.split([1, x.shape[1] - 1], dim=1)  # split, not slicing: its backward needs no zero fill
    return torch.cat([functional.silu(x0), rest * g], dim=1)


class EquivariantLayerNorm(nn.Module):
    """RMS layer norm of SH features [n, (lmax+1)^2, c]: l = 0 centred over channels, all degrees divided by
    one RMS (mean over degrees of the mean square of each degree), then per-(l, channel) gains, l = 0 bias."""

    def __init__(self, lmax: int, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.lmax, self.channels, self.eps = lmax, channels, eps
        self.weight = nn.Parameter(torch.ones((lmax + 1) * channels))  # flat gains, [(lmax+1) * c]
        self.bias = nn.Parameter(torch.zeros(channels))
        degree = so3.degree_index(lmax)
        self.register_buffer("degree", degree, persistent=False)
        self.register_buffer("degree_weight", 1.0 / ((2 * degree + 1.0) * (lmax + 1)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0, rest = x.split([1, x.shape[1] - 1], dim=1)  # [n, 1, c], [n, K-1, c]
        x = torch.cat([x0 - x0.mean(dim=-1, keepdim=True), rest], dim=1)  # l = 0 centred, [n, K, c]
        ms = (x.pow(2).mean(dim=-1) * self.degree_weight.to(x.dtype)).sum(dim=-1)  # [n]
        gain = self.weight.view(self.lmax + 1, self.channels)[self.degree]  # [K, c]
        shift = functional.pad(self.bias[None], (0, 0, 0, x.shape[1] - 1))  # [K, c], bias on l = 0 only
        return x * (torch.rsqrt(ms + self.eps)[:, None, None] * gain) + shift


class SO3Linear(nn.Module):
    """Per-degree channel mixing of SH features [n, K, c_in] -> [n, K, c_out] (bias on l = 0 only), plus
    `extra` scalar outputs from l = 0 (e.g. gates), returned separately as [n, extra]."""

    def __init__(self, lmax: int, c_in: int, c_out: int, extra: int = 0) -> None:
        super().__init__()
        self.lmax, self.c_out = lmax, c_out
        self.linears = nn.ModuleList(
            [Dense(c_in, c_out + extra)] + [Dense(c_in, c_out, bias=False) for _ in range(lmax)]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y0 = self.linears[0](x[:, 0])  # [n, c_out + extra]
        blocks = [y0[:, None, : self.c_out]]
        for l in range(1, self.lmax + 1):
            blocks.append(self.linears[l](x[:, l * l : (l + 1) ** 2]))  # [n, 2l+1, c_out]
        return torch.cat(blocks, dim=1), y0[:, self.c_out :]


class RadialMLP(nn.Module):
    """eSEN's radial function: edge features -> Linear, LayerNorm, SiLU, Linear, LayerNorm, SiLU, Linear -> [E, out].

    The edge features are [E, num_radial + 2 edge_channels] (`EdgeEmbedding`: distance basis, then the source
    and target embeddings); the first linear maps the distance and the element parts separately (module
    docstring)."""

    def __init__(self, num_radial: int, edge_channels: int, out: int) -> None:
        super().__init__()
        self.num_radial = num_radial
        self.distance = Dense(num_radial, edge_channels)
        self.elements = Dense(2 * edge_channels, edge_channels, bias=False)
        self.net = nn.Sequential(
            nn.LayerNorm(edge_channels),
            nn.SiLU(),
            Dense(edge_channels, edge_channels),
            nn.LayerNorm(edge_channels),
            nn.SiLU(),
            Dense(edge_channels, out),
        )

    def forward(self, edge_features: torch.Tensor) -> torch.Tensor:
        basis, elements = edge_features.split([self.num_radial, edge_features.shape[1] - self.num_radial], dim=1)
        h = (self.distance(basis) + self.elements(elements)) * _INV_SQRT2  # [E, edge_channels]
        return self.net(h)  # [E, out]


class SO2Convolution(nn.Module):
    """eSCN's SO(2) convolution on edge-frame features [E, Kt, c_in] (rows in `so3.edge_frame_rows` order).

    With a `radial` function, each m-block's input is first scaled by its radial weights [E, n_m c_in] (eSEN's
    first convolution); without one, the weights are plain parameters (eSEN's second convolution). Then m = 0
    mixes all (l, channel) with a bias, and m > 0 applies W1 + i W2 to the (-m, +m) pairs.
    Returns [E, Kt, c_out] and `extra` invariant scalars [E, extra] from the m = 0 block.
    """

    def __init__(
        self, lmax: int, mmax: int, c_in: int, c_out: int, extra: int = 0, radial: RadialMLP | None = None
    ) -> None:
        super().__init__()
        self.lmax, self.mmax, self.c_in, self.c_out, self.extra = lmax, min(mmax, lmax), c_in, c_out, extra
        self.sizes = [lmax + 1 - m for m in range(self.mmax + 1)]  # degrees l >= m per block
        self.radial = radial
        self.linears = nn.ModuleList([Dense(self.sizes[0] * c_in, self.sizes[0] * c_out + extra)])
        self.linears.extend(  # y_(-m) = W1 x_(-m) - W2 x_(+m) adds two products: std / sqrt 2 keeps m = 0's scale
            ScaledDense(n * c_in, 2 * n * c_out, scale=_INV_SQRT2, bias=False) for n in self.sizes[1:]
        )

    @property
    def radial_size(self) -> int:
        """Number of radial weights per edge: one per input (l, channel) of every m-block."""
        return sum(self.sizes) * self.c_in

    def forward(self, x: torch.Tensor, edge_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # torch.split rather than slicing throughout: the backward of a split is one cat, while each slice's
        # backward fills a zero tensor the size of its input (measured a fifth of an eSEN step on CPU)
        n_edges = x.shape[0]
        blocks = x.split([self.sizes[0]] + [2 * n for n in self.sizes[1:]], dim=1)  # m = 0, then (-m, +m) pairs
        inputs = [blocks[0].reshape(n_edges, 1, self.sizes[0] * self.c_in)]  # [E, 1, n_0 c_in]
        inputs += [b.reshape(n_edges, 2, n * self.c_in) for b, n in zip(blocks[1:], self.sizes[1:], strict=True)]
        if self.radial is not None:
            rads = self.radial(edge_features).split([n * self.c_in for n in self.sizes], dim=1)  # [E, n_m c_in]
            inputs = [xm * r[:, None] for xm, r in zip(inputs, rads, strict=True)]
        n0 = self.sizes[0]
        y0, extra = self.linears[0](inputs[0][:, 0]).split([n0 * self.c_out, self.extra], dim=1)
        out = [y0.reshape(n_edges, n0, self.c_out)]  # [E, n0, c_out]; extra: [E, extra]
        for m in range(1, self.mmax + 1):
            n = self.sizes[m]
            ym = self.linears[m](inputs[m])  # [E, 2, 2 n c_out]: (W1 x, W2 x) for x_- and x_+
            (w1_minus, w2_minus), (w1_plus, w2_plus) = (y.split(n * self.c_out, dim=-1) for y in ym.unbind(1))
            y_minus, y_plus = w1_minus - w2_plus, w2_minus + w1_plus  # W1 x_- - W2 x_+,  W2 x_- + W1 x_+
            out += [y_minus.reshape(n_edges, n, self.c_out), y_plus.reshape(n_edges, n, self.c_out)]
        return torch.cat(out, dim=1), extra


class S2Grid(nn.Module):
    """Constant projections SH <-> S2 grid (`so3.s2_grid`) as float64 buffers, optionally restricted to the
    edge-frame rows |m| <= mmax. `to_grid(x)`: [n, K', c] -> grid-major values [G, n, c]; `from_grid(g)`:
    [G, n, c] -> [n, K', c].

    Grid values are held grid-major so that each projection is one [G, K'] x [K', n c] matrix product: a
    [G, K'] @ [n, K', c] product broadcasts the constant matrix over n and runs as n tiny batched GEMMs, measured
    5-10x slower on CPU (E = 7.4k edges, G = 36, c = 32: 158 ms against 20 ms forward)."""

    def __init__(self, lmax: int, resolution: int, mmax: int | None = None) -> None:
        super().__init__()
        to_grid, from_grid = so3.s2_grid(lmax, resolution)  # [G, K], [K, G]
        if mmax is not None:  # edge frame: columns in `edge_frame_rows` order
            cols = torch.tensor([l * l + l + m for l, m in so3.edge_frame_rows(lmax, mmax)])
            to_grid, from_grid = to_grid[:, cols], from_grid[cols]
        self.register_buffer("to_matrix", to_grid.clone(), persistent=False)  # [G, K']
        self.register_buffer("from_matrix", from_grid.clone(), persistent=False)  # [K', G]

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        n, k, c = x.shape
        g = torch.mm(self.to_matrix.to(x.dtype), x.transpose(0, 1).reshape(k, n * c))  # [G, n c]
        return g.view(-1, n, c)  # [G, n, c]

    def from_grid(self, g: torch.Tensor) -> torch.Tensor:
        points, n, c = g.shape
        h = torch.mm(self.from_matrix.to(g.dtype), g.reshape(points, n * c))  # [K', n c]
        return h.view(-1, n, c).transpose(0, 1)  # [n, K', c]


GRID_CHUNK_ELEMENTS = 1 << 18  # grid values per chunk of the fused S2 activation (1 MiB in float32)


class _GridSiLU(torch.autograd.Function):
    """from_matrix @ SiLU(to_matrix @ x) for x [K', N], computed in chunks of columns, with the grid values
    recomputed in the backward instead of stored.

    The grid holds G / K' times more values than the coefficients (36 / 9 at lmax 2, 100 / 19 at lmax 4): held
    whole, [G, E c] is written, read by SiLU, written again and kept for the backward, which on CPU is memory
    bound. In chunks of `GRID_CHUNK_ELEMENTS` grid values, each written into its slice of the output, it stays
    in cache, and the backward recomputes to_matrix @ x (one small product) rather than reading it back. When a
    graph of the backward is asked for (create_graph), it is made of differentiable operations, so a second
    derivative (conservative forces) still works."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, to_matrix: torch.Tensor, from_matrix: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, to_matrix, from_matrix)
        step = max(1, GRID_CHUNK_ELEMENTS // to_matrix.shape[0])
        out = x.new_empty(from_matrix.shape[0], x.shape[1])  # [K', N], written chunk by chunk (no cat)
        for xs, ys in zip(x.split(step, dim=1), out.split(step, dim=1), strict=True):
            torch.mm(from_matrix, functional.silu(torch.mm(to_matrix, xs), inplace=True), out=ys)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x, to_matrix, from_matrix = ctx.saved_tensors
        step = max(1, GRID_CHUNK_ELEMENTS // to_matrix.shape[0])
        from_t, to_t = from_matrix.t(), to_matrix.t()
        chunks = zip(x.split(step, dim=1), grad.split(step, dim=1), strict=True)
        if torch.is_grad_enabled():  # create_graph: differentiable operations only
            return torch.cat([to_t @ _silu_grad(from_t @ gs, to_matrix @ xs) for xs, gs in chunks], dim=1), None, None
        grad_x = torch.empty_like(x)
        for (xs, gs), gx in zip(chunks, grad_x.split(step, dim=1), strict=True):
            torch.mm(to_t, torch.ops.aten.silu_backward(torch.mm(from_t, gs), torch.mm(to_matrix, xs)), out=gx)
        return grad_x, None, None


def _silu_grad(grad: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """grad * SiLU'(g) from differentiable operations (aten's silu_backward has no derivative of its own)."""
    sig = torch.sigmoid(g)
    return grad * sig * (1.0 + g * (1.0 - sig))


class S2Activation(nn.Module):
    """eSEN's separable S2 activation on edge-frame features: l = 0 <- SiLU(scalars); l > 0 <- the l > 0 rows of
    grid -> SH of SiLU(SH -> grid of all rows), fused in chunks (`_GridSiLU`)."""

    def __init__(self, grid: S2Grid) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        n, k, c = x.shape
        to_matrix, from_matrix = self.grid.to_matrix.to(x.dtype), self.grid.from_matrix.to(x.dtype)
        h = _GridSiLU.apply(x.transpose(0, 1).reshape(k, n * c), to_matrix, from_matrix)  # [Kt, E c]
        h = h.view(k, n, c).transpose(0, 1)  # [E, Kt, c]
        return torch.cat([functional.silu(scalars)[:, None], h[:, 1:]], dim=1)  # [E, Kt, c]


class EdgeEmbedding(nn.Module):
    """Edge features [E, num_radial + 2 edge_channels]: the Gaussian basis of d, then the source (Z_j) and target
    (Z_i) element embeddings, each coordinate of mean square about 1. Shared by all radial functions."""

    def __init__(self, num_elements: int, edge_channels: int, num_radial: int, cutoff: float) -> None:
        super().__init__()
        self.basis = GaussianBasis(num_radial, cutoff)
        self.source = ElementEmbedding(num_elements, edge_channels)
        self.target = ElementEmbedding(num_elements, edge_channels)

    def forward(self, dist: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        parts = [self.basis(dist), self.source(species[edge_index[0]]), self.target(species[edge_index[1]])]
        return torch.cat(parts, dim=1)  # [E, num_radial + 2 edge_channels]


class EdgeDegreeEmbedding(nn.Module):
    """Initial l > 0 features: sum over neighbours of D_ij^T applied to m = 0 coefficients from a RadialMLP, i.e.
    sum_j radial_l(edge_ij) Y_l(r_ij) up to normalisation, times the envelope, / avg_num_neighbors."""

    def __init__(self, lmax: int, sphere: int, edge_channels: int, num_radial: int, avg: float) -> None:
        super().__init__()
        self.lmax, self.sphere, self.avg = lmax, sphere, avg
        self.radial = RadialMLP(num_radial, edge_channels, (lmax + 1) * sphere)

    def forward(self, edge_features, rotation, target, n_atoms) -> torch.Tensor:
        m0 = self.radial(edge_features).view(-1, self.lmax + 1, self.sphere)  # [E, lmax+1, S] (m = 0 rows)
        msg = rotation.from_edge(m0)  # [E, K, S]: rows |m| > 0 are zero, only the m = 0 columns are used
        return msg.new_zeros(n_atoms, *msg.shape[1:]).index_add(0, target, msg) / self.avg  # [A, K, S]


class Edgewise(nn.Module):
    """The message block: rotate [x_j, x_i] into each edge frame, SO2Conv (own RadialMLP) -> activation ->
    SO2Conv, envelope, rotate back, sum over neighbours j of each target i, / avg_num_neighbors."""

    def __init__(
        self, lmax: int, mmax: int, sphere: int, hidden: int, edge_channels: int, num_radial: int,
        avg_num_neighbors: float, activation: str, edge_grid: S2Grid | None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.avg, self.lmax, self.hidden = avg_num_neighbors, lmax, hidden
        extra = hidden if activation == "grid" else lmax * hidden  # l = 0 of the S2 activation, or the gates
        sizes = sum(lmax + 1 - m for m in range(min(mmax, lmax) + 1))
        radial = RadialMLP(num_radial, edge_channels, sizes * 2 * sphere)
        self.conv1 = SO2Convolution(lmax, mmax, 2 * sphere, hidden, extra=extra, radial=radial)
        self.conv2 = SO2Convolution(lmax, mmax, hidden, sphere)
        self.s2_activation = S2Activation(edge_grid) if activation == "grid" else None
        rows = so3.edge_frame_rows(lmax, mmax)
        self.register_buffer("gate_of_row", torch.tensor([l - 1 for l, _ in rows[1:]]), persistent=False)

    def forward(self, x, edge_features, rotation, edge_index) -> torch.Tensor:
        pair = torch.cat([gather(x, edge_index[0]), gather(x, edge_index[1])], dim=-1)  # [E, K, 2S]
        h = rotation.to_edge(pair)  # [E, Kt, 2S] edge frame
        h, extra = self.conv1(h, edge_features)  # [E, Kt, H], [E, H] (grid) or [E, lmax H] (gate)
        if self.s2_activation is not None:
            h = self.s2_activation(h, extra)
        else:
            h = gate(h, extra.view(-1, self.lmax, self.hidden), self.gate_of_row)
        h, _ = self.conv2(h, edge_features)  # [E, Kt, S]
        msg = rotation.from_edge(h)  # [E, K, S], times the envelope (folded into the rotation back)
        return msg.new_zeros(x.shape[0], *msg.shape[1:]).index_add(0, edge_index[1], msg) / self.avg


class _GridMLP(torch.autograd.Function):
    """eSEN's grid MLP, fused: from_matrix @ MLP(to_matrix @ x) for x [K, A S] (atom-major columns, S channels
    per atom), MLP = W3 SiLU(W2 SiLU(W1 .)) on the S channels of every (grid point, atom), computed in chunks of
    whole atoms with every intermediate recomputed in the backward instead of stored.

    Unfused, a layer's feed-forward writes and reads five [G, A, H]-sized tensors (the grid values, two linear
    outputs, two SiLUs) and keeps four of them for the backward: on CPU that streaming, not the arithmetic, is
    its cost. In chunks of about `GRID_CHUNK_ELEMENTS` hidden values the chain stays in cache. x and the
    matrices come in the compute dtype (bf16 under autocast); the weights in their own dtype, cast here, and
    their gradients are summed over chunks in it. When a graph of the backward is asked for (create_graph:
    conservative training), the backward is made of differentiable operations, in one chunk."""

    @staticmethod
    def forward(ctx, x, to_matrix, from_matrix, w1, w2, w3):
        ctx.save_for_backward(x, to_matrix, from_matrix, w1, w2, w3)
        w1c, w2c, w3c = (w.to(x.dtype) for w in (w1, w2, w3))
        out = x.new_empty(from_matrix.shape[0], x.shape[1])  # [K, A S], written chunk by chunk (no cat)
        step = _atom_chunk_columns(to_matrix, w1)
        for xs, ys in zip(x.split(step, dim=1), out.split(step, dim=1), strict=True):
            g = torch.mm(to_matrix, xs)  # [G, a S]
            h = functional.silu(g.view(-1, w1.shape[1]) @ w1c.t(), inplace=True)  # [G a, H]
            h = functional.silu(h @ w2c.t(), inplace=True)
            torch.mm(from_matrix, (h @ w3c.t()).view(g.shape), out=ys)  # [K, a S]
        return out

    @staticmethod
    def backward(ctx, grad):
        x, to_matrix, from_matrix, *weights = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiable operations only, one chunk
            grad_x, *grad_w = _grid_mlp_grads(x, grad, to_matrix, from_matrix, weights, _silu_grad)
            return grad_x, None, None, *(g.to(w.dtype) for g, w in zip(grad_w, weights, strict=True))
        grad_x = torch.empty_like(x)
        grad_w = [torch.zeros_like(w) for w in weights]
        step = _atom_chunk_columns(to_matrix, weights[0])
        chunks = zip(x.split(step, dim=1), grad.split(step, dim=1), grad_x.split(step, dim=1), strict=True)
        for xs, gs, gx in chunks:
            gx_chunk, *gw_chunk = _grid_mlp_grads(xs, gs, to_matrix, from_matrix, weights, torch.ops.aten.silu_backward)
            gx.copy_(gx_chunk)
            for total, part in zip(grad_w, gw_chunk, strict=True):
                total.add_(part)
        return grad_x, None, None, *grad_w


def _atom_chunk_columns(to_matrix: torch.Tensor, w1: torch.Tensor) -> int:
    """Columns of x [K, A S] per chunk of `_GridMLP`: whole atoms (S columns each), about
    `GRID_CHUNK_ELEMENTS` hidden values [G, a, H] per chunk."""
    hidden, channels = w1.shape
    return max(1, GRID_CHUNK_ELEMENTS // (to_matrix.shape[0] * hidden)) * channels


def _grid_mlp_grads(x, grad, to_matrix, from_matrix, weights, silu_backward):
    """(dL/dx, dL/dW1, dL/dW2, dL/dW3) of from_matrix @ MLP(to_matrix @ x) for the output gradient `grad`
    (x, grad: [K, a S]), the forward recomputed; weight gradients in the weights' dtype."""
    w1, w2, w3 = (w.to(x.dtype) for w in weights)
    channels = w1.shape[1]
    g = torch.mm(to_matrix, x).view(-1, channels)  # [G a, S]
    z1 = g @ w1.t()  # [G a, H]
    h1 = functional.silu(z1)
    z2 = h1 @ w2.t()
    h2 = functional.silu(z2)
    gy = torch.mm(from_matrix.t(), grad).view(-1, channels)  # [G a, S]
    gz2 = silu_backward(gy @ w3, z2)  # [G a, H]
    gz1 = silu_backward(gz2 @ w2, z1)
    gx = torch.mm(to_matrix.t(), (gz1 @ w1).view(to_matrix.shape[0], -1))  # [K, a S]
    grad_w = (gz1.t() @ g, gz2.t() @ h1, gy.t() @ h2)
    return gx, *(gw.to(w.dtype) for gw, w in zip(grad_w, weights, strict=True))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer would compute in on x: autocast's lower precision for float32 inputs inside an
    autocast region (bf16 training), else x's own."""
    device = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class GridFeedForward(nn.Module):
    """eSEN's grid MLP, per atom: SH -> S2 grid, Linear S -> H, SiLU, Linear H -> H, SiLU, Linear H -> S at every
    grid point (no biases), grid -> SH; computed fused in chunks of atoms (`_GridMLP`)."""

    def __init__(self, sphere: int, hidden: int, grid: S2Grid) -> None:
        super().__init__()
        self.grid = grid
        self.mlp = nn.Sequential(
            Dense(sphere, hidden, bias=False), nn.SiLU(), Dense(hidden, hidden, bias=False), nn.SiLU(),
            Dense(hidden, sphere, bias=False),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k, c = x.shape
        dtype = _compute_dtype(x)
        to_matrix, from_matrix = self.grid.to_matrix.to(dtype), self.grid.from_matrix.to(dtype)
        weights = [self.mlp[i].weight for i in (0, 2, 4)]  # W1, W2, W3, cast inside
        x = x.to(dtype).transpose(0, 1).reshape(k, n * c)  # [K, A S]
        return _GridMLP.apply(x, to_matrix, from_matrix, *weights).view(k, n, c).transpose(0, 1)  # [A, K, S]


class GateFeedForward(nn.Module):
    """Per-atom SO3Linear(S -> H) -> Gate -> SO3Linear(H -> S) (the "gate" ablation)."""

    def __init__(self, lmax: int, sphere: int, hidden: int) -> None:
        super().__init__()
        self.lmax, self.hidden = lmax, hidden
        self.up = SO3Linear(lmax, sphere, hidden, extra=lmax * hidden)
        self.down = SO3Linear(lmax, hidden, sphere)
        self.register_buffer("gate_of_row", so3.degree_index(lmax)[1:] - 1, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gates = self.up(x)  # [A, K, H], [A, lmax * H]
        h = gate(h, gates.view(-1, self.lmax, self.hidden), self.gate_of_row)
        return self.down(h)[0]  # [A, K, S]


class ESENBlock(nn.Module):
    """x = x + Edgewise(Norm(x)); x = x + FeedForward(Norm(x))."""

    def __init__(self, edgewise: Edgewise, feed_forward: nn.Module, lmax: int, sphere: int) -> None:
        super().__init__()
        self.norm1 = EquivariantLayerNorm(lmax, sphere)
        self.edgewise = edgewise
        self.norm2 = EquivariantLayerNorm(lmax, sphere)
        self.feed_forward = feed_forward

    def forward(self, x, edge_features, rotation, edge_index) -> torch.Tensor:
        x = x + self.edgewise(self.norm1(x), edge_features, rotation, edge_index)
        return x + self.feed_forward(self.norm2(x))


@register("esen")
class ESEN(ForceField):
    """eSEN force field (module docstring). `width` = sphere channels (or every channel count with
    scaling="all"); depth = `num_layers`."""

    base_width = 16
    symmetry = Symmetry(group="SO(3)", nu=2, l=2, rotation_equivariant=True, reflection_equivariant=False)

    def __init__(
        self,
        width: int,
        *,
        lmax: int = 2,
        mmax: int = 2,
        num_layers: int = 3,
        activation: str = "grid",
        scaling: str = "sphere",
        hidden_channels: int | None = None,
        edge_channels: int | None = None,
        num_radial: int = 16,
        grid_resolution: int | None = None,
        ff_grid_resolution: int | None = None,
        avg_num_neighbors: float = 20.0,
        **shared,
    ) -> None:
        super().__init__(width, **shared)  # elements, cutoff, forces, ... (ForceField)
        _check_options(lmax, mmax, num_layers, num_radial, avg_num_neighbors, activation, scaling)
        sphere, hidden, edge = _channels(width, scaling, hidden_channels, edge_channels)
        resolution = _resolution("grid_resolution", lmax, grid_resolution, 2 * lmax + 2)
        ff_resolution = _resolution("ff_grid_resolution", lmax, ff_grid_resolution, 4 * lmax + 4)
        self.lmax, self.mmax, self.num_layers, self.activation = lmax, min(mmax, lmax), num_layers, activation
        self.sphere_channels, self.hidden_channels, self.edge_channels = sphere, hidden, edge
        self.grid_resolution = (resolution, ff_resolution) if activation == "grid" else None
        self.symmetry = Symmetry(group="SO(3)", nu=2, l=lmax, rotation_equivariant=True, reflection_equivariant=False)
        self.equivariance_tolerance = GRID_EQUIVARIANCE_TOLERANCE if activation == "grid" else 1e-9
        self.embedding = ElementEmbedding(self.num_elements, sphere)
        self.edge_embedding = EdgeEmbedding(self.num_elements, edge, num_radial, self.cutoff)
        self.envelope = PolynomialEnvelope(self.cutoff)
        self.degree_embedding = EdgeDegreeEmbedding(lmax, sphere, edge, num_radial, avg_num_neighbors)
        node_grid = S2Grid(lmax, ff_resolution) if activation == "grid" else None  # shared by all blocks
        edge_grid = S2Grid(lmax, resolution, self.mmax) if activation == "grid" else None
        self.blocks = nn.ModuleList()
        for _ in range(num_layers):
            edgewise = Edgewise(
                lmax, self.mmax, sphere, hidden, edge, num_radial, avg_num_neighbors, activation, edge_grid
            )
            ff = GridFeedForward(sphere, hidden, node_grid) if node_grid else GateFeedForward(lmax, sphere, hidden)
            self.blocks.append(ESENBlock(edgewise, ff, lmax, sphere))
        self.norm = EquivariantLayerNorm(lmax, sphere)
        self.energy_head = nn.Sequential(
            Dense(sphere, hidden), nn.SiLU(), Dense(hidden, hidden), nn.SiLU(), Dense(hidden, 1, readout=True)
        )
        self.force_head = Dense(sphere, 1, bias=False, readout=True)

    def interactions(
        self, species: torch.Tensor, pos: torch.Tensor, batch: GraphBatch
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        edge_index = batch.edge_index
        vec = edge_vectors(pos, edge_index)  # [E, 3]
        dist = vec.norm(dim=-1)  # [E]
        envelope = self.envelope(dist)  # [E]
        rotation = so3.edge_rotation(vec, self.lmax, self.mmax, weight=envelope)  # D(R_e), envelope on the way back
        edge_features = self.edge_embedding(dist, species, edge_index)  # [E, num_radial + 2 E_c]
        x = pos.new_zeros(pos.shape[0], so3.num_coefficients(self.lmax), self.sphere_channels)  # [A, K, S]
        x[:, 0] = self.embedding(species)
        x = x + self.degree_embedding(edge_features, rotation, edge_index[1], pos.shape[0])
        for block in self.blocks:
            x = block(x, edge_features, rotation, edge_index)  # [A, K, S]
        x = self.norm(x)
        energy = self.energy_head(x[:, 0]).squeeze(-1)  # [A]
        if self.force_mode == "conservative":
            return energy, None
        forces = self.force_head(x[:, 1:4]).squeeze(-1)  # [A, 3]: l = 1 coefficients are (x, y, z)
        return energy, forces

    def extra_repr(self) -> str:
        grid = ""
        if self.grid_resolution:
            (r, r_ff) = self.grid_resolution
            grid = f", grids: message {r}x{r}, feed-forward {r_ff}x{r_ff}"
        return (
            f"{super().extra_repr()}, lmax={self.lmax}, mmax={self.mmax}, num_layers={self.num_layers}, "
            f"sphere/hidden/edge channels={self.sphere_channels}/{self.hidden_channels}/{self.edge_channels}, "
            f"activation={self.activation}{grid}"
        )


DEFAULT_HIDDEN_CHANNELS = 8  # H and E_c with scaling="sphere" when not given (the `paper` ladder sets its own)
DEFAULT_EDGE_CHANNELS = 8


def _channels(width: int, scaling: str, hidden: int | None, edge: int | None) -> tuple[int, int, int]:
    """(sphere, hidden, edge) channel counts of a model of `width` under `scaling` (module docstring)."""
    if width < 2:  # the layer norm centres l = 0 over the sphere channels: one channel would leave it zero
        raise SymscaleError.invalid("esen width (sphere channels)", width, "an integer >= 2")
    if scaling == "all":
        if hidden is not None or edge is not None:
            raise SymscaleError(
                f"esen with scaling='all' sets hidden and edge channels to the width; got hidden_channels={hidden}, "
                f"edge_channels={edge} (expected them unset, or scaling='sphere')"
            )
        return width, width, width
    hidden = DEFAULT_HIDDEN_CHANNELS if hidden is None else hidden
    edge = DEFAULT_EDGE_CHANNELS if edge is None else edge
    for name, value in (("hidden_channels", hidden), ("edge_channels", edge)):
        if not isinstance(value, int) or value < 1:
            raise SymscaleError.invalid(name, value, "an integer >= 1")
    return width, hidden, edge


def _resolution(name: str, lmax: int, value: int | None, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or value < 2 * lmax + 2:
        raise SymscaleError.invalid(name, value, f"an integer >= 2 lmax + 2 = {2 * lmax + 2}")
    return value


def _check_options(
    lmax: int, mmax: int, num_layers: int, num_radial: int, avg_num_neighbors: float, activation: str, scaling: str
) -> None:
    if not isinstance(lmax, int) or not 1 <= lmax <= so3.LMAX_SUPPORTED:
        raise SymscaleError.invalid("lmax", lmax, f"an integer in 1..{so3.LMAX_SUPPORTED}")
    if not isinstance(mmax, int) or mmax < 1:
        raise SymscaleError.invalid("mmax", mmax, "an integer >= 1 (values above lmax act as lmax)")
    if not isinstance(num_layers, int) or num_layers < 1:
        raise SymscaleError.invalid("num_layers", num_layers, "an integer >= 1")
    if not isinstance(num_radial, int) or num_radial < 2:
        raise SymscaleError.invalid("num_radial", num_radial, "an integer >= 2")
    if not avg_num_neighbors > 0:
        raise SymscaleError.invalid("avg_num_neighbors", avg_num_neighbors, "a positive number")
    if activation not in ACTIVATIONS:
        raise SymscaleError.invalid("activation", activation, f"one of {', '.join(ACTIVATIONS)}")
    if scaling not in SCALINGS:
        raise SymscaleError.invalid("scaling", scaling, f"one of {', '.join(SCALINGS)}")

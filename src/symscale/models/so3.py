"""SO(3) mathematics for spherical-harmonic models: real spherical harmonics and Wigner-D matrices.

Conventions (the same as e3nn 0.6, so results can be checked against it):

- Coefficients of degree l are stored l-major, l = 0..lmax, each block with 2l+1 entries indexed
  i = 0..2l; we call m = i - l (so m = -l..l in storage order). A feature tensor is
  [..., (lmax+1)^2, channels].
- Real spherical harmonics `Y^l` are e3nn's ("component" normalisation: |Y^l(x)|^2 = 2l+1 on the unit
  sphere). The polar axis is **y**: `Y^l_m(y_hat) = 0` for m != 0. For l = 1, `Y^1(x) = sqrt(3) (x, y, z)`:
  the three l = 1 coefficients are the Cartesian components in the order x, y, z.
- Rotations use Y-X-Y Euler angles: `R(alpha, beta, gamma) = Ry(alpha) Rx(beta) Ry(gamma)` (gamma is
  applied first), with `Ry(t) = [[c, 0, s], [0, 1, 0], [-s, 0, c]]`, `Rx(t) = [[1, 0, 0], [0, c, -s],
  [0, s, c]]`. `D(R)` satisfies `Y(R x) = D(R) Y(x)`, `D(R1 R2) = D(R1) D(R2)`, `D(R^T) = D(R)^T`.
- The Wigner matrix is factorised as `D^l(alpha, beta, gamma) = Z^l(alpha) J^l Z^l(beta) J^l Z^l(gamma)`
  where `Z^l(t) = D^l(Ry(t))` is sparse (entry (i, i) = cos((l-i) t), entry (i, 2l-i) = sin((l-i) t)) and
  `J^l = D^l(Q)` is the constant matrix of the rotation by pi about (x + y)/sqrt(2) (it swaps x and y and
  negates z, so `Q Ry(t) Q = Rx(t)`). `J^l` is computed once per process (least squares on sampled
  spherical harmonics, float64) and cached; no matrix exponential is taken.
- Edge frame: for an edge vector r, `edge_frame_matrix(r)` is the rotation R_e with `R_e r_hat = y_hat`
  (R_e = R(alpha, beta, 0)^T with `r_hat = (sin a sin b, cos b, cos a sin b)`), so `D(R_e) Y(r_hat)` has
  only m = 0 entries. The angles are never formed: cos/sin of alpha and beta come from the components of
  r_hat, and multiples of the angles from the Chebyshev recursion, so the matrices are smooth functions of
  r (away from the poles r_hat = +-y, where the frame is undefined; there alpha = 0 is used).
- `edge_frame_rotation` returns only the rows with |m| <= mmax, in **m-major order**: first m = 0 for
  l = 0..lmax, then for each m = 1..mmax the rows (l, -m) for l = m..lmax followed by (l, +m) for
  l = m..lmax (`edge_frame_rows`). Under a rotation by t about the edge axis each pair ((l,-m), (l,+m))
  turns by the same 2x2 rotation for every l, which is what an SO(2) convolution relies on.

Constant tables are built in float64 on the CPU and cached per (lmax, mmax, dtype, device), rather than
registered as module buffers: a buffer rounded by `model.float()` cannot be recovered by a later
`model.double()`, and the float64 equivariance tests need the exact constants.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "angles_to_matrix",
    "degree_index",
    "edge_frame_matrix",
    "edge_frame_rotation",
    "edge_frame_rows",
    "EdgeRotation",
    "edge_rotation",
    "edge_wigner",
    "j_matrix",
    "matrix_to_angles",
    "num_coefficients",
    "s2_grid",
    "spherical_harmonics",
    "wigner_d",
    "wigner_d_from_matrix",
]

LMAX_SUPPORTED = 6
_POLE_EPS = 1e-12  # sin(beta)^2 below which an edge is treated as lying on the y axis


def num_coefficients(lmax: int) -> int:
    """(lmax+1)^2: the number of real SH coefficients up to degree lmax."""
    return (lmax + 1) ** 2


def degree_index(lmax: int) -> torch.Tensor:
    """The degree l of each coefficient, [(lmax+1)^2] long."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(lmax + 1)])


def spherical_harmonics(lmax: int, vectors: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics of the directions of `vectors` [..., 3]: [..., (lmax+1)^2].

    e3nn's basis with component normalisation (|Y^l|^2 = 2l+1), inputs normalised first; y is the polar axis.
    """
    _check_lmax(lmax)
    from e3nn import o3  # imported on first use: e3nn takes seconds to import, and most commands never need it

    return o3.spherical_harmonics(list(range(lmax + 1)), vectors, normalize=True, normalization="component")


def _check_lmax(lmax: int) -> None:
    if not 0 <= lmax <= LMAX_SUPPORTED:
        raise ValueError(f"lmax must be in 0..{LMAX_SUPPORTED}, got {lmax}")


# ---------------------------------------------------------------------------------------------------------
# 3x3 rotations and Euler angles (Y-X-Y)


def _rot_y(t: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(t), torch.sin(t), torch.ones_like(t), torch.zeros_like(t)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*t.shape, 3, 3)


def _rot_x(t: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(t), torch.sin(t), torch.ones_like(t), torch.zeros_like(t)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*t.shape, 3, 3)


def angles_to_matrix(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """R = Ry(alpha) Rx(beta) Ry(gamma), [..., 3, 3] (angles in radians)."""
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    return _rot_y(alpha) @ _rot_x(beta) @ _rot_y(gamma)


def matrix_to_angles(rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Y-X-Y Euler angles (alpha, beta, gamma) of proper rotations [..., 3, 3]; inverse of `angles_to_matrix`."""
    y = rotation[..., :, 1]  # R y_hat = (sin a sin b, cos b, cos a sin b)
    beta = torch.acos(y[..., 1].clamp(-1.0, 1.0))
    alpha = torch.atan2(y[..., 0], y[..., 2])
    rest = _rot_x(-beta) @ _rot_y(-alpha) @ rotation  # = Ry(gamma)
    gamma = torch.atan2(rest[..., 0, 2], rest[..., 0, 0])
    return alpha, beta, gamma


# ---------------------------------------------------------------------------------------------------------
# constant tables (float64, cached)


@functools.cache
def j_matrix(l: int) -> torch.Tensor:
    """J^l = D^l(Q), Q the rotation by pi about (x+y)/sqrt(2); [2l+1, 2l+1] float64, symmetric, J^2 = 1.

    Solved by least squares from Y^l(Q x) = J^l Y^l(x) on 4(2l+1)^2 random unit vectors (exact to ~1e-15).
    """
    from e3nn import o3

    _check_lmax(l)
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(4 * (2 * l + 1) ** 2, 3, generator=gen, dtype=torch.float64)
    q = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    y = o3.spherical_harmonics(l, x, normalize=True, normalization="component")  # [P, 2l+1]
    yq = o3.spherical_harmonics(l, x @ q.T, normalize=True, normalization="component")  # [P, 2l+1]
    j = torch.linalg.lstsq(y, yq).solution.T  # yq = y @ J^T
    j = torch.where(j.abs() < 1e-13, torch.zeros_like(j), j)
    return 0.5 * (j + j.T)


def _frequency(l: int) -> torch.Tensor:
    """f_i = l - i for i = 0..2l: the frequency of row i of Z^l(t)."""
    return l - torch.arange(2 * l + 1)


@functools.cache
def _tables(lmax: int) -> dict[str, torch.Tensor]:
    """Index tables for `_wigner_flat`. F = sum_l (2l+1)^2 flat entries (l, i, j), row-major per block.

    Trig vectors hold T = [cos(0 t), ..., cos(lmax t), sin(1 t), ..., sin(lmax t)] (2 lmax + 1 entries).
    """
    n_trig = 2 * lmax + 1
    mats, cos_idx, sin_idx, sin_sign, partner, col_cos, col_sin, col_sign, col_partner = ([] for _ in range(9))
    offset = 0
    for l in range(lmax + 1):
        d = 2 * l + 1
        f = _frequency(l)
        j = j_matrix(l)
        m = torch.zeros(n_trig, d, d, dtype=torch.float64)  # X^l = J Z(beta) J = sum_t T_t M_t
        for i in range(d):
            m[abs(int(f[i]))] += torch.outer(j[:, i], j[i, :])
            if f[i] != 0:
                m[lmax + abs(int(f[i]))] += math.copysign(1.0, f[i]) * torch.outer(j[:, i], j[2 * l - i, :])
        mats.append(m.reshape(n_trig, d * d))
        ii, jj = torch.meshgrid(torch.arange(d), torch.arange(d), indexing="ij")
        ii, jj = ii.reshape(-1), jj.reshape(-1)
        # left Z(alpha): D[i,j] = cos(f_i a) X[i,j] + sin(f_i a) X[2l-i, j]
        cos_idx.append(f[ii].abs())
        sin_idx.append(torch.where(f[ii] != 0, lmax + f[ii].abs(), 0))
        sin_sign.append(torch.sign(f[ii]).double())
        partner.append(offset + (2 * l - ii) * d + jj)
        # right Z(gamma): D[i,j] = Y[i,j] cos(f_j g) + Y[i, 2l-j] sin(-f_j g)
        col_cos.append(f[jj].abs())
        col_sin.append(torch.where(f[jj] != 0, lmax + f[jj].abs(), 0))
        col_sign.append(-torch.sign(f[jj]).double())
        col_partner.append(offset + ii * d + (2 * l - jj))
        offset += d * d
    names = ("cos_idx", "sin_idx", "sin_sign", "partner", "col_cos", "col_sin", "col_sign", "col_partner")
    lists = (cos_idx, sin_idx, sin_sign, partner, col_cos, col_sin, col_sign, col_partner)
    out = {name: torch.cat(v) for name, v in zip(names, lists)}
    out["beta_basis"] = torch.cat(mats, dim=1)  # [2 lmax + 1, F]
    return out


@functools.cache
def _block_gather(lmax: int) -> torch.Tensor:
    """Index into a zero-padded flat D (position F is 0) giving the block-diagonal [K, K] matrix."""
    k = num_coefficients(lmax)
    flat = sum((2 * l + 1) ** 2 for l in range(lmax + 1))
    idx = torch.full((k, k), flat, dtype=torch.long)
    offset = 0
    for l in range(lmax + 1):
        d, start = 2 * l + 1, l * l
        idx[start : start + d, start : start + d] = offset + torch.arange(d * d).reshape(d, d)
        offset += d * d
    return idx


def edge_frame_rows(lmax: int, mmax: int) -> list[tuple[int, int]]:
    """(l, m) of each row kept in the edge frame (|m| <= mmax), in m-major order (module docstring)."""
    rows = [(l, 0) for l in range(lmax + 1)]
    for m in range(1, min(mmax, lmax) + 1):
        rows += [(l, -m) for l in range(m, lmax + 1)] + [(l, m) for l in range(m, lmax + 1)]
    return rows


@functools.cache
def _edge_gather(lmax: int, mmax: int) -> torch.Tensor:
    """Index into the zero-padded flat D(R) giving [Kt, K] with entry (r, k) = D(R)[k, col(r)]."""
    full = _block_gather(lmax)  # [K, K]
    cols = torch.tensor([l * l + l + m for l, m in edge_frame_rows(lmax, mmax)])
    return full[:, cols].T.contiguous()  # [Kt, K]


_DEVICE_CACHE: dict[tuple, Any] = {}


def _on_device(key: tuple) -> Any:
    """The constant table `key` names, on its device, built once per process. Looked up here (a plain dict,
    which torch.compile reads and guards), built by `_build_on_device` outside any compiled graph: traced,
    the functools caches above are ignored and their e3nn fits rerun at every compilation."""
    if key not in _DEVICE_CACHE:
        _DEVICE_CACHE[key] = _build_on_device(key)
    return _DEVICE_CACHE[key]


@torch.compiler.disable
def _build_on_device(key: tuple) -> Any:
    kind, *args, device = key
    if kind == "tables":
        lmax, dtype = args
        return {
            name: t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
            for name, t in _tables(lmax).items()
        }
    if kind == "block":
        return _block_gather(*args).to(device)
    return _edge_gather(*args).to(device)


def _tables_on(lmax: int, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    return _on_device(("tables", lmax, dtype, device))


# ---------------------------------------------------------------------------------------------------------
# Wigner-D matrices


def _multiples(cos: torch.Tensor, sin: torch.Tensor, lmax: int) -> torch.Tensor:
    """T = [cos(0t)..cos(lmax t), sin(1t)..sin(lmax t)] from cos t, sin t by recursion; [..., 2 lmax + 1]."""
    cs, ss = [torch.ones_like(cos)], [torch.zeros_like(sin)]
    for _ in range(lmax):
        c, s = cs[-1], ss[-1]
        cs.append(c * cos - s * sin)
        ss.append(s * cos + c * sin)
    return torch.stack(cs + ss[1:], dim=-1)


def _wigner_flat(lmax: int, t_alpha: torch.Tensor, t_beta: torch.Tensor, t_gamma: torch.Tensor | None):
    """Flat per-degree blocks of D(alpha, beta, gamma) = Z(a) J Z(b) J Z(g): [..., F] (see `_tables`)."""
    tab = _tables_on(lmax, t_beta.dtype, t_beta.device)
    x = t_beta @ tab["beta_basis"]  # [..., F]: J Z(beta) J
    d = t_alpha[..., tab["cos_idx"]] * x + tab["sin_sign"] * t_alpha[..., tab["sin_idx"]] * x[..., tab["partner"]]
    if t_gamma is not None:
        d = (
            d * t_gamma[..., tab["col_cos"]]
            + tab["col_sign"] * t_gamma[..., tab["col_sin"]] * d[..., tab["col_partner"]]
        )
    return d


def _to_block_diagonal(lmax: int, flat: torch.Tensor) -> torch.Tensor:
    padded = torch.cat([flat, flat.new_zeros(*flat.shape[:-1], 1)], dim=-1)
    k = num_coefficients(lmax)
    idx = _on_device(("block", lmax, flat.device)).reshape(-1)
    return padded[..., idx].reshape(*flat.shape[:-1], k, k)


def wigner_d(lmax: int, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Block-diagonal Wigner-D of R(alpha, beta, gamma) for degrees 0..lmax: [..., K, K], K = (lmax+1)^2.

    Computed as Z(alpha) J Z(beta) J Z(gamma) from cos/sin of multiples of the angles (no matrix exponential).
    """
    _check_lmax(lmax)
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    trig = [_multiples(torch.cos(a), torch.sin(a), lmax) for a in (alpha, beta, gamma)]
    return _to_block_diagonal(lmax, _wigner_flat(lmax, *trig))


def wigner_d_from_matrix(lmax: int, rotation: torch.Tensor) -> torch.Tensor:
    """Block-diagonal Wigner-D [..., K, K] of proper rotation matrices [..., 3, 3]."""
    return wigner_d(lmax, *matrix_to_angles(rotation))


def _edge_trig(vectors: torch.Tensor, lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Trig vectors of alpha and beta with R(alpha, beta, 0) y_hat = r_hat, without forming the angles.

    r_hat = (sin a sin b, cos b, cos a sin b). At the poles (sin b ~ 0) alpha = 0; `torch.where` with a
    safe denominator keeps gradients finite there.
    """
    unit = vectors / vectors.norm(dim=-1, keepdim=True)  # [E, 3]
    x, y, z = unit.unbind(-1)
    rho2 = x * x + z * z
    pole = rho2 < _POLE_EPS
    rho = torch.sqrt(torch.where(pole, torch.ones_like(rho2), rho2))
    cos_a = torch.where(pole, torch.ones_like(z), z / rho)
    sin_a = torch.where(pole, torch.zeros_like(x), x / rho)
    sin_b = torch.where(pole, torch.zeros_like(rho), rho)
    return _multiples(cos_a, sin_a, lmax), _multiples(y, sin_b, lmax)


def edge_frame_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """R_e [E, 3, 3]: the rotation with R_e r_hat = y_hat for each edge vector [E, 3] (R(alpha, beta, 0)^T)."""
    t_a, t_b = _edge_trig(vectors, 1)
    ca, sa, cb, sb = t_a[..., 1], t_a[..., 2], t_b[..., 1], t_b[..., 2]
    o, z = torch.ones_like(ca), torch.zeros_like(ca)
    ry = torch.stack([ca, z, sa, z, o, z, -sa, z, ca], -1).reshape(*ca.shape, 3, 3)
    rx = torch.stack([o, z, z, z, cb, -sb, z, sb, cb], -1).reshape(*ca.shape, 3, 3)
    return (ry @ rx).transpose(-1, -2)


def edge_wigner(vectors: torch.Tensor, lmax: int) -> torch.Tensor:
    """D(R_e) [E, K, K]: the full block-diagonal Wigner-D of the edge-frame rotation (D(R_e) Y(r_hat) is m=0)."""
    _check_lmax(lmax)
    t_a, t_b = _edge_trig(vectors, lmax)
    return _to_block_diagonal(lmax, _wigner_flat(lmax, t_a, t_b, None)).transpose(-1, -2)


def edge_frame_rotation(vectors: torch.Tensor, lmax: int, mmax: int) -> torch.Tensor:
    """The rows |m| <= mmax of D(R_e), in m-major order (`edge_frame_rows`): [E, Kt, K].

    `x_edge = W @ x` rotates l-major features [E, K, C] into the truncated edge frame [E, Kt, C];
    `W.transpose(1, 2) @ x_edge` rotates them back (dropping |m| > mmax is exactly what is lost).
    """
    _check_lmax(lmax)
    t_a, t_b = _edge_trig(vectors, lmax)
    flat = _wigner_flat(lmax, t_a, t_b, None)  # [E, F] blocks of D(R), R = R_e^T
    padded = torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], dim=-1)
    idx = _on_device(("edge", lmax, mmax, flat.device))  # [Kt, K]
    return padded[:, idx.reshape(-1)].reshape(flat.shape[0], *idx.shape)


# ---------------------------------------------------------------------------------------------------------
# the path used by models: one truncated matrix per edge, built once per forward pass, applied as batched GEMMs


@dataclass(frozen=True)
class EdgeRotation:
    """Per-edge rotation into the edge frame: the rows |m| <= mmax of D(R_e), W [E, Kt, K] (`edge_frame_rotation`).

    Built once per forward pass (Z(alpha) J Z(beta) J from cos/sin multiples of the edge angles) and applied to
    every message as one batched matrix product. Applying the factors Z and J to the features instead (four
    elementwise passes with a coefficient permutation, and two dense [K, K] products, per application) was
    measured 13-20x slower on CPU for E = 28k edges, K = 9, 16-64 channels, forward plus backward: the
    permutation gathers and their scatter backward dominate, while [E, 9, 9] @ [E, 9, C] is a single call.

    `back` is w_e W^T [E, K, Kt]: the way back to the global frame with an optional per-edge weight w_e folded in
    (e.g. the cutoff envelope), which costs Kt K multiplications per edge once instead of Kt C per message.
    """

    matrix: torch.Tensor  # [E, Kt, K]
    back: torch.Tensor  # [E, K, Kt]

    def to_edge(self, x: torch.Tensor) -> torch.Tensor:
        """Rows |m| <= mmax of D(R_e) x: [E, K, C] -> [E, Kt, C] (rows in `edge_frame_rows` order)."""
        return torch.matmul(self.matrix, x)

    def from_edge(self, h: torch.Tensor) -> torch.Tensor:
        """w_e D(R_e)^T applied to kept rows (others zero): [E, Kt, C] -> [E, K, C].

        `h` may hold only the first n <= Kt rows (e.g. the m = 0 rows, n = lmax + 1): the rest count as zero."""
        return torch.matmul(self.back[..., : h.shape[1]], h)


def edge_rotation(vectors: torch.Tensor, lmax: int, mmax: int, weight: torch.Tensor | None = None) -> EdgeRotation:
    """The `EdgeRotation` of edge vectors [E, 3] for features up to degree lmax, keeping |m| <= mmax; `weight`
    [E] (default 1) multiplies every message rotated back by `from_edge`."""
    matrix = edge_frame_rotation(vectors, lmax, mmax)  # [E, Kt, K]
    back = matrix if weight is None else matrix * weight[:, None, None]
    return EdgeRotation(matrix.contiguous(), back.transpose(1, 2).contiguous())


# ---------------------------------------------------------------------------------------------------------
# S2 grids: pointwise functions of SH expansions (eSEN's S2 activation and grid MLP)


@functools.cache
def s2_grid(lmax: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Projections between SH coefficients up to `lmax` and values on a `resolution` x `resolution` S2 grid.

    The grid has `resolution` Gauss-Legendre nodes in cos(beta) (beta from the polar axis y) times `resolution`
    equally spaced longitudes alpha, points (sin a sin b, cos b, cos a sin b) as in the edge frame. Returns
    float64 CPU tensors `to_grid` [G, K] (f(g) = sum_k Y_k(g) c_k, G = resolution^2, K = (lmax+1)^2) and
    `from_grid` [K, G] (c_k = (1/4 pi) sum_g w_g Y_k(g) f(g), quadrature weights w_g summing to 4 pi).

    The quadrature integrates products Y_k Y_k' exactly when resolution >= lmax + 1 (latitudes) and
    resolution >= 2 lmax + 1 (longitudes), so `from_grid @ to_grid` is the identity to rounding. A pointwise
    nonlinearity between the two makes higher degrees, which alias into the kept ones: the result is then
    equivariant only up to that aliasing error, which falls as the resolution grows. Under a rotation about y
    by a multiple of 2 pi / resolution the grid maps onto itself.
    """
    _check_lmax(lmax)
    if resolution < 2 * lmax + 1:
        raise ValueError(f"an S2 grid for lmax {lmax} needs resolution >= {2 * lmax + 1}, got {resolution}")
    with torch.device("cpu"):  # built once, outside any meta-device context, in float64
        import numpy as np

        nodes, weights = np.polynomial.legendre.leggauss(resolution)  # cos(beta) in [-1, 1], weights sum 2
        cos_b = torch.as_tensor(nodes, dtype=torch.float64)
        sin_b = torch.sqrt((1.0 - cos_b**2).clamp_min(0.0))
        alpha = torch.arange(resolution, dtype=torch.float64) * (2 * math.pi / resolution)
        sa, ca = torch.sin(alpha), torch.cos(alpha)
        points = torch.stack(
            [sin_b[:, None] * sa[None], cos_b[:, None].expand(-1, resolution), sin_b[:, None] * ca[None]], dim=-1
        ).reshape(-1, 3)  # [G, 3], latitude-major
        w = (torch.as_tensor(weights, dtype=torch.float64)[:, None] * (2 * math.pi / resolution)).expand(
            -1, resolution
        )  # [n_beta, n_alpha], sums to 4 pi
        y = spherical_harmonics(lmax, points)  # [G, K], component normalisation: mean of Y_k^2 over S2 is 1
        to_grid = y.contiguous()
        from_grid = (y * w.reshape(-1, 1) / (4 * math.pi)).T.contiguous()  # [K, G]
    return to_grid, from_grid

"""Basis functions of distances and angles shared by the invariant families.

Conventions:
- distances d in Angstrom; `cutoff` in Angstrom; the scaled distance is x = d / cutoff;
- `PolynomialEnvelope` is the envelope of DimeNet (Gasteiger et al. 2020) with exponent p:
  u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2) for x < 1, and 0 for x >= 1.
  u(0) = 1 and u, u', u'' vanish at x = 1, so anything multiplied by it is twice continuously
  differentiable as an atom crosses the cutoff;
- `RadialBasis` = envelope(x) * (Gaussians of x on [0, 1] | Bessel functions sin(n pi x) / 2x), scaled so
  that each function is of order one (so a N(0, 1/fan_in) projection of the basis is of order one);
- `legendre` gives P_0..P_{L-1} of cos(angle), the m = 0 real spherical harmonics up to normalisation
  (the "circular" basis GemNet-OC uses for triplet angles);
- `edge_frames` gives each unit vector u an orthonormal pair (e1, e2) with (e1, e2, u) right-handed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from symscale.errors import SymscaleError

RADIAL_KINDS = ("gaussian", "bessel")


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff u(x), x = d / cutoff: 1 at 0, zero with two derivatives at and beyond 1."""

    def __init__(self, exponent: int = 5) -> None:
        super().__init__()
        if exponent < 1:
            raise SymscaleError.invalid("envelope exponent", exponent, "an integer >= 1")
        p = exponent
        self.p = p
        self.a = -(p + 1) * (p + 2) / 2
        self.b = p * (p + 2)
        self.c = -p * (p + 1) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp = x.pow(self.p)
        u = 1 + xp * (self.a + x * (self.b + self.c * x))
        return torch.where(x < 1, u, torch.zeros_like(x))


class RadialBasis(nn.Module):
    """`num_radial` functions of the distance d [Angstrom] times the polynomial envelope. Returns [..., num_radial]."""

    def __init__(self, num_radial: int, cutoff: float, kind: str = "gaussian", envelope_exponent: int = 5) -> None:
        super().__init__()
        if kind not in RADIAL_KINDS:
            raise SymscaleError.invalid("radial basis", kind, f"one of {', '.join(RADIAL_KINDS)}")
        if num_radial < 1:
            raise SymscaleError.invalid("num_radial", num_radial, "an integer >= 1")
        self.kind = kind
        self.cutoff = float(cutoff)
        self.envelope = PolynomialEnvelope(envelope_exponent)
        if kind == "gaussian":
            # centres evenly spaced on [0, 1] in x, width one spacing (as GemNet-OC's Gaussian smearing);
            # scaled so that sum_k basis_k(x)^2 ~ num_radial (unit second moment per function) inside [0, 1]
            self.register_buffer("centres", torch.linspace(0, 1, num_radial), persistent=False)
            self.width = 1.0 / max(num_radial - 1, 1)
            self.scale = (num_radial / math.sqrt(math.pi)) ** 0.5
        else:
            self.register_buffer("frequencies", math.pi * torch.arange(1, num_radial + 1.0), persistent=False)

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        x = (dist / self.cutoff)[..., None]  # [..., 1]
        env = self.envelope(x)
        if self.kind == "gaussian":
            basis = self.scale * torch.exp(-0.5 * ((x - self.centres.to(x.dtype)) / self.width) ** 2)
        else:  # DimeNet's sqrt(2/c) sin(n pi d/c) / d, times c / sqrt(8) so that it is of order one
            basis = torch.sin(self.frequencies.to(x.dtype) * x) / (2 * x)
        return env * basis  # [..., num_radial]


def legendre(cos: torch.Tensor, num: int) -> torch.Tensor:
    """Legendre polynomials P_0..P_{num-1} of `cos` by Bonnet's recursion. Returns [..., num]."""
    out = [torch.ones_like(cos), cos][:num]
    for n in range(1, num - 1):
        out.append(((2 * n + 1) * cos * out[n] - n * out[n - 1]) / (n + 1))
    return torch.stack(out, dim=-1)


def edge_frames(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal (e1, e2) perpendicular to each unit vector u [n, 3], with e2 = u x e1.

    e1 is the component of the coordinate axis least aligned with u, orthogonal to u and normalised
    (never degenerate: that axis makes an angle of at least acos(1/sqrt(3)) with u). The choice is not
    rotation-equivariant; callers must only use quantities that do not depend on the in-plane choice
    (e.g. products z_a * conj(z_b) of in-plane phases measured in the same frame)."""
    ref = torch.nn.functional.one_hot(u.detach().abs().argmin(dim=-1), 3).to(u.dtype)  # [n, 3]
    e1 = ref - (ref * u).sum(-1, keepdim=True) * u
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    e2 = torch.cross(u, e1, dim=-1)
    return e1, e2

"""The reference study's numbers, to print beside ours.

Source: Ngo & Ravanbakhsh, "Scaling Laws and Symmetry, Evidence from Neural Force Fields", arXiv 2510.09768
(ICLR 2026), as summarised in docs/PAPER.md. These values are APPROXIMATE: they come from a digest of the
camera-ready paper, not from its data files. gamma_flops and gamma_hours are the compute-frontier exponents
against training FLOPs and GPU-hours, beta the data exponent, alpha the parameter exponent, kappa the forward
FLOPs per atom per parameter. The paper fixes L_inf = 0 and reports no intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

CITATION = 'Ngo & Ravanbakhsh, "Scaling Laws and Symmetry, Evidence from Neural Force Fields", arXiv 2510.09768'


@dataclass(frozen=True)
class FamilyInfo:
    """How the report names a family and what it builds in (nu: body order, l: tensor order or None)."""

    label: str
    group: str
    nu: int
    l: int | str | None
    arch: str = ""  # the registered family ("esen"); "" in the staircase table below
    options: str = ""  # model options of this report row ("l2"), "" for the family as registered


@dataclass(frozen=True)
class PaperValues:
    """The paper's reported numbers for one family (None where it reported nothing)."""

    gamma_flops: float | None = None
    gamma_hours: float | None = None
    beta: float | None = None
    alpha: float | None = None
    kappa: float | None = None
    note: str = ""


# The symmetry staircase as the paper labels it; group, nu and l are used when a family's runs recorded none.
FAMILIES: dict[str, FamilyInfo] = {
    "mpnn": FamilyInfo("MPNN", "T(3)", 2, None),
    "egnn": FamilyInfo("MC-EGNN", "E(3)", 2, 1),
    "gemnet_oc": FamilyInfo("GemNet-OC", "E(3)", 4, 0),
    "esen": FamilyInfo("eSEN", "SO(3)", 2, "2-4"),
    # rungs the paper left open (issue 19); the description is part of the label
    "fa_mpnn": FamilyInfo("MPNN, frame-averaged", "E(3)", 2, None),
    "canonical_mpnn": FamilyInfo("MPNN, canonicalised", "E(3)", 2, None),
    "transformer": FamilyInfo("Transformer (none, attention)", "T(3)", 2, None),
}

# Approximate, from a digest of the paper (PAPER.md, "Reported exponents" and the family table).
PAPER: dict[str, PaperValues] = {
    "mpnn": PaperValues(gamma_flops=0.14, gamma_hours=0.21, beta=0.31, alpha=0.28, kappa=2.33),
    "egnn": PaperValues(gamma_flops=0.17, gamma_hours=0.27, beta=0.39, alpha=0.39, kappa=28.09),
    "gemnet_oc": PaperValues(gamma_flops=0.25, gamma_hours=0.33, beta=0.50, alpha=0.52, kappa=35.18),
    "esen": PaperValues(gamma_flops=0.40, gamma_hours=0.45, beta=0.75, alpha=0.82, kappa=74.36, note="lmax=4"),
}

# Ablations (approximate): eSEN lmax=2 has gamma 0.35; a symmetry loss on the MPNN leaves gamma ~ 0.14.
PAPER_ESEN_LMAX2_GAMMA = 0.35
PAPER_SYMMETRY_LOSS_GAMMA = 0.14
# Compute-optimal allocation N ~ C^a, D ~ C^b: the paper finds a ~ b ~ 0.5 for every family.
PAPER_ALLOCATION = 0.5
PAPER_ORDER = ("mpnn", "egnn", "gemnet_oc", "esen")  # increasing gamma in the paper


# report rows with model options the paper reported on: eSEN at lmax 4 (its main runs) and lmax 2 (ablation)
PAPER["esen-l4"] = PAPER["esen"]
PAPER["esen-l2"] = PaperValues(gamma_flops=PAPER_ESEN_LMAX2_GAMMA, kappa=None, note="lmax=2 ablation")


def paper_value(arch: str, name: str) -> float | None:
    """The paper's value of `name` (gamma_flops, gamma_hours, beta, alpha, kappa) for `arch` (a family, or a
    family with options the paper ran: "esen-l4", "esen-l2"), or None."""
    values = PAPER.get(arch)
    return None if values is None else getattr(values, name, None)

"""Scaling-law fits with honest uncertainty.

Symbols (used only inside this package):
    N      trainable parameters;  D  data seen (atoms, or tokens);  C  training compute (FLOPs);
    H      device-hours;  L  validation loss.
    Sum law            L(N, D) = E + A N^-alpha + B D^-beta
    Compute frontier   L(C)    = L_inf + F C^-gamma   (on the lower envelope of all evaluations of a group)
    Allocation         C = k N D (k = 3 kappa):  N* ~ C^a, D* ~ C^b, a = beta/(alpha+beta), b = alpha/(alpha+beta),
                       gamma (derived) = alpha beta / (alpha + beta)
Every fit returns a `FitResult`, whose intervals come from a non-parametric bootstrap (whole runs are
resampled when the table has a `run` column), and which carries its group's family, model options and
symmetry mode as fields. `fit_table` (symscale.fit.menu) is the one fit menu: the study and `symscale fit`
both call it, so they fit the same laws to the same rows with the same bootstrap. Its settings state the
protocol: one L_inf policy for every law (`l_inf`: zero, the paper's, or free, with the other policy fitted
beside it as a sensitivity variant in a study), which L is fitted (`loss`: total, force or energy), the share of
each run dropped (5% by default, inside the paper's 1-10%) and an optional EMA smoothing of each run's curve;
intervals that do not resolve their parameter are flagged (`FitResult.unresolved`), not reported as numbers.

Modules: table (the laws table), parametric (sum law), frontier (compute frontier), isoflop, allocation,
bootstrap, holdout (extrapolation checks), profiles (profiles at fixed D or C, IsoFLOP parabolas, the
compute-optimal points the report draws), menu (groups, rows, settings), results (FitResult).
"""

from symscale.fit.allocation import allocation, compute_optimal
from symscale.fit.frontier import compute_frontier, fit_frontier
from symscale.fit.isoflop import fit_isoflop
from symscale.fit.menu import FitSettings, Group, fit_table
from symscale.fit.parametric import fit_sum_law
from symscale.fit.results import FitResult
from symscale.fit.table import LawsTable, read_table

__all__ = [
    "FitResult",
    "FitSettings",
    "Group",
    "LawsTable",
    "allocation",
    "compute_frontier",
    "compute_optimal",
    "fit_frontier",
    "fit_isoflop",
    "fit_sum_law",
    "fit_table",
    "read_table",
]

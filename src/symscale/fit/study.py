"""The study's name for the fit menu, kept for `symscale.study.runner` (which imports `fit_laws_table` from
here); the rules live in `symscale.fit.menu`."""

from symscale.fit.menu import fit_laws_table, fitted_k, groups

__all__ = ["fit_laws_table", "fitted_k", "groups"]

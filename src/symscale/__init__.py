"""symscale: scaling laws and symmetry for neural force fields.

The path of the data (see DESIGN.md): data -> models -> train -> study -> fit -> report -> ase.
Beside it, used by every stage: `config` (the run configuration and the one validation engine), `quantities`
(kappa, C = 3 kappa N D, H), `rundir` (the run directory), `errors`.
"""

__version__ = "0.1.0"

from symscale.errors import SymscaleError

__all__ = ["SymscaleError", "__version__"]

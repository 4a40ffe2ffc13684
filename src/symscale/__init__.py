"""symscale: scaling laws and symmetry for neural force fields.

The path of the data (see DESIGN.md): data -> models -> train -> study -> fit -> report -> ase.
"""

__version__ = "0.1.0"

from symscale.errors import SymscaleError

__all__ = ["SymscaleError", "__version__"]

"""Model families along the symmetry staircase (mpnn, egnn, gemnet_oc, esen), one width knob each.

from symscale.models import build, list_archs
model = build("egnn", 32, elements=[1, 6, 7, 8])
"""

from symscale.models.base import ForceField, ModelOutput, Symmetry
from symscale.models.registry import build, get_family, list_archs, register

__all__ = ["ForceField", "ModelOutput", "Symmetry", "build", "get_family", "list_archs", "register"]

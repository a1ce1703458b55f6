"""De-identification methods: one contract, one registry.

A method is `fn(volume, regions, *, rng, **opts) -> volume`:
- `volume`: float32 [X, Y, Z] on the 1 mm RAS working grid (see geometry.py), scaled intensities;
- `regions`: `masks.Regions` on that same grid (brain, preserved, head), plus `grid` for world geometry;
- `rng`: a seeded numpy Generator (the only source of randomness allowed);
- returns a float32 volume of the same shape. It may change any voxel: the wrapper in `deidentify.py`
  composites the input back inside the preserved region and asserts bit-equality before writing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

import numpy as np

from ..geometry import Grid
from ..masks import Regions


@dataclass
class WorkRegions(Regions):
    """Regions on the working grid, with the grid itself for methods that register templates."""

    grid: Grid | None = None
    inside: np.ndarray | None = None  # working voxels inside the input's field of view (None: all of them)


Method = Callable[..., np.ndarray]

# name -> "module:function", imported lazily so `reface --help` stays instant.
METHODS: dict[str, str] = {
    "none": "reface.methods.identity:identity",
    "deface": "reface.methods.deface:deface",
    "shear": "reface.methods.shear:shear",
    "blur": "reface.methods.blur:blur",
    "template": "reface.methods.template:template",
    "remodel": "reface.methods.remodel:remodel",
}
DEFAULT_METHOD = "remodel"
BASELINES = ("deface", "shear", "blur", "template")


def get_method(name: str) -> Method:
    from ..errors import RefaceError

    if name not in METHODS:
        raise RefaceError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    module_name, func_name = METHODS[name].split(":")
    return getattr(import_module(module_name), func_name)

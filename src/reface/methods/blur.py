"""Face-masking-style blurring: heavy smoothing of the registered face region, feathered into the rest.

The template face mask (registration.py) is dilated so the whole facial surface, with some air in front of
it, is smoothed; the blend weight falls off smoothly at the region's border and towards the preserved
region, so there is no hard seam anywhere (after Milchenko & Marcus, "Obscuring surface anatomy in
volumetric imaging data", 2013).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..registration import register_template, template_face
from .blend import bbox, feather_weight, grow_coarse

DEFAULT_SIGMA_MM = 8.0
DILATE_MM = 10.0
def blur(volume: np.ndarray, regions, *, rng: np.random.Generator,
         sigma_mm: float = DEFAULT_SIGMA_MM) -> np.ndarray:
    """Blend a Gaussian-smoothed (sigma_mm) copy into the dilated template face region."""
    spacing = regions.grid.spacing
    face = template_face(register_template(volume, regions.grid))
    region = grow_coarse(face, DILATE_MM, spacing) & ~regions.preserved
    out = volume.copy()
    if not region.any():
        return out
    box = bbox(region, pad=int(np.ceil(3 * sigma_mm / min(spacing))))
    smooth = ndi.gaussian_filter(volume[box], [sigma_mm / z for z in spacing], mode="nearest")
    weight = feather_weight(region[box], regions.preserved[box], spacing)
    out[box] = volume[box] + weight * (smooth - volume[box])
    return out

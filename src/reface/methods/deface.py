"""pydeface / fsl_deface-style defacing: remove the registered template face mask (and optionally the ears).

The mean template head is registered to the subject (registration.py) and pydeface's face mask, warped
along with it, is set to background (0). Preserved voxels are excluded here too, not only by the wrapper.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..registration import register_template, template_face

# Ear box relative to the brain (mm): lateral to the brain's widest point plus the scalp, between the
# brain's lowest slice and its centroid height, around the brain's centroid in A-P.
EAR_LATERAL_MM = 12.0
EAR_AP_MM = (-45.0, 25.0)


def ear_region(brain: np.ndarray, head: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Head voxels sticking out sideways past the brain's widest extent + scalp, at ear height (crude)."""
    if not brain.any():
        return np.zeros(brain.shape, bool)
    idx = np.nonzero(brain)
    centre = np.array([float(np.mean(i)) for i in idx])
    x = (np.arange(brain.shape[0]) - centre[0]) * spacing[0]
    y = (np.arange(brain.shape[1]) - centre[1]) * spacing[1]
    z = np.arange(brain.shape[2])
    half_width = max(float(abs(x[idx[0].min()])), float(abs(x[idx[0].max()])))
    lateral = np.abs(x) > half_width + EAR_LATERAL_MM
    ap = (y >= EAR_AP_MM[0]) & (y <= EAR_AP_MM[1])
    height = (z >= idx[2].min() - 10.0 / spacing[2]) & (z <= centre[2])
    box = lateral[:, None, None] & ap[None, :, None] & height[None, None, :]
    return ndi.binary_dilation(box & head, iterations=2) & box


def deface(volume: np.ndarray, regions, *, rng: np.random.Generator, ears: bool = False) -> np.ndarray:
    """Set the registered template's face region (and ears if asked) to 0, outside the preserved region."""
    registration = register_template(volume, regions.grid)
    remove = template_face(registration)
    if ears:
        remove |= ear_region(regions.brain, regions.head, regions.grid.spacing)
    remove &= ~regions.preserved
    out = volume.copy()
    out[remove] = 0.0
    return out

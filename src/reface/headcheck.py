"""Is there a head around the brain? A phantom cube or a blob passes the brain-mask checks (volume, one
piece, shape) because the automatic mask covers the whole object; what gives it away is that its "brain"
reaches the air. In a head, skull and scalp put 10 mm or more of tissue between the brain and the air."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .errors import RefaceError

# Median tissue depth around the brain surface below which the image is not a head. Real heads measure
# 15-16 mm (ROBEX, pydeface mean, MNI crop) and the phantom 21 mm; a 2 mm cube 6 mm (its mask plus the
# 4 mm margin, which the head region includes).
MIN_TISSUE_MM = 7.0


def tissue_depth_mm(brain: np.ndarray, head: np.ndarray, zooms: tuple[float, float, float]) -> float:
    """Median distance from the brain's surface to the air outside the head. Beyond the image is not air:
    a field of view that cuts the head does not make it shallow (the distance transform ignores it)."""
    if not head.any() or not brain.any():
        return 0.0
    # only depths up to ~MIN_TISSUE_MM matter: the brain's box padded by 20 mm holds every one of them
    pad = [int(np.ceil(20.0 / float(z))) for z in zooms]
    box = tuple(slice(max(0, int(i.min()) - p), int(i.max()) + p + 1) for i, p in zip(np.nonzero(brain), pad,
                                                                                          strict=True))
    brain, head = brain[box], head[box]
    depth = ndi.distance_transform_edt(head, sampling=zooms)
    surface = brain & ~ndi.binary_erosion(brain)
    inner = np.zeros_like(surface)
    inner[2:-2, 2:-2, 2:-2] = True  # a mask's face on the image edge is not a surface
    values = depth[surface & inner] if (surface & inner).any() else depth[surface]
    return float(np.median(values)) if values.size else 0.0


def check_head(brain: np.ndarray, head: np.ndarray, zooms: tuple[float, float, float], source: str,
               *, given: bool = False) -> None:
    """Refuse an image whose brain mask reaches the air almost everywhere: not a head (or skull-stripped)."""
    depth = tissue_depth_mm(brain, head, zooms)
    if depth < MIN_TISSUE_MM:
        what = "the given brain mask" if given else "the automatic brain mask"
        raise RefaceError(f"{source}: this does not look like a head: {what} reaches the air (median "
                          f"{depth:.1f} mm of tissue around it, a head has 10 mm or more of skull and scalp); "
                          "a phantom, a non-head image, or an already skull-stripped brain (no face to remove)")

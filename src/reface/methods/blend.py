"""Region helpers shared by the methods that blend new content into a head (blur, template):
coarse dilation, bounding boxes and a feathered blend weight that is exactly 0 in the preserved region.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..masks import upsample

FEATHER_MM = 4.0


def grow_coarse(mask: np.ndarray, margin_mm: float, spacing: tuple[float, float, float],
                step: int = 2) -> np.ndarray:
    """Dilate by ~margin_mm using a Euclidean distance on a `step`-times coarser grid (8x cheaper at 2)."""
    pad = [(0, (-n) % step) for n in mask.shape]
    blocks = np.pad(mask, pad)
    s = blocks.shape
    pooled = blocks.reshape(s[0] // step, step, s[1] // step, step, s[2] // step, step).any(axis=(1, 3, 5))
    distance = ndi.distance_transform_edt(~pooled, sampling=[step * z for z in spacing])
    return upsample(distance <= margin_mm, step, mask.shape) | mask


def bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    """Slices of the mask's bounding box grown by `pad` voxels (clipped to the array)."""
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(i.min()) - pad), min(n, int(i.max()) + pad + 1))
                 for i, n in zip(idx, mask.shape, strict=True))


def feather_weight(region: np.ndarray, preserved: np.ndarray, spacing: tuple[float, float, float],
                   feather_mm: float = FEATHER_MM) -> np.ndarray:
    """Blend weight in [0, 1]: ~1 deep inside `region`, smooth at its border, exactly 0 in `preserved`.

    Both edges are Gaussian ramps (sigma feather_mm / 2): 0.5 on the region's border, and rising from 0 on
    the preserved border to 1 about feather_mm away from it, so the blend is continuous everywhere.
    """
    sigma = [feather_mm / 2.0 / z for z in spacing]
    weight = ndi.gaussian_filter(region.astype(np.float32), sigma, mode="nearest")
    outside = ndi.gaussian_filter((~preserved).astype(np.float32), sigma, mode="nearest")
    weight *= np.clip(2.0 * outside - 1.0, 0.0, 1.0)
    weight[preserved] = 0.0
    return weight

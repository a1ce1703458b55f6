"""Face-masking-style blurring: heavy smoothing of the registered face region, feathered into the rest.

The template face mask (registration.py) is dilated so the whole facial surface, with some air in front of
it, is smoothed; the blend weight falls off smoothly at the region's border and towards the preserved
region, so there is no hard seam anywhere (after Milchenko & Marcus, "Obscuring surface anatomy in
volumetric imaging data", 2013). The feathering helpers here are shared with the template method.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..registration import register_template, template_face, upsample

DEFAULT_SIGMA_MM = 8.0
DILATE_MM = 10.0
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

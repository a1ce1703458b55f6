"""Realism: two plain numbers for how real a de-identified head still looks, both against its own original.

- `realism_hist_w1`: Wasserstein-1 distance between the intensity distributions of the non-brain head
  tissue (original head mask minus the preserved region) in the de-identified and the original scan,
  in units of the original's median brain intensity (0 = same tissue contrast; removed tissue scores high).
- `realism_missing_head`: how much more of that non-brain head volume is background (below the
  rendering surface level) than in the original, as a fraction of it: holes, cut-off faces, removed
  skin (negative when a method fills in dark tissue).

The issue-11 realism metrics come in pairs, the de-identified value and the original's own
(`*_orig`), so a method is judged against the scan it started from:
- `realism_bg_speckle`: fraction of background voxels (>= 5 mm outside the scan's own head) above 5 % of
  the original's 99th percentile: speckle in the air;
- `realism_roughness_mm`: RMS of the rendered front depth map minus its 1.5 mm-smoothed self, over the
  skin that faces the camera: orange peel and seams on the skin;
- `realism_bg_grain`: mean lag-1 correlation (of normal scores) between neighbouring background voxels,
  per axis: the air's grain. White speckle scores ~0 where a real scan's air scores 0.2-0.97; NaN for a
  zero background;
- `realism_edge_p90`: 90th percentile of the intensity gradient (per mm, in units of the original's p99)
  inside the non-brain head: how sharp the layering (skin, fat, bone) is on slices.
Detection rate per face detector is the privacy attack's own metric (see the report).
None of them measures anatomical plausibility; the report states this next to the table.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..io import Scan
from ..masks import Regions

# Above these the report flags a method's heads as looking wrong.
MISSING_HEAD_FLAG = 0.05
HIST_W1_FLAG = 0.15

BACKGROUND_MM = 5.0  # background: at least this far outside the head
SPECKLE_FRACTION = 0.05  # of the original's 99th percentile
ROUGHNESS_SIGMA_MM = 1.5


def wasserstein_1d(a: np.ndarray, b: np.ndarray, *, n_quantiles: int = 512) -> float:
    """W1 distance of two 1D samples: mean absolute difference of their quantile functions."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("empty sample")
    q = (np.arange(n_quantiles) + 0.5) / n_quantiles
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def realism(original: Scan, deidentified: Scan, regions: Regions) -> dict[str, float]:
    """Realism metrics of a de-identified scan on the original's grid, against the original."""
    from .render import head_threshold

    region = regions.head & ~regions.preserved
    if not region.any() or original.shape != deidentified.shape:
        return {}
    before = original.data[region]
    after = deidentified.data[region]
    brain_values = original.data[regions.brain]
    scale = float(np.median(brain_values)) if brain_values.size else float(np.abs(before).mean())
    scale = scale if scale > 0 else 1.0
    level = head_threshold(original.data, original.affine)
    return {
        "realism_hist_w1": wasserstein_1d(after, before) / scale,
        "realism_missing_head": float(np.mean(after < level)) - float(np.mean(before < level)),
        **realism_pairs(original, deidentified, regions),
    }


def background_grain(data: np.ndarray, head: np.ndarray, zooms: tuple[float, ...]) -> float:
    """Mean per-axis lag-1 correlation of the non-zero air >= BACKGROUND_MM outside `head` (NaN if none)."""
    from ..air import MIN_AIR_VOXELS, air_correlation

    air = (ndi.distance_transform_edt(~head, sampling=zooms) >= BACKGROUND_MM) & (data != 0)
    if air.sum() < MIN_AIR_VOXELS:
        return float("nan")
    return float(np.mean(air_correlation(data, air)))


def background_speckle(data: np.ndarray, head: np.ndarray, zooms: tuple[float, ...], level: float) -> float:
    """Fraction of voxels >= BACKGROUND_MM outside `head` whose value is above `level`."""
    far = ndi.distance_transform_edt(~head, sampling=zooms) >= BACKGROUND_MM
    return float(np.mean(data[far] > level)) if far.any() else float("nan")


def surface_roughness(data: np.ndarray, affine: np.ndarray, *, view: str = "front", size: int = 160) -> float:
    """RMS (mm) of the rendered depth map minus its smoothed self, over pixels whose neighbourhood is skin."""
    from .render import head_surface

    surface = head_surface(data, affine, view=view, size=size)
    hit = surface.hit
    sigma = ROUGHNESS_SIGMA_MM / surface.spacing
    depth = np.where(hit, surface.depth, 0.0)
    gy, gx = np.gradient(depth, surface.spacing)
    # skin facing the camera (slope under 45 degrees), away from the silhouette's depth jumps
    inner = ndi.binary_erosion(hit, iterations=max(1, int(round(3 * sigma)))) & (np.hypot(gx, gy) < 1.0)
    if inner.sum() < 50:
        return float("nan")
    weight = ndi.gaussian_filter(hit.astype(float), sigma)
    smooth = ndi.gaussian_filter(depth, sigma) / np.maximum(weight, 1e-6)
    return float(np.sqrt(np.mean((depth - smooth)[inner] ** 2)))


def edge_sharpness(data: np.ndarray, region: np.ndarray, zooms: tuple[float, ...], scale: float) -> float:
    """90th percentile of the gradient magnitude (per mm, in units of `scale`) inside `region`."""
    if not region.any():
        return float("nan")
    grads = np.gradient(data.astype(np.float32), *zooms)
    magnitude = np.sqrt(sum(g[region].astype(np.float64) ** 2 for g in grads))
    return float(np.percentile(magnitude, 90) / scale)


def realism_pairs(original: Scan, deidentified: Scan, regions: Regions) -> dict[str, float]:
    """The issue-11 realism metrics, de-identified and original (`*_orig`), on the original's grid."""
    from ..masks import head_mask

    before, after = original.data, deidentified.data
    p99 = float(np.percentile(before, 99)) or 1.0
    level = SPECKLE_FRACTION * p99
    out: dict[str, float] = {}
    for suffix, data in (("", after), ("_orig", before)):
        head = head_mask(data) | regions.preserved
        region = head & ~regions.preserved
        out["realism_bg_speckle" + suffix] = background_speckle(data, head, original.zooms, level)
        out["realism_bg_grain" + suffix] = background_grain(data, head, original.zooms)
        out["realism_roughness_mm" + suffix] = surface_roughness(data, original.affine)
        out["realism_edge_p90" + suffix] = edge_sharpness(data, region, original.zooms, p99)
    return out

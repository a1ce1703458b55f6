"""Realism: two plain numbers for how real a de-identified head still looks, both against its own original.

- `realism_hist_w1`: Wasserstein-1 distance between the intensity distributions of the non-brain head
  tissue (original head mask minus the preserved region) in the de-identified and the original scan,
  in units of the original's median brain intensity (0 = same tissue contrast; removed tissue scores high).
- `realism_missing_head`: how much more of that non-brain head volume is background (below the
  rendering surface level) than in the original, as a fraction of it: holes, cut-off faces, removed
  skin (negative when a method fills in dark tissue).

Neither measures anatomical plausibility; the report states this next to the table.
"""

from __future__ import annotations

import numpy as np

from ..io import Scan
from ..masks import Regions

# Above these the report flags a method's heads as looking wrong.
MISSING_HEAD_FLAG = 0.05
HIST_W1_FLAG = 0.15


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
    }

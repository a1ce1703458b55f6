"""Intensity distributions matched by quantiles: the template to the patient's brain, a generated head's
tissue to the tissue it replaced.

Only 1D histograms are read (a global contrast statistic with no spatial information), so a mapping can
carry no one's face.
"""

from __future__ import annotations

import numpy as np

QUANTILES = np.linspace(1.0, 99.0, 99)
# The tail matters for the generated tissue: scalp, facial and orbital fat and marrow are the brightest ~1 % of
# a T1w head, and whole-image percentiles (99.5, 99.9) set the intensity window of brain extractors and the
# conform step of FastSurfer-like pipelines.
TISSUE_QUANTILES = np.concatenate([np.linspace(0.5, 99.0, 198), [99.3, 99.5, 99.7, 99.8, 99.9, 99.95]])
MIN_TISSUE_VOXELS = 5000
SKIN_MM, SKIN_RAMP_MM = 2.0, 1.0  # the generated skin is kept; the mapping ramps in below it
SAMPLE = 2_000_000  # values enough for the quantiles above


def quantile_mapper(source: np.ndarray, reference: np.ndarray, quantiles: np.ndarray = QUANTILES):
    """Monotone map of source quantiles onto reference quantiles, proportional outside their range.

    Proportional (through zero) beyond the matched range: scalp fat keeps its ratio to white matter,
    air stays air.
    """
    xp = np.maximum.accumulate(np.percentile(source, quantiles))
    xp = xp + 1e-6 * max(1.0, float(abs(xp).max())) * np.arange(xp.size)
    fp = np.maximum.accumulate(np.percentile(reference, quantiles))
    high = float(fp[-1] / xp[-1]) if xp[-1] > 0 else 1.0
    low = float(fp[0] / xp[0]) if xp[0] > 0 else 1.0

    def apply(x: np.ndarray) -> np.ndarray:
        mapped = np.where(x > xp[-1], x * high, np.interp(x, xp, fp))
        return np.where(x < xp[0], x * low, mapped).astype(np.float32)

    return apply


def _sample(values: np.ndarray) -> np.ndarray:
    return values[:: max(1, values.size // SAMPLE)]


def match_replaced(data: np.ndarray, new: np.ndarray, input_head: np.ndarray, new_head: np.ndarray,
                   preserved: np.ndarray, input_depth: np.ndarray, new_depth: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(float32 volume, voxels that changed): the generated tissue's intensities mapped onto the distribution
    of the input tissue it replaced, under the skin.

    A generated head leaves the top of the input's histogram short: resampling, blending and smooth templates
    compress the tail, and the output kept 25-50 % of the input's voxels above its 99.5th percentile (whole
    image p99.9 at 0.83-0.90 of the input's on the three real heads). Generated tissue: changed voxels in
    `new_head`; replaced tissue: changed voxels in `input_head`; both outside `preserved` and deeper than
    SKIN_MM under their own skin (`input_depth`, `new_depth`: deep_tissue.depth_mm). The skin itself is left
    alone: mapped with the rest, thin eyelids fell below a renderer's surface level and showed holes."""
    changed = (new != data) & ~preserved
    # exact zeros are air (a zero background, beyond the field of view), never tissue to brighten
    generated = changed & new_head & (new_depth > SKIN_MM) & (new != 0)
    replaced = changed & input_head & (input_depth > SKIN_MM) & (data != 0)
    out = np.array(new, np.float32, copy=True)
    if generated.sum() < MIN_TISSUE_VOXELS or replaced.sum() < MIN_TISSUE_VOXELS:
        return out, np.zeros(new.shape, bool)
    mapping = quantile_mapper(_sample(new[generated]), _sample(data[replaced]), TISSUE_QUANTILES)
    values = new[generated]
    weight = np.clip((new_depth[generated] - SKIN_MM) / SKIN_RAMP_MM, 0.0, 1.0).astype(np.float32)
    mapped = (1 - weight) * values + weight * mapping(values)
    out[generated] = np.maximum(mapped, 0.0) if data.min() >= 0 else mapped
    return out, generated

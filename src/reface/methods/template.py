"""Template refacing (AFNI refacer / mri_reface style): the face becomes the registered template's face.

The mean template head is registered to the subject (registration.py). Inside the replaced region (the
template face mask, plus the non-preserved tissue below the shear line and FRONT_MM in front of the
brain's centre) its intensities are mapped to the subject's by quantile matching over the non-brain head,
the subject's background noise is added, and it is blended in with a feathered weight that is 0 in the
preserved region. Affine only: the template's cheeks can sit a few mm off the subject's at the border.
"""

from __future__ import annotations

import numpy as np

from ..registration import register_template, template_face
from ..resources import load_volume, mean_head_path
from .blend import FEATHER_MM, bbox, feather_weight, grow_coarse
from .shear import cut_region

QUANTILES = np.linspace(0.5, 99.5, 199)
DILATE_MM = 5.0
SHELL_MM = 6.0
# The lower shell is replaced only this far in front of the brain's centre, sparing the spine and neck.
FRONT_MM = 20.0


def quantile_map(source: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotone piecewise-linear map (xp, fp) taking `source` quantiles onto `reference` quantiles."""
    xp = np.percentile(source, QUANTILES)
    fp = np.percentile(reference, QUANTILES)
    # np.interp needs increasing xp; ties (e.g. lots of air at 0) get spread by a tiny epsilon.
    eps = 1e-6 * max(1.0, float(np.abs(xp).max()))
    xp = np.maximum.accumulate(xp) + eps * np.arange(xp.size)
    return xp, fp


def noise_sigma(volume: np.ndarray, mask: np.ndarray) -> float:
    """Robust noise level inside `mask`: MAD of neighbour differences along x, / sqrt(2)."""
    diff = volume[1:] - volume[:-1]
    values = diff[mask[1:] & mask[:-1]]
    if values.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))) / np.sqrt(2.0))


def replaced_region(face: np.ndarray, regions) -> np.ndarray:
    """What gets the template: the face mask (grown a little) and the lower-front non-brain tissue."""
    region = grow_coarse(face, DILATE_MM, regions.grid.spacing)
    cut = cut_region(regions.brain, regions.grid.affine)
    centre_y = float(np.mean(np.nonzero(regions.brain)[1]))
    front = np.arange(regions.brain.shape[1]) >= centre_y + FRONT_MM / regions.grid.spacing[1]
    region |= cut & front[None, :, None]
    return region & ~regions.preserved


def _intensity_match(volume: np.ndarray, regions, registration, data: np.ndarray, affine: np.ndarray,
                     region: np.ndarray, step: int = 2) -> tuple[np.ndarray, np.ndarray, float]:
    """Quantile map template -> subject over the non-brain heads (+ the air around), and the background noise.

    Distributions only, so every `step`-th voxel is enough (8x cheaper at 2).
    """
    spacing = tuple(step * z for z in regions.grid.spacing)
    head_t = registration.warp(data, affine, order=1, cval=np.nan, step=step)
    sub = tuple(slice(0, None, step) for _ in range(3))  # same shape as the step-strided warp
    vol, head, preserved, replaced = (a[sub] for a in (volume, regions.head, regions.preserved, region))
    valid = np.isfinite(head_t)
    head_t = np.where(valid, head_t, 0.0)
    foreground = head | (head_t > 0.1 * float(head_t.max()))
    sample = grow_coarse(foreground, SHELL_MM, spacing, step=1) & ~preserved & valid
    xp, fp = quantile_map(head_t[sample], vol[sample])
    sigma = noise_sigma(vol, sample & ~head & ~replaced)  # background noise, not anatomy
    return xp, fp, sigma


def template(volume: np.ndarray, regions, *, rng: np.random.Generator) -> np.ndarray:
    """Replace the face and lower-front shell with the registered, intensity-matched template head."""
    spacing = regions.grid.spacing
    registration = register_template(volume, regions.grid)
    region = replaced_region(template_face(registration), regions)
    out = volume.copy()
    if not region.any():
        return out
    data, affine = load_volume(str(mean_head_path()))
    xp, fp, sigma = _intensity_match(volume, regions, registration, data, affine, region)

    box = bbox(region, pad=int(np.ceil(2 * FEATHER_MM / min(spacing))))
    head_t = registration.warp(data, affine, order=1, cval=np.nan, box=box)  # NaN outside the template
    matched = np.interp(np.nan_to_num(head_t, nan=0.0), xp, fp).astype(np.float32)
    matched += sigma * rng.standard_normal(matched.shape).astype(np.float32)
    matched[~np.isfinite(head_t)] = 0.0  # outside the template's field of view: background, as in defacing
    weight = feather_weight(region[box], regions.preserved[box], spacing)
    out[box] = volume[box] + weight * (matched - volume[box])
    return np.clip(out, min(0.0, float(volume.min())), None).astype(np.float32)

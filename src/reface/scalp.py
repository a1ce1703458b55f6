"""The scalp's layers under a generated skin, in the input's own depth profile.

The remodel template is an average of many heads: its scalp, fat and skull are blurred together into one
thick band. Matched to a subject's contrast, that band rendered on slices as a bright ring 3-8 mm under the
skin, where a real vault has skin, a thin bright fat layer 2-4 mm deep and dark bone below it (ROBEX: the
median at 3 mm deep is 1.05 of the brain's p99, at 6 mm 0.22; the remodeled head had 0.36 and 0.67).

Over the vault the layers follow two surfaces: the skin above and the brain below. So the input's layering
is read as one table: median intensity by (depth under the skin, distance from the preserved brain), in 1 mm
bins, over the input's non-brain head where the two are less than BAND_MM apart. Under the generated skin,
the table read at the new head's own depths replaces the generated head's smooth part; the generated head
keeps its shape and its detail finer than TEXTURE_SIGMA_MM (texture, noise). Adding the difference of the
two heads' tables instead left the template's band beside the input's layer: two rings.

The table is a global summary of the vault, with no spatial information of the input's face or head shape.
Where skin and brain are farther apart (the face: eyes, sinuses, nose) the change fades out over FADE_MM,
and the template's anatomy stays.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from . import parallel
from .deep_tissue import depth_mm

BAND_MM = 25.0  # skin-to-brain thickness over which the vault's layering applies in full
FADE_MM = 10.0  # ... then fades out
BIN_MM = 1.0
TABLE_BINS = int(BAND_MM + FADE_MM)  # per axis
MIN_COUNT = 20  # voxels for a table cell to count
TEXTURE_SIGMA_MM = 1.5  # the generated head keeps its detail finer than this (texture, noise)
# The generated skin itself is kept: the outer SKIN_MM unchanged, then the layering ramps in over SKIN_RAMP_MM.
# Depths come from a 2 mm grid; read right at the surface, their steps became contour lines on renderings.
# The head mask's edge sits ~1.5 voxels outside the surface a renderer finds (the soft skin edge), so a 1 mm
# kept skin let the table's contrasts reach that surface: worm-like ridges on the vault, following the scalp's
# thickness (high-pass of the rendered normals on the left view's vault, mean head: 1.83 degrees, 1.36 with
# 2 mm, input 0.51; MNI crop 2.15 -> 1.53). 3 mm removed little more and cost the fat layer (ROBEX 3-4 mm deep:
# 0.63 of the brain's p99 with 1 mm, 0.54 with 2 mm, 0.37 with 3 mm; input 0.96).
# On coarse grids the kept skin is at least one voxel: the input's head mask can hold air in its outermost voxel
# (a 4 mm phantom: half of it), and a table read there blanked the new skin into islands floating in the air.
SKIN_MM = 2.0
SKIN_RAMP_MM = 2.0


def layer_table(values: np.ndarray, skin_depth: np.ndarray, brain_dist: np.ndarray, where: np.ndarray
                ) -> np.ndarray:
    """float64 [TABLE_BINS, TABLE_BINS]: median of `values` by (depth under the skin, distance from the brain)
    bins over `where`; cells with too few voxels take their nearest filled cell's value (NaN if none).

    The median, not the mean: where the fat layer's depth varies over the vault, a bin holds fat in some
    places and bone in most; its mean is a uniform mid-grey that thickens the bright layer on every slice."""
    ds, dp = skin_depth[where], brain_dist[where]
    i = np.minimum((ds / BIN_MM).astype(np.intp), TABLE_BINS - 1)
    j = np.minimum((dp / BIN_MM).astype(np.intp), TABLE_BINS - 1)
    flat = i * TABLE_BINS + j
    picked = values[where]
    order = np.lexsort((picked, flat))  # by cell, then by value within the cell
    counts = np.bincount(flat, minlength=TABLE_BINS**2)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    middle = picked[order][np.minimum(starts + (counts - 1) // 2, max(picked.size - 1, 0))] if picked.size else 0
    filled = (counts >= MIN_COUNT).reshape(TABLE_BINS, TABLE_BINS)
    table = np.where(counts > 0, middle, 0.0).astype(np.float64).reshape(TABLE_BINS, TABLE_BINS)
    if not filled.any():
        return np.full_like(table, np.nan)
    nearest = ndi.distance_transform_edt(~filled, return_distances=False, return_indices=True)
    return table[tuple(nearest)]


def _lookup(table: np.ndarray, skin_depth: np.ndarray, brain_dist: np.ndarray) -> np.ndarray:
    """The table's cell for each voxel, binned exactly as the table was built. Interpolating between bin
    centres smeared the layers by half a bin on grids whose depths are few and discrete (1.5 mm voxels)."""
    i = np.minimum((skin_depth / BIN_MM).astype(np.intp), TABLE_BINS - 1)
    j = np.minimum((brain_dist / BIN_MM).astype(np.intp), TABLE_BINS - 1)
    return table[i, j].astype(np.float32)


def layered_scalp(data: np.ndarray, new: np.ndarray, input_head: np.ndarray, new_head: np.ndarray,
                  preserved: np.ndarray, zooms: tuple[float, float, float], *,
                  input_depth: np.ndarray | None = None, new_depth: np.ndarray | None = None,
                  brain_dist: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 volume, voxels that changed): `new` with the input `data`'s vault layering under its skin.

    `input_depth`, `new_depth`, `brain_dist`: the two heads' depth maps and the distance from the preserved
    region (deep_tissue.depth_mm) when the caller has them."""
    input_depth = depth_mm(input_head, zooms) if input_depth is None else input_depth
    new_depth = depth_mm(new_head, zooms) if new_depth is None else new_depth
    brain_dist = depth_mm(~preserved, zooms) if brain_dist is None else brain_dist
    limit = BAND_MM + FADE_MM
    source = input_head & ~preserved & (input_depth > 0) & (input_depth + brain_dist < limit)
    target = new_head & ~preserved & (new_depth > 0) & (new_depth + brain_dist < limit)
    out = np.array(new, np.float32, copy=True)
    if source.sum() < MIN_COUNT * 50 or target.sum() < MIN_COUNT * 50:
        return out, np.zeros(new.shape, bool)
    wanted = layer_table(data, input_depth, brain_dist, source)
    if np.isnan(wanted).any():
        return out, np.zeros(new.shape, bool)
    ds, dp = new_depth[target], brain_dist[target]
    skin = max(SKIN_MM, max(float(z) for z in zooms))
    weight = np.clip((limit - (ds + dp)) / FADE_MM, 0.0, 1.0) * np.clip((ds - skin) / SKIN_RAMP_MM, 0.0, 1.0)
    weight = weight.astype(np.float32)
    detail = new - parallel.gaussian_filter(new, [TEXTURE_SIGMA_MM / float(z) for z in zooms])
    layered = _lookup(wanted, ds, dp) + detail[target]
    out[target] = (1 - weight) * new[target] + weight * layered
    if data.min() >= 0:
        out[target] = np.maximum(out[target], 0.0)
    return out, target

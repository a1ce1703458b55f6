"""The input's own air: its intensity distribution, and fresh draws of it where a method made new air.

Used by the remodel finishing on the 1 mm working grid and by `deidentify` on the input's grid. Noise drawn
on the 1 mm grid and interpolated onto a coarser input grid loses spread (a 1.5 mm scan's air came out with
two thirds of its standard deviation), so the air of a generated head is drawn again on the input's grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

COARSE = 2  # voxels: the air sample is read on every 2nd voxel
AIR_NEAR_MM, AIR_FAR_MM = 6.0, 30.0  # the input's air sample: this far outside its head
MIN_AIR_VOXELS = 200
HEAD_CLEARANCE_VOX = 2  # the generated head's partial-volume edge is kept as it was resampled
EDGE_VOXELS = 3  # the air sample starts at least this many voxels outside the input's head
AIR_BINS_MM = (AIR_NEAR_MM, 12.0, 20.0, 30.0, 45.0, 70.0, np.inf)  # distance bands from the input's head


def background_sampler(norm: np.ndarray, input_head: np.ndarray, inside: np.ndarray | None = None, *,
                       zooms: tuple[float, float, float] = (1.0, 1.0, 1.0)):
    """The input's air intensity distribution -> draw(rng, n) of i.i.d. samples (normalised units).

    Air is 6-30 mm outside the input's head (near enough to be inside the field of view). A background
    that is mostly exact zeros (skull-stripped air, zero-filled or masked exports) is a zero background:
    zeros are drawn, because the few non-zero values there (interpolation at the head's edge, ghosts) are
    spatially structured and would read as speckle when drawn i.i.d. Otherwise the background is noise and
    exact zeros are treated as outside the acquired field of view. `zooms`: the grid's voxel size in mm
    (the 1 mm working grid by default).
    """
    coarse_head = input_head[::COARSE, ::COARSE, ::COARSE]
    dist = ndi.distance_transform_edt(~coarse_head, sampling=[COARSE * float(z) for z in zooms])
    band = (dist >= AIR_NEAR_MM) & (dist <= AIR_FAR_MM)
    if inside is not None:  # the zero padding beyond the input's field of view is not its background
        band &= inside[::COARSE, ::COARSE, ::COARSE]
    values = norm[::COARSE, ::COARSE, ::COARSE][band].astype(np.float32)
    if values.size < MIN_AIR_VOXELS or np.mean(values == 0) > 0.5:
        return lambda rng, n: np.zeros(n, np.float32)
    values = values[values != 0]
    values = np.sort(values)

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return values[rng.integers(0, values.size, n)]

    return draw


def refresh_air(data: np.ndarray, new: np.ndarray, input_head: np.ndarray, new_head: np.ndarray,
                zooms: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """`new` with every changed voxel outside `new_head` (grown by HEAD_CLEARANCE_VOX) drawn afresh, i.i.d.,
    from `data`'s own air at the same distance from the input's head (AIR_BINS_MM): a scan's air is
    brighter near the head (ghosts, partial volume) than far from it, and one pooled sample would
    brighten the far air. Same grid, float32. A mostly-zero background stays exactly zero; otherwise
    exact zeros count as beyond the field of view and are never drawn."""
    air = (new != data) & ~ndi.binary_dilation(new_head, iterations=HEAD_CLEARANCE_VOX)
    out = np.array(new, np.float32, copy=True)
    if not air.any():
        return out
    step = (slice(None, None, COARSE),) * 3
    dist = ndi.distance_transform_edt(~input_head[step], sampling=[COARSE * float(z) for z in zooms])
    sample = data[step]
    # the head's partial-volume edge reaches ~2 voxels out: on a coarse scan (4 mm) 6 mm is still the edge
    near = max(AIR_NEAR_MM, EDGE_VOXELS * max(float(z) for z in zooms))
    pool = (dist >= near) & ~input_head[step]
    values = sample[pool]
    if values.size < MIN_AIR_VOXELS or np.mean(values == 0) > 0.5:
        out[air] = 0.0
        return out
    pool &= sample != 0
    # 0 .. len(AIR_BINS_MM) - 2; voxels nearer than `near` (or inside the head) take the band at `near`
    band = np.digitize(np.maximum(dist, near), AIR_BINS_MM[1:-1])
    samples = [sample[pool & (band == b)] for b in range(len(AIR_BINS_MM) - 1)]
    fallback = sample[pool]
    where_air = np.nonzero(air)
    targets = band[tuple(np.minimum(i // COARSE, n - 1) for i, n in zip(where_air, band.shape, strict=True))]
    drawn = np.empty(targets.size, np.float32)
    for b, band_values in enumerate(samples):
        where = targets == b
        if not where.any():
            continue
        if band_values.size < MIN_AIR_VOXELS:  # a band the input's field of view barely reaches
            nearer = [v for v in samples[:b][::-1] if v.size >= MIN_AIR_VOXELS]
            band_values = nearer[0] if nearer else fallback
        drawn[where] = band_values[rng.integers(0, band_values.size, int(where.sum()))]
    out[where_air] = drawn
    return out

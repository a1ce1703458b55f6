"""The input's own air: its intensity distribution, and fresh draws of it where a method made new air.

Used by the remodel finishing on the 1 mm working grid and by `deidentify` on the input's grid. Noise drawn
on the 1 mm grid and interpolated onto a coarser input grid loses spread (a 1.5 mm scan's air came out with
two thirds of its standard deviation), so the air of a generated head is drawn again on the input's grid.

A scan's air is not white: reconstruction filters and resampling correlate neighbouring voxels (lag-1
correlation ~0.5 on the ROBEX head, ~0.9 on a head resampled to 1 mm). Air drawn i.i.d. from the right
distribution then reads as bright speckle. Fresh air is therefore a Gaussian field smoothed to the input
air's own per-axis lag-1 correlation, mapped through the input air's distribution and scaled by its local
mean and spread (see `refresh_air`): the same values, the same grain, the same bright bands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from . import parallel

COARSE = 2  # voxels: the air sample is read on every 2nd voxel
AIR_NEAR_MM, AIR_FAR_MM = 6.0, 30.0  # the input's air sample: this far outside its head
MIN_AIR_VOXELS = 200
HEAD_CLEARANCE_VOX = 2  # the generated head's partial-volume edge is kept as it was resampled
EDGE_VOXELS = 3  # the air sample starts at least this many voxels outside the input's head
MAX_GRAIN_SIGMA = 4.0  # voxels: the widest smoothing of fresh air (a near-constant, averaged background)
LOCAL_MM = 6.0  # the air's local mean and spread (ghost bands, coil shading) are read at this scale
LOCAL_FULL_WEIGHT = 0.3  # share of a neighbourhood that must be the input's air to trust its local moments


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


def air_correlation(data: np.ndarray, air: np.ndarray, *, stride: int = 4) -> tuple[float, float, float]:
    """Per-axis lag-1 correlation of the air's normal scores between neighbouring `air` voxels (0 if too few).

    Normal scores (ranks mapped through the inverse normal CDF) give the latent Gaussian correlation that
    `correlated_uniforms` needs: air is skewed (Rician), and its plain Pearson correlation overstates it.
    Along each axis, pairs are read on every `stride`-th line of the other two axes (hundreds of thousands
    of pairs on a head scan, and seconds saved)."""
    out = []
    for axis in range(3):
        lines = tuple(slice(None) if a == axis else slice(None, None, stride) for a in range(3))
        out.append(_lag1_of_lines(data[lines], air[lines], axis))
    return out[0], out[1], out[2]


def _lag1_of_lines(values: np.ndarray, mask: np.ndarray, axis: int) -> float:
    """Lag-1 correlation along `axis` of the normal scores of `values` between neighbours both in `mask`."""
    from scipy.special import ndtri

    v, m = np.moveaxis(values, axis, 0), np.moveaxis(mask, axis, 0)
    both = m[:-1] & m[1:]
    if both.sum() < MIN_AIR_VOXELS:
        return 0.0
    x, y = v[:-1][both], v[1:][both]
    # mid-rank CDF on a sample's distinct values (ties are common in integer scans), read by interpolation
    levels, counts = np.unique(np.concatenate([x, y])[:: max(1, (2 * x.size) // 50_000)], return_counts=True)
    cdf = (np.cumsum(counts) - counts / 2 + 0.5) / (counts.sum() + 1)

    def scores(a: np.ndarray) -> np.ndarray:
        return ndtri(np.clip(np.interp(a, levels, cdf), 1e-6, 1 - 1e-6))

    x, y = scores(x), scores(y)
    sx, sy = x.std(), y.std()
    return 0.0 if sx == 0 or sy == 0 else float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))


def _coarse_at(index: tuple[np.ndarray, ...], coarse_shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Full-grid voxel indices -> the indices of the coarse (every COARSE-th voxel) cell holding them."""
    return tuple(np.minimum(i // COARSE, n - 1) for i, n in zip(index, coarse_shape, strict=True))


def _residual_grain(data: np.ndarray, pool: np.ndarray, mean_c: np.ndarray, std_c: np.ndarray, *,
                    stride: int = 4) -> tuple[float, float, float]:
    """`air_correlation` of the input's air with its local moments (coarse `mean_c`, `std_c`) taken out,
    read on strided lines of the full grid only: no full-grid copies."""
    out = []
    for axis in range(3):
        idx = [np.arange(n) if a == axis else np.arange(0, n, stride) for a, n in enumerate(data.shape)]
        coarse = np.ix_(*_coarse_at(tuple(idx), pool.shape))
        values = data[np.ix_(*idx)]
        mask = pool[coarse] & (values != 0)
        residual = (values - mean_c[coarse]) / np.maximum(std_c[coarse], 1e-6)
        out.append(_lag1_of_lines(residual, mask, axis))
    return out[0], out[1], out[2]


def _kernel(sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.ones(1)
    radius = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return k / k.sum()


def _lag1(sigma: float) -> float:
    k = _kernel(sigma)
    return float(np.dot(k[:-1], k[1:]) / np.dot(k, k)) if k.size > 1 else 0.0


def grain_sigma(rho: float) -> float:
    """The Gaussian smoothing (voxels) that gives white noise a lag-1 correlation of `rho` (bisection)."""
    if rho <= 0.02:
        return 0.0
    if rho >= _lag1(MAX_GRAIN_SIGMA):
        return MAX_GRAIN_SIGMA
    lo, hi = 0.1, MAX_GRAIN_SIGMA
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _lag1(mid) < rho else (lo, mid)
    return 0.5 * (lo + hi)


def correlated_uniforms(where: np.ndarray, rho: tuple[float, float, float], rng: np.random.Generator
                        ) -> np.ndarray:
    """Uniform (0, 1) draws at the True voxels of `where`, spatially correlated like air of lag-1 `rho`.

    A white Gaussian field over `where`'s bounding box, smoothed per axis, standardised and mapped through
    the normal CDF: uniform marginals with the requested grain, ready for any quantile function."""
    from scipy.special import ndtr

    sigmas = [grain_sigma(r) for r in rho]
    idx = np.nonzero(where)
    if idx[0].size == 0:
        return np.empty(0, np.float32)
    pad = [int(4 * s + 1) for s in sigmas]
    lo = [max(0, int(i.min()) - p) for i, p in zip(idx, pad, strict=True)]
    hi = [min(n, int(i.max()) + 1 + p) for i, n, p in zip(idx, where.shape, pad, strict=True)]
    field = rng.standard_normal(tuple(h - lo_ for h, lo_ in zip(hi, lo, strict=True)), dtype=np.float32)
    norm = 1.0
    for axis, s in enumerate(sigmas):
        if s > 0:
            k = _kernel(s)
            field = parallel.correlate1d(field, k.astype(np.float32), axis, mode="wrap")
            norm *= float(np.sqrt(np.dot(k, k)))
    values = field[tuple(i - lo_ for i, lo_ in zip(idx, lo, strict=True))] / np.float32(norm)
    return np.clip(ndtr(values).astype(np.float32), np.float32(0), np.nextafter(np.float32(1), np.float32(0)))


@dataclass(frozen=True)
class InputAir:
    """What `refresh_air` reads of the input alone, on its coarse grid: it can be found while a method runs.

    `zero`: a mostly-zero background (or too little air to learn from): generated air becomes exactly 0."""

    zero: bool
    shape: tuple[int, int, int] = (0, 0, 0)  # the coarse grid's
    mean: np.ndarray | None = None  # local moments and their trust, coarse grid
    std: np.ndarray | None = None
    weight: np.ndarray | None = None
    grain: tuple[float, float, float] = (0.0, 0.0, 0.0)  # lag-1 correlation of the standardised air
    z_table: np.ndarray | None = None  # sorted z-scores of the air, its local moments taken out
    whole: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the whole air's mean, spread and minimum


def input_air(data: np.ndarray, input_head: np.ndarray, zooms: tuple[float, float, float]) -> InputAir:
    """The input's air statistics: local mean and spread, the shape of its distribution, its grain."""
    step = (slice(None, None, COARSE),) * 3
    dist = ndi.distance_transform_edt(~input_head[step], sampling=[COARSE * float(z) for z in zooms])
    sample = data[step]
    # the head's partial-volume edge reaches ~2 voxels out: on a coarse scan (4 mm) 6 mm is still the edge
    near = max(AIR_NEAR_MM, EDGE_VOXELS * max(float(z) for z in zooms))
    pool = (dist >= near) & ~input_head[step]
    values = sample[pool]
    if values.size < MIN_AIR_VOXELS or np.mean(values == 0) > 0.5:
        return InputAir(zero=True)
    pool &= sample != 0
    fallback = sample[pool]
    mean_c, std_c, weight_c = _local_moments(sample, pool, zooms)
    # the grain is that of the air with its local moments taken out, as they are put back in the draw
    grain = _residual_grain(data, pool, mean_c, std_c)
    z_table = np.sort((sample[pool] - mean_c[pool]) / np.maximum(std_c[pool], 1e-6))
    return InputAir(zero=False, shape=pool.shape, mean=mean_c, std=std_c, weight=weight_c, grain=grain,
                    z_table=z_table, whole=(float(fallback.mean()), float(fallback.std()), float(fallback.min())))


def refresh_air(data: np.ndarray, new: np.ndarray, input_head: np.ndarray, new_head: np.ndarray,
                zooms: tuple[float, float, float], rng: np.random.Generator, *,
                model: InputAir | None = None) -> np.ndarray:
    """`new` with every changed voxel outside `new_head` (grown by HEAD_CLEARANCE_VOX) drawn afresh from
    `data`'s own air. Same grid, float32. `model`: `input_air(data, input_head, zooms)` when the caller has it.

    - Its local mean and spread come from the input's air around the same place (LOCAL_MM): air is brighter
      near the head (partial volume), and ghosts and coil shading make bands of it brighter than the rest.
      Values drawn from the whole air anywhere scatter that bright tail as speckle. Where the input had no
      air nearby (inside its old head), the whole air's mean and spread stand in.
    - The shape of the distribution is the input air's, once its local moments are taken out (one table).
    - Its grain comes from `correlated_uniforms`, at the input air's own lag-1 correlation.
    A mostly-zero background stays exactly zero; otherwise exact zeros count as beyond the field of view
    and are never drawn."""
    air = (new != data) & ~ndi.binary_dilation(new_head, iterations=HEAD_CLEARANCE_VOX)
    out = np.array(new, np.float32, copy=True)
    if not air.any():
        return out
    model = input_air(data, input_head, zooms) if model is None else model
    if model.zero:
        out[air] = 0.0
        return out
    where_air = np.nonzero(air)
    uniforms = correlated_uniforms(air, model.grain, rng)
    at = _coarse_at(where_air, model.shape)
    trust = np.clip(model.weight[at] / LOCAL_FULL_WEIGHT, 0.0, 1.0)
    # where the input had no air nearby (inside its old head, beyond a box that cut its face), the air of
    # the whole field of view: the brightness of the air next to the input's skin belongs there, not here
    whole_mean, whole_std, whole_min = model.whole
    mean = trust * model.mean[at] + (1 - trust) * whole_mean
    std = trust * model.std[at] + (1 - trust) * whole_std
    z_table = model.z_table
    z = z_table[np.minimum((uniforms * z_table.size).astype(np.int64), z_table.size - 1)]
    out[where_air] = np.maximum(mean + std * z, whole_min)
    return out


def _local_moments(sample: np.ndarray, pool: np.ndarray, zooms: tuple[float, float, float]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, weight) of the coarse air `sample` over `pool`, on the coarse grid.

    Normalised convolution with a LOCAL_MM Gaussian; `weight` is the neighbourhood's share of the input's air
    (none inside the input's old head, where the whole air's moments stand in)."""
    sigma = [LOCAL_MM / (COARSE * float(z)) for z in zooms]
    weight = parallel.gaussian_filter(pool.astype(np.float32), sigma, mode="constant")
    safe = np.maximum(weight, 1e-6)
    mean = parallel.gaussian_filter(np.where(pool, sample, 0).astype(np.float32), sigma,
                                   mode="constant") / safe
    # spread around each voxel's own local mean: a band's edge would otherwise widen the air beside it
    squares = np.where(pool, (sample - mean) ** 2, 0).astype(np.float32)
    std = np.sqrt(parallel.gaussian_filter(squares, sigma, mode="constant") / safe)
    return mean, std, weight

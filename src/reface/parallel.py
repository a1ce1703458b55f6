"""Separable filters split across threads: the same numbers as scipy.ndimage's, sooner on several cores.

scipy.ndimage releases the GIL inside its C loops, and a 1D filter along one axis treats every line alone,
so cutting the volume into slabs along another axis and filtering them in threads gives bit-identical
output. The full-grid Gaussians of the finishing steps (head masks, scalp detail, fresh air) run serially
otherwise, with the machine's other cores idle.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

MIN_VOXELS = 1_000_000  # below this a volume is filtered in one piece (threads cost more than they save)
MAX_WORKERS = 8


def workers() -> int:
    """Threads to use: OMP_NUM_THREADS when set (batch workers set it), else the cores this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return min(int(env), MAX_WORKERS)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@lru_cache(maxsize=4)
def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="reface-filter")


def _slabs(shape: tuple[int, ...], axis: int, n: int) -> tuple[int, list[slice]]:
    """The longest other axis, cut into `n` near-equal slabs."""
    other = max((a for a in range(len(shape)) if a != axis), key=lambda a: shape[a])
    edges = np.linspace(0, shape[other], n + 1).round().astype(int)
    return other, [slice(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True) if hi > lo]


def along_axis(fn, volume: np.ndarray, axis: int, out: np.ndarray) -> np.ndarray:
    """out = fn(volume, axis, out) slab by slab in threads; fn must treat each line along `axis` alone."""
    n = workers() if volume.size >= MIN_VOXELS and volume.ndim > 1 else 1
    if n == 1:
        fn(volume, axis, out)
        return out
    other, slabs = _slabs(volume.shape, axis, n)

    def one(part: slice) -> None:
        index = (slice(None),) * other + (part,)
        fn(volume[index], axis, out[index])

    list(_pool(n).map(one, slabs))
    return out


def correlate1d(volume: np.ndarray, weights: np.ndarray, axis: int, *, mode: str = "reflect",
                cval: float = 0.0) -> np.ndarray:
    """`ndi.correlate1d(volume, weights, axis, mode=...)` (output in the input's dtype), in threads."""
    out = np.empty(volume.shape, volume.dtype)
    return along_axis(lambda v, a, o: ndi.correlate1d(v, weights, axis=a, output=o, mode=mode, cval=cval),
                      volume, axis, out)


def gaussian_filter(volume: np.ndarray, sigma, *, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """`ndi.gaussian_filter(volume, sigma, mode=...)` for a float volume, in threads; same dtype out."""
    volume = np.asarray(volume)
    if volume.dtype.kind != "f":
        raise TypeError("gaussian_filter here takes a float volume")
    sigmas = np.broadcast_to(np.asarray(sigma, float), (volume.ndim,))
    current = volume
    for axis, s in enumerate(sigmas):
        if s <= 1e-15:  # as scipy: an axis with no width is left alone
            continue
        out = np.empty(volume.shape, volume.dtype)
        along_axis(lambda v, a, o, s=float(s): ndi.gaussian_filter1d(v, s, axis=a, output=o, mode=mode, cval=cval),
                   current, axis, out)
        current = out
    return current if current is not volume else volume.copy()

"""Training data: discover scans, prepare them once into an npz cache, and serve batches.

Every scan is put on the 1 mm working grid exactly as `deidentify` does, normalised by the 99th
percentile of its brain, and stored as a pyramid (one entry per model scale) of
  img  - the whole head,
  cond - head x preserved region (block-averaged from 1 mm, zero far from the brain),
  mask - preserved fraction (block average of the 1 mm preserved mask),
  prior - the atlas head fitted to this scan's brain, contrast-matched to its non-brain histogram
          (model/prior.py): the base the generator refines.
Inference builds its inputs with the very same `pyramid` function.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .. import geometry
from ..errors import RefaceError
from ..masks import DEFAULT_MARGIN_MM, grow
from .prior import fitted_prior, match_contrast

NIFTI_SUFFIXES = (".nii.gz", ".nii")
FIELDS = ("img", "cond", "mask", "prior")
CACHE_VERSION = 3  # bump when what a cache entry holds changes


def intensity_scale(volume: np.ndarray, brain: np.ndarray) -> float:
    """The 99th percentile of the brain: the unit of the normalised intensities."""
    values = volume[brain] if brain.any() else volume[volume > 0]
    scale = float(np.percentile(values, 99)) if values.size else 0.0
    if not np.isfinite(scale) or scale <= 0:
        raise RefaceError("cannot normalise intensities: the brain has no positive signal")
    return scale


def pyramid(
    volume: np.ndarray, preserved: np.ndarray, scales_mm: tuple[int, ...], prior: np.ndarray
) -> dict[int, dict[str, np.ndarray]]:
    """Normalised 1 mm volume, preserved mask and prior -> {scale: {img, cond, mask, prior}} (float32)."""
    base = {"img": np.asarray(volume, np.float32), "mask": preserved.astype(np.float32)}
    base["cond"] = base["img"] * base["mask"]
    base["prior"] = np.asarray(prior, np.float32)
    levels, prev_scale, prev = {}, 1, base
    for s in sorted(scales_mm):  # each level from the previous one: block means of block means are exact
        factor = s // prev_scale if s % prev_scale == 0 else s
        source = prev if s % prev_scale == 0 else base
        prev = {name: geometry.downsample(a, factor).astype(np.float32) for name, a in source.items()}
        levels[s], prev_scale = prev, s
    return {s: levels[s] for s in scales_mm}


# ---------------------------------------------------------------------------------------------- discovery
def _strip_nifti(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_mask(t1: Path) -> Path | None:
    """A `*desc-brain_mask.nii[.gz]` beside a `*_T1w` file with the same entities, if any."""
    stem = _strip_nifti(t1.name)
    prefix = stem[: -len("_T1w")] if stem.endswith("_T1w") else stem
    for candidate in sorted(t1.parent.iterdir()):
        name = _strip_nifti(candidate.name)
        if candidate != t1 and name.startswith(prefix) and name.endswith("desc-brain_mask"):
            return candidate
    return None


def discover(data_dir: str | Path) -> list[tuple[Path, Path | None]]:
    """(T1w image, brain mask or None) pairs: BIDS-like `*_T1w.nii.gz`, else every non-mask NIfTI."""
    root = Path(data_dir)
    if not root.is_dir():
        raise RefaceError(f"training data folder not found: {root}")
    niftis = sorted(
        p for p in root.rglob("*") if p.name.endswith(NIFTI_SUFFIXES) and ".reface_cache" not in p.parts
    )
    t1s = [p for p in niftis if _strip_nifti(p.name).endswith("_T1w")]
    if not t1s:
        t1s = [p for p in niftis if "mask" not in p.name.lower()]
    if not t1s:
        raise RefaceError(f"no NIfTI scans found under {root}")
    return [(t1, find_mask(t1)) for t1 in t1s]


# ---------------------------------------------------------------------------------------------- preparation
def prepare_scan(t1: Path, mask: Path | None, scales_mm: tuple[int, ...]) -> dict[int, dict[str, np.ndarray]]:
    """One scan -> normalised pyramid on the working grid (the regions and grid `deidentify` would use)."""
    from ..io import load_mask, load_scan
    from ..masks import auto_brain_mask, check_brain

    scan = load_scan(t1)
    brain = load_mask(mask, scan) if mask is not None else auto_brain_mask(scan)
    check_brain(brain, scan)
    preserved = grow_cropped(brain, DEFAULT_MARGIN_MM, scan.zooms)
    grid = geometry.grid_for_brain(brain, scan.affine)
    volume_w = geometry.resample(scan.data, scan.affine, grid, order=1)
    brain_w = geometry.resample_mask(brain, scan.affine, grid)
    preserved_w = geometry.resample_mask(preserved, scan.affine, grid, threshold=0.01)
    volume_w = volume_w / intensity_scale(volume_w, brain_w)
    prior = match_contrast(fitted_prior(volume_w, brain_w, grid), volume_w, preserved_w)
    return pyramid(volume_w, preserved_w, scales_mm, prior)


def _random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@lru_cache(maxsize=1)
def packaged_sources() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(volume, affine, brain) of heads that ship with our dependencies, plus analytic phantoms."""
    from ..phantom import phantom_image
    from ..resources import load_volume, robex_brain_mask_path, robex_head_path

    head, affine = load_volume(str(robex_head_path()))
    brain, _ = load_volume(str(robex_brain_mask_path()))
    sources = [(np.array(head), affine, np.asarray(brain) > 0)]
    for seed in (0, 1):
        img, phantom_brain = phantom_image((120, 140, 140), (1.5, 1.5, 1.5), seed=seed, noise=15.0)
        sources.append((np.asarray(img.dataobj, np.float32), img.affine, phantom_brain))
    return sources


def grow_cropped(mask: np.ndarray, margin_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """`masks.grow` on the mask's bounding box only (same result, a fraction of the time)."""
    out = np.zeros(mask.shape, bool)
    if not mask.any():
        return out
    pad = [int(np.ceil(margin_mm / s)) + 1 for s in spacing]
    idx = np.nonzero(mask)
    box = tuple(
        slice(max(int(i.min()) - p, 0), min(int(i.max()) + p + 1, n))
        for i, p, n in zip(idx, pad, mask.shape, strict=True)
    )
    out[box] = grow(mask[box], margin_mm, spacing)
    return out


def augmented_packaged(
    index: int, scales_mm: tuple[int, ...], seed: int = 0
) -> dict[int, dict[str, np.ndarray]]:
    """A randomly deformed (affine, anisotropic scale) and intensity-warped packaged head."""
    sources = packaged_sources()
    rng = np.random.default_rng([seed, index])
    volume, affine, brain = sources[index % len(sources)]
    grid = geometry.grid_for_brain(brain, affine)
    centre = grid.affine[:3, :3] @ ((np.array(grid.shape) - 1) / 2) + grid.affine[:3, 3]
    linear = _random_rotation(rng, 8.0) @ np.diag(rng.uniform(0.9, 1.1, 3))
    warp = np.eye(4)
    warp[:3, :3] = linear
    warp[:3, 3] = centre - linear @ centre + rng.uniform(-3, 3, 3)
    src_affine = np.linalg.inv(warp) @ affine  # a new head: the source seen through the warp
    volume_w = geometry.resample(volume, src_affine, grid, order=1)
    brain_w = geometry.resample_mask(brain, src_affine, grid)
    preserved = grow_cropped(brain_w, DEFAULT_MARGIN_MM, grid.spacing)
    volume_w = np.clip(volume_w / intensity_scale(volume_w, brain_w), 0, None)
    volume_w = volume_w ** rng.uniform(0.8, 1.25)  # contrast variation
    prior = match_contrast(fitted_prior(volume_w, brain_w, grid), volume_w, preserved)
    return pyramid(volume_w, preserved, scales_mm, prior)


def _cache_name(key: str, scales_mm: tuple[int, ...]) -> str:
    digest = hashlib.sha1(f"{key}|{scales_mm}|v{CACHE_VERSION}".encode()).hexdigest()[:12]
    return f"{digest}.npz"


def prepare_cache(
    scales_mm: tuple[int, ...],
    cache_dir: str | Path,
    *,
    data: str = "",
    packaged: int = 0,
    seed: int = 0,
    quiet: bool = False,
) -> list[Path]:
    """Prepare every scan once (skipping those already cached); returns the npz paths."""
    from ..progress import track

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, object]] = []
    if data:
        jobs += [(str(t1.resolve()), (t1, mask)) for t1, mask in discover(data)]
    jobs += [(f"packaged:{seed}:{i}", i) for i in range(packaged)]
    if not jobs:
        raise RefaceError("no training data: give --data DIR or --packaged N")
    paths = []
    for key, job in track(jobs, total=len(jobs), desc="preparing cache", quiet=quiet):
        path = cache / _cache_name(key, scales_mm)
        if not path.exists():
            levels = (
                prepare_scan(*job, scales_mm)
                if isinstance(job, tuple)
                else augmented_packaged(job, scales_mm, seed)
            )
            arrays = {
                f"{name}_{s}": level[name].astype(np.float16) for s, level in levels.items() for name in level
            }
            tmp = path.with_name(path.stem + ".tmp.npz")
            np.savez_compressed(tmp, **arrays)
            tmp.replace(path)
        paths.append(path)
    (cache / "manifest.json").write_text(
        json.dumps({"scales_mm": list(scales_mm), "scans": [k for k, _ in jobs]}, indent=1)
    )
    return paths


# ---------------------------------------------------------------------------------------------- batches
@dataclass
class Batch:
    """Per-stage tensors [N, 1, D, H, W] for img / cond / mask / prior, coarse to fine."""

    img: list[torch.Tensor]
    cond: list[torch.Tensor]
    mask: list[torch.Tensor]
    prior: list[torch.Tensor]


class VolumeSet:
    """All prepared scans held in memory (float16), sampled with replacement."""

    def __init__(self, paths: list[Path], scales_mm: tuple[int, ...]):
        if not paths:
            raise RefaceError("training cache is empty")
        self.scales_mm = scales_mm
        self.items = []
        for path in paths:
            with np.load(path) as npz:
                self.items.append(
                    {(name, s): npz[f"{name}_{s}"] for s in scales_mm for name in FIELDS}
                )

    def __len__(self) -> int:
        return len(self.items)

    def batch(
        self, n: int, rng: np.random.Generator, *, flip: bool, device, upto: int | None = None
    ) -> Batch:
        scales = self.scales_mm if upto is None else self.scales_mm[: upto + 1]
        picks = rng.integers(0, len(self.items), n)
        flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
        out = {name: [] for name in FIELDS}
        for s in scales:
            for name in out:
                arrays = [
                    self.items[i][(name, s)][::-1] if f else self.items[i][(name, s)]
                    for i, f in zip(picks, flips, strict=True)
                ]
                stacked = torch.from_numpy(np.stack(arrays).astype(np.float32))[:, None]
                out[name].append(stacked.to(device))
        return Batch(**out)


def patch_corners(
    mask: torch.Tensor, img: torch.Tensor, size: int, rng: np.random.Generator
) -> list[tuple[int, ...]]:
    """One patch corner per sample, centred on a random head voxel outside the brain (where the face is)."""
    corners = []
    shape = np.array(mask.shape[2:])
    for i in range(mask.shape[0]):
        candidates = torch.nonzero((mask[i, 0] < 1.0) & (img[i, 0] > 0.1)).cpu().numpy()
        centre = candidates[rng.integers(len(candidates))] if len(candidates) else shape // 2
        corner = np.clip(centre - size // 2, 0, np.maximum(shape - size, 0))
        corners.append(tuple(int(c) for c in corner))
    return corners


def crop(x: torch.Tensor, corners: list[tuple[int, ...]], size: int) -> torch.Tensor:
    """[N, C, D, H, W] -> [N, C, size, size, size] at per-sample corners."""
    return torch.stack(
        [x[i, :, a : a + size, b : b + size, c : c + size] for i, (a, b, c) in enumerate(corners)]
    )

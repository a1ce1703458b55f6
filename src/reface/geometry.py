"""The working grid: a fixed 1 mm RAS box around the head, and exact bookkeeping to get back.

Methods generate voxels in this grid; only those generated voxels are resampled back to the input grid.
Everything else (the preserved brain above all) is copied from the input array untouched.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

# 176 x 224 x 224 mm covers an adult head (ears, vertex to chin, nose to occiput).
WORK_SHAPE: tuple[int, int, int] = (176, 224, 224)
WORK_SPACING_MM: float = 1.0
# Where the grid centre sits relative to the brain's centroid (RAS mm): the face is anterior and inferior.
# Measured on the ROBEX atlas head: head spans -81..+126 mm (A-P) and -134..+76 mm (S-I) around the brain
# centroid, so the grid spans -92..+132 and -137..+87.
CENTRE_OFFSET_MM = np.array([0.0, 20.0, -25.0])


@dataclass(frozen=True)
class Grid:
    """A voxel grid in world space: shape and voxel->world affine (RAS+ mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def working_grid(centre_world: np.ndarray, shape: tuple[int, int, int] = WORK_SHAPE,
                 spacing: float = WORK_SPACING_MM) -> Grid:
    """An axis-aligned RAS grid whose centre voxel sits at `centre_world`."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    half = (np.array(shape) - 1) / 2.0 * spacing
    affine[:3, 3] = np.asarray(centre_world, dtype=float) - half
    return Grid(tuple(int(s) for s in shape), affine)


def grid_for_brain(brain: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int] = WORK_SHAPE) -> Grid:
    """Place the working grid from the brain mask's centroid (robust to field of view and neck)."""
    ijk = np.array(ndi.center_of_mass(brain), dtype=float)
    centre = affine[:3, :3] @ ijk + affine[:3, 3]
    return working_grid(centre + CENTRE_OFFSET_MM, shape)


def resample(data: np.ndarray, src_affine: np.ndarray, dst: Grid, *, order: int = 1,
             cval: float = 0.0) -> np.ndarray:
    """Resample `data` (on src_affine) onto grid `dst` (voxel centres mapped through world space)."""
    mapping = np.linalg.inv(src_affine) @ dst.affine  # dst voxel -> src voxel
    linear = mapping[:3, :3]
    if np.allclose(linear, np.diag(np.diag(linear)), atol=1e-9):
        linear = np.diag(linear)  # axis-aligned: scipy's separable fast path (~3x faster)
    with warnings.catch_warnings():
        # scipy notes that 1-D matrices changed meaning in 0.18; we rely on the current meaning (tested)
        warnings.simplefilter("ignore", UserWarning)
        out = ndi.affine_transform(
            np.asarray(data, dtype=np.float32),
            linear,
            offset=mapping[:3, 3],
            output_shape=dst.shape,
            order=order,
            mode="constant",
            cval=cval,
            prefilter=order > 1,
        )
    return out.astype(np.float32, copy=False)


def resample_many(volumes: list[np.ndarray], src_affine: np.ndarray, dst: Grid, *, order: int = 1,
                  cval: float = 0.0) -> list[np.ndarray]:
    """Resample several volumes that share one grid."""
    return [resample(v, src_affine, dst, order=order, cval=cval) for v in volumes]


def outside_front(shape: tuple[int, int, int], affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Voxels of an input grid that lie in front of (anterior to) the working grid's front face."""
    axes = [np.arange(n, dtype=np.float64) for n in shape]
    mapping = np.linalg.inv(grid.affine) @ affine  # input voxel -> grid voxel
    row = mapping[1]  # grid axis 1 is anterior
    y = row[0] * axes[0][:, None, None] + row[1] * axes[1][None, :, None] + row[2] * axes[2][None, None, :] + row[3]
    return y > grid.shape[1] - 0.5


def resample_mask(mask: np.ndarray, src_affine: np.ndarray, dst: Grid, *, threshold: float = 0.5) -> np.ndarray:
    """Resample a binary mask by linear interpolation of its indicator, then threshold."""
    return resample(mask.astype(np.float32), src_affine, dst, order=1) > threshold


def downsample(volume: np.ndarray, factor: int) -> np.ndarray:
    """Block-average by an integer factor (shape must be divisible)."""
    if factor == 1:
        return volume
    s = volume.shape
    if any(n % factor for n in s):
        raise ValueError(f"shape {s} not divisible by {factor}")
    v = volume.reshape(s[0] // factor, factor, s[1] // factor, factor, s[2] // factor, factor)
    return v.mean(axis=(1, 3, 5))


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def inside_field_of_view(shape: tuple[int, ...], affine: np.ndarray, dst: Grid) -> np.ndarray:
    """Voxels of `dst` whose centre maps inside a volume of `shape` at `affine`, between its first and last
    voxel centres (where `resample` interpolates data, not padding). Exact, and no resampling."""
    to_src = np.linalg.inv(np.asarray(affine, np.float64)) @ np.asarray(dst.affine, np.float64)
    axes = [np.arange(n, dtype=np.float32) for n in dst.shape]
    inside = np.ones(tuple(dst.shape), bool)
    for c in range(3):
        coord = (to_src[c, 0] * axes[0][:, None, None] + to_src[c, 1] * axes[1][None, :, None]
                 + to_src[c, 2] * axes[2][None, None, :] + to_src[c, 3])
        inside &= (coord >= -1e-3) & (coord <= shape[c] - 1 + 1e-3)  # where `resample` has data
    return inside

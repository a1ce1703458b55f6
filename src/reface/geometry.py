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
# A head longer than that (17 of the 50 synthetic identities, up to 18 mm) had its face cut by the grid's front
# face: the nose and lips beyond it were blanked, and remodel's face got a slot from the nose to the chin. The
# grid then moves forward until the head's front is FRONT_MARGIN_MM inside it, as far as the preserved region
# stays BACK_MARGIN_MM inside its back face (behind the grid the input's own occiput stays).
FRONT_MARGIN_MM = 4.0
BACK_MARGIN_MM = 2.0


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


def _world_y(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World y (anterior, mm) of a mask's voxels."""
    i, j, k = np.nonzero(mask)
    row = affine[1]
    return row[0] * i + row[1] * j + row[2] * k + row[3]


def forward_shift(head: np.ndarray, preserved: np.ndarray, affine: np.ndarray, centre_y: float,
                  length_mm: float) -> float:
    """mm to move a grid of this length (centred at centre_y) forward so the head's front fits (see
    FRONT_MARGIN_MM), no further than keeps `preserved` BACK_MARGIN_MM inside its back face; 0 when it fits."""
    if not head.any() or not preserved.any():
        return 0.0
    front, back = centre_y + length_mm / 2.0, centre_y - length_mm / 2.0
    excess = float(_world_y(head, affine).max()) + FRONT_MARGIN_MM - front
    room = float(_world_y(preserved, affine).min()) - BACK_MARGIN_MM - back
    return max(0.0, min(excess, room))


def grid_for_brain(brain: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int] = WORK_SHAPE, *,
                   head: np.ndarray | None = None, preserved: np.ndarray | None = None) -> Grid:
    """Place the working grid from the brain mask's centroid (robust to field of view and neck).

    `head` (the input's head mask): a head whose face would pass the grid's front face moves the grid
    forward (forward_shift; `preserved`, default the brain, stays inside). On an axis-aligned input with the
    working spacing (1 mm RAS, LAS, LIA, ...) the grid is moved by under half a voxel onto the input's own
    voxel centres, so resampling there and back is an exact copy."""
    ijk = np.array(ndi.center_of_mass(brain), dtype=float)
    centre = affine[:3, :3] @ ijk + affine[:3, 3] + CENTRE_OFFSET_MM
    if head is not None:
        length = (shape[1] - 1) * WORK_SPACING_MM
        centre[1] += forward_shift(head, brain if preserved is None else preserved, affine, centre[1], length)
    if _lattice_map(np.diag([WORK_SPACING_MM] * 3 + [1.0]), affine, tol_offset=np.inf) is not None:
        half = (np.array(shape) - 1) / 2.0 * WORK_SPACING_MM
        inverse = np.linalg.inv(affine)
        origin = affine[:3, :3] @ np.rint(inverse[:3, :3] @ (centre - half) + inverse[:3, 3]) + affine[:3, 3]
        centre = origin + half
    return working_grid(centre, shape)


def _lattice_map(dst_affine: np.ndarray, src_affine: np.ndarray, *, tol_offset: float = 1e-4):
    """(axes, signs, offsets) when every dst voxel centre is a src voxel centre (a signed axis permutation
    and an integer shift: src index along axes[d] = signs[d] * i_d + offsets[d]); else None."""
    mapping = np.linalg.inv(np.asarray(src_affine, np.float64)) @ np.asarray(dst_affine, np.float64)
    linear, offset = mapping[:3, :3], mapping[:3, 3]
    rounded = np.rint(linear)
    if not np.allclose(linear, rounded, atol=1e-6) or not np.allclose(np.abs(rounded).sum(axis=0), 1):
        return None
    axes = [int(np.flatnonzero(rounded[:, d])[0]) for d in range(3)]
    if sorted(axes) != [0, 1, 2] or not np.all(np.abs(offset - np.rint(offset)) <= tol_offset):
        return None
    signs = [int(rounded[axes[d], d]) for d in range(3)]
    return axes, signs, [int(np.rint(offset[axes[d]])) for d in range(3)]


def _lattice_copy(data: np.ndarray, lattice, shape: tuple[int, int, int], cval: float) -> np.ndarray:
    """`resample` for a lattice map: slicing, exact, no interpolation."""
    axes, signs, offsets = lattice
    src = np.asarray(data).transpose(axes)  # src axis axes[d] -> output axis d
    out = np.full(shape, cval, np.float32)
    dst_index, src_index = [], []
    for d in range(3):
        j = signs[d] * np.arange(shape[d]) + offsets[d]
        valid = np.flatnonzero((j >= 0) & (j < src.shape[d]))
        if valid.size == 0:
            return out
        lo, hi = int(valid[0]), int(valid[-1])
        dst_index.append(slice(lo, hi + 1))
        first, last = int(j[lo]), int(j[hi])
        step = signs[d]
        stop = last + step if last + step >= 0 else None
        src_index.append(slice(first, stop, step))
    out[tuple(dst_index)] = src[tuple(src_index)]
    return out


def resample(data: np.ndarray, src_affine: np.ndarray, dst: Grid, *, order: int = 1,
             cval: float = 0.0) -> np.ndarray:
    """Resample `data` (on src_affine) onto grid `dst` (voxel centres mapped through world space)."""
    lattice = _lattice_map(dst.affine, src_affine)
    if lattice is not None:  # every dst voxel centre is a src voxel centre: interpolation would copy
        return _lattice_copy(data, lattice, dst.shape, cval)
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

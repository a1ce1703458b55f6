"""Quickshear-style defacing: cut the head along a plane under the brain's lower convex hull.

The brain mask is projected onto the sagittal (A-P, S-I) plane; the longest edge of its lower convex hull
in front of the brain's lowest point, of moderate slope, bridges the frontal lobe's underside. Everything on the
face side of that line, moved `buffer_mm` away from the brain, is set to background. By convexity no brain
voxel lies on the cut side (Schimke & Hale, "Quickshear defacing for neuroimages", 2011).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BUFFER_MM = 10.0
# Slopes (ds/da) accepted for the cut line: between ~27 and ~63 degrees, descending towards the back.
SLOPE_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class ShearLine:
    """A line in the sagittal plane (RAS mm: a = anterior, s = superior); the cut side is s < s_at(a)."""

    a0: float
    s0: float
    slope: float  # ds/da along the hull edge
    buffer_mm: float

    def offset(self, a: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Signed distance (mm) above the shifted line; negative on the cut (face) side."""
        norm = np.hypot(1.0, self.slope)
        return (s - self.s0 - self.slope * (a - self.a0)) / norm + self.buffer_mm


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def lower_hull(points: np.ndarray) -> np.ndarray:
    """Lower convex hull (Andrew's monotone chain) of 2D points [N, 2] = (a, s), from largest a down."""
    pts = np.unique(points, axis=0)
    pts = pts[np.lexsort((pts[:, 1], -pts[:, 0]))]  # anterior first; lowest first among equal a
    hull: list[np.ndarray] = []
    for p in pts:
        # Walking towards smaller a, the lower hull only turns clockwise in (a, s).
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= 0:
            hull.pop()
        hull.append(p)
    return np.array(hull)


def profile_points(brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(a, s) world mm [N, 2] of the brain voxels that can be vertices of its lower hull in the sagittal plane.

    Along each voxel column of the axis closest to world S, brain voxels project onto one segment of the
    (a, s) plane, so only the column's first and last brain voxel can be hull vertices; qhull then keeps the
    convex hull's vertices (a few dozen), so the Python hull walk costs nothing. Any voxel-to-world affine.
    """
    if not brain.any():
        raise AssertionError("shear needs a non-empty brain mask")
    affine = np.asarray(affine, np.float64)
    axis = int(np.argmax(np.abs(affine[2, :3])))
    columns = np.moveaxis(brain, axis, -1)  # [..., column]
    present = columns.any(axis=-1)
    uv = np.argwhere(present)  # the other two voxel indices, in axis order
    first = np.argmax(columns[present], axis=-1)
    last = columns.shape[-1] - 1 - np.argmax(columns[present][:, ::-1], axis=-1)
    others = [a for a in range(3) if a != axis]
    ijk = np.empty((2 * len(uv), 3))
    for row, ends in ((slice(0, len(uv)), first), (slice(len(uv), None), last)):
        ijk[row, others[0]], ijk[row, others[1]], ijk[row, axis] = uv[:, 0], uv[:, 1], ends
    points = np.unique(ijk @ affine[1:3, :3].T + affine[1:3, 3], axis=0)  # (a, s)
    if len(points) > 3:
        from scipy.spatial import ConvexHull, QhullError

        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # all on one line: keep them all
            pass
    return points


def shear_line(brain: np.ndarray, affine: np.ndarray, buffer_mm: float = DEFAULT_BUFFER_MM) -> ShearLine:
    """The cut line of a brain mask on a grid with voxel-to-world `affine` (world RAS: a = y, s = z)."""
    points = profile_points(brain, affine)
    hull = lower_hull(points)
    if len(hull) < 2:
        raise AssertionError("brain mask too small for a hull")
    # The anterior-inferior edge: the longest hull edge between the anterior-most and the lowest point whose
    # slope is between SLOPE_RANGE (the bridge under the frontal lobe). Quickshear's "first edge" can be a
    # steep millimetre-long facet of the frontal pole whose extension would cut through the forehead.
    # Without such an edge (a smooth, ellipsoidal brain) the 45-degree tangent line is used.
    lowest = max(1, int(np.argmin(hull[:, 1])))
    front = hull[: lowest + 1]
    da, ds = np.diff(front, axis=0).T
    slopes = np.divide(ds, da, out=np.full(da.shape, np.inf), where=da != 0)
    usable = (slopes >= SLOPE_RANGE[0]) & (slopes <= SLOPE_RANGE[1])
    if usable.any():
        i = int(np.argmax(np.where(usable, np.hypot(da, ds), -1.0)))
        (a0, s0), slope = front[i], float(slopes[i])
    else:
        i = int(np.argmin(points[:, 1] - points[:, 0]))
        (a0, s0), slope = points[i], 1.0
    return ShearLine(a0=float(a0), s0=float(s0), slope=float(slope), buffer_mm=float(buffer_mm))


def cut_region(brain: np.ndarray, affine: np.ndarray, buffer_mm: float = DEFAULT_BUFFER_MM) -> np.ndarray:
    """Boolean [X, Y, Z] (read-only): voxels on the face side of the shear line, for any affine."""
    line = shear_line(brain, affine, buffer_mm)
    affine = np.asarray(affine, np.float64)
    # The offset is linear in voxel indices: offset = const + sum_c coef[c] * index_c.
    norm = np.hypot(1.0, line.slope)
    coef = (affine[2, :3] - line.slope * affine[1, :3]) / norm
    const = (affine[2, 3] - line.s0 - line.slope * (affine[1, 3] - line.a0)) / norm + line.buffer_mm
    axes = [np.arange(n, dtype=np.float64) * c for n, c in zip(brain.shape, coef, strict=True)]
    if coef[0] == 0.0:  # axis-aligned RAS (the working grid): one sagittal slice, broadcast across x
        return np.broadcast_to((const + axes[1][:, None] + axes[2][None, :]) < 0, brain.shape)
    offset = const + axes[1][:, None] + axes[2][None, :]  # [Y, Z]; each x slice shifts it
    side = np.empty(brain.shape, bool)
    for i, x in enumerate(axes[0]):
        np.less(offset, -x, out=side[i])
    side.flags.writeable = False
    return side


def shear(volume: np.ndarray, regions, *, rng: np.random.Generator,
          buffer_mm: float = DEFAULT_BUFFER_MM) -> np.ndarray:
    """Zero everything below / in front of the brain's anterior-inferior hull edge (minus a buffer)."""
    cut = cut_region(regions.brain, regions.grid.affine, buffer_mm) & ~regions.preserved
    out = volume.copy()
    out[cut] = 0.0
    return out


def shear_input_grid(scan, regions, *, rng: np.random.Generator | None = None, level: float = 0.0,
                     buffer_mm: float = DEFAULT_BUFFER_MM) -> np.ndarray:
    """The same cut on the scan's own grid: raw output values (input dtype and shape), no resampling.

    `regions` are on the input grid (masks.make_regions). Preserved voxels keep their raw values; cut
    voxels get the raw value of intensity `level` (the input's air). What a wrapper can call instead of the
    working-grid path: no resampling there and back, and no voxel of the field of view goes unseen."""
    cut = cut_region(regions.brain, scan.affine, buffer_mm)
    raw = scan.raw.copy()
    raw[cut & ~regions.preserved] = scan.quantize(np.full(1, level, np.float32))[0]
    return raw


shear.on_input_grid = shear_input_grid  # type: ignore[attr-defined]

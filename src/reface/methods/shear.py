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


def shear_line(brain: np.ndarray, affine: np.ndarray, buffer_mm: float = DEFAULT_BUFFER_MM) -> ShearLine:
    """The cut line of a brain mask on an axis-aligned RAS grid (axis 1 anterior, axis 2 superior)."""
    if not brain.any():
        raise AssertionError("shear needs a non-empty brain mask")
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))) or np.any(np.diag(affine)[:3] <= 0):
        raise AssertionError("shear expects an axis-aligned RAS grid")
    sagittal = brain.any(axis=0)  # [Y, Z]
    # Only the lowest voxel of each coronal column can be on the lower hull (or minimise s - a below): a few
    # hundred points instead of the whole profile, so the Python hull loop costs nothing.
    j = np.flatnonzero(sagittal.any(axis=1))
    jk = np.stack([j, np.argmax(sagittal[j], axis=1)], axis=1).astype(float)
    points = jk * np.diag(affine)[1:3] + affine[1:3, 3]  # (a, s) in mm
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
    """Boolean [X, Y, Z]: voxels on the face side of the shear line."""
    line = shear_line(brain, affine, buffer_mm)
    a = np.arange(brain.shape[1]) * affine[1, 1] + affine[1, 3]
    s = np.arange(brain.shape[2]) * affine[2, 2] + affine[2, 3]
    side = line.offset(a[:, None], s[None, :]) < 0  # [Y, Z]
    return np.broadcast_to(side, brain.shape)


def shear(volume: np.ndarray, regions, *, rng: np.random.Generator,
          buffer_mm: float = DEFAULT_BUFFER_MM) -> np.ndarray:
    """Zero everything below / in front of the brain's anterior-inferior hull edge (minus a buffer)."""
    cut = cut_region(regions.brain, regions.grid.affine, buffer_mm) & ~regions.preserved
    out = volume.copy()
    out[cut] = 0.0
    return out

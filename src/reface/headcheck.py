"""Is there a head around the brain? A phantom cube or a blob passes the brain-mask checks (volume, one
piece, shape) because the automatic mask covers the whole object; what gives it away is that its "brain"
reaches the air. In a head, skull and scalp put 10 mm or more of tissue between the brain and the air."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .errors import RefaceError
from .masks import bounding_box

# Median tissue depth around the brain surface below which the image is not a head. Real heads measure
# 15-16 mm (ROBEX, pydeface mean, MNI crop) and the phantom 21 mm; a 2 mm cube 6 mm (its mask plus the
# 4 mm margin, which the head region includes).
MIN_TISSUE_MM = 7.0
# Depths are measured up to this and counted as this beyond it. Twice the threshold keeps the verdict and the
# median it reports exact: a median under MIN_TISSUE_MM averages at most two values, both under CAP.
DEPTH_CAP_MM = 2 * MIN_TISSUE_MM
BOX_PAD_MM = 20.0  # air further than this from the brain's box is not looked at


def tissue_depth_mm(brain: np.ndarray, head: np.ndarray, zooms: tuple[float, float, float], *,
                    cap_mm: float = DEPTH_CAP_MM) -> float:
    """Median distance from the brain's surface to the air outside the head, depths over `cap_mm`
    counted as `cap_mm`. Beyond the image is not air: a field of view that cuts the head does not make
    it shallow (the distance transform ignores it)."""
    if not head.any() or not brain.any():
        return 0.0
    zooms = tuple(float(z) for z in zooms)
    near = bounding_box(brain, [int(np.ceil(BOX_PAD_MM / z)) for z in zooms])
    if head[near].all():  # no air at all: the whole-box transform, whatever its convention there
        return _tissue_depth_transform(brain[near], head[near], zooms, cap_mm)
    box = bounding_box(brain, [2] * 3)  # a surface voxel is one the erosion removes, as on the padded box
    surface = brain[box] & ~ndi.binary_erosion(brain[box])
    inner = np.zeros(brain.shape, bool)
    inner[2:-2, 2:-2, 2:-2] = True  # a mask's face on the image edge is not a surface
    chosen = surface & inner[box] if (surface & inner[box]).any() else surface
    points = np.argwhere(chosen) + [b.start for b in box]
    region = bounding_box(brain, [int(np.ceil(cap_mm / z)) + 1 for z in zooms])
    values = _capped_depth(points, head, zooms, region, cap_mm)
    return float(np.median(values)) if values.size else 0.0


def _tissue_depth_transform(brain: np.ndarray, head: np.ndarray, zooms: tuple[float, float, float],
                            cap_mm: float) -> float:
    depth = ndi.distance_transform_edt(head, sampling=zooms)
    surface = brain & ~ndi.binary_erosion(brain)
    inner = np.zeros_like(surface)
    inner[2:-2, 2:-2, 2:-2] = True
    values = depth[surface & inner] if (surface & inner).any() else depth[surface]
    return float(np.median(np.minimum(values, cap_mm))) if values.size else 0.0


def _capped_depth(points: np.ndarray, head: np.ndarray, zooms: tuple[float, float, float],
                  region: tuple[slice, ...], cap_mm: float) -> np.ndarray:
    """min(cap_mm, distance_transform_edt(head, sampling=zooms)) at voxel indices `points` [N, 3],
    without a whole-box transform. The nearest air voxel to a head voxel has a head voxel beside it (one
    step from it towards the head voxel would be closer, and air), so a k-d tree of those air voxels within
    `region` (which holds every voxel within the cap of the points) finds it."""
    head_r = head[region]
    air = ~head_r
    edge = np.zeros_like(air)
    for axis in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        edge[tuple(lo)] |= air[tuple(lo)] & head_r[tuple(hi)]
        edge[tuple(hi)] |= air[tuple(hi)] & head_r[tuple(lo)]
    candidates = np.argwhere(edge) + [r.start for r in region]
    depth = np.full(len(points), cap_mm)
    if len(candidates) and len(points):
        from scipy.spatial import cKDTree

        sampling = np.asarray(zooms, np.float64)
        # unbalanced, uncompacted nodes: on lattice points both build and query run several times faster
        tree = cKDTree(candidates * sampling, balanced_tree=False, compact_nodes=False)
        _, nearest = tree.query(points * sampling, distance_upper_bound=1.01 * cap_mm + 1e-6)
        found = nearest < len(candidates)
        # the distance exactly as distance_transform_edt computes it from the feature's integer offset
        offsets = (candidates[nearest[found]] - points[found]).astype(np.float64) * sampling
        depth[found] = np.minimum(np.sqrt(np.add.reduce(offsets * offsets, axis=1)), cap_mm)
    return np.where(head[tuple(points.T)], depth, 0.0)


def check_head(brain: np.ndarray, head: np.ndarray, zooms: tuple[float, float, float], source: str,
               *, given: bool = False) -> None:
    """Refuse an image whose brain mask reaches the air almost everywhere: not a head (or skull-stripped).

    Depths capped at the threshold itself prove a head with a third of the k-d tree search: if even that
    median reaches MIN_TISSUE_MM, the uncapped one does. Anything else is measured again in full."""
    if tissue_depth_mm(brain, head, zooms, cap_mm=MIN_TISSUE_MM) >= MIN_TISSUE_MM:
        return
    depth = tissue_depth_mm(brain, head, zooms)
    if depth < MIN_TISSUE_MM:
        what = "the given brain mask" if given else "the automatic brain mask"
        raise RefaceError(f"{source}: this does not look like a head: {what} reaches the air (median "
                          f"{depth:.1f} mm of tissue around it, a head has 10 mm or more of skull and scalp); "
                          "a phantom, a non-head image, or an already skull-stripped brain (no face to remove)")

"""Head-surface renderings: the skin surface of an MRI as a person (or a face recogniser) would see it.

Orthographic volumetric ray casting. The volume is smoothed once; the skin is the first point along each
ray above a threshold taken from the head intensity (a fraction of the Otsu level of a block-averaged
copy). Rays are only marched through the depth band where a coarse outline of the head (the largest
connected blob of the block-averaged volume) says their first hit lies, with fall-backs for rays that
start inside or find nothing there. Normals come from the smoothed volume's gradient, sampled through a
cubic B-spline approximation (the voxels as B-spline coefficients, no prefilter): trilinear gradients jump at
every voxel face and draw contour lines on smooth skin, and an interpolating spline shows the staircase of an
edge sharper than a voxel; the approximation adds a ~0.6 voxel blur and is smooth to the second derivative.
Shading is Lambert + a little Blinn-Phong in a skin tone. Everything is deterministic.

Conventions (RAS world): the "front" view faces the subject, so the subject's right is on the image's
LEFT; "left" looks at the subject's left side (nose towards the image's left). `yaw` turns the camera
around the superior axis towards the subject's left, `pitch` raises it above the head (orbit camera: in
the "top" view the face points to the bottom of the image).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..errors import RefaceError
from ..io import publish
from ..masks import otsu_level

# Bumped whenever a change alters the pictures: `reface evaluate` renders and attacks again every saved head
# whose lines were made by another version (comparing faces across renderers mixes two yardsticks).
# 1: trilinear normals; 2: interpolating cubic B-spline normals (no contour lines, but a sharp edge's staircase
# rippled more: 9.1 grey levels on a 1.5 mm binary ball against 6.3); 3: B-spline approximation (4.6).
RENDERER_VERSION = 3

# Named camera positions: (yaw, pitch) in degrees.
VIEWS: dict[str, tuple[float, float]] = {
    "front": (0.0, 0.0),
    "left": (90.0, 0.0),
    "right": (-90.0, 0.0),
    "back": (180.0, 0.0),
    "top": (0.0, 90.0),
    "bottom": (0.0, -90.0),
    "front-left": (45.0, 0.0),
    "left30": (30.0, 0.0),  # the evaluation's side views (attackers see +-30 degrees of yaw)
    "right30": (-30.0, 0.0),
    "front-right": (-45.0, 0.0),
    "front-top": (0.0, 30.0),
    "front-bottom": (0.0, -30.0),
}

THRESHOLD_FRACTION = 0.45  # surface level as a fraction of the Otsu level (skin/fat are brighter than noise)
MIN_SPACING_MM = 1.0  # finer ray sampling than this buys nothing on MRI and costs cubic time
SMOOTH_SIGMA_MM = 1.0  # denoise before thresholding; normals from the same smoothed volume
SMOOTH_VOXELS = 0.5  # ... and at least half a voxel, so coarse scans do not show terraces
MARGIN_MM = 6.0  # empty border around the head in the picture
SKIN_RGB = np.array([0.92, 0.74, 0.62])
BACKGROUND_RGB = (24, 24, 28)


def camera_axes(yaw: float, pitch: float) -> np.ndarray:
    """[3, 3] rows = world (RAS) directions of image columns (right), image rows (down), ray depth."""
    y, p = np.deg2rad(yaw), np.deg2rad(pitch)
    eye = np.array([-np.sin(y) * np.cos(p), np.cos(y) * np.cos(p), np.sin(p)])  # head -> camera
    up = np.array([np.sin(y) * np.sin(p), -np.cos(y) * np.sin(p), np.cos(p)])
    forward = -eye
    right = np.cross(forward, up)
    return np.stack([right, -up, forward])


def _view_angles(view: str, yaw: float | None, pitch: float | None) -> tuple[float, float]:
    if view not in VIEWS:
        raise RefaceError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    base_yaw, base_pitch = VIEWS[view]
    return (base_yaw if yaw is None else float(yaw)), (base_pitch if pitch is None else float(pitch))


def _coarse(data: np.ndarray, affine: np.ndarray, target_mm: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Block-mean the volume to ~target_mm voxels (cheap denoising for threshold and framing)."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    factors = np.maximum(1, np.floor(target_mm / zooms)).astype(int)
    shape = np.array(data.shape) // factors
    if np.any(shape < 2):
        factors = np.ones(3, int)
        shape = np.array(data.shape)
    cropped = data[: shape[0] * factors[0], : shape[1] * factors[1], : shape[2] * factors[2]]
    blocks = cropped.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
    coarse = blocks.mean(axis=(1, 3, 5), dtype=np.float32)
    scale = np.diag([*factors, 1]).astype(float)
    scale[:3, 3] = (factors - 1) / 2.0
    return coarse, affine @ scale


def head_threshold(data: np.ndarray, affine: np.ndarray) -> float:
    """Default surface level: THRESHOLD_FRACTION of the Otsu level of the smoothed volume."""
    coarse, _ = _coarse(np.asarray(data, dtype=np.float32), affine)
    return THRESHOLD_FRACTION * otsu_level(coarse)


@dataclass
class Surface:
    """The first skin crossing of each camera ray, on a square grid of n x n rays (n <= the requested size)."""

    depth: np.ndarray  # [n, n] position along the viewing direction, world mm (smaller = nearer); NaN: miss
    normal: np.ndarray  # [n, n, 3] outward unit normal in camera axes (x right, y down, z away); 0 on a miss
    spacing: float  # mm between neighbouring rays
    axes: np.ndarray  # [3, 3] rows: world (RAS) directions of image right, image down, viewing direction

    @property
    def hit(self) -> np.ndarray:
        return ~np.isnan(self.depth)


@dataclass
class _Head:
    """View-independent preparation: the smoothed volume around the head and a coarse head mask."""

    smooth: np.ndarray  # smoothed intensities, cropped around the head, source voxel axes
    smooth_affine: np.ndarray  # its voxel -> world affine
    level: float  # surface threshold
    blob: np.ndarray  # [N, 3] world centres of the boundary voxels of the coarse head (largest blob)
    shell: np.ndarray  # [M, 3] the layer of coarse voxels just outside it (a conservative outline)
    block_mm: float  # size of a coarse voxel


def _prepare(data: np.ndarray, affine: np.ndarray, threshold: float | None) -> _Head:
    data = np.nan_to_num(np.asarray(data, dtype=np.float32))
    affine = np.asarray(affine, dtype=np.float64)
    if data.ndim != 3:
        raise RefaceError(f"rendering needs a 3D volume, got shape {data.shape}")
    if affine.shape != (4, 4):
        raise RefaceError(f"affine must be 4x4, got {affine.shape}")
    coarse, coarse_affine = _coarse(data, affine)
    level = THRESHOLD_FRACTION * otsu_level(coarse) if threshold is None else float(threshold)
    blob = _largest_blob(coarse > level)
    if not blob.any():
        raise RefaceError("nothing above the surface threshold: no head to render")
    grown = ndi.binary_dilation(blob, structure=np.ones((3, 3, 3), bool))

    def world(mask: np.ndarray) -> np.ndarray:
        return np.argwhere(mask).astype(np.float64) @ coarse_affine[:3, :3].T + coarse_affine[:3, 3]

    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    sigma_mm = max(SMOOTH_SIGMA_MM, SMOOTH_VOXELS * float(zooms.max()))
    # crop the source to the grown head (+ the filter's reach) before smoothing: faces sit near the edge
    ijk = np.argwhere(grown) * (np.array(data.shape) // np.array(coarse.shape))
    reach = np.ceil(3 * sigma_mm / zooms).astype(int) + 4
    lo = np.maximum(ijk.min(axis=0) - reach, 0)
    hi = np.minimum(ijk.max(axis=0) + reach + 4, data.shape)
    crop = data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    shift = np.eye(4)
    shift[:3, 3] = lo
    smooth = ndi.gaussian_filter(crop, sigma_mm / zooms, mode="nearest")
    # specks and fragments not connected to the head (noise, template artefacts) must not block rays
    detached = (smooth >= level) & ~_largest_blob(smooth >= level)
    smooth[detached] = np.nextafter(np.float32(level), np.float32(-np.inf))
    block = float(np.sqrt((coarse_affine[:3, :3] ** 2).sum(axis=0)).max())
    # only boundary voxels matter for the framing (extremes) and the z-buffer (front-most points)
    boundary = blob & ~ndi.binary_erosion(blob)
    return _Head(smooth, affine @ shift, level, world(boundary), world(grown & ~blob), block)


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _sample(head: _Head, points: np.ndarray, *, cubic: bool = False) -> np.ndarray:
    """Trilinear samples (or the cubic B-spline approximation) of the smoothed volume at world points [..., 3]."""
    to_voxel = np.linalg.inv(head.smooth_affine)
    ijk = points @ to_voxel[:3, :3].T + to_voxel[:3, 3]
    flat = ijk.reshape(-1, 3).T
    if cubic:
        values = ndi.map_coordinates(head.smooth, flat, order=3, prefilter=False, mode="nearest")
    else:
        values = ndi.map_coordinates(head.smooth, flat, order=1, mode="constant", cval=0.0)
    return values.reshape(points.shape[:-1])


def _march(head: _Head, forward: np.ndarray, origins: np.ndarray, z_start: np.ndarray, z_stop: np.ndarray,
           spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First crossing of the surface level along rays origin + z * forward, z in [z_start, z_stop].

    Returns (hit [R], depth z [R] (sub-sample, by linear interpolation), started inside [R]).
    """
    n_rays = len(origins)
    hit = np.zeros(n_rays, bool)
    depth = np.full(n_rays, np.nan)
    started_inside = np.zeros(n_rays, bool)
    n_steps = np.maximum(np.ceil((z_stop - z_start) / spacing).astype(int) + 1, 2)
    # march rays of similar length together: a few long ones must not make every ray long
    groups = np.ceil(np.log2(np.maximum(n_steps, 16) / 16)).astype(int)
    for group in np.unique(groups):
        sel = np.flatnonzero(groups == group)
        ks = np.arange(int(n_steps[sel].max())) * spacing
        z = z_start[sel, None] + ks[None, :]  # [R, K]
        values = _sample(head, origins[sel, None, :] + z[..., None] * forward)  # [R, K]
        inside = (values >= head.level) & (z <= z_stop[sel, None] + spacing)
        found = inside.any(axis=1)
        k1 = np.argmax(inside, axis=1)
        k0 = np.maximum(k1 - 1, 0)
        idx = np.arange(len(sel))
        f0, f1 = values[idx, k0], values[idx, k1]
        frac = np.where((k1 > 0) & (f1 > f0), (head.level - f0) / np.maximum(f1 - f0, 1e-12), 0.0)
        hit[sel] = found
        depth[sel] = np.where(found, z[idx, k0] + np.clip(frac, 0.0, 1.0) * spacing * (k1 > 0), np.nan)
        started_inside[sel] = found & (k1 == 0)
    return hit, depth, started_inside


def _cast(head: _Head, yaw: float, pitch: float, size: int) -> Surface:
    """March each ray through a depth band that the coarse head outline says contains its first hit."""
    axes = camera_axes(yaw, pitch)  # rows: right, down, forward
    proj = head.blob @ axes.T  # [N, 3] (u, v, depth) in mm
    lo, hi = proj.min(axis=0) - MARGIN_MM, proj.max(axis=0) + MARGIN_MM
    side = float(max(hi[0] - lo[0], hi[1] - lo[1]))
    n_pix = min(int(np.ceil(side / MIN_SPACING_MM)), size)
    spacing = side / n_pix
    centre_uv = (lo[:2] + hi[:2]) / 2.0
    start_uv = centre_uv - spacing * (n_pix - 1) / 2.0

    # Z-buffer of the grown coarse outline on a grid of coarse pixels: per ray, the nearest and the farthest
    # front-surface depth in its neighbourhood bound where the first hit can be.
    shell = head.shell @ axes.T
    cell = head.block_mm
    n_cells = int(np.ceil(n_pix * spacing / cell)) + 1
    cu = np.floor((shell[:, 0] - start_uv[0] + spacing / 2) / cell).astype(int)
    cv = np.floor((shell[:, 1] - start_uv[1] + spacing / 2) / cell).astype(int)
    keep = (cu >= 0) & (cu < n_cells) & (cv >= 0) & (cv < n_cells)
    front = np.full((n_cells, n_cells), np.inf)
    np.minimum.at(front, (cv[keep], cu[keep]), shell[keep, 2])
    near_cells = ndi.minimum_filter(front, size=3, mode="constant", cval=np.inf)
    far_cells = ndi.maximum_filter(np.where(np.isinf(front), -np.inf, front), size=3, mode="constant",
                                   cval=-np.inf)
    cell_of = ((np.arange(n_pix) * spacing + spacing / 2) // cell).astype(int)
    near = near_cells[cell_of[:, None], cell_of[None, :]]
    far = far_cells[cell_of[:, None], cell_of[None, :]]
    rows, cols = np.nonzero(np.isfinite(near))
    start = near[rows, cols] - 2 * cell
    stop = far[rows, cols] + 2 * cell

    depth = np.full((n_pix, n_pix), np.nan)
    normals = np.zeros((n_pix, n_pix, 3), np.float32)
    origins = ((start_uv[0] + cols * spacing)[:, None] * axes[0]
               + (start_uv[1] + rows * spacing)[:, None] * axes[1])  # [R, 3] world, at depth 0
    hit, z, started_inside = _march(head, axes[2], origins, start, stop, spacing)
    # The outline is coarse: where a ray began inside the head, start it again at the camera plane; where
    # it found nothing (a thin or dark spot let it through), go on to the back of the head.
    redo = np.flatnonzero(started_inside)
    if redo.size:
        hit[redo], z[redo], _ = _march(head, axes[2], origins[redo], np.full(redo.size, lo[2]),
                                       start[redo] + spacing, spacing)
    redo = np.flatnonzero(~hit)
    if redo.size:
        hit[redo], z[redo], _ = _march(head, axes[2], origins[redo], stop[redo] - spacing,
                                       np.full(redo.size, hi[2]), spacing)
    points = origins[hit] + z[hit, None] * axes[2]
    # [N, 3] in camera axes (right, down, forward)
    grad = np.stack([_sample(head, points + spacing * axis, cubic=True)
                     - _sample(head, points - spacing * axis, cubic=True) for axis in axes], axis=1)
    depth[rows[hit], cols[hit]] = z[hit]
    normals[rows[hit], cols[hit]] = -grad / np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-12)
    return Surface(depth=depth, normal=normals, spacing=spacing, axes=axes)


def head_surface(data: np.ndarray, affine: np.ndarray, *, view: str = "front", size: int = 256,
                 threshold: float | None = None, yaw: float | None = None,
                 pitch: float | None = None) -> Surface:
    """Cast one orthographic ray per pixel through the head and find the skin (see render_head)."""
    if size < 8:
        raise RefaceError(f"size must be at least 8 pixels, got {size}")
    yaw_deg, pitch_deg = _view_angles(view, yaw, pitch)
    return _cast(_prepare(data, affine, threshold), yaw_deg, pitch_deg, size)


def _shade(normals: np.ndarray) -> np.ndarray:
    """[N, 3] unit normals in camera coordinates (x right, y down, z into the scene) -> [N, 3] RGB 0..1."""
    view = np.array([0.0, 0.0, -1.0])
    key = np.array([-0.35, -0.45, -1.0])
    key /= np.linalg.norm(key)
    fill = np.array([0.6, 0.1, -1.0])
    fill /= np.linalg.norm(fill)
    half = (key + view) / np.linalg.norm(key + view)
    diffuse = 0.7 * np.clip(normals @ key, 0, None) + 0.25 * np.clip(normals @ fill, 0, None)
    specular = 0.12 * np.clip(normals @ half, 0, None) ** 24
    rgb = SKIN_RGB * (0.18 + diffuse)[:, None] + specular[:, None]
    return np.clip(rgb, 0.0, 1.0)


def _picture(surface: Surface, size: int) -> np.ndarray:
    """Shade a surface and scale it to [size, size, 3] uint8 RGB."""
    import cv2

    n_pix = surface.depth.shape[0]
    image = np.empty((n_pix, n_pix, 3), np.float32)
    image[:] = np.asarray(BACKGROUND_RGB, np.float32) / 255.0
    rows, cols = np.nonzero(surface.hit)
    image[rows, cols] = _shade(surface.normal[rows, cols])
    image = np.rint(image * 255.0).astype(np.uint8)
    if n_pix != size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    return image


def render_head(data: np.ndarray, affine: np.ndarray, *, view: str = "front", size: int = 256,
                threshold: float | None = None, yaw: float | None = None,
                pitch: float | None = None) -> np.ndarray:
    """Shaded skin surface of a head volume (any orientation, voxel->RAS affine) -> uint8 RGB [size, size, 3].

    `view` names a camera preset (see VIEWS); `yaw`/`pitch` (degrees) override the preset's angles.
    `threshold` is the surface intensity; by default a fraction of the volume's Otsu level.
    """
    surface = head_surface(data, affine, view=view, size=size, threshold=threshold, yaw=yaw, pitch=pitch)
    return _picture(surface, size)


def render_views(data: np.ndarray, affine: np.ndarray, views=("front", "left", "right"), size: int = 256, *,
                 threshold: float | None = None) -> dict[str, np.ndarray]:
    """Several named views of the same head (prepared once: same threshold, smoothing done once)."""
    if size < 8:
        raise RefaceError(f"size must be at least 8 pixels, got {size}")
    angles = {view: _view_angles(view, None, None) for view in views}
    head = _prepare(data, affine, threshold)
    return {view: _picture(_cast(head, yaw, pitch, size), size) for view, (yaw, pitch) in angles.items()}


def contact_sheet(images: list[np.ndarray], labels: list[str], ncols: int) -> np.ndarray:
    """Tile RGB images (padded to a common size) in a grid with a label on each tile -> uint8 RGB."""
    import cv2

    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    ncols = max(1, min(int(ncols), len(images)))
    tiles = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3] for im in images]
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    nrows = -(-len(tiles) // ncols)
    sheet = np.zeros((nrows * th, ncols * tw, 3), np.uint8)
    sheet[:] = BACKGROUND_RGB
    scale = max(0.35, th / 640.0)
    for n, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        r, c = divmod(n, ncols)
        y, x = r * th, c * tw
        sheet[y:y + tile.shape[0], x:x + tile.shape[1]] = np.asarray(tile, np.uint8)
        if label:
            org = (x + 6, y + int(22 * scale / 0.4))
            cv2.putText(sheet, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return sheet


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB (or gray) uint8 image as PNG atomically (temp file in the folder, then rename)."""
    import cv2

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise RefaceError(f"picture must be a .png file: {path}")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"save_png needs uint8 pixels, got {image.dtype}")
    pixels = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise RefaceError(f"could not encode {path} as PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fobj:
            fobj.write(encoded.tobytes())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

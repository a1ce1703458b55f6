"""The generator's per-scan prior: a population-average head fitted to the patient's *brain* only.

A CPU-trained GAN cannot learn skull, scalp and face layering from scratch (the first default model made
bald fog), so every stage is residual over a sharp prior instead: pydeface's mean head (an average of
many people, never one person's face), placed by its brain, not by the patient's head or face:
  1. brain-to-brain affine registration (SimpleITK, Mattes MI on skull-stripped 3 mm images);
  2. a diffeomorphic demons warp of the two brain masks, smooth enough to carry the template's skull
     and scalp along so that they wrap the patient's brain (no template brain sticks out, no gap);
  3. intensities mapped onto the patient's by quantile matching of the two *brains*.
Nothing outside the patient's brain mask is read, so the prior cannot carry the patient's face.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from .. import geometry
from ..errors import RefaceError
from ..geometry import Grid
from ..intensity import quantile_mapper
from ..masks import dice

COARSE_MM = 3.0
DEMONS_MM = 4.0  # demons grid spacing (divides the working shape)
DEMONS_ITERATIONS = 40
DEMONS_SIGMA_VOX = 1.5  # update smoothing (x DEMONS_MM = 6 mm): smooth, folding-free warps
# Below this brain overlap after the affine stage the template is not where the patient's brain is.
MIN_BRAIN_DICE = 0.8
HEAD_LEVEL = 0.1  # head vs air, normalised units (brain p99 = 1)
SAMPLE = 500_000  # voxels enough for quantiles
# Below the template's last full slice (this far above its bottom edge) the head continues as that slice,
# for CHIN_EXTRA_MM past the template's edge: its front recedes CHIN_RECEDE (mm per mm) down to the chin's
# underside CHIN_DEPTH_MM below that slice, then runs back NECK_RECEDE_MM over UNDER_CHIN_MM (the sloped
# floor of the mouth), while the outline narrows to NECK_WIDTH of its width: a chin, a jaw, then a neck.
CHIN_FROM_MM = 22.0
CHIN_EXTRA_MM = 60.0
CHIN_RECEDE = 0.15
CHIN_DEPTH_MM = 32.0
MOUTH_MM = 20.0
UNDER_CHIN_MM = 18.0
NECK_RECEDE_MM = 65.0
NECK_WIDTH = 0.8


@dataclass(frozen=True)
class Atlas:
    """The template head (its own scale), its brain mask, and its voxel -> world affine."""

    head: np.ndarray
    brain: np.ndarray
    affine: np.ndarray


@lru_cache(maxsize=1)
def atlas() -> Atlas:
    """pydeface's mean head, cut to its own head mask, and its shipped deepbet brain mask.

    The cut (a soft edge, sigma 1 voxel, outside the shipped head mask) removes the average's ghost frame in
    front of the face: matched to a subject's contrast and given a skin shell, it became a horseshoe tube
    around the eyes and bumps on the forehead. Derived once per user (diskcache.py), then read back."""
    arrays = _derived_template()
    head, brain = arrays["head"], arrays["brain"].astype(bool)
    for a in (head, brain):
        a.setflags(write=False)
    return Atlas(head=head, brain=brain, affine=arrays["affine"])


@lru_cache(maxsize=1)
def _derived_template() -> dict[str, np.ndarray]:
    """The template head and brain, and its coarse skull-stripped brain for registration, from the disk
    cache when the same sources and code made them before (~2 s to derive)."""
    from pathlib import Path

    from .. import diskcache, registration
    from ..resources import mean_head_path

    here = Path(__file__)
    sources = [mean_head_path(), here, Path(registration.__file__), Path(geometry.__file__),
               here.parents[1] / "resources" / "mean_head_brain.npz",
               here.parents[1] / "resources" / "mean_head_mask.npz", f"coarse {COARSE_MM}"]
    return diskcache.cached_arrays("remodel-template", sources, _derive_template)


def _derive_template() -> dict[str, np.ndarray]:
    from ..io import load_scan
    from ..resources import mean_head_brain, mean_head_mask, mean_head_path

    scan = load_scan(mean_head_path())
    brain, inside = mean_head_brain(), mean_head_mask()
    if brain.shape != scan.shape or inside.shape != scan.shape:
        raise RefaceError(f"the shipped template masks {brain.shape} do not fit the mean head {scan.shape}")
    head = (scan.data * ndi.gaussian_filter(inside.astype(np.float32), 1.0)).astype(np.float32)
    head, pad = _extend_chin(head, scan.affine)
    brain = np.pad(brain, ((0, 0), (0, 0), (pad, 0)))
    shift = np.eye(4)
    shift[2, 3] = -pad  # voxel k of the extended atlas is voxel k - pad of the mean head
    affine = scan.affine @ shift
    coarse, coarse_grid = _brain_only_coarse(head, brain, affine, COARSE_MM)
    return {"head": head, "brain": brain, "affine": affine, "coarse": coarse,
            "coarse_affine": coarse_grid.affine, "coarse_shape": np.array(coarse_grid.shape),
            "centroid": _centroid(brain, affine)}


def _extend_chin(head: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, int]:
    """The mean head with CHIN_FROM_MM of its bottom redone and CHIN_EXTRA_MM added below, each slice its
    last full slice (its outline closed over the mouth) shrunk towards that slice's centre the further down
    it is: a chin and jaw that recede, then a neck, instead of nothing.

    pydeface's mean head ends at the lower lip and fades over its last ~20 mm (fewer of its subjects reach
    there): sampled as it was, every scan with a chin got a cave under the generated mouth."""
    dz = abs(float(affine[2, 2]))
    k0, pad = int(round(CHIN_FROM_MM / dz)), int(round(CHIN_EXTRA_MM / dz))
    source = head[:, :, k0].copy()
    level = float(np.percentile(head, 99)) * 0.1
    if not (source > level).any():
        return head, 0
    skin, closed = _closed_skin(source, level)
    # the mouth above that slice is dim too (lips and teeth vary): close it, fading out over MOUTH_MM
    head = head.copy()
    for k in range(k0 + 1, min(head.shape[2], k0 + int(round(MOUTH_MM / dz)))):
        w = 1.0 - (k - k0) * dz / MOUTH_MM
        head[:, :, k] = w * _closed_skin(head[:, :, k], level)[0] + (1.0 - w) * head[:, :, k]
    ij = np.nonzero(closed)
    centre_lr, back, front = ij[0].mean(), float(ij[1].min()), float(ij[1].max())
    out = np.concatenate([np.zeros(head.shape[:2] + (pad,), np.float32), head], axis=2)
    for k in range(pad + k0 + 1):
        depth_mm = (pad + k0 - k) * dz
        ap, lr = _chin_profile(depth_mm, (front - back) * abs(float(affine[1, 1])))
        # output voxel (i, j) samples the source at (centre + (i - centre) / lr, back + (j - back) / ap):
        # left-right about the middle, front-back about the back of the neck, which stays where it is
        scale = np.array([1.0 / lr, 1.0 / ap])
        out[:, :, k] = ndi.affine_transform(skin, np.diag(scale),
                                            offset=np.array([centre_lr, back]) * (1.0 - scale), order=1,
                                            cval=0.0)
    return out, pad


def _closed_skin(section: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """An axial section with its outline closed over the mouth and a skin all round it, and that outline.

    The front of the average's lower face is dim (lips and teeth vary), and a dim front reads as air to a
    head mask, which then cut a groove down the chin."""
    inside = section > level
    if not inside.any():
        return section, inside
    closed = ndi.binary_fill_holes(_close_disk(inside, 15))
    rim = closed & ~ndi.binary_erosion(closed, iterations=4)
    return np.where(rim, np.maximum(section, float(np.percentile(section[inside], 90))), section), closed


def _chin_profile(depth_mm: float, length_mm: float) -> tuple[float, float]:
    """Front-back and left-right size, as fractions of the source slice's, depth_mm below that slice."""
    under = min(1.0, max(0.0, (depth_mm - CHIN_DEPTH_MM) / UNDER_CHIN_MM))
    under = under * under * (3.0 - 2.0 * under)  # smoothstep: the chin rounds into its underside
    recede = CHIN_RECEDE * min(depth_mm, CHIN_DEPTH_MM) + under * NECK_RECEDE_MM
    narrow = min(1.0, depth_mm / (CHIN_DEPTH_MM + UNDER_CHIN_MM))
    return max(0.2, 1.0 - recede / length_mm), 1.0 - (1.0 - NECK_WIDTH) * narrow


def _close_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing by a Euclidean disk, through two distance transforms (a 31-voxel structuring element
    made the template's chin the slowest part of loading it)."""
    pad = radius + 2
    grown = ndi.distance_transform_edt(~np.pad(mask, pad)) <= radius + 1e-6
    return (ndi.distance_transform_edt(grown) > radius + 1e-6)[pad:-pad, pad:-pad]


def _brain_only_coarse(volume: np.ndarray, brain: np.ndarray, affine: np.ndarray, spacing: float):
    """Skull-stripped, anti-aliased, [0, 1]-scaled coarse RAS image of a brain."""
    from ..registration import _coarse

    masked = np.where(brain, volume, 0.0).astype(np.float32)
    return _coarse(masked, affine, spacing)


def _centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.array(ndi.center_of_mass(mask))
    return affine[:3, :3] @ ijk + affine[:3, 3]


@lru_cache(maxsize=1)
def _atlas_brain_coarse():
    """The template's skull-stripped coarse brain, its grid and its centroid: the same for every scan."""
    arrays = _derived_template()
    image = arrays["coarse"]
    image.setflags(write=False)
    grid = Grid(shape=tuple(int(n) for n in arrays["coarse_shape"]), affine=arrays["coarse_affine"])
    return image, grid, arrays["centroid"]


def register_brains(volume: np.ndarray, brain: np.ndarray, grid: Grid, *, seed: int = 0) -> np.ndarray:
    """4x4 affine mapping working RAS mm -> atlas RAS mm, fitted on the two skull-stripped brains."""
    import SimpleITK as sitk

    from ..registration import _matrix, _single_threaded, _sitk_image, _stage

    fixed_np, fixed_grid = _brain_only_coarse(volume, brain, grid.affine, COARSE_MM)
    moving_np, moving_grid, c_moving = _atlas_brain_coarse()
    fixed, moving = _sitk_image(fixed_np, fixed_grid), _sitk_image(moving_np, moving_grid)
    c_fixed = _centroid(brain, grid.affine)
    with _single_threaded():
        rigid = sitk.Euler3DTransform()
        rigid.SetCenter(tuple(float(v) for v in c_fixed))
        rigid.SetTranslation(tuple(float(v) for v in c_moving - c_fixed))
        rigid, _ = _stage(fixed, moving, rigid, shrink=[2, 1], sigmas=[4.0, 2.0], iterations=60,
                          sampling=0.1, seed=seed)
        affine = sitk.AffineTransform(3)
        affine.SetCenter(rigid.GetCenter())
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        affine, _ = _stage(fixed, moving, affine, shrink=[1], sigmas=[1.5], iterations=80,
                           sampling=0.1, seed=seed)
    return _matrix(affine)


def _demons(fixed: np.ndarray, moving: np.ndarray, *, iterations: int = DEMONS_ITERATIONS,
            sigma: float = DEMONS_SIGMA_VOX) -> np.ndarray:
    """Symmetric-forces demons on two soft masks -> displacement [3, X, Y, Z] in voxels of their grid.

    moving(x + u(x)) ~ fixed(x). The update is Gaussian-smoothed every iteration (diffusion-like
    regularisation), which keeps the field smooth: it carries whole tissue shells, not single voxels.
    """
    fixed = ndi.gaussian_filter(fixed.astype(np.float32), 1.0)
    moving = ndi.gaussian_filter(moving.astype(np.float32), 1.0)
    grid = np.indices(fixed.shape, dtype=np.float32)
    grad_fixed = np.stack(np.gradient(fixed))
    u = np.zeros((3, *fixed.shape), np.float32)
    for _ in range(iterations):
        warped = ndi.map_coordinates(moving, grid + u, order=1, mode="nearest")
        diff = warped - fixed
        g = 0.5 * (grad_fixed + np.stack(np.gradient(warped)))
        denom = (g**2).sum(axis=0) + diff**2
        step = np.where(denom > 1e-6, -diff / np.maximum(denom, 1e-6), 0.0)
        u = u + np.clip(step * g, -1.0, 1.0)  # at most one voxel per iteration
        u = np.stack([ndi.gaussian_filter(c, sigma) for c in u]).astype(np.float32)
    return u


def fitted_prior(volume: np.ndarray, brain: np.ndarray, grid: Grid, *, seed: int = 0) -> np.ndarray:
    """The atlas head on the working grid, wrapped around this brain, on this scan's intensity scale.

    `volume` is read inside `brain` only. float32, same shape as `volume`.
    """
    if volume.shape != grid.shape or brain.shape != grid.shape:
        raise AssertionError("volume, brain and grid must share one shape")
    ref = atlas()
    matrix = register_brains(volume, brain, grid, seed=seed)
    step = int(round(DEMONS_MM / min(grid.spacing)))
    if any(n % step for n in grid.shape):
        raise AssertionError(f"working shape {grid.shape} is not divisible by {step}")
    stride = np.diag([step, step, step, 1.0])
    stride[:3, 3] = (step - 1) / 2.0
    to_atlas = np.linalg.inv(ref.affine) @ matrix @ grid.affine @ stride  # coarse block centre -> atlas voxel
    coarse_shape = tuple(n // step for n in grid.shape)
    atlas_brain = ndi.affine_transform(ref.brain.astype(np.float32), to_atlas[:3, :3], offset=to_atlas[:3, 3],
                                       output_shape=coarse_shape, order=1)
    patient_brain = geometry.downsample(brain.astype(np.float32), step)
    if dice(atlas_brain > 0.5, patient_brain > 0.5) < MIN_BRAIN_DICE:
        raise RefaceError("could not fit the template head to this brain (brain registration failed)")
    u = _demons(patient_brain, atlas_brain) * step  # in working voxels
    head, warped_brain = _sample_atlas(ref, np.linalg.inv(ref.affine) @ matrix @ grid.affine, u, grid.shape)
    both = warped_brain & brain
    if both.sum() < 1000:
        raise RefaceError("could not fit the template head to this brain (no overlap after warping)")
    mapping = quantile_mapper(head[both], volume[both])
    return np.clip(mapping(head), 0.0, None)


def _sample_atlas(ref: Atlas, to_atlas: np.ndarray, u_coarse: np.ndarray, shape: tuple[int, int, int]):
    """Atlas head and brain at working voxel x -> to_atlas @ (x + u(x)), u upsampled from its coarse grid."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        u = F.interpolate(torch.from_numpy(u_coarse)[None], size=shape, mode="trilinear", align_corners=False)[0]
        x = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
        x += u
        del u
        a = torch.from_numpy(to_atlas.astype(np.float32))
        vox = torch.einsum("ij,jxyz->xyzi", a[:3, :3], x) + a[:3, 3]
        del x
        # grid_sample wants (W, H, D) = (k, j, i) order in [-1, 1] (align_corners=True: -1/1 are the end voxels)
        sizes = torch.tensor(ref.head.shape, dtype=torch.float32)
        norm = (2.0 * vox / (sizes - 1) - 1.0).flip(-1)[None]
        del vox
        src = torch.from_numpy(np.stack([ref.head, ref.brain.astype(np.float32)]))[None]
        out = F.grid_sample(src, norm, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    return out[0].numpy(), out[1].numpy() > 0.5


def match_contrast(head: np.ndarray, norm: np.ndarray, preserved: np.ndarray) -> np.ndarray:
    """Quantile-match a head's tissue outside the preserved region to the subject's own.

    Reads only a 99-quantile summary of the subject's non-brain intensities (a global contrast statistic
    with no spatial information; the template baseline uses the same). Applied to the prior before the
    generator (in training and at inference alike, so the GAN learns shape and texture, not a contrast
    offset) and to the generated head at the end: downstream tools normalise by whole-head percentiles,
    so scalp fat brighter or darker than the subject's would shift their output.
    """
    outside = ~preserved
    source = head[outside & (head > HEAD_LEVEL)]
    reference = norm[outside & (norm > HEAD_LEVEL)]
    if source.size < 1000 or reference.size < 1000:
        return head
    mapping = quantile_mapper(
        source[:: max(1, source.size // SAMPLE)], reference[:: max(1, reference.size // SAMPLE)]
    )
    out = np.array(head, np.float32, copy=True)
    out[outside] = mapping(head[outside])
    return out

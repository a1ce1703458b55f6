"""Register the packaged template head (pydeface's mean head, with a face) onto a working-grid volume.

Head to head, not brain to head: a brain-only template started from the centre of mass lands ~2 cm off.
Both heads are resampled to a coarse RAS grid (~3 mm) and registered with SimpleITK: an initial shift that
aligns the tops of the heads (robust to how much neck each field of view holds), then rigid -> similarity
-> affine stages on Mattes mutual information. SimpleITK only ever sees axis-aligned RAS grids, so its
"physical" points are RAS millimetres here (not its usual LPS); the result is a plain 4x4 RAS matrix.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from . import geometry, parallel
from .errors import RefaceError
from .geometry import Grid
from .masks import dice, head_mask, upsample

COARSE_MM = 3.0
# Height of the slab below the vertex whose centroid seeds the registration (mm).
TOP_SLAB_MM = 90.0
# Fraction of coarse voxels the Mattes MI metric samples (fixed per level, seeded).
SAMPLING = 0.1
# Below this head overlap the registration has failed and the face would be missed: stop, do not write.
# Heads are compared as masks.head_mask sees them (filled, Otsu-scaled), so an air offset or a dark scalp
# does not move it: correct registrations measure 0.85-0.99 (50 synthetic heads, ROBEX, pydeface mean, MNI
# crop); the same registrations pitched 30 degrees or shrunk 15 % measure 0.72-0.82, uniform noise far less.
MIN_HEAD_DICE = 0.78


@dataclass(frozen=True)
class TemplateRegistration:
    """A template -> working-grid registration: `matrix` maps working RAS mm to template RAS mm."""

    matrix: np.ndarray  # 4x4, fixed (working) world point -> moving (template) world point
    grid: Grid  # the working grid images are warped onto
    metric: float  # final Mattes MI (more negative is better)
    head_dice: float = 1.0  # overlap of the two heads' coarse masks after registration

    def warp(self, data: np.ndarray, affine: np.ndarray, *, order: int = 1, cval: float = 0.0,
             mode: str = "constant", step: int = 1, box: tuple[slice, ...] | None = None) -> np.ndarray:
        """Resample a template-space image (on `affine`) onto the working grid; order 0 for labels.

        mode="nearest" extends edge values past the template's field of view (for region masks);
        step > 1 samples every step-th working voxel (shape ceil(shape / step)), for cheap coarse masks;
        box (slices of the working grid, step 1 only) computes just that sub-block.
        """
        start = np.zeros(3) if box is None else np.array([b.start or 0 for b in box], float)
        shape = tuple(-(-n // step) for n in self.grid.shape)
        if box is not None:
            if step != 1:
                raise ValueError("box needs step=1")
            shape = tuple(len(range(*b.indices(n))) for b, n in zip(box, self.grid.shape, strict=True))
        stride = np.diag([step, step, step, 1.0])
        stride[:3, 3] = start + (step - 1) / 2.0  # each coarse sample sits at the centre of its step^3 block
        mapping = np.linalg.inv(affine) @ self.matrix @ self.grid.affine @ stride  # working -> template voxel
        out = ndi.affine_transform(
            np.asarray(data, dtype=np.float32), mapping[:3, :3], offset=mapping[:3, 3],
            output_shape=shape, order=order, mode=mode, cval=cval, prefilter=False,
        )
        return out.astype(np.float32, copy=False)


def coarse_grid(shape: tuple[int, ...], affine: np.ndarray, spacing: float = COARSE_MM) -> Grid:
    """An axis-aligned RAS grid of `spacing` mm covering the world bounding box of a voxel grid."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:4]
    low, high = world.min(axis=1), world.max(axis=1)
    n = np.floor((high - low) / spacing).astype(int) + 1
    grid_affine = np.diag([spacing, spacing, spacing, 1.0])
    grid_affine[:3, 3] = low
    return Grid(tuple(int(v) for v in n), grid_affine)


def _coarse(data: np.ndarray, affine: np.ndarray, spacing: float) -> tuple[np.ndarray, Grid]:
    """Anti-aliased resampling onto a coarse RAS grid, intensities scaled to a robust [0, 1]."""
    grid = coarse_grid(data.shape, affine, spacing)
    zooms = geometry.voxel_sizes(affine)
    smooth = parallel.gaussian_filter(np.asarray(data, np.float32), [0.4 * spacing / z for z in zooms])
    out = geometry.resample(smooth, affine, grid, order=1)
    high = float(np.percentile(out[out > 0], 99.5)) if np.any(out > 0) else 1.0
    return np.clip(out / max(high, 1e-6), 0.0, 1.5).astype(np.float32), grid


@contextmanager
def _single_threaded():
    """ITK's threaded metrics sum in a varying order and the optimizer amplifies those last-bit differences
    (~1e-5 mm); one thread makes the same input give the same output. The global setting is restored."""
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


@lru_cache(maxsize=2)
def _template_coarse(spacing: float) -> tuple[np.ndarray, Grid]:
    from .resources import load_volume, mean_head_path

    data, affine = load_volume(str(mean_head_path()))
    out, grid = _coarse(data, affine, spacing)
    out.setflags(write=False)
    return out, grid


@lru_cache(maxsize=2)
def _template_head_mask(spacing: float) -> np.ndarray:
    out = head_mask(_template_coarse(spacing)[0])
    out.setflags(write=False)
    return out


def _sitk_image(data: np.ndarray, grid: Grid):
    """A SimpleITK image of an axis-aligned [X, Y, Z] array; physical coordinates are RAS mm."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    image.SetSpacing(grid.spacing)
    image.SetOrigin(tuple(float(v) for v in grid.affine[:3, 3]))
    return image


def _head(data: np.ndarray) -> np.ndarray:
    """Largest bright component of a [0, 1]-scaled coarse head."""
    fg = ndi.binary_opening(data > 0.12, iterations=1)
    labels, n = ndi.label(fg)
    if n > 1:
        sizes = ndi.sum_labels(fg, labels, index=np.arange(1, n + 1))
        fg = labels == (1 + int(np.argmax(sizes)))
    return fg


def _top_centroid(data: np.ndarray, grid: Grid) -> np.ndarray:
    """World centroid of the head slab from the vertex down TOP_SLAB_MM (insensitive to neck coverage)."""
    head = _head(data)
    if not head.any():
        return grid.affine[:3, :3] @ ((np.array(data.shape) - 1) / 2.0) + grid.affine[:3, 3]
    top = int(np.nonzero(head.any(axis=(0, 1)))[0].max())
    slab = head.copy()
    slab[:, :, : max(0, top - int(round(TOP_SLAB_MM / grid.spacing[2])))] = False
    ijk = np.array(ndi.center_of_mass(slab))
    return grid.affine[:3, :3] @ ijk + grid.affine[:3, 3]


def _matrix(transform) -> np.ndarray:
    """4x4 matrix of a SimpleITK MatrixOffset-style transform (x -> A (x - c) + t + c)."""
    import SimpleITK as sitk

    affine = sitk.AffineTransform(3)
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    affine.SetCenter(transform.GetCenter())
    a = np.array(affine.GetMatrix()).reshape(3, 3)
    c = np.array(affine.GetCenter())
    t = np.array(affine.GetTranslation())
    out = np.eye(4)
    out[:3, :3] = a
    out[:3, 3] = t + c - a @ c
    return out


def _stage(fixed, moving, transform, *, shrink: list[int], sigmas: list[float], iterations: int,
           sampling: float, seed: int):
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, seed + 1)  # seed 0 means "wall clock" to SimpleITK
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-2, numberOfIterations=iterations, relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(transform, inPlace=True)
    reg.Execute(fixed, moving)
    return transform, float(reg.GetMetricValue())


def register_template(volume: np.ndarray, grid: Grid, *, spacing_mm: float = COARSE_MM,
                      seed: int = 0) -> TemplateRegistration:
    """Affinely register the mean template head onto `volume` (a head on `grid`); ~5 s of one core.

    Raises RefaceError when the registered heads barely overlap (the face would be missed).
    """

    if volume.shape != grid.shape:
        raise AssertionError(f"volume {volume.shape} is not on its grid {grid.shape}")
    fixed_np, fixed_grid = _coarse(volume, grid.affine, spacing_mm)
    moving_np, moving_grid = _template_coarse(spacing_mm)
    fixed = _sitk_image(fixed_np, fixed_grid)
    moving = _sitk_image(moving_np, moving_grid)
    fixed_top = _top_centroid(fixed_np, fixed_grid)
    moving_top = _top_centroid(moving_np, moving_grid)
    with _single_threaded():
        matrix, metric = _register(fixed, moving, fixed_top, moving_top, seed)
    mapping = np.linalg.inv(moving_grid.affine) @ matrix @ fixed_grid.affine
    moved = ndi.affine_transform(_template_head_mask(spacing_mm).astype(np.float32), mapping[:3, :3],
                                 offset=mapping[:3, 3], output_shape=fixed_np.shape, order=0) > 0.5
    head_dice = dice(moved, head_mask(fixed_np))
    if head_dice < MIN_HEAD_DICE:
        message = (f"the template head does not fit this scan (head overlap {head_dice:.2f} after registration);"
                   " is it a whole-head T1-weighted image?")
        raise RefaceError(message)
    return TemplateRegistration(matrix=matrix, grid=grid, metric=metric, head_dice=head_dice)


def _register(fixed, moving, fixed_top: np.ndarray, moving_top: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Rigid -> similarity -> affine, each stage starting where the previous one ended."""
    import SimpleITK as sitk

    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(tuple(float(v) for v in fixed_top))
    rigid.SetTranslation(tuple(float(v) for v in moving_top - fixed_top))
    rigid, _ = _stage(fixed, moving, rigid, shrink=[2, 1], sigmas=[4.0, 2.0], iterations=80,
                      sampling=SAMPLING, seed=seed)
    similarity = sitk.Similarity3DTransform()
    similarity.SetCenter(rigid.GetCenter())
    similarity.SetMatrix(rigid.GetMatrix())
    similarity.SetTranslation(rigid.GetTranslation())
    similarity, _ = _stage(fixed, moving, similarity, shrink=[1], sigmas=[1.5], iterations=80,
                           sampling=SAMPLING, seed=seed)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(similarity.GetCenter())
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    affine, metric = _stage(fixed, moving, affine, shrink=[1], sigmas=[1.0], iterations=80,
                            sampling=SAMPLING, seed=seed)
    return _matrix(affine), metric


def template_head(registration: TemplateRegistration) -> np.ndarray:
    """The mean template head (its own intensity scale) warped onto the working grid."""
    from .resources import load_volume, mean_head_path

    data, affine = load_volume(str(mean_head_path()))
    return registration.warp(data, affine, order=1)


@lru_cache(maxsize=1)
def _face_complement() -> tuple[np.ndarray, np.ndarray]:
    from .resources import face_mask_path, load_volume

    keep, affine = load_volume(str(face_mask_path()))
    face = (1.0 - keep).astype(np.float32)
    face.setflags(write=False)
    return face, affine


def template_face(registration: TemplateRegistration, *, step: int = 2) -> np.ndarray:
    """pydeface's face region (in front of and below the brain) on the working grid, as a bool mask.

    Computed every `step` mm and upsampled (the region is a smooth wedge; 2 mm steps cost 8x less).
    """
    # facemask.nii.gz is 1 where pydeface keeps the image, 0 on the face: warp its complement, extended past
    # the template's field of view (a chin below the template's last slice is still face).
    face, affine = _face_complement()
    coarse = registration.warp(face, affine, order=1, mode="nearest", step=step) > 0.5
    return upsample(coarse, step, registration.grid.shape)

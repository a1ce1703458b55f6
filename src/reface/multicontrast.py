"""Carry the T1w's new face into the other anatomical images of a session (T2w, FLAIR, ...).

Steps per contrast: rigid registration to the T1w (SimpleITK, mutual information; any grid or orientation),
an intensity mapping T1w -> contrast learned from the original pair on non-brain tissue (joint histogram,
median per T1w bin), and compositing: voxels the T1w method changed, mapped into the contrast's grid, get the
mapped de-identified T1w value; every other voxel keeps the contrast's raw value. The contrast's preserved
region is the T1w preserved region mapped into its grid and grown by a margin that covers registration and
interpolation error, so it is a superset; it is asserted bit-identical exactly as in deidentify.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import geometry
from .deidentify import Result, assert_preserved
from .errors import RefaceError
from .io import Scan, save_scan_like
from .masks import dice, grow, head_mask

# Below this head-mask overlap after registration we refuse to transfer a face (wrong match).
MIN_HEAD_DICE = 0.85
MIN_COVERED = 0.5  # and at least this fraction of the contrast's head must lie in the T1w's field of view
HIST_BINS = 64
SAMPLE_FRACTION = 0.2  # of the fixed image's voxels, for the mutual-information metric...
MIN_SAMPLES = 200_000  # ...but never fewer voxels than this (all of them in a smaller image)
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (SimpleITK's world)


@dataclass
class ContrastResult:
    """A contrast with the T1w's new face, on its own grid."""

    scan: Scan
    raw: np.ndarray  # output raw values, the contrast's dtype and shape
    preserved: np.ndarray  # bool, contrast grid
    transform: np.ndarray  # 4x4, contrast world (RAS mm) -> T1w world
    head_dice: float  # overlap of the registered T1w head with the contrast's head
    changed: int  # voxels written from the new face


def _to_sitk(scan: Scan, data: np.ndarray | None = None):
    import SimpleITK as sitk

    values = scan.data if data is None else data
    image = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0), dtype=np.float32))
    lps = _FLIP @ scan.affine
    zooms = np.array(scan.zooms)
    image.SetSpacing(tuple(float(z) for z in zooms))
    image.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / zooms).ravel()))
    return image


def register_rigid(fixed: Scan, moving: Scan, *, seed: int = 0) -> np.ndarray:
    """4x4 rigid map from fixed world to moving world (RAS mm), by Mattes mutual information.

    One ITK thread: threaded metric sums vary in order, and on a loaded machine that moved the fit by
    ~0.1 mm from run to run. Small images use every voxel: a 20 % random sample of a 72k-voxel phantom
    gave 0.1-0.9 mm of error by seed here and 1.65 mm on another CPU; all voxels give 0.36 mm on any."""
    import SimpleITK as sitk

    from .registration import _single_threaded

    fixed_img, moving_img = _to_sitk(fixed), _to_sitk(moving)
    initial = sitk.CenteredTransformInitializer(fixed_img, moving_img, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    fraction = min(1.0, max(SAMPLE_FRACTION, MIN_SAMPLES / fixed_img.GetNumberOfPixels()))
    if fraction < 1.0:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(fraction, seed)
    else:
        reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=200,
                                                relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    try:
        with _single_threaded():
            final = reg.Execute(fixed_img, moving_img)
    except RuntimeError as error:
        raise RefaceError(f"cannot register {fixed.source} to {moving.source} ({error})") from error
    final = sitk.CompositeTransform(final).GetNthTransform(0) if final.GetName() == "CompositeTransform" else final
    euler = sitk.Euler3DTransform()
    euler.SetFixedParameters(final.GetFixedParameters())
    euler.SetParameters(final.GetParameters())
    matrix = np.array(euler.GetMatrix()).reshape(3, 3)
    centre = np.array(euler.GetCenter())
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = np.array(euler.GetTranslation()) + centre - matrix @ centre
    return _FLIP @ lps @ _FLIP


def intensity_mapping(source: np.ndarray, target: np.ndarray, bins: int = HIST_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, per-bin median target): a monotonic-free lookup source -> target from paired samples."""
    if source.size < bins:
        raise RefaceError("too few non-brain voxels to learn an intensity mapping")
    lo, hi = np.percentile(source, [0.5, 99.5])
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    index = np.clip(np.digitize(source, edges) - 1, 0, bins - 1)
    order = np.argsort(index, kind="stable")
    sorted_index, sorted_target = index[order], target[order]
    starts = np.searchsorted(sorted_index, np.arange(bins))
    ends = np.searchsorted(sorted_index, np.arange(bins), side="right")
    centres = (edges[:-1] + edges[1:]) / 2
    medians = np.array([np.median(sorted_target[s:e]) if e > s else np.nan for s, e in zip(starts, ends,
                                                                                          strict=True)])
    filled = ~np.isnan(medians)
    return centres[filled], medians[filled]


def transfer_face(t1: Result, contrast: Scan, *, transform: np.ndarray | None = None,
                  margin_mm: float | None = None, seed: int = 0) -> ContrastResult:
    """Apply the de-identified T1w's new face to `contrast` (another image of the same session)."""
    if transform is None:
        transform = register_rigid(contrast, t1.scan, seed=seed)
    # The T1w placed in the contrast's world: resampling with this affine maps contrast voxels into T1w voxels.
    t1_in_contrast = np.linalg.inv(transform) @ t1.scan.affine
    grid = geometry.Grid(contrast.shape, contrast.affine)
    margin = 2.0 * max(contrast.zooms) if margin_mm is None else margin_mm

    # Where the T1w's field of view covers the contrast: only there can heads be compared and faces carried.
    inside_fov = geometry.resample(np.ones(t1.scan.shape, np.float32), t1_in_contrast, grid, order=1) > 0.999
    head_t1 = geometry.resample_mask(t1.regions.head, t1_in_contrast, grid)
    head_c = head_mask(contrast.data)
    covered = float(head_c[inside_fov].sum()) / max(float(head_c.sum()), 1.0)
    head_dice = dice(head_t1[inside_fov], head_c[inside_fov])
    if head_dice < MIN_HEAD_DICE or covered < MIN_COVERED:
        message = (f"{contrast.source}: could not be registered to {t1.scan.source} (head overlap Dice "
                   f"{head_dice:.2f}, {100 * covered:.0f}% of its head inside the T1w field of view; "
                   f"need Dice >= {MIN_HEAD_DICE} and >= {100 * MIN_COVERED:.0f}%)")
        raise RefaceError(message)

    preserved_t1 = geometry.resample_mask(t1.regions.preserved, t1_in_contrast, grid, threshold=0.01)
    preserved = grow(preserved_t1, margin, contrast.zooms)

    original_t1 = geometry.resample(t1.scan.data, t1_in_contrast, grid, order=1)
    learn = inside_fov & ~preserved
    centres, medians = intensity_mapping(original_t1[learn], contrast.data[learn])

    changed_t1 = t1.raw != t1.scan.raw
    changed = geometry.resample(changed_t1.astype(np.float32), t1_in_contrast, grid, order=1) > 0
    write = changed & ~preserved & inside_fov
    raw = contrast.raw.copy()
    if write.any():
        new_t1 = geometry.resample(t1.data, t1_in_contrast, grid, order=1)
        raw[write] = contrast.quantize(np.interp(new_t1[write], centres, medians))
    raw[preserved] = contrast.raw[preserved]
    assert_preserved(contrast, raw, preserved)
    return ContrastResult(scan=contrast, raw=raw, preserved=preserved, transform=transform,
                          head_dice=head_dice, changed=int(write.sum()))


def save_contrast(result: ContrastResult, output, *, force: bool = False):
    """Write atomically; the temp file is re-read and its preserved region re-checked before the rename."""
    scan = result.scan

    def check(img) -> None:
        written = np.asarray(img.dataobj.get_unscaled()).reshape(scan.shape)
        assert_preserved(scan, written, result.preserved)

    return save_scan_like(scan, result.raw, output, force=force, check=check)

"""Brain mask and the regions a method may or may not touch.

The automatic mask is deepbet (a CNN whose weights ship inside its wheel, CPU, ~5 s): on the ROBEX
atlas head it reaches Dice 0.968 against the atlas mask (see README). The preserved region is the brain
mask grown by a margin in millimetres, measured with anisotropic voxel sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from . import parallel
from .errors import RefaceError
from .io import Scan

DEFAULT_MARGIN_MM = 4.0
MIN_BRAIN_ML, MAX_BRAIN_ML = 400.0, 2500.0
# Brain voxels allowed on one face of the field of view before we call the brain cut off (mm^2).
MAX_EDGE_AREA_MM2 = 200.0
INFERIOR_COS = 0.7  # a face whose outward normal is within ~45 degrees of inferior may cut the brainstem
MIN_MAIN_COMPONENT = 0.9  # share of the mask in its largest connected piece
MIN_EXTENT_MM = 60.0  # a brain, even cut by the field of view, spans this much along every axis
MAX_BOX_FILL = 0.8  # a brain fills ~45 % of its bounding box; a block (phantom, slab) fills it all
FACE_NAMES = (("right", "left"), ("posterior", "anterior"), ("inferior", "superior"))  # [axis][positive]


@dataclass
class Regions:
    """Boolean masks on one grid. `preserved` is never modified by any method."""

    brain: np.ndarray
    preserved: np.ndarray
    head: np.ndarray
    warnings: list[str] = field(default_factory=list)  # from the brain check: where the field of view cuts it

    def __post_init__(self) -> None:
        if not (self.brain.shape == self.preserved.shape == self.head.shape):
            raise AssertionError("region masks must share one shape")


@lru_cache(maxsize=1)
def _deepbet(device: str):
    import torch
    from deepbet.bet import BrainExtraction

    extractor = BrainExtraction(no_gpu=device == "cpu")
    if device != "cpu" and not torch.cuda.is_available():
        extractor = BrainExtraction(no_gpu=True)
    return extractor


def auto_brain_mask(scan: Scan, *, device: str = "cpu") -> np.ndarray:
    """deepbet brain mask on the scan's own grid."""
    import nibabel as nib
    import torch

    img = nib.Nifti1Image(scan.data, scan.affine)
    with torch.inference_mode():
        _, mask_img, _ = _deepbet(device).run(img)
    mask = np.asarray(mask_img.dataobj).reshape(scan.shape) > 0
    return mask


def _outward_normal(affine: np.ndarray, axis: int, high: bool) -> np.ndarray:
    """Unit outward normal (world RAS+) of one face of the field of view."""
    normal = np.asarray(affine, float)[:3, axis] * (1.0 if high else -1.0)
    return normal / max(float(np.linalg.norm(normal)), 1e-12)


def face_name(affine: np.ndarray, axis: int, high: bool) -> str:
    """Anatomical name of one face of the field of view, from its outward normal."""
    normal = _outward_normal(affine, axis, high)
    dominant = int(np.argmax(np.abs(normal)))
    return FACE_NAMES[dominant][int(normal[dominant] > 0)]


def is_inferior(affine: np.ndarray, axis: int, high: bool) -> bool:
    """The face the spinal cord leaves through: outward normal within ~45 degrees of world inferior."""
    return float(_outward_normal(affine, axis, high)[2]) < -INFERIOR_COS


def check_brain(brain: np.ndarray, scan: Scan, *, given: bool = False) -> list[str]:
    """Refuse a mask that is not a plausible brain; return warnings for a brain the field of view cuts.

    The brainstem always leaves through the inferior face (MNI-space data, limited axial coverage): that is
    anatomy, not an error. A brain cut at another face (vertex, front, back, a side) is processed as it is,
    since the promise holds for every voxel that exists, with a warning. `given` (a --brain-mask) only
    changes the wording of a refusal."""
    what = "the given brain mask" if given else "the automatic brain mask"
    hint = ("; check the mask" if given else
            "; if this is a head scan, give a brain mask on the input grid with --brain-mask")
    voxel_ml = float(np.prod(scan.zooms)) / 1000.0
    count = int(np.count_nonzero(brain))
    volume_ml = float(count) * voxel_ml
    if volume_ml < MIN_BRAIN_ML:
        raise RefaceError(f"{scan.source}: no plausible brain found ({what} holds {volume_ml:.0f} ml, "
                          f"under {MIN_BRAIN_ML:.0f}){hint}")
    if volume_ml > MAX_BRAIN_ML:
        raise RefaceError(f"{scan.source}: {what} is implausibly large ({volume_ml:.0f} ml, over "
                          f"{MAX_BRAIN_ML:.0f}){hint}")
    box = bounding_box(brain)
    labels, n = ndi.label(brain[box])  # the same pieces as on the whole grid
    if n > 1:
        main = float(np.bincount(labels.ravel(), minlength=n + 1)[1:].max()) / float(count)
        if main < MIN_MAIN_COMPONENT:
            raise RefaceError(f"{scan.source}: {what} is not one brain (its largest piece is {100 * main:.0f} % "
                              f"of it, in {n} pieces){hint}")
    span = np.array([b.stop - b.start for b in box])
    extent_mm = np.asarray(span, float) * np.asarray(scan.zooms, float)
    fill = float(count) / float(np.prod(span))
    if extent_mm.min() < MIN_EXTENT_MM or fill > MAX_BOX_FILL:
        shape = "x".join(f"{e:.0f}" for e in extent_mm)
        raise RefaceError(f"{scan.source}: {what} does not have a brain's shape ({shape} mm, {100 * fill:.0f} % "
                          f"of its bounding box){hint}")
    warnings = []
    for axis in range(3):
        area = float(np.prod(scan.zooms)) / float(scan.zooms[axis])
        for high in (False, True):
            cut = float(np.count_nonzero(brain[(slice(None),) * axis + (-1 if high else 0,)])) * area
            if cut <= MAX_EDGE_AREA_MM2 or is_inferior(scan.affine, axis, high):
                continue
            side = face_name(scan.affine, axis, high)
            warnings.append(f"the field of view cuts the brain at the {side} face ({cut:.0f} mm^2 of brain on "
                            f"the edge): processed what is inside; brain beyond the image is not in the file")
    return warnings


def bounding_box(mask: np.ndarray, pad: tuple[int, ...] | int = 0) -> tuple[slice, ...]:
    """Slices of a non-empty mask's bounding box, widened by `pad` voxels per axis and clipped to the grid."""
    pads = (pad,) * mask.ndim if isinstance(pad, int) else pad
    box = []
    for axis, (p, n) in enumerate(zip(pads, mask.shape, strict=True)):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if len(hits) == 0:
            raise AssertionError("bounding box of an empty mask")
        box.append(slice(max(0, int(hits[0]) - p), min(n, int(hits[-1]) + p + 1)))
    return tuple(box)


def grow(mask: np.ndarray, margin_mm: float, zooms: tuple[float, float, float]) -> np.ndarray:
    """Dilate by a distance in millimetres (exact Euclidean distance, anisotropic voxels).

    The same voxels as `ndi.distance_transform_edt(~mask, sampling=zooms) <= margin_mm`: a voxel joins when
    some mask voxel lies at a voxel offset (d0, d1, d2) whose distance, computed as the transform computes
    it, is within the margin. For each (d1, d2) those offsets are a run of d0, so the dilation is a union of
    shifted copies of the mask dilated along axis 0 alone; all of it on the mask's box padded by the reach."""
    if margin_mm <= 0:
        return mask.copy()
    if not mask.any():
        return np.zeros(mask.shape, bool)
    sampling = [float(z) for z in zooms]
    reach = [int(np.floor(margin_mm / z)) + 1 for z in sampling]
    box = bounding_box(mask, reach)
    sub = mask[box]

    def within(*offset: int) -> bool:  # the float64 steps of distance_transform_edt, in its order
        a, b, c = (d * z for d, z in zip(offset, sampling, strict=True))
        return bool(np.sqrt((a * a + b * b) + c * c) <= margin_mm)

    runs = [sub]  # runs[w]: the mask dilated by w voxels along axis 0
    out = np.zeros(sub.shape, bool)
    for d1 in range(-reach[1], reach[1] + 1):
        for d2 in range(-reach[2], reach[2] + 1):
            if not within(0, d1, d2):
                continue
            width = 0
            while width < reach[0] and within(width + 1, d1, d2):
                width += 1
            while len(runs) <= width:
                w, run = len(runs), runs[-1].copy()
                run[w:] |= sub[:-w]
                run[:-w] |= sub[w:]
                runs.append(run)
            (dst1, src1), (dst2, src2) = _shifted(sub.shape[1], d1), _shifted(sub.shape[2], d2)
            out[:, dst1, dst2] |= runs[width][:, src1, src2]
    grown = np.zeros(mask.shape, bool)
    grown[box] = out
    return grown


def _shifted(n: int, d: int) -> tuple[slice, slice]:
    """Slices (destination, source) along one axis for out[i] = src[i - d]."""
    d = max(-n, min(n, d))
    return (slice(d, n), slice(0, n - d)) if d >= 0 else (slice(0, n + d), slice(-d, n))


def head_mask(volume: np.ndarray) -> np.ndarray:
    """Foreground (head) mask: Otsu-like threshold on a smoothed volume, largest component, holes filled."""
    smooth = parallel.gaussian_filter(np.asarray(volume, np.float32), 1.0)
    positive = smooth[smooth > 0]
    if positive.size == 0:
        return np.zeros(volume.shape, bool)
    threshold = 0.5 * _otsu(positive)
    fg = smooth > threshold
    labels, n = ndi.label(fg)
    if n == 0:
        return np.zeros(volume.shape, bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]  # = ndi.sum_labels, ~40x faster
    label = 1 + int(np.argmax(sizes))
    # Closing (2 iterations) stays within 2 voxels of the piece, and hole filling within the closed mask's box,
    # so both run on the piece's box padded by 3 voxels: background on its faces reaches the grid's edge
    # straight through more background, exactly as on the whole grid.
    box = tuple(slice(max(0, s.start - 3), min(size, s.stop + 3))
                for s, size in zip(ndi.find_objects(labels)[label - 1], volume.shape, strict=True))
    fg = _closing(labels[box] == label, iterations=2)
    out = np.zeros(volume.shape, bool)
    out[box] = _fill_holes_slicewise(fg)
    return out


def _closing(mask: np.ndarray, iterations: int) -> np.ndarray:
    """`ndi.binary_closing(mask, iterations=...)` (6-neighbour cross, border 0) by shifted ORs and ANDs."""
    out = mask
    for _ in range(iterations):
        out = _cross_step(out, grow=True)
    for _ in range(iterations):
        out = _cross_step(out, grow=False)
    return out


def _cross_step(mask: np.ndarray, *, grow: bool) -> np.ndarray:
    """One dilation (grow) or erosion by the 6-neighbour cross; beyond the array counts as background."""
    out = mask.copy()
    for axis in range(mask.ndim):
        head, tail = [slice(None)] * mask.ndim, [slice(None)] * mask.ndim
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        head, tail = tuple(head), tuple(tail)
        if grow:
            out[head] |= mask[tail]
            out[tail] |= mask[head]
        else:
            out[head] &= mask[tail]
            out[tail] &= mask[head]
            out[(slice(None),) * axis + (0,)] = False
            out[(slice(None),) * axis + (-1,)] = False
    return out


def _fill_holes(mask: np.ndarray, axes: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """`ndi.binary_fill_holes` (connectivity 1) along `axes` only, by one labelling of the background.

    axes=(0, 1, 2) is the 3D fill; two axes fill every slice across the third at once, exactly as a loop
    of 2D fills would (background is connected within a slice only, and reaches out through its edges)."""
    structure = np.zeros((3, 3, 3), bool)
    structure[1, 1, 1] = True
    for axis in axes:
        for end in (0, 2):
            structure[tuple(end if a == axis else 1 for a in range(3))] = True
    labels, n = ndi.label(~mask, structure)
    outside = np.zeros(n + 1, bool)
    outside[0] = True  # label 0: the mask itself
    for axis in axes:
        for end in (0, -1):
            outside[labels[(slice(None),) * axis + (end,)]] = True
    return mask | ~outside[labels]


def _fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    filled = _fill_holes(mask)
    for axis in range(3):
        filled = _fill_holes(filled, tuple(a for a in range(3) if a != axis)) | filled
    return filled


def otsu_level(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1D sample (maximises the between-class variance of the histogram)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(np.percentile(values, 99.9))
    if hi <= lo:
        return lo
    hist, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = (w0 * w1 * (mean0 - mean1) ** 2)[:-1]
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a flat optimum: take its middle
    return float((edges[best[0] + 1] + edges[best[-1] + 1]) / 2)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


def make_regions(scan: Scan, *, brain: np.ndarray | None = None, margin_mm: float = DEFAULT_MARGIN_MM,
                 device: str = "cpu", head_step: int = 1) -> Regions:
    """Regions on the scan's own grid; `brain` overrides the automatic mask.

    head_step > 1 finds the head on every head_step-th voxel and spreads it back: ~head_step^3 times
    cheaper, with a boundary good to a coarse voxel. Enough where the head only checks the scan and finds
    its air (shear on the input grid), not where a method draws along it."""
    given = brain is not None
    if brain is None:
        brain = auto_brain_mask(scan, device=device)
    warnings = check_brain(brain, scan, given=given)
    preserved = grow(brain, margin_mm, scan.zooms)
    head = coarse_head_mask(scan.data, head_step) if head_step > 1 else head_mask(scan.data)
    return Regions(brain=brain, preserved=preserved, head=head | preserved, warnings=warnings)


def coarse_head_mask(volume: np.ndarray, step: int) -> np.ndarray:
    """head_mask found on every `step`-th voxel, each coarse voxel spread over its step^3 block."""
    coarse = head_mask(np.ascontiguousarray(volume[::step, ::step, ::step]))
    return np.ascontiguousarray(upsample(coarse, step, volume.shape))


def upsample(mask: np.ndarray, step: int, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour upsampling of a `step`-strided mask back to `shape`."""
    for axis in range(mask.ndim):
        mask = np.repeat(mask, step, axis=axis)
    return mask[tuple(slice(0, n) for n in shape)]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total

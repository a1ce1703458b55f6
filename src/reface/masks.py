"""Brain mask and the regions a method may or may not touch.

The automatic mask is deepbet (a CNN whose weights ship inside its wheel, CPU, ~5 s): on the ROBEX
atlas head it reaches Dice 0.968 against the atlas mask (see README). The preserved region is the brain
mask grown by a margin in millimetres, measured with anisotropic voxel sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from .errors import RefaceError
from .io import Scan

DEFAULT_MARGIN_MM = 4.0
MIN_BRAIN_ML, MAX_BRAIN_ML = 400.0, 2500.0
# Brain voxels allowed on one face of the field of view before we call the brain cut off (mm^2).
MAX_EDGE_AREA_MM2 = 200.0


@dataclass
class Regions:
    """Boolean masks on one grid. `preserved` is never modified by any method."""

    brain: np.ndarray
    preserved: np.ndarray
    head: np.ndarray

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


def check_brain(brain: np.ndarray, scan: Scan) -> None:
    """Stop before writing an unsafe output when the mask is not a plausible, whole brain."""
    voxel_ml = float(np.prod(scan.zooms)) / 1000.0
    volume_ml = float(brain.sum()) * voxel_ml
    if volume_ml < MIN_BRAIN_ML:
        raise RefaceError(f"{scan.source}: no plausible brain found (mask volume {volume_ml:.0f} ml)")
    if volume_ml > MAX_BRAIN_ML:
        raise RefaceError(f"{scan.source}: brain mask is implausibly large ({volume_ml:.0f} ml)")
    zx, zy, zz = scan.zooms
    faces = {
        "i": (brain[0].sum(), brain[-1].sum(), zy * zz),
        "j": (brain[:, 0].sum(), brain[:, -1].sum(), zx * zz),
        "k": (brain[:, :, 0].sum(), brain[:, :, -1].sum(), zx * zy),
    }
    for axis, (low, high, area) in faces.items():
        cut = max(low, high) * area
        if cut > MAX_EDGE_AREA_MM2:
            message = (f"{scan.source}: the field of view cuts the brain ({cut:.0f} mm^2 of brain on the "
                       f"{axis}-axis edge); refusing to write an unsafe output")
            raise RefaceError(message)


def grow(mask: np.ndarray, margin_mm: float, zooms: tuple[float, float, float]) -> np.ndarray:
    """Dilate by a distance in millimetres (exact Euclidean distance, anisotropic voxels)."""
    if margin_mm <= 0:
        return mask.copy()
    dist = ndi.distance_transform_edt(~mask, sampling=zooms)
    return dist <= margin_mm


def head_mask(volume: np.ndarray) -> np.ndarray:
    """Foreground (head) mask: Otsu-like threshold on a smoothed volume, largest component, holes filled."""
    smooth = ndi.gaussian_filter(volume.astype(np.float32), 1.0)
    positive = smooth[smooth > 0]
    if positive.size == 0:
        return np.zeros(volume.shape, bool)
    threshold = 0.5 * _otsu(positive)
    fg = smooth > threshold
    labels, n = ndi.label(fg)
    if n > 1:
        sizes = ndi.sum_labels(fg, labels, index=np.arange(1, n + 1))
        fg = labels == (1 + int(np.argmax(sizes)))
    fg = ndi.binary_closing(fg, iterations=2)
    return _fill_holes_slicewise(fg)


def _fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    filled = ndi.binary_fill_holes(mask)
    for axis in range(3):
        filled = np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(filled, axis, 0)], axis=axis) | filled
    return filled


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
                 device: str = "cpu") -> Regions:
    """Regions on the scan's own grid; `brain` overrides the automatic mask."""
    if brain is None:
        brain = auto_brain_mask(scan, device=device)
    check_brain(brain, scan)
    preserved = grow(brain, margin_mm, scan.zooms)
    head = head_mask(scan.data) | preserved
    return Regions(brain=brain, preserved=preserved, head=head)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total

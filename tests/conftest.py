"""Shared fixtures: phantom heads written to disk in several orientations and voxel sizes."""

from __future__ import annotations

import os
import shutil
import tempfile

import nibabel as nib
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# the derived remodel template (reface/diskcache.py) goes to a folder of this session's, not the user's home;
# subprocesses (the CLI tests) inherit it
_CACHE = tempfile.mkdtemp(prefix="reface-test-cache-")
os.environ["REFACE_CACHE_DIR"] = _CACHE


@pytest.fixture(scope="session", autouse=True)
def _remove_disk_cache():
    yield
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture
def phantom_file(tmp_path):
    """Factory: write a phantom head NIfTI (+ its brain mask) and return both paths."""
    from reface.io import atomic_write, scrubbed_header  # noqa: F401  (import check)
    from reface.phantom import phantom_image

    def make(name: str = "head", **kwargs):
        img, brain = phantom_image(**kwargs)
        path = tmp_path / f"{name}.nii.gz"
        mask_path = tmp_path / f"{name}_mask.nii.gz"
        nib.save(img, path)
        nib.save(nib.Nifti1Image(brain.astype("uint8"), img.affine), mask_path)
        return path, mask_path, brain

    return make

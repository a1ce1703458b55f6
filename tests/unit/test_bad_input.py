"""Bad input through `reface run`: exit code 2, one line on stderr, nothing written. An image that is not a
head, a slab two voxels thick, a singular affine, and files cut short (plain and gzipped NIfTI)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from reface.cli import main
from reface.headcheck import tissue_depth_mm
from reface.phantom import phantom_image


def _cube(tmp_path):
    img, _ = phantom_image()
    data = np.zeros(img.shape, np.int16)
    data[20:76, 20:92, 20:84] = 1000  # a uniform block, about 2 litres: the size of a head, not a head
    data += np.random.default_rng(0).integers(0, 20, data.shape).astype(np.int16)
    path = tmp_path / "cube.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), path)
    return path


def _slab(tmp_path):
    img, _ = phantom_image()
    path = tmp_path / "slab.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, 50:52], img.affine), path)
    return path


def _singular(tmp_path):
    img, _ = phantom_image(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))
    affine = img.affine.copy()
    affine[:3, 2] = affine[:3, 1]  # two axes pointing the same way
    path = tmp_path / "singular.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), path)
    return path


def _truncated(tmp_path, name):
    img, _ = phantom_image(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))
    full = tmp_path / f"full_{name}"
    nib.save(img, full)
    blob = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(blob[: len(blob) * 2 // 3])
    full.unlink()
    return path


def _header_only(tmp_path):
    img, _ = phantom_image(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))
    full = tmp_path / "full.nii"
    nib.save(img, full)
    path = tmp_path / "header_only.nii"
    path.write_bytes(full.read_bytes()[:352])
    full.unlink()
    return path


CASES = {
    "phantom cube": (_cube, "does not look like a head"),
    "two-voxel slab": (_slab, "too small for a head scan"),
    "singular affine": (_singular, "singular"),
    "truncated .nii": (lambda p: _truncated(p, "cut.nii"), "cannot read"),
    "truncated .nii.gz": (lambda p: _truncated(p, "cut.nii.gz"), "cannot read"),
    "header without data": (_header_only, "cannot read"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    make, message = CASES[case]
    src = make(tmp_path)
    before = set(tmp_path.iterdir())
    out = tmp_path / "out" / "deid.nii.gz"
    code = main(["run", str(src), "-o", str(out), "--method", "shear", "--qa", str(tmp_path / "qa.png"),
                 "--save-mask", str(tmp_path / "kept.nii.gz"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("reface run: error: ") and message in err, err
    assert set(tmp_path.iterdir()) == before and not out.exists()


def test_tissue_depth_tells_a_head_from_a_block():
    img, brain = phantom_image()
    head = np.asarray(img.dataobj) > 100
    assert tissue_depth_mm(brain, head | brain, img.header.get_zooms()) > 10
    block = np.zeros((60, 60, 60), bool)
    block[10:50, 10:50, 10:50] = True
    inside = np.zeros_like(block)
    inside[12:48, 12:48, 12:48] = True
    assert tissue_depth_mm(inside, block, (1.0, 1.0, 1.0)) < 4
    # a head cut by the field of view is not shallow: beyond the image is not air
    assert tissue_depth_mm(brain[:, :, 20:], (head | brain)[:, :, 20:], img.header.get_zooms()) > 10

"""The ROBEX head written as MGZ by nibabel goes through every method into an .mgz: brain bit-exact, the same
FreeSurfer geometry read back by nibabel, and the face changed. shear by default, the rest `slow`."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from reface import realheads
from reface.deidentify import deidentify_file

FAST = {"shear"}
METHODS = ("none", "deface", "shear", "blur", "template", "remodel")


@pytest.fixture(scope="module")
def robex_mgz(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robex_mgz")
    head = realheads.robex()
    data = np.asarray(head.image.dataobj)
    src = folder / "T1.mgz"
    nib.save(nib.MGHImage(data.astype(np.float32), head.image.affine), src)
    mask = folder / "brainmask.mgz"  # FreeSurfer users hold their masks as MGZ too
    nib.save(nib.MGHImage(head.brain.astype(np.uint8), head.image.affine), mask)
    return src, mask, head.brain


@pytest.mark.parametrize("method", [pytest.param(m, marks=[] if m in FAST else [pytest.mark.slow])
                                    for m in METHODS])
def test_robex_mgz_through_every_method(robex_mgz, tmp_path, method):
    src, mask, _ = robex_mgz
    out = tmp_path / f"T1_{method}.mgz"
    qa_mask = tmp_path / "preserved.mgz"
    deidentify_file(src, out, method, brain_mask=mask, save_mask=qa_mask)
    orig, back = nib.load(src), nib.load(out)
    assert isinstance(back, nib.MGHImage)
    assert back.shape == orig.shape and back.get_data_dtype() == orig.get_data_dtype()
    for field in ("dims", "delta", "Mdc", "Pxyz_c"):
        np.testing.assert_array_equal(back.header[field], orig.header[field])
    a, b = np.asarray(orig.dataobj), np.asarray(back.dataobj)
    preserved = np.asarray(nib.load(qa_mask).dataobj) > 0
    assert preserved.sum() > 0.9 * robex_mgz[2].sum()
    np.testing.assert_array_equal(b[preserved], a[preserved])
    changed = float((a != b).mean())
    assert (changed == 0.0) if method == "none" else (changed > 0.01), changed

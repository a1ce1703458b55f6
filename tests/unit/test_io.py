"""I/O: grids, dtypes and scaling survive; header text is scrubbed; writes are atomic and guarded."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from reface.errors import RefaceError
from reface.io import load_mask, load_scan, save_mask_like, save_scan_like
from reface.phantom import phantom_image


def _write(tmp_path, img, name="in.nii.gz"):
    path = tmp_path / name
    nib.save(img, path)
    return path


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64])
def test_roundtrip_keeps_grid_dtype_and_values(tmp_path, dtype):
    img, _ = phantom_image(shape=(40, 48, 44), zooms=(4.0, 4.0, 4.0), axcodes="LPI", dtype=dtype)
    if dtype is np.uint8:
        img = nib.Nifti1Image(np.clip(np.asarray(img.dataobj), 0, 255).astype(np.uint8), img.affine, img.header)
    path = _write(tmp_path, img)
    scan = load_scan(path)
    out = save_scan_like(scan, scan.raw.copy(), tmp_path / "out.nii.gz")
    back = nib.load(out)
    assert back.shape == img.shape
    assert back.get_data_dtype() == img.get_data_dtype()
    np.testing.assert_array_equal(back.affine, img.affine)
    assert back.header.get_qform(coded=True)[1] == 1 and back.header.get_sform(coded=True)[1] == 2
    np.testing.assert_array_equal(np.asarray(back.dataobj.get_unscaled()), np.asarray(img.dataobj))


def test_scaled_integer_input_keeps_raw_values_and_scaling(tmp_path):
    """int16 with scl_slope/inter: raw values written back untouched, scaling fields unchanged."""
    img, _ = phantom_image(shape=(40, 48, 44), zooms=(4.0, 4.0, 4.0))
    raw = np.asarray(img.dataobj).astype(np.int16)
    scan = load_scan(_write(tmp_path, img))
    scan.slope, scan.inter = 0.37, 12.5
    out = save_scan_like(scan, raw, tmp_path / "scaled.nii.gz")
    back = nib.load(out)
    assert (back.dataobj.slope, back.dataobj.inter) == pytest.approx((0.37, 12.5))
    np.testing.assert_array_equal(np.asarray(back.dataobj.get_unscaled()), raw)
    rescan = load_scan(out)
    np.testing.assert_allclose(rescan.data, raw * 0.37 + 12.5, rtol=1e-6)
    # quantize inverts the scaling exactly for values that came from raw
    np.testing.assert_array_equal(rescan.quantize(rescan.data), raw)


def test_header_free_text_and_extensions_are_scrubbed(tmp_path):
    img, _ = phantom_image(shape=(40, 48, 44), zooms=(4.0, 4.0, 4.0))
    img.header["aux_file"] = b"MRN 12345"
    img.header["db_name"] = b"Hospital X"
    img.header["intent_name"] = b"Doe"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"Patient: Jane Doe"))
    scan = load_scan(_write(tmp_path, img))
    back = nib.load(save_scan_like(scan, scan.raw, tmp_path / "out.nii"))
    for field in ("descrip", "aux_file", "db_name", "intent_name"):
        assert back.header[field].item() == b"", field
    assert len(back.header.extensions) == 0
    assert b"Doe" not in (tmp_path / "out.nii").read_bytes()


def test_no_overwrite_without_force_and_no_partial_file(tmp_path):
    img, _ = phantom_image(shape=(40, 48, 44), zooms=(4.0, 4.0, 4.0))
    scan = load_scan(_write(tmp_path, img))
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"keep me")
    with pytest.raises(RefaceError, match="exists"):
        save_scan_like(scan, scan.raw, target)
    assert target.read_bytes() == b"keep me"

    def failing_check(_img):
        raise AssertionError("simulated failure after writing")

    with pytest.raises(AssertionError):
        save_scan_like(scan, scan.raw, target, force=True, check=failing_check)
    assert target.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz", "out.nii.gz"]  # no temp left


def test_single_volume_4d_is_accepted_and_written_back_4d(tmp_path):
    img, _ = phantom_image(shape=(40, 48, 44), zooms=(4.0, 4.0, 4.0))
    img4 = nib.Nifti1Image(np.asarray(img.dataobj)[..., None], img.affine)
    scan = load_scan(_write(tmp_path, img4))
    assert scan.shape == (40, 48, 44)
    back = nib.load(save_scan_like(scan, scan.raw, tmp_path / "out.nii.gz"))
    assert back.shape == (40, 48, 44, 1)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: nib.Nifti1Image(np.ones((40, 40), np.float32), np.eye(4)), "2D"),
        (lambda: nib.Nifti1Image(np.random.rand(20, 20, 20, 3).astype(np.float32), np.eye(4)), "--volume N"),
        (lambda: nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4)), "empty"),
        (lambda: nib.Nifti1Image(np.where(np.arange(8000).reshape(20, 20, 20) == 5, np.nan, 1.0)
                                 .astype(np.float32), np.eye(4)), "NaN"),
        (lambda: nib.Nifti1Image(np.full((20, 20, 20), np.inf, np.float32), np.eye(4)), "NaN/Inf"),
    ],
)
def test_bad_images_are_refused(tmp_path, make, message):
    path = _write(tmp_path, make())
    with pytest.raises(RefaceError, match=message):
        load_scan(path)


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(RefaceError, match="not found"):
        load_scan(tmp_path / "nope.nii.gz")
    text = tmp_path / "notes.nii"
    text.write_text("this is not an image")
    with pytest.raises(RefaceError, match="cannot read"):
        load_scan(text)
    img, _ = phantom_image(shape=(40, 48, 44), zooms=(4.0, 4.0, 4.0))
    good = _write(tmp_path, img)
    corrupt = tmp_path / "corrupt.nii.gz"
    blob = good.read_bytes()
    corrupt.write_bytes(blob[: len(blob) // 2])  # truncated gzip stream
    with pytest.raises(RefaceError, match="cannot read"):
        load_scan(corrupt)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"\x00" * 100))
    with pytest.raises(RefaceError):
        load_scan(garbage)


def test_mask_roundtrip_and_grid_check(tmp_path):
    img, brain = phantom_image(shape=(40, 48, 44), zooms=(4.0, 4.0, 4.0), axcodes="LAS")
    scan = load_scan(_write(tmp_path, img))
    path = save_mask_like(scan, brain, tmp_path / "mask.nii.gz")
    assert nib.load(path).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(load_mask(path, scan), brain)
    other = nib.Nifti1Image(brain[:-1].astype(np.uint8), img.affine)
    nib.save(other, tmp_path / "wrong.nii.gz")
    with pytest.raises(RefaceError, match="not on the input's grid"):
        load_mask(tmp_path / "wrong.nii.gz", scan)


def test_outputs_get_normal_permissions(tmp_path):
    img, _ = phantom_image(shape=(40, 48, 44), zooms=(4.0, 4.0, 4.0))
    scan = load_scan(_write(tmp_path, img))
    out = save_scan_like(scan, scan.raw, tmp_path / "out.nii.gz")
    assert out.stat().st_mode & 0o044  # readable by group/others under the usual umask, unlike mkstemp's 0600

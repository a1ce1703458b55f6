"""Formats in and out: MGZ keeps FreeSurfer's geometry, MINC/PAR/ANALYZE are read, read-only names become
NIfTI, identifying header text never reaches an output, --volume picks one volume, and equal runs give
equal bytes (no temp name or time in the gzip header)."""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from reface.cli import main
from reface.deidentify import deidentify_file
from reface.errors import RefaceError
from reface.io import load_scan, save_scan_like
from reface.phantom import phantom_image

CORPUS = Path(nib.__file__).parent / "tests" / "data"
SMALL = dict(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))


def _phantom(tmp_path, **kwargs):
    img, brain = phantom_image(**{**SMALL, **kwargs})
    return img, brain


def _mask(tmp_path, img, brain, name="mask.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), img.affine), path)
    return path


def _run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_mgz_in_mgz_out_keeps_freesurfer_geometry_and_the_brain(tmp_path, dtype):
    img, brain = _phantom(tmp_path)
    data = np.asarray(img.dataobj)
    if dtype is np.uint8:
        data = np.clip(data / 4, 0, 255)
    mgz = nib.MGHImage(data.astype(dtype), img.affine)
    mgz.header["tr"], mgz.header["te"] = 2300.0, 2.98
    src = tmp_path / "T1.mgz"
    nib.save(mgz, src)
    out = tmp_path / "T1_deid.mgz"
    deidentify_file(src, out, "deface", brain_mask=_mask(tmp_path, img, brain))
    back, orig = nib.load(out), nib.load(src)
    assert isinstance(back, nib.MGHImage)
    assert back.shape == orig.shape and back.get_data_dtype() == orig.get_data_dtype()
    for field in ("dims", "delta", "Mdc", "Pxyz_c", "tr", "te"):
        np.testing.assert_array_equal(back.header[field], orig.header[field])
    np.testing.assert_array_equal(back.affine, orig.affine)
    a, b = np.asarray(orig.dataobj), np.asarray(back.dataobj)
    np.testing.assert_array_equal(b[brain], a[brain])
    assert (a != b).any()  # the face changed


def test_nifti_to_mgz_and_mgz_to_nifti(tmp_path):
    img, brain = _phantom(tmp_path)
    src = tmp_path / "in.nii.gz"
    nib.save(img, src)
    mask = _mask(tmp_path, img, brain)
    deidentify_file(src, tmp_path / "a.mgz", "shear", brain_mask=mask)
    a = nib.load(tmp_path / "a.mgz")
    np.testing.assert_allclose(a.affine, img.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(a.dataobj)[brain], np.asarray(img.dataobj)[brain])
    deidentify_file(tmp_path / "a.mgz", tmp_path / "b.nii.gz", "none", brain_mask=mask)
    b = nib.load(tmp_path / "b.nii.gz")
    assert b.get_data_dtype() == np.dtype(np.int16)  # native order, same values as the big-endian MGZ
    np.testing.assert_array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj))


def test_big_endian_nifti_keeps_its_values(tmp_path):
    img, brain = _phantom(tmp_path)
    big = nib.Nifti1Image(np.asarray(img.dataobj).astype(">i2"), img.affine)
    big.header["descrip"] = b"Jane Doe"
    src = tmp_path / "big.nii"
    nib.save(big, src)
    deidentify_file(src, tmp_path / "out.nii", "deface", brain_mask=_mask(tmp_path, img, brain))
    back = nib.load(tmp_path / "out.nii")
    np.testing.assert_array_equal(np.asarray(back.dataobj)[brain], np.asarray(big.dataobj)[brain])


def test_mgz_footer_tags_are_not_carried(tmp_path):
    """FreeSurfer appends tags after the data (command lines with subject names, talairach paths)."""
    img, brain = _phantom(tmp_path)
    raw = nib.MGHImage(np.asarray(img.dataobj).astype(np.int16), img.affine).to_bytes()
    tag = b"\x00\x00\x00\x03" + b"cmdline mri_convert /data/subjects/JaneDoe_1970/orig.mgz"
    src = tmp_path / "tagged.mgz"
    src.write_bytes(gzip.compress(raw + tag))
    assert b"JaneDoe" in gzip.decompress(src.read_bytes())
    out = tmp_path / "out.mgz"
    deidentify_file(src, out, "deface", brain_mask=_mask(tmp_path, img, brain))
    assert b"JaneDoe" not in gzip.decompress(out.read_bytes())


def test_analyze_pair_is_read_and_a_missing_partner_is_named(tmp_path, capsys):
    img, brain = _phantom(tmp_path)
    ana = nib.AnalyzeImage(np.asarray(img.dataobj), img.affine)
    nib.save(ana, tmp_path / "head.img")
    scan = load_scan(tmp_path / "head.hdr")
    np.testing.assert_array_equal(scan.raw, np.asarray(img.dataobj))
    (tmp_path / "head.img").unlink()
    code, err = _run(["run", str(tmp_path / "head.hdr"), "-o", str(tmp_path / "o.nii.gz"), "--quiet"], capsys)
    assert code == 2 and "missing the .img file" in err and "head.img" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.nii.gz").exists()


def test_parrec_is_read_scrubbed_and_a_missing_rec_is_named(tmp_path, capsys):
    for suffix in (".PAR", ".REC"):
        shutil.copy(CORPUS / f"phantom_EPI_asc_CLEAR_2_1{suffix}", tmp_path / f"scan{suffix}")
    scan = load_scan(tmp_path / "scan.PAR", volume=1)
    assert scan.shape == (64, 64, 9) and scan.raw.dtype == np.float32
    par = nib.load(CORPUS / "phantom_EPI_asc_CLEAR_2_1.PAR")
    np.testing.assert_allclose(scan.raw, par.get_fdata(dtype=np.float32)[..., 1])
    out = save_scan_like(scan, scan.raw.copy(), tmp_path / "out.nii.gz")
    blob = gzip.decompress(out.read_bytes())
    for text in (b"phantom", b"EPI_asc", b"2014.02.14"):  # patient name, protocol, examination date
        assert text not in blob
    (tmp_path / "scan.REC").unlink()
    code, err = _run(["run", str(tmp_path / "scan.PAR"), "-o", str(tmp_path / "o.nii.gz"), "--quiet"], capsys)
    assert code == 2 and "missing the .REC file" in err and len(err.strip().splitlines()) == 1


def test_minc_reads_and_a_missing_h5py_is_one_line(tmp_path, monkeypatch, capsys):
    scan = load_scan(CORPUS / "minc1_1_scale.mnc")
    assert scan.raw.ndim == 3 and np.isfinite(scan.raw).all()
    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` now fails as if it were not installed
    code, err = _run(["run", str(CORPUS / "small.mnc"), "-o", str(tmp_path / "o.nii.gz"), "--quiet"], capsys)
    assert code == 2 and "h5py" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_corrupt_parrec_and_single_dicom_file_are_one_line(tmp_path, capsys):
    for suffix in (".PAR", ".REC"):
        shutil.copy(CORPUS / f"phantom_truncated{suffix}", tmp_path / f"t{suffix}")
    code, err = _run(["run", str(tmp_path / "t.PAR"), "-o", str(tmp_path / "o.nii.gz"), "--quiet"], capsys)
    assert code == 2 and "PARRECError" in err and len(err.strip().splitlines()) == 1
    code, err = _run(["run", str(CORPUS / "0.dcm"), "-o", str(tmp_path / "o.nii.gz"), "--quiet"], capsys)
    assert code == 2 and "single DICOM file" in err


def test_read_only_output_name_becomes_nifti_with_a_warning(tmp_path, capsys):
    img, brain = _phantom(tmp_path)
    src = tmp_path / "in.nii.gz"
    nib.save(img, src)
    code, err = _run(["run", str(src), "-o", str(tmp_path / "out.mnc"), "--method", "deface",
                      "--brain-mask", str(_mask(tmp_path, img, brain)), "--quiet"], capsys)
    assert code == 0 and "MINC" in err and "out.nii.gz" in err
    assert (tmp_path / "out.nii.gz").exists() and not (tmp_path / "out.mnc").exists()
    code, err = _run(["run", str(src), "-o", str(tmp_path / "out.txt"), "--quiet"], capsys)
    assert code == 2 and "must end in" in err


def test_volume_picks_one_volume(tmp_path, capsys):
    img, brain = _phantom(tmp_path)
    vol = np.asarray(img.dataobj)
    four = np.stack([vol, vol + 7, vol + 11], axis=-1).astype(np.int16)
    src = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(four, img.affine), src)
    mask = _mask(tmp_path, img, brain)
    code, err = _run(["run", str(src), "-o", str(tmp_path / "v.nii.gz"), "--quiet"], capsys)
    assert code == 2 and "--volume N" in err
    code, err = _run(["run", str(src), "-o", str(tmp_path / "v.nii.gz"), "--volume", "1", "--method", "deface",
                      "--brain-mask", str(mask), "--quiet"], capsys)
    assert code == 0, err
    out = nib.load(tmp_path / "v.nii.gz")
    assert out.shape == vol.shape
    np.testing.assert_array_equal(np.asarray(out.dataobj)[brain], four[..., 1][brain])
    code, err = _run(["run", str(src), "-o", str(tmp_path / "w.nii.gz"), "--volume", "3", "--quiet"], capsys)
    assert code == 2 and "out of range" in err and not (tmp_path / "w.nii.gz").exists()
    with pytest.raises(RefaceError, match="--volume 2"):
        load_scan(tmp_path / "v.nii.gz", volume=2)


@pytest.mark.parametrize("name", ["out.nii.gz", "out.mgz"])
def test_equal_runs_give_equal_bytes_and_an_empty_gzip_header(tmp_path, name):
    img, brain = _phantom(tmp_path)
    src = tmp_path / "in.nii.gz"
    nib.save(img, src)
    mask = _mask(tmp_path, img, brain)
    blobs = []
    for run in ("a", "b"):
        out = tmp_path / run / name
        deidentify_file(src, out, "blur", brain_mask=mask, seed=3)
        blobs.append(out.read_bytes())
    assert blobs[0] == blobs[1]
    header = blobs[0]
    assert header[:2] == b"\x1f\x8b"
    flags, mtime = header[3], int.from_bytes(header[4:8], "little")
    assert mtime == 0 and not flags & 0x08  # no FNAME field, no time of writing

"""DICOM series in: files made here from a known volume must come back with the same values and geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from reface.errors import RefaceError
from reface.io import load_scan


def write_series(folder, volume: np.ndarray, spacing=(1.2, 1.1, 2.0), origin_lps=(-30.0, -40.0, -20.0)):
    """volume[i, j, k]: i along a row (+L), j down the columns (+P), k slice (+S). Returns the RAS affine."""
    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    dc, dr, dz = spacing
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "Doe^Jane", "12345"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 1, k + 1, 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin_lps[0], origin_lps[1], origin_lps[2] + k * dz]
        ds.PixelSpacing = [dr, dc]
        ds.SliceThickness = dz
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T.astype(np.int16)).tobytes()
        pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
    lps = np.array([[dc, 0, 0, origin_lps[0]], [0, dr, 0, origin_lps[1]], [0, 0, dz, origin_lps[2]], [0, 0, 0, 1]])
    return np.diag([-1, -1, 1, 1]) @ lps


def test_dicom_series_matches_source_volume(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 1000, size=(24, 20, 12)).astype(np.int16)
    volume[5:15, 4:9, 3:7] = 2000  # an asymmetric block, so any flip would show
    affine = write_series(tmp_path / "dicom", volume)
    scan = load_scan(tmp_path / "dicom")
    expected = nib.as_closest_canonical(nib.Nifti1Image(volume.astype(np.float32), affine))
    got = nib.as_closest_canonical(nib.Nifti1Image(scan.data, scan.affine))
    np.testing.assert_allclose(got.affine, expected.affine, atol=1e-4)
    np.testing.assert_array_equal(got.get_fdata(), expected.get_fdata())


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(RefaceError, match="DICOM"):
        load_scan(tmp_path / "empty")

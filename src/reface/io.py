"""Scan input/output: any nibabel volume or a DICOM folder in, NIfTI or MGZ out on the input's own grid.

Per-format reading, scrubbing and writing live in formats.py; this module is the entry point.

The output keeps the input's on-disk dtype and scaling (scl_slope/scl_inter), so voxels that reface
preserves are written back as the very same raw values: bit-for-bit, not merely close.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from . import formats
from .errors import RefaceError
from .formats import MGHHeader


@dataclass
class Scan:
    """One 3D scan: raw on-disk values plus what is needed to write them back unchanged."""

    raw: np.ndarray  # on-disk values, on-disk dtype, 3D [I, J, K]
    affine: np.ndarray  # voxel -> world (RAS+ mm), 4x4
    header: nib.Nifti1Header
    slope: float = 1.0
    inter: float = 0.0
    disk_shape: tuple[int, ...] = ()  # the file's shape (may carry trailing singleton dims)
    source: str = ""
    kind: str = "nifti"  # input format (formats.image_kind)
    mgh_header: MGHHeader | None = None  # FreeSurfer geometry to write .mgz back exactly
    _data: np.ndarray | None = field(default=None, repr=False)

    @property
    def data(self) -> np.ndarray:
        """Scaled intensities as float32 (what a viewer shows)."""
        if self._data is None:
            if self._unscaled_is_data():
                self._data = self.raw.astype(np.float32)
            else:
                self._data = (self.raw.astype(np.float64) * self.slope + self.inter).astype(np.float32)
        return self._data

    def _unscaled_is_data(self) -> bool:
        """Integer voxels without scaling: float32(raw) is exactly what the float64 route gives (one rounding)."""
        return np.issubdtype(self.raw.dtype, np.integer) and (self.slope, self.inter) == (1.0, 0.0)

    @property
    def zooms(self) -> tuple[float, float, float]:
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.raw.shape)

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Map scaled intensities to raw on-disk values (rounded and clipped for integer types)."""
        dtype = self.raw.dtype
        raw = (values.astype(np.float64) - self.inter) / self.slope
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            raw = np.clip(np.rint(raw), info.min, info.max)
        return raw.astype(dtype)


def load_scan(path: str | os.PathLike, *, volume: int | None = None) -> Scan:
    """Read any nibabel volume or a DICOM series folder as a validated 3D scan.

    `volume` picks one volume of a 4D file; the scan (and so the output) is that one 3D volume.
    """
    path = Path(path)
    if not path.exists():
        raise RefaceError(f"input not found: {path}")
    if path.is_dir():
        return _scan_from_image(_load_dicom_series(path), str(path), volume=volume)
    img, data = formats.read_image(path)
    return _scan_from_image(img, str(path), volume=volume, data=data)


def _load_dicom_series(folder: Path) -> nib.Nifti1Image:
    """Convert one DICOM series with dicom2nifti (handles slice order, orientation, rescale)."""
    import dicom2nifti
    import dicom2nifti.settings as d2n_settings

    d2n_settings.disable_validate_slice_increment()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "series.nii.gz"
        try:
            dicom2nifti.dicom_series_to_nifti(str(folder), str(out), reorient_nifti=False)
        except Exception as error:  # dicom2nifti raises many unrelated types for bad series
            message = f"cannot read {folder} as a DICOM series ({type(error).__name__}: {error})"
            raise RefaceError(message) from error
        img = nib.load(str(out))
        img = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)
    return img


def _scan_from_image(img, source: str, *, volume: int | None = None, data: np.ndarray | None = None) -> Scan:
    kind = formats.image_kind(img)
    raw, slope, inter = formats.raw_and_scaling(img, data)
    if not raw.dtype.isnative:  # MGH is big-endian on disk: same values, native order in memory
        raw = raw.astype(raw.dtype.newbyteorder("="))
    disk_shape = tuple(int(s) for s in raw.shape)
    raw = _pick_volume(raw, source, volume)
    if raw.ndim != len(disk_shape):
        disk_shape = tuple(int(s) for s in raw.shape)
    shape3 = _three_d_shape(disk_shape, source)
    header = formats.nifti_header_for(img, raw)
    scan = Scan(
        raw=np.asarray(raw).reshape(shape3),
        affine=img.affine.astype(np.float64),
        header=header,
        slope=slope,
        inter=inter,
        disk_shape=disk_shape,
        source=source,
        kind=kind,
        mgh_header=img.header if kind == "mgh" else None,
    )
    validate_scan(scan)
    return scan


def _pick_volume(raw: np.ndarray, source: str, volume: int | None) -> np.ndarray:
    """The chosen 3D volume of a 4D array (trailing singleton dimensions ignored)."""
    if volume is None:
        return raw
    if raw.ndim < 4 or any(s != 1 for s in raw.shape[4:]):
        if raw.ndim == 3 or all(s == 1 for s in raw.shape[3:]):
            if volume == 0:
                return raw
        raise RefaceError(f"{source}: --volume {volume} given, but the image has shape {raw.shape}")
    count = raw.shape[3]
    if not 0 <= volume < count:
        raise RefaceError(f"{source}: --volume {volume} is out of range (the file has {count} volumes, 0-{count - 1})")
    return raw[:, :, :, volume]


def _three_d_shape(shape: tuple[int, ...], source: str) -> tuple[int, int, int]:
    if len(shape) < 3:
        raise RefaceError(f"{source}: image is {len(shape)}D (shape {shape}); a 3D head scan is needed")
    if any(s != 1 for s in shape[3:]):
        message = (f"{source}: image is {len(shape)}D with shape {shape}; "
                   "pick one volume with --volume N (0-based)")
        raise RefaceError(message)
    if min(shape[:3]) < 8:
        raise RefaceError(f"{source}: image shape {shape[:3]} is too small for a head scan")
    return shape[0], shape[1], shape[2]


def validate_scan(scan: Scan) -> None:
    """Refuse inputs that no method can de-identify safely."""
    data = scan.data
    # integers without scaling are finite (float32 holds every int64 magnitude)
    if not scan._unscaled_is_data() and not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise RefaceError(f"{scan.source}: image has {bad} NaN/Inf voxels")
    if not np.any(data != data.flat[0]):
        raise RefaceError(f"{scan.source}: image is empty (all voxels have the same value)")
    if not np.all(np.isfinite(scan.affine)) or abs(np.linalg.det(scan.affine[:3, :3])) < 1e-6:
        raise RefaceError(f"{scan.source}: image has an invalid (singular or non-finite) affine")


def scrubbed_header(header: nib.Nifti1Header) -> nib.Nifti1Header:
    """A copy of the header with identifying free text and extensions removed; geometry untouched."""
    return formats.scrubbed_nifti_header(header)


def output_image(scan: Scan, raw: np.ndarray) -> tuple[nib.Nifti1Header, np.ndarray]:
    """Header + raw array for an output on the scan's own grid, dtype and scaling."""
    if raw.shape != scan.shape or raw.dtype != scan.raw.dtype:
        raise AssertionError(f"output {raw.shape}/{raw.dtype} does not match input {scan.shape}/{scan.raw.dtype}")
    hdr = scrubbed_header(scan.header)
    hdr.set_data_shape(scan.disk_shape)
    hdr.set_data_dtype(scan.raw.dtype)
    hdr.set_slope_inter(scan.slope, scan.inter) if (scan.slope, scan.inter) != (1.0, 0.0) else None
    hdr["vox_offset"] = 352
    return hdr, raw.reshape(scan.disk_shape)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a finished temp file into place with the usual umask permissions (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, hdr: nib.Nifti1Header | nib.MGHImage, raw: np.ndarray | None, *,
                 force: bool = False, check=None) -> Path:
    """Write to a temp file in the target folder, optionally verify it, then rename into place.

    For a .mgz/.mgh path `hdr` is the finished MGHImage and `raw` is unused.

    `check(img)` receives the re-read temp image and must raise if it is wrong; nothing is left behind.
    """
    path = Path(path)
    kind = formats.output_kind(path)
    if path.exists() and not force:
        raise RefaceError(f"output exists: {path} (use --force to overwrite)")
    if kind == "mgh" and not isinstance(hdr, nib.MGHImage):
        raise AssertionError("an .mgz/.mgh output needs an MGHImage (see save_scan_like)")
    path.parent.mkdir(parents=True, exist_ok=True)
    lower = path.name.lower()
    suffix = next(s for s in (".nii.gz", ".nii", ".mgz", ".mgh") if lower.endswith(s))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if kind == "mgh":
            formats.write_mgh(tmp, hdr)
        else:
            formats.write_nifti(tmp, hdr, raw)
        if check is not None:
            check(nib.load(str(tmp)))
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_scan_like(scan: Scan, raw: np.ndarray, path: str | os.PathLike, *, force: bool = False,
                   check=None) -> Path:
    """Write raw values on the scan's grid (same shape, affine, codes, dtype, scaling), atomically."""
    if formats.output_kind(Path(path)) == "mgh":
        if raw.shape != scan.shape or raw.dtype != scan.raw.dtype:
            raise AssertionError(f"output {raw.shape}/{raw.dtype} does not match input {scan.shape}/{scan.raw.dtype}")
        img = formats.mgh_image(raw.reshape(scan.disk_shape), scan.affine, scan.mgh_header, scan.slope, scan.inter,
                                scan.source)
        return atomic_write(path, img, None, force=force, check=check)
    hdr, arr = output_image(scan, raw)
    return atomic_write(path, hdr, arr, force=force, check=check)


def save_mask_like(scan: Scan, mask: np.ndarray, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write a uint8 mask on the scan's grid (MGZ when the name says so)."""
    if formats.output_kind(Path(path)) == "mgh":
        img = formats.mgh_image(mask.astype(np.uint8).reshape(scan.shape), scan.affine, scan.mgh_header, 1.0, 0.0,
                                scan.source)
        return atomic_write(path, img, None, force=force)
    hdr = scrubbed_header(scan.header)
    hdr.set_data_shape(scan.shape)
    hdr.set_data_dtype(np.uint8)
    hdr.set_slope_inter(1.0, 0.0)
    hdr["vox_offset"] = 352
    hdr["cal_min"], hdr["cal_max"] = 0, 1
    return atomic_write(path, hdr, mask.astype(np.uint8), force=force)


def load_mask(path: str | os.PathLike, scan: Scan) -> np.ndarray:
    """Read a user-given mask that must lie on the scan's grid."""
    if not Path(path).exists():
        raise RefaceError(f"brain mask not found: {path}")
    mask_scan_img, data = formats.read_image(Path(path))  # any format: FreeSurfer's brainmask.mgz works as well
    data = formats.scaled_array(mask_scan_img, data)
    data = data.reshape(_three_d_shape(tuple(data.shape), str(path)))
    if data.shape != scan.shape or not np.allclose(mask_scan_img.affine, scan.affine, atol=1e-3):
        message = f"brain mask {path} is not on the input's grid (shape {data.shape} vs {scan.shape})"
        raise RefaceError(message)
    return np.asarray(data) > 0

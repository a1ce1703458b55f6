"""Per-format reading, writing and header scrubbing; io.py is the entry point that uses them.

In: NIfTI-1/2, ANALYZE, MGZ/MGH, MINC-1/2 and PAR/REC (nibabel reads them all). Out: NIfTI or MGZ/MGH,
chosen by the output file name. MINC, PAR/REC and ANALYZE are not written back: an output named so is
written as NIfTI beside it (`out.mnc` -> `out.nii.gz`) and the user is told, because a file named `.mnc`
that is really NIfTI would mislead.
Every gzip stream reface writes has an empty file name and mtime 0, so equal inputs give equal bytes.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import nibabel.parrec  # noqa: F401  (nib.parrec is not imported by nibabel itself)
import numpy as np
from nibabel.arrayproxy import ArrayProxy
from nibabel.freesurfer.mghformat import MGHHeader
from nibabel.tripwire import TripWireError
from nibabel.volumeutils import apply_read_scaling, array_to_file

from .errors import RefaceError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MGH_SUFFIXES = (".mgz", ".mgh")
WRITABLE_SUFFIXES = NIFTI_SUFFIXES + MGH_SUFFIXES
# Formats nibabel reads but reface does not write: name them when refusing such an output.
READ_ONLY_SUFFIXES = {".mnc": "MINC", ".mnc.gz": "MINC", ".par": "PAR/REC", ".rec": "PAR/REC",
                      ".hdr": "ANALYZE", ".img": "ANALYZE", ".img.gz": "ANALYZE"}
# Free-text NIfTI header fields that may carry names, dates, site or protocol text.
SCRUBBED_TEXT_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")
MGH_DTYPES = (np.uint8, np.int16, np.int32, np.float32)
GZIP_LEVEL = 1  # nibabel's default: on a 1 mm int16 head 2 % larger than level 4 in 60 % of the time (level 9: ~3x)
# (suffix of the file given, suffixes its partner may have, what the partner is called)
PARTNERS = ((".par", (".REC", ".rec"), ".REC"), (".hdr", (".img", ".IMG", ".img.gz"), ".img"),
            (".img", (".hdr", ".HDR"), ".hdr"), (".img.gz", (".hdr", ".HDR"), ".hdr"))


def output_kind(path: Path) -> str:
    """'nifti' or 'mgh' from the output name; anything else is refused with the reason."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(MGH_SUFFIXES):
        return "mgh"
    raise RefaceError(f"output must end in .nii, .nii.gz, .mgz or .mgh: {path}")


def resolve_output(path: Path) -> tuple[Path, str | None]:
    """The path reface will write, and a note when a read-only format's name was turned into NIfTI."""
    name = path.name
    for suffix, label in READ_ONLY_SUFFIXES.items():
        if name.lower().endswith(suffix):
            target = path.with_name(name[: len(name) - len(suffix)] + ".nii.gz")
            return target, f"reface reads {label} but cannot write it: the output is NIfTI, {target}"
    output_kind(path)
    return path, None


def _missing_partner(path: Path) -> str | None:
    name = path.name
    for suffix, options, label in PARTNERS:
        if name.lower().endswith(suffix):
            stem = name[: len(name) - len(suffix)]
            if not any((path.parent / f"{stem}{option}").exists() for option in options):
                return f"{path}: missing the {label} file that goes with it ({stem}{label})"
    return None


def read_image(path: Path) -> tuple[nib.spatialimages.SpatialImage, np.ndarray]:
    """Load any image nibabel knows and read its data now, so every failure is one RefaceError here.

    Returns the image and the array read (see `_load_now`), so callers do not decompress the file again."""
    partner = _missing_partner(path)
    if partner is not None:
        raise RefaceError(partner)
    if _is_dicom_file(path):
        raise RefaceError(f"{path} is a single DICOM file: give the folder that holds the whole series")
    try:
        with warnings.catch_warnings():  # nibabel's UserWarnings would break the one-line promise
            warnings.simplefilter("ignore")
            img, data = _load_now(path)
    except RefaceError:
        raise
    except (ModuleNotFoundError, TripWireError) as error:
        name = getattr(error, "name", None) or ("h5py" if "h5py" in str(error) else "an optional package")
        raise RefaceError(f"cannot read {path}: needs the optional package {name} "
                          f"(pip install {name})") from error
    except MemoryError as error:
        raise RefaceError(f"cannot read {path}: too large to load into memory") from error
    except Exception as error:  # nibabel's readers raise many types (PARRECError, KeyError, struct.error...)
        reason = " ".join(str(error).split()) or "no detail"
        reason = reason.replace(f'"{path}"', "it").replace(str(path), "it")
        if len(reason) > 200:
            reason = reason[:197] + "..."
        raise RefaceError(f"cannot read {path} ({type(error).__name__}: {reason})") from error
    return img, data


def _is_dicom_file(path: Path) -> bool:
    """A DICOM part-10 file has 'DICM' at byte 128."""
    try:
        with open(path, "rb") as fobj:
            fobj.seek(128)
            return fobj.read(4) == b"DICM"
    except OSError:
        return False


def _load_now(path: Path) -> tuple[nib.spatialimages.SpatialImage, np.ndarray]:
    """nib.load plus a full read of the data, so truncated or corrupt data fails here and not later.

    The array is the on-disk (unscaled) values where the proxy has them, else the proxy's scaled array."""
    img = nib.load(str(path))
    if not isinstance(img, nib.spatialimages.SpatialImage) or len(img.shape) < 1:
        raise RefaceError(f"{path}: not a volume image ({type(img).__name__})")
    if isinstance(img, nib.cifti2.Cifti2Image):
        raise RefaceError(f"{path}: CIFTI file (surface/grayordinate data), not a 3D volume")
    proxy = img.dataobj
    data = proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
    return img, np.asarray(data)


def scaled_array(img, data: np.ndarray) -> np.ndarray:
    """What `np.asanyarray(img.dataobj)` gives, from the array `read_image` returned with `img`."""
    proxy = img.dataobj
    if not hasattr(proxy, "get_unscaled"):
        return data
    if not isinstance(proxy, ArrayProxy):  # per-slice scaling (PAR/REC): let the proxy scale it
        return np.asarray(np.asanyarray(proxy))
    return np.asarray(apply_read_scaling(data, np.asanyarray(proxy.slope), np.asanyarray(proxy.inter)))


def image_kind(img) -> str:
    """Short name of the input format, for messages and for what can be written back."""
    if isinstance(img, nib.MGHImage):
        return "mgh"
    if isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        return "nifti"
    if isinstance(img, nib.AnalyzeImage):
        return "analyze"
    if isinstance(img, nib.Minc1Image):  # Minc2Image is a subclass
        return "minc"
    if isinstance(img, nib.parrec.PARRECImage):
        return "parrec"
    return type(img).__name__


def raw_and_scaling(img, data: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """On-disk values plus one slope/intercept; formats with per-slice scaling become float32.

    `data`: the array `read_image` returned with `img` (not read again)."""
    kind = image_kind(img)
    if kind in ("nifti", "analyze", "mgh"):
        proxy = img.dataobj
        if data is None:
            raw = np.asanyarray(proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else proxy)
        else:
            raw = data
        slope = getattr(img.dataobj, "slope", None)
        inter = getattr(img.dataobj, "inter", None)
        if slope is None:
            slope, inter = img.header.get_slope_inter()
        slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(np.asarray(slope))
        inter = 0.0 if inter is None or not np.isfinite(inter) else float(np.asarray(inter))
        return np.asarray(raw), slope, inter
    # MINC and PAR/REC scale per slice: there is no single slope, so keep the scaled values exactly as float32
    return np.asarray(img.get_fdata(dtype=np.float32)), 1.0, 0.0


def nifti_header_for(img, raw: np.ndarray) -> nib.Nifti1Header:
    """A NIfTI header describing the input's grid; nothing from a foreign header but geometry and zooms."""
    if image_kind(img) == "nifti":
        return nib.Nifti1Header.from_header(img.header)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(raw.shape)
    hdr.set_data_dtype(raw.dtype)
    hdr.set_qform(img.affine, code=1)
    hdr.set_sform(img.affine, code=1)
    hdr.set_xyzt_units("mm")
    return hdr


def scrubbed_nifti_header(header: nib.Nifti1Header) -> nib.Nifti1Header:
    """A copy of the header with identifying free text and extensions removed; geometry untouched."""
    hdr = nib.Nifti1Header.from_header(header)
    for name in SCRUBBED_TEXT_FIELDS:
        hdr[name] = b""
    hdr.extensions.clear()
    return hdr


def scrubbed_mgh_header(header: MGHHeader | None) -> MGHHeader:
    """MGH header keeping the grid (dims, Mdc, delta, c_ras) and scan parameters TR/TE/TI/flip/FOV.

    nibabel never carries the MGZ footer tags (talairach path, command lines with subject names) into a
    copy, so the output has none; TR/TE/TI/flip are acquisition settings FreeSurfer uses, not identity.
    """
    out = MGHHeader()
    if header is not None:
        for name in ("delta", "Mdc", "Pxyz_c", "goodRASFlag", "tr", "flip_angle", "te", "ti", "fov"):
            out[name] = header[name]
    return out


def _gzip_writer(fobj):
    """A gzip stream with no file name and mtime 0: the bytes depend only on the content."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=fobj, compresslevel=GZIP_LEVEL, mtime=0)


def write_nifti(path: Path, hdr: nib.Nifti1Header, raw: np.ndarray) -> None:
    """Write header and raw values exactly, bypassing nibabel's automatic rescaling.

    The values are stored in the header's byte order (a big-endian input keeps a big-endian file).
    """
    with open(path, "wb") as fobj:
        if path.name.endswith(".gz"):
            with _gzip_writer(fobj) as gz:
                hdr.write_to(gz)  # 348 bytes + the 4-byte extension flag (no extensions)
                array_to_file(raw, gz, hdr.get_data_dtype(), offset=int(hdr["vox_offset"]), order="F")
        else:
            hdr.write_to(fobj)
            array_to_file(raw, fobj, hdr.get_data_dtype(), offset=int(hdr["vox_offset"]), order="F")


def mgh_image(raw: np.ndarray, affine: np.ndarray, header: MGHHeader | None,
              slope: float, inter: float, source: str) -> nib.MGHImage:
    """MGH image of raw values; MGH has no scaling fields, so scaled or unsupported dtypes are refused."""
    if raw.dtype.type not in MGH_DTYPES:
        raise RefaceError(f"{source}: voxel type {raw.dtype} cannot be stored in MGZ/MGH "
                          "(uint8, int16, int32, float32 only); name the output .nii.gz")
    if (slope, inter) != (1.0, 0.0):
        raise RefaceError(f"{source}: scaled integer voxels (slope {slope:g}, intercept {inter:g}) cannot be "
                          "stored in MGZ/MGH without changing them; name the output .nii.gz")
    hdr = scrubbed_mgh_header(header)
    img = nib.MGHImage(raw, affine, hdr)
    img.header.set_data_dtype(raw.dtype)
    stored = img.header.get_affine()  # MGH keeps voxel sizes, axis directions and a centre, in float32
    if not np.allclose(stored, affine, atol=1e-3):
        raise RefaceError(f"{source}: the image's affine cannot be stored in MGZ/MGH; name the output .nii.gz")
    return img


def write_mgh(path: Path, img: nib.MGHImage) -> None:
    """Write MGH (raw) or MGZ (gzip with an empty name and mtime 0)."""
    data = img.to_bytes()
    with open(path, "wb") as fobj:
        if path.name.lower().endswith(".mgz"):
            with _gzip_writer(fobj) as gz:
                gz.write(data)
        else:
            fobj.write(data)

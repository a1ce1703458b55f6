"""A session: the same identity scanned again. Pose (small rotation/translation), bias field, Rician noise,
contrast (gamma) and the acquisition grid (voxel size, orientation) change; the face does not.

The T1w and the brain mask are produced by one chain of maps per voxel, scanner voxel -> scanner world ->
(undo pose) -> subject world -> (identity pull) -> template world, so the mask is exactly the thresholded
warp of the atlas mask on the T1w grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from .identity import Identity
from .template import Template

# (axis codes, voxel size mm): a few realistic T1w acquisitions; each session draws one.
ACQUISITIONS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("RAS", (1.0, 1.0, 1.0)),
    ("LAS", (1.2, 1.2, 1.2)),
    ("LPS", (1.0, 1.0, 1.0)),
    ("PIR", (1.0, 1.0, 1.0)),
)
FOV_MM = np.array([184.0, 256.0, 240.0])  # field of view along R, A, S
# The field of view's centre relative to the template's: forward, so a long nose on a head that moved
# forward still fits (the atlas head spans y = -92..115 mm, the FOV y = -111..145 mm).
FOV_OFFSET_MM = np.array([0.0, 8.0, 0.0])
ROTATION_SD_DEG = 4.0
TRANSLATION_SD_MM = 4.0
GAMMA_LOG_SD = 0.1
NOISE_RANGE = (0.01, 0.03)  # Rician sigma as a fraction of the white-matter-ish intensity
BIAS_SD = 0.07  # per polynomial coefficient of the log bias field
OUTPUT_SCALE = 1000.0  # normalised intensity 1.0 -> 1000 in the int16 file
SLAB = 24  # voxels per chunk along the first axis (bounds memory)
COARSE_STRIDE = 4  # the voxel -> template map is computed exactly every 4th voxel, linearly in between

_AXIS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


@dataclass(frozen=True)
class Acquisition:
    """Everything that changes between sessions of one identity."""

    shape: tuple[int, int, int]
    affine: np.ndarray  # scanner voxel -> world
    axcodes: str
    rotation_deg: np.ndarray  # xyz Euler angles of the head pose, about the brain centre
    translation_mm: np.ndarray
    gamma: float
    noise: float
    bias: np.ndarray  # 9 coefficients of the quadratic log-bias polynomial
    noise_seed: int

    def as_dict(self) -> dict[str, object]:
        zooms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return {"axcodes": self.axcodes, "voxel_mm": [round(float(z), 3) for z in zooms],
                "shape": list(self.shape), "rotation_deg": np.round(self.rotation_deg, 3).tolist(),
                "translation_mm": np.round(self.translation_mm, 3).tolist(), "gamma": round(self.gamma, 4),
                "noise": round(self.noise, 4), "bias": np.round(self.bias, 4).tolist()}


def acquisition_grid(axcodes: str, zooms: tuple[float, float, float], centre: np.ndarray,
                     fov_mm: np.ndarray = FOV_MM) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of a grid with these axis codes and voxel sizes, centred on `centre` (world mm)."""
    affine = np.zeros((4, 4))  # not eye(4): a permuted grid (e.g. PIR) must not keep the diagonal
    affine[3, 3] = 1.0
    shape = []
    for k, code in enumerate(axcodes):
        axis, sign = _AXIS[code]
        affine[axis, k] = sign * zooms[k]
        shape.append(int(round(fov_mm[axis] / zooms[k])))
    half = (np.array(shape) - 1) / 2.0
    affine[:3, 3] = np.asarray(centre, float) - affine[:3, :3] @ half
    return tuple(shape), affine


def sample_acquisition(rng: np.random.Generator, template: Template, *, resolution_mm: float | None = None,
                       acquisitions=ACQUISITIONS) -> Acquisition:
    """Draw a session's acquisition; `resolution_mm` forces isotropic voxels (fast tests)."""
    axcodes, zooms = acquisitions[int(rng.integers(len(acquisitions)))]
    if resolution_mm is not None:
        zooms = (float(resolution_mm),) * 3
    shape, affine = acquisition_grid(axcodes, zooms, template.centre + FOV_OFFSET_MM)
    return Acquisition(
        shape=shape, affine=affine, axcodes=axcodes,
        rotation_deg=np.clip(rng.normal(0, ROTATION_SD_DEG, 3), -2.5 * ROTATION_SD_DEG,
                             2.5 * ROTATION_SD_DEG),
        translation_mm=np.clip(rng.normal(0, TRANSLATION_SD_MM, 3), -2.5 * TRANSLATION_SD_MM,
                               2.5 * TRANSLATION_SD_MM),
        gamma=float(np.exp(np.clip(rng.normal(0, GAMMA_LOG_SD), -2.5 * GAMMA_LOG_SD, 2.5 * GAMMA_LOG_SD))),
        noise=float(rng.uniform(*NOISE_RANGE)),
        bias=rng.normal(0, BIAS_SD, 9),
        noise_seed=int(rng.integers(2**63)),
    )


def _log_bias(coef: np.ndarray, points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    x, y, z = ((points - centre.reshape((3,) + (1,) * (points.ndim - 1))) / 100.0).astype(np.float32)
    terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
    return sum(float(c) * t for c, t in zip(coef, terms, strict=True))


def scanner_to_subject(acq: Acquisition, template: Template) -> np.ndarray:
    """4x4 map from scanner world to the subject's (unposed) world: the inverse of the head pose."""
    rot = Rotation.from_euler("xyz", acq.rotation_deg, degrees=True).as_matrix()
    centre = template.brain_centre
    pose = np.eye(4)  # subject -> scanner: w = R (p - c) + c + t
    pose[:3, :3] = rot
    pose[:3, 3] = centre + acq.translation_mm - rot @ centre
    return np.linalg.inv(pose)


def _coarse_coordinates(template: Template, identity: Identity, acq: Acquisition) -> np.ndarray:
    """Template voxel coordinates [3, m0, m1, m2] of every COARSE_STRIDE-th scanner voxel (exact chain)."""
    counts = [int(np.ceil((n - 1) / COARSE_STRIDE)) + 2 for n in acq.shape]
    axes = [COARSE_STRIDE * np.arange(m, dtype=np.float32) for m in counts]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"))
    to_subject = scanner_to_subject(acq, template) @ acq.affine  # scanner voxel -> subject world
    subject = _apply(to_subject, ijk)
    return _apply(np.linalg.inv(template.affine), identity.pull(subject))


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    out = np.einsum("ab,b...->a...", affine[:3, :3].astype(np.float32), points)
    return out + affine[:3, 3].astype(np.float32).reshape((3,) + (1,) * (points.ndim - 1))


def _upsample(coarse: np.ndarray, axis: int, index: np.ndarray) -> np.ndarray:
    """Linear interpolation of `coarse` (samples every COARSE_STRIDE) at full-resolution `index` on `axis`."""
    pos = index / COARSE_STRIDE
    low = np.floor(pos).astype(int)
    weight = (pos - low).astype(np.float32)
    shape = [1] * coarse.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    return coarse.take(low, axis=axis) * (1 - weight) + coarse.take(low + 1, axis=axis) * weight


def synthesize_session(template: Template, identity: Identity, acq: Acquisition
                       ) -> tuple[nib.Nifti1Image, np.ndarray]:
    """(T1w image int16, brain mask uint8 on the same grid) of `identity` scanned with `acq`.

    The voxel -> template map is evaluated exactly every COARSE_STRIDE voxels and interpolated linearly in
    between (the pose is affine and the deformation lives on a 4 mm grid, so this changes < 0.1 mm);
    T1w and mask are sampled at the very same coordinates. Only voxels that land on the template head (or
    brain) are interpolated; the rest is background plus noise.
    """
    rng = np.random.default_rng(acq.noise_seed)
    coarse = _coarse_coordinates(template, identity, acq)  # [3, m0, m1, m2] template voxel coordinates
    out = np.zeros(acq.shape, np.int16)
    mask = np.zeros(acq.shape, np.uint8)
    n0, n1, n2 = acq.shape
    bounds = np.array(template.head.shape).reshape(3, 1)
    for i0 in range(0, n0, SLAB):
        i1 = min(i0 + SLAB, n0)
        vox = _upsample(coarse, 1, np.arange(i0, i1))
        vox = _upsample(_upsample(vox, 2, np.arange(n1)), 3, np.arange(n2)).reshape(3, -1)  # [3, N]
        nearest = np.rint(vox).astype(np.int32)
        inside = np.flatnonzero(np.all((nearest >= 0) & (nearest < bounds), axis=0))
        near = tuple(nearest[:, inside])
        on_head = inside[template.support[near]]
        on_brain = inside[template.brain_support[near]]
        brain = np.zeros(vox.shape[1], np.float32)
        brain[on_brain] = ndi.map_coordinates(template.brain.view(np.uint8), vox[:, on_brain], order=1,
                                              mode="constant", output=np.float32)
        mask[i0:i1] = (brain > 0.5).reshape(i1 - i0, n1, n2)
        # Rician noise: magnitude of (signal + complex Gaussian); Rayleigh where there is no signal.
        noisy = (acq.noise * rng.rayleigh(1.0, vox.shape[1])).astype(np.float32)
        head = ndi.map_coordinates(template.head, vox[:, on_head], order=1, mode="constant", cval=0.0)
        ijk = np.stack(np.unravel_index(on_head, (i1 - i0, n1, n2))).astype(np.float32)
        ijk[0] += i0
        world = _apply(acq.affine, ijk)
        bias = np.exp(_log_bias(acq.bias, world, template.centre))
        signal = np.power(head / template.scale, acq.gamma) * bias
        noisy[on_head] = np.hypot(signal + acq.noise * rng.standard_normal(signal.shape, np.float32),
                                  acq.noise * rng.standard_normal(signal.shape, np.float32))
        values = np.clip(np.rint(noisy * OUTPUT_SCALE), 0, np.iinfo(np.int16).max)
        out[i0:i1] = values.reshape(i1 - i0, n1, n2)
    img = nib.Nifti1Image(out, acq.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(acq.affine, code=1)
    img.set_sform(acq.affine, code=1)
    return img, mask

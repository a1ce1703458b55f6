"""Smooth invertible deformations: stationary velocity fields on a coarse grid, exponentiated by scaling
and squaring (as in SynthSeg / VoxelMorph), with a Jacobian check that nothing folds.

A `Field` maps world points x -> x + u(x) (RAS mm). Velocity fields are built from landmark-centred
Gaussian-windowed affine pieces v(x) = w(x) (L (x - c) + t), which read as "move this part by t and
scale it by exp(L)" near c, and fade to nothing far away.

Shared by the synthetic cohort (identities, poses) and the generator's seeded shape change at inference,
so it sits below both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

SQUARING_STEPS = 7


@dataclass(frozen=True)
class VelocityGrid:
    """An axis-aligned RAS grid (world mm) on which velocity/displacement fields are stored."""

    shape: tuple[int, int, int]
    origin: np.ndarray  # world position of voxel (0, 0, 0)
    spacing: float

    @property
    def affine(self) -> np.ndarray:
        affine = np.diag([self.spacing] * 3 + [1.0])
        affine[:3, 3] = self.origin
        return affine

    def points(self) -> np.ndarray:
        """World coordinates of the voxel centres, [3, X, Y, Z]."""
        axes = [self.origin[a] + self.spacing * np.arange(n, dtype=np.float32)
                for a, n in enumerate(self.shape)]
        return np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)

    @classmethod
    def around(cls, lo: np.ndarray, hi: np.ndarray, spacing: float) -> VelocityGrid:
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        shape = tuple(int(np.ceil((h - low) / spacing)) + 1 for low, h in zip(lo, hi, strict=True))
        return cls(shape=shape, origin=lo, spacing=float(spacing))


def _sample(field: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Trilinear samples of a vector field [3, X, Y, Z] at voxel coordinates [3, ...] (edge-clamped)."""
    return np.stack([ndi.map_coordinates(c, ijk, order=1, mode="nearest") for c in field]).astype(np.float32)


def exponentiate(velocity: np.ndarray, grid: VelocityGrid, steps: int = SQUARING_STEPS) -> np.ndarray:
    """Displacement [3, X, Y, Z] (mm) of exp(v): scaling and squaring of a stationary velocity (mm)."""
    assert velocity.ndim == 4 and velocity.shape[0] == 3 and velocity.shape[1:] == grid.shape, velocity.shape
    disp = velocity.astype(np.float32) / (2.0 ** steps)
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in grid.shape], indexing="ij"))
    for _ in range(steps):
        disp = disp + _sample(disp, index + disp / grid.spacing)
    return disp


def jacobian_determinant(disp: np.ndarray, spacing: float) -> np.ndarray:
    """det(I + grad u) at every grid point [X, Y, Z]; <= 0 means the mapping folds there."""
    # [3 components, 3 directions, X, Y, Z]
    grads = np.stack([np.stack(np.gradient(disp[c], spacing), axis=0) for c in range(3)])
    jac = grads + np.eye(3, dtype=np.float32)[:, :, None, None, None]
    jac = np.moveaxis(jac, (0, 1), (-2, -1))
    return np.linalg.det(jac.astype(np.float64)).astype(np.float32)


@dataclass(frozen=True)
class Field:
    """A dense displacement on a VelocityGrid: maps world x -> x + u(x)."""

    disp: np.ndarray  # [3, X, Y, Z] mm
    grid: VelocityGrid

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Map world points [3, ...] -> [3, ...]."""
        ijk = (points - self.grid.origin.reshape((3,) + (1,) * (points.ndim - 1))) / self.grid.spacing
        return points + _sample(self.disp, ijk)

    def min_jacobian(self) -> float:
        return float(jacobian_determinant(self.disp, self.grid.spacing).min())


def gaussian_window(points: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-|x - c|^2 / (2 sigma^2)) at world points [3, ...]."""
    diff = points - np.asarray(centre, np.float32).reshape((3,) + (1,) * (points.ndim - 1))
    return np.exp(-(diff ** 2).sum(axis=0) / (2.0 * sigma ** 2)).astype(np.float32)


def local_affine_velocity(points: np.ndarray, centre: np.ndarray, sigma: float, log_scale: np.ndarray,
                          shift: np.ndarray) -> np.ndarray:
    """v(x) = w(x) (diag(log_scale) (x - c) + shift), w a Gaussian window of width sigma around c."""
    c = np.asarray(centre, np.float32).reshape((3,) + (1,) * (points.ndim - 1))
    linear = np.asarray(log_scale, np.float32).reshape(c.shape) * (points - c)
    shift = np.asarray(shift, np.float32).reshape(c.shape)
    return gaussian_window(points, centre, sigma)[None] * (linear + shift)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="reflect")
    return field / max(float(field.std()), 1e-6)

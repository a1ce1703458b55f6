"""An identity: one random, anatomically localised, diffeomorphic remodelling of the template head.

Pieces of the velocity field (all in template world mm, RAS):
- global head size/shape: an anisotropic scaling about the brain centre (the brain scales mildly with it);
- facial parts (nose, brow, eyes, cheeks, lips, chin, jaw, ears, forehead): Gaussian-windowed shifts and
  scalings around landmarks, paired parts mirrored with a little asymmetry;
- scalp/skull thickness: a smooth radial push that is zero on the brain and ramps up outside it;
- a small smooth random field over the face (the individual detail no part model captures).
The sum v is exponentiated (pull = exp(-v): subject -> template; its inverse push = exp(v)) and must have a
positive Jacobian everywhere; otherwise it is shrunk and retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import RefaceError
from ..warp import Field, VelocityGrid, exponentiate, local_affine_velocity, smooth_noise
from .template import Template

# part -> (landmark, or landmark stem for a left/right pair), window sigma (mm), shift sd (mm), log-scale sd.
PARTS: dict[str, tuple[str, float, tuple[float, float, float], tuple[float, float, float]]] = {
    "nose": ("nose_tip", 13.0, (2.0, 8.0, 5.0), (0.30, 0.25, 0.25)),
    "nose_bridge": ("nose_bridge", 10.0, (2.0, 5.0, 4.0), (0.25, 0.15, 0.15)),
    "nose_base": ("nose_base", 10.0, (2.0, 4.0, 4.0), (0.30, 0.15, 0.20)),
    "forehead": ("forehead", 25.0, (0.0, 6.0, 4.0), (0.08, 0.08, 0.12)),
    "brow": ("brow", 14.0, (4.0, 7.0, 5.0), (0.12, 0.12, 0.18)),
    "eye": ("eye", 12.0, (4.0, 6.0, 4.0), (0.18, 0.12, 0.25)),
    "cheek": ("cheek", 16.0, (7.0, 8.0, 5.0), (0.12, 0.18, 0.12)),
    "lips": ("lips", 13.0, (2.0, 6.0, 5.0), (0.25, 0.20, 0.25)),
    "chin": ("chin", 16.0, (4.0, 10.0, 8.0), (0.25, 0.20, 0.20)),
    "jaw": ("jaw", 20.0, (8.0, 5.0, 5.0), (0.12, 0.12, 0.12)),
    "ear": ("ear", 14.0, (4.0, 6.0, 6.0), (0.25, 0.25, 0.25)),
}
PAIRED_ASYMMETRY = 0.15  # fraction of each paired part's parameters drawn independently per side
TRUNCATE_SD = 2.2  # draws are truncated normals: no extreme (implausible) faces
HEAD_LOG_SCALE_SD = 0.045  # overall head size/shape, per axis (about +-4.5 %)
SCALP_SD_MM = 3.0  # scalp/skull thickness change
SCALP_RAMP_MM = 12.0  # distance from the brain over which the thickness change fades in
FACE_NOISE_SD_MM = 2.5
VELOCITY_SPACING_MM = 4.0
MIN_JACOBIAN = 0.05  # local volume may shrink to 5 %, never fold
# Velocity grid bounds (template world mm): the head with room for the largest deformations.
GRID_LO = np.array([-100.0, -115.0, -150.0])
GRID_HI = np.array([100.0, 135.0, 95.0])


@dataclass(frozen=True)
class Identity:
    """One synthetic person: parameters (for participants.tsv) and the two maps of its deformation."""

    index: int
    params: dict[str, float] = field(repr=False)
    pull: Field = field(repr=False)  # subject world -> template world (to sample the template)
    velocity: np.ndarray = field(repr=False)  # [3, X, Y, Z] mm on pull.grid; pull = exp(-velocity)
    min_jacobian: float = 0.0

    def push(self) -> Field:
        """Template world -> subject world (the inverse of `pull`; computed on demand)."""
        return Field(exponentiate(self.velocity, self.pull.grid), self.pull.grid)


def _truncnorm(rng: np.random.Generator, sd, size=None) -> np.ndarray:
    return np.clip(rng.standard_normal(size), -TRUNCATE_SD, TRUNCATE_SD) * np.asarray(sd, float)


def _brain_on_grid(template: Template, grid: VelocityGrid) -> np.ndarray:
    mapping = np.linalg.inv(template.affine) @ grid.affine
    brain = ndi.affine_transform(template.brain.astype(np.float32), mapping[:3, :3],
                                 offset=mapping[:3, 3], output_shape=grid.shape, order=1)
    return brain > 0.5


def identity_velocity(rng: np.random.Generator, template: Template, grid: VelocityGrid
                      ) -> tuple[np.ndarray, dict[str, float]]:
    """A random velocity field [3, X, Y, Z] (mm) and its named parameters."""
    points = grid.points()  # [3, X, Y, Z]
    centre = template.brain_centre.astype(np.float32)
    params: dict[str, float] = {}

    head_log_scale = _truncnorm(rng, HEAD_LOG_SCALE_SD, 3)
    velocity = head_log_scale.astype(np.float32).reshape(3, 1, 1, 1) * (points - centre.reshape(3, 1, 1, 1))
    for axis, value in zip("xyz", head_log_scale, strict=True):
        params[f"head_scale_{axis}"] = float(np.exp(value))

    for part, (landmark, sigma, shift_sd, scale_sd) in PARTS.items():
        shift = _truncnorm(rng, shift_sd, 3)
        log_scale = _truncnorm(rng, scale_sd, 3)
        for axis in range(3):
            params[f"{part}_shift_{'xyz'[axis]}"] = float(shift[axis])
            params[f"{part}_scale_{'xyz'[axis]}"] = float(np.exp(log_scale[axis]))
        if landmark in ("brow", "eye", "cheek", "jaw", "ear"):
            for side, mirror in (("r", 1.0), ("l", -1.0)):
                keep, own = 1 - PAIRED_ASYMMETRY, PAIRED_ASYMMETRY
                own_shift = keep * shift + own * _truncnorm(rng, shift_sd, 3)
                own_scale = keep * log_scale + own * _truncnorm(rng, scale_sd, 3)
                own_shift = own_shift * np.array([mirror, 1.0, 1.0])  # "outward" means +x right, -x left
                velocity += local_affine_velocity(points, template.landmark(f"{landmark}_{side}"), sigma,
                                                  own_scale, own_shift)
        else:
            velocity += local_affine_velocity(points, template.landmark(landmark), sigma, log_scale, shift)

    brain = _brain_on_grid(template, grid)
    outside_mm = ndi.distance_transform_edt(~brain) * grid.spacing
    ramp = np.clip(outside_mm / SCALP_RAMP_MM, 0.0, 1.0).astype(np.float32)
    radial = points - centre.reshape(3, 1, 1, 1)
    radial /= np.maximum(np.linalg.norm(radial, axis=0, keepdims=True), 1e-3)
    thickness = SCALP_SD_MM * smooth_noise(rng, grid.shape, 20.0 / grid.spacing)
    velocity += (thickness * ramp)[None] * radial
    params["scalp_thickness_sd_mm"] = float(np.abs(thickness[brain | (ramp > 0)]).mean())

    face = ramp * np.clip((points[1] - 30.0) / 30.0, 0.0, 1.0)
    for axis in range(3):
        velocity[axis] += FACE_NOISE_SD_MM * face * smooth_noise(rng, grid.shape, 8.0 / grid.spacing)
    return velocity, params


def sample_identity(index: int, seed: int, template: Template, *, max_tries: int = 6) -> Identity:
    """Identity `index` of the cohort with this seed (deterministic); never folds."""
    rng = np.random.default_rng([int(seed), int(index), 0x1D])
    grid = VelocityGrid.around(GRID_LO, GRID_HI, VELOCITY_SPACING_MM)
    velocity, params = identity_velocity(rng, template, grid)
    shrink = 1.0
    for _ in range(max_tries):
        pull = Field(exponentiate(-shrink * velocity, grid), grid)
        worst = pull.min_jacobian()  # exp(v) is the inverse of exp(-v): one check covers both
        if worst > MIN_JACOBIAN:
            params["deformation_shrink"] = shrink
            return Identity(index=index, params=params, pull=pull, velocity=shrink * velocity,
                            min_jacobian=worst)
        shrink *= 0.7
    raise RefaceError(f"identity {index} (seed {seed}) folds even after shrinking its deformation")

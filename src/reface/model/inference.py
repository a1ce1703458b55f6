"""Inference: a new head around one brain, on the 1 mm working grid, in the subject's intensity scale.

First the prior: the population-average template head fitted to this brain (model/prior.py; it reads the
brain only). The generator then runs coarse to fine on whole volumes (a 1 mm stage, when the model has one,
runs in overlapping tiles), each stage a bounded change over the prior's pyramid. A model whose finest
scale is coarser than 1 mm adds its upsampled change to the 1 mm prior and gets high-frequency texture:
Gaussian noise at the subject's own robust noise level (a scalar, not an image of the face). Within 2 mm of
the preserved region the output ramps to the input, so the seam around the pasted brain is not a step;
last, the generated tissue's intensity histogram is matched to the subject's non-brain histogram.

Shape diversity (not learned): before the texture, the generated head is warped by a random smooth
diffeomorphism drawn from the seed (`face_deformation`): Gaussian-windowed local shifts/scalings centred
on the generated face surface, mirrored about the brain's mid-sagittal plane, plus a mild overall
anisotropic scaling, all faded to zero near the preserved region and exponentiated by scaling and
squaring on a 4 mm grid (positive Jacobian checked). A weakly trained generator gives nearly the same face
for every seed; this makes different seeds give differently shaped faces.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import RefaceError
from ..geometry import Grid
from ..warp import VelocityGrid, exponentiate, jacobian_determinant, local_affine_velocity
from .data import intensity_scale, pyramid
from .finish import finish
from .networks import Generator, sample_latents, upsample
from .prior import fitted_prior, match_contrast

TILE_VOX = 96  # 1 mm tile edge for stages too large to run whole
TILE_OVERLAP_VOX = 16
WHOLE_LIMIT_VOX = 128**3  # stages up to this many voxels run on the whole volume
BLEND_MM = 2.0

# Inference-time shape diversity (see face_deformation); lengths in mm = 1 mm working-grid voxels.
SHAPE_SPACING_MM = 4  # the velocity field lives on every 4th working-grid voxel
SHAPE_FREE_MM = 8.0  # no displacement within this distance of the preserved region
SHAPE_RAMP_MM = 20.0  # ... then the deformation fades in over this distance
SHAPE_PARTS = 10  # local pieces (each with its mirror image)
SHAPE_SIGMA_MM = (12.0, 24.0)  # window width range of a piece
SHAPE_SHIFT_SD_MM = 7.0
SHAPE_LOG_SCALE_SD = 0.3
SHAPE_HEAD_LOG_SCALE_SD = 0.035  # overall head size/shape, per axis
SHAPE_TRUNCATE_SD = 2.2
# variation > 1 (remodel's `variation`) adds broad, low-frequency pieces: whole-face proportions (jaw, cheeks,
# nose and brow region together), with amplitude (variation - 1) x these SDs; the local pieces stay at full.
SHAPE_BROAD_PARTS = 4
SHAPE_BROAD_SIGMA_MM = (28.0, 40.0)
SHAPE_BROAD_SHIFT_SD_MM = 6.0
SHAPE_BROAD_LOG_SCALE_SD = 0.2
SHAPE_HEAD_LEVEL = 0.15  # generated head vs background, normalised units (brain p99 = 1)
SHAPE_MIN_JACOBIAN = 0.2
# The generated face ends this far inside the field of view's front where the input's did (fit_front),
# pressed back along y over a ramp of this length in front of the preserved region.
FRONT_MARGIN_MM = 4.0
FRONT_RAMP_MM = 20.0


def resolve_device(name: str) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RefaceError("--device cuda requested but no CUDA device is available")
        return torch.device("cuda")
    if name != "cpu":
        raise RefaceError(f"unknown device {name!r} (cpu or cuda)")
    return torch.device("cpu")


def _tiles(n: int, size: int, overlap: int) -> list[int]:
    if n <= size:
        return [0]
    starts = list(range(0, n - size, size - overlap)) + [n - size]
    return sorted(set(starts))


def _tile_weight(size: tuple[int, ...], overlap: int, device) -> torch.Tensor:
    ramps = []
    for n in size:
        r = torch.ones(n, device=device)
        edge = torch.linspace(1.0 / (overlap + 1), 1.0, overlap, device=device) if overlap else None
        if edge is not None and n > 2 * overlap:
            r[:overlap], r[-overlap:] = edge, edge.flip(0)
        ramps.append(r)
    return ramps[0][:, None, None] * ramps[1][None, :, None] * ramps[2][None, None, :]


def _stage_tiled(generator: Generator, k: int, cond, mask, noise, z, prev_up, priors) -> torch.Tensor:
    """Stage k on overlapping tiles, blended with tent weights: [1, 1, D, H, W]."""
    shape = cond.shape[2:]
    out = torch.zeros_like(cond)
    weight = torch.zeros_like(cond)
    size = tuple(min(TILE_VOX, n) for n in shape)
    w = _tile_weight(size, TILE_OVERLAP_VOX, cond.device)[None, None]
    whole = Generator.priors(k, priors)
    for a in _tiles(shape[0], size[0], TILE_OVERLAP_VOX):
        for b in _tiles(shape[1], size[1], TILE_OVERLAP_VOX):
            for c in _tiles(shape[2], size[2], TILE_OVERLAP_VOX):
                box = (
                    slice(None),
                    slice(None),
                    slice(a, a + size[0]),
                    slice(b, b + size[1]),
                    slice(c, c + size[2]),
                )
                prior = tuple(p[box] for p in whole)
                tile = generator.stage(k, cond[box], mask[box], noise[box], z, prev_up[box], prior)
                out[box] += tile * w
                weight[box] += w
    return out / weight


@torch.no_grad()
def generate_head(
    generator: Generator,
    volume: np.ndarray,
    preserved: np.ndarray,
    brain: np.ndarray,
    grid: Grid,
    *,
    rng: torch.Generator,
    device: torch.device | str = "cpu",
    shape_diversity: float = 1.0,
    prior: np.ndarray | None = None,
    input_head: np.ndarray | None = None,
    inside: np.ndarray | None = None,
    use_generator: bool = True,
) -> np.ndarray:
    """float32 [X, Y, Z] 1 mm head, subject's intensity scale; `preserved` voxels are the input's.

    `shape_diversity` scales the seeded face deformation (0: the generator's head as it is). `prior`
    (normalised units, contrast-matched as in training) skips fitting the atlas when the caller already has
    it (it does not depend on the seed). `input_head` is the input's head mask (computed when not given):
    it tells air from head for the background and skin statistics; `inside` (the working voxels within
    the input's field of view) keeps the zero padding beyond it out of the background statistics.
    `use_generator=False` skips the GAN (prior, deformation and finishing only), to measure what the
    generator adds."""
    cfg = generator.cfg
    if tuple(volume.shape) != tuple(cfg.work_shape):
        raise RefaceError(f"volume {volume.shape} is not on the model's working grid {cfg.work_shape}")
    device = torch.device(device)
    scale = intensity_scale(volume, brain)
    norm = volume.astype(np.float32) / scale
    if prior is None:
        prior = match_contrast(fitted_prior(norm, brain, grid), norm, preserved)
    levels = pyramid(norm, preserved, cfg.scales_mm, prior)

    def stack(name: str) -> list[torch.Tensor]:
        return [torch.from_numpy(levels[s][name])[None, None].to(device) for s in cfg.scales_mm]

    conds, masks, priors = stack("cond"), stack("mask"), stack("prior")
    z, noises = sample_latents(cfg, 1, [tuple(c.shape[2:]) for c in conds], rng, device)
    finest = cfg.scales_mm[-1]
    fine_prior = torch.from_numpy(np.asarray(prior, np.float32))[None, None].to(device)
    if use_generator:
        out = None
        for k in range(cfg.n_stages):
            prev_up = None if k == 0 else upsample(out, conds[k].shape[2:])
            if k > 0 and conds[k].numel() > WHOLE_LIMIT_VOX:
                out = _stage_tiled(generator, k, conds[k], masks[k], noises[k], z, prev_up, priors)
            else:
                out = generator.stage(k, conds[k], masks[k], noises[k], z, prev_up, Generator.priors(k, priors))
        # a model coarser than 1 mm: its change over the prior, on the prior's own 1 mm detail
        head = fine_prior + upsample(out - priors[-1], volume.shape) if finest > 1 else out
    else:
        head = fine_prior
    shape_seed = int(torch.randint(0, 2**62, (1,), generator=rng))
    if shape_diversity > 0:
        coarse_head = head[0, 0, ::SHAPE_SPACING_MM, ::SHAPE_SPACING_MM, ::SHAPE_SPACING_MM].float().cpu().numpy()
        disp = face_deformation(
            preserved, coarse_head, np.random.default_rng(shape_seed), amount=shape_diversity
        )
        head = warp(head, disp)
    if inside is not None:
        head = fit_front(head, preserved, inside, input_head)
    smooth_head = match_contrast(head[0, 0].float().cpu().numpy(), norm, preserved)
    if finest > 1:
        head = head + _texture(norm, preserved, head, finest, rng, device)
        tissue = match_contrast(head[0, 0].float().cpu().numpy(), norm, preserved)
    else:
        tissue = smooth_head
    if input_head is None:
        from ..masks import head_mask

        input_head = head_mask(norm) | preserved
    finish_rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=rng)))
    # the skin follows the head before its texture: white noise at the subject's level, read by the mask on a
    # 2 mm sample and smoothed, made gyrus-sized bumps on the forehead (the MNI crop's int16 detail is strong)
    result, _alpha = finish(tissue, norm, preserved, input_head, finish_rng, inside=inside, surface=smooth_head)
    result = _blend_seam(result, norm, preserved)
    if volume.min() >= 0:
        result = np.clip(result, 0, None)
    return (result * scale).astype(np.float32)


def _texture(
    norm: np.ndarray, preserved: np.ndarray, head: torch.Tensor, factor: int, rng: torch.Generator, device
) -> torch.Tensor:
    """Noise at the subject's own high-frequency level (robust scalar estimates, head and background)."""
    from ..geometry import downsample

    coarse = torch.from_numpy(downsample(norm, factor).astype(np.float32))[None, None]
    detail = norm - upsample(coarse, norm.shape)[0, 0].numpy()
    fg = ~preserved & (norm > 0.1)

    def mad(values: np.ndarray) -> float:
        if values.size < 100:
            return 0.0
        values = values[:: max(1, values.size // 200_000)]
        return float(1.4826 * np.median(np.abs(values - np.median(values))))

    noise = torch.randn(tuple(head.shape), generator=rng).to(device)
    return noise * mad(detail[fg])  # tissue only: `finish` replaces the air with the input's own


def _blend_seam(head: np.ndarray, norm: np.ndarray, preserved: np.ndarray) -> np.ndarray:
    """Ramp from the input (at the preserved border) to the generated head over BLEND_MM (box filter)."""
    from scipy import ndimage as ndi

    pad = int(BLEND_MM) + 1
    idx = np.nonzero(preserved)
    if not idx[0].size:
        return head
    box = tuple(
        slice(max(int(i.min()) - pad, 0), min(int(i.max()) + pad + 1, n))
        for i, n in zip(idx, preserved.shape, strict=True)
    )
    frac = ndi.uniform_filter(preserved[box].astype(np.float32), size=2 * int(BLEND_MM) + 1, mode="constant")
    alpha = np.where(preserved[box], 1.0, np.clip(2.0 * frac, 0.0, 1.0)).astype(np.float32)
    out = head.copy()
    out[box] = alpha * norm[box] + (1.0 - alpha) * head[box]
    return out


def _coarse_preserved(preserved: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Coarse node (i, j, k) at voxel SHAPE_SPACING_MM * (i, j, k): any preserved voxel in its cell."""
    step, half = SHAPE_SPACING_MM, SHAPE_SPACING_MM // 2
    padded = np.zeros(tuple(n * step for n in shape), bool)
    fine = preserved[: padded.shape[0] - half, : padded.shape[1] - half, : padded.shape[2] - half]
    padded[half : half + fine.shape[0], half : half + fine.shape[1], half : half + fine.shape[2]] = fine
    blocks = padded.reshape(shape[0], step, shape[1], step, shape[2], step)
    return blocks.any(axis=(1, 3, 5))


def face_deformation(
    preserved: np.ndarray, coarse_head: np.ndarray, rng: np.random.Generator, *, amount: float = 1.0
) -> np.ndarray:
    """A random smooth diffeomorphism's displacement [3, x, y, z] (voxels = mm) on the coarse grid.

    Node (i, j, k) sits at working-grid voxel SHAPE_SPACING_MM * (i, j, k) (see `warp`). `coarse_head`
    is the generated head sampled at those nodes (normalised units). The velocity is a sum of
    Gaussian-windowed local affine pieces centred on the generated face surface (in front of or below
    the preserved region), each paired with its mirror image about the preserved region's mid-sagittal
    plane, plus an overall anisotropic scaling about the preserved centroid; it is zero within
    SHAPE_FREE_MM of the preserved region and fades in over SHAPE_RAMP_MM. Shrunk until det J >
    SHAPE_MIN_JACOBIAN everywhere (exp(v) never folds). `amount` <= 1 scales all of it; above 1 the above
    stays at full and SHAPE_BROAD_PARTS broad pieces (mirrored likewise) are added with amplitude
    (amount - 1): larger, lower-frequency changes of the face's proportions.
    """
    from scipy import ndimage as ndi

    shape = tuple(-(-(n - 1) // SHAPE_SPACING_MM) + 1 for n in preserved.shape)
    assert coarse_head.shape[:3] == tuple(-(-n // SHAPE_SPACING_MM) for n in preserved.shape)
    head = np.zeros(shape, bool)
    sub = coarse_head > SHAPE_HEAD_LEVEL
    head[: sub.shape[0], : sub.shape[1], : sub.shape[2]] = sub
    grid = VelocityGrid(shape=shape, origin=np.zeros(3), spacing=float(SHAPE_SPACING_MM))
    points = grid.points()  # [3, x, y, z] in working-grid voxels
    near = _coarse_preserved(preserved, shape)
    if not near.any():
        return np.zeros((3, *shape), np.float32)
    dist = ndi.distance_transform_edt(~near) * SHAPE_SPACING_MM
    ramp = np.clip((dist - SHAPE_FREE_MM) / SHAPE_RAMP_MM, 0.0, 1.0)
    weight = (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)  # smoothstep: C1 at both ends

    def truncnorm(sd, size):
        return np.clip(rng.standard_normal(size), -SHAPE_TRUNCATE_SD, SHAPE_TRUNCATE_SD) * sd

    inside = np.nonzero(preserved)
    centre = np.array([float(i.mean()) for i in inside], np.float32)
    lowest = float(inside[2].min())
    log_scale = truncnorm(SHAPE_HEAD_LOG_SCALE_SD, 3).astype(np.float32)
    velocity = log_scale.reshape(3, 1, 1, 1) * (points - centre.reshape(3, 1, 1, 1))
    surface = head & ~ndi.binary_erosion(head)
    face = surface & (weight > 0.5) & ((points[1] > centre[1] + 20.0) | (points[2] < lowest))
    candidates = np.argwhere(face)

    def mirrored_pieces(out, count, sigma_mm, shift_sd, log_scale_sd) -> np.ndarray:
        """Add local affine pieces at random face nodes to `out`, each paired with its left-right mirror."""
        picks = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
        for node in candidates[np.sort(picks)]:
            part = node.astype(np.float32) * SHAPE_SPACING_MM
            sigma = rng.uniform(*sigma_mm)
            shift = truncnorm(shift_sd, 3)
            scale = truncnorm(log_scale_sd, 3)
            mirror = np.array([2.0 * centre[0] - part[0], part[1], part[2]], np.float32)
            out += 0.5 * local_affine_velocity(points, part, sigma, scale, shift)
            out += 0.5 * local_affine_velocity(points, mirror, sigma, scale, shift * [-1.0, 1.0, 1.0])
        return out

    if len(candidates):
        mirrored_pieces(velocity, SHAPE_PARTS, SHAPE_SIGMA_MM, SHAPE_SHIFT_SD_MM, SHAPE_LOG_SCALE_SD)
    amount = float(amount)
    velocity *= min(amount, 1.0)
    if amount > 1.0 and len(candidates):  # drawn after the pieces above: variation <= 1 is unchanged
        broad = mirrored_pieces(np.zeros_like(velocity), SHAPE_BROAD_PARTS, SHAPE_BROAD_SIGMA_MM,
                                SHAPE_BROAD_SHIFT_SD_MM, SHAPE_BROAD_LOG_SCALE_SD)
        velocity += (amount - 1.0) * broad
    velocity *= weight[None]
    for _ in range(8):
        disp = exponentiate(velocity, grid)
        if float(jacobian_determinant(disp, grid.spacing).min()) > SHAPE_MIN_JACOBIAN:
            return disp
        velocity *= 0.7
    return np.zeros((3, *shape), np.float32)  # unreachable in practice: keep the generator's head


def _front(mask: np.ndarray) -> np.ndarray:
    """Per (x, z) column of an [X, Y, Z] mask: the largest y in it, -1 where the column is empty."""
    any_ = mask.any(axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1, :], axis=1)
    return np.where(any_, last, -1)


def _envelope(values: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """A smooth upper envelope of a 2D map: max filter, then Gaussian (the peak keeps ~99 % of itself)."""
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(ndi.maximum_filter(values, size=size, mode="nearest"), sigma, mode="nearest")


def fit_front(head: torch.Tensor, preserved: np.ndarray, inside: np.ndarray,
              input_head: np.ndarray | None) -> torch.Tensor:
    """Press the generated face back until it ends FRONT_MARGIN_MM inside the field of view (working grid,
    +y = anterior), or no further forward than the input's own head where that reached closer to the edge:
    a face cut by the field of view renders as a flat, bright plane (the MNI box, whose front is 2 mm from
    the nose, cut 10-20 mm off the generated face).

    Each (x, z) column is sampled at y + k ramp(y - y0): zero behind y0 (the preserved region's front, or
    its centre where the column misses it), a quadratic ramp over FRONT_RAMP_MM, then linear. k and y0 are
    smooth upper envelopes over the columns, so the warp has no seams, and dy_sampled/dy >= 1 (no folds).

    Only columns that leave the field of view through its front count, where the front's tilt is under 45
    degrees: where a tilted bottom or side cuts a column short, its last voxel inside is no front (pydeface's
    oblique mean head lost a cheek to it)."""
    step = 2  # columns every 2 mm
    sub = (slice(None, None, step), slice(None), slice(None, None, step))
    fov = _front(inside[sub]).astype(np.float64)
    tilt = np.maximum(*(np.abs(np.gradient(fov, step, axis=a)) for a in (0, 1)))
    fov[tilt > 1.0] = -1.0
    limit = fov - FRONT_MARGIN_MM
    if input_head is not None:
        limit = np.maximum(limit, np.minimum(_front(input_head[sub]), fov))
    front = _front(head[0, 0].float().cpu().numpy()[sub] > SHAPE_HEAD_LEVEL).astype(np.float64)
    own = _front(preserved[sub]).astype(np.float64)
    if not preserved.any():
        return head
    centre = float(np.nonzero(preserved)[1].mean())
    y0 = _envelope(np.maximum(own, centre), 11, 2.0)

    def ramp(t):
        t = np.maximum(t, 0.0)
        return np.where(t < FRONT_RAMP_MM, t * t / (2.0 * FRONT_RAMP_MM), t - FRONT_RAMP_MM / 2.0)

    over = (front > limit) & (fov >= 0) & (front >= 0) & (limit > y0 + 2.0)
    if not over.any():
        return head
    need = np.zeros_like(fov)
    need[over] = (front[over] - limit[over]) / ramp(limit[over] - y0[over])
    k = _envelope(need, 11, 2.0) / 0.98
    size = tuple(head.shape[2:])
    from scipy import ndimage as ndi

    def full(a: np.ndarray) -> torch.Tensor:  # a column map back to every (x, z)
        out = ndi.zoom(a, [n / m for n, m in zip((size[0], size[2]), a.shape, strict=True)], order=1,
                       grid_mode=True, mode="nearest")[: size[0], : size[2]]
        return torch.from_numpy(np.ascontiguousarray(out, np.float32))[:, None, :]

    y = torch.arange(size[1], dtype=torch.float32)[None, :, None]
    own_full = torch.from_numpy(_front(preserved).astype(np.float32))[:, None, :]
    t = torch.clamp(y - torch.maximum(full(y0), own_full), min=0.0)  # never in front of the preserved region
    shift = full(k) * torch.where(t < FRONT_RAMP_MM, t * t / (2.0 * FRONT_RAMP_MM), t - FRONT_RAMP_MM / 2.0)
    axes = [torch.arange(n, dtype=torch.float32) for n in size]
    coords = [axes[0].view(-1, 1, 1).expand(size), (y + shift).expand(size), axes[2].view(1, 1, -1).expand(size)]
    grid = torch.stack([2.0 * c / (n - 1) - 1.0 for c, n in zip(coords, size, strict=True)][::-1], dim=-1)[None]
    moved = torch.nn.functional.grid_sample(
        head.float().cpu(), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    # unmoved voxels keep their values exactly (the sampling's arithmetic is not exact at whole voxels)
    return torch.where((shift == 0).expand(size)[None, None], head.float().cpu(), moved).to(head.device, head.dtype)


def warp(head: torch.Tensor, disp: np.ndarray) -> torch.Tensor:
    """head [1, 1, X, Y, Z] resampled at x + u(x), u the coarse displacement `disp` [3, x, y, z] (voxels)
    upsampled trilinearly (node (i, j, k) = voxel SHAPE_SPACING_MM * (i, j, k))."""
    size = tuple(head.shape[2:])
    assert head.ndim == 5 and disp.shape[0] == 3, (head.shape, disp.shape)
    fine = [(n - 1) * SHAPE_SPACING_MM + 1 for n in disp.shape[1:]]
    assert all(f >= s for f, s in zip(fine, size, strict=True)), (fine, size)
    u = torch.nn.functional.interpolate(
        torch.from_numpy(disp)[None], size=fine, mode="trilinear", align_corners=True
    )[0, :, : size[0], : size[1], : size[2]]  # [3, X, Y, Z]
    axes = [torch.arange(n, dtype=torch.float32) for n in size]
    # grid_sample wants [N, X, Y, Z, 3] with the last axis ordered (Z, Y, X), in [-1, 1] (corners).
    coords = [(2.0 * (axes[a].view([-1 if b == a else 1 for b in range(3)]) + u[a]) / (size[a] - 1) - 1.0)
              for a in range(3)]
    grid = torch.stack(coords[::-1], dim=-1)[None]
    return torch.nn.functional.grid_sample(
        head.float().cpu(), grid, mode="bilinear", padding_mode="border", align_corners=True
    ).to(head.device, head.dtype)

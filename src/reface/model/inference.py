"""Inference: a new head around one brain, on the 1 mm working grid, in the subject's intensity scale.

The generator runs coarse to fine on whole volumes (a 1 mm stage, when the model has one, runs in
overlapping tiles). A model whose finest scale is coarser than 1 mm is upsampled to 1 mm and given
high-frequency texture: Gaussian noise whose level is the subject's own robust noise level (a scalar,
not an image of the face). Within 2 mm of the preserved region the output ramps to the input, so the
seam around the pasted brain is not a step.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import RefaceError
from .data import intensity_scale, pyramid
from .networks import Generator, sample_latents, upsample

TILE_VOX = 96  # 1 mm tile edge for stages too large to run whole
TILE_OVERLAP_VOX = 16
WHOLE_LIMIT_VOX = 128**3  # stages up to this many voxels run on the whole volume
BLEND_MM = 2.0


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


def _stage_tiled(generator: Generator, k: int, cond, mask, noise, z, prev_up) -> torch.Tensor:
    """Stage k on overlapping tiles, blended with tent weights: [1, 1, D, H, W]."""
    shape = cond.shape[2:]
    out = torch.zeros_like(cond)
    weight = torch.zeros_like(cond)
    size = tuple(min(TILE_VOX, n) for n in shape)
    w = _tile_weight(size, TILE_OVERLAP_VOX, cond.device)[None, None]
    priors = generator.priors(k)
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
                prior = tuple(p[box] for p in priors)
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
    *,
    rng: torch.Generator,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """float32 [X, Y, Z] 1 mm head, subject's intensity scale; `preserved` voxels are the input's."""
    cfg = generator.cfg
    if tuple(volume.shape) != tuple(cfg.work_shape):
        raise RefaceError(f"volume {volume.shape} is not on the model's working grid {cfg.work_shape}")
    device = torch.device(device)
    scale = intensity_scale(volume, brain)
    norm = volume.astype(np.float32) / scale
    levels = pyramid(norm, preserved, cfg.scales_mm)
    conds = [torch.from_numpy(levels[s]["cond"])[None, None].to(device) for s in cfg.scales_mm]
    masks = [torch.from_numpy(levels[s]["mask"])[None, None].to(device) for s in cfg.scales_mm]
    z, noises = sample_latents(cfg, 1, [tuple(c.shape[2:]) for c in conds], rng, device)
    out = None
    for k in range(cfg.n_stages):
        prev_up = None if k == 0 else upsample(out, conds[k].shape[2:])
        if k > 0 and conds[k].numel() > WHOLE_LIMIT_VOX:
            out = _stage_tiled(generator, k, conds[k], masks[k], noises[k], z, prev_up)
        else:
            out = generator.stage(k, conds[k], masks[k], noises[k], z, prev_up)
    finest = cfg.scales_mm[-1]
    head = upsample(out, volume.shape) if finest > 1 else out
    if finest > 1:
        head = head + _texture(norm, preserved, head, finest, rng, device)
    result = _blend_seam(head[0, 0].float().cpu().numpy(), norm, preserved) * scale
    if volume.min() >= 0:
        result = np.clip(result, 0, None)
    return result.astype(np.float32)


def _texture(
    norm: np.ndarray, preserved: np.ndarray, head: torch.Tensor, factor: int, rng: torch.Generator, device
) -> torch.Tensor:
    """Noise at the subject's own high-frequency level (robust scalar estimates, head and background)."""
    from ..geometry import downsample

    coarse = torch.from_numpy(downsample(norm, factor).astype(np.float32))[None, None]
    detail = norm - upsample(coarse, norm.shape)[0, 0].numpy()
    outside = ~preserved
    fg = outside & (norm > 0.1)
    bg = outside & (norm <= 0.1)

    def mad(values: np.ndarray) -> float:
        if values.size < 100:
            return 0.0
        values = values[:: max(1, values.size // 200_000)]
        return float(1.4826 * np.median(np.abs(values - np.median(values))))

    sigma_fg, sigma_bg = mad(detail[fg]), mad(detail[bg])
    noise = torch.randn(tuple(head.shape), generator=rng).to(device)
    sigma = torch.where(head > 0.1, sigma_fg, sigma_bg)
    return noise * sigma


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

"""Realism invariants of a generated head: a clean skin surface and the input's own background.

The generator (and the prior under it) leaves faint signal in the air: the GAN's bounded change, texture
noise at tissue level, blurred template skin. Rendered, that is speckle in the air and an orange-peel
skin; on slices, a noise-textured halo. `finish` imposes what every real scan satisfies:
- one head: the generated head's mask (Otsu level, largest component, closed over pits narrower than
  ~12 mm, holes filled) on a 2 mm grid, smoothed to a closed surface with no bumps below ~3 mm; it always
  covers the preserved region plus a few mm of scalp, so the pasted brain never pokes through the skin
  (the "disc" at the vertex);
- a skin shell: the outer ~3 mm of that surface is at least the subject's own skin level (a global scalar
  read from the input's outer shell), so the surface a renderer finds is the smooth mask, not noise on a
  blurred template gradient, and eye sockets close over (lids, not holes);
- the input's background: every voxel outside the new head is drawn i.i.d. from the input's own air
  (voxels 6-30 mm outside the input head). A zero background stays exactly zero; a noisy one gets noise
  with the same distribution. No spatial information of the input's air is reused.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .. import parallel
from ..air import background_sampler

COARSE = 2  # mm: masks and distances are computed on every 2nd voxel
COVER_MM = 4  # the new head covers the preserved region grown by this much (then smoothed)
COVER_SMOOTH_MM = 4.0
SURFACE_SIGMA_MM = 2.0  # smoothing of the head mask: the skin's smallest bumps
# Closing radius of the head mask: the average template's eye region and nasal bridge are dim (its eyes,
# averaged), so its Otsu mask has pits there that rendered as dark eye holes on some seeds.
CLOSE_MM = 6
EDGE_WIDTH = 0.3  # the skin edge: alpha ramps over this band of the smoothed mask (~1.5 mm)
SHELL_TOP = 0.95  # smoothed-mask value where the skin shell has faded out (~3 mm deep)
SHELL_WIDTH = 0.15


def air_values(norm: np.ndarray, input_head: np.ndarray) -> np.ndarray:
    """The input's air sample itself (for tests and metrics): see `background_sampler`."""
    draw = background_sampler(norm, input_head)
    return draw(np.random.default_rng(0), 100_000)


def skin_level(norm: np.ndarray, input_head: np.ndarray, preserved: np.ndarray) -> float:
    """Median intensity of the input head's outer 3 mm shell outside the preserved region (a scalar)."""
    coarse = input_head[::COARSE, ::COARSE, ::COARSE]
    shell = coarse & ~ndi.binary_erosion(coarse, iterations=2) & ~preserved[::COARSE, ::COARSE, ::COARSE]
    values = norm[::COARSE, ::COARSE, ::COARSE][shell]
    return float(np.median(values)) if values.size > 100 else 0.0


def _close(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing with a ball, padded so that the field of view's edge does not erode the head."""
    if radius <= 0:
        return mask
    g = np.arange(-radius, radius + 1) ** 2
    ball = np.add.outer(np.add.outer(g, g), g) <= radius * radius
    pad = radius + 1
    closed = ndi.binary_closing(np.pad(mask, pad), structure=ball)
    return closed[pad:-pad, pad:-pad, pad:-pad] | mask


def head_alpha(head: np.ndarray, preserved: np.ndarray) -> np.ndarray:
    """Smoothed mask of the generated head, in [0, 1], on the 1 mm grid (0.5 = the skin surface).

    Smoothed on the 2 mm grid and brought to 1 mm by linear interpolation: a nearest-neighbour upsampling
    leaves 2 mm terraces that a renderer shows as contour lines on the skin."""
    from ..masks import head_mask

    coarse = head[::COARSE, ::COARSE, ::COARSE]
    mask = ndi.binary_fill_holes(_close(head_mask(coarse), CLOSE_MM // COARSE))
    soft = parallel.gaussian_filter(mask.astype(np.float32), SURFACE_SIGMA_MM / COARSE)
    # the preserved region's envelope, as a soft union: a gentle bulge where the generated skin runs
    # closer to the brain than COVER_MM, never a ridge of its own
    cover = ndi.binary_dilation(preserved[::COARSE, ::COARSE, ::COARSE], iterations=max(1, COVER_MM // COARSE))
    soft = np.maximum(soft, parallel.gaussian_filter(cover.astype(np.float32), COVER_SMOOTH_MM / COARSE))
    factors = [n / m for n, m in zip(head.shape, soft.shape, strict=True)]
    fine = ndi.zoom(soft, factors, order=1, grid_mode=True, mode="nearest")
    if fine.shape != head.shape:  # rounding in zoom: pad or crop the last plane
        fine = np.pad(fine, [(0, max(0, n - m)) for n, m in zip(head.shape, fine.shape, strict=True)], mode="edge")
        fine = fine[: head.shape[0], : head.shape[1], : head.shape[2]]
    return np.clip(fine, 0.0, 1.0)


def finish(
    tissue: np.ndarray,
    norm: np.ndarray,
    preserved: np.ndarray,
    input_head: np.ndarray,
    rng: np.random.Generator,
    *,
    inside: np.ndarray | None = None,
    surface: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generated tissue (normalised) -> (head in the input's background, alpha). Same shape, float32.

    `surface`: the tissue before its fine texture noise, whose mask is the skin (default: `tissue`)."""
    smooth = head_alpha(tissue if surface is None else surface, preserved)
    alpha = np.clip((smooth - 0.5) / EDGE_WIDTH + 0.5, 0.0, 1.0).astype(np.float32)
    skin = skin_level(norm, input_head, preserved)
    if skin > 0:
        shell = np.clip((SHELL_TOP - smooth) / SHELL_WIDTH, 0.0, 1.0) * (smooth > 0.2)
        tissue = np.maximum(tissue, (skin * shell).astype(np.float32))
    out = alpha * tissue
    air = alpha < 1.0
    draw = background_sampler(norm, input_head, inside)
    out[air] += (1.0 - alpha[air]) * draw(rng, int(air.sum()))
    return out.astype(np.float32), alpha

"""The realism invariants of a generated head (reface.model.finish): the input's own background, a smooth
closed skin that covers the preserved region. Small synthetic volumes, no model."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from reface.air import background_sampler
from reface.model.finish import finish, head_alpha


def _ball(shape, centre, radius):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius


SHAPE = (64, 64, 64)
HEAD = _ball(SHAPE, (32, 32, 32), 24)
PRESERVED = _ball(SHAPE, (32, 32, 34), 14)


def _input(background: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    norm = np.where(HEAD, 0.6, 0.0).astype(np.float32)
    if background:
        norm = norm + np.abs(rng.normal(0, background, SHAPE)).astype(np.float32) * ~HEAD
    return norm


def _tissue(seed: int = 1) -> np.ndarray:
    """A generated head: a slightly different ball with faint speckle in the air (what the GAN leaves)."""
    rng = np.random.default_rng(seed)
    head = _ball(SHAPE, (31, 33, 31), 25)
    return (np.where(head, 0.5, 0.0) + np.abs(rng.normal(0, 0.03, SHAPE))).astype(np.float32)


def test_zero_background_stays_exactly_zero():
    out, alpha = finish(_tissue(), _input(0.0), PRESERVED, HEAD, np.random.default_rng(0))
    assert np.all(out[alpha == 0] == 0)
    assert (alpha == 0).sum() > 0.3 * out.size  # most of the box is air
    assert out[alpha == 1].min() > 0


def test_noisy_background_gets_the_inputs_noise_statistics():
    norm = _input(0.02)
    out, alpha = finish(_tissue(), norm, PRESERVED, HEAD, np.random.default_rng(0))
    far = ~ndi.binary_dilation(alpha > 0, iterations=3)
    air_in = norm[~ndi.binary_dilation(HEAD, iterations=6)]
    assert abs(np.mean(out[far]) - np.mean(air_in)) < 0.1 * np.mean(air_in)
    assert abs(np.std(out[far]) - np.std(air_in)) < 0.1 * np.std(air_in)
    # nothing outside the head rises above the input's own noise ceiling (the GAN's speckle is gone)
    assert np.mean(out[far] > np.percentile(air_in, 99.9)) < 0.003


def test_background_is_not_the_inputs_air_copied():
    norm = _input(0.02)
    out, alpha = finish(_tissue(), norm, PRESERVED, HEAD, np.random.default_rng(0))
    far = alpha == 0
    assert np.corrcoef(out[far], norm[far])[0, 1] < 0.05


def test_skin_is_smooth_closed_and_covers_the_preserved_region():
    tissue = _tissue()
    shrunk = tissue * _ball(SHAPE, (32, 32, 32), 15)  # a generated head smaller than the preserved region
    smooth = head_alpha(shrunk, PRESERVED)
    surface = smooth > 0.5
    assert surface[PRESERVED].all()  # the pasted brain never pokes through the skin
    assert ndi.label(surface)[1] == 1
    # no 2 mm terraces: the smoothed mask varies gently between neighbouring voxels
    assert np.abs(np.diff(smooth, axis=0)).max() < 0.35


def test_sampler_ignores_zeros_outside_the_field_of_view_of_a_noisy_scan():
    norm = _input(0.02)
    norm[:, :, :4] = 0  # zero padding beyond the acquired field of view
    draw = background_sampler(norm, HEAD)
    values = draw(np.random.default_rng(0), 10_000)
    assert np.mean(values == 0) < 0.01
    assert np.all(background_sampler(_input(0.0), HEAD)(np.random.default_rng(0), 100) == 0)


def test_a_dim_groove_in_the_template_is_closed_over():
    """The average template's eyes and nasal bridge are dim: its mask had a groove there that rendered as
    dark eye pits. A groove open at both ends survives the mask's hole filling; the closing takes it."""
    g = np.indices(SHAPE)
    head = _ball(SHAPE, (32, 32, 32), 25)  # front surface at y = 57
    groove = np.hypot(g[1] - 55, g[2] - 36) <= 4  # across the whole face, 4 mm deep under the skin
    smooth = head_alpha(np.where(head & ~groove, 0.5, 0.0).astype(np.float32), PRESERVED)
    assert smooth[32, 56, 36] > 0.5  # the skin runs over the groove (without the closing: 0.35)
    assert smooth[32, 59, 36] < 0.5  # ... without growing beyond the ball


def test_the_skin_follows_the_head_before_its_texture_noise():
    """Texture noise at tissue level, read by the mask on a 2 mm sample, made bumps on the skin (the MNI
    crop's forehead); with `surface` the skin is the noise-free head's, and the noise stays inside."""
    norm = _input(0.0)
    clean = np.where(_ball(SHAPE, (31, 33, 31), 25), 0.5, 0.0).astype(np.float32)
    noisy = clean + np.random.default_rng(3).normal(0, 0.25, SHAPE).astype(np.float32) * (clean > 0)
    _, alpha_clean = finish(clean, norm, PRESERVED, HEAD, np.random.default_rng(0))
    out, alpha = finish(noisy, norm, PRESERVED, HEAD, np.random.default_rng(0), surface=clean)
    _, alpha_noisy = finish(noisy, norm, PRESERVED, HEAD, np.random.default_rng(0))
    assert np.array_equal(alpha, alpha_clean)
    assert np.abs(alpha_noisy - alpha_clean).max() > 0.2  # (without it the noise moves the skin)
    assert out[alpha == 1].std() > 0.1  # the texture is kept inside

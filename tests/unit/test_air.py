"""Fresh air on the input grid (reface.air.refresh_air): the input's grain and its bright bands come back,
drawn afresh, never copied. Small synthetic volumes, no model."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from reface.air import air_correlation, correlated_uniforms, grain_sigma, input_air, refresh_air

SHAPE = (80, 80, 80)
ZOOMS = (1.0, 1.0, 1.0)


def _ball(centre, radius):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1)
    return np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius


HEAD = _ball((40, 40, 40), 18)
NEW_HEAD = _ball((40, 42, 40), 16)  # the generated head: a little smaller, so new air appears where the old was


def _scan(seed: int = 0) -> np.ndarray:
    """A head in grainy Rician-like air (smoothed noise), with a bright ghost slab across z."""
    rng = np.random.default_rng(seed)
    grain = ndi.gaussian_filter(rng.standard_normal(SHAPE), 1.0)
    grain /= grain.std()
    air = np.abs(10 + 4 * grain)
    air[:, :, 24:62] *= 2.5  # a ghost band: brighter air in a slab, as phase-encoding ghosts make
    return np.where(HEAD, 200.0, air).astype(np.float32)


def _generated(scan: np.ndarray, seed: int = 1) -> np.ndarray:
    """A method's output: the new head in white air (what the working grid gave back)."""
    rng = np.random.default_rng(seed)
    return np.where(NEW_HEAD, 180.0, 12 + 3 * rng.standard_normal(SHAPE)).astype(np.float32)


def _far(*heads):
    return ~ndi.binary_dilation(np.logical_or.reduce(heads), iterations=8)


def test_correlated_uniforms_are_uniform_with_the_asked_grain():
    where = np.ones((48, 48, 48), bool)
    u = correlated_uniforms(where, (0.5, 0.5, 0.5), np.random.default_rng(0)).reshape(where.shape)
    assert abs(u.mean() - 0.5) < 0.02 and abs(np.percentile(u, 10) - 0.1) < 0.03
    assert np.all((u >= 0) & (u < 1))
    rho = air_correlation(u, where)
    assert all(0.35 < r < 0.6 for r in rho)  # ranks of a field with latent lag-1 correlation 0.5
    white = air_correlation(correlated_uniforms(where, (0, 0, 0), np.random.default_rng(0)).reshape(where.shape),
                            where)
    assert all(abs(r) < 0.05 for r in white)


def test_grain_sigma_inverts_the_lag1_correlation():
    assert grain_sigma(0.0) == 0.0
    assert grain_sigma(0.3) < grain_sigma(0.6) < grain_sigma(0.9)


def test_fresh_air_keeps_the_inputs_grain_and_ghost_band_without_copying_it():
    data = _scan()
    new = _generated(data)
    out = refresh_air(data, new, HEAD, NEW_HEAD, ZOOMS, np.random.default_rng(0))
    far = _far(HEAD, NEW_HEAD)
    grain_in, grain_out = air_correlation(data, far), air_correlation(out, far)
    assert all(abs(a - b) < 0.12 for a, b in zip(grain_in, grain_out, strict=True)), (grain_in, grain_out)
    assert all(r > 0.3 for r in grain_out)  # i.i.d. draws give ~0 here: speckle
    band, rest = np.zeros(SHAPE, bool), np.ones(SHAPE, bool)
    rest[:, :, 16:70] = False
    band[:, :, 32:54] = True
    for data_or_out in (data, out):  # the ghost band stays ~2.5x brighter than the rest of the air
        ratio = np.median(data_or_out[far & band]) / np.median(data_or_out[far & rest])
        assert 2.0 < ratio < 3.0, ratio
    assert abs(np.std(out[far & rest]) - np.std(data[far & rest])) < 0.2 * np.std(data[far & rest])
    assert abs(np.corrcoef(out[far], data[far])[0, 1]) < 0.5  # drawn afresh: only the band is shared
    assert np.all(out[NEW_HEAD] == new[NEW_HEAD])  # the generated head itself is untouched


def test_fresh_air_keeps_a_zero_background_zero():
    data = np.where(HEAD, 200.0, 0.0).astype(np.float32)
    out = refresh_air(data, _generated(data), HEAD, NEW_HEAD, ZOOMS, np.random.default_rng(0))
    assert np.all(out[_far(HEAD, NEW_HEAD)] == 0)


def test_input_air_found_ahead_gives_the_same_draw():
    """deidentify finds the input's air statistics while the method runs: the draw must not change."""
    data = _scan()
    new = _generated(data)
    ahead = input_air(data, HEAD, ZOOMS)
    assert not ahead.zero and ahead.z_table is not None
    alone = refresh_air(data, new, HEAD, NEW_HEAD, ZOOMS, np.random.default_rng(5))
    given = refresh_air(data, new, HEAD, NEW_HEAD, ZOOMS, np.random.default_rng(5), model=ahead)
    assert np.array_equal(alone, given)
    assert input_air(np.where(HEAD, 200.0, 0.0).astype(np.float32), HEAD, ZOOMS).zero

"""The realism metrics: each one rises for the defect it names and stays low on a clean head."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from reface.evaluate.realism import background_speckle, edge_sharpness, surface_roughness

SHAPE = (72, 72, 72)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = -71.0
GRID = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1) - 35.5


def _head(bumps: float = 0.0) -> np.ndarray:
    radius = np.linalg.norm(GRID, axis=-1)
    angle = np.arctan2(GRID[..., 1], GRID[..., 0])
    polar = np.arccos(np.clip(GRID[..., 2] / np.maximum(radius, 1e-6), -1, 1))
    surface = 26 + bumps * np.sin(30 * angle) * np.sin(30 * polar)
    return ndi.gaussian_filter((radius <= surface).astype(np.float32), 0.7) * 100


def test_background_speckle_counts_signal_in_the_air_only():
    head = _head()
    mask = head > 50
    clean = background_speckle(head, mask, (2.0, 2.0, 2.0), 5.0)
    speckled = head.copy()
    rng = np.random.default_rng(0)
    air = ~ndi.binary_dilation(mask, iterations=4)
    speckled[air & (rng.random(SHAPE) < 0.1)] = 30.0
    assert clean == 0.0
    assert 0.07 < background_speckle(speckled, mask, (2.0, 2.0, 2.0), 5.0) < 0.13


def test_surface_roughness_is_higher_for_a_bumpy_skin():
    smooth = surface_roughness(_head(), AFFINE, size=96)
    bumpy = surface_roughness(_head(bumps=1.0), AFFINE, size=96)
    assert bumpy > 2 * smooth


def test_edge_sharpness_falls_when_the_layers_blur():
    head = _head()
    region = head > 1
    sharp = edge_sharpness(head, region, (2.0, 2.0, 2.0), 100.0)
    blurred = edge_sharpness(ndi.gaussian_filter(head, 2.0), region, (2.0, 2.0, 2.0), 100.0)
    assert blurred < 0.7 * sharp


def test_background_grain_tells_white_speckle_from_a_scans_grainy_air():
    from reface.evaluate.realism import background_grain

    head = _head()
    mask = head > 50
    rng = np.random.default_rng(0)
    white = head + np.abs(rng.normal(0, 5, SHAPE)) * ~mask
    grainy = head + np.abs(10 + 5 * ndi.gaussian_filter(rng.normal(0, 1, SHAPE), 1.0) / 0.2) * ~mask
    assert abs(background_grain(white, mask, (2.0, 2.0, 2.0))) < 0.05
    assert background_grain(grainy, mask, (2.0, 2.0, 2.0)) > 0.5
    assert np.isnan(background_grain(head * mask, mask, (2.0, 2.0, 2.0)))  # a zero background has no grain

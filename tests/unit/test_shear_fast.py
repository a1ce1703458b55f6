"""The cheap paths behind `--method shear`: cropped grow, one-labelling hole fill, shear on the input grid.

Each fast path is checked against the straightforward computation it replaces (exact equality), and the
input-grid shear against the working-grid one on the analytic phantom, straight and oblique.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from reface import geometry
from reface.io import load_scan
from reface.masks import _closing, _fill_holes, _fill_holes_slicewise, _otsu, grow, head_mask, make_regions
from reface.methods.shear import cut_region, profile_points, shear, shear_input_grid, shear_line
from reface.phantom import phantom_image


def _random_masks(seed: int, n: int):
    rng = np.random.default_rng(seed)
    for trial in range(n):
        shape = tuple(int(s) for s in rng.integers(2, 22, 3))
        mask = rng.random(shape) < rng.uniform(0.2, 0.85)
        yield (ndi.binary_closing(mask) if trial % 2 else mask), rng


def test_grow_equals_full_distance_transform():
    for mask, rng in _random_masks(0, 30):
        mask &= rng.random(mask.shape) < 0.05
        if not mask.any():
            continue
        zooms = tuple(float(z) for z in rng.uniform(0.4, 3.0, 3))
        margin = float(rng.uniform(0.5, 7.0))
        full = ndi.distance_transform_edt(~mask, sampling=zooms) <= margin
        assert np.array_equal(grow(mask, margin, zooms), full)


def test_closing_equals_scipy():
    for mask, _ in _random_masks(3, 30):
        for iterations in (1, 2, 3):
            assert np.array_equal(_closing(mask, iterations), ndi.binary_closing(mask, iterations=iterations))
    thin = np.ones((1, 4, 5), bool)
    assert np.array_equal(_closing(thin, 2), ndi.binary_closing(thin, iterations=2))


def test_grow_of_empty_mask_is_empty():
    assert not grow(np.zeros((5, 6, 7), bool), 4.0, (1.0, 1.0, 1.0)).any()


def test_fill_holes_equals_scipy_3d_and_slicewise():
    for mask, _ in _random_masks(1, 30):
        assert np.array_equal(_fill_holes(mask), ndi.binary_fill_holes(mask))
        for axis in range(3):
            slices = np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(mask, axis, 0)], axis=axis)
            assert np.array_equal(_fill_holes(mask, tuple(a for a in range(3) if a != axis)), slices)
        reference = ndi.binary_fill_holes(mask)
        for axis in range(3):
            reference = np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(reference, axis, 0)],
                                 axis=axis) | reference
        assert np.array_equal(_fill_holes_slicewise(mask), reference)


def _head_mask_reference(volume: np.ndarray) -> np.ndarray:
    """head_mask as first written: ndi.sum_labels and a Python loop of 2D fills."""
    smooth = ndi.gaussian_filter(volume.astype(np.float32), 1.0)
    positive = smooth[smooth > 0]
    if positive.size == 0:
        return np.zeros(volume.shape, bool)
    fg = smooth > 0.5 * _otsu(positive)
    labels, n = ndi.label(fg)
    if n > 1:
        sizes = ndi.sum_labels(fg, labels, index=np.arange(1, n + 1))
        fg = labels == (1 + int(np.argmax(sizes)))
    fg = ndi.binary_closing(fg, iterations=2)
    filled = ndi.binary_fill_holes(fg)
    for axis in range(3):
        filled = np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(filled, axis, 0)], axis=axis) | filled
    return filled


def test_head_mask_unchanged_on_phantom_and_noise():
    img, _ = phantom_image(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))
    volume = np.asarray(img.dataobj, np.float32)
    assert np.array_equal(head_mask(volume), _head_mask_reference(volume))
    noisy = volume + np.random.default_rng(2).normal(0, 0.2 * float(volume.max()), volume.shape).astype(np.float32)
    assert np.array_equal(head_mask(noisy), _head_mask_reference(noisy))


def _scan(tmp_path, **kwargs):
    import nibabel as nib

    img, brain = phantom_image(shape=(64, 75, 70), zooms=(3.0, 3.0, 3.0), **kwargs)
    path = tmp_path / "phantom.nii.gz"
    nib.save(img, path)
    return load_scan(path), brain


def test_profile_points_hull_equals_all_voxels_hull(tmp_path):
    from scipy.spatial import ConvexHull

    scan, brain = _scan(tmp_path, oblique_deg=15.0)
    every = (np.argwhere(brain) @ scan.affine[1:3, :3].T) + scan.affine[1:3, 3]
    reference = {tuple(np.round(p, 6)) for p in every[ConvexHull(every).vertices]}
    assert {tuple(np.round(p, 6)) for p in profile_points(brain, scan.affine)} == reference


def test_cut_region_general_branch_matches_axis_aligned():
    """Swapping voxel axes x and z sends the cut through the general (per-slice) branch: same voxels."""
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    affine[:3, 3] = [-60.0, -70.0, -50.0]
    z, y, x = np.meshgrid(*[np.arange(n) for n in (60, 80, 70)], indexing="ij")
    brain = ((x - 40) / 25.0) ** 2 + ((y - 35) / 30.0) ** 2 + ((z - 30) / 22.0) ** 2 <= 1  # [Z, Y, X] here
    brain = np.ascontiguousarray(brain.transpose(2, 1, 0))  # [X, Y, Z]
    straight = cut_region(brain, affine)
    swapped = affine[:, [2, 1, 0, 3]]
    other = cut_region(np.ascontiguousarray(brain.transpose(2, 1, 0)), swapped)
    assert straight.any() and np.array_equal(other.transpose(2, 1, 0), straight)


@pytest.mark.parametrize("oblique_deg", [0.0, 15.0])
@pytest.mark.parametrize("axcodes", ["RAS", "LPS"])
def test_shear_on_input_grid(tmp_path, oblique_deg, axcodes):
    scan, brain = _scan(tmp_path, oblique_deg=oblique_deg, axcodes=axcodes)
    regions = make_regions(scan, brain=brain)
    raw = shear_input_grid(scan, regions)
    assert raw.shape == scan.raw.shape and raw.dtype == scan.raw.dtype
    assert np.array_equal(raw[regions.preserved], scan.raw[regions.preserved])
    cut = cut_region(regions.brain, scan.affine)
    assert not (cut & regions.brain).any()  # convexity: the hull line minus 10 mm misses every brain voxel
    background = scan.quantize(np.zeros(1, np.float32))[0]
    assert np.all(raw[cut & ~regions.preserved] == background)
    assert np.array_equal(raw[~cut], scan.raw[~cut])
    # The phantom's nose tip and chin (world RAS mm) are cut; the top of the head and occiput are not.
    inverse = np.linalg.inv(scan.affine)
    for point, expected in [((0, 105, -35), True), ((0, 80, -90), True), ((0, -5, 80), False),
                            ((0, -95, 10), False)]:
        ijk = np.rint(inverse[:3, :3] @ np.array(point, float) + inverse[:3, 3]).astype(int)
        assert np.all((ijk >= 0) & (ijk < scan.shape)), point
        assert bool(cut[tuple(ijk)]) is expected, point
    # The same plane as the working-grid shear, to within a voxel of either grid.
    grid = geometry.grid_for_brain(regions.brain, scan.affine)
    work_brain = geometry.resample_mask(regions.brain, scan.affine, grid)
    here, there = shear_line(regions.brain, scan.affine), shear_line(work_brain, grid.affine)
    assert abs(np.degrees(np.arctan(here.slope) - np.arctan(there.slope))) < 10.0
    a = np.array([0.0, 60.0])
    gap = (there.s0 + there.slope * (a - there.a0)) - (here.s0 + here.slope * (a - here.a0))
    assert np.all(np.abs(gap) < 2 * 3.0 + 1.0)


def test_shear_method_exposes_input_grid_path():
    assert shear.on_input_grid is shear_input_grid


def test_shear_on_input_grid_fills_the_air_level(tmp_path):
    scan, brain = _scan(tmp_path)
    regions = make_regions(scan, brain=brain)
    raw = shear_input_grid(scan, regions, level=-200.0)
    cut = cut_region(regions.brain, scan.affine) & ~regions.preserved
    assert cut.any() and np.all(raw[cut] == scan.quantize(np.full(1, -200.0, np.float32))[0])

"""Working grid and resampling: world geometry is respected whatever the input orientation."""

from __future__ import annotations

import numpy as np
import pytest

from reface import geometry
from reface.phantom import phantom_image


def test_working_grid_is_ras_1mm_and_centred():
    grid = geometry.working_grid(np.array([10.0, -20.0, 5.0]))
    assert grid.shape == geometry.WORK_SHAPE
    assert grid.spacing == (1.0, 1.0, 1.0)
    centre_voxel = (np.array(grid.shape) - 1) / 2.0
    np.testing.assert_allclose(grid.affine[:3, :3] @ centre_voxel + grid.affine[:3, 3], [10.0, -20.0, 5.0])


@pytest.mark.parametrize("axcodes, oblique", [("RAS", 0.0), ("LAS", 0.0), ("LPI", 0.0), ("RAS", 15.0)])
def test_resampling_to_working_grid_lands_in_world_place(axcodes, oblique):
    """The same phantom in any orientation gives the same working-grid brain (within interpolation)."""
    _, ref_brain = phantom_image(shape=(60, 70, 64), zooms=(3.0, 3.0, 3.0), axcodes="RAS")
    ref_img, _ = phantom_image(shape=(60, 70, 64), zooms=(3.0, 3.0, 3.0), axcodes="RAS")
    img, brain = phantom_image(shape=(60, 70, 64), zooms=(3.0, 3.0, 3.0), axcodes=axcodes, oblique_deg=oblique)
    grid = geometry.working_grid(np.zeros(3), shape=(64, 80, 72), spacing=3.0)
    a = geometry.resample_mask(ref_brain, ref_img.affine, grid)
    b = geometry.resample_mask(brain, img.affine, grid)
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice > 0.97


def test_resample_identity_grid_is_exact():
    rng = np.random.default_rng(0)
    data = rng.random((20, 22, 24)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-10, 5, 3]
    out = geometry.resample(data, affine, geometry.Grid(data.shape, affine))
    np.testing.assert_allclose(out, data, atol=1e-6)


def test_downsample_block_mean():
    v = np.arange(4 * 4 * 4, dtype=np.float32).reshape(4, 4, 4)
    d = geometry.downsample(v, 2)
    assert d.shape == (2, 2, 2)
    assert d[0, 0, 0] == pytest.approx(v[:2, :2, :2].mean())


def test_outside_front_flags_only_voxels_anterior_to_the_grid():
    grid = geometry.working_grid(np.zeros(3), shape=(10, 10, 10), spacing=1.0)  # y spans -4.5..4.5 mm
    affine = np.eye(4)
    affine[:3, 3] = [-4.5, -4.5, -4.5]
    beyond = geometry.outside_front((10, 14, 10), affine, grid)
    assert not beyond[:, :10].any() and beyond[:, 10:].all()


def test_inside_field_of_view_matches_resampling_a_box_of_ones():
    from reface.geometry import Grid, inside_field_of_view, resample

    src_affine = np.array([[0.0, 0, 1.2, -40], [-1.1, 0, 0, 50], [0, 0.9, 0, -30], [0, 0, 0, 1]])
    shape = (40, 50, 30)
    dst = Grid((70, 80, 60), np.array([[1.0, 0, 0, -35], [0, 1, 0, -45], [0, 0, 1, -40], [0, 0, 0, 1]]))
    inside = inside_field_of_view(shape, src_affine, dst)
    ones = resample(np.ones(shape, np.float32), src_affine, dst, order=0)
    assert 0.1 < inside.mean() < 0.9
    # nearest-neighbour resampling of ones is 1 exactly where the centre lands inside (boundary ties aside)
    assert np.mean(inside == (ones > 0.5)) > 0.995

"""Working grid and resampling: world geometry is respected whatever the input orientation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

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


@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, 1, 1), (-1, -1, 1), (1, -1, -1)])
@pytest.mark.parametrize("perm", [(0, 1, 2), (0, 2, 1), (2, 0, 1)])
def test_lattice_resample_is_the_interpolation_exactly(flips, perm):
    """On a 1 mm axis-aligned input (any axis order and flips) the working grid sits on the input's voxel
    centres, and `resample` there and back (a slicing fast path) equals scipy's linear interpolation."""
    rng = np.random.default_rng(0)
    shape = (40, 46, 38)
    data = rng.normal(size=shape).astype(np.float32)
    affine = np.zeros((4, 4))
    for i, (p, f) in enumerate(zip(perm, flips, strict=True)):
        affine[p, i] = f
    affine[:3, 3] = [-17.3, 21.6, -5.2]
    affine[3, 3] = 1.0
    brain = np.zeros(shape, bool)
    brain[8:30, 10:34, 9:29] = True
    grid = geometry.grid_for_brain(brain, affine, shape=(24, 30, 28))
    assert geometry._lattice_map(grid.affine, affine) is not None
    centre = affine[:3, :3] @ np.array(ndi.center_of_mass(brain)) + affine[:3, 3] + geometry.CENTRE_OFFSET_MM
    placed = grid.affine[:3, :3] @ ((np.array(grid.shape) - 1) / 2) + grid.affine[:3, 3]
    assert np.all(np.abs(placed - centre) <= 0.5 + 1e-9)  # moved by under half a voxel
    fast = geometry.resample(data, affine, grid)
    mapping = np.linalg.inv(affine) @ grid.affine
    slow = ndi.affine_transform(data, mapping[:3, :3], offset=mapping[:3, 3], output_shape=grid.shape, order=1,
                                mode="constant", cval=0.0)
    assert np.allclose(fast, slow, atol=1e-5)
    back = geometry.resample(fast, grid.affine, geometry.Grid(shape, affine), cval=-1.0)
    inside = back != -1.0
    assert inside.sum() > 1000
    assert np.array_equal(back[inside], data[inside])  # the round trip copies voxels exactly


def test_oblique_or_coarse_inputs_keep_the_interpolating_path():
    oblique = np.eye(4)
    oblique[:3, :3] = [[np.cos(0.1), -np.sin(0.1), 0], [np.sin(0.1), np.cos(0.1), 0], [0, 0, 1]]
    brain = np.zeros((30, 30, 30), bool)
    brain[5:25, 5:25, 5:25] = True
    for affine in (oblique, np.diag([1.5, 1.5, 1.5, 1.0])):
        grid = geometry.grid_for_brain(brain, affine, shape=(20, 20, 20))
        assert geometry._lattice_map(grid.affine, affine) is None


def _long_head(nose_mm: float):
    """A 1 mm LAS volume: a 70 mm brain ball and a head ellipsoid whose front reaches `nose_mm` in front of the
    brain's centre (the default grid reaches 20 + 111.5 = 131.5 mm)."""
    shape = (180, 300, 200)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [90.0, -150.0, -100.0]
    ijk = np.indices(shape).reshape(3, -1).T.astype(float)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    brain = (np.linalg.norm(world, axis=1) <= 70.0).reshape(shape)
    half = (nose_mm + 85.0) / 2.0  # the head spans -85 .. nose_mm along y
    centre_y = nose_mm - half
    scaled = (world - [0.0, centre_y, -20.0]) / [75.0, half, 110.0]
    head = (np.linalg.norm(scaled, axis=1) <= 1.0).reshape(shape)
    return brain, head, affine


def test_a_long_head_moves_the_grid_forward_so_the_face_fits():
    for nose in (100.0, 130.0, 140.0):  # 140: 12.5 mm forward, within the 15.5 mm behind the brain
        brain, head, affine = _long_head(nose)
        plain = geometry.grid_for_brain(brain, affine)
        grid = geometry.grid_for_brain(brain, affine, head=head)
        front = grid.affine[1, 3] + (grid.shape[1] - 1)
        if nose + geometry.FRONT_MARGIN_MM <= plain.affine[1, 3] + (plain.shape[1] - 1):
            np.testing.assert_allclose(grid.affine, plain.affine)  # a head that fits keeps its grid
        else:
            assert nose + geometry.FRONT_MARGIN_MM <= front + 0.5
        assert not (head & geometry.outside_front(head.shape, affine, grid)).any()
        assert -70.0 - geometry.BACK_MARGIN_MM >= grid.affine[1, 3] - 0.5  # the brain stays inside


def test_the_grid_moves_no_further_than_keeps_the_brain_inside():
    brain, head, affine = _long_head(200.0)  # longer than any grid can hold: the face is cut, not the brain
    grid = geometry.grid_for_brain(brain, affine, head=head)
    back = grid.affine[1, 3]
    assert back == pytest.approx(-70.0 - geometry.BACK_MARGIN_MM, abs=1.0)

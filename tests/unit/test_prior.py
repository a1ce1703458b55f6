"""The generator's prior: the atlas head fitted to a brain (model/prior.py).

The privacy-critical property is checked directly: the prior is a function of the brain alone, so
scrambling everything outside the brain mask leaves it bit-identical.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from reface.deidentify import to_working
from reface.errors import RefaceError
from reface.io import load_scan
from reface.masks import dice, make_regions
from reface.model.data import intensity_scale
from reface.model.prior import (
    CHIN_EXTRA_MM,
    CHIN_FROM_MM,
    MOUTH_MM,
    _demons,
    atlas,
    fitted_prior,
    match_contrast,
    quantile_mapper,
)
from reface.phantom import phantom_image
from reface.warp import jacobian_determinant


@pytest.fixture(scope="module")
def working(tmp_path_factory):
    img, brain = phantom_image(shape=(56, 52, 60), zooms=(3.5, 4.0, 3.5), axcodes="LPS", oblique_deg=12.0)
    path = tmp_path_factory.mktemp("prior") / "head.nii.gz"
    nib.save(img, path)
    scan = load_scan(path)
    volume, regions = to_working(scan, make_regions(scan, brain=brain))
    return volume / intensity_scale(volume, regions.brain), regions


def test_prior_depends_on_the_brain_only_and_wraps_it(working):
    volume, regions = working
    prior = fitted_prior(volume, regions.brain, regions.grid)
    assert prior.shape == volume.shape and prior.dtype == np.float32 and np.isfinite(prior).all()

    scrambled = volume.copy()
    rng = np.random.default_rng(0)
    outside = ~regions.brain
    scrambled[outside] = rng.permutation(scrambled[outside]) * 1.7  # another face, another contrast
    assert np.array_equal(fitted_prior(scrambled, regions.brain, regions.grid), prior)

    # the template's head surrounds the patient's brain: tissue in a shell outside it, air far away
    shell = ndi.binary_dilation(regions.brain, iterations=12) & ~ndi.binary_dilation(regions.brain, iterations=6)
    assert np.median(prior[shell]) > 0.1
    assert float(np.mean(prior[:, :, -3:])) < 0.1  # above the vertex: air
    # intensities were mapped onto the patient's brain: similar brain medians
    assert abs(np.median(prior[regions.brain]) / np.median(volume[regions.brain]) - 1.0) < 0.25


def test_demons_aligns_two_ellipsoids_without_folding():
    x = np.indices((40, 48, 44)).astype(np.float32)
    fixed = ((x[0] - 20) / 14) ** 2 + ((x[1] - 24) / 17) ** 2 + ((x[2] - 22) / 15) ** 2 < 1
    moving = ((x[0] - 22) / 12) ** 2 + ((x[1] - 23) / 18) ** 2 + ((x[2] - 23) / 13) ** 2 < 1
    u = _demons(fixed.astype(np.float32), moving.astype(np.float32))
    warped = ndi.map_coordinates(moving.astype(np.float32), x + u, order=1) > 0.5
    assert dice(moving, fixed) < 0.85
    assert dice(warped, fixed) > 0.97
    assert float(jacobian_determinant(u, 1.0).min()) > 0.2  # u in voxels


def test_quantile_mapper_is_monotone_and_proportional_outside_the_range():
    rng = np.random.default_rng(0)
    source = rng.uniform(1.0, 2.0, 10_000)
    reference = rng.uniform(10.0, 30.0, 10_000)
    mapping = quantile_mapper(source, reference)
    x = np.linspace(0.0, 4.0, 401)
    y = mapping(x)
    assert np.all(np.diff(y) >= 0)
    assert abs(float(mapping(np.array([1.5]))[0]) - 20.0) < 1.0
    assert np.isclose(float(mapping(np.array([0.0]))[0]), 0.0)  # air stays air
    top = float(mapping(np.array([2.5]))[0]) / 2.5
    assert np.isclose(top, float(mapping(np.array([3.5]))[0]) / 3.5)


def test_atlas_has_a_plausible_brain_inside_a_head():
    ref = atlas()
    ml = ref.brain.sum() * abs(np.linalg.det(ref.affine[:3, :3])) / 1000.0
    assert 900 < ml < 1800
    head = ref.head > 0.1 * np.percentile(ref.head, 99)
    assert head.sum() > 2 * ref.brain.sum()


def test_a_brain_nothing_like_the_atlas_is_refused(working):
    volume, regions = working
    brain = np.zeros_like(regions.brain)
    brain[60:70, 100:110, 100:180] = True  # a thin rod, not a brain
    with pytest.raises(RefaceError):
        fitted_prior(volume, brain, regions.grid)


def test_match_contrast_takes_the_subjects_histogram_and_leaves_the_preserved_region():
    rng = np.random.default_rng(0)
    shape = (30, 30, 30)
    preserved = np.zeros(shape, bool)
    preserved[10:20, 10:20, 10:20] = True
    subject = rng.uniform(0.2, 1.2, shape).astype(np.float32)
    head = (0.5 * subject[::-1] + 0.3).astype(np.float32)  # other layout, other contrast
    out = match_contrast(head, subject, preserved)
    assert np.array_equal(out[preserved], head[preserved])
    q = [10, 50, 90]
    assert np.allclose(np.percentile(out[~preserved], q), np.percentile(subject[~preserved], q), atol=0.02)
    # monotone: the head's own ordering of intensities (its anatomy) is kept
    order = np.argsort(head[~preserved])
    assert np.all(np.diff(out[~preserved][order]) >= -1e-6)


def test_shipped_template_brain_mask_is_deepbets():
    """The shipped mask of the mean head (resources.mean_head_brain) is what deepbet gives today."""
    from reface.io import load_scan
    from reface.masks import auto_brain_mask
    from reface.resources import mean_head_brain, mean_head_path

    fresh = auto_brain_mask(load_scan(mean_head_path()))
    assert dice(mean_head_brain(), fresh) > 0.998
    brain = atlas().brain
    assert np.array_equal(brain[:, :, brain.shape[2] - fresh.shape[2]:], mean_head_brain())


def test_shipped_template_head_mask_is_recomputed_and_cuts_the_ghost_frame():
    """The shipped head mask of the mean head is today's head_mask grown by 2 voxels, and the template is cut
    to it: the faint frame in the air in front of the average face is gone, the head itself is untouched."""
    from reface.io import load_scan
    from reface.masks import head_mask
    from reface.resources import mean_head_mask, mean_head_path

    raw = load_scan(mean_head_path()).data
    shipped = mean_head_mask()
    assert np.array_equal(shipped, ndi.binary_dilation(head_mask(raw), iterations=2))
    ref = atlas()
    pad = ref.head.shape[2] - raw.shape[2]  # the chin added below (test_atlas_continues_below_the_template)
    # and the mouth above it closed (same test): the rest is the template as it is
    k0 = int(round((CHIN_FROM_MM + MOUTH_MM) / abs(float(ref.affine[2, 2]))))
    head, raw, shipped = ref.head[:, :, pad + k0:], raw[:, :, k0:], shipped[:, :, k0:]
    level = float(np.percentile(raw, 99))
    frame = ~ndi.binary_dilation(shipped, iterations=3) & (raw > 0.1 * level)
    assert frame.sum() > 10_000  # the average does hold such a frame
    assert float(head[frame].max()) < 0.01 * level
    core = ndi.binary_erosion(shipped, iterations=5)
    assert np.allclose(head[core], raw[core], rtol=5e-3)


def test_atlas_continues_below_the_template():
    """Below its last full slice the template continues as a closed, receding chin and neck (it ended at the
    lower lip, and every scan with a chin got a cave there); the atlas's world geometry is unchanged."""
    from reface.io import load_scan
    from reface.resources import mean_head_path

    scan = load_scan(mean_head_path())
    ref = atlas()
    pad = ref.head.shape[2] - scan.shape[2]
    assert pad * abs(float(ref.affine[2, 2])) == pytest.approx(CHIN_EXTRA_MM, abs=1.0)
    # voxel k + pad of the atlas is voxel k of the mean head, at the same world point
    assert np.allclose(ref.affine @ [10, 20, 30 + pad, 1], scan.affine @ [10, 20, 30, 1])
    assert not ref.brain[:, :, :pad].any()
    level = 0.1 * float(np.percentile(ref.head, 99))
    areas = [int((ref.head[:, :, k] > level).sum()) for k in range(0, pad + 20, 10)]
    assert all(a > 2000 for a in areas)  # a head all the way down, no cave
    assert areas == sorted(areas)  # narrowing downwards
    # a chin with an underside: the neck's front stands well behind the chin's (it ran straight down)
    k0 = int(round(CHIN_FROM_MM / abs(float(ref.affine[2, 2]))))
    front = [int(np.nonzero((ref.head[:, :, k] > level).any(axis=0))[0].max()) for k in (5, pad + k0)]
    assert (front[1] - front[0]) * abs(float(ref.affine[1, 1])) > 40
    for k in (5, pad // 2, pad + 5):  # each slice one outline with no groove: closing it adds next to nothing
        inside = ref.head[:, :, k] > level
        assert ndi.label(inside)[1] == 1
        closed = ndi.binary_closing(np.pad(inside, 10), iterations=8)[10:-10, 10:-10]
        assert (closed & ~inside).sum() < 0.02 * inside.sum()

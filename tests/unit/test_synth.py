"""The synthetic cohort: determinism, exact brain masks, no folding, sessions vs identities, the CLI.

Volumes are generated at 4-6 mm (`resolution_mm`) so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from reface.synth import generate_subject, load_template, sample_identity
from reface.synth.session import (
    Acquisition,
    acquisition_grid,
    sample_acquisition,
    scanner_to_subject,
    synthesize_session,
)
from reface.warp import VelocityGrid, jacobian_determinant

RES = 4.0


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def people(template):
    """Identities 0 and 1 of seed 0."""
    return [sample_identity(i, 0, template) for i in range(2)]


def _acq(template, rng_seed: int, res: float = RES, **changes) -> Acquisition:
    acq = sample_acquisition(np.random.default_rng(rng_seed), template, resolution_mm=res)
    fields = {**acq.__dict__, **changes}
    return Acquisition(**fields)


def _unposed(img: nib.Nifti1Image, acq: Acquisition, template, points: np.ndarray) -> np.ndarray:
    """Sample a session image at subject-world points [3, N] (undoing the pose we know)."""
    to_scanner = np.linalg.inv(scanner_to_subject(acq, template))
    scanner = to_scanner[:3, :3] @ points + to_scanner[:3, 3:4]
    vox = np.linalg.inv(img.affine)[:3, :3] @ scanner + np.linalg.inv(img.affine)[:3, 3:4]
    return ndi.map_coordinates(np.asarray(img.dataobj, np.float32), vox, order=1)


def _face_points(template, step: float = 3.0) -> np.ndarray:
    """Subject-world points on a grid covering the face (in front of the ears, below the forehead)."""
    axes = [np.arange(-70, 71, step), np.arange(40, 130, step), np.arange(-110, -10, step)]
    return np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)


def test_generate_subject_is_deterministic_and_seed_dependent():
    a = generate_subject(2, 5, sessions=2, resolution_mm=6.0)
    b = generate_subject(2, 5, sessions=2, resolution_mm=6.0)
    c = generate_subject(2, 6, sessions=1, resolution_mm=6.0)
    assert len(a) == 2
    for (img_a, mask_a), (img_b, mask_b) in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(img_a.dataobj), np.asarray(img_b.dataobj))
        np.testing.assert_array_equal(mask_a, mask_b)
        np.testing.assert_array_equal(img_a.affine, img_b.affine)
    # sessions of one subject are different scans; another seed is another person/scan
    assert not np.array_equal(np.asarray(a[0][0].dataobj), np.asarray(a[1][0].dataobj)) or \
        not np.array_equal(a[0][0].affine, a[1][0].affine)
    same_grid = a[0][0].shape == c[0][0].shape and np.allclose(a[0][0].affine, c[0][0].affine)
    assert not same_grid or not np.array_equal(np.asarray(a[0][0].dataobj), np.asarray(c[0][0].dataobj))


def test_no_folding_and_the_check_detects_folding(template, people):
    for person in people:
        assert person.min_jacobian > 0.05
        push = person.push()
        assert push.min_jacobian() > 0.0
        # push and pull are inverses: x -> pull(push(x)) ~ x on the face (trilinear 4 mm grid: ~1 mm worst)
        x = _face_points(template, 8.0).astype(np.float32)
        error = np.linalg.norm(person.pull(push(x)) - x, axis=0)
        assert error.mean() < 0.25 and error.max() < 2.0, (error.mean(), error.max())
        # and the face really moves (not an identity map)
        assert np.abs(push(x) - x).max() > 3.0
    grid = VelocityGrid.around(np.zeros(3), np.full(3, 20.0), 2.0)
    fold = np.zeros((3, *grid.shape), np.float32)
    fold[0] = -2.0 * grid.points()[0]  # x -> -x: orientation reversed
    assert jacobian_determinant(fold, grid.spacing).max() < 0


def test_brain_mask_is_on_the_t1w_grid_and_follows_the_deformation(template, people):
    person = people[1]
    acq = _acq(template, 3)
    img, mask = synthesize_session(template, person, acq)
    assert mask.dtype == np.uint8 and mask.shape == img.shape and set(np.unique(mask)) <= {0, 1}
    # independent check: push atlas brain voxels forward (identity push, then pose) into the scanner grid
    ijk = np.argwhere(template.brain)[::7].T.astype(np.float32)
    world = template.affine[:3, :3] @ ijk + template.affine[:3, 3:4]
    subject = person.push()(world.astype(np.float32))
    to_scanner = np.linalg.inv(scanner_to_subject(acq, template))
    scanner = to_scanner[:3, :3] @ subject + to_scanner[:3, 3:4]
    inv = np.linalg.inv(img.affine)
    vox = np.rint(inv[:3, :3] @ scanner + inv[:3, 3:4]).astype(int)
    assert np.all((vox >= 0) & (vox < np.array(img.shape)[:, None]))
    inside = mask[tuple(vox)].mean()
    assert inside > 0.93, inside
    # without the deformation the agreement is worse: the mask really moved with the identity
    unposed = to_scanner[:3, :3] @ world + to_scanner[:3, 3:4]
    unmoved = np.rint(inv[:3, :3] @ unposed + inv[:3, 3:4]).astype(int)
    assert mask[tuple(unmoved)].mean() < inside
    # plausible volume, and the mask covers bright brain tissue, not background
    volume_ml = mask.sum() * RES ** 3 / 1000.0
    template_ml = template.brain.sum() * 1.5 ** 3 / 1000.0
    assert 0.75 * template_ml < volume_ml < 1.3 * template_ml
    data = np.asarray(img.dataobj, np.float32)
    assert data[mask > 0].mean() > 3 * data[ndi.binary_dilation(mask, iterations=4) == 0].mean()


def test_sessions_differ_only_by_acquisition_identities_differ_in_the_face(template, people):
    points = _face_points(template)
    shape = tuple(len(np.unique(p)) for p in points)
    acq_a = _acq(template, 11, res=3.0)
    las_shape, las_affine = acquisition_grid("LAS", (2.5, 2.5, 2.5), template.centre)
    acq_b = _acq(template, 12, res=3.0, axcodes="LAS", shape=las_shape, affine=las_affine)
    assert not np.allclose(acq_a.rotation_deg, acq_b.rotation_deg) and acq_a.gamma != acq_b.gamma

    def depth(person, acq):
        """Face depth map [x, z] (mm, most anterior skin point), in the subject's own (unposed) frame."""
        img, _ = synthesize_session(template, person, acq)
        values = _unposed(img, acq, template, points).reshape(shape)
        inside = ndi.gaussian_filter(values, 1.0) > 0.4 * np.percentile(values, 95)
        front = shape[1] - 1 - np.argmax(inside[:, ::-1, :], axis=1)
        return np.where(inside.any(axis=1), front * 3.0, np.nan)

    same_a, same_b = depth(people[0], acq_a), depth(people[0], acq_b)
    other = depth(people[1], acq_a)
    both = np.isfinite(same_a) & np.isfinite(same_b) & np.isfinite(other)
    assert both.mean() > 0.5
    # median depth change (mm): resampling and noise only leave the face where it was (3 mm steps)
    assert np.median(np.abs(same_a - same_b)[both]) == 0.0
    assert np.median(np.abs(same_a - other)[both]) >= 3.0
    # columns whose depth moved by more than one step: few between sessions, many between identities
    moved_same = np.mean(np.abs(same_a - same_b)[both] > 3.0)
    moved_other = np.mean(np.abs(same_a - other)[both] > 3.0)
    assert moved_same < 0.15 and moved_other > 3 * moved_same, (moved_same, moved_other)


def test_acquisition_grid_orientation_and_voxel_size(template, people):
    acq = _acq(template, 1, res=5.0)
    img, mask = synthesize_session(template, people[0], acq)
    assert "".join(nib.aff2axcodes(img.affine)) == acq.axcodes
    np.testing.assert_allclose(img.header.get_zooms(), (5.0, 5.0, 5.0))
    assert img.get_data_dtype() == np.int16 and int(img.header["sform_code"]) == 1


def test_cli_writes_a_bids_like_tree(tmp_path):
    from reface.cli import main

    out = tmp_path / "cohort"
    rc = main(["synth", str(out), "--n", "2", "--seed", "3", "--sessions", "1", "--resolution-mm", "6",
               "--quiet"])
    assert rc == 0
    for sub in ("sub-0001", "sub-0002"):
        anat = out / sub / "ses-01" / "anat"
        t1w = nib.load(anat / f"{sub}_ses-01_T1w.nii.gz")
        mask = nib.load(anat / f"{sub}_ses-01_desc-brain_mask.nii.gz")
        assert mask.get_data_dtype() == np.uint8 and mask.shape == t1w.shape
        np.testing.assert_array_equal(mask.affine, t1w.affine)
        assert np.asarray(mask.dataobj).sum() > 0
    lines = (out / "participants.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert header[0] == "participant_id" and "nose_shift_y" in header and len(lines) == 3
    assert [line.split("\t")[0] for line in lines[1:]] == ["sub-0001", "sub-0002"]
    row1, row2 = (dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:])
    assert row1["nose_shift_y"] != row2["nose_shift_y"]
    assert json.loads((out / "dataset_description.json").read_text())["Name"]
    assert main(["synth", str(out), "--n", "0", "--quiet"]) == 2


@pytest.mark.parametrize("axcodes", ["RAS", "LAS", "LPS", "PIR"])
def test_every_acquisition_grid_is_orthogonal_with_the_drawn_voxel_size(axcodes):
    """A permuted grid (PIR) once kept identity entries on the diagonal: sheared, sqrt(2)-mm voxels."""
    shape, affine = acquisition_grid(axcodes, (1.0, 1.2, 1.4), np.zeros(3))
    linear = affine[:3, :3]
    np.testing.assert_allclose(np.sqrt((linear**2).sum(axis=0)), (1.0, 1.2, 1.4))
    gram = linear.T @ linear
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-12)
    assert "".join(nib.aff2axcodes(affine)) == axcodes

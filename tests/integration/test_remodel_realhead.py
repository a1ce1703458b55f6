"""Realism invariants of remodel on a real head (the ROBEX atlas head), not only on phantoms.

- Its own noisy air: no voxel well outside both heads (the input's and the remodeled one) gains signal
  beyond the input's own air noise, and the air keeps the input's spread and grain.
- The same head with its air zeroed (as some scanners and converters store it): that air stays exactly 0.
- A defaced head (by `deface`, by `shear`, or pydeface's mean head with its shipped face mask zeroed) gets
  a head back: remodel regrows the tissue the defacer removed, with a chin where a chin was and a face
  that follows the original's profile, and nothing far outside the original head above the chin.
"""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from reface.air import air_correlation
from reface.deidentify import deidentify
from reface.io import load_scan
from reface.masks import head_mask, make_regions
from reface.realheads import load_real_head
from reface.resources import face_mask_path


@pytest.fixture(scope="module")
def robex(tmp_path_factory):
    head = load_real_head("robex")
    folder = tmp_path_factory.mktemp("robex")
    noisy = folder / "robex.nii.gz"
    nib.save(head.image, noisy)
    data = np.asanyarray(head.image.dataobj).astype(np.float32)
    around = ndi.binary_dilation(head_mask(data), iterations=3)
    zeroed = folder / "robex_zero_air.nii.gz"
    nib.save(nib.Nifti1Image(np.where(around, data, 0).astype(np.float32), head.image.affine), zeroed)
    return {"noisy": noisy, "zero": zeroed}, head.brain


def _far_air(scan, out: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Voxels more than ~12 mm outside both the input's head and the remodeled one."""
    regions = make_regions(scan, brain=brain)
    both = regions.head | head_mask(out)
    far = ~ndi.binary_dilation(both, iterations=8)  # 8 voxels of 1.5 mm
    assert far.sum() > 0.15 * far.size
    return far


@pytest.fixture(scope="module")
def robex_remodeled(robex):
    paths, brain = robex
    scan = load_scan(paths["noisy"])
    return scan, deidentify(scan, "remodel", seed=0, brain=brain).data, brain


def test_remodel_keeps_a_real_heads_noisy_air(robex_remodeled):
    scan, out, brain = robex_remodeled
    far = _far_air(scan, out, brain)
    before, after = scan.data[far], out[far]
    ceiling = np.percentile(before, 99.9)
    assert np.mean(after > ceiling) < 0.005  # no speckle above the input's own noise
    assert abs(np.std(after) - np.std(before)) < 0.25 * np.std(before)  # and the same spread
    assert not np.array_equal(after, before)  # drawn afresh, not the input's air copied
    # the same grain (i.i.d. draws gave lag-1 correlations of ~0.06 against the input's ~0.3: speckle)
    grain_in, grain_out = air_correlation(scan.data, far), air_correlation(out, far)
    assert all(abs(a - b) < 0.08 for a, b in zip(grain_in, grain_out, strict=True)), (grain_in, grain_out)


def _vault_profile(data: np.ndarray, brain: np.ndarray, zooms) -> np.ndarray:
    """Median intensity of the vault (above the brain's centre, skin and brain < 30 mm apart) by depth under
    the skin, in 1 mm bins from 0 to 12 mm (NaN where a bin holds no voxel)."""
    head = head_mask(data) | brain
    skin = ndi.distance_transform_edt(head, sampling=zooms)
    to_brain = ndi.distance_transform_edt(~brain, sampling=zooms)
    vault = head & ~brain & (np.indices(data.shape)[2] > np.nonzero(brain)[2].mean()) & (skin + to_brain < 30)
    return np.array([np.median(data[sel]) if (sel := vault & (skin > d) & (skin <= d + 1)).any() else np.nan
                     for d in range(12)])


def test_remodel_gives_the_scalp_the_inputs_layers(robex_remodeled):
    """A real vault is a thin bright fat layer over dark bone; the average template's scalp was one thick
    bright band, brightest 5-7 mm deep, where the input has bone. reface/scalp.py gives it the input's."""
    scan, out, brain = robex_remodeled
    want, got = _vault_profile(scan.data, brain, scan.zooms), _vault_profile(out, brain, scan.zooms)
    bone = slice(7, 11)  # 7-11 mm deep
    assert np.nanmax(want[:6]) > 2.5 * np.nanmean(want[bone])  # (the input, for scale)
    assert np.nanmax(got[:6]) > 2.5 * np.nanmean(got[bone])  # a bright layer over dark bone
    assert np.nanmean(got[bone]) < 1.5 * np.nanmean(want[bone])  # the template band: 1.9x


def test_remodel_keeps_a_real_heads_zero_air_exactly_zero(robex):
    paths, brain = robex
    scan = load_scan(paths["zero"])
    out = deidentify(scan, "remodel", seed=0, brain=brain).data
    far = _far_air(scan, out, brain)
    before = scan.data[far]
    assert np.mean(before == 0) > 0.99  # (a few voxels of the neck's cut in the bottom slice are not air)
    assert np.all(out[far][before == 0] == 0)  # the zero air stays exactly zero


@pytest.mark.parametrize("name, how", [("robex", "deface"), ("robex", "shear"), ("pydeface-mean", "facemask")])
def test_remodel_gives_a_defaced_head_its_face_back(tmp_path, name, how):
    head = load_real_head(name)
    path = tmp_path / f"{name}.nii.gz"
    nib.save(head.image, path)
    scan = load_scan(path)
    if how == "facemask":  # what pydeface does: zero the voxels outside its face mask's keep region
        keep = np.asanyarray(nib.load(str(face_mask_path())).dataobj).reshape(scan.shape) > 0
        raw = np.where(keep, scan.raw, 0).astype(scan.raw.dtype)
    else:
        raw = deidentify(scan, how, brain=head.brain).raw
    defaced = dataclasses.replace(scan, raw=raw, _data=None)
    before = head_mask(scan.data)
    removed = before & ~head_mask(defaced.data)
    voxel_ml = float(np.prod(scan.zooms)) / 1000.0
    assert removed.sum() * voxel_ml > 100  # the defacer took the face off
    result = deidentify(defaced, "remodel", seed=0, brain=head.brain)
    after = head_mask(result.data)
    assert after[removed].mean() > 0.7  # a face grows back where it was removed
    vox, brain = min(scan.zooms), result.regions.brain
    face_before, face_after = _face_slices(before, brain, vox), _face_slices(after, brain, vox)
    # a chin, not a column to the edge of the field of view nor a cave: chins differ (ROBEX's ends ~25 mm
    # higher than the average's), and a defacer leaves no trace of how long it was
    assert abs(face_after.min() - face_before.min()) * vox < 30, (face_before.min(), face_after.min())
    # the face stands where a face stood: its front follows the original's profile
    lowest_front = face_before.min()
    shared = np.arange(lowest_front, face_before.max() + 1)
    gap = (_front(after)[shared] - _front(before)[shared]) * vox
    assert abs(np.median(gap)) < 8, np.percentile(gap, [5, 50, 95])
    # and no tissue 10 mm beyond the original head, above the lowest 30 mm of its face (the chin, above)
    far = ~ndi.binary_dilation(before, iterations=int(round(10.0 / vox)))
    far[:, :, : lowest_front + int(round(30.0 / vox))] = False
    assert (after & far).sum() * voxel_ml < 20


def _front(mask: np.ndarray) -> np.ndarray:
    """Per axial slice, the front-most (largest second index) voxel of a mask; -1 where it has none."""
    return np.where(mask.any(axis=0), np.arange(mask.shape[1])[:, None], -1).max(axis=0)


def _face_slices(head: np.ndarray, brain: np.ndarray, vox_mm: float) -> np.ndarray:
    """Axial slices where the head reaches 10 mm in front of the brain: the face's extent top to bottom.

    (Both real heads are stored right/left, anterior, superior along their axes.)"""
    brain_front = int(np.nonzero(brain.any(axis=(0, 2)))[0].max())
    return np.nonzero(head[:, brain_front + int(round(10.0 / vox_mm)):, :].any(axis=(0, 1)))[0]


@pytest.mark.slow
def test_remodel_keeps_the_brain_extractors_context(robex_remodeled):
    """deepbet reads the skull and CSF around the brain: with the input's own tissue back near the preserved
    region (remodel.near_brain_mm), its mask of the remodeled ROBEX head is closer to the original's than with
    a generated skull there (measured with the reference brain mask: Dice 0.988 -> 0.991, CSF Dice 0.954 -> 0.964)."""
    from reface.evaluate.metrics import dice
    from reface.evaluate.utility import segment_tissues
    from reface.masks import auto_brain_mask

    scan, out, brain = robex_remodeled
    generated = deidentify(scan, "remodel", seed=0, brain=brain, near_brain_mm=0.0).data
    ref = auto_brain_mask(scan)
    ref_csf = segment_tissues(scan.data, ref) == 1
    scores = {}
    for name, data in (("near", out), ("generated", generated)):
        mask = auto_brain_mask(dataclasses.replace(scan, raw=data, _data=None))  # float32 input: raw is data
        scores[name] = (dice(mask, ref), dice(segment_tissues(data, mask) == 1, ref_csf))
    assert scores["near"][0] > scores["generated"][0] + 0.001, scores
    assert scores["near"][1] > scores["generated"][1] + 0.005, scores
    assert scores["near"][0] > 0.990, scores

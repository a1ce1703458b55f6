"""Metric plumbing of the evaluation: tissue segmentation, pipeline comparison, brain identity, realism,
the append-only results file (identification figures: tests/unit/test_privacy.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from reface.errors import RefaceError
from reface.evaluate import config, harness, metrics, utility
from reface.evaluate.realism import realism, wasserstein_1d
from reface.io import load_scan
from reface.masks import Regions
from reface.phantom import phantom_image


def _three_tissue(shape=(40, 40, 40), seed=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nested spheres CSF (dark) > GM > WM (bright) with noise; returns data, brain, true labels."""
    rng = np.random.default_rng(seed)
    ijk = np.indices(shape).astype(float)
    r = np.sqrt(((ijk - (np.array(shape)[:, None, None, None] - 1) / 2) ** 2).sum(axis=0))
    truth = np.zeros(shape, np.uint8)
    truth[r < 18] = 1
    truth[r < 14] = 2
    truth[r < 9] = 3
    means = np.array([0.0, 250.0, 550.0, 800.0])
    data = means[truth] + 20.0 * rng.standard_normal(shape)
    return data.astype(np.float32), truth > 0, truth


def test_gmm_recovers_means():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(100, 10, 3000), rng.normal(300, 15, 5000), rng.normal(600, 20, 4000)])
    means, stds, weights = utility.gmm_1d(values)
    np.testing.assert_allclose(means, [100, 300, 600], atol=6)
    np.testing.assert_allclose(weights, [0.25, 5 / 12, 1 / 3], atol=0.03)
    assert np.all(stds > 5) and np.all(stds < 30)


def test_segment_tissues_matches_truth():
    data, brain, truth = _three_tissue()
    labels = utility.segment_tissues(data, brain)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3}
    for label in (1, 2, 3):
        assert metrics.dice(labels == label, truth == label) > 0.95


def test_compare_identical_and_changed():
    data, brain, _ = _three_tissue()
    original = utility.PipelineOutput(brain={"x": brain}, tissue={"gmm": utility.segment_tissues(data, brain)})
    same = utility.compare(original, original)
    assert same["bet_dice_x"] == 1.0 and same["bet_rvd_x"] == 0.0 and same["pipeline_failed"] == 0.0
    assert all(same[f"dice_{t}"] == 1.0 for t in utility.TISSUES)

    smaller = brain.copy()
    smaller[:, :, :20] = False
    changed = utility.PipelineOutput(brain={"x": smaller}, tissue={"gmm": utility.segment_tissues(data, smaller)})
    values = utility.compare(original, changed)
    expected = 2 * smaller.sum() / (smaller.sum() + brain.sum())  # smaller is a subset of brain
    assert math.isclose(values["bet_dice_x"], expected)
    assert math.isclose(values["bet_rvd_x"], smaller.sum() / brain.sum() - 1)
    assert values["dice_wm"] < 1.0

    failed = utility.PipelineOutput(brain={"x": smaller}, failed={"x": "implausible brain volume 3 ml"})
    values = utility.compare(original, failed)
    assert values["bet_failed_x"] == 1.0 and values["pipeline_failed"] == 1.0 and "dice_gm" not in values


def test_run_pipeline_counts_failures(monkeypatch):
    img, brain = phantom_image(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))
    scan = load_scan_from(img)

    def crash(_scan):
        raise RuntimeError("boom")

    monkeypatch.setitem(utility.EXTRACTORS, "truth", lambda _scan: brain)
    monkeypatch.setitem(utility.EXTRACTORS, "crash", crash)
    monkeypatch.setitem(utility.EXTRACTORS, "tiny", lambda _scan: np.zeros(scan.shape, bool))
    out = utility.run_pipeline(scan, ("truth", "crash", "tiny"))
    assert set(out.failed) == {"crash", "tiny"} and "boom" in out.failed["crash"]
    assert out.extractor == "truth" and set(np.unique(out.tissue["gmm"][brain])) <= {1, 2, 3}
    assert np.all(out.tissue["gmm"][~brain] == 0)


def load_scan_from(img, tmp=None):
    from reface.io import _scan_from_image

    return _scan_from_image(img, "phantom")


def test_pipeline_cache_roundtrip(tmp_path: Path):
    data, brain, _ = _three_tissue()
    out = utility.PipelineOutput(brain={"deepbet": brain}, tissue={"gmm": utility.segment_tissues(data, brain)},
                                 failed={"robex": "RuntimeError: ROBEX exited with 1"}, extractor="deepbet")
    utility.save_pipeline(tmp_path / "o.npz", out)
    back = utility.load_pipeline(tmp_path / "o.npz")
    assert np.array_equal(back.brain["deepbet"], brain) and np.array_equal(back.tissue["gmm"], out.tissue["gmm"])
    assert back.failed == out.failed and back.extractor == "deepbet"


def test_brain_identical_fraction():
    img, brain = phantom_image(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))
    scan = load_scan_from(img)
    assert utility.brain_identical_fraction(scan, scan, brain) == 1.0
    changed = load_scan_from(img)
    changed.raw = scan.raw.copy()
    changed.raw[tuple(np.argwhere(brain)[0])] += 1
    assert utility.brain_identical_fraction(scan, changed, brain) == (brain.sum() - 1) / brain.sum()


def test_wasserstein_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 4000), rng.normal(0.7, 1.5, 3000)
    assert math.isclose(wasserstein_1d(a, b, n_quantiles=4096), wasserstein_distance(a, b), rel_tol=0.02)


def test_realism_detects_removed_face():
    img, brain = phantom_image(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))
    scan = load_scan_from(img)
    head = scan.data > 100
    regions = Regions(brain=brain, preserved=brain, head=head | brain)
    same = realism(scan, scan, regions)
    assert same["realism_hist_w1"] == 0.0 and same["realism_missing_head"] == 0.0
    for name in ("realism_bg_speckle", "realism_roughness_mm", "realism_edge_p90"):
        assert same[name] == same[name + "_orig"]  # an unchanged scan scores its own value
    defaced = load_scan_from(img)
    defaced.raw = scan.raw.copy()
    front = np.zeros(scan.shape, bool)
    front[:, 40:, :] = True  # anterior quarter (RAS phantom: j runs posterior -> anterior)
    defaced.raw[front & ~brain] = 0
    defaced._data = None
    values = realism(scan, defaced, regions)
    assert values["realism_missing_head"] > 0.05 and values["realism_hist_w1"] > 0.05


def test_results_writer_appends_and_nulls_nan(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    writer = harness.ResultsWriter(path)
    writer.write([harness.record("sub-01", "none", "auc", float("nan"), ci_low=np.float32(0.5))])
    writer.write([harness.record("sub-01", "none", "auc", 0.75)])
    raw = [json.loads(t) for t in path.read_text().splitlines()]
    assert raw[0]["value"] is None and raw[0]["ci_low"] == 0.5
    assert harness.latest(harness.read_results(path))[("sub-01", "none", "auc")]["value"] == 0.75


def test_discover_subjects(tmp_path: Path):
    img, brain = phantom_image(shape=(24, 28, 26), zooms=(8.0, 8.0, 8.0))
    for sub, sessions in (("sub-a", 2), ("sub-b", 2), ("sub-c", 1)):
        for ses in range(1, sessions + 1):
            anat = tmp_path / sub / f"ses-{ses:02d}" / "anat"
            anat.mkdir(parents=True)
            nib.save(img, anat / f"{sub}_ses-{ses:02d}_T1w.nii.gz")
            nib.save(nib.Nifti1Image(brain.astype(np.uint8), img.affine),
                     anat / f"{sub}_ses-{ses:02d}_desc-brain_mask.nii.gz")
    with pytest.warns(UserWarning, match="sub-c"):
        subjects = config.discover_subjects(tmp_path)
    assert [s.label for s in subjects] == ["sub-a", "sub-b"]
    assert "ses-01" in subjects[0].probe.name and "ses-02" in subjects[0].gallery.name
    assert subjects[0].probe_mask is not None and subjects[0].probe_mask.name.startswith("sub-a_ses-01")
    load_scan(subjects[0].probe)
    with pytest.raises(RefaceError):
        config.discover_subjects(tmp_path, limit=1)

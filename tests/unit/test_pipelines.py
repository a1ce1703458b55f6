"""The trusted utility yardsticks (HD-BET, ANTs Atropos) and the `pipeline` field of utility rows.

Fast tests check the row bookkeeping with cheap stand-ins; the slow ones run the third-party tools on the
ROBEX atlas head (reference brain mask shipped with it; HD-BET ~30-45 s, Atropos ~8 s on 2 cores).
"""

from __future__ import annotations

import numpy as np
import pytest

from reface.evaluate import metrics, pipelines, utility
from reface.report import measure_of


def _three_tissue(shape=(36, 36, 36), seed=0):
    rng = np.random.default_rng(seed)
    ijk = np.indices(shape).astype(float)
    r = np.sqrt(((ijk - (np.array(shape)[:, None, None, None] - 1) / 2) ** 2).sum(axis=0))
    truth = np.zeros(shape, np.uint8)
    truth[r < 16] = 1
    truth[r < 12] = 2
    truth[r < 8] = 3
    data = np.array([0.0, 250.0, 550.0, 800.0])[truth] + 20.0 * rng.standard_normal(shape)
    return data.astype(np.float32), truth > 0, truth


def test_rows_name_their_pipeline():
    data, brain, truth = _three_tissue()
    segs = ("gmm", "other")
    original = utility.PipelineOutput(brain={"a": brain, "b": brain}, extractor="a",
                                      tissue={"gmm": truth, "other": truth})
    shrunk = truth.copy()
    shrunk[:, :, :18][shrunk[:, :, :18] == 3] = 2
    deid = utility.PipelineOutput(brain={"a": brain, "b": brain}, extractor="a",
                                  tissue={"gmm": truth, "other": shrunk})
    values, names = utility.compare_rows(original, deid, segs, voxel_ml=0.001)
    assert names["bet_dice_b"] == "b" and names["dice_gm"] == "a+gmm" and names["dice_gm_other"] == "a+other"
    assert values["dice_wm"] == 1.0 and values["dvol_ml_wm"] == 0.0 and "utility_dice" not in values
    moved = int((truth[:, :, :18] == 3).sum())
    assert values["dvol_ml_wm_other"] == pytest.approx(-moved * 0.001)
    assert values["dvol_ml_gm_other"] == pytest.approx(moved * 0.001)
    assert values["utility_dice_other"] < 1.0 and values["tissue_failed_other"] == 0.0
    assert names["pipeline_failed"] == "a+gmm" and values["pipeline_failed"] == 0.0
    # a segmenter that failed on the de-identified scan only
    deid.tissue.pop("other")
    deid.failed["tissue_other"] = "RuntimeError: no"
    values, _ = utility.compare_rows(original, deid, segs)
    assert values["tissue_failed_other"] == 1.0 and values["pipeline_failed"] == 1.0


def test_segmenter_failure_is_recorded(monkeypatch):
    from reface.io import _scan_from_image
    from reface.phantom import phantom_image

    img, brain = phantom_image(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))
    scan = _scan_from_image(img, "phantom")

    def crash(*_args):
        raise RuntimeError("ants says no")

    monkeypatch.setitem(utility.EXTRACTORS, "truth", lambda _scan: brain)
    monkeypatch.setitem(utility.SEGMENTERS, "crash", crash)
    out = utility.run_pipeline(scan, ("truth",), ("gmm", "crash"))
    assert "gmm" in out.tissue and "crash" not in out.tissue
    assert "ants says no" in out.failed["tissue_crash"]


def test_report_measure_names():
    assert measure_of("bet_dice_hdbet", "hdbet") == "bet_dice"
    assert measure_of("dice_gm_atropos", "deepbet+atropos") == "dice_gm"
    assert measure_of("dice_gm", "deepbet+gmm") == "dice_gm"
    assert measure_of("absdiff_age@cmd:age", "cmd:age") == "absdiff_age"


def test_atropos_on_a_phantom():
    """Atropos (k-means init, MRF) recovers three nested tissues (a few seconds on a 36^3 phantom)."""
    data, brain, truth = _three_tissue()
    labels = pipelines.atropos_tissues(data, brain)
    assert labels.dtype == np.uint8 and np.all(labels[~brain] == 0)
    for label in (1, 2, 3):
        assert metrics.dice(labels == label, truth == label) > 0.95


@pytest.fixture(scope="module")
def robex_scan(tmp_path_factory):
    import nibabel as nib

    from reface.io import load_scan
    from reface.realheads import robex

    head = robex()
    path = tmp_path_factory.mktemp("robex") / "robex.nii.gz"
    nib.save(head.image, path)
    return load_scan(path), head.brain


@pytest.mark.slow
def test_hdbet_on_the_robex_head(robex_scan):
    """HD-BET (fast, CPU) against the ROBEX atlas head's reference mask: Dice 0.968 when measured."""
    scan, reference = robex_scan
    mask = utility.EXTRACTORS["hdbet"](scan)
    assert mask.shape == scan.shape and metrics.dice(mask, reference) > 0.95


@pytest.mark.slow
def test_atropos_agrees_with_gmm_on_the_robex_head(robex_scan):
    scan, reference = robex_scan
    atropos = pipelines.atropos_tissues(scan.data, reference, scan.zooms)
    gmm = utility.segment_tissues(scan.data, reference)
    for label in (1, 2, 3):  # two independent segmenters: same tissues, not the same voxels
        assert metrics.dice(atropos == label, gmm == label) > 0.8

"""`reface evaluate` with the new utility yardsticks on a tiny synthetic cohort (2 identities x 2 sessions,
4 mm): the quickshear peer beside shear, a --utility-cmd script pipeline (tests/data/toy_pipeline.py),
ANTs Atropos beside the GMM; every utility row names its pipeline and the report shows them.
(A geometric "ball" extractor stands in for deepbet, as in test_evaluate.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from reface.cli import main as cli_main
from reface.evaluate import utility
from reface.evaluate.harness import COHORT, RESULTS_NAME, latest, read_results


def ball_extractor(scan) -> np.ndarray:
    """A 55 mm ball around the centre of mass of the brighter half of the head (as in test_evaluate.py)."""
    data = scan.data
    centre = np.array(ndi.center_of_mass(data > np.median(data[data > data.mean()])))
    ijk = np.indices(scan.shape).reshape(3, -1).T
    world = (ijk - centre) * np.array(scan.zooms)
    return (np.linalg.norm(world, axis=1) <= 55.0).reshape(scan.shape)

TOY = Path(__file__).resolve().parents[1] / "data" / "toy_pipeline.py"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from reface.synth import generate_cohort

    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, 2, 7, resolution_mm=4.0)
    return root


def test_quickshear_usercmd_and_atropos(cohort: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(utility.EXTRACTORS, "ball", ball_extractor)
    out = tmp_path / "eval"
    toy = f"{sys.executable} {TOY}"
    code = cli_main(["evaluate", "--data", str(cohort), "--out", str(out), "--methods", "none,quickshear",
                     "--render-size", "48", "--bootstrap", "20", "--quiet", "--attackers", "yunet-sface",
                     "--panel", "none", "--extractors", "ball", "--segmenters", "gmm,atropos",
                     "--utility-cmd", f"vol:json={toy} json {{input}} {{output}}",
                     "--utility-cmd", f"seg:nii.gz={toy} labels {{input}} {{output}}",
                     "--utility-cmd", f"broken={toy} fail {{input}} {{output}}"])
    assert code == 0
    rows = latest(read_results(out / RESULTS_NAME))
    for sub in ("sub-0001", "sub-0002"):
        assert rows[(sub, "quickshear", "deid_failed")]["value"] == 0.0
        assert rows[(sub, "quickshear", "realism_missing_head")]["value"] > 0.05  # the face is gone
        assert rows[(sub, "none", "dice_gm")]["pipeline"] == "ball+gmm"
        assert rows[(sub, "none", "dice_gm_atropos")]["pipeline"] == "ball+atropos"
        assert rows[(sub, "none", "bet_dice_ball")]["pipeline"] == "ball"
        assert rows[(sub, "none", "dice_gm_atropos")]["value"] > 0.98  # Atropos+MRF: not bit-reproducible
        assert rows[(sub, "none", "absdiff_volume_ml@cmd:vol")]["value"] == 0.0
        assert rows[(sub, "none", "dice_1@cmd:seg")]["value"] == 1.0
        assert rows[(sub, "quickshear", "dice_1@cmd:seg")]["pipeline"] == "cmd:seg"
        assert rows[(sub, "quickshear", "absdiff_volume_ml@cmd:vol")]["value"] > 0.0
        assert rows[(sub, "none", "original_failed@cmd:broken")]["value"] == 1.0  # recorded, not a crash
    assert rows[(COHORT, "quickshear", "dice_gm")]["pipeline"] == "ball+gmm"
    html = (out / "report.html").read_text()
    assert "Utility by pipeline" in html and "ball+atropos" in html and "cmd:seg" in html
    assert "<tr><th>quickshear</th>" in html

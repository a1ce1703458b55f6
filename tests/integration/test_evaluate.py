"""`reface evaluate` end to end on a tiny synthetic cohort (2 identities x 2 sessions, 4 mm voxels) plus one
real head of the panel (real-robex), methods none + shear, two attackers, three views, small renderings;
then resume and --report-only.

The fast test swaps deepbet for a cheap geometric brain "extractor" (a ball around the bright tissue) to
stay within the CPU test budget; the slow test runs the real pipeline (deepbet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from reface.cli import main as cli_main
from reface.errors import RefaceError
from reface.evaluate import config, harness, utility
from reface.evaluate.harness import COHORT, DONE_METRIC, RESULTS_NAME, latest, read_results


def ball_extractor(scan) -> np.ndarray:
    """A 55 mm ball around the centre of mass of the brighter half of the head (~700 ml)."""
    data = scan.data
    centre = np.array(ndi.center_of_mass(data > np.median(data[data > data.mean()])))
    ijk = np.indices(scan.shape).reshape(3, -1).T
    world = (ijk - centre) * np.array(scan.zooms)
    return (np.linalg.norm(world, axis=1) <= 55.0).reshape(scan.shape)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from reface.synth import generate_cohort

    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, 2, 7, resolution_mm=4.0)
    return root


ATTACKERS = ("yunet-sface", "dlib-hog-resnet")


def _run(data: Path, out: Path, *extra: str) -> int:
    return cli_main(["evaluate", "--data", str(data), "--out", str(out), "--methods", "none,shear",
                     "--render-size", "64", "--bootstrap", "50", "--quiet", "--attackers", ",".join(ATTACKERS),
                     "--panel", "robex", *extra])


def test_evaluate_end_to_end_and_resume(cohort: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(utility.EXTRACTORS, "ball", ball_extractor)
    out = tmp_path / "eval"
    assert _run(cohort, out, "--extractors", "ball") == 0
    lines = read_results(out / RESULTS_NAME)
    rows = latest(lines)
    subjects = ("sub-0001", "sub-0002")
    for method in ("none", "shear"):
        for sub in (*subjects, "real-robex"):
            assert rows[(sub, method, "brain_identical")]["value"] == 1.0
            assert rows[(sub, method, "deid_failed")]["value"] == 0.0
            for view in ("front", "left30", "right30"):
                assert (out / "renders" / method / view / f"{sub}.png").exists()
            assert (out / "deid" / method / f"{sub}_T1w.nii.gz").exists()
        for attacker in ATTACKERS:
            for view in ("front", "left30", "right30", "pooled"):
                for metric in ("detect_rate", "detect_rel", "rank1", "rank5", "auc"):
                    item = rows[(COHORT, method, metric, attacker, view)]
                    assert item["value"] is None or item["ci_low"] <= item["value"] <= item["ci_high"]
                # the gallery: 2 synthetic heads + the real one; the cohort figures: the 2 synthetic probes
                assert rows[(COHORT, method, "rank1", attacker, view)]["chance"] == pytest.approx(1 / 3)
                assert rows[(COHORT, method, "rank1", attacker, view)]["n"] == 2
            assert ("real-robex", method, "rank", attacker, "front") in rows
        assert rows[(COHORT, method, "brain_identical")]["n"] == 2  # real heads are reported one by one
    # the untouched real head is found by YuNet at the front and its second session is the best match
    assert rows[("real-robex", "none", "rank", "yunet-sface", "front")]["value"] == 1.0
    assert (out / "panel" / "real-robex" / "real-robex_ses-02_T1w.nii.gz").exists()
    # the untouched scan goes through the same pipeline: identical outputs, nothing lost
    for sub in subjects:
        assert rows[(sub, "none", "bet_dice_ball")]["value"] == 1.0
        assert rows[(sub, "none", "dice_gm")]["value"] == 1.0
        assert rows[(sub, "none", "realism_missing_head")]["value"] == 0.0
        # shear removes the face: head tissue turns into background
        assert rows[(sub, "shear", "realism_missing_head")]["value"] > 0.05
        assert rows[(sub, "shear", "realism_hist_w1")]["value"] > 0.0
    html = (out / "report.html").read_text()
    assert "Privacy" in html and "Utility" in html and "renders/shear/front/sub-0001.png" in html
    assert "Real-head panel" in html and "renders/shear/left30/real-robex.png" in html
    assert (out / "figures" / "privacy_utility.png").exists()

    # resume: nothing left to do, so no per-subject line is written again
    # (a real head's identification rank is recomputed from the whole gallery on every run, like the cohort's)
    def per_subject(rows: list[dict]) -> int:
        return sum(1 for r in rows if r["subject"] != COHORT and r["metric"] != "rank")

    before = per_subject(lines)
    assert _run(cohort, out, "--extractors", "ball") == 0
    assert per_subject(read_results(out / RESULTS_NAME)) == before

    # drop one (subject, method) from the file: only that job runs again
    kept = [t for t in (out / RESULTS_NAME).read_text().splitlines()
            if not ('"sub-0002"' in t and '"shear"' in t)]
    (out / RESULTS_NAME).write_text("\n".join(kept) + "\n")
    cfg = config.EvalConfig(data=cohort, out=out, methods=("none", "shear"), render_size=64, n_boot=50,
                             extractors=("ball",), attackers=ATTACKERS, panel=("robex",), quiet=True)
    summary = harness.evaluate(cfg)
    assert summary.n_jobs == 1 and summary.skipped_jobs == 3 * 3 - 1
    assert ("sub-0002", "shear", DONE_METRIC) in latest(read_results(out / RESULTS_NAME))

    # a new renderer: every saved head is drawn and attacked again, no method or pipeline runs again;
    # a method whose output was not kept runs again whole
    from reface.evaluate import render

    monkeypatch.setattr(render, "RENDERER_VERSION", 99)
    monkeypatch.setattr(harness, "RENDERER_VERSION", 99)
    (out / "deid" / "shear" / "sub-0001_T1w.nii.gz").unlink()
    before = read_results(out / RESULTS_NAME)
    summary = harness.evaluate(cfg)
    heads = 3 * 2 + 3 * 2 - 1  # gallery + original, and none + shear, of 3 subjects; one shear rerun whole
    assert summary.n_jobs == heads + 1
    new_lines = read_results(out / RESULTS_NAME)[len(before):]
    assert [r["subject"] for r in new_lines if r["metric"] == "deid_s" and r["subject"] != COHORT] == ["sub-0001"]
    assert not any(r["metric"].startswith("bet_dice") and r["subject"] not in ("sub-0001", COHORT) for r in new_lines)
    rows = latest(read_results(out / RESULTS_NAME))
    for sub in (*subjects, "real-robex"):
        for folder in ("gallery", "original", "none", "shear"):
            assert rows[(sub, folder, "render_s")]["renderer"] == 99
    assert harness.evaluate(cfg).n_jobs == 0  # and then it is done

    # the report rebuilds from the saved lines alone, byte for byte
    assert cli_main(["evaluate", "--report-only", "--out", str(out), "--quiet"]) == 0
    first = (out / "report.html").read_bytes()
    (out / "report.html").unlink()
    assert cli_main(["evaluate", "--report-only", "--out", str(out), "--quiet"]) == 0
    assert (out / "report.html").read_bytes() == first
    assert cli_main(["evaluate", "--report-only", "--out", str(out), "--quiet"]) == 0
    assert (out / "report.html").read_bytes() == first  # a rerun rebuilds the same report


def test_missing_method_is_skipped_with_a_warning(cohort: Path, tmp_path: Path, monkeypatch):
    from reface import methods

    monkeypatch.setitem(methods.METHODS, "remodel", "reface.methods.not_written_yet:remodel")
    monkeypatch.setitem(utility.EXTRACTORS, "ball", ball_extractor)
    cfg = config.EvalConfig(data=cohort, out=tmp_path, methods=("none", "remodel"), render_size=64,
                             n_boot=20, extractors=("ball",), attackers=("yunet-sface",), panel=(), quiet=True)
    summary = harness.evaluate(cfg)
    assert "remodel" in summary.skipped_methods
    rows = latest(read_results(tmp_path / RESULTS_NAME))
    assert rows[(COHORT, "remodel", "skipped")]["note"].startswith("ModuleNotFoundError")
    assert not any(key[1] == "remodel" and key[0] != COHORT for key in rows)


def test_bad_arguments_are_user_errors(tmp_path: Path, capsys):
    assert cli_main(["evaluate", "--out", str(tmp_path)]) == 2
    assert cli_main(["evaluate", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert cli_main(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path), "--methods", "bogus"]) == 2
    assert cli_main(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path), "--attackers", "eigen"]) == 2
    assert cli_main(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path), "--panel", "yorick"]) == 2
    err = capsys.readouterr().err
    assert "--data is required" in err and "not found" in err
    assert "unknown attacker" in err and "unknown real head" in err


@pytest.mark.slow
def test_evaluate_with_deepbet(cohort: Path, tmp_path: Path):
    out = tmp_path / "eval"
    assert _run(cohort, out) == 0
    rows = latest(read_results(out / RESULTS_NAME))
    assert rows[(COHORT, "none", "bet_dice_deepbet")]["value"] == 1.0
    assert rows[(COHORT, "shear", "bet_dice_deepbet")]["value"] > 0.9


def test_resume_refuses_changed_settings(cohort: Path, tmp_path: Path):
    cfg = config.EvalConfig(data=cohort, out=tmp_path, seed=1, render_size=64)
    config.check_settings(cfg)
    config.check_settings(cfg)  # same settings: fine
    cfg.render_size = 128
    with pytest.raises(RefaceError, match="render_size 64 -> 128"):
        config.check_settings(cfg)


def test_costly_yardsticks_on_a_subset_and_a_restored_run(cohort: Path, tmp_path: Path, monkeypatch):
    """--yardstick-subjects 1: the second extractor and segmenter run on sub-0001 alone; then the run is packed
    (results + embeddings), unpacked elsewhere and resumed: only the originals' pipelines are redone, no
    picture is rendered again, and the new method's identification uses the restored gallery."""
    import importlib.util

    monkeypatch.setitem(utility.EXTRACTORS, "ball", ball_extractor)
    monkeypatch.setitem(utility.EXTRACTORS, "ball2", ball_extractor)
    monkeypatch.setitem(utility.SEGMENTERS, "gmm2", utility.SEGMENTERS["gmm"])
    out = tmp_path / "eval"
    common = dict(data=cohort, render_size=64, n_boot=20, extractors=("ball", "ball2"), segmenters=("gmm", "gmm2"),
                  attackers=("yunet-sface",), panel=(), yardstick_subjects=1, quiet=True)
    harness.evaluate(config.EvalConfig(out=out, methods=("none",), **common))
    rows = latest(read_results(out / RESULTS_NAME))
    assert rows[("sub-0001", "none", "bet_dice_ball2")]["value"] == 1.0
    assert rows[("sub-0001", "none", "dice_wm_gmm2")]["value"] == 1.0
    assert ("sub-0002", "none", "bet_dice_ball2") not in rows and ("sub-0002", "none", "dice_wm_gmm2") not in rows
    assert rows[("sub-0002", "none", "dice_wm")]["value"] == 1.0
    assert rows[(COHORT, "none", "dice_wm_gmm2")]["n"] == 1 and rows[(COHORT, "none", "dice_wm")]["n"] == 2

    script = Path(__file__).resolve().parents[2] / "scripts" / "eval_state.py"
    spec = importlib.util.spec_from_file_location("eval_state", script)
    eval_state = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_state)
    eval_state.pack(out, tmp_path / "packed")
    restored = tmp_path / "restored"
    eval_state.unpack(tmp_path / "packed", restored)
    with pytest.raises(SystemExit):
        eval_state.unpack(tmp_path / "packed", restored)  # never over a run's results
    summary = harness.evaluate(config.EvalConfig(out=restored, methods=("none", "shear"), **common))
    assert summary.n_jobs == 2 + 2  # two originals' pipelines, two shear jobs; `none` stays done
    assert not (restored / "renders" / "gallery").exists()  # the gallery was not rendered again
    again = latest(read_results(restored / RESULTS_NAME))
    assert again[("sub-0001", "shear", "dice_wm_gmm2")]["value"] > 0.9
    assert ("sub-0002", "shear", "dice_wm_gmm2") not in again
    assert again[(COHORT, "shear", "rank1", "yunet-sface", "pooled")]["n"] == 2
    key = (COHORT, "none", "rank1", "yunet-sface", "pooled")
    assert again[key]["value"] == rows[key]["value"] and again[key]["n"] == rows[key]["n"]

"""Identification figures from saved embeddings (per attacker, per view, pooled; detection vs originals; the
real heads' ranks), and attack_head's files and lines, with a stand-in attacker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reface.evaluate import attack, config, privacy
from reface.evaluate.results import DONE_METRIC, GALLERY, ORIGINAL

LABELS = [f"sub-{i:02d}" for i in range(6)] + ["real-head"]
IDENTITY = np.eye(8)[: len(LABELS)]  # one orthogonal embedding per person


def _save(out: Path, folder: str, view: str, vectors: dict[str, np.ndarray | None], attacker: str = "a") -> None:
    for label, vector in vectors.items():
        if vector is not None:
            path = privacy.embedding_path(out, attacker, folder, view, label)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vector)


def _rows(out: Path, probes: dict[str, dict[str, np.ndarray | None]], originals_found: int = 6):
    views = tuple(probes)
    for view in views:
        _save(out, GALLERY, view, dict(zip(LABELS, IDENTITY, strict=True)))
        _save(out, ORIGINAL, view, dict(zip(LABELS[:originals_found], IDENTITY, strict=False)))
        _save(out, "m", view, probes[view])
    subjects = [config.Subject(s, Path("p"), Path("g")) for s in LABELS]
    done = {(s, "m", DONE_METRIC): {} for s in LABELS}
    cfg = config.EvalConfig(data=out, out=out, n_boot=50, attackers=("a",), views=views)
    lines = privacy.identification_records(cfg, "m", subjects, done)
    cohort = {(r["metric"], r["view"]): r for r in lines if r["subject"] == "all"}
    real = {r["view"]: r for r in lines if r["subject"] == "real-head"}
    return cohort, real


@pytest.mark.parametrize("case", ["identified", "shuffled", "no_face"])
def test_identification_records(tmp_path: Path, case: str):
    if case == "identified":
        probes = dict(zip(LABELS, IDENTITY + 0.1, strict=True))
    elif case == "shuffled":
        probes = dict(zip(LABELS, np.roll(IDENTITY, 1, axis=0), strict=True))
    else:
        probes = dict.fromkeys(LABELS)
    cohort, real = _rows(tmp_path, {"front": probes})
    rank1 = cohort[("rank1", "front")]
    # the gallery holds the real head too (7 identities); the cohort figures are over the 6 synthetic probes
    assert rank1["chance"] == pytest.approx(1 / 7) and cohort[("rank5", "front")]["chance"] == pytest.approx(5 / 7)
    assert rank1["n"] == 6 and rank1["attacker"] == "a" and cohort[("auc", "front")]["chance"] == 0.5
    expected = {"identified": (1.0, 1.0, 1.0), "shuffled": (1.0, 0.0, 0.0), "no_face": (0.0, 0.0, 0.0)}[case]
    assert (cohort[("detect_rate", "front")]["value"], rank1["value"], rank1["ci_high"]) == expected
    assert cohort[("detect_rel", "front")]["value"] == expected[0]  # the originals: all found
    assert real["front"]["value"] == {"identified": 1.0, "shuffled": 7.0, "no_face": None}[case]
    assert real["front"]["gallery"] == 7
    if case == "identified":
        assert cohort[("auc", "front")]["value"] == 1.0
    if case == "shuffled":
        assert cohort[("auc", "front")]["value"] < 0.5  # impostors score higher than genuine pairs


def test_views_are_pooled_and_detection_is_relative_to_the_originals(tmp_path: Path):
    front = dict(zip(LABELS, IDENTITY + 0.1, strict=True))
    side = {label: (vector if i < 2 else None) for i, (label, vector) in enumerate(front.items())}
    cohort, real = _rows(tmp_path, {"front": front, "left30": side}, originals_found=3)
    assert cohort[("rank1", "front")]["value"] == 1.0
    assert cohort[("rank1", "left30")]["value"] == pytest.approx(2 / 6)
    assert cohort[("rank1", "pooled")]["value"] == pytest.approx(8 / 12) and cohort[("rank1", "pooled")]["n"] == 6
    assert cohort[("detect_rate", "pooled")]["value"] == pytest.approx(8 / 12)
    # the originals were found in 3 of 6 subjects: a method may find more faces than that (ratio > 1)
    assert cohort[("detect_rel", "front")]["value"] == pytest.approx(1.0 / 0.5)
    assert cohort[("detect_rel", "left30")]["value"] == pytest.approx((2 / 6) / 0.5)
    assert real["front"]["value"] == 1.0 and real["left30"]["value"] is None


class _Stub:
    """A stand-in attacker: a face wherever the picture is not dark, its embedding the mean colour."""

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        colour = image.reshape(-1, 3).mean(axis=0)
        return colour / np.linalg.norm(colour) if colour.mean() > 40 else None


def test_attack_head_writes_every_view_and_attacker(tmp_path: Path, monkeypatch):
    from reface.phantom import phantom_image

    monkeypatch.setitem(attack.ATTACKERS, "stub", ("a stub", _Stub))
    monkeypatch.setitem(attack._BUILT, "stub", _Stub())
    img, _ = phantom_image(shape=(40, 44, 42), zooms=(4.0, 4.0, 4.0))
    data = np.asarray(img.dataobj, np.float32)
    lines = privacy.attack_head(tmp_path, data, img.affine, "m", "sub-01", attackers=("stub",),
                                views=privacy.VIEWS, size=48)
    found = {r["view"]: r["value"] for r in lines if r["metric"] == "face_detected"}
    assert found == dict.fromkeys(privacy.VIEWS, 1.0)
    for view in privacy.VIEWS:
        assert privacy.render_path(tmp_path, "m", view, "sub-01").exists()
        assert privacy.embedding_path(tmp_path, "stub", "m", view, "sub-01").exists()
    assert {r["metric"] for r in lines} == {"face_detected", "render_s", "attack_s"}
    # an emptied volume: black pictures, no face, and no embedding left over from the run before
    lines = privacy.attack_head(tmp_path, np.zeros_like(data), img.affine, "m", "sub-01", attackers=("stub",),
                                views=privacy.VIEWS, size=48)
    assert all(r["value"] == 0.0 for r in lines if r["metric"] == "face_detected")
    assert not privacy.embedding_path(tmp_path, "stub", "m", "front", "sub-01").exists()

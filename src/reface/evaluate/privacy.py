"""Privacy in the evaluation: render every head at each view, attack each rendering with every registered
attacker, and turn the saved embeddings into identification figures.

Layout under OUT: renders/<folder>/<view>/<subject>.png and
embeddings/<attacker>/<folder>/<view>/<subject>.npy (absent = that attacker found no face), where folder is
`gallery` (the other session, original), `original` (the probe session before de-identification) or a method.
A probe at a view is compared with the gallery at the same view; `pooled` pools those trials over views.
Cohort figures are over the synthetic subjects; each real head (`real-*`) gets the rank of its true
identity instead. The gallery holds every subject, synthetic and real.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RefaceError
from .panel import is_real
from .results import COHORT, DONE_METRIC, GALLERY, ORIGINAL, record

VIEWS: tuple[str, ...] = ("front", "left30", "right30")  # yaw 0, +30 (towards the subject's left), -30
POOLED = "pooled"
DEFAULT_ATTACKERS: tuple[str, ...] = ("yunet-sface", "dlib-resnet", "dlib-hog-resnet")


def render_path(out: Path, folder: str, view: str, label: str) -> Path:
    return Path(out) / "renders" / folder / view / f"{label}.png"


def embedding_path(out: Path, attacker: str, folder: str, view: str, label: str) -> Path:
    return Path(out) / "embeddings" / attacker / folder / view / f"{label}.npy"


def attack_head(out: Path, data: np.ndarray, affine: np.ndarray, folder: str, label: str, *,
                attackers: tuple[str, ...], views: tuple[str, ...], size: int) -> list[dict[str, Any]]:
    """Render one head at every view, run every attacker on each picture, save pictures + embeddings.

    Returns face_detected lines (one per attacker and view) and the seconds spent rendering and attacking;
    the render_s line names the renderer's version (see rendered_by)."""
    from .attack import make_attacker
    from .render import RENDERER_VERSION, render_views, save_png

    start = time.perf_counter()
    try:
        images = render_views(data, affine, views=views, size=size)
    except RefaceError:  # nothing to render (e.g. an emptied volume): a black picture, no face
        images = {view: np.zeros((size, size, 3), np.uint8) for view in views}
    lines = [record(label, folder, "render_s", time.perf_counter() - start, renderer=RENDERER_VERSION)]
    for view, image in images.items():
        save_png(render_path(out, folder, view, label), image)
    for attacker in attackers:
        model = make_attacker(attacker)
        start = time.perf_counter()
        for view, image in images.items():
            embedding = model.embed(image)
            npy = embedding_path(out, attacker, folder, view, label)
            npy.unlink(missing_ok=True)
            if embedding is not None:
                npy.parent.mkdir(parents=True, exist_ok=True)
                np.save(npy, np.asarray(embedding, np.float32))
            lines.append(record(label, folder, "face_detected", float(embedding is not None),
                                attacker=attacker, view=view))
        lines.append(record(label, folder, "attack_s", time.perf_counter() - start, attacker=attacker,
                            view=POOLED))
    return lines


def rendered_by(done: dict, label: str, folder: str) -> int | None:
    """The renderer version that drew one head's saved pictures (1 for lines older than the versioning;
    None: never rendered)."""
    item = done.get((label, folder, "render_s"))
    return None if item is None else int(item.get("renderer", 1))


# ---------------------------------------------------------------- cohort figures from saved embeddings


def _load(path: Path) -> np.ndarray | None:
    return np.load(path) if path.exists() else None


class _Trials:
    """Similarities of the probes of one folder against the whole gallery, per view, for one attacker."""

    def __init__(self, out: Path, attacker: str, folder: str, probes: list[str], gallery: list[str],
                 views: tuple[str, ...]):
        from .metrics import identification_ranks, similarity_matrix

        self.detected: dict[str, np.ndarray] = {}
        self.ranks: dict[str, np.ndarray] = {}
        self.sim: dict[str, np.ndarray] = {}
        for view in views:
            emb = [_load(embedding_path(out, attacker, folder, view, p)) for p in probes]
            gal = [_load(embedding_path(out, attacker, GALLERY, view, g)) for g in gallery]
            self.sim[view] = similarity_matrix(emb, gal)  # [P, G]
            self.detected[view] = np.array([e is not None for e in emb], dtype=float)
            self.ranks[view] = identification_ranks(self.sim[view], probes, gallery)


def _view_lines(cfg, method: str, trials: _Trials, originals: _Trials, stack: tuple[str, ...],
                probes: np.ndarray, gallery: list[str], **extra: Any) -> list[dict[str, Any]]:
    """Cohort lines of one method, attacker and view (`stack`: the views pooled, one for a single view)."""
    from .metrics import bootstrap_ci, verification_auc

    n, g = len(probes), len(gallery)
    det = np.concatenate([trials.detected[v] for v in stack])
    det0 = np.concatenate([originals.detected[v] for v in stack])
    ranks = np.concatenate([trials.ranks[v] for v in stack])
    sim = np.concatenate([trials.sim[v] for v in stack])
    ids = np.concatenate([probes] * len(stack))
    extra.update(n=n, gallery=g, n_views=len(stack))

    def rows(idx: np.ndarray) -> np.ndarray:  # the trials of subjects idx at every view: rows i + n * k
        return np.concatenate([idx + n * k for k in range(len(stack))])

    def ratio(idx: np.ndarray) -> float:
        base = det0[rows(idx)].mean()
        return float(det[rows(idx)].mean() / base) if base > 0 else float("nan")

    figures = {
        "detect_rate": (lambda idx: float(det[rows(idx)].mean()), None),
        "detect_rel": (ratio, None),
        "rank1": (lambda idx: float((ranks[rows(idx)] <= 1).mean()), min(1, g) / g),
        "rank5": (lambda idx: float((ranks[rows(idx)] <= 5).mean()), min(5, g) / g),
    }
    if g >= 2:
        figures["auc"] = (lambda idx: verification_auc(sim[rows(idx)], ids[rows(idx)], gallery), 0.5)
    lines = []
    for metric, (fn, chance) in figures.items():
        lo, hi = bootstrap_ci(fn, n, n_boot=cfg.n_boot, seed=cfg.seed)
        lines.append(record(COHORT, method, metric, fn(np.arange(n)), ci_low=lo, ci_high=hi, chance=chance,
                            **extra))
    return lines


def identification_records(cfg, method: str, subjects: list, done: dict) -> list[dict[str, Any]]:
    """Per attacker and view (and pooled): detect_rate, detect_rel (vs the originals), rank1, rank5, auc over
    the synthetic probes with bootstrap CIs over subjects; and each real head's rank of its true identity."""
    finished = [s.label for s in subjects if (s.label, method, DONE_METRIC) in done]
    synthetic = [s for s in finished if not is_real(s)]
    real = [s for s in finished if is_real(s)]
    gallery = [s.label for s in subjects]
    views = tuple(cfg.views)
    lines: list[dict[str, Any]] = []
    for attacker in cfg.attackers:
        if synthetic:
            trials = _Trials(cfg.out, attacker, method, synthetic, gallery, views)
            originals = _Trials(cfg.out, attacker, ORIGINAL, synthetic, gallery, views)
            probes = np.array(synthetic, dtype=object)
            for view in (*views, POOLED):
                stack = views if view == POOLED else (view,)
                lines += _view_lines(cfg, method, trials, originals, stack, probes, gallery, attacker=attacker,
                                     view=view)
        if real:
            trials = _Trials(cfg.out, attacker, method, real, gallery, views)
            for view in views:
                for i, label in enumerate(real):
                    rank = trials.ranks[view][i]
                    lines.append(record(label, method, "rank", float(rank) if np.isfinite(rank) else None,
                                        gallery=len(gallery), attacker=attacker, view=view))
    return lines


def detection_records(cfg, folder: str, subjects: list, done: dict) -> list[dict[str, Any]]:
    """Cohort face-detection rate of the gallery or the original probes (synthetic subjects), per attacker
    and view."""
    lines = []
    labels = [s.label for s in subjects if not is_real(s.label)]
    for attacker in cfg.attackers:
        for view in cfg.views:
            values = [done[key]["value"] for s in labels
                      if (key := (s, folder, "face_detected", attacker, view)) in done]
            if values:
                lines.append(record(COHORT, folder, "detect_rate", float(np.mean(values)), n=len(values),
                                    attacker=attacker, view=view))
    return lines

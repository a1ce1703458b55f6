"""The evaluation harness behind `reface evaluate`: methods x subjects -> results.jsonl (+ pictures).

Per subject, the *other* session's original scan is the attacker's photo (gallery) and session 1 is the
scan that gets de-identified (probe). The real-head panel (panel.py) joins the dataset's subjects as
`real-<name>`. Work is split into jobs (jobs.py) that each return result records; only the main process appends
them to OUT/results.jsonl (results.py: one JSON line per result, flushed). This module plans the jobs and
writes the cohort figures; the run's settings and subjects are in config.py.
A (subject, method) job is done once its `wall_s` line exists, so a re-run skips it (resume). A head whose
pictures an older renderer drew (render.RENDERER_VERSION) is rendered and attacked again from its saved
scan, without running its method or its pipelines again; a method whose output was not kept runs again whole.
Cohort-level figures (subject `all`) are recomputed from the saved embeddings and lines at the end of
every run and appended; readers keep the last line per key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RefaceError
from .config import EvalConfig, Subject, check_settings, discover_subjects, yardstick_labels
from .jobs import PEERS, Job, execute, original_pipeline_path, output_path
from .panel import is_real, write_panel_subjects
from .privacy import detection_records, identification_records, rendered_by
from .render import RENDERER_VERSION
from .results import (  # noqa: F401  (re-exported: the harness was their home)
    COHORT,
    DONE_METRIC,
    GALLERY,
    ORIGINAL,
    RESULTS_NAME,
    ResultsWriter,
    latest,
    read_results,
    record,
)

IDENTIFICATION = ("detect_rate", "detect_rel", "rank1", "rank5", "auc")


@dataclass
class RunSummary:
    n_jobs: int = 0
    skipped_jobs: int = 0
    skipped_methods: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# ---------------------------------------------------------------- planning (what a run still needs)


def _attacked(subject: Subject, done: dict) -> bool:
    """The gallery and original were attacked in an earlier run (their embeddings are saved), so a missing
    pipeline output (a run restored from results and embeddings, see scripts/eval_state.py) is all to redo."""
    return (subject.label, GALLERY, DONE_METRIC) in done


def _stale(done: dict, label: str, folder: str) -> bool:
    version = rendered_by(done, label, folder)
    return version is not None and version != RENDERER_VERSION


def _stale_jobs(cfg: EvalConfig, subjects: list[Subject], methods: list[str], done: dict, prepare: list[Job],
                method_jobs: list[Job], full: set[str]) -> list[Job]:
    """"attack" jobs for the heads an older renderer drew; a method whose output was not kept is appended to
    `method_jobs` instead (it runs again whole). Heads already scheduled are skipped."""
    scheduled = {(job.subject.label, job.method) for job in method_jobs}
    attacked = {job.subject.label for job in prepare if job.attack}
    again = []
    for s in subjects:
        again += [Job("attack", s, folder) for folder in (GALLERY, ORIGINAL)
                  if s.label not in attacked and _stale(done, s.label, folder)]
        for m in methods:
            if (s.label, m) in scheduled or not _stale(done, s.label, m):
                continue
            if output_path(cfg, s, m).exists():
                again.append(Job("attack", s, m))
            else:
                method_jobs.append(Job("method", s, m, full=s.label in full))
    return again


# ---------------------------------------------------------------- cohort-level figures


def _boot(fn, n: int, cfg: EvalConfig) -> tuple[float, float]:
    from .metrics import bootstrap_ci

    return bootstrap_ci(fn, n, n_boot=cfg.n_boot, seed=cfg.seed)


def summary_records(cfg: EvalConfig, method: str, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cohort means (bootstrap CI over the synthetic subjects) of every per-subject number of one method."""
    per_metric: dict[str, list[float]] = {}
    pipelines: dict[str, str] = {}
    for key, item in latest(lines).items():
        subject, m, metric = key[:3]
        # privacy lines (attacker, view) have their own cohort figures; real heads are reported one by one
        if m != method or subject == COHORT or len(key) > 3 or is_real(subject):
            continue
        if item.get("value") is not None:
            per_metric.setdefault(metric, []).append(float(item["value"]))
        if "pipeline" in item:
            pipelines[metric] = item["pipeline"]
    out = []
    for metric, values in sorted(per_metric.items()):
        arr = np.asarray(values)
        lo, hi = _boot(lambda idx, arr=arr: float(arr[idx].mean()), arr.size, cfg)
        extra: dict[str, Any] = {"ci_low": lo, "ci_high": hi, "n": int(arr.size)}
        if metric == "brain_identical":
            extra["min"] = float(arr.min())
        if metric in pipelines:
            extra["pipeline"] = pipelines[metric]
            extra["max"] = float(arr.max())
        out.append(record(COHORT, method, metric, float(arr.mean()), **extra))
    return out


# ---------------------------------------------------------------- driver


def available_methods(names: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Methods whose code imports, and the reason for each one that does not (skipped, not fatal)."""
    from ..methods import METHODS, get_method

    ok, skipped = [], {}
    for name in names:
        if name in PEERS:
            ok.append(name)
            continue
        if name not in METHODS:
            raise RefaceError(f"unknown method {name!r}; choose from {', '.join([*METHODS, *PEERS])}")
        try:
            get_method(name)
        except (ImportError, AttributeError) as error:
            skipped[name] = f"{type(error).__name__}: {error}"
            continue
        ok.append(name)
    return ok, skipped


def evaluate(cfg: EvalConfig) -> RunSummary:
    """Run (or resume) the evaluation and append every result to OUT/results.jsonl."""
    from ..progress import track

    start = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    subjects = discover_subjects(cfg.data, cfg.subjects)
    check_settings(cfg)
    subjects += write_panel_subjects(cfg.out, tuple(cfg.panel), cfg.seed)
    results = cfg.out / RESULTS_NAME
    writer = ResultsWriter(results)
    methods, skipped = available_methods(cfg.methods)
    summary = RunSummary(skipped_methods=skipped)
    writer.write(record(COHORT, name, "skipped", 1.0, note=reason) for name, reason in skipped.items())

    done = latest(read_results(results))
    full = yardstick_labels(cfg, subjects)
    prepare = [
        Job("prepare", s, full=s.label in full, attack=not _attacked(s, done))
        for s in subjects
        if (s.label, GALLERY, DONE_METRIC) not in done or not original_pipeline_path(cfg, s).exists()
    ]
    method_jobs = [
        Job("method", s, m, full=s.label in full)
        for m in methods
        for s in subjects
        if (s.label, m, DONE_METRIC) not in done
    ]
    again = _stale_jobs(cfg, subjects, methods, done, prepare, method_jobs, full)
    summary.skipped_jobs = len(subjects) * (1 + len(methods)) - len(prepare) - len(method_jobs)
    summary.n_jobs = len(prepare) + len(method_jobs) + len(again)
    for batch, desc in ((prepare, "evaluate: originals"), (method_jobs, "evaluate: methods"),
                        (again, "evaluate: pictures again (new renderer)")):
        for lines in track(execute(cfg, batch), total=len(batch), desc=desc, quiet=cfg.quiet):
            writer.write(lines)

    all_lines = read_results(results)
    done = latest(all_lines)
    cohort = []
    for method in methods:
        cohort += identification_records(cfg, method, subjects, done)
        cohort += summary_records(cfg, method, all_lines)
    for folder in (GALLERY, ORIGINAL):
        cohort += detection_records(cfg, folder, subjects, done)
    values = [
        done[key]["value"]
        for s in subjects
        if not is_real(s.label) and (key := (s.label, GALLERY, "original_pipeline_failed")) in done
    ]
    if values:
        cohort.append(record(COHORT, GALLERY, "original_pipeline_failed", float(np.mean(values)), n=len(values)))
    writer.write(cohort)
    summary.seconds = time.perf_counter() - start
    return summary


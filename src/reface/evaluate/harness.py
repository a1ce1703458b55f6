"""The evaluation harness behind `reface evaluate`: methods x subjects -> results.jsonl (+ pictures).

Per subject, the *other* session's original scan is the attacker's photo (gallery) and session 1 is the
scan that gets de-identified (probe). The real-head panel (panel.py) joins the dataset's subjects as
`real-<name>`. Work is split into jobs that each return result records; only the main process appends them
to OUT/results.jsonl (results.py: one JSON line per result, flushed).
A (subject, method) job is done once its `wall_s` line exists, so a re-run skips it (resume). A head whose
pictures an older renderer drew (render.RENDERER_VERSION) is rendered and attacked again from its saved
scan, without running its method or its pipelines again; a method whose output was not kept runs again whole.
Cohort-level figures (subject `all`) are recomputed from the saved embeddings and lines at the end of
every run and appended; readers keep the last line per key.

Layout of OUT: results.jsonl, renders/ and embeddings/ (see privacy.py), utility/<subject>_original.npz,
deid/<method>/<subject>_T1w.nii.gz, panel/real-<name>/ (the panel's scans), utility/<subject>_cmd-<name>.npz
(a --utility-cmd pipeline's output on the original).

Utility rows carry a `pipeline` field (utility.pipeline_name, or `cmd:<name>`). Besides reface's methods,
the evaluation knows peers that are other tools (PEERS: `quickshear`, the PyPI tool given the brain mask);
they go through the same scoring but not through `reface run`.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RefaceError
from ..realheads import PANEL
from .panel import is_real, write_panel_subjects
from .privacy import (
    DEFAULT_ATTACKERS,
    VIEWS,
    attack_head,
    detection_records,
    embedding_path,
    identification_records,
    rendered_by,
)
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

SETTINGS_NAME = "evaluate_settings.json"
IDENTIFICATION = ("detect_rate", "detect_rel", "rank1", "rank5", "auc")


@dataclass
class EvalConfig:
    """Everything that defines one evaluation run (kwargs of `evaluate`, flags of the CLI)."""

    data: Path
    out: Path
    methods: tuple[str, ...] = ("none", "deface", "shear", "blur", "template", "remodel")
    subjects: int | None = None  # first N subjects (sorted), None = all
    seed: int = 0
    jobs: int = 1
    render_size: int = 256
    extractors: tuple[str, ...] = ("deepbet",)
    segmenters: tuple[str, ...] = ("gmm",)  # utility.SEGMENTERS; the first one gives `utility_dice`
    yardstick_subjects: int | None = None  # extractors/segmenters after the first: first N synthetic + real
    utility_cmds: tuple[Any, ...] = ()  # usercmd.UserCommand: user pipelines run on original and output
    attackers: tuple[str, ...] = DEFAULT_ATTACKERS
    views: tuple[str, ...] = VIEWS
    panel: tuple[str, ...] = PANEL  # real heads added to every evaluation (realheads.PANEL names)
    n_boot: int = 1000
    save_outputs: bool = True  # keep the de-identified NIfTIs under OUT/deid
    quiet: bool = False


@dataclass(frozen=True)
class Subject:
    """One identity: the scan to de-identify (probe) and another session of it (gallery)."""

    label: str
    probe: Path
    gallery: Path
    probe_mask: Path | None = None


@dataclass
class Job:
    kind: str  # "prepare" (gallery + original pipeline), "method", or "attack" (render + attack a saved head)
    subject: Subject
    method: str = ""  # the method, or for "attack" the folder (gallery, original or a method)
    full: bool = True  # every extractor and segmenter (False: only the first of each, see yardstick_subjects)
    attack: bool = True  # prepare: render and attack too (False: only the original's pipeline is missing)


def yardstick_labels(cfg: EvalConfig, subjects: list[Subject]) -> set[str]:
    """Subjects that get every extractor and segmenter: all, or the first N synthetic ones and the real heads.

    Costly yardsticks (Atropos ~1 min, HD-BET ~40 s per scan on one core) do not fit the whole cohort on a
    small machine; a fixed, named subset keeps them comparable across methods."""
    if cfg.yardstick_subjects is None:
        return {s.label for s in subjects}
    synthetic = [s.label for s in subjects if not is_real(s.label)]
    return set(synthetic[: cfg.yardstick_subjects]) | {s.label for s in subjects if is_real(s.label)}


def _pipelines(cfg: EvalConfig, full: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (cfg.extractors, cfg.segmenters) if full else (cfg.extractors[:1], cfg.segmenters[:1])


@dataclass
class RunSummary:
    n_jobs: int = 0
    skipped_jobs: int = 0
    skipped_methods: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# ---------------------------------------------------------------- dataset


def discover_subjects(data: Path, limit: int | None = None) -> list[Subject]:
    """Subjects with at least two T1w sessions: sub-*/ses-*/anat/*_T1w.nii[.gz] (first session = probe)."""
    data = Path(data)
    if not data.is_dir():
        raise RefaceError(f"dataset folder not found: {data}")
    subjects = []
    for sub_dir in sorted(p for p in data.glob("sub-*") if p.is_dir()):
        scans = sorted(
            p for p in sub_dir.glob("ses-*/anat/*_T1w.nii*") if p.name.endswith((".nii", ".nii.gz"))
        )
        if len(scans) < 2:
            warnings.warn(f"{sub_dir.name}: fewer than two T1w sessions, skipped", stacklevel=2)
            continue
        prefix = scans[0].name[: scans[0].name.index("_T1w")]
        masks = sorted(scans[0].parent.glob(f"{prefix}*_desc-brain_mask.nii*"))
        subjects.append(Subject(sub_dir.name, scans[0], scans[1], masks[0] if masks else None))
        if limit is not None and len(subjects) >= limit:
            break
    if len(subjects) < 2:
        message = f"{data}: need at least 2 subjects with 2 T1w sessions each, found {len(subjects)}"
        raise RefaceError(message)
    return subjects


# ---------------------------------------------------------------- jobs (run in worker processes)

def _attack(cfg: EvalConfig, data: np.ndarray, affine: np.ndarray, folder: str, label: str) -> list[dict]:
    return attack_head(cfg.out, data, affine, folder, label, attackers=cfg.attackers, views=cfg.views,
                       size=cfg.render_size)


def _attacked(subject: Subject, done: dict) -> bool:
    """The gallery and original were attacked in an earlier run (their embeddings are saved), so a missing
    pipeline output (a run restored from results and embeddings, see scripts/eval_state.py) is all to redo."""
    return (subject.label, GALLERY, DONE_METRIC) in done


def _original_pipeline_path(cfg: EvalConfig, subject: Subject) -> Path:
    return cfg.out / "utility" / f"{subject.label}_original.npz"


def _output_path(cfg: EvalConfig, subject: Subject, method: str) -> Path:
    return cfg.out / "deid" / method / f"{subject.label}_T1w.nii.gz"


def _command_path(cfg: EvalConfig, subject: Subject, command) -> Path:
    return cfg.out / "utility" / f"{subject.label}_cmd-{command.name}.npz"


def quickshear_peer(scan, brain: np.ndarray | None, *, seed: int = 0):
    """The `quickshear` PyPI tool as an evaluation peer: defaces `scan` below the plane its own algorithm
    puts under `brain` (deepbet's mask when none is given). Returns a deidentify.Result-like object."""
    import nibabel as nib
    from quickshear import quickshear

    from ..deidentify import Result
    from ..masks import make_regions

    regions = make_regions(scan, brain=brain)  # deepbet when brain is None; also the realism regions
    img = nib.Nifti1Image(scan.raw, scan.affine)
    mask = nib.Nifti1Image(regions.brain.astype(np.uint8), scan.affine)
    out = np.asanyarray(quickshear(img, mask).dataobj)  # raw values * (kept side of the plane)
    return Result(scan=scan, raw=out.astype(scan.raw.dtype).reshape(scan.raw.shape), regions=regions,
                  method="quickshear", seed=seed)


# Evaluation-only peers: name -> fn(scan, brain, seed=) -> Result (brain may be None: the tool's own mask).
PEERS = {"quickshear": quickshear_peer}


def prepare_subject(cfg: EvalConfig, subject: Subject, full: bool = True, attack: bool = True
                    ) -> list[dict[str, Any]]:
    """Gallery and original-probe renderings + attacks at every view, and the original's pipeline output.

    attack=False redoes only the pipeline output (a run restored from results and embeddings alone)."""
    from ..io import load_scan
    from .utility import run_pipeline, save_pipeline

    start = time.perf_counter()
    lines: list[dict[str, Any]] = []
    if attack:
        gallery = load_scan(subject.gallery)
        lines += _attack(cfg, gallery.data, gallery.affine, GALLERY, subject.label)
    probe = load_scan(subject.probe)
    if attack:
        lines += _attack(cfg, probe.data, probe.affine, ORIGINAL, subject.label)  # the originals' detection
    utility_start = time.perf_counter()
    original = run_pipeline(probe, *_pipelines(cfg, full))
    save_pipeline(_original_pipeline_path(cfg, subject), original)
    reasons = "; ".join(f"{k}: {v}" for k, v in original.failed.items())
    for command in cfg.utility_cmds:
        from .usercmd import run_command, save_output

        output = run_command(command, subject.probe)
        save_output(_command_path(cfg, subject, command), output)
        lines.append(record(subject.label, GALLERY, f"original_failed@{command.pipeline}",
                            1.0 if output.failed else 0.0, pipeline=command.pipeline, note=output.failed))
    return lines + [
        record(
            subject.label, GALLERY, "original_pipeline_failed", float(bool(original.failed)), note=reasons
        ),
        record(subject.label, GALLERY, "utility_s", time.perf_counter() - utility_start),
        record(subject.label, GALLERY, DONE_METRIC, time.perf_counter() - start),
    ]


def run_method(cfg: EvalConfig, subject: Subject, method: str, full: bool = True) -> list[dict[str, Any]]:
    """De-identify the probe with one method and score it: brain identity, attack, utility, realism."""
    from ..deidentify import deidentify, save_result
    from ..io import load_mask, load_scan
    from .realism import realism
    from .utility import brain_identical_fraction, compare_rows, load_pipeline, run_pipeline

    start = time.perf_counter()
    label = subject.label
    lines: list[dict[str, Any]] = []
    scan = load_scan(subject.probe)
    brain = load_mask(subject.probe_mask, scan) if subject.probe_mask is not None else None
    try:
        if method in PEERS:
            result = PEERS[method](scan, brain, seed=cfg.seed)
        else:
            result = deidentify(scan, method, seed=cfg.seed, brain=brain)
    except Exception as error:  # a method failing on a scan is an outcome to report
        lines.append(record(label, method, "deid_failed", 1.0, note=f"{type(error).__name__}: {error}"[:300]))
        for attacker in cfg.attackers:  # nothing to look at: no face, and no stale embedding from a past run
            for view in cfg.views:
                embedding_path(cfg.out, attacker, method, view, label).unlink(missing_ok=True)
                lines.append(record(label, method, "face_detected", 0.0, attacker=attacker, view=view))
        lines.append(record(label, method, DONE_METRIC, time.perf_counter() - start))
        return lines
    lines.append(record(label, method, "deid_failed", 0.0))
    lines.append(record(label, method, "deid_s", time.perf_counter() - start))
    out_path = _output_path(cfg, subject, method)
    if method in PEERS:  # another tool: its output as it is, the preserved-brain check is ours alone
        from ..io import save_scan_like

        save_scan_like(scan, result.raw, out_path, force=True)
    else:
        save_result(result, out_path, force=True)
    written = load_scan(out_path)  # score what is on disk, not what is in memory
    reference_brain = brain if brain is not None else result.regions.brain
    lines.append(
        record(label, method, "brain_identical", brain_identical_fraction(scan, written, reference_brain))
    )

    lines += _attack(cfg, written.data, written.affine, method, label)

    utility_start = time.perf_counter()
    original = load_pipeline(_original_pipeline_path(cfg, subject))
    voxel_ml = float(np.prod(written.zooms)) / 1000.0
    values, pipelines = compare_rows(original, run_pipeline(written, *_pipelines(cfg, full)),
                                     cfg.segmenters, voxel_ml)
    suffix_free = [v for k, v in values.items() if k.startswith("dice_") and k.count("_") == 1]
    first = pipelines.get("pipeline_failed")
    if suffix_free:
        values["utility_dice"], pipelines["utility_dice"] = float(np.mean(suffix_free)), first
    elif values.get("pipeline_failed"):
        values["utility_dice"], pipelines["utility_dice"] = 0.0, first
    values["utility_s"] = time.perf_counter() - utility_start
    lines.extend(record(label, method, name, value, pipeline=pipelines[name]) for name, value in values.items()
                 if name in pipelines)
    lines.append(record(label, method, "utility_s", values["utility_s"]))
    lines += _command_records(cfg, subject, method, out_path, written)
    realism_values = realism(scan, written, result.regions)
    lines.extend(record(label, method, name, value) for name, value in realism_values.items())
    lines.append(record(label, method, DONE_METRIC, time.perf_counter() - start))
    return lines


def _command_records(cfg: EvalConfig, subject: Subject, method: str, out_path: Path, written) -> list[dict]:
    """Each --utility-cmd on the de-identified file, compared with its saved output on the original;
    metrics `<measure>@cmd:<name>` (see usercmd.compare), the written file removed unless kept."""
    from .usercmd import compare, load_output, run_command

    lines = []
    for command in cfg.utility_cmds:
        original = load_output(_command_path(cfg, subject, command))
        output = run_command(command, out_path)
        for measure, value in compare(original, output).items():
            note = {"note": output.failed} if measure == "failed" and output.failed else {}
            lines.append(record(subject.label, method, f"{measure}@{command.pipeline}", value,
                                pipeline=command.pipeline, **note))
    if not cfg.save_outputs:
        out_path.unlink()
    return lines


def attack_again(cfg: EvalConfig, subject: Subject, folder: str) -> list[dict[str, Any]]:
    """Render and attack one saved head again (gallery, original, or a method's kept output)."""
    from ..io import load_scan

    path = {GALLERY: subject.gallery, ORIGINAL: subject.probe}.get(folder) or _output_path(cfg, subject, folder)
    scan = load_scan(path)
    return _attack(cfg, scan.data, scan.affine, folder, subject.label)


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
            if _output_path(cfg, s, m).exists():
                again.append(Job("attack", s, m))
            else:
                method_jobs.append(Job("method", s, m, full=s.label in full))
    return again


def _run_job(cfg: EvalConfig, job: Job) -> list[dict[str, Any]]:
    if job.kind == "prepare":
        return prepare_subject(cfg, job.subject, job.full, job.attack)
    if job.kind == "attack":
        return attack_again(cfg, job.subject, job.method)
    return run_method(cfg, job.subject, job.method, job.full)


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


def check_settings(cfg: EvalConfig) -> None:
    """Resuming with settings that change results would mix incomparable numbers: refuse, name the change."""
    current = {
        "seed": cfg.seed,
        "render_size": cfg.render_size,
        "extractors": list(cfg.extractors),
        "data": str(Path(cfg.data).resolve()),
        "attackers": list(cfg.attackers),
        "views": list(cfg.views),
        "panel": list(cfg.panel),
        "segmenters": list(cfg.segmenters),
        "yardstick_subjects": cfg.yardstick_subjects,
        "utility_cmds": [f"{c.name}:{c.suffix}={c.template}" for c in cfg.utility_cmds],
    }
    path = cfg.out / SETTINGS_NAME
    if path.exists():
        saved = {"segmenters": ["gmm"], "utility_cmds": [], "yardstick_subjects": None,  # older runs
                 **json.loads(path.read_text())}
        changed = sorted(k for k in current if saved.get(k) != current[k])
        if changed:
            detail = ", ".join(f"{k} {saved.get(k)!r} -> {current[k]!r}" for k in changed)
            raise RefaceError(f"{cfg.out} holds results made with other settings ({detail}); use a new --out")
        return
    path.write_text(json.dumps(current, indent=2) + "\n")


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
        if (s.label, GALLERY, DONE_METRIC) not in done or not _original_pipeline_path(cfg, s).exists()
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
        for lines in track(_execute(cfg, batch), total=len(batch), desc=desc, quiet=cfg.quiet):
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


def _execute(cfg: EvalConfig, jobs: list[Job]):
    """Yield each job's records as it finishes (in-process for --jobs 1, else a spawn process pool)."""
    if cfg.jobs <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _run_job(cfg, job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run_job, cfg, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()

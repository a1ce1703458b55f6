"""The evaluation's jobs, run in worker processes: what a "prepare", "method" or "attack" job does to one
subject, and how a list of them runs (in-process, or a spawn process pool). Each job returns result records;
only the main process writes them (harness.py).

Apart from the harness, which plans the jobs, because this is the work itself: de-identify, render, attack,
run the downstream pipelines and score. Layout of OUT: results.jsonl, renders/ and embeddings/ (see
privacy.py), utility/<subject>_original.npz, deid/<method>/<subject>_T1w.nii.gz, panel/real-<name>/ (the
panel's scans), utility/<subject>_cmd-<name>.npz (a --utility-cmd pipeline's output on the original).

Utility rows carry a `pipeline` field (utility.pipeline_name, or `cmd:<name>`). Besides reface's methods,
the evaluation knows peers that are other tools (PEERS: `quickshear`, the PyPI tool given the brain mask);
they go through the same scoring but not through `reface run`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import EvalConfig, Subject
from .privacy import attack_head, embedding_path
from .results import DONE_METRIC, GALLERY, ORIGINAL, record


@dataclass
class Job:
    kind: str  # "prepare" (gallery + original pipeline), "method", or "attack" (render + attack a saved head)
    subject: Subject
    method: str = ""  # the method, or for "attack" the folder (gallery, original or a method)
    full: bool = True  # every extractor and segmenter (False: only the first of each, see yardstick_subjects)
    attack: bool = True  # prepare: render and attack too (False: only the original's pipeline is missing)


def _pipelines(cfg: EvalConfig, full: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (cfg.extractors, cfg.segmenters) if full else (cfg.extractors[:1], cfg.segmenters[:1])


def _attack(cfg: EvalConfig, data: np.ndarray, affine: np.ndarray, folder: str, label: str) -> list[dict]:
    return attack_head(cfg.out, data, affine, folder, label, attackers=cfg.attackers, views=cfg.views,
                       size=cfg.render_size)


def original_pipeline_path(cfg: EvalConfig, subject: Subject) -> Path:
    return cfg.out / "utility" / f"{subject.label}_original.npz"


def output_path(cfg: EvalConfig, subject: Subject, method: str) -> Path:
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
    save_pipeline(original_pipeline_path(cfg, subject), original)
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
    out_path = output_path(cfg, subject, method)
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
    original = load_pipeline(original_pipeline_path(cfg, subject))
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

    path = {GALLERY: subject.gallery, ORIGINAL: subject.probe}.get(folder) or output_path(cfg, subject, folder)
    scan = load_scan(path)
    return _attack(cfg, scan.data, scan.affine, folder, subject.label)


def run_job(cfg: EvalConfig, job: Job) -> list[dict[str, Any]]:
    if job.kind == "prepare":
        return prepare_subject(cfg, job.subject, job.full, job.attack)
    if job.kind == "attack":
        return attack_again(cfg, job.subject, job.method)
    return run_method(cfg, job.subject, job.method, job.full)


def execute(cfg: EvalConfig, jobs: list[Job]):
    """Yield each job's records as it finishes (in-process for --jobs 1, else a spawn process pool)."""
    if cfg.jobs <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield run_job(cfg, job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, cfg, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()

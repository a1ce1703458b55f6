"""Batch de-identification of many sessions: local process pool or Dask, resumable, never stopped by one bad scan.

The main process decides what to run (manifest), workers do one session each and never raise (a failure is
an outcome), and only the main process writes the manifest. A worker process loads a method's model once:
methods cache it per process (functools.lru_cache), and pool/Dask workers are long-lived processes.

Manifest (OUTPUT_DIR/reface_manifest.json): per session, the method/seed/options, the sha256 of every input and
output (with size and mtime, so unchanged files are not hashed again), per-image status and errors. A re-run
skips a session whose inputs, outputs and settings are unchanged; a session that failed on unchanged inputs
is skipped too (reported with its reason) unless `retry_failed`.

Warnings (a scan processed, but e.g. its field of view cuts the brain at the vertex) are recorded per image in
the manifest and listed in the end-of-run summary, also for sessions skipped because they finished before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .bids import DEFAULT_DESC, Image, Session, derivative_keys, output_path, sidecar_output_path
from .errors import RefaceError
from .masks import DEFAULT_MARGIN_MM
from .sidecar import AcqTimePolicy, ScrubPolicy, make_policy, scrub_file

MANIFEST_NAME = "reface_manifest.json"
MANIFEST_VERSION = 1
FINISHED = "finished before, inputs unchanged"


@dataclass
class Settings:
    """Everything that changes an output; a change makes finished sessions run again."""

    method: str
    seed: int = 0
    desc: str = DEFAULT_DESC
    margin_mm: float = DEFAULT_MARGIN_MM
    options: dict[str, Any] = field(default_factory=dict)  # method options, e.g. {"model": path}
    model_sha256: str | None = None  # identity of the model file, when the method has one
    policy: ScrubPolicy = field(default_factory=make_policy)

    def fingerprint(self) -> dict[str, Any]:
        scrub = json.dumps([list(self.policy.scrub), list(self.policy.keep)]).encode()
        return {"method": self.method, "seed": self.seed, "desc": self.desc, "margin_mm": self.margin_mm,
                "options": {k: str(v) for k, v in sorted(self.options.items())},
                "model_sha256": self.model_sha256, "scrub_policy": hashlib.sha256(scrub).hexdigest()[:16]}


@dataclass
class Task:
    """One session to process (picklable: sent to pool or Dask workers)."""

    session: Session
    bids_dir: str
    output_dir: str
    settings: Settings
    device: str = "cpu"


@dataclass
class ImageOutcome:
    input: str  # relative to the BIDS root
    output: str | None  # relative to the output root
    status: str  # "done" | "failed"
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # processed, but the user should know (cut-off brain, ...)


@dataclass
class Outcome:
    """What happened to one session; `status` is done, partial (some images failed) or failed."""

    key: str
    status: str
    images: list[ImageOutcome] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    seed: int = 0
    transient: bool = False  # the worker died: retry on the next run rather than remember a failure


# --- checksums ------------------------------------------------------------------------------------------------

def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fobj:
        while block := fobj.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """{sha256, size, mtime_ns}; the previous hash is reused when size and mtime are unchanged."""
    stat = path.stat()
    if previous and previous.get("size") == stat.st_size and previous.get("mtime_ns") == stat.st_mtime_ns:
        return dict(previous)
    return {"sha256": sha256(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def session_inputs(session: Session) -> list[Path]:
    """Relative paths of every file a session's outputs depend on."""
    paths = [image.path for image in session.images] + [i.sidecar for i in session.images if i.sidecar]
    if session.brain_mask is not None:
        paths.append(session.brain_mask)
    return sorted(paths, key=str)


def session_seed(seed: int, key: str) -> int:
    """A different, reproducible seed per session, so subjects do not all get one face."""
    import numpy as np

    return int(np.random.SeedSequence([seed, zlib.crc32(key.encode())]).generate_state(1)[0])


# --- the worker -----------------------------------------------------------------------------------------------

def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if not isinstance(error, RefaceError) else str(error)


def process_session(task: Task) -> Outcome:
    """De-identify one session (T1w, then the other contrasts, then sidecars). Never raises."""
    start = time.perf_counter()
    session, settings = task.session, task.settings
    root, out = Path(task.bids_dir), Path(task.output_dir)
    seed = session_seed(settings.seed, session.key)
    outcome = Outcome(key=session.key, status="failed", seed=seed)
    try:
        from .deidentify import deidentify, save_result
        from .io import load_mask, load_scan

        ref = session.reference
        scan = load_scan(root / ref.path)
        brain = load_mask(root / session.brain_mask, scan) if session.brain_mask is not None else None
        result = deidentify(scan, settings.method, seed=seed, brain=brain, margin_mm=settings.margin_mm,
                            device=task.device, **settings.options)
        save_result(result, out / output_path(ref, settings.desc), force=True)
        write_sidecar(ref, root, out, settings)
        changed = int((result.raw != scan.raw).sum())
        outcome.images.append(ImageOutcome(str(ref.path), str(output_path(ref, settings.desc)), "done",
                                           detail={"changed_voxels": changed}, warnings=list(result.warnings)))
    except Exception as error:  # one bad scan must not stop the batch: report it
        outcome.error = _error_text(error)
        outcome.images.append(ImageOutcome(str(session.reference.path), None, "failed", outcome.error,
                                           detail={"traceback": traceback.format_exc(limit=3)}
                                           if not isinstance(error, RefaceError) else {}))
        for image in session.others:
            outcome.images.append(ImageOutcome(str(image.path), None, "failed", "the session's T1w failed"))
        outcome.seconds = time.perf_counter() - start
        return outcome
    for image in session.others:
        outcome.images.append(_process_contrast(result, image, root, out, settings, seed))
    failed = [i for i in outcome.images if i.status != "done"]
    outcome.status = "done" if not failed else "partial"
    outcome.error = "; ".join(f"{Path(i.input).name}: {i.error}" for i in failed) or None
    outcome.seconds = time.perf_counter() - start
    return outcome


def write_sidecar(image: Image, root: Path, out: Path, settings: Settings) -> None:
    """The output's JSON sidecar: the input's, scrubbed, plus what BIDS derivatives require (SkullStripped);
    written even when the input has none, since a derivative image without it is invalid."""
    scrub_file(root / image.sidecar if image.sidecar is not None else None,
               out / sidecar_output_path(image, settings.desc), settings.policy,
               add=derivative_keys(method=settings.method, desc=settings.desc))


def _process_contrast(t1_result, image, root: Path, out: Path, settings: Settings, seed: int) -> ImageOutcome:
    from .io import load_scan
    from .multicontrast import save_contrast, transfer_face

    target = output_path(image, settings.desc)
    try:
        scan = load_scan(root / image.path)
        result = transfer_face(t1_result, scan, seed=seed % (2**31))
        save_contrast(result, out / target, force=True)
        write_sidecar(image, root, out, settings)
    except Exception as error:  # e.g. a corrupt file or a failed registration: this image only
        return ImageOutcome(str(image.path), None, "failed", _error_text(error))
    return ImageOutcome(str(image.path), str(target), "done",
                        detail={"head_dice": round(result.head_dice, 4), "changed_voxels": result.changed})


# --- manifest -------------------------------------------------------------------------------------------------

class Manifest:
    """The resume record. Writes merge with what is on disk under a lock, so concurrent runs (e.g. SLURM array
    jobs over different participants) can share one output folder."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / MANIFEST_NAME
        self.entries: dict[str, dict[str, Any]] = self._read().get("entries", {})
        self._dirty: dict[str, dict[str, Any]] = {}

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise RefaceError(f"cannot read the resume manifest {self.path} ({error}); move it away") from error
        if data.get("version") != MANIFEST_VERSION:
            raise RefaceError(f"{self.path} was written by another reface version; move it away")
        return data

    def record(self, key: str, entry: dict[str, Any]) -> None:
        self.entries[key] = entry
        self._dirty[key] = entry

    def flush(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.with_name(f".{self.path.name}.lock")):
            entries = self._read().get("entries", {})
            entries.update(self._dirty)
            data = {"version": MANIFEST_VERSION, "tool": "reface", "entries": dict(sorted(entries.items()))}
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fobj:
                json.dump(data, fobj, indent=1)
            os.replace(tmp, self.path)
        self.entries.update(entries)
        self._dirty.clear()


@contextlib.contextmanager
def _locked(lock_path: Path):
    import fcntl

    with open(lock_path, "w") as fobj:
        fcntl.flock(fobj, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fobj, fcntl.LOCK_UN)


def _records(root: Path, paths: Iterable[Path | str], previous: dict[str, Any]) -> dict[str, Any] | None:
    """Checksum records for files (None when one is missing)."""
    records = {}
    for rel in paths:
        path = root / rel
        if not path.exists():
            return None
        records[str(rel)] = file_record(path, previous.get(str(rel)))
    return records


def skip_reason(entry: dict[str, Any] | None, task: Task, *, retry_failed: bool = False) -> str | None:
    """'unchanged' when a session need not run again (same settings, inputs, outputs), None when it must."""
    if entry is None or entry.get("settings") != task.settings.fingerprint():
        return None
    inputs = _records(Path(task.bids_dir), session_inputs(task.session), entry.get("inputs", {}))
    if inputs is None or {k: v["sha256"] for k, v in inputs.items()} != \
            {k: v["sha256"] for k, v in entry.get("inputs", {}).items()}:
        return None
    outputs = _records(Path(task.output_dir), entry.get("outputs", {}), entry.get("outputs", {}))
    if outputs is None or any(outputs[k]["sha256"] != v["sha256"] for k, v in entry.get("outputs", {}).items()):
        return None
    if entry.get("status") == "done" or not retry_failed:
        return "unchanged"
    return None


def _skipped_images(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """Per-image reasons for a skipped session, from what its last run recorded."""
    return [(image["input"], FINISHED if image["status"] == "done"
             else f"failed before on unchanged inputs: {image.get('error')}")
            for image in entry.get("images", [])]


def manifest_entry(task: Task, outcome: Outcome, previous: dict[str, Any] | None) -> dict[str, Any]:
    previous = previous or {}
    root, out = Path(task.bids_dir), Path(task.output_dir)
    inputs = {str(p): file_record(root / p, previous.get("inputs", {}).get(str(p)))
              for p in session_inputs(task.session) if (root / p).exists()}
    produced = [i.output for i in outcome.images if i.status == "done" and i.output]
    sidecars = [str(sidecar_output_path(i, task.settings.desc)) for i in task.session.images]
    outputs = {p: file_record(out / p) for p in produced + sidecars if (out / p).exists()}
    return {"status": outcome.status, "settings": task.settings.fingerprint(), "seed": outcome.seed,
            "inputs": inputs, "outputs": outputs, "error": outcome.error, "seconds": round(outcome.seconds, 2),
            "images": [{k: v for k, v in asdict(i).items() if k not in ("detail", "warnings") or v}
                       for i in outcome.images],
            "finished": datetime.now(UTC).isoformat(timespec="seconds")}


# --- executors ------------------------------------------------------------------------------------------------

def _init_worker(threads: int) -> None:
    """Pool initializer: share the cores among workers instead of each grabbing all of them."""
    import torch

    torch.set_num_threads(threads)


def _local(tasks: list[Task], jobs: int) -> Iterator[tuple[Task, Outcome]]:
    if jobs <= 1:
        for task in tasks:
            yield task, process_session(task)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(process_session, task): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], _result_or_lost(futures[future], future)


def _dask(tasks: list[Task], scheduler) -> Iterator[tuple[Task, Outcome]]:
    from distributed import Client, as_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = {}
        for task in tasks:
            future = client.submit(process_session, task, pure=False)
            futures[future.key] = (task, future)
        for future in as_completed([f for _, f in futures.values()]):
            task, _ = futures[future.key]
            yield task, _result_or_lost(task, future)
    finally:
        if client is not scheduler:
            client.close()


def _result_or_lost(task: Task, future) -> Outcome:
    """A worker that died (out of memory, killed) yields a transient failure, retried on the next run."""
    try:
        return future.result()
    except Exception as error:
        message = f"worker lost ({type(error).__name__}: {error})"
        return Outcome(key=task.session.key, status="failed", error=message, transient=True,
                       images=[ImageOutcome(str(i.path), None, "failed", message) for i in task.session.images])


# --- the run --------------------------------------------------------------------------------------------------

@dataclass
class Summary:
    """Per-image counts with reasons, for the final report and the exit code."""

    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (input, warning), this run or an earlier one
    seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        for image in outcome.images:
            self.warnings += [(image.input, text) for text in image.warnings]
            if image.status == "done":
                self.done.append(image.input)
            else:
                self.failed.append((image.input, image.error or "unknown error"))

    @property
    def complete(self) -> bool:
        """True when every selected image has a de-identified output (now or from an earlier run)."""
        return not self.failed and all(reason == FINISHED for _, reason in self.skipped)

    def format(self) -> str:
        """Counts, every failure with its reason, skips grouped (one line per earlier failure)."""
        lines = [f"reface bids: {len(self.done)} done, {len(self.failed)} failed, "
                 f"{len(self.skipped)} skipped" + (f", {len(self.warnings)} warning(s)" if self.warnings else "")
                 + f" ({self.seconds:.0f} s)"]
        lines += [f"  failed  {name}: {reason}" for name, reason in self.failed]
        finished = [name for name, reason in self.skipped if reason == FINISHED]
        if finished:
            lines.append(f"  skipped {len(finished)} image(s): {FINISHED}")
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped if reason != FINISHED]
        lines += [f"  warning {name}: {text}" for name, text in self.warnings]
        return "\n".join(lines)


def run_batch(tasks: list[Task], *, jobs: int = 1, scheduler=None, retry_failed: bool = False,
              quiet: bool = False, on_outcome: Callable[[Outcome], None] | None = None,
              flush_every_s: float = 5.0) -> Summary:
    """Run the sessions that need it (local pool or Dask `scheduler`: an address or a distributed.Client)."""
    from .progress import track

    start = time.perf_counter()
    if not tasks:
        return Summary()
    manifest = Manifest(Path(tasks[0].output_dir))
    summary = Summary()
    todo = []
    for task in tasks:
        entry = manifest.entries.get(task.session.key)
        if skip_reason(entry, task, retry_failed=retry_failed) is None:
            todo.append(task)
        else:
            summary.skipped += _skipped_images(entry)
            summary.warnings += [(image["input"], text) for image in entry.get("images", [])
                                 for text in image.get("warnings", [])]
    results = _dask(todo, scheduler) if scheduler is not None else _local(todo, jobs)
    last_flush = time.monotonic()
    try:
        for task, outcome in track(results, total=len(todo), desc="reface bids", quiet=quiet):
            summary.add(outcome)
            if not outcome.transient:
                manifest.record(outcome.key, manifest_entry(task, outcome, manifest.entries.get(outcome.key)))
            if on_outcome is not None:
                on_outcome(outcome)
            if time.monotonic() - last_flush > flush_every_s:
                manifest.flush()
                last_flush = time.monotonic()
    finally:
        manifest.flush()
    summary.seconds = time.perf_counter() - start
    return summary


def throughput(bids_dir: str | os.PathLike, jobs: int = 1, *, method: str = "shear", scheduler=None) -> float:
    """Images de-identified per minute on a dataset, from scratch (for `--jobs 1` vs `--jobs 2` benchmarks).

    Call it under `if __name__ == "__main__":` when jobs > 1 (spawned workers re-import the main module).
    """
    from .bids import discover

    with tempfile.TemporaryDirectory(prefix="reface-bench-") as tmp:
        out = Path(tmp) / "out"
        settings = Settings(method=method)
        tasks = [Task(session=s, bids_dir=str(bids_dir), output_dir=str(out), settings=settings)
                 for s in discover(bids_dir)]
        summary = run_batch(tasks, jobs=jobs, scheduler=scheduler, retry_failed=True, quiet=True)
    if summary.failed:
        raise RefaceError(f"benchmark run had failures: {summary.failed[:3]}")
    return 60.0 * len(summary.done) / max(summary.seconds, 1e-9)


def model_record(method: str, model: str | None) -> dict[str, Any] | None:
    """Name and sha256 of the model file a method uses (provenance and resume key), or None."""
    if method != "remodel":
        return None
    from .resources import default_model_path

    path = Path(model) if model else default_model_path()
    if not path.exists():
        raise RefaceError(f"model not found: {path}")
    return {"name": path.name, "sha256": sha256(path)}


def run_bids(bids_dir: Path, output_dir: Path, *, participants: list[str] | None = None,
             sessions: list[str] | None = None, method: str = "remodel", seed: int = 0, model: str | None = None,
             margin_mm: float = DEFAULT_MARGIN_MM, mask_pattern: str | None = None, desc: str = DEFAULT_DESC,
             scrub: Iterable[str] = (), keep: Iterable[str] = (), scrub_participants: bool = False,
             acq_time: str | AcqTimePolicy = "drop", jobs: int = 1, scheduler=None, retry_failed: bool = False,
             device: str = "cpu", quiet: bool = False) -> Summary:
    """The function behind `reface bids`: dataset files, then every selected session through run_batch.

    With jobs > 1 workers are spawned (not forked), so a calling script needs `if __name__ == "__main__":`.
    participants.tsv loses its identifying columns (the scrub policy; `scrub_participants`: all but
    participant_id); scans.tsv files follow the outputs, with acq_time dropped, kept or shifted (`acq_time`).
    """
    from . import __version__
    from .bids import check_dataset, dataset_description, discover, inherited_sidecars, write_scans_tables
    from .methods import get_method
    from .sidecar import read_json_object, scrub_participants_table, write_json

    # Absolute paths: Dask workers run elsewhere, with another working directory.
    bids_dir, output_dir = Path(bids_dir).absolute(), Path(output_dir).absolute()
    model = str(Path(model).absolute()) if model else None
    check_dataset(bids_dir, output_dir)
    acq_policy = acq_time if isinstance(acq_time, AcqTimePolicy) else AcqTimePolicy.parse(acq_time)
    get_method(method)  # unknown names fail now, not in every worker
    found = discover(bids_dir, participants=participants, sessions=sessions, mask_pattern=mask_pattern)
    model_info = model_record(method, model)
    policy = make_policy(scrub, keep)
    options = {"model": model} if model else {}
    settings = Settings(method=method, seed=seed, desc=desc, margin_mm=margin_mm, options=options,
                        model_sha256=model_info["sha256"] if model_info else None, policy=policy)

    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "dataset_description.json",
               dataset_description(bids_dir, method=method, seed=seed, model=model_info, version=__version__))
    participants_tsv = bids_dir / "participants.tsv"
    if participants_tsv.exists():
        dropped = scrub_participants_table(participants_tsv, output_dir / "participants.tsv", policy,
                                           only_id=scrub_participants)
        source = bids_dir / "participants.json"
        columns = read_json_object(source) if source.exists() else {}
        columns = {k: v for k, v in columns.items() if k not in dropped and k != "Description"}
        # BIDS derivatives: every derivative file's sidecar carries a Description.
        write_json(output_dir / "participants.json", {"Description": (
            "participants of the source dataset; " + ("all columns but participant_id removed" if
                                                      scrub_participants else "identifying columns removed, "
                                                      "ages over 89 written as 89") + " by reface"),
            **columns})
    readme = sorted(bids_dir.glob("README*"))  # the source's README, else a paragraph on what this dataset is
    if readme:
        (output_dir / readme[0].name).write_bytes(readme[0].read_bytes())
    elif not (output_dir / "README").exists():
        (output_dir / "README").write_text(
            f"De-identified copy of the anatomical images of the BIDS dataset {bids_dir.name}, written by reface "
            f"{__version__} (method {method}). Faces are replaced; brain voxels are unchanged; JSON sidecars, "
            f"participants.tsv and scans.tsv are scrubbed of identifying fields.\n")
    ignore = output_dir / ".bidsignore"  # keep the validator quiet about our bookkeeping
    if not ignore.exists():
        ignore.write_text(f"{MANIFEST_NAME}\n")
    for rel in inherited_sidecars(bids_dir):
        scrub_file(bids_dir / rel, output_dir / rel, policy)

    tasks = [Task(session=s, bids_dir=str(bids_dir), output_dir=str(output_dir), settings=settings, device=device)
             for s in found]
    summary = run_batch(tasks, jobs=jobs, scheduler=scheduler, retry_failed=retry_failed, quiet=quiet)
    _, notes = write_scans_tables(bids_dir, output_dir, found, desc=desc, acq_time=acq_policy, policy=policy)
    summary.warnings += notes  # e.g. a scans.tsv without a filename column: left out, said at the end
    return summary

"""Batch de-identification of many sessions: local process pool or Dask, resumable, never stopped by one bad scan.

The main process decides what to run (batch_manifest.py: the resume record), workers do one session each and
never raise (batch_worker.py: a failure is an outcome), and only the main process writes the manifest. This
module holds the scheduling: which sessions run, on a local pool or a Dask cluster, the end-of-run summary, and
run_bids, the function behind `reface bids`.

Warnings (a scan processed, but e.g. its field of view cuts the brain at the vertex) are recorded per image in
the manifest and listed in the end-of-run summary, also for sessions skipped because they finished before.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch_manifest import FINISHED, MANIFEST_NAME, Manifest, manifest_entry, sha256, skip_reason, skipped_images
from .batch_worker import ImageOutcome, Outcome, Settings, Task, process_session
from .bids import DEFAULT_DESC
from .errors import RefaceError
from .masks import DEFAULT_MARGIN_MM
from .sidecar import AcqTimePolicy, make_policy, scrub_file

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
            summary.skipped += skipped_images(entry)
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
    from .bids import check_dataset, discover, inherited_sidecars
    from .bids_derivative import dataset_description, write_scans_tables
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

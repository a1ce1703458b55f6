"""The resume record of a batch run: OUTPUT_DIR/reface_manifest.json, and whether a session must run again.

Apart from batch.py because it is the run's persistent state, read and merged under a file lock, while batch.py
only schedules. Per session the manifest holds the method/seed/options, the sha256 of every input and output
(with size and mtime, so unchanged files are not hashed again), per-image status, errors and warnings. A re-run
skips a session whose inputs, outputs and settings are unchanged; a session that failed on unchanged inputs
is skipped too (reported with its reason) unless `retry_failed`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .batch_worker import Outcome, Task
from .bids import Session, sidecar_output_path
from .errors import RefaceError

MANIFEST_NAME = "reface_manifest.json"
MANIFEST_VERSION = 1
FINISHED = "finished before, inputs unchanged"


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


def skipped_images(entry: dict[str, Any]) -> list[tuple[str, str]]:
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

"""One session de-identified in a worker process: the task it is sent, the outcome it returns.

Apart from batch.py (which decides what runs and where) because this is the code that runs on a pool or Dask
worker: a Task and an Outcome are picklable, and process_session never raises (a failure is an outcome).
A worker process loads a method's model once: methods cache it per process (functools.lru_cache), and
pool/Dask workers are long-lived processes.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bids import DEFAULT_DESC, Image, Session, output_path, sidecar_output_path
from .bids_derivative import derivative_keys
from .errors import RefaceError
from .masks import DEFAULT_MARGIN_MM
from .sidecar import ScrubPolicy, make_policy, scrub_file


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

"""`reface evaluate --utility-cmd`: any user pipeline (FreeSurfer, SynthSeg, FastSurfer, a brain-age model)
run on the original and on the de-identified scan, and its outputs compared.

The command is a template with `{input}` (a NIfTI scan) and `{output}` (where the pipeline writes its
result) placeholders. It is split with shlex and run without a shell (so a path with spaces or quotes
stays one argument; for pipes or `&&`, wrap it in `sh -c '...'` yourself). The output decides the
comparison by its name:
- `*.nii` / `*.nii.gz`: a label map -> per-label Dice and relative volume difference (RVD), and the
  absolute volume difference in ml; label 0 is background;
- `*.json`: a JSON object of numbers (nested objects are flattened with `.`) -> absolute and relative
  difference per number.
A command that fails, times out or writes nothing is a recorded failure (`failed` = 1), never a crash.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics

DEFAULT_TIMEOUT_S = 3600
LABEL_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class UserCommand:
    """A named command template; `suffix` is the output's extension (.json, .nii.gz, .nii)."""

    name: str
    template: str
    suffix: str
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def pipeline(self) -> str:
        return f"cmd:{self.name}"


@dataclass
class CommandOutput:
    """What one run of the command produced: label map, numbers, or the reason it failed."""

    labels: np.ndarray | None = None  # int [I, J, K]
    voxel_ml: float = 0.0
    numbers: dict[str, float] = field(default_factory=dict)
    failed: str = ""


def parse(spec: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> UserCommand:
    """`NAME[:KIND]=TEMPLATE` or a bare TEMPLATE -> UserCommand, checked.

    KIND is the output's type: `json` (the default), `nii.gz` or `nii`; the file given as `{output}` always
    ends in it. Without NAME the command is named after its program (`python` for `python age.py ...`).
    """
    head, sep, template = spec.partition("=")
    if not sep or " " in head.strip() or "{" in head:
        head, template = "", spec
    name, _, kind = head.strip().partition(":")
    template = template.strip()
    try:
        words = shlex.split(template)
    except ValueError as error:
        raise ValueError(f"--utility-cmd {spec!r}: {error}") from error
    if not words:
        raise ValueError("--utility-cmd is empty")
    if not any("{input}" in w for w in words) or not any("{output}" in w for w in words):
        raise ValueError(f"--utility-cmd {spec!r} needs both {{input}} and {{output}} placeholders")
    if not name:
        name = Path(words[0]).stem or "cmd"
    if not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"--utility-cmd name {name!r}: use letters, digits, '-', '_' or '.'")
    suffix = "." + (kind or "json").lstrip(".")
    if suffix not in (".json", *LABEL_SUFFIXES):
        raise ValueError(f"--utility-cmd {name}: output kind {kind!r}; choose json, nii or nii.gz")
    return UserCommand(name=name, template=template, suffix=suffix, timeout_s=timeout_s)


def argv(command: UserCommand, input_path: Path, output_path: Path) -> list[str]:
    """The argument vector: shlex words with the placeholders filled in (each stays one argument)."""
    return [
        w.replace("{input}", str(input_path)).replace("{output}", str(output_path))
        for w in shlex.split(command.template)
    ]


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Numbers of a JSON value by dotted key (bools and strings ignored; a bare number is key `value`)."""
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return {prefix or "value": float(value)}
    return {}


def run_command(command: UserCommand, scan_path: Path, work_dir: Path | None = None) -> CommandOutput:
    """Run the pipeline on one scan file and read what it wrote (never raises for a pipeline failure)."""
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        output = Path(tmp) / f"output{command.suffix}"
        args = argv(command, Path(scan_path), output)
        try:
            # own process group, so a timeout also stops whatever the command started
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    start_new_session=True, text=True)
        except OSError as error:
            return CommandOutput(failed=f"{type(error).__name__}: {error}")
        try:
            _, stderr = proc.communicate(timeout=command.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return CommandOutput(failed=f"took longer than {command.timeout_s:.0f} s")
        if proc.returncode != 0:
            tail = (stderr or "").strip().splitlines()[-1:] or [""]
            return CommandOutput(failed=f"exit status {proc.returncode}: {tail[0]}"[:300])
        if not output.exists():
            return CommandOutput(failed=f"wrote no {output.name}")
        try:
            return read_output(output)
        except (ValueError, OSError) as error:
            return CommandOutput(failed=f"unreadable {output.name}: {error}"[:300])


def read_output(path: Path) -> CommandOutput:
    """A label map (NIfTI) or a JSON of numbers."""
    if path.name.endswith(LABEL_SUFFIXES):
        import nibabel as nib

        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        labels = np.rint(data).astype(np.int64).reshape(img.shape[:3])
        return CommandOutput(labels=labels, voxel_ml=float(np.prod(img.header.get_zooms()[:3])) / 1000.0)
    try:
        numbers = flatten(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as error:
        raise ValueError(str(error)) from error
    if not numbers:
        raise ValueError("no numbers in the JSON")
    return CommandOutput(numbers=numbers)


def compare(original: CommandOutput, deidentified: CommandOutput) -> dict[str, float]:
    """Measure name -> value: `failed`; per label `dice_<l>`, `rvd_<l>`, `dvol_ml_<l>`; per number `<k>`
    (the de-identified value), `absdiff_<k>`, `reldiff_<k>` (|d| / |original|). Nothing is compared when the
    original run failed (only `original_failed`)."""
    if original.failed:
        return {"original_failed": 1.0}
    values: dict[str, float] = {"original_failed": 0.0, "failed": 1.0 if deidentified.failed else 0.0}
    if deidentified.failed:
        return values
    if original.labels is not None:
        if deidentified.labels is None or deidentified.labels.shape != original.labels.shape:
            values["failed"] = 1.0
            return values
        for label in np.unique(original.labels):
            if label == 0:
                continue
            ref, new = original.labels == label, deidentified.labels == label
            values[f"dice_{label}"] = metrics.dice(new, ref)
            values[f"rvd_{label}"] = metrics.relative_volume_difference(new, ref)
            values[f"dvol_ml_{label}"] = (int(new.sum()) - int(ref.sum())) * original.voxel_ml
        dice = [v for k, v in values.items() if k.startswith("dice_")]
        if dice:
            values["mean_dice"] = float(np.mean(dice))
        return values
    for key, ref in original.numbers.items():
        if key not in deidentified.numbers:
            values[f"missing_{key}"] = 1.0
            continue
        new = deidentified.numbers[key]
        values[key] = new
        values[f"absdiff_{key}"] = abs(new - ref)
        values[f"reldiff_{key}"] = abs(new - ref) / abs(ref) if ref != 0 else (0.0 if new == 0 else math.inf)
    return values


def save_output(path: Path, output: CommandOutput) -> None:
    """Cache the original's output (npz: labels or numbers, and the failure reason)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"failed": np.array(output.failed), "voxel_ml": np.array(output.voxel_ml)}
    if output.labels is not None:
        arrays["labels"] = output.labels.astype(np.int32)
    arrays["keys"] = np.array(list(output.numbers), dtype=str)
    arrays["numbers"] = np.array(list(output.numbers.values()), dtype=np.float64)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_output(path: Path) -> CommandOutput:
    with np.load(path, allow_pickle=False) as data:
        labels = data["labels"].astype(np.int64) if "labels" in data.files else None
        numbers = dict(zip(data["keys"].tolist(), (float(v) for v in data["numbers"]), strict=True))
        return CommandOutput(labels=labels, voxel_ml=float(data["voxel_ml"]), numbers=numbers,
                             failed=str(data["failed"]))

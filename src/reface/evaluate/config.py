"""What defines one evaluation run: its settings (EvalConfig), its subjects, and the guard that keeps a
resumed run from mixing results made with other settings.

Apart from the harness because planning (harness.py) and the jobs run in worker processes (jobs.py) both need
these, and the panel (panel.py) builds Subjects of its own.
Per subject, the *other* session's original scan is the attacker's photo (gallery) and session 1 is the
scan that gets de-identified (probe).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RefaceError
from ..realheads import PANEL
from .panel import is_real
from .privacy import DEFAULT_ATTACKERS, VIEWS

SETTINGS_NAME = "evaluate_settings.json"

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


def yardstick_labels(cfg: EvalConfig, subjects: list[Subject]) -> set[str]:
    """Subjects that get every extractor and segmenter: all, or the first N synthetic ones and the real heads.

    Costly yardsticks (Atropos ~1 min, HD-BET ~40 s per scan on one core) do not fit the whole cohort on a
    small machine; a fixed, named subset keeps them comparable across methods."""
    if cfg.yardstick_subjects is None:
        return {s.label for s in subjects}
    synthetic = [s.label for s in subjects if not is_real(s.label)]
    return set(synthetic[: cfg.yardstick_subjects]) | {s.label for s in subjects if is_real(s.label)}


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

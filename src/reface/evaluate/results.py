"""The results file: OUT/results.jsonl, one JSON line per result, append-only; readers keep the last line.

A line is {subject, method, metric, value, time, ...}. Privacy lines also name the `attacker` and the
`view`; `latest` keys those by (subject, method, metric, attacker, view) and every other line by
(subject, method, metric), so existing lookups stay 3-tuples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_NAME = "results.jsonl"
COHORT = "all"
GALLERY = "gallery"
ORIGINAL = "original"
DONE_METRIC = "wall_s"


class ResultsWriter:
    """Append-only JSONL writer: one line per result, flushed and synced as it is written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        with open(self.path, "a", encoding="utf-8") as fobj:
            for item in records:
                fobj.write(json.dumps(item, allow_nan=False) + "\n")
                fobj.flush()
            os.fsync(fobj.fileno())


def record(subject: str, method: str, metric: str, value: float | None, **extra: Any) -> dict[str, Any]:
    """One result line; NaN/inf values become null (JSON has no NaN)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float | np.floating):
            return float(v) if np.isfinite(v) else None
        return v

    line = {"subject": subject, "method": method, "metric": metric, "value": clean(value)}
    line.update({k: clean(v) for k, v in extra.items()})
    line["time"] = datetime.now(UTC).isoformat(timespec="seconds")
    return line


def read_results(path: Path) -> list[dict[str, Any]]:
    """All well-formed lines of a results file (a torn last line from a crash is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and {"subject", "method", "metric"} <= item.keys():
            lines.append(item)
    return lines


def row_key(line: dict[str, Any]) -> tuple[str, ...]:
    """(subject, method, metric), plus (attacker, view) on privacy lines."""
    key = (line["subject"], line["method"], line["metric"])
    if "attacker" in line:
        return key + (line["attacker"], line.get("view", ""))
    return key


def latest(lines: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The last line per key (see row_key)."""
    return {row_key(r): r for r in lines}

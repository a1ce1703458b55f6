"""HD-BET (a third-party brain extractor) on a subset of a `reface evaluate` run: its mask of each
de-identified scan against its mask of the original, beside deepbet's.

    .venv/bin/python scripts/hdbet_subset.py --eval eval_out --data data/synth50 --subjects 4 \\
        --methods none,shear,quickshear,deface --markdown docs/hdbet_subset.md

HD-BET costs ~30-45 s per head on 2 cores, so the full cohort does not fit beside the rest of the
evaluation; this reads the de-identified scans `reface evaluate` already wrote (EVAL/deid/<method>/) and the
probes (ses-01 of each subject; EVAL/panel for the real heads). Rows: method, n, HD-BET Dice (mean, min),
volume difference (%), and deepbet's Dice on the same scans for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from reface.deidentify import deidentify
from reface.evaluate.pipelines import hdbet_mask
from reface.evaluate.utility import deepbet_mask
from reface.io import load_mask, load_scan
from reface.masks import dice


def probe_path(data: Path, eval_dir: Path, label: str) -> Path:
    if label.startswith("real-"):
        return eval_dir / "panel" / label / f"{label}_ses-01_T1w.nii.gz"
    return data / label / "ses-01" / "anat" / f"{label}_ses-01_T1w.nii.gz"


def deidentified(original, method: str, probe: Path):
    """The probe de-identified in memory, as `reface evaluate` does it (seed 0, its brain mask if any)."""
    mask = probe.with_name(probe.name.replace("_T1w.nii.gz", "_desc-brain_mask.nii.gz"))
    brain = load_mask(mask, original) if mask.exists() else None
    result = deidentify(original, method, seed=0, brain=brain)
    return dataclasses.replace(original, raw=result.raw, _data=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--subjects", type=int, default=4, help="the first N synthetic subjects")
    parser.add_argument("--real", default="", help="comma-separated real-* heads to add")
    parser.add_argument("--methods", default="none,shear,quickshear,deface")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--run-missing", action="store_true",
                        help="de-identify (seed 0, the probe's brain mask if it has one) where EVAL has no output")
    args = parser.parse_args()
    labels = [f"sub-{i:04d}" for i in range(1, args.subjects + 1)] + [r for r in args.real.split(",") if r]
    methods = [m for m in args.methods.split(",") if m]
    rows: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}
    t_all = time.perf_counter()
    for label in labels:
        original = load_scan(probe_path(args.data, args.eval, label))
        h0, d0 = hdbet_mask(original), deepbet_mask(original)
        for method in methods:
            path = args.eval / "deid" / method / f"{label}_T1w.nii.gz"
            if path.exists():
                scan = load_scan(path)
            elif args.run_missing:
                scan = deidentified(original, method, probe_path(args.data, args.eval, label))
            else:
                print(f"{label} {method}: no output, skipped")
                continue
            t0 = time.perf_counter()
            h1 = hdbet_mask(scan)
            value = (dice(h0, h1), 100.0 * (int(h1.sum()) - int(h0.sum())) / max(int(h0.sum()), 1),
                     dice(d0, deepbet_mask(scan)))
            rows[method].append(value)
            print(f"{label} {method}: hdbet dice {value[0]:.4f} dvol {value[1]:+.2f} % deepbet dice {value[2]:.4f}"
                  f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    lines = [f"HD-BET on {len(labels)} heads ({', '.join(labels)}); wall {time.perf_counter() - t_all:.0f} s.", "",
             "| method | n | HD-BET Dice mean | HD-BET Dice min | HD-BET abs vol diff % | deepbet Dice mean |",
             "|---|---|---|---|---|---|"]
    for method, values in rows.items():
        if values:
            v = np.array(values)
            lines.append(f"| {method} | {len(v)} | {v[:, 0].mean():.4f} | {v[:, 0].min():.4f} | "
                         f"{np.abs(v[:, 1]).mean():.2f} | {v[:, 2].mean():.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()

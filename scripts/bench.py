"""`make bench`: wall time and peak memory of `reface run` per method on a 1 mm adult head.

Each run is a separate process (so peak RSS is that run's alone). Ratios are printed against the `none`
method measured in the same session (I/O + brain mask + working grid: the fixed cost every method pays),
because absolute seconds on shared machines are noisy. Targets: each method < 30 s and < 4 GiB on 2 cores
(remodel: <= 60 s and <= 6 GiB).

A real peer: `quickshear` (the PyPI tool, `quickshear anat mask out`) is timed given deepbet's brain mask
of the head (computed once, saved beside it), against `shear@mask` = `reface run --method shear
--brain-mask` with that same mask; the issue's target is shear <= 2x quickshear (plus the brain mask).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter(); rc = subprocess.run(sys.argv[1:]).returncode\n"
    "wall = time.perf_counter() - t\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2\n"
    "print(f'{rc} {wall:.3f} {peak:.3f}')\n"
)


def one_mm_head(out_dir: Path) -> Path:
    """The ROBEX atlas head (1.5 mm) resampled to 1 mm isotropic, int16: a realistic 1 mm input."""
    from reface import geometry
    from reface.io import load_scan
    from reface.resources import robex_head_path

    path = out_dir / "head_1mm.nii.gz"
    if path.exists():
        return path
    scan = load_scan(robex_head_path())
    extent = np.array(scan.shape) * np.array(scan.zooms)
    shape = tuple(int(n) for n in np.ceil(extent))
    centre = scan.affine[:3, :3] @ ((np.array(scan.shape) - 1) / 2) + scan.affine[:3, 3]
    grid = geometry.working_grid(centre, shape=shape)
    data = geometry.resample(scan.data, scan.affine, grid)
    scale = 4000.0 / max(float(data.max()), 1e-6)
    img = nib.Nifti1Image(np.rint(data * scale).astype(np.int16), grid.affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, path)
    return path


def brain_mask(head: Path) -> Path:
    """deepbet's brain mask of the bench head (what `reface run` computes), saved once for the peers."""
    from reface.io import load_scan, save_mask_like
    from reface.masks import auto_brain_mask

    path = head.with_name("head_1mm_brain.nii.gz")
    if not path.exists():
        scan = load_scan(head)
        save_mask_like(scan, auto_brain_mask(scan), path)
    return path


def time_run(args: list[str]) -> tuple[int, float, float]:
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True)
    rc, wall, peak = proc.stdout.strip().splitlines()[-1].split()
    return int(rc), float(wall), float(peak)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "bench_out"))
    parser.add_argument("--methods", default="none,shear,shear@mask,quickshear,blur,deface,template,remodel")
    parser.add_argument("--skip-bids", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = one_mm_head(out)
    shape = nib.load(head).shape
    print(f"input: {head} shape {shape} at 1 mm; 2 CPU threads")
    reface = str(Path(sys.executable).with_name("reface"))
    rows = []
    for method in [m for m in args.methods.split(",") if m]:
        target = out / f"out_{method.replace('@', '_')}.nii.gz"
        if method == "quickshear":
            command = [str(Path(sys.executable).with_name("quickshear")), str(head), str(brain_mask(head)),
                       str(target)]
        else:
            name, _, given = method.partition("@")
            command = [reface, "run", str(head), "-o", str(target), "--method", name, "--force", "--quiet"]
            command += ["--brain-mask", str(brain_mask(head))] if given == "mask" else []
        rc, wall, peak = time_run(command)
        rows.append({"method": method, "rc": rc, "wall_s": wall, "peak_gib": peak})
    base = next((r["wall_s"] for r in rows if r["method"] == "none" and r["rc"] == 0), None)
    print(f"{'method':>10} {'wall s':>8} {'x none':>7} {'peak GiB':>9}  target")
    for r in rows:
        limit = (60, 6) if r["method"] == "remodel" else (30, 4)
        ok = r["rc"] == 0 and r["wall_s"] <= limit[0] and r["peak_gib"] <= limit[1]
        ratio = f"{r['wall_s'] / base:7.2f}" if base else "    n/a"
        status = "ok" if ok else ("FAILED" if r["rc"] else "over")
        print(f"{r['method']:>10} {r['wall_s']:8.1f} {ratio} {r['peak_gib']:9.2f}  <{limit[0]} s, <{limit[1]} GiB: "
              f"{status}")
    walls = {r["method"]: r["wall_s"] for r in rows if r["rc"] == 0}
    if "shear@mask" in walls and "quickshear" in walls:
        print(f"shear@mask / quickshear: {walls['shear@mask'] / walls['quickshear']:.1f}x (target <= 2x)")
    (out / "bench.json").write_text(json.dumps(rows, indent=1))
    bids_bench = ROOT / "scripts" / "bench_bids.py"
    if not args.skip_bids and bids_bench.exists():
        subprocess.run([sys.executable, str(bids_bench), "--out", str(out / "bids")], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

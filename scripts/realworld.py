"""Real scans as they come: build the corpus (reface.corpus) and run `reface run` on each case x method.

Every run is its own process, as a user runs it; its peak RSS comes from os.wait4 on that process alone.
Columns:
- verdict: processed / processed with warning (a `warning:` line on stderr) / refused (exit 2) / crashed;
- brain exact: every voxel of the preserved region (`--save-mask`, brain + margin) has the input's raw
  on-disk value; grid: the output has the input's shape, dtype, affine and sform/qform with their codes;
- face changed: share of head voxels in the face box (corpus.face_region: > 30 mm anterior of and < 10 mm
  above the preserved region's centroid, outside it) whose raw value changed;
- face tissue: head-tissue voxels in that box in the output / in the original head (the input, or the
  head before it was defaced): 0 = no face left, ~1 = a full face.

    python scripts/realworld.py --out realworld_out --markdown docs/realworld.md
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from reface import corpus

METHODS = ("none", "deface", "shear", "blur", "template", "remodel")
COLUMNS = ("case", "method", "verdict", "s", "peak GiB", "brain exact", "grid", "face changed", "face tissue",
           "message")


def run_case(path: Path, method: str, out_dir: Path) -> dict:
    """One `reface run` in its own process: verdict, wall seconds, peak RSS, and the written files."""
    out = out_dir / f"{path.name.split('.')[0]}_{method}.nii.gz"
    mask = out_dir / f"{path.name.split('.')[0]}_{method}_kept.nii.gz"
    cmd = [sys.executable, "-m", "reface.cli", "run", str(path), "-o", str(out), "--method", method,
           "--save-mask", str(mask), "--quiet", "--force"]
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    lines = [line for line in stderr.splitlines() if "warning:" in line or "error:" in line]
    if proc.returncode == 0:
        verdict = corpus.WARNED if any("warning:" in line for line in lines) else corpus.PROCESSED
    elif proc.returncode == 2:
        verdict = corpus.REFUSED
    else:
        verdict, lines = "crashed", stderr.strip().splitlines()[-1:]
    message = lines[0].split(": ", 3)[-1] if lines else ""
    return {"verdict": verdict, "s": seconds, "peak GiB": usage.ru_maxrss / 2**20, "out": out, "mask": mask,
            "message": message, "rc": proc.returncode}


def _raw(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    img = nib.load(str(path))
    return img, np.asarray(img.dataobj.get_unscaled())


def same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image) -> bool:
    """Shape, on-disk dtype, affine, sform and qform with codes."""
    ha, hb = a.header, b.header
    return (a.shape == b.shape and ha.get_data_dtype() == hb.get_data_dtype()
            and np.allclose(a.affine, b.affine, atol=1e-5)
            and np.allclose(ha.get_sform(), hb.get_sform(), atol=1e-5)
            and np.allclose(ha.get_qform(), hb.get_qform(), atol=1e-4)
            and int(ha["sform_code"]) == int(hb["sform_code"]) and int(ha["qform_code"]) == int(hb["qform_code"]))


def measure(path: Path, row: dict, original: Path | None = None) -> dict:
    """Brain exact, grid, face changed, face tissue for one finished run."""
    if row["rc"] != 0:
        return {"brain exact": "-", "grid": "-", "face changed": "-", "face tissue": "-"}
    img_in, raw_in = _raw(path)
    img_out, raw_out = _raw(row["out"])
    shape3 = raw_in.shape[:3]
    raw_in, raw_out = raw_in.reshape(shape3), raw_out.reshape(shape3)
    kept = np.asarray(nib.load(str(row["mask"])).dataobj).reshape(shape3) > 0
    face = corpus.face_region(shape3, img_in.affine, kept)
    ref_img, ref = (img_in, raw_in) if original is None else _raw(original)
    ref = ref.reshape(ref.shape[:3])
    ref_face = corpus.face_region(ref.shape, ref_img.affine, kept) if original is not None else face
    tissue_ref = int((ref_face & corpus.foreground(ref, ref)).sum())
    tissue_out = int((face & corpus.foreground(raw_out, ref)).sum())
    return {"brain exact": bool(np.array_equal(raw_out[kept], raw_in[kept])),
            "grid": same_grid(img_in, img_out),
            "face changed": corpus.face_changed(raw_in, raw_out, face),
            "face tissue": tissue_out / max(tissue_ref, 1)}


def fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c, "")).replace("|", "/") for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(c.name for c in corpus.CASES), help="comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--out", default="realworld_out", help="folder for the corpus and the outputs")
    parser.add_argument("--markdown", help="also write the table here (rewritten after every run)")
    args = parser.parse_args(argv)
    cases, methods = args.cases.split(","), args.methods.split(",")
    out = Path(args.out)
    (out / "outputs").mkdir(parents=True, exist_ok=True)
    print(f"building {len(cases)} cases in {out / 'corpus'}", flush=True)
    paths = corpus.build(out / "corpus", cases)
    originals = {}
    for name in {corpus.BY_NAME[c].original for c in cases} - {""}:
        originals[name] = corpus.ORIGINALS[name](out / "corpus")
    rows: list[dict] = []
    for method in methods:  # fast methods over every case first: a partial table is already useful
        for name in cases:
            case = corpus.BY_NAME[name]
            row = {"case": name, "method": method, **run_case(paths[name], method, out / "outputs")}
            row.update(measure(paths[name], row, originals.get(case.original)))
            expected = row["verdict"] == case.verdict and (not case.message or case.message in row["message"])
            row["verdict"] += "" if expected else f" (EXPECTED {case.verdict})"
            rows.append(row)
            print(" | ".join(fmt(row[c]) for c in COLUMNS), flush=True)
            if args.markdown:
                Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
                Path(args.markdown).write_text(HEADER + table(rows) + "\n")
    print(table(rows))
    return 0


HEADER = """# Real scans as they come: the corpus table

Made by `python scripts/realworld.py` (`make realworld`): every case of `reface.corpus` x every method, each
`reface run` its own process on a shared 2-core CPU machine (seconds are noisy; deepbet's mask is in every
run). Column definitions are in the script's docstring; `face tissue` for a defaced case is measured
against the head before it was defaced.

"""

if __name__ == "__main__":
    raise SystemExit(main())

"""Carry a long `reface evaluate` run across machines that do not keep its output folder.

    .venv/bin/python scripts/eval_state.py pack eval_out docs/eval50      # results, settings, embeddings
    .venv/bin/python scripts/eval_state.py unpack docs/eval50 eval_out    # then `make evaluate` resumes

The 50-identity run takes longer than one working session on 2 cores, and a session's scratch files do not
survive it. What the resume needs is small: results.jsonl (which jobs are done, every per-subject number),
evaluate_settings.json, and the embeddings (identification is recomputed from them). The originals'
pipeline outputs (utility/*.npz, ~400 KB each) are not carried: `reface evaluate` redoes only that part of
a subject's preparation (deepbet + segmenters, no rendering) when the results say it was attacked already.
Pictures and de-identified NIfTIs are not carried either; the report shows the pictures that exist.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import numpy as np

RESULTS, SETTINGS, EMBEDDINGS = "results.jsonl", "evaluate_settings.json", "embeddings.npz"


def pack(out: Path, dest: Path) -> None:
    """OUT -> DEST/results.jsonl.gz, DEST/evaluate_settings.json, DEST/embeddings.npz."""
    dest.mkdir(parents=True, exist_ok=True)
    with open(out / RESULTS, "rb") as src, gzip.open(dest / f"{RESULTS}.gz", "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy(out / SETTINGS, dest / SETTINGS)
    root = out / "embeddings"
    arrays = {str(p.relative_to(root).with_suffix("")): np.load(p) for p in sorted(root.rglob("*.npy"))}
    np.savez_compressed(dest / EMBEDDINGS, **arrays)
    print(f"packed {len(arrays)} embeddings and {sum(1 for _ in open(out / RESULTS))} result lines into {dest}")


def unpack(src: Path, out: Path) -> None:
    """The inverse of `pack`; refuses to overwrite an OUT that already holds results."""
    if (out / RESULTS).exists():
        raise SystemExit(f"{out / RESULTS} exists; unpack into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(src / f"{RESULTS}.gz", "rb") as packed, open(out / RESULTS, "wb") as dst:
        shutil.copyfileobj(packed, dst)
    shutil.copy(src / SETTINGS, out / SETTINGS)
    with np.load(src / EMBEDDINGS, allow_pickle=False) as arrays:
        for key in arrays.files:
            path = out / "embeddings" / f"{key}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, arrays[key])
        n = len(arrays.files)
    print(f"unpacked {n} embeddings into {out}; `make evaluate` resumes from there")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    (pack if args.action == "pack" else unpack)(args.source, args.dest)


if __name__ == "__main__":
    main()

"""Rank-1 re-identification across sessions of the synthetic cohort: distinct identities, alike sessions?

For each of N identities, session 1 and session 2 are generated (different pose, bias, noise, contrast and
acquisition grid), rendered from the front, and embedded with YuNet + SFace (reface.evaluate.attack). Each
session-2 face (probe) is matched by cosine similarity against all session-1 faces (gallery); rank-1 is the
fraction of probes whose best match is their own identity (an undetected face counts as a miss).

    .venv/bin/python scripts/synth_reid.py --n 50 --seed 0 --out synth_reid.json
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# Imported once in the parent: forked workers share these modules.
from reface.evaluate.attack import FaceModel
from reface.evaluate.render import render_head
from reface.synth import generate_subject


def embed_subject(args: tuple[int, int, float | None, int]) -> tuple[int, list, list]:
    index, seed, resolution_mm, size = args
    model = FaceModel()
    vectors, images = [], []
    for img, _mask in generate_subject(index, seed, 2, resolution_mm=resolution_mm):
        picture = render_head(np.asarray(img.dataobj, np.float32), img.affine, view="front", size=size)
        vector = model.embed(picture)
        vectors.append(None if vector is None else vector.tolist())
        images.append(picture)
    return index, vectors, images


def identification(gallery: list, probes: list) -> dict[str, float]:
    """Closed-set identification of session-2 probes against session-1 gallery (reface.evaluate.metrics)."""
    from reface.evaluate.metrics import rank_k_rate, similarity_matrix, verification_auc

    ids = list(range(len(gallery)))
    sim = similarity_matrix([None if p is None else np.asarray(p) for p in probes],
                            [None if g is None else np.asarray(g) for g in gallery])
    genuine = np.eye(len(ids), dtype=bool)
    return {"n": len(ids), "rank1": rank_k_rate(sim, ids, ids, 1), "rank5": rank_k_rate(sim, ids, ids, 5),
            "verification_auc": verification_auc(sim, ids, ids),
            "detected_gallery": float(np.mean([g is not None for g in gallery])),
            "detected_probe": float(np.mean([p is not None for p in probes])),
            "mean_genuine_cosine": float(np.nanmean(sim[genuine])),
            "mean_impostor_cosine": float(np.nanmean(sim[~genuine]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--size", type=int, default=256, help="rendering size in pixels")
    parser.add_argument("--resolution-mm", type=float, default=None,
                        help="force voxel size (default: as drawn)")
    parser.add_argument("--out", default="synth_reid.json", help="JSON with the metrics")
    parser.add_argument("--sheet", help="optional PNG: session 1 | session 2 pairs of the first 8 identities")
    args = parser.parse_args()

    start = time.perf_counter()
    work = [(i, args.seed, args.resolution_mm, args.size) for i in range(args.n)]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(embed_subject, work))
    else:
        results = [embed_subject(w) for w in work]
    results.sort(key=lambda r: r[0])
    metrics = identification([r[1][0] for r in results], [r[1][1] for r in results])
    metrics.update(seed=args.seed, size=args.size, seconds=round(time.perf_counter() - start, 1))
    Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))
    if args.sheet:
        from reface.evaluate.render import contact_sheet, save_png

        pairs = results[:8]
        images = [im for r in pairs for im in r[2]]
        labels = [f"{i + 1:04d} ses-{s + 1:02d}" for i, _, _ in pairs for s in range(2)]
        save_png(args.sheet, contact_sheet(images, labels, ncols=4))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

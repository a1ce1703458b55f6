"""Realism of each method on the real-head panel, against each head's own value (issue 11).

    python scripts/realism_panel.py --methods none,deface,template,remodel,remodel-prior --seeds 0 \
        --markdown docs/realism_panel.md

`remodel-prior` is remodel without the GAN (fitted prior, seeded deformation, finishing): what the GAN adds
is the difference between the two rows. `remodel-whole` generates the whole head, its deep interior too
(deep_mm=0): what keeping the input's deep tissue changes. `remodel-unlayered` keeps the template's own
scalp layers (layered_scalp=False): what giving the scalp the input's layering (reface.scalp) changes.
Metrics: see reface.evaluate.realism.

`--utility` adds the evaluation's utility yardsticks on the same outputs, against the head's own original
(reface.evaluate.utility): deepbet brain-mask Dice, and mean tissue Dice (CSF, GM, WM) of the 3-class GMM
and of ANTs Atropos (MRF prior) inside deepbet's mask.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from reface.deidentify import deidentify
from reface.evaluate.realism import realism_pairs
from reface.io import load_scan
from reface.realheads import PANEL, write_panel

METRICS = ("realism_bg_speckle", "realism_bg_grain", "realism_roughness_mm", "realism_edge_p90")


UTILITY = ("bet_dice_deepbet", "tissue_dice_gmm", "tissue_dice_atropos")
DETECT = ("faces_yunet-sface", "faces_dlib-resnet", "faces_dlib-hog-resnet")


def faces_found(data: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """How many of the evaluation's views (front, left30, right30; 256 px) each attacker finds a face in."""
    from reface.evaluate.attack import make_attacker
    from reface.evaluate.privacy import VIEWS
    from reface.evaluate.render import render_views

    images = render_views(data, affine, views=VIEWS, size=256)
    return {key: float(sum(make_attacker(key[6:]).embed(image) is not None for image in images.values()))
            for key in DETECT}


def utility(original_out, scan, result) -> dict[str, float]:
    from reface.evaluate.utility import TISSUES, compare, run_pipeline

    values = compare(original_out, run_pipeline(_as_scan(scan, result), ("deepbet",), ("gmm", "atropos")))
    out = {"bet_dice_deepbet": values.get("bet_dice_deepbet", float("nan"))}
    for segmenter, suffix in (("gmm", ""), ("atropos", "_atropos")):
        dice = [values[k] for t in TISSUES if (k := f"dice_{t}{suffix}") in values]
        out[f"tissue_dice_{segmenter}"] = float(np.mean(dice)) if dice else float("nan")
    return out


def run(method: str, scan, seed: int):
    options = {}
    if method == "remodel-prior":
        method, options = "remodel", {"use_generator": False}
    elif method == "remodel-whole":  # the whole head generated, the deep interior too (deep_mm=0)
        method, options = "remodel", {"deep_mm": 0.0}
    elif method == "remodel-unlayered":  # the template's own scalp layers (no scalp.py)
        method, options = "remodel", {"layered_scalp": False}
    return deidentify(scan, method, seed=seed, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", default=",".join(PANEL))
    parser.add_argument("--methods", default="none,deface,shear,blur,template,remodel,remodel-prior")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--utility", action="store_true", help="add BET and tissue Dice (deepbet, GMM, Atropos)")
    parser.add_argument("--detect", action="store_true",
                        help="add how many of 3 views each attacker's detector finds a face in")
    args = parser.parse_args()
    heads = args.heads.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_panel(tmp, tuple(heads))
        for head in heads:
            scan = load_scan(paths[head])
            if args.utility:
                from reface.evaluate.utility import run_pipeline

                original_out = run_pipeline(scan, ("deepbet",), ("gmm", "atropos"))
            for method in args.methods.split(","):
                for seed in (int(s) for s in args.seeds.split(",")):
                    start = time.perf_counter()
                    result = run(method, scan, seed)
                    values = realism_pairs(scan, _as_scan(scan, result), result.regions)
                    if args.utility:
                        values.update(utility(original_out, scan, result))
                    if args.detect:
                        out = (result.raw.astype(np.float64) * scan.slope + scan.inter).astype(np.float32)
                        values.update(faces_found(out, scan.affine))
                    rows.append((head, method, seed, time.perf_counter() - start, values))
                    cells = " ".join(f"{k[8:]}={values[k]:.4f}/{values[k + '_orig']:.4f}" for k in METRICS)
                    print(f"{head} {method} seed={seed} {rows[-1][3]:.0f}s {cells}", flush=True)
    extra = (UTILITY if args.utility else ()) + (DETECT if args.detect else ())
    lines = ["| head | method | seeds | " + " | ".join(f"{m[8:]} (orig)" for m in METRICS)
             + "".join(f" | {m}" for m in extra) + " |",
             "|---|---|---|" + "---|" * (len(METRICS) + len(extra))]
    for head in heads:
        for method in args.methods.split(","):
            group = [r[4] for r in rows if r[0] == head and r[1] == method]
            cells = [f"{np.nanmean([g[m] for g in group]):.4f} ({np.nanmean([g[m + '_orig'] for g in group]):.4f})"
                     for m in METRICS]
            cells += [f"{np.nanmean([g[m] for g in group]):.4f}" for m in extra]
            lines.append(f"| {head} | {method} | {len(group)} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if args.markdown:
        args.markdown.write_text(f"```\npython {' '.join(sys.argv)}\n```\n\n{table}\n")


def _as_scan(scan, result):
    """The de-identified scan as a Scan on the input grid (raw values replaced, no cached data)."""
    import dataclasses

    return dataclasses.replace(scan, raw=result.raw, _data=None)


if __name__ == "__main__":
    main()

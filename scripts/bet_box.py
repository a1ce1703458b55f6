"""Why deepbet's mask moves after a method: its box, its intensity window, or the tissue around the brain.

    .venv/bin/python scripts/bet_box.py --methods remodel --markdown docs/bet_box.md

deepbet (i) reads the whole image's 0.5 and 99.5 percentiles on a 128^3 nearest-neighbour sample as its
intensity window, (ii) finds a box around a low-resolution brain mask from that sample, then (iii) segments the
box resampled to 256^3. For each real head, the method's output is segmented four ways: as deepbet does, then
with the input's window, the input's box, or both, put in its place. What is left with both is the network
reacting to the changed tissue around the brain (its context). Same extractor weights as `reface run`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from reface.deidentify import deidentify
from reface.masks import _deepbet, dice
from reface.realheads import PANEL, load_real_head, write_panel


def _canonical(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The array deepbet reads: the image in its closest canonical (RAS) orientation."""
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, np.float32), affine))
    return np.ascontiguousarray(img.get_fdata(dtype=np.float32))


def window_and_box(x: np.ndarray) -> tuple[float, float, tuple[slice, ...]]:
    """deepbet's first stage (bet.py `run_model`): the intensity window and the box it crops."""
    from deepbet.utils import keep_largest_connected_component, normalize

    ext = _deepbet("cpu")
    small = F.interpolate(torch.from_numpy(x)[None, None], (128,) * 3, mode="nearest-exact")[0, 0]
    low, high = small.quantile(0.005), small.quantile(0.995)
    with torch.inference_mode():
        coarse = ext.bbox_model(normalize(small, low, high)[None, None])[0, 1]
    coarse = torch.from_numpy(keep_largest_connected_component((coarse > 0.5).float().numpy()))
    return float(low), float(high), ext.get_bbox_with_margin(coarse, x.shape, 0.1)


def segment(x: np.ndarray, low: float, high: float, box: tuple[slice, ...]) -> np.ndarray:
    """deepbet's second stage and post-processing with a given window and box."""
    import fill_voids
    from deepbet.utils import keep_largest_connected_component, normalize

    ext = _deepbet("cpu")
    xt = torch.from_numpy(x)
    fine = F.interpolate(xt[box][None, None], (256,) * 3, mode="nearest-exact")[0, 0]
    with torch.inference_mode():
        prob = ext.model(normalize(fine, torch.tensor(low), torch.tensor(high))[None, None])[0, 1]
    out = torch.zeros_like(xt)
    out[box] = F.interpolate(prob[None, None], out[box].shape, mode="nearest-exact")[0, 0]
    mask = out.numpy() > 0.5
    mask[box] = fill_voids.fill(keep_largest_connected_component(mask[box]))
    return mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="remodel")
    parser.add_argument("--heads", default=",".join(PANEL))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", default="/tmp/reface_realheads")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    from reface.io import load_scan

    start = time.time()
    paths = write_panel(args.folder, tuple(args.heads.split(",")))
    rows = ["| head | method | box moved (voxels) | window high | as deepbet | input window | input box | "
            "both |", "|---|---|---|---|---|---|---|---|"]
    for name, path in paths.items():
        scan = load_scan(path)
        x0 = _canonical(scan.data, scan.affine)
        low0, high0, box0 = window_and_box(x0)
        ref = segment(x0, low0, high0, box0)
        for method in args.methods.split(","):
            out = deidentify(scan, method, seed=args.seed, brain=load_real_head(name).brain)
            x1 = _canonical(out.data, scan.affine)
            low1, high1, box1 = window_and_box(x1)
            moved = sum(abs(a.start - b.start) + abs(a.stop - b.stop) for a, b in zip(box0, box1, strict=True))
            scores = [dice(segment(x1, lo, hi, box), ref) for lo, hi, box in
                      [(low1, high1, box1), (low0, high0, box1), (low1, high1, box0), (low0, high0, box0)]]
            row = f"| {name} | {method} | {moved} | {high1 / high0:.3f} of the input's | " + \
                " | ".join(f"{s:.4f}" for s in scores) + " |"
            rows.append(row)
            print(row, flush=True)
    table = "\n".join(rows)
    if args.markdown:
        head = (f"# What moves deepbet's mask\n\n`python scripts/bet_box.py --methods {args.methods} --markdown "
                f"{args.markdown}` (seed {args.seed}; real-robex with its reference brain mask as the preserved "
                "brain). deepbet Dice against its mask of the input, with the output's own window and box, then "
                "with the input's window, box, or both put in their place.\n\n")
        args.markdown.write_text(head + table + f"\n\n{time.time() - start:.0f} s on this machine.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The brain extractor's own noise floor: how much its mask moves when nothing but the field of view does.

    .venv/bin/python scripts/bet_jitter.py --data data/synth50 --subjects 4 --methods remodel,deface \\
        --markdown docs/bet_jitter.md

Each head (the real-head panel, then ses-01 of the first N synthetic subjects) is given K more slices of its
own air (reflected at the start of its 2nd and 3rd voxel axes; the image content is unchanged, only the
field of view grows) and its brain is extracted again; the mask, cropped back, is compared with the
original's. deepbet crops a box around a low-resolution brain mask and resamples it to 256^3 by nearest
neighbour, so a box one voxel larger changes its sampling grid, and its mask moves all round. Beside that
floor: the same extractor's Dice after each method (seed 0), on the same heads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from reface.deidentify import deidentify
from reface.evaluate.pipelines import hdbet_mask
from reface.evaluate.utility import deepbet_mask
from reface.io import load_scan
from reface.masks import dice
from reface.realheads import PANEL, load_real_head

PADS = (1, 2, 4)


def padded(path: Path, k: int, folder: Path) -> Path:
    """The scan with k reflected air slices before its 2nd and 3rd axes, its affine moved to match."""
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    data = data.reshape(data.shape[:3])
    out = np.pad(data, [(0, 0), (k, 0), (k, 0)], mode="reflect")
    affine = img.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.array([0, k, k])
    target = folder / f"pad{k}_{path.name}"
    nib.save(nib.Nifti1Image(out, affine), target)
    return target


def heads(data: Path | None, subjects: int, folder: Path) -> list[tuple[str, Path, Path | None]]:
    """(label, T1w path, brain mask path or None) for the panel and the first synthetic subjects."""
    out = []
    for name in PANEL:
        head = load_real_head(name)
        path = folder / f"real-{name}.nii.gz"
        nib.save(head.image, path)
        mask = None
        if head.brain is not None:
            mask = folder / f"real-{name}_mask.nii.gz"
            nib.save(nib.Nifti1Image(head.brain.astype(np.uint8), head.image.affine), mask)
        out.append((f"real-{name}", path, mask))
    for i in range(1, subjects + 1 if data else 1):
        anat = data / f"sub-{i:04d}" / "ses-01" / "anat"
        out.append((f"sub-{i:04d}", anat / f"sub-{i:04d}_ses-01_T1w.nii.gz",
                    anat / f"sub-{i:04d}_ses-01_desc-brain_mask.nii.gz"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a synthetic cohort (reface synth); omit for real heads only")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--methods", default="remodel,deface", help="methods to put beside the floor")
    parser.add_argument("--extractor", choices=("deepbet", "hdbet"), default="deepbet")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    extract = deepbet_mask if args.extractor == "deepbet" else hdbet_mask
    methods = [m for m in args.methods.split(",") if m]
    columns = [f"pad {k}" for k in PADS] + methods
    lines = [f"| head | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for label, path, mask in heads(args.data, args.subjects, folder):
            scan = load_scan(path)
            base = extract(scan)
            cells = []
            for k in PADS:
                moved = extract(load_scan(padded(path, k, folder)))[:, k:, k:]
                cells.append(dice(base, moved.reshape(base.shape)))
            for method in methods:
                brain = load_scan(mask).data > 0.5 if mask is not None else None
                result = deidentify(scan, method, seed=0, brain=brain)
                out = folder / f"{method}_{path.name}"
                nib.save(nib.Nifti1Image(result.data, scan.affine), out)
                cells.append(dice(base, extract(load_scan(out))))
            lines.append(f"| {label} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + f"\n\n{args.extractor} Dice against its mask of the unchanged head; " \
        f"{time.perf_counter() - t0:.0f} s.\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()

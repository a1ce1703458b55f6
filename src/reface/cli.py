"""`reface` command line: subcommands live in reface.commands.<name>; heavy imports happen inside them.

Each command module defines `add_arguments(parser)` and `main(args) -> int`. A RefaceError anywhere
becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from . import __version__
from .errors import RefaceError

COMMANDS: dict[str, str] = {
    "run": "de-identify one scan (NIfTI file or DICOM folder)",
    "demo": "run every method on a bundled example head and write outputs + QA pictures",
    "synth": "generate a synthetic head cohort (BIDS-like tree)",
    "train": "train the conditional multi-scale GAN",
    "render": "render a head surface to PNG",
    "evaluate": "privacy / utility evaluation of methods on a dataset, with a report",
    "bids": "de-identify a BIDS dataset (BIDS-App conventions)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reface", description="De-identify 3D head MRI by remodeling the face.")
    parser.add_argument("--version", action="version", version=f"reface {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        try:
            module = import_module(f"reface.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"reface.commands.{name}":
                raise
            continue  # command not part of this build
        cmd = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._module.main(args) or 0)
    except RefaceError as error:
        print(f"reface {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reface {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Train the conditional multi-scale GAN (same script on one CPU and under `torchrun --nproc_per_node=K`).

Data: a cohort folder (BIDS-like `sub-*/ses-*/anat/*_T1w.nii.gz` with `*desc-brain_mask.nii.gz` beside,
or any folder of T1w NIfTIs: masks are then computed) and/or --packaged N augmented packaged heads.
The run folder gets config.json, log.jsonl, samples/*.png, state.pt (for --resume) and model.safetensors.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="", help="training cohort folder")
    parser.add_argument(
        "--packaged",
        type=int,
        default=0,
        help="also train on N randomly augmented packaged heads (ROBEX atlas, phantoms)",
    )
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument(
        "--config", default="tiny", choices=["tiny", "base", "large"], help="preset (default tiny)"
    )
    parser.add_argument("--cache", default="", help="prepared-data cache folder (default RUN_DIR/cache)")
    parser.add_argument("--steps", type=int, help="optimisation steps per stage (overrides the preset)")
    parser.add_argument(
        "--minutes", type=float, help="time budget per stage in minutes (overrides the preset)"
    )
    parser.add_argument("--batch-size", type=int, help="batch size (overrides the preset)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (offset by rank under torchrun)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="compute device")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from state.pt")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    from ..model.config import preset

    base = preset(args.config)
    n = base.model.n_stages
    overrides = {
        "data": args.data,
        "packaged": args.packaged,
        "cache": args.cache,
        "seed": args.seed,
        "device": args.device,
    }
    if args.steps is not None:
        overrides["steps"] = (args.steps,) * n
    if args.minutes is not None:
        overrides["time_budget_min"] = (args.minutes,) * n
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    return preset(args.config, **overrides)


def main(args: argparse.Namespace) -> int:
    from ..errors import RefaceError
    from ..model.config import to_dict

    cfg = config_from_args(args)
    if args.dry_run:
        print(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
        return 0
    if not cfg.data and not cfg.packaged:
        raise RefaceError("no training data: give --data DIR and/or --packaged N")
    from ..model.train import train

    out = train(cfg, args.out, resume=args.resume, quiet=args.quiet)
    if not args.quiet:
        print(f"wrote {out}")
    return 0

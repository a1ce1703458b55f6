"""Privacy of the methods on the real-head panel: real head x method x attacker x view.

Two modes:

  table RESULTS.jsonl [...] [-o docs/privacy_realheads.md] [--header FILE]
      Reads `reface evaluate` results files (and files written by `probe`) and prints a markdown table:
      for every real head (real-*), method (with its seed, and remodel's variation where known), attacker
      and view, whether the attacker found a face and the rank of the true identity among all gallery heads
      (1 = found; chance ~ G/2); then the pooled rank-1 rate (and rank <= 3) with the number of trials.
      A results file's seed comes from the evaluate_settings.json beside it (the method seed of `reface evaluate`).

  probe --eval EVAL_DIR --out OUT [--seeds 0,1,2] [--variation V] [--method remodel]
      De-identifies the real heads of an existing evaluation (EVAL_DIR/panel) with one method at several
      seeds (and remodel's `variation`), renders and attacks them exactly as `reface evaluate` does, and
      ranks them against EVAL_DIR's saved gallery embeddings (all synthetic and real heads). Appends the
      same kind of lines (face_detected, rank; plus seed and variation fields) to OUT/results.jsonl. This
      avoids re-running a whole cohort evaluation (its settings fix one seed per output folder) to get more
      seeds of one method on the real heads.

  control --eval EVAL_DIR --probe OUT --folders remodel-s0,remodel-s1,remodel-s2 [--markdown FILE]
      The impostor control for `probe`'s ranks. With one real person behind every synthetic distractor, a
      generic face can land near real-robex's gallery photo whoever it came from (the undeformed head is the
      centre of its deformations). So, for each real head T, the rank of T's gallery photo is compared between
      the probes made from T (genuine) and the probes made from a different person by the same method and
      seeds (control: real-robex and real-robex-mni are one person, pydeface-mean another). A leak shows as
      genuine ranks better than the control's; equal distributions mean the attacker learns nothing from
      the input beyond what any de-identified head gives.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ATTACKERS = ("yunet-sface", "dlib-resnet", "dlib-hog-resnet")
VIEWS = ("front", "left30", "right30")


# ------------------------------------------------------------------------------------------------ probe


def _gallery_labels(eval_dir: Path, attacker: str) -> list[str]:
    """Every gallery subject of an evaluation (a render exists for each, embedding or not)."""
    renders = sorted((eval_dir / "renders" / "gallery" / VIEWS[0]).glob("*.png"))
    return [p.stem for p in renders]


def probe(args) -> None:
    from reface.deidentify import deidentify, save_result
    from reface.evaluate.metrics import identification_ranks, similarity_matrix
    from reface.evaluate.privacy import attack_head, embedding_path
    from reface.evaluate.results import ResultsWriter, record
    from reface.io import load_mask, load_scan

    eval_dir, out = Path(args.eval), Path(args.out)
    writer = ResultsWriter(out / "results.jsonl")
    attackers = tuple(args.attackers.split(","))
    gallery = _gallery_labels(eval_dir, attackers[0])
    heads = sorted(p.name for p in (eval_dir / "panel").iterdir() if p.is_dir())
    if args.heads:
        heads = [h for h in heads if h in args.heads.split(",")]
    options = {} if args.variation is None else {"variation": args.variation}
    for seed in [int(s) for s in args.seeds.split(",")]:
        tag = f"{args.method}" + (f"-v{args.variation:g}" if args.variation is not None else "") + f"-s{seed}"
        for label in heads:
            folder = eval_dir / "panel" / label
            scan = load_scan(folder / f"{label}_ses-01_T1w.nii.gz")
            mask = folder / f"{label}_ses-01_desc-brain_mask.nii.gz"
            brain = load_mask(mask, scan) if mask.exists() else None
            start = time.perf_counter()
            result = deidentify(scan, args.method, seed=seed, brain=brain, **options)
            deid_s = time.perf_counter() - start
            path = out / "deid" / tag / f"{label}_T1w.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_result(result, path, force=True)
            written = load_scan(path)
            extra = {"seed": seed, "variation": args.variation}
            lines = attack_head(out, written.data, written.affine, tag, label, attackers=attackers, views=VIEWS,
                                size=args.render_size)
            lines = [dict(line, method=args.method, folder=tag, **extra) for line in lines]
            for attacker in attackers:
                for view in VIEWS:
                    emb = embedding_path(out, attacker, tag, view, label)
                    probe_emb = [np.load(emb) if emb.exists() else None]
                    gal = [np.load(p) if (p := embedding_path(eval_dir, attacker, "gallery", view, g)).exists()
                           else None for g in gallery]
                    rank = identification_ranks(similarity_matrix(probe_emb, gal), [label], gallery)[0]
                    lines.append(record(label, args.method, "rank", float(rank) if np.isfinite(rank) else None,
                                        gallery=len(gallery), attacker=attacker, view=view, folder=tag, **extra))
            lines.append(record(label, args.method, "deid_s", deid_s, folder=tag, **extra))
            writer.write(lines)
            found = [r for r in lines if r["metric"] == "rank"]
            print(f"{tag} {label}: deid {deid_s:.0f} s; ranks "
                  + " ".join(f"{r['attacker']}/{r['view']}={r['value']}" for r in found), flush=True)


# ------------------------------------------------------------------------------------------------ control

PERSON = {"real-robex": "robex", "real-robex-mni": "robex", "real-pydeface-mean": "pydeface-mean"}


def control(args) -> str:
    from scipy.stats import mannwhitneyu

    from reface.evaluate.privacy import embedding_path

    eval_dir, probe_dir = Path(args.eval), Path(args.probe)
    attackers = tuple(args.attackers.split(","))
    gallery = _gallery_labels(eval_dir, attackers[0])
    folders = args.folders.split(",")
    ranks: dict[tuple, list[float]] = defaultdict(list)  # (target, attacker, genuine?) -> ranks
    for attacker in attackers:
        for view in VIEWS:
            paths = {g: embedding_path(eval_dir, attacker, "gallery", view, g) for g in gallery}
            gal = {g: np.load(p) for g, p in paths.items() if p.exists()}
            names = sorted(gal)
            unit = np.stack([gal[g].ravel() / np.linalg.norm(gal[g]) for g in names])
            for folder in folders:
                for probe in PERSON:
                    path = embedding_path(probe_dir, attacker, folder, view, probe)
                    if not path.exists():
                        continue
                    v = np.load(path).ravel()
                    sim = unit @ (v / np.linalg.norm(v))
                    for target in PERSON:
                        if target not in gal or (target != probe and PERSON[target] == PERSON[probe]):
                            continue
                        rank = 1.0 + float((sim > sim[names.index(target)]).sum())
                        for key in (attacker, "all attackers"):
                            ranks[(target, key, target == probe)].append(rank)
    out = [f"Probe folders: {', '.join(folders)}; gallery {len(gallery)} heads (chance rank ~ {len(gallery) // 2}).\n",
           "| target head | attacker | genuine: median rank, rank-1 [n] | control: median rank, rank-1 [n] | "
           "one-sided Mann-Whitney p (genuine better) |", "|---|---|---|---|---|"]
    for target in PERSON:
        for attacker in (*attackers, "all attackers"):
            gen, imp = ranks.get((target, attacker, True), []), ranks.get((target, attacker, False), [])
            if not gen or not imp:
                continue
            p = mannwhitneyu(gen, imp, alternative="less").pvalue
            out.append(f"| {target} | {attacker} | {np.median(gen):.1f}, {np.mean(np.array(gen) == 1):.2f} [{len(gen)}]"
                       f" | {np.median(imp):.1f}, {np.mean(np.array(imp) == 1):.2f} [{len(imp)}] | {p:.3f} |")
    text = "\n".join(out) + "\n"
    if args.markdown:
        Path(args.markdown).write_text(text)
    return text


# ------------------------------------------------------------------------------------------------ table


def _read(path: Path) -> list[dict]:
    settings = path.parent / "evaluate_settings.json"
    seed = json.loads(settings.read_text()).get("seed") if settings.exists() else None
    rows = []
    for text in path.read_text().splitlines():
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            continue
        if not str(row.get("subject", "")).startswith("real-"):
            continue
        if row.get("metric") not in ("rank", "face_detected"):
            continue
        row.setdefault("seed", seed)
        row.setdefault("source", str(path))
        rows.append(row)
    return rows


def _variant(row: dict) -> str:
    method = row["method"]
    if method == "remodel":
        v = row.get("variation")
        method += f" (variation {'default' if v is None else f'{v:g}'})"
    return method


def _fmt_rank(rank, detected) -> str:
    if detected == 0:
        return "no face"
    if rank is None:  # a face in the probe, none in its gallery photo: the attacker cannot match it
        return "gal. no face"
    return f"{int(rank)}"


def table(args) -> str:
    rows = [r for path in args.results for r in _read(Path(path))]
    latest: dict[tuple, dict] = {}
    for r in rows:  # last line per key wins (results files are append-only)
        key = (r["subject"], _variant(r), r.get("seed"), r["metric"], r.get("attacker"), r.get("view"))
        latest[key] = r
    gallery = sorted({r.get("gallery") for r in rows if r.get("gallery")})
    heads = sorted({k[0] for k in latest})
    order = ("gallery", "original", "none", "shear", "remodel")
    variants = sorted({k[1] for k in latest},
                      key=lambda v: (order.index(v.split(" ")[0]) if v.split(" ")[0] in order else 9, v))
    out = []
    if args.header:
        out.append(Path(args.header).read_text().rstrip() + "\n")
    out.append(f"Gallery size: {', '.join(map(str, gallery))} heads (chance rank ~ G/2; rank 1 = found).\n")
    out.append("## Per head, method, seed: rank of the true identity (or 'no face') per attacker and view\n")
    out.append("'no face': the attacker found no face in the probe; 'gal. no face': none in its gallery photo (the "
               "probe cannot be matched; a miss); gallery/original rows: detection on the unmodified scans.\n")
    header = "| head | method | seed | " + " | ".join(f"{a} {v}" for a in ATTACKERS for v in VIEWS) + " |"
    out.append(header)
    out.append("|" + "---|" * (3 + len(ATTACKERS) * len(VIEWS)))
    pooled: dict[tuple, list] = defaultdict(list)
    for head in heads:
        for variant in variants:
            seeds = sorted({k[2] for k in latest if k[0] == head and k[1] == variant}, key=lambda s: (s is None, s))
            for seed in seeds:
                cells = []
                for a in ATTACKERS:
                    for v in VIEWS:
                        det = latest.get((head, variant, seed, "face_detected", a, v), {}).get("value")
                        rank = latest.get((head, variant, seed, "rank", a, v), {}).get("value")
                        if det is None and rank is None:
                            cells.append("")
                            continue
                        if variant in ("gallery", "original"):  # the unmodified scans: detection only
                            cells.append("face" if det else "no face")
                            continue
                        cells.append(_fmt_rank(rank, det))
                        pooled[(head, variant, a)].append(rank)
                        pooled[("all heads", variant, a)].append(rank)
                        if head != "real-pydeface-mean":
                            pooled[("all but pydeface-mean", variant, a)].append(rank)
                out.append(f"| {head} | {variant} | {seed} | " + " | ".join(cells) + " |")
    out.append("\n## Pooled over seeds and views: rank-1 rate (rank <= 3) [trials; no-face trials count as "
               "misses]\n")
    out.append("| head | method | " + " | ".join(ATTACKERS) + " |")
    out.append("|" + "---|" * (2 + len(ATTACKERS)))
    groups = [*heads, "all but pydeface-mean", "all heads"]
    for head in groups:
        for variant in variants:
            cells = []
            for a in ATTACKERS:
                ranks = pooled.get((head, variant, a), [])
                if not ranks:
                    cells.append("")
                    continue
                r = np.array([np.inf if x is None else x for x in ranks], float)
                cells.append(f"{(r <= 1).mean():.2f} ({(r <= 3).mean():.2f}) [{len(r)}]")
            if any(cells):
                out.append(f"| {head} | {variant} | " + " | ".join(cells) + " |")
    text = "\n".join(out) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("results", nargs="+")
    t.add_argument("-o", "--output")
    t.add_argument("--header", help="markdown to put above the tables (commands, wall times)")
    p = sub.add_parser("probe")
    p.add_argument("--eval", required=True, help="a finished `reface evaluate` output folder (its gallery)")
    p.add_argument("--out", required=True)
    p.add_argument("--method", default="remodel")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variation", type=float, default=None, help="remodel's variation (default: its own)")
    p.add_argument("--heads", default="", help="comma-separated real-* labels (default: all in EVAL/panel)")
    p.add_argument("--attackers", default=",".join(ATTACKERS))
    p.add_argument("--render-size", type=int, default=256)
    c = sub.add_parser("control")
    c.add_argument("--eval", required=True, help="the `reface evaluate` folder whose gallery `probe` ranked against")
    c.add_argument("--probe", required=True, help="a `probe` output folder")
    c.add_argument("--folders", required=True, help="comma-separated probe folders (method-seed tags)")
    c.add_argument("--attackers", default=",".join(ATTACKERS))
    c.add_argument("--markdown")
    args = parser.parse_args(argv)
    if args.cmd == "probe":
        probe(args)
    elif args.cmd == "control":
        sys.stdout.write(control(args))
    else:
        sys.stdout.write(table(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

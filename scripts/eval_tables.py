"""The README's three tables of a `reface evaluate` run, as markdown, straight from its results file.

    .venv/bin/python scripts/eval_tables.py eval_out/results.jsonl [--out tables.md]

report.html (and docs/evaluation_50.md made from it) shows every number; the README wants three compact
tables instead: privacy on the synthetic cohort pooled over the views, utility and realism on the synthetic
cohort, and the real-head panel's ranks. Nothing is recomputed: the cohort rows (subject `all`) are the
harness's means and bootstrap intervals, the panel rows are each real head's own lines, and readers keep the
last line per key (reface.evaluate.results.latest), so a re-run job replaces its earlier lines.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reface.evaluate.panel import is_real
from reface.evaluate.privacy import VIEWS
from reface.evaluate.results import COHORT, GALLERY, ORIGINAL, latest, read_results
from reface.report_privacy import POOLED, attackers_in, strongest

Rows = dict[tuple[str, ...], dict[str, Any]]
# the run's --methods order (Makefile EVAL_METHODS); any other method follows, sorted
METHOD_ORDER = ("none", "remodel", "shear", "quickshear", "deface", "template", "blur")
WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
ATROPOS = "utility_dice_atropos"
# (metric, header, with interval) on the cohort rows; realism columns also show the originals' value
UTILITY_COLUMNS = (
    ("bet_dice_deepbet", "BET Dice deepbet", True),
    ("utility_dice", "tissue Dice GMM", False),
    ("dice_csf", "CSF Dice GMM", False),
    (ATROPOS, "tissue Dice Atropos", False),
    ("brain_identical", "brain bit-identical", False),
)
REALISM_COLUMNS = (
    ("realism_bg_speckle", "air speckle"),
    ("realism_roughness_mm", "skin roughness mm"),
    ("realism_edge_p90", "edge p90"),
)
PANEL_COLUMNS = (
    ("utility_dice", "tissue Dice GMM"),
    (ATROPOS, "tissue Dice Atropos"),
    ("bet_dice_deepbet", "BET Dice deepbet"),
)


def fmt(value: Any, digits: int = 3) -> str:
    """A number with fixed decimals; '-' when missing."""
    return "-" if value is None else f"{float(value):.{digits}f}"


def short(value: float) -> str:
    """A chance level as written in a caption: 3 decimals at most, no trailing zeros (0.019, 0.5)."""
    return f"{round(value, 3):g}"


def value(rows: Rows, key: tuple[str, ...], digits: int = 3) -> str:
    item = rows.get(key)
    return fmt(item.get("value") if item else None, digits)


def with_ci(item: dict[str, Any] | None) -> str:
    """value [ci_low, ci_high], or the value alone without an interval."""
    if item is None:
        return "-"
    text = fmt(item.get("value"))
    if item.get("ci_low") is not None and item.get("ci_high") is not None:
        text += f" [{fmt(item['ci_low'])}, {fmt(item['ci_high'])}]"
    return text


def table(header: list[str], body: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def methods_in(rows: Rows) -> list[str]:
    """De-identification methods with results: METHOD_ORDER first, then any others, sorted."""
    seen = {k[1] for k in rows if k[1] not in (GALLERY, ORIGINAL)}
    return [m for m in METHOD_ORDER if m in seen] + sorted(seen - set(METHOD_ORDER))


def gallery_size(rows: Rows, metric: str, real: bool) -> int | None:
    """Heads in the gallery, as recorded on the rank rows (synthetic cohort or real heads)."""
    sizes = {r["gallery"] for k, r in rows.items()
             if k[2] == metric and r.get("gallery") is not None and is_real(k[0]) == real}
    return max(sizes) if sizes else None


def privacy(rows: Rows, methods: list[str], attackers: list[str]) -> list[str]:
    """Pooled rank-1 of the strongest attacker with its interval, then rank-1, AUC and detection per attacker."""
    views = [v for v in VIEWS if any(len(k) == 5 and k[0] == COHORT and k[4] == v for k in rows)]
    some = next((rows[k] for k in rows if k[0] == COHORT and k[2] == "rank1" and k[4] == POOLED), {})
    auc = next((rows[k] for k in rows if k[0] == COHORT and k[2] == "auc" and k[4] == POOLED), {})
    chance = some.get("chance")
    caption = (
        f"Privacy on the synthetic cohort, pooled over the {WORDS.get(len(views), str(len(views)))} views "
        f"({gallery_size(rows, 'rank1', False)} gallery heads; chance rank-1 {short(chance)}, "
        f"AUC {short(auc['chance'])}):"
    )
    names = " / ".join(attackers)
    header = ["method", "rank-1, strongest attacker", f"rank-1 {names}", f"AUC {names}",
              f"faces found vs originals {names}"]
    body = []
    for method in methods:
        best = strongest(rows, method, attackers, POOLED)
        if best is None:
            continue
        item = rows[(COHORT, method, "rank1", best, POOLED)]
        top = f"{with_ci(item)} {best}"
        if item.get("chance") is not None:
            top += f" (chance {fmt(item['chance'])})"
        cells = [" / ".join(value(rows, (COHORT, method, metric, a, POOLED), digits) for a in attackers)
                 for metric, digits in (("rank1", 3), ("auc", 3), ("detect_rel", 2))]
        body.append([method, top, *cells])
    return [caption, "", *table(header, body)]


def utility(rows: Rows, methods: list[str]) -> list[str]:
    """Cohort means of the downstream pipelines, realism (the originals' value in brackets) and job time."""
    synthetic = {k[0] for k in rows if k[0] != COHORT and not is_real(k[0])}
    atropos = {k[0] for k in rows if k[0] in synthetic and k[2] == ATROPOS}
    caption = (
        f"Utility and realism on the synthetic cohort (means over {len(synthetic)} subjects; Atropos over "
        f"{len(atropos)}; realism against each scan's original):"
    )
    header = [
        "method",
        *(name for _, name, _ in UTILITY_COLUMNS),
        *(f"{name} (original)" for _, name in REALISM_COLUMNS),
        "job s",
    ]
    body = []
    for method in methods:
        if not any(k[:2] == (COHORT, method) and len(k) == 3 for k in rows):
            continue
        row = [method]
        for metric, _, interval in UTILITY_COLUMNS:
            row.append(with_ci(rows.get((COHORT, method, metric))) if interval
                       else value(rows, (COHORT, method, metric)))
        for metric, _ in REALISM_COLUMNS:
            row.append(f"{value(rows, (COHORT, method, metric))} ({value(rows, (COHORT, method, metric + '_orig'))})")
        row.append(value(rows, (COHORT, method, "wall_s"), 0))
        body.append(row)
    return [caption, "", *table(header, body)]


def rank(rows: Rows, head: str, method: str, attacker: str, view: str) -> str:
    """The true identity's rank at one view; '-' when the attacker found no face there."""
    item = rows.get((head, method, "rank", attacker, view))
    return "-" if item is None or item.get("value") is None else str(int(item["value"]))


def panel(rows: Rows, methods: list[str], attackers: list[str]) -> list[str]:
    """Per real head and method: the true identity's rank per attacker and view, and the pipelines' Dice."""
    heads = sorted({k[0] for k in rows if is_real(k[0])})
    views = [v for v in VIEWS if any(len(k) == 5 and is_real(k[0]) and k[4] == v for k in rows)]
    caption = (
        f"The real-head panel (rank of the true identity among the {gallery_size(rows, 'rank', True)} gallery "
        "heads at each view; 1 = re-identified):"
    )
    header = ["head", "method",
              f"true identity's rank ({' / '.join(attackers)}; {', '.join(views)})",
              *(name for _, name in PANEL_COLUMNS)]
    body = []
    for head in heads:
        for method in methods:
            if not any(k[:2] == (head, method) for k in rows):
                continue
            ranks = " / ".join(",".join(rank(rows, head, method, a, v) for v in views) for a in attackers)
            body.append([head, method, ranks, *(value(rows, (head, method, m)) for m, _ in PANEL_COLUMNS)])
    return [caption, "", *table(header, body)]


def tables(path: Path) -> str:
    """The three tables, each after its caption, as one markdown text."""
    rows = latest(read_results(path))
    if not rows:
        raise SystemExit(f"no results in {path}")
    methods = methods_in(rows)
    attackers = sorted(attackers_in(rows))
    parts = [privacy(rows, methods, attackers), utility(rows, methods), panel(rows, methods, attackers)]
    return "\n\n".join("\n".join(part) for part in parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="OUT/results.jsonl of `reface evaluate`")
    parser.add_argument("--out", type=Path, help="write the markdown here instead of to stdout")
    args = parser.parse_args()
    text = tables(args.results)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()

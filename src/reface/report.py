"""The evaluation report: OUT/report.html built only from OUT/results.jsonl and the pictures saved beside it.

Nothing is recomputed here, so `reface evaluate --report-only` is instant and a report can be rebuilt
from a results file copied off a cluster. The last line per (subject, method, metric) wins.
"""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import RefaceError
from .evaluate.panel import is_real
from .evaluate.results import COHORT, GALLERY, ORIGINAL, RESULTS_NAME, latest, read_results
from .report_privacy import POOLED, attackers_in, cell, panel_section, privacy_section, render_table, strongest

REPORT_NAME = "report.html"
SCATTER_NAME = "figures/privacy_utility.png"
UTILITY_COLUMNS = (
    ("brain_identical", "brain bit-identical"),
    ("pipeline_failed", "pipeline failed"),
    ("bet_dice_deepbet", "BET Dice (deepbet)"),
    ("bet_rvd_deepbet", "BET RVD (deepbet)"),
    ("bet_dice_robex", "BET Dice (ROBEX)"),
    ("bet_rvd_robex", "BET RVD (ROBEX)"),
    ("dice_csf", "CSF Dice"),
    ("dice_gm", "GM Dice"),
    ("dice_wm", "WM Dice"),
    ("rvd_csf", "CSF RVD"),
    ("rvd_gm", "GM RVD"),
    ("rvd_wm", "WM RVD"),
)
REALISM_COLUMNS = (
    ("realism_hist_w1", "non-brain intensity W1"),
    ("realism_missing_head", "head lost to background"),
    ("realism_bg_speckle", "air speckle"),
    ("realism_bg_speckle_orig", "air speckle (original)"),
    ("realism_bg_grain", "air grain"),
    ("realism_bg_grain_orig", "air grain (original)"),
    ("realism_roughness_mm", "skin roughness mm"),
    ("realism_roughness_mm_orig", "skin roughness mm (original)"),
    ("realism_edge_p90", "edge sharpness"),
    ("realism_edge_p90_orig", "edge sharpness (original)"),
    ("deid_failed", "method failed"),
    ("wall_s", "seconds / scan"),
)
GRID_SUBJECTS = 4


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _methods(rows: dict[tuple[str, str, str], dict[str, Any]]) -> list[str]:
    """Methods in the registry's order first, then any others, as they appear in the results."""
    from .methods import METHODS

    seen = {key[1] for key in rows if key[1] not in (GALLERY, ORIGINAL)}
    return [m for m in METHODS if m in seen] + sorted(seen - set(METHODS))


def _table(title: str, methods: list[str], rows, columns, *, chance: bool = False) -> str:
    present = [(key, name) for key, name in columns if any((COHORT, m, key) in rows for m in methods)]
    if not present:
        return f"<h2>{html.escape(title)}</h2><p>No results.</p>"
    head = "".join(f"<th>{html.escape(name)}</th>" for _, name in present)
    body = []
    for method in methods:
        if (COHORT, method, "skipped") in rows:
            continue
        cells = "".join(cell(rows.get((COHORT, method, key)), chance=chance) for key, _ in present)
        body.append(f"<tr><th>{html.escape(method)}</th>{cells}</tr>")
    return f"<h2>{html.escape(title)}</h2><table><tr><th>method</th>{head}</tr>{''.join(body)}</table>"


def measure_of(metric: str, pipeline: str) -> str:
    """A pipeline row's measure without what names the pipeline: `bet_dice_hdbet` (hdbet) -> `bet_dice`,
    `dice_gm_atropos` (deepbet+atropos) -> `dice_gm`, `absdiff_age@cmd:age` -> `absdiff_age`."""
    measure = metric.split("@", 1)[0]
    for tag in (pipeline, pipeline.rpartition("+")[2]):
        if tag and measure.endswith(f"_{tag}"):
            return measure[: -len(tag) - 1]
    return measure


def pipeline_tables(rows, methods: list[str]) -> str:
    """Cohort utility rows by the `pipeline` field: brain extractors, extractor+segmenter, user commands."""
    by_kind: dict[str, dict[tuple[str, str], dict[str, Any]]] = {"bet": {}, "tissue": {}, "cmd": {}}
    for key, item in rows.items():
        if key[0] != COHORT or len(key) != 3 or key[1] not in methods or "pipeline" not in item:
            continue
        pipeline = item["pipeline"]
        kind = "cmd" if pipeline.startswith("cmd:") else "tissue" if "+" in pipeline else "bet"
        by_kind[kind].setdefault((key[1], pipeline), {})[measure_of(key[2], pipeline)] = item
    parts = []
    titles = {"bet": "brain extraction", "tissue": "tissue segmentation", "cmd": "user pipelines (--utility-cmd)"}
    for kind, groups in by_kind.items():
        if not groups:
            continue
        measures = sorted({m for cells in groups.values() for m in cells})
        head = "".join(f"<th>{html.escape(m)}</th>" for m in measures)
        order = {m: i for i, m in enumerate(methods)}
        body = "".join(
            f"<tr><th>{html.escape(method)}</th><td>{html.escape(pipeline)}</td>"
            + "".join(cell(cells.get(m)) for m in measures)
            + "</tr>"
            for (method, pipeline), cells in sorted(groups.items(), key=lambda g: (order[g[0][0]], g[0][1]))
        )
        parts.append(f"<h3>Utility by pipeline: {titles[kind]}</h3>"
                     f"<table><tr><th>method</th><th>pipeline</th>{head}</tr>{body}</table>")
    return "".join(parts)


def flags(rows: dict[tuple[str, str, str], dict[str, Any]], methods: list[str]) -> list[str]:
    """Plain-language warnings: skipped methods, changed brains, failures, heads that look wrong."""
    from .evaluate.realism import HIST_W1_FLAG, MISSING_HEAD_FLAG

    notes = []
    for method in methods:
        get = rows.get
        if (skip := get((COHORT, method, "skipped"))) is not None:
            notes.append(f"{method}: skipped, its code did not import ({skip.get('note', '')}).")
            continue
        ident = get((COHORT, method, "brain_identical"))
        if ident is not None and (ident.get("min", ident["value"]) or 0.0) < 1.0:
            notes.append(
                f"{method}: BRAIN CHANGED - the brain is not bit-identical in every scan "
                f"(lowest fraction of identical brain voxels {_fmt(ident.get('min', ident['value']), 6)})."
            )
        failed = get((COHORT, method, "deid_failed"))
        if failed is not None and (failed["value"] or 0) > 0:
            notes.append(f"{method}: failed on {_fmt(100 * failed['value'], 0)}% of scans.")
        broke = get((COHORT, method, "pipeline_failed"))
        if broke is not None and (broke["value"] or 0) > 0:
            notes.append(
                f"{method}: the downstream pipeline failed on {_fmt(100 * broke['value'], 0)}% of scans "
                "where it worked on the original."
            )
        missing = get((COHORT, method, "realism_missing_head"))
        w1 = get((COHORT, method, "realism_hist_w1"))
        if missing is not None and (missing["value"] or 0) > MISSING_HEAD_FLAG:
            notes.append(
                f"{method}: looks wrong - {_fmt(100 * missing['value'], 0)}% of the non-brain head became "
                "background (removed face or holes)."
            )
        elif w1 is not None and (w1["value"] or 0) > HIST_W1_FLAG:
            notes.append(
                f"{method}: looks wrong - non-brain tissue intensities differ from a real head's "
                f"(W1 {_fmt(w1['value'])} of the brain's median intensity)."
            )
    return notes


def scatter_plot(rows, methods: list[str], path: Path) -> Path | None:
    """Privacy (the strongest attacker's pooled rank-1) against utility (mean tissue Dice), CIs as bars."""
    attackers = attackers_in(rows)
    best = {m: strongest(rows, m, attackers, POOLED) for m in methods}
    points = [
        (m, rows[(COHORT, m, "rank1", best[m], POOLED)], rows[(COHORT, m, "utility_dice")])
        for m in methods
        if best[m] is not None and (COHORT, m, "utility_dice") in rows
    ]
    points = [(m, x, y) for m, x, y in points if x.get("value") is not None and y.get("value") is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    for method, x, y in points:
        xv, yv = x["value"], y["value"]
        xerr = [
            [xv - (x.get("ci_low") if x.get("ci_low") is not None else xv)],
            [(x.get("ci_high") if x.get("ci_high") is not None else xv) - xv],
        ]
        yerr = [
            [yv - (y.get("ci_low") if y.get("ci_low") is not None else yv)],
            [(y.get("ci_high") if y.get("ci_high") is not None else yv) - yv],
        ]
        ax.errorbar(xv, yv, xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=method)
        ax.annotate(method, (xv, yv), textcoords="offset points", xytext=(5, 5), fontsize=8)
    chance = points[0][1].get("chance")
    if chance is not None:
        ax.axvline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xlabel("rank-1 re-identification, strongest attacker (lower = more private)")
    ax.set_ylabel("mean tissue Dice vs original (higher = more useful)")
    ax.set_xlim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    # outside the axes: a method at rank-1 0 with low Dice (lower left) must never hide behind the legend
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _render_grid(out: Path, rows, methods: list[str]) -> str:
    subjects = sorted({k[0] for k in rows if k[0] != COHORT and not is_real(k[0])})[:GRID_SUBJECTS]
    table = render_table(out, subjects, [ORIGINAL, GALLERY, *methods], ["front"], by="subject")
    if not table:
        return ""
    return (
        "<h2>Front renderings</h2><p>What a face-recognition attacker sees (session 1 de-identified; "
        f"gallery = another session).</p>{table}"
    )


STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
    "margin-bottom:1em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}small{color:#666}"
    ".warn{color:#a00}details{margin-bottom:1em}"
)


def build_report(out_dir: str | os.PathLike) -> Path:
    """Write OUT/report.html (and OUT/figures/privacy_utility.png) from OUT/results.jsonl."""
    out = Path(out_dir)
    lines = read_results(out / RESULTS_NAME)
    if not lines:
        raise RefaceError(f"no results in {out / RESULTS_NAME}; run `reface evaluate` first")
    rows = latest(lines)
    methods = _methods(rows)
    subjects = sorted({k[0] for k in rows if k[0] != COHORT and not is_real(k[0])})
    heads = sorted({k[0] for k in rows if is_real(k[0])})
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>reface evaluation</title>"
        f"<style>{STYLE}</style></head><body><h1>reface evaluation</h1>",
        f"<p>{len(subjects)} synthetic subjects and {len(heads)} real heads, methods: "
        f"{html.escape(', '.join(methods))}. Values are means over the synthetic subjects with 95% bootstrap "
        "intervals; the real heads are reported one by one.</p>",
    ]
    notes = flags(rows, methods)
    if notes:
        parts.append(
            "<h2>Warnings</h2><ul>"
            + "".join(f"<li class=warn>{html.escape(n)}</li>" for n in notes)
            + "</ul>"
        )
    parts.append(privacy_section(rows, methods))
    parts.append(
        _table("Utility: downstream brain pipeline vs the original's output", methods, rows, UTILITY_COLUMNS)
    )
    orig_failed = rows.get((COHORT, GALLERY, "original_pipeline_failed"))
    parts.append(
        "<p>Brain extraction then 3-class tissue segmentation, run on the full head. Dice 1 and "
        "RVD (relative volume difference) 0 mean the analysis did not notice the de-identification."
        + (
            f" The pipeline failed on {_fmt(100 * orig_failed['value'], 0)}% of the original scans "
            "(those steps are not compared)."
            if orig_failed and orig_failed["value"]
            else ""
        )
        + "</p>"
    )
    parts.append(pipeline_tables(rows, methods))
    parts.append(_table("Realism", methods, rows, REALISM_COLUMNS))
    parts.append(
        "<p>W1: distance between non-brain tissue intensity distributions of the de-identified and the "
        "original head (units of the median brain intensity). Head lost: fraction of the original "
        "non-brain head that is background afterwards. Neither judges anatomical plausibility: look at "
        "the renderings.</p>"
    )
    scatter = scatter_plot(rows, methods, out / SCATTER_NAME)
    if scatter is not None:
        parts.append(f'<h2>Privacy vs utility</h2><img src="{SCATTER_NAME}" width=560>')
    parts.append(_render_grid(out, rows, methods))
    parts.append(panel_section(out, rows, methods))
    parts.append("</body></html>\n")
    return _write_text(out / REPORT_NAME, "\n".join(parts))


def _write_text(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fobj:
            fobj.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

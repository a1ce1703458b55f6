"""The privacy parts of the evaluation report: every attacker and the strongest one per method, per view and
pooled, detection as realism, and the real-head panel (per-head ranks and renderings).

Only reads saved lines (results.latest keys privacy lines by subject, method, metric, attacker, view) and
the pictures beside them. The strongest attacker of a method at a view is the one with the highest rank-1,
ties broken by verification AUC: what a defender has to assume the adversary achieves.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .evaluate.panel import SPECIAL, is_real
from .evaluate.results import COHORT, GALLERY, ORIGINAL

POOLED = "pooled"
PRIVACY_COLUMNS = (
    ("detect_rate", "face detected"),
    ("detect_rel", "detected vs originals"),
    ("rank1", "rank-1"),
    ("rank5", "rank-5"),
    ("auc", "verification AUC"),
)
STRONGEST = "strongest"
Rows = dict[tuple[str, ...], dict[str, Any]]


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def cell(item: dict[str, Any] | None, *, chance: bool = False) -> str:
    """A table cell: value [CI] (chance)."""
    if item is None:
        return "<td>-</td>"
    text = _fmt(item.get("value"))
    if item.get("ci_low") is not None and item.get("ci_high") is not None:
        text += f" <small>[{_fmt(item['ci_low'])}, {_fmt(item['ci_high'])}]</small>"
    if chance and item.get("chance") is not None:
        text += f" <small class=chance>(chance {_fmt(item['chance'])})</small>"
    return f"<td>{text}</td>"


def attackers_in(rows: Rows) -> list[str]:
    """Attackers in the registry's order first, then any others."""
    from .evaluate.attack import ATTACKERS

    seen = {k[3] for k in rows if len(k) == 5}
    return [a for a in ATTACKERS if a in seen] + sorted(seen - set(ATTACKERS))


def views_in(rows: Rows) -> list[str]:
    from .evaluate.privacy import VIEWS

    seen = {k[4] for k in rows if len(k) == 5 and k[0] == COHORT}
    return [v for v in (POOLED, *VIEWS) if v in seen] + sorted(seen - {POOLED, *VIEWS})


def strongest(rows: Rows, method: str, attackers: list[str], view: str) -> str | None:
    """The attacker with the highest rank-1 (then AUC) on `method` at `view`, or None without results."""

    def score(attacker: str) -> tuple[float, float]:
        r1 = rows.get((COHORT, method, "rank1", attacker, view), {}).get("value")
        auc = rows.get((COHORT, method, "auc", attacker, view), {}).get("value")
        return (-1.0 if r1 is None else r1, -1.0 if auc is None else auc)

    scored = [a for a in attackers if (COHORT, method, "rank1", a, view) in rows]
    return max(scored, key=score) if scored else None


def privacy_table(rows: Rows, methods: list[str], attackers: list[str], view: str) -> str:
    """One row per (method, attacker) and a bold `strongest` row per method."""
    head = "".join(f"<th>{html.escape(name)}</th>" for _, name in PRIVACY_COLUMNS)
    body = []
    for method in methods:
        best = strongest(rows, method, attackers, view)
        if best is None:
            continue
        for i, attacker in enumerate([*attackers, STRONGEST]):
            name = best if attacker == STRONGEST else attacker
            if (COHORT, method, "rank1", name, view) not in rows:
                continue
            cells = "".join(cell(rows.get((COHORT, method, key, name, view)), chance=True)
                            for key, _ in PRIVACY_COLUMNS)
            label = f"<b>strongest: {html.escape(best)}</b>" if attacker == STRONGEST else html.escape(attacker)
            method_th = f"<th>{html.escape(method)}</th>" if i == 0 else "<th></th>"
            body.append(f"<tr>{method_th}<td>{label}</td>{cells}</tr>")
    return f"<table><tr><th>method</th><th>attacker</th>{head}</tr>{''.join(body)}</table>"


def views_table(rows: Rows, methods: list[str], attackers: list[str], views: list[str]) -> str:
    """Rank-1 and AUC of the strongest attacker per method and view."""
    head = "".join(f"<th>{html.escape(v)}: rank-1</th><th>{html.escape(v)}: AUC</th>" for v in views)
    body = []
    for method in methods:
        cells = []
        for view in views:
            best = strongest(rows, method, attackers, view)
            for metric in ("rank1", "auc"):
                item = rows.get((COHORT, method, metric, best, view)) if best else None
                text = cell(item)
                cells.append(text.replace("</td>", f" <small>{html.escape(best)}</small></td>") if best else text)
        if any(c != "<td>-</td>" for c in cells):
            body.append(f"<tr><th>{html.escape(method)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(body)}</table>"


def detection_table(rows: Rows, methods: list[str], attackers: list[str], views: list[str]) -> str:
    """Each detector's face-detection rate on each method relative to its rate on the original probes."""
    head = "".join(f"<th>{html.escape(a)}</th>" for a in attackers)
    body = []
    for folder, name in ((ORIGINAL, "originals: faces found"), (GALLERY, "gallery: faces found")):
        cells = []
        for attacker in attackers:
            found = [f"{v}: {_fmt(item['value'], 2)}" for v in views
                     if v != POOLED and (item := rows.get((COHORT, folder, "detect_rate", attacker, v)))]
            cells.append(f"<td><small>{html.escape(', '.join(found)) or '-'}</small></td>")
        body.append(f"<tr><th>{name}</th>{''.join(cells)}</tr>")
    for method in methods:
        cells = "".join(cell(rows.get((COHORT, method, "detect_rel", a, POOLED))) for a in attackers)
        if cells.count("<td>-</td>") < len(attackers):
            body.append(f"<tr><th>{html.escape(method)}</th>{cells}</tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(body)}</table>"


def privacy_section(rows: Rows, methods: list[str]) -> str:
    attackers = attackers_in(rows)
    views = views_in(rows)
    if not attackers or POOLED not in views:
        return "<h2>Privacy: face-recognition attack</h2><p>No results.</p>"
    parts = [
        "<h2>Privacy: face-recognition attack</h2>",
        f"<p>Attackers: {html.escape(', '.join(attackers))}. Views: {html.escape(', '.join(views[1:]))}; "
        "a probe at a view is matched against the gallery (each subject's other, original session) at the "
        "same view, and <i>pooled</i> pools those trials. Lower is more private; chance is what guessing "
        "achieves. The <b>strongest</b> row is the attacker with the highest rank-1 (then AUC).</p>",
        "<h3>Pooled over views</h3>",
        privacy_table(rows, methods, attackers, POOLED),
        "<h3>Per view (strongest attacker)</h3>",
        views_table(rows, methods, attackers, views),
    ]
    for view in views[1:]:
        parts.append(f"<details><summary>view {html.escape(view)}: every attacker</summary>"
                     f"{privacy_table(rows, methods, attackers, view)}</details>")
    parts += [
        "<h2>Detection as realism</h2>",
        "<p>Face-detection rate of each attacker's detector on the de-identified probes, relative to its rate "
        "on the original probes (pooled over views): a refaced head should keep its face (1.0); a defaced "
        "head may lose it.</p>",
        detection_table(rows, methods, attackers, views),
    ]
    return "\n".join(parts)


def panel_section(out: Path, rows: Rows, methods: list[str]) -> str:
    """Per real head: per method, faces found, the true identity's rank per attacker and view, renderings."""
    heads = sorted({k[0] for k in rows if is_real(k[0])})
    if not heads:
        return ""
    attackers = attackers_in(rows)
    from .evaluate.privacy import VIEWS

    views = [v for v in VIEWS if any(len(k) == 5 and k[4] == v and is_real(k[0]) for k in rows)]
    parts = ["<h2>Real-head panel</h2>",
             "<p>Real heads as a user's scans would look (subjects <code>real-*</code>), de-identified like the "
             "synthetic probes; the gallery photo is a second session of the same head (new pose, bias, noise "
             "and grid) among the synthetic cohort's heads as distractors. Cells give the rank of the true "
             "identity in the gallery (1 = re-identified) or <i>no face</i>.</p>"]
    combos = [(a, v) for a in attackers for v in views]
    head = "".join(f"<th>{html.escape(a)}<br>{html.escape(v)}</th>" for a, v in combos)
    for label in heads:
        name = label.removeprefix("real-")
        parts.append(f"<h3>{html.escape(label)}</h3>")
        if name in SPECIAL:
            parts.append(f"<p class=warn>{html.escape(SPECIAL[name])}</p>")
        body = []
        for method in methods:
            found = [rows.get((label, method, "face_detected", a, v)) for a, v in combos]
            if all(f is None for f in found):
                continue
            n_found = sum(1 for f in found if f is not None and f.get("value"))
            cells = [f"<td>{n_found}/{len(combos)}</td>"]
            for metric in ("brain_identical", "utility_dice"):
                item = rows.get((label, method, metric))
                cells.append(f"<td>{_fmt(item.get('value'))}</td>" if item else "<td>-</td>")
            for attacker, view in combos:
                item = rows.get((label, method, "rank", attacker, view))
                if item is None:
                    cells.append("<td>-</td>")
                elif item.get("value") is None:
                    cells.append("<td><small>no face</small></td>")
                else:
                    cells.append(f"<td>{int(item['value'])}/{item.get('gallery', '?')}</td>")
            body.append(f"<tr><th>{html.escape(method)}</th>{''.join(cells)}</tr>")
        parts.append("<table><tr><th>method</th><th>faces found</th><th>brain bit-identical</th>"
                     f"<th>tissue Dice</th>{head}</tr>{''.join(body)}</table>")
        parts.append(render_table(out, [label], [ORIGINAL, GALLERY, *methods], views, by="view"))
    return "\n".join(parts)


def render_table(out: Path, subjects: list[str], folders: list[str], views: list[str], *, by: str) -> str:
    """Pictures that exist under OUT/renders: rows are subjects (`by='subject'`, views[0]) or views."""
    names = {ORIGINAL: "original", GALLERY: "other session (attacker)"}
    folders = [f for f in folders if (out / "renders" / f).is_dir()]
    keys = [(s, views[0]) for s in subjects] if by == "subject" else [(subjects[0], v) for v in views]
    if not folders or not keys:
        return ""
    head = "".join(f"<th>{html.escape(names.get(f, f))}</th>" for f in folders)
    body = []
    for subject, view in keys:
        cells = []
        for folder in folders:
            rel = Path("renders") / folder / view / f"{subject}.png"
            cells.append(f'<td><img src="{html.escape(rel.as_posix())}" width=160 alt="{html.escape(folder)}">'
                         "</td>" if (out / rel).exists() else "<td>-</td>")
        label = subject if by == "subject" else view
        body.append(f"<tr><th>{html.escape(label)}</th>{''.join(cells)}</tr>")
    first = "subject" if by == "subject" else "view"
    return f"<table><tr><th>{first}</th>{head}</tr>{''.join(body)}</table>"

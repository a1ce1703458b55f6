"""The HTML report is built only from a results file (tests/data/results_fixture.jsonl, made by hand: 4
subjects + the real head real-robex; none/shear/template scored by two attackers (yunet-sface, dlib-resnet) at
three views and pooled, dlib-resnet the stronger on template only; remodel skipped, template's brain not
bit-identical, a torn last line)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from reface.cli import main as cli_main
from reface.errors import RefaceError
from reface.evaluate.harness import RESULTS_NAME, latest, read_results
from reface.report import SCATTER_NAME, build_report, flags

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "results_fixture.jsonl"


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    shutil.copy(FIXTURE, tmp_path / RESULTS_NAME)
    return tmp_path


def _row(html: str, method: str, table_title: str) -> str:
    table = html.split(table_title, 1)[1].split("</table>", 1)[0]
    match = re.search(rf"<tr><th>{method}</th>(.*?)</tr>", table)
    assert match, f"no row for {method} in {table_title}"
    return match.group(1)


def test_reader_keeps_last_line_and_skips_torn_line():
    lines = read_results(FIXTURE)
    assert len(lines) == FIXTURE.read_text().count("\n")  # the unterminated torn line is dropped
    rows = latest(lines)
    # a later line overrides the earlier 0.9; privacy lines are keyed by attacker and view too
    assert rows[("all", "shear", "rank1", "yunet-sface", "pooled")]["value"] == 0.0
    assert rows[("all", "template", "rank1", "dlib-resnet", "front")]["value"] == 0.5
    assert rows[("all", "template", "utility_dice")]["value"] == 0.953


def test_report_tables_from_fixture(out_dir: Path):
    path = build_report(out_dir)
    html = path.read_text()
    privacy = _row(html, "shear", "Privacy")
    assert "0.000" in privacy and "0.900" not in privacy
    assert "(chance 0.250)" in _row(html, "template", "Privacy")  # rank-1 chance = 1 / gallery size
    assert "(chance 0.500)" in _row(html, "none", "Privacy")
    utility = _row(html, "template", "Utility")
    assert "0.953" in utility
    assert "<tr><th>remodel</th>" not in html  # skipped: no row, a warning instead
    assert "remodel: skipped" in html
    assert "template: BRAIN CHANGED" in html and "none: BRAIN CHANGED" not in html
    assert "shear: looks wrong" in html and "template: looks wrong" not in html
    assert "failed on 25% of the original scans" in html
    for sub in ("sub-0001", "sub-0002", "sub-0003", "sub-0004"):
        assert sub not in html  # no renderings saved, so no picture grid


def test_report_scatter_and_render_grid(out_dir: Path):
    from reface.evaluate.render import save_png

    for folder in ("original", "gallery", "shear"):
        for label in ("sub-0001", "real-robex"):
            save_png(out_dir / "renders" / folder / "front" / f"{label}.png", np.full((16, 16, 3), 90, np.uint8))
    save_png(out_dir / "renders" / "shear" / "left30" / "real-robex.png", np.full((16, 16, 3), 90, np.uint8))
    html = build_report(out_dir).read_text()
    scatter = out_dir / SCATTER_NAME
    assert scatter.exists() and scatter.stat().st_size > 1000
    assert SCATTER_NAME in html
    assert 'src="renders/shear/front/sub-0001.png"' in html
    assert 'src="renders/none/front/sub-0001.png"' not in html  # no such picture on disk
    panel = html.split("Real-head panel", 1)[1]
    assert 'src="renders/shear/left30/real-robex.png"' in panel and "sub-0001" not in panel


def test_strongest_attacker_per_method(out_dir: Path):
    html = build_report(out_dir).read_text()
    pooled = html.split("Pooled over views", 1)[1].split("</table>", 1)[0]
    assert pooled.count("strongest: dlib-resnet") == 1 and pooled.count("strongest: yunet-sface") == 2
    template = pooled.split("<tr><th>template</th>", 1)[1]
    assert "<b>strongest: dlib-resnet</b></td><td>1.000" in template and "0.500 <small>[0.250" in template
    views = html.split("Per view (strongest attacker)", 1)[1].split("</table>", 1)[0]
    assert views.count("<th>left30: rank-1</th>") == 1 and views.count("<tr><th>") == 1 + 3
    assert html.count("<details>") == 3  # every attacker at each single view
    realism = html.split("Detection as realism", 1)[1].split("</table>", 1)[0]
    assert "originals: faces found" in realism and "front: 1.00, left30: 0.75" in realism
    assert re.search(r"<tr><th>shear</th><td>0.000", realism)


def test_real_head_panel_table(out_dir: Path):
    html = build_report(out_dir).read_text()
    panel = html.split("Real-head panel", 1)[1]
    table = panel.split("<h3>real-robex</h3>", 1)[1].split("</table>", 1)[0]
    none = re.search(r"<tr><th>none</th>(.*?)</tr>", table).group(1)
    assert none.startswith("<td>6/6</td><td>1.000</td><td>0.970</td><td>1/5</td>")
    shear = re.search(r"<tr><th>shear</th>(.*?)</tr>", table).group(1)
    assert shear.startswith("<td>0/6</td>") and shear.count("no face") == 6
    assert "registration target" not in html  # only pydeface's mean head carries that note
    with open(out_dir / RESULTS_NAME, "a") as fobj:  # after the torn line: a fresh line
        fobj.write('\n{"subject": "real-pydeface-mean", "method": "none", "metric": "rank", "value": 2.0, '
                   '"attacker": "yunet-sface", "view": "front", "gallery": 5}\n')
    assert "registration target" in build_report(out_dir).read_text()


def test_report_only_rebuild_is_identical(out_dir: Path):
    first = build_report(out_dir).read_bytes(), (out_dir / SCATTER_NAME).read_bytes()
    assert cli_main(["evaluate", "--report-only", "--out", str(out_dir), "--quiet"]) == 0
    assert ((out_dir / "report.html").read_bytes(), (out_dir / SCATTER_NAME).read_bytes()) == first


def test_flags_only_for_broken_methods():
    rows = latest(read_results(FIXTURE))
    notes = flags(rows, ["none", "shear", "template", "remodel"])
    assert not [n for n in notes if n.startswith("none:")]
    assert any(n.startswith("template: BRAIN CHANGED") for n in notes)


def test_report_without_results_is_a_user_error(tmp_path: Path):
    with pytest.raises(RefaceError, match="no results"):
        build_report(tmp_path)


def test_cli_report_only(out_dir: Path, capsys):
    assert cli_main(["evaluate", "--report-only", "--out", str(out_dir), "--quiet"]) == 0
    assert (out_dir / "report.html").exists()
    empty = out_dir / "empty"
    empty.mkdir()
    assert cli_main(["evaluate", "--report-only", "--out", str(empty)]) == 2
    assert "no results" in capsys.readouterr().err

"""The HTML report is built only from a results file (tests/data/results_fixture.jsonl, written by hand:
4 subjects; none/shear/template scored, remodel skipped, template's brain not bit-identical, a torn last
line)."""

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
    assert rows[("all", "shear", "rank1")]["value"] == 0.0  # a later line overrides the earlier 0.9


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
        save_png(out_dir / "renders" / folder / "sub-0001.png", np.full((16, 16, 3), 90, np.uint8))
    html = build_report(out_dir).read_text()
    scatter = out_dir / SCATTER_NAME
    assert scatter.exists() and scatter.stat().st_size > 1000
    assert SCATTER_NAME in html
    assert 'src="renders/shear/sub-0001.png"' in html
    assert 'src="renders/none/sub-0001.png"' not in html  # no such picture on disk


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

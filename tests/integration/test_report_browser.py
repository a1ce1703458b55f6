"""report.html opened in a real browser (headless Chromium from Debian): the page renders, every image loads
(naturalWidth > 0, read by a probe script injected into a copy of the page), no console errors.

The report is built from tests/data/results_fixture.jsonl plus tiny PNGs at the paths the fixture's
subjects would have, so the browser has real pictures to decode. Skipped when chromium is not installed
(.ci/run installs it).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from reface.evaluate.privacy import VIEWS, render_path
from reface.evaluate.render import save_png
from reface.evaluate.results import GALLERY, ORIGINAL, RESULTS_NAME
from reface.report import build_report

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "results_fixture.jsonl"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--allow-file-access-from-files"]
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || e.target.src)), true);
window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => ({src: i.getAttribute("src"), w: i.naturalWidth,
                                               done: i.complete}));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({imgs, errors: window.__errors, tables: document.querySelectorAll("table").length,
                                    height: document.body.scrollHeight});
  document.body.appendChild(out);
});
</script>"""

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    shutil.copy(FIXTURE, out / RESULTS_NAME)
    rng = np.random.default_rng(0)
    labels = {json.loads(t)["subject"] for t in FIXTURE.read_text().splitlines() if t.strip().endswith("}")}
    folders = {json.loads(t)["method"] for t in FIXTURE.read_text().splitlines() if t.strip().endswith("}")}
    for label in labels - {"all"}:
        for folder in folders | {GALLERY, ORIGINAL}:
            for view in VIEWS:
                save_png(render_path(out, folder, view, label), rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    return build_report(out)


def test_report_opens_in_chromium_with_images_and_no_errors(report: Path, tmp_path: Path):
    page = report.read_text()
    assert page.count("<img") >= 10
    probe = report.with_name("probe.html")
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    run = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    match = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert match, f"probe did not run; stderr: {run.stderr[-2000:]}"
    state = json.loads(html.unescape(match.group(1)))
    assert state["tables"] >= 5 and state["height"] > 1000
    assert len(state["imgs"]) == page.count("<img")
    broken = [i["src"] for i in state["imgs"] if not (i["done"] and i["w"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    assert state["errors"] == []
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "ERR_FILE_NOT_FOUND" in line]
    assert not console, console


def test_report_screenshot_is_not_blank(report: Path, tmp_path: Path):
    shot = tmp_path / "shot.png"
    run = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri())
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2400, 1280)
    assert image.std() > 10  # text, tables and pictures, not an empty page

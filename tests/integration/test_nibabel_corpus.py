"""nibabel's own test corpus (nibabel/tests/data of the installed nibabel) through `reface run`: every file
ends in exit 0 with the output on the input's grid, or exit 2 with one line and nothing written. Never a
traceback. The table is printed (pytest -s) and is the one in docs/nibabel_corpus.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "nibabel_corpus.py"
spec = importlib.util.spec_from_file_location("nibabel_corpus", SCRIPT)
nibabel_corpus = importlib.util.module_from_spec(spec)
sys.modules["nibabel_corpus"] = nibabel_corpus  # dataclasses look their module up there
spec.loader.exec_module(nibabel_corpus)

FILES = nibabel_corpus.corpus_files()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("nibabel_corpus")
    results = {o.name: o for o in nibabel_corpus.run_all(root)}
    print("\n" + nibabel_corpus.markdown(list(results.values())))
    return results


def test_corpus_is_the_one_the_issue_names():
    names = {p.name for p in FILES}
    assert len(FILES) >= 50
    assert {"test.mgz", "small.mnc", "minc1_1_scale.mnc", "ADC_Map.PAR", "phantom_truncated.PAR",
            "analyze.hdr", "example_nifti2.nii.gz", "scaled+tlrc.HEAD"} <= names


@pytest.mark.parametrize("name", [p.name for p in FILES])
def test_every_file_is_processed_or_refused_in_one_line(outcomes, name):
    o = outcomes[name]
    assert o.code in (0, 2), f"{name}: exit {o.code}: {o.message}"
    if o.code == 2:
        assert o.message.count("\n") == 0 and " / " not in o.message, f"{name}: more than one line: {o.message}"
        assert o.message.startswith("reface run: error: ")
        assert o.written == [], f"{name}: refused but wrote {o.written}"
    else:
        assert o.on_grid, f"{name}: output not on the input grid"
        assert o.written == ["out.nii.gz"]


def test_the_issue_failures_now_say_why(outcomes):
    assert "missing the .REC file" in outcomes["ADC_Map.PAR"].message
    assert "PARRECError" in outcomes["phantom_truncated.PAR"].message
    assert "--volume N" in outcomes["test.mgz"].message  # read (MGZ), then refused for being 4D
    for name in ("small.mnc", "minc2_1_scale.mnc", "minc2_4d.mnc"):  # MINC-2 needs h5py, now a dependency
        assert "h5py" not in outcomes[name].message

"""`reface bids` outputs against the BIDS validator, and scan warnings in the summary and the manifest.

The validator is bids-validator-deno from PyPI (a dev dependency, runs offline). The dataset is one phantom
session (T1w + T2w on another grid), with identifying participants.tsv columns, a participant over 89, a
scans.tsv, and a T2w without a sidecar (the derivative sidecar must still carry SkullStripped).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from reface.batch import run_bids
from reface.batch_manifest import MANIFEST_NAME
from reface.bids_phantom import write_phantom_dataset
from reface.cli import main as cli_main

# Known, tolerated for now: gzip headers that carry the file name / mtime (io.py is being changed to not write them).
TOLERATED = {"GZIP_HEADER_FILENAME", "GZIP_HEADER_MTIME"}


def _validator() -> str | None:
    found = Path(sys.executable).parent / "bids-validator-deno"
    return str(found) if found.exists() else shutil.which("bids-validator-deno")


def validate(root: Path) -> list[dict]:
    """The validator's issues for a dataset (offline; its schema ships inside the executable)."""
    executable = _validator()
    if executable is None:
        pytest.skip("bids-validator-deno is not installed (pip install bids-validator-deno)")
    run = subprocess.run([executable, str(root), "--format", "json"], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip(), run.stderr
    return json.loads(run.stdout)["issues"]["issues"]


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    root = write_phantom_dataset(tmp_path_factory.mktemp("bids") / "ds", subjects=1, sessions=1)
    (root / "participants.tsv").write_text("participant_id\tage\tsex\tname\tbirth_date\nsub-01\t92\tF\tJane Doe\t"
                                           "1932-01-01\n")
    (root / "sub-01/ses-1/anat/sub-01_ses-1_T2w.json").unlink()
    out = root.parent / "out"
    code = cli_main(["bids", str(root), str(out), "participant", "--method", "shear", "--acq-time", "anchor",
                     "--quiet"])
    assert code == 0
    return root, out, validate(out)


def test_output_passes_the_bids_validator(validated):
    _, _, issues = validated
    errors = [i for i in issues if i["severity"] == "error" and i["code"] not in TOLERATED]
    assert errors == [], json.dumps(errors, indent=1)
    warnings = sorted({i["code"] for i in issues if i["severity"] == "warning"})
    assert set(warnings) <= TOLERATED, warnings  # none today: README, Description, SkullStripped, units all set


def test_output_tables_are_scrubbed_and_follow_the_derivative_names(validated):
    root, out, _ = validated
    assert (out / "participants.tsv").read_text() == "participant_id\tage\tsex\nsub-01\t89\tF\n"
    assert set(json.loads((out / "participants.json").read_text())) == {"Description", "participant_id", "age", "sex"}
    assert (out / "sub-01/ses-1/sub-01_ses-1_scans.tsv").read_text() == (
        "filename\tacq_time\nanat/sub-01_ses-1_desc-deid_T1w.nii.gz\t1900-01-01T10:00:00\n"
        "anat/sub-01_ses-1_desc-deid_T2w.nii.gz\t1900-01-01T10:12:30\n")
    t2 = json.loads((out / "sub-01/ses-1/anat/sub-01_ses-1_desc-deid_T2w.json").read_text())
    assert t2["SkullStripped"] is False and "reface" in t2["Description"]
    assert (out / "README").read_bytes() == (root / "README").read_bytes()


def test_vertex_cut_warning_reaches_summary_and_manifest(tmp_path):
    root = write_phantom_dataset(tmp_path / "ds", subjects=1, sessions=1, t2=False)
    anat = root / "sub-01/ses-1/anat"
    mask = anat / "sub-01_ses-1_desc-brain_mask.nii.gz"
    k_top = int(np.argwhere(np.asarray(nib.load(mask).dataobj).any(axis=(0, 1))).max())
    for path in (anat / "sub-01_ses-1_T1w.nii.gz", mask):  # the field of view ends 2 slices (8 mm) below the top
        img = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, : k_top - 2], img.affine, img.header), path)
    summary = run_bids(root, tmp_path / "out", method="none", quiet=True)
    key = "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"
    ((name, text),) = summary.warnings
    assert name == key and "superior face" in text and summary.complete
    assert "1 warning(s)" in summary.format() and f"warning {key}: the field of view cuts" in summary.format()
    (image,) = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["entries"][key]["images"]
    assert image["warnings"] == [text]
    again = run_bids(root, tmp_path / "out", method="none", quiet=True)  # skipped, but still reported
    assert again.done == [] and again.warnings == [(key, text)]

"""BIDS discovery, filters, derivative names and the derivative's dataset_description (no image is read)."""

import json
from pathlib import Path

import pytest

from reface.bids import (
    BidsName,
    Image,
    check_dataset,
    discover,
    inherited_sidecars,
    output_path,
    sidecar_output_path,
    strip_label,
)
from reface.bids_derivative import dataset_description, write_scans_tables
from reface.errors import RefaceError
from reface.sidecar import AcqTimePolicy, make_policy


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    _touch(root, "dataset_description.json",
           "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", "sub-01/ses-1/anat/sub-01_ses-1_T1w.json",
           "sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz", "sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.nii.gz",
           "sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii", "sub-01/ses-1/func/sub-01_ses-1_task-rest_bold.nii.gz",
           "sub-01/ses-2/anat/sub-01_ses-2_run-2_T1w.nii.gz", "sub-01/ses-2/anat/sub-01_ses-2_run-1_T1w.nii.gz",
           "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz",  # no T1w: nothing to build a face from
           "sub-03/anat/sub-03_T1w.nii.gz", "sub-03/anat/sub-03_acq-fast_T2w.nii.gz",
           "derivatives/masks/sub-03/anat/sub-03_desc-brain_mask.nii.gz",
           "T1w.json", "sub-03/sub-03_T2w.json", "participants.json")
    return root


def test_strip_label_accepts_both_forms():
    assert strip_label("sub-01", "sub") == "01" and strip_label("01", "sub") == "01"
    assert strip_label(" ses-pre ", "ses") == "pre" and strip_label("subject", "sub") == "subject"


@pytest.mark.parametrize("name, desc, expected", [
    ("sub-01_ses-1_T1w.nii.gz", "deid", "sub-01_ses-1_desc-deid_T1w.nii.gz"),
    ("sub-01_ses-1_acq-mp2rage_run-2_T1w.nii", "deid", "sub-01_ses-1_acq-mp2rage_run-2_desc-deid_T1w.nii"),
    ("sub-01_desc-old_FLAIR.nii.gz", "new", "sub-01_desc-new_FLAIR.nii.gz"),
    ("sub-01_ses-1_T2w.nii.gz", "", "sub-01_ses-1_T2w.nii.gz"),
])
def test_derivative_names(name, desc, expected):
    parsed = BidsName.parse(name)
    image = Image(path=Path("sub-01/anat") / name, name=parsed)
    assert output_path(image, desc) == Path("sub-01/anat") / expected
    assert sidecar_output_path(image, desc).name == expected.replace(".nii.gz", ".json").replace(".nii", ".json")


def test_parse_rejects_non_bids_names():
    assert BidsName.parse("T1w.nii.gz") is None and BidsName.parse("notes.txt") is None
    assert BidsName.parse("sub-01 ses-1_T1w.nii.gz") is None


def test_discover_groups_sessions_and_picks_the_reference(dataset):
    sessions = discover(dataset)
    assert [(s.subject, s.session) for s in sessions] == [("01", "1"), ("01", "2"), ("03", None)]
    first, second, third = sessions
    assert first.reference.path == Path("sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz")
    assert first.reference.sidecar == Path("sub-01/ses-1/anat/sub-01_ses-1_T1w.json")
    assert sorted(i.name.suffix for i in first.others) == ["FLAIR", "T2w"]  # the mask is not an image
    assert first.brain_mask == Path("sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.nii.gz")
    assert second.reference.name.get("run") == "1" and [i.name.get("run") for i in second.others] == ["2"]
    assert second.brain_mask is None and third.brain_mask is None
    assert first.key == "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"


def test_participant_and_session_filters_with_or_without_prefix(dataset):
    assert [s.subject for s in discover(dataset, participants=["sub-03"])] == ["03"]
    assert [(s.subject, s.session) for s in discover(dataset, participants=["01"], sessions=["ses-2"])] == \
        [("01", "2")]
    with pytest.raises(RefaceError, match="not found.*04"):
        discover(dataset, participants=["01", "sub-04"])
    with pytest.raises(RefaceError, match="no T1w"):
        discover(dataset, participants=["02"])


def test_brain_mask_pattern(dataset):
    pattern = "derivatives/masks/sub-{sub}/anat/{prefix}_desc-brain_mask.nii.gz"
    (session,) = discover(dataset, participants=["03"], mask_pattern=pattern)
    assert session.brain_mask == Path("derivatives/masks/sub-03/anat/sub-03_desc-brain_mask.nii.gz")
    (session,) = discover(dataset, participants=["01"], sessions=["2"], mask_pattern=pattern)
    assert session.brain_mask is None


def test_check_dataset_refuses_outputs_inside_the_input(dataset, tmp_path):
    check_dataset(dataset, tmp_path / "out")
    for inside in (dataset, dataset / "derivatives" / "reface"):
        with pytest.raises(RefaceError, match="inside the input dataset"):
            check_dataset(dataset, inside)
    with pytest.raises(RefaceError, match="contains the input"):
        check_dataset(dataset, tmp_path)
    (tmp_path / "plain").mkdir()
    with pytest.raises(RefaceError, match="not a BIDS dataset"):
        check_dataset(tmp_path / "plain", tmp_path / "elsewhere")
    with pytest.raises(RefaceError, match="not found"):
        check_dataset(tmp_path / "missing", tmp_path / "elsewhere")


def test_dataset_description_has_provenance(tmp_path):
    (tmp_path / "dataset_description.json").write_text(json.dumps(
        {"Name": "Study", "BIDSVersion": "1.8.0", "License": "CC0", "DatasetDOI": "10.1/x"}))
    data = dataset_description(tmp_path, method="shear", seed=7, model=None, version="9.9")
    assert data["DatasetType"] == "derivative" and data["BIDSVersion"] == "1.8.0" and data["License"] == "CC0"
    generated = data["GeneratedBy"][0]
    assert generated["Name"] == "reface" and generated["Version"] == "9.9"
    assert "shear" in generated["Description"] and "seed 7" in generated["Description"]
    assert data["reface"] == {"version": "9.9", "method": "shear", "seed": 7, "model": None}
    assert data["SourceDatasets"] == [{"DOI": "10.1/x"}]


def test_inherited_sidecars(dataset):
    assert inherited_sidecars(dataset) == [Path("T1w.json"), Path("sub-03/sub-03_T2w.json")]


def _scans(root: Path) -> None:
    """scans.tsv for sub-01 (two sessions) and sub-03 (no sessions), with columns to scrub and a func row."""
    (root / "sub-01/ses-1/sub-01_ses-1_scans.tsv").write_text(
        "filename\tacq_time\toperator_name\tquality\n"
        "anat/sub-01_ses-1_T1w.nii.gz\t2024-03-05T10:00:00\tDr Who\tgood\n"
        "anat/sub-01_ses-1_T2w.nii.gz\t2024-03-05T10:12:00\tDr Who\tgood\n"
        "anat/sub-01_ses-1_FLAIR.nii\t2024-03-05T10:20:00\tDr Who\tpoor\n"  # failed: no output
        "func/sub-01_ses-1_task-rest_bold.nii.gz\t2024-03-05T10:30:00\tDr Who\tgood\n")
    (root / "sub-01/ses-1/sub-01_ses-1_scans.json").write_text(json.dumps(
        {"quality": {"Description": "rating"}, "operator_name": {"Description": "who scanned"}}))
    (root / "sub-01/ses-2/sub-01_ses-2_scans.tsv").write_text(
        "filename\tacq_time\nanat/sub-01_ses-2_run-1_T1w.nii.gz\t2024-03-01T09:00:00\n"
        "anat/sub-01_ses-2_run-2_T1w.nii.gz\tn/a\n")
    (root / "sub-03/sub-03_scans.tsv").write_text("filename\tacq_time\nanat/sub-03_T1w.nii.gz\t2023-01-01T08:00:00\n")
    (root / "scans.json").write_text(json.dumps({"acq_time": {"Units": "datetime"}, "operator_name": {}}))


def test_scans_tables_follow_the_outputs(dataset, tmp_path):
    _scans(dataset)
    out = tmp_path / "out"
    _touch(out, "sub-01/ses-1/anat/sub-01_ses-1_desc-deid_T1w.nii.gz",
           "sub-01/ses-1/anat/sub-01_ses-1_desc-deid_T2w.nii.gz",
           "sub-01/ses-2/anat/sub-01_ses-2_run-1_desc-deid_T1w.nii.gz",
           "sub-01/ses-2/anat/sub-01_ses-2_run-2_desc-deid_T1w.nii.gz", "sub-03/anat/sub-03_desc-deid_T1w.nii.gz")
    sessions = discover(dataset)
    written, notes = write_scans_tables(dataset, out, sessions, desc="deid", acq_time=AcqTimePolicy.parse("drop"),
                                        policy=make_policy())
    assert notes == []
    assert [p.as_posix() for p in written] == [
        "sub-01/ses-1/sub-01_ses-1_scans.tsv", "sub-01/ses-1/sub-01_ses-1_scans.json",
        "sub-01/ses-2/sub-01_ses-2_scans.tsv", "sub-03/sub-03_scans.tsv", "scans.json"]
    assert (out / "sub-01/ses-1/sub-01_ses-1_scans.tsv").read_text() == (
        "filename\tquality\nanat/sub-01_ses-1_desc-deid_T1w.nii.gz\tgood\nanat/sub-01_ses-1_desc-deid_T2w.nii.gz\tgood\n")
    assert json.loads((out / "sub-01/ses-1/sub-01_ses-1_scans.json").read_text()) == {
        "quality": {"Description": "rating"}}
    top = json.loads((out / "scans.json").read_text())
    assert set(top) == {"Description"} and "acq_time removed" in top["Description"]
    assert (out / "sub-03/sub-03_scans.tsv").read_text() == "filename\nanat/sub-03_desc-deid_T1w.nii.gz\n"


def test_scans_tables_anchor_each_subject_on_its_first_scan(dataset, tmp_path):
    _scans(dataset)
    out = tmp_path / "out"
    _touch(out, "sub-01/ses-1/anat/sub-01_ses-1_desc-deid_T1w.nii.gz",
           "sub-01/ses-2/anat/sub-01_ses-2_run-2_desc-deid_T1w.nii.gz", "sub-03/anat/sub-03_desc-deid_T1w.nii.gz")
    write_scans_tables(dataset, out, discover(dataset, sessions=["1"]), desc="deid",
                       acq_time=AcqTimePolicy.parse("anchor"), policy=make_policy())
    # sub-01's first scan is in ses-2 (2024-03-01), not selected: ses-1 (2024-03-05) still lands on day 5
    assert (out / "sub-01/ses-1/sub-01_ses-1_scans.tsv").read_text() == (
        "filename\tacq_time\tquality\nanat/sub-01_ses-1_desc-deid_T1w.nii.gz\t1900-01-05T10:00:00\tgood\n")
    assert not (out / "sub-01/ses-2/sub-01_ses-2_scans.tsv").exists()  # not selected
    top = json.loads((out / "scans.json").read_text())
    assert top["acq_time"]["Units"] == "datetime" and "1900-01-01" in top["acq_time"]["Description"]
    write_scans_tables(dataset, out, discover(dataset, participants=["01"], sessions=["2"]), desc="deid",
                       acq_time=AcqTimePolicy.parse("keep"), policy=make_policy())
    assert (out / "sub-01/ses-2/sub-01_ses-2_scans.tsv").read_text() == (
        "filename\tacq_time\nanat/sub-01_ses-2_run-2_desc-deid_T1w.nii.gz\tn/a\n")


def test_scans_tables_say_what_they_could_not_do(dataset, tmp_path):
    _scans(dataset)
    (dataset / "sub-03/sub-03_scans.tsv").write_text("file\tacq_time\nanat/sub-03_T1w.nii.gz\tn/a\n")
    out = tmp_path / "out"
    _touch(out, "sub-01/ses-1/anat/sub-01_ses-1_desc-deid_T1w.nii.gz", "sub-03/anat/sub-03_desc-deid_T1w.nii.gz")
    written, notes = write_scans_tables(dataset, out, discover(dataset), desc="deid",
                                        acq_time=AcqTimePolicy.parse("shift:-3650"), policy=make_policy())
    assert not (out / "sub-03/sub-03_scans.tsv").exists()  # unreadable: left out, never copied
    assert [(f, n.split(":")[0]) for f, n in notes] == [
        ("sub-01/ses-1/sub-01_ses-1_scans.tsv", "1 shifted acq_time value(s) after 1925 (e.g. 2014-03-08T10"),
        ("sub-03/sub-03_scans.tsv", "not written")]
    assert "no filename column" in notes[1][1]

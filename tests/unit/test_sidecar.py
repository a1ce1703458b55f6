"""Sidecar scrubbing: identifying keys go, acquisition parameters stay; user additions and exceptions."""

import json

import pytest

from reface.errors import RefaceError
from reface.sidecar import (
    DEFAULT_SCRUB_FIELDS,
    AcqTimePolicy,
    make_policy,
    scrub_file,
    scrub_participants,
    scrub_participants_table,
    scrub_sidecar,
    shift_acq_times,
)

# Keys as dcm2niix writes them into a BIDS sidecar when run without anonymisation (-ba n), with made-up values.
DCM2NIIX_SIDECAR = {
    "Modality": "MR", "MagneticFieldStrength": 3, "ImagingFrequency": 123.2, "Manufacturer": "Siemens",
    "ManufacturersModelName": "Prisma", "InstitutionName": "Example University Hospital",
    "InstitutionalDepartmentName": "Radiology", "InstitutionAddress": "Main Street 1, Town",
    "DeviceSerialNumber": "66001", "StationName": "AWP66001", "PatientPosition": "HFS",
    "ProcedureStepDescription": "Head^Jane Doe research", "SoftwareVersions": "syngo MR XA30",
    "SeriesDescription": "t1_mprage_sag", "ProtocolName": "t1_mprage_sag", "ImageComments": "seen by Dr Smith",
    "AcquisitionTime": "10:14:07.500000", "AcquisitionDateTime": "2024-03-01T10:14:07", "StudyDate": "20240301",
    "PatientName": "Doe^Jane", "PatientID": "ID0042", "PatientBirthDate": "19700101", "PatientSex": "F",
    "PatientWeight": 61, "AccessionNumber": "A123", "StudyInstanceUID": "1.2.3.4", "SeriesNumber": 3,
    "SliceThickness": 1, "EchoTime": 0.00226, "RepetitionTime": 2.3, "InversionTime": 0.9, "FlipAngle": 8,
    "AcquisitionDuration": 320.5, "AcquisitionNumber": 1, "ConversionSoftware": "dcm2niix",
}
IDENTIFYING = {"InstitutionName", "InstitutionalDepartmentName", "InstitutionAddress", "DeviceSerialNumber",
               "StationName", "ProcedureStepDescription", "ImageComments", "AcquisitionTime",
               "AcquisitionDateTime", "StudyDate", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
               "PatientWeight", "AccessionNumber", "StudyInstanceUID"}


def test_default_policy_removes_identifying_keys_and_keeps_acquisition_parameters():
    clean, removed = scrub_sidecar(DCM2NIIX_SIDECAR, make_policy())
    assert set(removed) == IDENTIFYING
    assert set(clean) == set(DCM2NIIX_SIDECAR) - IDENTIFYING
    for key in ("RepetitionTime", "EchoTime", "InversionTime", "AcquisitionDuration", "FlipAngle"):
        assert clean[key] == DCM2NIIX_SIDECAR[key]  # names with Time/Acquisition that analyses need


def test_no_identifying_value_survives_anywhere_in_the_text():
    clean, _ = scrub_sidecar(DCM2NIIX_SIDECAR, make_policy())
    text = json.dumps(clean)
    for needle in ("Doe", "Smith", "Hospital", "1970", "2024", "66001", "ID0042"):
        assert needle not in text


def test_additions_are_patterns_and_case_insensitive_and_keep_wins():
    policy = make_policy(add=["series*", "protocolname"], keep=["InstitutionName"])
    clean, removed = scrub_sidecar(DCM2NIIX_SIDECAR, policy)
    assert "SeriesDescription" in removed and "SeriesNumber" in removed and "ProtocolName" in removed
    assert clean["InstitutionName"] == "Example University Hospital"
    assert "PatientName" not in clean


def test_nested_objects_and_lists_are_scrubbed():
    data = {"Outer": {"PatientName": "x", "EchoTime": 1}, "List": [{"StudyDate": "1"}, {"FlipAngle": 9}]}
    clean, removed = scrub_sidecar(data, make_policy())
    assert clean == {"Outer": {"EchoTime": 1}, "List": [{}, {"FlipAngle": 9}]}
    assert sorted(removed) == ["List.StudyDate", "Outer.PatientName"]


def test_default_list_is_documented_and_unique():
    assert len(DEFAULT_SCRUB_FIELDS) == len(set(DEFAULT_SCRUB_FIELDS))
    assert "PatientName" in DEFAULT_SCRUB_FIELDS and "RepetitionTime" not in DEFAULT_SCRUB_FIELDS


def test_scrub_file_round_trip_and_bad_json(tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(DCM2NIIX_SIDECAR))
    removed = scrub_file(src, tmp_path / "out" / "x.json", make_policy())
    written = json.loads((tmp_path / "out" / "x.json").read_text())
    assert "PatientName" not in written and written["EchoTime"] == DCM2NIIX_SIDECAR["EchoTime"]
    assert "PatientName" in removed
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RefaceError, match="cannot read JSON"):
        scrub_file(bad, tmp_path / "y.json", make_policy())


def test_scrub_participants_keeps_only_participant_id(tmp_path):
    src = tmp_path / "participants.tsv"
    src.write_text("participant_id\tage\tsex\nsub-01\t34\tF\nsub-02\t51\tM\n")
    dropped = scrub_participants(src, tmp_path / "out.tsv")
    assert dropped == ["age", "sex"]
    assert (tmp_path / "out.tsv").read_text() == "participant_id\nsub-01\nsub-02\n"


def test_cli_lists_the_default_fields_without_positional_arguments(capsys):
    from reface.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bids", "--list-scrub-fields"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.split() == list(DEFAULT_SCRUB_FIELDS)


PARTICIPANTS = ("participant_id\tage\tsex\thandedness\tgroup\tname\tbirth_date\tPatientID\temail\tzip_code\n"
                "sub-01\t34\tF\tR\tcontrol\tJane Doe\t1990-02-03\tID0042\tjane@example.org\t12345\n"
                "sub-02\t92\tM\tL\tpatient\tJohn Roe\t1932-05-06\tID0043\tjohn@example.org\t54321\n"
                "sub-03\tn/a\tn/a\tn/a\tpatient\tn/a\tn/a\tn/a\tn/a\n")  # a short row: padded with n/a


def test_participants_table_goes_through_the_sidecar_list_and_table_names(tmp_path):
    src = tmp_path / "participants.tsv"
    src.write_text(PARTICIPANTS)
    dropped = scrub_participants_table(src, tmp_path / "out.tsv", make_policy())
    assert dropped == ["name", "birth_date", "PatientID", "email", "zip_code"]
    assert (tmp_path / "out.tsv").read_text() == (
        "participant_id\tage\tsex\thandedness\tgroup\n"
        "sub-01\t34\tF\tR\tcontrol\nsub-02\t89\tM\tL\tpatient\nsub-03\tn/a\tn/a\tn/a\tpatient\n")
    # --scrub-field / --keep-field act on columns too; keeping 'age' keeps the exact ages
    dropped = scrub_participants_table(src, tmp_path / "b.tsv", make_policy(add=["group"], keep=["email", "age"]))
    assert dropped == ["group", "name", "birth_date", "PatientID", "zip_code"]
    assert "\t92\t" in (tmp_path / "b.tsv").read_text() and "jane@example.org" in (tmp_path / "b.tsv").read_text()
    assert scrub_participants_table(src, tmp_path / "c.tsv", make_policy(), only_id=True)[0] == "age"
    assert (tmp_path / "c.tsv").read_text() == "participant_id\nsub-01\nsub-02\nsub-03\n"
    src.write_text("age\tsex\n34\tF\n")
    with pytest.raises(RefaceError, match="no participant_id column"):
        scrub_participants_table(src, tmp_path / "d.tsv", make_policy())


@pytest.mark.parametrize("text, mode, days", [("drop", "drop", 0), ("keep", "keep", 0), ("anchor", "anchor", 0),
                                              ("shift:-45000", "shift", -45000), (" shift:7 ", "shift", 7)])
def test_acq_time_policy_parses(text, mode, days):
    policy = AcqTimePolicy.parse(text)
    assert (policy.mode, policy.days) == (mode, days)
    assert AcqTimePolicy.parse(str(policy)) == policy


@pytest.mark.parametrize("text", ["shift", "shift:x", "shift:1.5", "later", "drop:3", ""])
def test_bad_acq_time_policy_is_refused(text):
    with pytest.raises(RefaceError, match="expected drop, keep, anchor or shift:DAYS"):
        AcqTimePolicy.parse(text)


def test_acq_times_shift_dates_and_keep_the_time_of_day():
    values = ["2024-03-01T10:14:07", "2024-03-02T08:00:00.500000", "2024-02-28T23:59:59+01:00", "n/a", "10:14"]
    assert shift_acq_times(values, AcqTimePolicy.parse("shift:-45000")) == [
        "1900-12-17T10:14:07", "1900-12-18T08:00:00.500000", "1900-12-15T23:59:59+01:00", "n/a", "n/a"]
    # anchor: the earliest date becomes 1900-01-01, intervals kept; an unparseable value becomes n/a
    assert shift_acq_times(values, AcqTimePolicy.parse("anchor")) == [
        "1900-01-03T10:14:07", "1900-01-04T08:00:00.500000", "1900-01-01T23:59:59+01:00", "n/a", "n/a"]
    assert shift_acq_times(values, AcqTimePolicy.parse("keep")) == values
    assert shift_acq_times(["n/a"], AcqTimePolicy.parse("anchor")) == ["n/a"]
    with pytest.raises(RefaceError, match="leaves the calendar"):
        shift_acq_times(["0001-01-02T00:00:00"], AcqTimePolicy.parse("shift:-5"))


def test_scrub_file_adds_keys_and_writes_a_sidecar_without_a_source(tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps({"PatientName": "x", "EchoTime": 1}))
    scrub_file(src, tmp_path / "a.json", make_policy(), add={"SkullStripped": False})
    assert json.loads((tmp_path / "a.json").read_text()) == {"EchoTime": 1, "SkullStripped": False}
    scrub_file(None, tmp_path / "b.json", make_policy(), add={"SkullStripped": False})
    assert json.loads((tmp_path / "b.json").read_text()) == {"SkullStripped": False}

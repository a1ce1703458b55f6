"""Sidecar scrubbing: identifying keys go, acquisition parameters stay; user additions and exceptions."""

import json

import pytest

from reface.errors import RefaceError
from reface.sidecar import DEFAULT_SCRUB_FIELDS, make_policy, scrub_file, scrub_participants, scrub_sidecar

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

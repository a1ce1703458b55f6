"""Metadata scrubbing: BIDS JSON sidecars, participants.tsv and scans.tsv.

A de-identified face is worthless if the sidecar still says who, when and where. dcm2niix copies many
DICOM tags into the sidecar; the default list below removes the ones that name or date a person, a visit,
a site or a device, and free-text fields where people type names. Acquisition parameters that analyses
need (RepetitionTime, EchoTime, FlipAngle, Manufacturer, MagneticFieldStrength, ProtocolName, ...) are kept.

Users extend the list (`--scrub-field`, shell-style patterns allowed: 'Patient*') or keep a default field
(`--keep-field`). Matching ignores case. Nested objects are scrubbed recursively.

Tables (participants.tsv) go through the same policy, column by column, plus the column names people use in
tables for the same things (name, birth date, address, record number, ...): a matching column is removed,
with its entry in the JSON that describes the columns. Ages over 89 become 89 (HIPAA; BIDS
recommends it). scans.tsv acq_time is dropped, kept or shifted by a fixed number of days (`AcqTimePolicy`).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from .errors import RefaceError

# Who: the person and the staff.
_PERSON = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge",
    "PatientWeight", "PatientSize", "PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs",
    "OtherPatientNames", "PatientMotherBirthName", "EthnicGroup", "MilitaryRank", "PatientInsurancePlanCodeSequence",
    "ReferringPhysicianName", "PerformingPhysicianName", "PhysiciansOfRecord", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "RequestingPhysician", "ResponsiblePerson",
)
# When: dates and clock times of the visit (never RepetitionTime, EchoTime, InversionTime, ...).
_WHEN = (
    "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "StudyDate", "StudyTime", "SeriesDate",
    "SeriesTime", "ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "DateOfLastCalibration",
    "TimeOfLastCalibration", "AcquisitionStartTime",
)
# Where / with what: site and device identity, and identifiers that link back to the PACS.
_WHERE = (
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "AccessionNumber", "StudyID", "StudyInstanceUID", "SeriesInstanceUID",
    "SOPInstanceUID", "FrameOfReferenceUID", "ReferencedStudySequence", "RequestAttributesSequence",
)
# Free text where operators type names, dates or clinical notes.
_FREE_TEXT = (
    "ImageComments", "PatientComments", "StudyComments", "StudyDescription", "AdditionalPatientHistory",
    "RequestedProcedureDescription", "PerformedProcedureStepDescription", "ProcedureStepDescription",
    "ReasonForStudy", "TextComments",
)

DEFAULT_SCRUB_FIELDS: tuple[str, ...] = _PERSON + _WHEN + _WHERE + _FREE_TEXT

# Column names in participants.tsv / scans.tsv that hold the same kind of thing as the sidecar list: the
# lower-case, underscore names people type in spreadsheets. age, sex, handedness, group stay (analyses need them).
TABLE_SCRUB_COLUMNS: tuple[str, ...] = (
    "name", "*_name", "*name_*", "firstname", "lastname", "surname", "initials", "mrn", "patient_id",
    "patient_number", "subject_id", "original_id", "source_id", "hospital_id", "record_id", "study_id",
    "*record_number*", "ssn", "*social_security*", "*birth*", "dob", "*_date", "date", "date_*", "*_datetime",
    "*address*", "street", "city", "zip", "zip_code", "zipcode", "postcode", "postal*", "phone*", "*_phone",
    "telephone*", "email*", "*_email", "e-mail", "*comment*", "notes", "*_notes", "institution*", "site_name",
    "scanner_serial*", "*serial_number*", "accession*", "referring*", "physician*", "operator*",
)
MAX_AGE = 89  # HIPAA: ages over 89 identify; BIDS top-codes them at 89


@dataclass(frozen=True)
class ScrubPolicy:
    """Which sidecar keys to drop: default fields plus additions, minus those the user keeps."""

    scrub: tuple[str, ...] = DEFAULT_SCRUB_FIELDS
    keep: tuple[str, ...] = field(default=())

    def drops(self, key: str) -> bool:
        folded = key.casefold()
        if any(fnmatchcase(folded, pattern.casefold()) for pattern in self.keep):
            return False
        return any(fnmatchcase(folded, pattern.casefold()) for pattern in self.scrub)


def make_policy(add: Iterable[str] = (), keep: Iterable[str] = ()) -> ScrubPolicy:
    """The default policy with user additions (`--scrub-field`) and exceptions (`--keep-field`)."""
    extra = tuple(dict.fromkeys(a for a in add if a))
    return ScrubPolicy(scrub=DEFAULT_SCRUB_FIELDS + extra, keep=tuple(k for k in keep if k))


def scrub_sidecar(data: dict[str, Any], policy: ScrubPolicy) -> tuple[dict[str, Any], list[str]]:
    """A scrubbed copy of a sidecar dict and the (dotted) keys that were removed."""
    removed: list[str] = []

    def walk(node: Any, prefix: str) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if policy.drops(str(key)):
                    removed.append(prefix + str(key))
                    continue
                out[key] = walk(value, f"{prefix}{key}.")
            return out
        if isinstance(node, list):
            return [walk(item, prefix) for item in node]
        return node

    return walk(data, ""), removed


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fobj:
            fobj.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (indented, trailing newline)."""
    _atomic_text(Path(path), json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json_object(src: str | os.PathLike) -> dict[str, Any]:
    """A JSON sidecar's object, or one RefaceError line saying why it cannot be read."""
    src = Path(src)
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RefaceError(f"cannot read JSON sidecar {src} ({type(error).__name__}: {error})") from error
    if not isinstance(data, dict):
        raise RefaceError(f"JSON sidecar {src} is not an object")
    return data


def scrub_file(src: str | os.PathLike | None, dst: str | os.PathLike, policy: ScrubPolicy,
               add: dict[str, Any] | None = None) -> list[str]:
    """Read a JSON sidecar (None: an empty one), write its scrubbed copy plus `add`; returns the removed keys."""
    data = read_json_object(src) if src is not None else {}
    clean, removed = scrub_sidecar(data, policy)
    write_json(dst, {**clean, **(add or {})})
    return removed


def read_tsv(src: str | os.PathLike, required: str) -> list[list[str]]:
    """The rows of a BIDS TSV file (header first); refuses one without the `required` column."""
    src = Path(src)
    try:
        with src.open(encoding="utf-8-sig", newline="") as fobj:
            rows = [row for row in csv.reader(fobj, delimiter="\t", quoting=csv.QUOTE_NONE) if row]
    except (OSError, UnicodeDecodeError) as error:
        raise RefaceError(f"cannot read {src} ({type(error).__name__}: {error})") from error
    if not rows or required not in rows[0]:
        raise RefaceError(f"{src} has no {required} column")
    width = len(rows[0])
    return [rows[0]] + [(row + ["n/a"] * width)[:width] for row in rows[1:]]


def write_tsv(dst: str | os.PathLike, rows: list[list[str]]) -> None:
    """Write a BIDS TSV atomically (tab separated, LF line ends, trailing newline)."""
    _atomic_text(Path(dst), "\n".join("\t".join(row) for row in rows) + "\n")


def select_columns(rows: list[list[str]], keep: Iterable[str]) -> list[list[str]]:
    """The rows with only the `keep` columns, in their original order."""
    wanted = [i for i, name in enumerate(rows[0]) if name in set(keep)]
    return [[row[i] for i in wanted] for row in rows]


def table_drops(column: str, policy: ScrubPolicy, protected: Iterable[str] = ()) -> bool:
    """A column goes when the sidecar policy drops it or it has a spreadsheet name for the same thing."""
    if column in set(protected):
        return False
    folded = column.casefold()
    if any(fnmatchcase(folded, pattern.casefold()) for pattern in policy.keep):
        return False
    return policy.drops(column) or any(fnmatchcase(folded, pattern) for pattern in TABLE_SCRUB_COLUMNS)


def cap_age(value: str) -> str:
    """'92' -> '89' (HIPAA; BIDS top-codes ages at 89, its older '89+' is deprecated)."""
    try:
        return str(MAX_AGE) if float(value) > MAX_AGE else value
    except ValueError:
        return value


def scrub_participants_table(src: str | os.PathLike, dst: str | os.PathLike, policy: ScrubPolicy, *,
                             only_id: bool = False) -> list[str]:
    """Write participants.tsv without identifying columns (or with participant_id only); ages capped at 89.

    Returns the dropped column names, so that participants.json can lose their descriptions too."""
    rows = read_tsv(src, "participant_id")
    header = rows[0]
    if only_id:
        kept = ["participant_id"]
    else:
        kept = [name for name in header if not table_drops(name, policy, protected=("participant_id",))]
    rows = select_columns(rows, kept)
    if "age" in rows[0] and not any(fnmatchcase("age", k.casefold()) for k in policy.keep):
        col = rows[0].index("age")
        for row in rows[1:]:
            row[col] = cap_age(row[col])
    write_tsv(dst, rows)
    return [name for name in header if name not in kept]


def scrub_participants(src: str | os.PathLike, dst: str | os.PathLike,
                       keep: Iterable[str] = ("participant_id",)) -> list[str]:
    """Copy participants.tsv keeping only the `keep` columns; returns the dropped column names."""
    rows = read_tsv(src, "participant_id")
    write_tsv(dst, select_columns(rows, keep))
    return [name for name in rows[0] if name not in set(keep)]


def drop_json_keys(src: str | os.PathLike, dst: str | os.PathLike, keys: Iterable[str]) -> None:
    """Copy a column-description JSON (participants.json, scans.json) without the dropped columns' entries."""
    data = read_json_object(src)
    gone = set(keys)
    write_json(dst, {k: v for k, v in data.items() if k not in gone})


# --- scans.tsv acq_time ---------------------------------------------------------------------------------------

ACQ_TIME_MODES = ("drop", "keep", "shift:DAYS", "anchor")
ANCHOR_DATE = dt.date(1900, 1, 1)  # BIDS: shifted dates SHOULD be in 1925 or earlier, so they read as shifted
_DATETIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(T.*)?$")


@dataclass(frozen=True)
class AcqTimePolicy:
    """What happens to scans.tsv acq_time: dropped (default), kept, shifted by a fixed number of days across
    the dataset (`shift:DAYS`, the user keeps DAYS secret), or shifted per subject so that the subject's first
    scan falls on 1900-01-01 (`anchor`: intervals within a subject survive, calendar dates do not)."""

    mode: str = "drop"
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> AcqTimePolicy:
        mode, _, value = text.strip().partition(":")
        if mode in ("drop", "keep", "anchor") and not value:
            return cls(mode=mode)
        if mode == "shift":
            try:
                return cls(mode="shift", days=int(value))
            except ValueError:
                pass
        raise RefaceError(f"--acq-time {text!r}: expected drop, keep, anchor or shift:DAYS (e.g. shift:-36500)")

    def __str__(self) -> str:
        return f"shift:{self.days}" if self.mode == "shift" else self.mode


def _parse_date(value: str) -> tuple[dt.date, str] | None:
    match = _DATETIME.match(value.strip())
    if not match:
        return None
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3])), match[4] or ""
    except ValueError:
        return None


def shift_acq_times(values: list[str], policy: AcqTimePolicy) -> list[str]:
    """The acq_time values of one subject under `policy` (drop is handled by removing the column).

    The time of day is kept; a value that is not a BIDS date-time becomes n/a (it cannot be shifted safely)."""
    if policy.mode == "keep":
        return list(values)
    parsed = [_parse_date(v) for v in values]
    if policy.mode == "anchor":
        dates = [p[0] for p in parsed if p is not None]
        offset = (ANCHOR_DATE - min(dates)) if dates else dt.timedelta(0)
    else:
        offset = dt.timedelta(days=policy.days)
    out = []
    for value, item in zip(values, parsed, strict=True):
        if item is None:
            out.append(value if value.strip() == "n/a" else "n/a")
            continue
        try:
            out.append((item[0] + offset).isoformat() + item[1])
        except OverflowError:
            raise RefaceError(f"--acq-time {policy}: {value} shifted leaves the calendar") from None
    return out

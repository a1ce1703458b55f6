"""Metadata scrubbing: BIDS JSON sidecars and participants.tsv.

A de-identified face is worthless if the sidecar still says who, when and where. dcm2niix copies many
DICOM tags into the sidecar; the default list below removes the ones that name or date a person, a visit,
a site or a device, and free-text fields where people type names. Acquisition parameters that analyses
need (RepetitionTime, EchoTime, FlipAngle, Manufacturer, MagneticFieldStrength, ProtocolName, ...) are kept.

Users extend the list (`--scrub-field`, shell-style patterns allowed: 'Patient*') or keep a default field
(`--keep-field`). Matching ignores case. Nested objects are scrubbed recursively.
"""

from __future__ import annotations

import csv
import json
import os
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


def scrub_file(src: str | os.PathLike, dst: str | os.PathLike, policy: ScrubPolicy) -> list[str]:
    """Read a JSON sidecar, write its scrubbed copy; returns the removed keys."""
    src = Path(src)
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RefaceError(f"cannot read JSON sidecar {src} ({type(error).__name__}: {error})") from error
    if not isinstance(data, dict):
        raise RefaceError(f"JSON sidecar {src} is not an object")
    clean, removed = scrub_sidecar(data, policy)
    write_json(dst, clean)
    return removed


def scrub_participants(src: str | os.PathLike, dst: str | os.PathLike,
                       keep: Iterable[str] = ("participant_id",)) -> list[str]:
    """Copy participants.tsv keeping only the `keep` columns; returns the dropped column names."""
    src = Path(src)
    with src.open(encoding="utf-8", newline="") as fobj:
        rows = list(csv.reader(fobj, delimiter="\t"))
    if not rows or "participant_id" not in rows[0]:
        raise RefaceError(f"{src} has no participant_id column")
    header = rows[0]
    wanted = [i for i, name in enumerate(header) if name in set(keep)]
    dropped = [name for i, name in enumerate(header) if i not in wanted]
    lines = ["\t".join(row[i] if i < len(row) else "n/a" for i in wanted) for row in rows if row]
    _atomic_text(Path(dst), "\n".join(lines) + "\n")
    return dropped

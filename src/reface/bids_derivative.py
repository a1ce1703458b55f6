"""The writing side of a BIDS derivative: the keys a derivative sidecar needs, dataset_description.json with
provenance, and the scans.tsv / scans.json files that follow the outputs.

Apart from bids.py, which reads the input's layout and names the outputs: this is the metadata written about
them. scans.tsv rows name the derivative files, rows of files not written are left out, acq_time is
dropped / kept / shifted (sidecar.AcqTimePolicy) and identifying columns are removed.
"""

from __future__ import annotations

from pathlib import Path

from .bids import Session, output_path
from .errors import RefaceError


def derivative_keys(*, method: str, desc: str) -> dict:
    """The keys BIDS derivatives ask of an anatomical image's sidecar: SkullStripped (required) and a
    Description (recommended for every derivative file, with or without a desc entity)."""
    label = f" (desc-{desc})" if desc else ""
    return {"SkullStripped": False,  # the brain and the rest of the head stay; only the face changed
            "Description": f"de-identified with reface, method {method}{label}: the face is replaced, the brain "
                           f"and a margin around it are bit-identical to the source image"}


def dataset_description(bids_dir: Path, *, method: str, seed: int, model: dict | None,
                        version: str) -> dict:
    """The derivative's dataset_description.json, with provenance (tool, version, method, model, seed)."""
    import json

    source = {}
    with_source = bids_dir / "dataset_description.json"
    if with_source.exists():
        try:
            source = json.loads(with_source.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            source = {}
    description = f"de-identified with reface {version}: method {method}, seed {seed}"
    if model:
        description += f", model {model.get('name')} (sha256 {str(model.get('sha256'))[:12]})"
    generated = {"Name": "reface", "Version": version, "Description": description,
                 "CodeURL": "https://pypi.org/project/reface/"}
    data = {
        "Name": f"{source.get('Name', 'dataset')} (de-identified)",
        "BIDSVersion": source.get("BIDSVersion", "1.9.0"),
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "reface": {"version": version, "method": method, "seed": seed, "model": model},
    }
    if "DatasetDOI" in source:
        data["SourceDatasets"] = [{"DOI": source["DatasetDOI"]}]
    for key in ("License", "Authors", "Acknowledgements", "HowToAcknowledge", "Funding", "EthicsApprovals"):
        if key in source:
            data[key] = source[key]
    return data


# --- scans.tsv ------------------------------------------------------------------------------------------------

def scans_tsv_path(subject: str, session: str | None) -> Path:
    """Relative path of a session's scans file: sub-01/ses-1/sub-01_ses-1_scans.tsv (or sub-01/sub-01_scans.tsv)."""
    if session is None:
        return Path(f"sub-{subject}") / f"sub-{subject}_scans.tsv"
    return Path(f"sub-{subject}") / f"ses-{session}" / f"sub-{subject}_ses-{session}_scans.tsv"


def _subject_acq_times(root: Path, subject: str) -> list[str]:
    """Every acq_time of a subject, all sessions (the anchor of `--acq-time anchor` is the subject's first)."""
    from .sidecar import read_tsv

    values = []
    for path in sorted((root / f"sub-{subject}").glob("**/*_scans.tsv")):
        try:
            rows = read_tsv(path, "filename")
        except RefaceError:
            continue
        if "acq_time" in rows[0]:
            col = rows[0].index("acq_time")
            values += [row[col] for row in rows[1:]]
    return values


_ACQ_TIME_TEXT = {
    "drop": "removed (reface --acq-time drop)",
    "keep": "as in the source dataset (reface --acq-time keep)",
    "shift": "shifted by a fixed, undisclosed number of days for the whole dataset; time of day kept "
             "(reface --acq-time shift)",
    "anchor": "shifted per subject so that the subject's first scan falls on 1900-01-01; intervals and time "
              "of day kept (reface --acq-time anchor)",
}


def _scans_table(bids_dir: Path, output_dir: Path, session: Session, *, desc: str, acq_time, policy,
                 notes: list[tuple[str, str]]) -> list[Path]:
    """One session's scans.tsv (and its own scans.json, if any); returns the files written."""
    from .sidecar import drop_json_keys, read_tsv, shift_acq_times, table_drops, write_tsv

    rel = scans_tsv_path(session.subject, session.session)
    if not (bids_dir / rel).exists():
        return []
    rows = read_tsv(bids_dir / rel, "filename")
    header = rows[0]
    name_col = header.index("filename")
    kept = [i for i, name in enumerate(header) if not table_drops(name, policy, protected=("filename", "acq_time"))]
    if acq_time.mode == "drop":
        kept = [i for i in kept if header[i] != "acq_time"]
    renames = {image.path.relative_to(rel.parent).as_posix(): output_path(image, desc) for image in session.images}
    body = []
    for row in rows[1:]:
        target = renames.get(row[name_col])
        if target is None or not (output_dir / target).exists():
            continue  # not an image reface writes (func, dwi, ...), or it failed: no file to describe
        body.append([target.relative_to(rel.parent).as_posix() if i == name_col else row[i]
                     for i in range(len(header))])
    if not body:
        return []  # nothing of this session was written (yet): no scans file to describe it
    if "acq_time" in [header[i] for i in kept]:
        col = header.index("acq_time")
        values = [row[col] for row in body]
        if acq_time.mode == "anchor":  # the subject's first scan, over all its sessions, is the anchor
            shifted = shift_acq_times(_subject_acq_times(bids_dir, session.subject) + values, acq_time)[-len(body):]
        else:
            shifted = shift_acq_times(values, acq_time)
        for row, value in zip(body, shifted, strict=True):
            row[col] = value
        late = [v for v in shifted if acq_time.mode == "shift" and v[:4].isdigit() and int(v[:4]) > 1925]
        if late:
            notes.append((rel.as_posix(), f"{len(late)} shifted acq_time value(s) after 1925 (e.g. {late[0]}); "
                                          "BIDS recommends shifted dates in 1925 or earlier, use a larger shift"))
    write_tsv(output_dir / rel, [[row[i] for i in kept] for row in [header] + body])
    written = [rel]
    sidecar = bids_dir / rel.with_suffix(".json")
    if sidecar.exists():
        dropped = [name for i, name in enumerate(header) if i not in kept]
        drop_json_keys(sidecar, output_dir / rel.with_suffix(".json"), dropped)
        written.append(rel.with_suffix(".json"))
    return written


def write_scans_tables(bids_dir: Path, output_dir: Path, sessions: list[Session], *, desc: str, acq_time,
                       policy) -> tuple[list[Path], list[tuple[str, str]]]:
    """De-identified scans.tsv (and scans.json) for each session: the files written, and (file, note) pairs
    for the end-of-run summary (a scans file that cannot be read is left out, never copied as it is).

    A row survives when its file has an output now: its filename becomes the derivative name. `acq_time`
    (a sidecar.AcqTimePolicy) drops, keeps or shifts the column; other columns go through the scrub policy."""
    from .sidecar import read_json_object, table_drops, write_json

    written: list[Path] = []
    notes: list[tuple[str, str]] = []
    for session in sessions:
        try:
            written += _scans_table(bids_dir, output_dir, session, desc=desc, acq_time=acq_time, policy=policy,
                                    notes=notes)
        except RefaceError as error:
            notes.append((scans_tsv_path(session.subject, session.session).as_posix(), f"not written: {error}"))
    if written:  # the inherited description of every scans.tsv: what reface did to them (BIDS derivatives)
        try:
            top = read_json_object(bids_dir / "scans.json") if (bids_dir / "scans.json").exists() else {}
        except RefaceError as error:
            notes.append(("scans.json", f"not copied: {error}"))
            top = {}
        gone = {c for c in top if c != "filename" and (c == "acq_time" and acq_time.mode == "drop"
                                                       or table_drops(c, policy, protected=("acq_time",)))}
        data = {k: v for k, v in top.items() if k not in gone}
        data["Description"] = ("scans of the source dataset that reface de-identified, under their derivative "
                               "names; acq_time " + _ACQ_TIME_TEXT[acq_time.mode])
        if acq_time.mode != "drop":
            entry = data.get("acq_time") if isinstance(data.get("acq_time"), dict) else {}
            data["acq_time"] = {**entry, "Description": "acquisition time, " + _ACQ_TIME_TEXT[acq_time.mode]}
        write_json(output_dir / "scans.json", data)
        written.append(Path("scans.json"))
    return written, notes

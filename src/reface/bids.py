"""BIDS discovery and naming: which anatomical images belong to which session, and where outputs go.

One job per session: its T1w is the reference that gets a new face; every other anatomical image of the
session (T2w, FLAIR, a second T1w run, ...) receives that same face after rigid registration (multicontrast.py).
Output names follow BIDS derivatives: the input's entities, `desc-<label>` before the suffix, same folders.
scans.tsv files follow the outputs: rows name the derivative files, rows of files not written are left out,
acq_time is dropped / kept / shifted (sidecar.AcqTimePolicy) and identifying columns are removed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RefaceError

ANAT_SUFFIXES = ("T1w", "T2w", "FLAIR", "PDw", "T2starw", "PD", "inplaneT1", "inplaneT2", "angio")
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
DEFAULT_DESC = "deid"
# Where a brain mask on the T1w grid is looked for when none is given: beside the T1w (the synthetic
# cohort writes it there) as <entities>_desc-brain_mask.nii[.gz].
MASK_SUFFIX = "desc-brain_mask"
_ENTITY = re.compile(r"^[a-zA-Z0-9]+-[a-zA-Z0-9]+$")


@dataclass(frozen=True)
class BidsName:
    """A BIDS file name split into entities, suffix and extension."""

    entities: tuple[tuple[str, str], ...]
    suffix: str
    extension: str

    @classmethod
    def parse(cls, name: str) -> BidsName | None:
        extension = next((e for e in NIFTI_EXTENSIONS + (".json",) if name.endswith(e)), None)
        if extension is None:
            return None
        parts = name[: -len(extension)].split("_")
        if len(parts) < 2 or not all(_ENTITY.match(p) for p in parts[:-1]):
            return None
        entities = tuple(tuple(p.split("-", 1)) for p in parts[:-1])
        return cls(entities=entities, suffix=parts[-1], extension=extension)

    def get(self, key: str) -> str | None:
        return dict(self.entities).get(key)

    @property
    def prefix(self) -> str:
        """The entity part, e.g. 'sub-01_ses-1_run-2'."""
        return "_".join(f"{k}-{v}" for k, v in self.entities)

    def with_desc(self, desc: str) -> BidsName:
        """The derivative name: desc-<desc> inserted (or replaced) just before the suffix."""
        entities = tuple((k, v) for k, v in self.entities if k != "desc")
        if desc:
            entities = entities + (("desc", desc),)
        return BidsName(entities=entities, suffix=self.suffix, extension=self.extension)

    def with_extension(self, extension: str) -> BidsName:
        return BidsName(entities=self.entities, suffix=self.suffix, extension=extension)

    def __str__(self) -> str:
        return f"{self.prefix}_{self.suffix}{self.extension}"


@dataclass
class Image:
    """One anatomical image of a session: its path (relative to the dataset root) and sidecar."""

    path: Path  # relative to the BIDS root
    name: BidsName
    sidecar: Path | None = None  # relative; the JSON beside the image, if any


@dataclass
class Session:
    """The unit of work: one T1w reference image and the other anatomical images of the same session."""

    subject: str
    session: str | None
    reference: Image
    others: list[Image] = field(default_factory=list)
    brain_mask: Path | None = None  # relative; None -> automatic mask (deepbet)

    @property
    def key(self) -> str:
        """Stable identifier used in the manifest, e.g. 'sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz'."""
        return self.reference.path.as_posix()

    @property
    def images(self) -> list[Image]:
        return [self.reference, *self.others]


def strip_label(label: str, prefix: str) -> str:
    """BIDS-App convention: '01' and 'sub-01' mean the same participant."""
    label = label.strip()
    return label[len(prefix) + 1:] if label.startswith(prefix + "-") else label


def check_dataset(bids_dir: Path, output_dir: Path) -> None:
    """Refuse a folder that is not a BIDS dataset, and any output inside the input dataset."""
    if not bids_dir.is_dir():
        raise RefaceError(f"BIDS folder not found: {bids_dir}")
    if not (bids_dir / "dataset_description.json").exists():
        raise RefaceError(f"{bids_dir} is not a BIDS dataset (no dataset_description.json)")
    src, dst = bids_dir.resolve(), output_dir.resolve()
    if dst == src or src in dst.parents:
        message = f"output folder {output_dir} is inside the input dataset {bids_dir}; choose a folder outside it"
        raise RefaceError(message)
    if dst in src.parents:
        raise RefaceError(f"output folder {output_dir} contains the input dataset {bids_dir}")


def _anat_images(folder: Path, root: Path) -> list[Image]:
    images = []
    for path in sorted(folder.iterdir()):
        name = BidsName.parse(path.name)
        if name is None or name.extension == ".json" or name.suffix not in ANAT_SUFFIXES:
            continue
        if name.get("desc") is not None:  # a derivative left in the raw tree (e.g. a mask), not an input
            continue
        sidecar = path.with_name(str(name.with_extension(".json")))
        images.append(Image(path=path.relative_to(root), name=name,
                            sidecar=sidecar.relative_to(root) if sidecar.exists() else None))
    return images


def _reference_order(image: Image) -> tuple:
    # The T1w without acq/run entities first, then by run number, then by name.
    run = image.name.get("run")
    return (image.name.suffix != "T1w", len(image.name.entities), int(run) if run and run.isdigit() else 0,
            str(image.path))


def find_brain_mask(root: Path, reference: Image, pattern: str | None = None) -> Path | None:
    """The T1w brain mask: `pattern` (relative glob with {sub} {ses} {prefix} {dir}) or the one beside it."""
    sub, ses = reference.name.get("sub"), reference.name.get("ses") or ""
    if pattern:
        glob = pattern.format(sub=sub, ses=ses, prefix=reference.name.prefix,
                              dir=reference.path.parent.as_posix())
        matches = sorted(root.glob(glob))
        if len(matches) > 1:
            raise RefaceError(f"brain mask pattern {glob!r} matches {len(matches)} files for {reference.path}")
        return matches[0].relative_to(root) if matches else None
    for extension in NIFTI_EXTENSIONS:
        candidate = reference.path.parent / f"{reference.name.prefix}_{MASK_SUFFIX}{extension}"
        if (root / candidate).exists():
            return candidate
    return None


def discover(bids_dir: str | os.PathLike, *, participants: list[str] | None = None,
             sessions: list[str] | None = None, mask_pattern: str | None = None) -> list[Session]:
    """Every session with a T1w, optionally restricted to some participants / sessions."""
    root = Path(bids_dir)
    wanted_sub = {strip_label(p, "sub") for p in participants} if participants else None
    wanted_ses = {strip_label(s, "ses") for s in sessions} if sessions else None
    subjects = sorted(p for p in root.glob("sub-*") if p.is_dir())
    found = {p.name[4:] for p in subjects}
    if wanted_sub is not None and not wanted_sub <= found:
        missing = ", ".join(sorted(wanted_sub - found))
        raise RefaceError(f"participant(s) not found in {root}: {missing}")
    result: list[Session] = []
    for subject_dir in subjects:
        subject = subject_dir.name[4:]
        if wanted_sub is not None and subject not in wanted_sub:
            continue
        session_dirs = sorted(p for p in subject_dir.glob("ses-*") if p.is_dir()) or [subject_dir]
        for session_dir in session_dirs:
            session = session_dir.name[4:] if session_dir.name.startswith("ses-") else None
            if wanted_ses is not None and session not in wanted_ses:
                continue
            anat = session_dir / "anat"
            images = _anat_images(anat, root) if anat.is_dir() else []
            t1 = sorted((i for i in images if i.name.suffix == "T1w"), key=_reference_order)
            if not t1:
                continue  # no reference to build a face from; nothing to de-identify here
            reference = t1[0]
            others = [i for i in images if i is not reference]
            result.append(Session(subject=subject, session=session, reference=reference, others=others,
                                  brain_mask=find_brain_mask(root, reference, mask_pattern)))
    if not result:
        raise RefaceError(f"no T1w images found in {root} for the selected participants / sessions")
    return result


def output_path(image: Image, desc: str = DEFAULT_DESC) -> Path:
    """Relative output path of an image: same folders, derivative name."""
    return image.path.parent / str(image.name.with_desc(desc))


def sidecar_output_path(image: Image, desc: str = DEFAULT_DESC) -> Path:
    return image.path.parent / str(image.name.with_desc(desc).with_extension(".json"))


def derivative_keys(*, method: str, desc: str) -> dict:
    """The keys BIDS derivatives ask of an anatomical image's sidecar: SkullStripped (required) and a
    Description (recommended for every derivative file, with or without a desc entity)."""
    label = f" (desc-{desc})" if desc else ""
    return {"SkullStripped": False,  # the brain and the rest of the head stay; only the face changed
            "Description": f"de-identified with reface, method {method}{label}: the face is replaced, the brain "
                           f"and a margin around it are bit-identical to the source image"}


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


# --- a tiny phantom dataset, for tests and the throughput benchmark -------------------------------------------

_T2_OF_T1 = {0.0: 0.0, 600.0: 350.0, 150.0: 60.0, 250.0: 1000.0, 550.0: 650.0, 800.0: 450.0, 300.0: 900.0}


def _t2_phantom(shape, zooms, *, axcodes: str, rotate_deg: float, shift_mm, seed: int):
    """A T2-like phantom head on its own grid, the head rigidly moved relative to the T1w phantom."""
    import nibabel as nib
    import numpy as np

    from .phantom import phantom_image, phantom_world

    template, _ = phantom_image(shape, zooms, axcodes=axcodes, seed=seed, noise=0.0)
    affine = template.affine
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    theta = np.deg2rad(rotate_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    moved = (xyz - np.asarray(shift_mm, float)) @ rot  # world point -> where the T1w head would be
    t1_values, brain = phantom_world(moved, seed=seed)
    t2 = np.zeros_like(t1_values)
    for t1_value, t2_value in _T2_OF_T1.items():
        t2[t1_values == t1_value] = t2_value
    rng = np.random.default_rng(seed + 7)
    t2 = np.abs(t2 + 10 * rng.standard_normal(t2.shape) + 10j * rng.standard_normal(t2.shape))
    img = nib.Nifti1Image(np.rint(t2).astype(np.int16), affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    return img, brain


def write_phantom_dataset(root: str | os.PathLike, *, subjects: int = 2, sessions: int = 2, zooms: float = 4.0,
                          t2: bool = True) -> Path:
    """Write a small BIDS dataset of phantom heads: T1w + brain mask + T2w (other grid, moved head) + sidecars.

    Sidecars carry identifying fields (PatientName, AcquisitionDateTime, InstitutionName, ...) so that
    scrubbing can be checked. Subject i / session j uses seed 10 * i + j.
    """
    import json

    import nibabel as nib
    import numpy as np

    from .phantom import phantom_image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "reface phantom dataset", "BIDSVersion": "1.9.0", "DatasetType": "raw",
         "Authors": ["A. Phantom", "B. Phantom"], "License": "CC0"}, indent=2) + "\n")
    (root / "README").write_text("Phantom heads written by reface.bids.write_phantom_dataset, for tests: a T1w, "
                                 "its brain mask and a T2w on another grid per session, with sidecars that carry "
                                 "identifying fields so that scrubbing can be checked.\n")
    (root / "participants.json").write_text(json.dumps(
        {"participant_id": {"Description": "participant label"},
         "age": {"Description": "age at the first scan", "Units": "year"},
         "sex": {"Description": "sex", "Levels": {"M": "male", "F": "female"}}}, indent=2) + "\n")
    rows = ["participant_id\tage\tsex"]
    fov = np.array([192.0, 224.0, 208.0])  # mm, the phantom head's box
    for i in range(1, subjects + 1):
        sub = f"{i:02d}"
        rows.append(f"sub-{sub}\t{30 + i}\t{'MF'[i % 2]}")
        for j in range(1, sessions + 1):
            ses = str(j)
            anat = root / f"sub-{sub}" / f"ses-{ses}" / "anat"
            anat.mkdir(parents=True, exist_ok=True)
            prefix = f"sub-{sub}_ses-{ses}"
            seed = 10 * i + j
            shape = tuple(int(n) for n in np.round(fov / zooms))
            img, brain = phantom_image(shape, (zooms,) * 3, seed=seed)
            img.header.set_xyzt_units("mm", "sec")
            nib.save(img, anat / f"{prefix}_T1w.nii.gz")
            scans = [f"anat/{prefix}_T1w.nii.gz\t2024-0{j}-01T10:00:00"]
            mask = nib.Nifti1Image(brain.astype(np.uint8), img.affine)
            nib.save(mask, anat / f"{prefix}_{MASK_SUFFIX}.nii.gz")
            meta = {"RepetitionTime": 2.3, "EchoTime": 0.00298, "FlipAngle": 9, "Manufacturer": "Phantom",
                    "PatientName": f"Doe^Subject{sub}", "PatientBirthDate": "19700101",
                    "AcquisitionDateTime": f"2024-0{j}-01T10:00:00", "InstitutionName": "Example Hospital",
                    "DeviceSerialNumber": "12345", "ImageComments": f"subject {sub} scanned by Dr Who"}
            (anat / f"{prefix}_T1w.json").write_text(json.dumps(meta, indent=2) + "\n")
            if t2:
                t2_zoom = zooms * 1.25
                t2_shape = tuple(int(n) for n in np.round(fov / t2_zoom))
                t2_img, _ = _t2_phantom(t2_shape, (t2_zoom,) * 3, axcodes="LPS", rotate_deg=4.0 + j,
                                        shift_mm=(2.0, -3.0 * j, 4.0), seed=seed)
                t2_img.header.set_xyzt_units("mm", "sec")
                nib.save(t2_img, anat / f"{prefix}_T2w.nii.gz")
                scans.append(f"anat/{prefix}_T2w.nii.gz\t2024-0{j}-01T10:12:30")
                (anat / f"{prefix}_T2w.json").write_text(json.dumps(dict(meta, EchoTime=0.1), indent=2) + "\n")
            (anat.parent / f"{prefix}_scans.tsv").write_text("\n".join(["filename\tacq_time", *scans]) + "\n")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return root


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


def inherited_sidecars(bids_dir: Path) -> list[Path]:
    """JSON sidecars above the image level (BIDS inheritance: e.g. /T1w.json, sub-01/sub-01_T2w.json)."""
    found = []
    for path in sorted(bids_dir.rglob("*.json")):
        rel = path.relative_to(bids_dir)
        if rel.parts[0] in ("derivatives", "sourcedata", "code") or rel.name == "dataset_description.json":
            continue
        if "anat" in rel.parts[:-1] or any(p.startswith(".") for p in rel.parts):
            continue
        stem = rel.name[: -len(".json")]
        if stem.split("_")[-1] in ANAT_SUFFIXES:
            found.append(rel)
    return found

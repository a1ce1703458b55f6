"""BIDS discovery and naming: which anatomical images belong to which session, and where outputs go.

One job per session: its T1w is the reference that gets a new face; every other anatomical image of the
session (T2w, FLAIR, a second T1w run, ...) receives that same face after rigid registration (multicontrast.py).
Output names follow BIDS derivatives: the input's entities, `desc-<label>` before the suffix, same folders.
What the derivative dataset's metadata says (sidecar keys, dataset_description, scans.tsv) is in
bids_derivative.py; a phantom dataset for tests is in bids_phantom.py.
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

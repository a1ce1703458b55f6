"""A tiny phantom BIDS dataset (T1w, brain mask, T2w on another grid, identifying sidecars), for tests and the
throughput benchmark.

Apart from bids.py so that the code that reads real datasets does not carry a test-data writer.
"""

from __future__ import annotations

import os
from pathlib import Path

from .bids import MASK_SUFFIX

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

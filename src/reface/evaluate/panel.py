"""The real-head panel inside every evaluation: each head of reface.realheads.PANEL becomes a subject
`real-<name>` whose probe is the head as shipped and whose gallery photo comes from a second "session" of the
same head: a new pose, bias field, Rician noise, contrast and acquisition grid, made by the synthetic cohort's
own session machinery (reface.synth.session) with the identity map (the face is unchanged).

The synthetic cohort's gallery heads are the distractors. Written once to OUT/panel/ and reused on resume.
pydeface's mean head is also remodel's prior and the template/deface registration target: its results say
how a method treats its own reference, not a new person; the report says so beside them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

PREFIX = "real-"
PANEL_DIR = "panel"
SPECIAL = {"pydeface-mean": "pydeface's mean head is remodel's prior and the template/deface registration "
                            "target: a method sees its own reference here, not a new person."}


def is_real(label: str) -> bool:
    return label.startswith(PREFIX)


def _as_template(head: np.ndarray, brain: np.ndarray | None, affine: np.ndarray) -> SimpleNamespace:
    """The fields of reface.synth.Template that synthesize_session reads, for one real head (RAS)."""
    from ..synth.template import NORM_PERCENTILE, head_support

    data = np.clip(head.astype(np.float32), 0, None)
    scale = float(np.percentile(data[data > 0], NORM_PERCENTILE))
    support, _ = head_support(data)
    data = data * ndi.gaussian_filter(support.astype(np.float32), 1.0)  # the head's own background out
    # no reference mask (pydeface's mean head): the head stands in; it only sets the pose pivot here
    brain = support if brain is None else brain
    ijk_centre = np.array(ndi.center_of_mass(brain), dtype=float)
    fov_centre = (np.array(data.shape) - 1) / 2.0
    return SimpleNamespace(
        head=data, brain=brain, affine=affine, scale=scale, support=support,
        brain_support=ndi.binary_dilation(brain, iterations=2),
        brain_centre=affine[:3, :3] @ ijk_centre + affine[:3, 3],
        centre=affine[:3, :3] @ fov_centre + affine[:3, 3],
    )


def second_session(name: str, seed: int) -> tuple[nib.Nifti1Image, dict]:
    """Another scan of real head `name` (same face; new pose/bias/noise/contrast/grid) and its acquisition."""
    from ..realheads import load_real_head
    from ..synth.session import sample_acquisition, synthesize_session

    real = load_real_head(name)
    canonical = nib.as_closest_canonical(real.image)
    head = np.asarray(canonical.dataobj, dtype=np.float32)
    brain = None
    if real.brain is not None:
        mask = nib.as_closest_canonical(nib.Nifti1Image(real.brain.astype(np.uint8), real.image.affine))
        brain = np.asarray(mask.dataobj) > 0
    template = _as_template(head, brain, canonical.affine)
    identity = SimpleNamespace(pull=lambda points: points)  # subject world = template world
    rng = np.random.default_rng([int(seed), sum(map(ord, name)), 0x9EA1])
    acq = sample_acquisition(rng, template)
    image, _ = synthesize_session(template, identity, acq)
    return image, acq.as_dict()


def write_panel_subjects(out: Path, names: tuple[str, ...], seed: int) -> list:
    """Subjects (config.Subject) of the panel heads, writing OUT/panel/real-<name>/ on first use."""
    from ..realheads import load_real_head
    from .config import Subject

    subjects = []
    for name in names:
        label = f"{PREFIX}{name}"
        folder = Path(out) / PANEL_DIR / label
        probe, gallery = folder / f"{label}_ses-01_T1w.nii.gz", folder / f"{label}_ses-02_T1w.nii.gz"
        mask = folder / f"{label}_ses-01_desc-brain_mask.nii.gz"
        if not gallery.exists():
            folder.mkdir(parents=True, exist_ok=True)
            real = load_real_head(name)
            nib.save(real.image, probe)
            if real.brain is not None:
                nib.save(nib.Nifti1Image(real.brain.astype(np.uint8), real.image.affine), mask)
            image, acq = second_session(name, seed)
            (folder / "session2.json").write_text(json.dumps(acq, indent=2) + "\n")
            partial = folder / f".partial_{gallery.name}"  # the gallery file's presence marks a finished head
            nib.save(image, partial)
            partial.replace(gallery)
        subjects.append(Subject(label, probe, gallery, mask if mask.exists() else None))
    return subjects

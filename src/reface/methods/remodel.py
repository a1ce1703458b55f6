"""The 'remodel' method: a conditional GAN grows a new head around the patient's brain.

The wrapper pastes the input back inside the preserved region, so only the generated face, scalp and
neck reach the output. Same seed, same head; another seed, another face.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

# Scale of the seeded shape deformation of the face and head (model/inference.py `face_deformation`):
# 0 = the generator's head as it is, 1 = local pieces only, > 1 adds broad low-frequency changes of the face's
# proportions with amplitude (variation - 1). See docs/privacy_realheads.md for the measurements behind it.
DEFAULT_VARIATION = 1.0
DEEP_MM = 15.0
NEAR_BRAIN_MM = 10.0


@lru_cache(maxsize=2)
def _load(path: str, device: str):
    from ..model.checkpoint import load_generator

    generator, _meta = load_generator(path, device)
    return generator


def remodel(
    volume: np.ndarray,
    regions,
    *,
    rng: np.random.Generator,
    model: str | Path | None = None,
    device: str = "cpu",
    use_generator: bool = True,
    variation: float = DEFAULT_VARIATION,
) -> np.ndarray:
    """float32 [X, Y, Z] working-grid volume -> a new head around `regions.preserved` (same shape).

    `use_generator=False` gives the prior-only head (fitted template, seeded deformation, finishing): the
    baseline the GAN has to beat. `variation` scales the seeded face/head deformation (see DEFAULT_VARIATION);
    it never touches the preserved region."""
    import torch

    from ..model.inference import generate_head, resolve_device
    from ..resources import default_model_path

    path = Path(model) if model is not None else default_model_path()
    torch_device = resolve_device(device)
    generator = _load(str(path.resolve()), torch_device.type)
    seed = int(rng.integers(0, 2**63 - 1))
    noise_rng = torch.Generator().manual_seed(seed)  # CPU generator: the same draws on any device
    return generate_head(
        generator, volume, regions.preserved, regions.brain, regions.grid, rng=noise_rng, device=torch_device,
        input_head=regions.head | regions.preserved, inside=regions.inside, use_generator=use_generator,
        shape_diversity=float(variation),
    )


remodel.generates_air = True  # type: ignore[attr-defined]  # deidentify draws its air again on the input grid
# deidentify gives the input's own tissue back deeper than this under both skins (deep_tissue.py); only the
# shell a face recogniser can see is new. Option `deep_mm=0` remodels the whole head.
remodel.deep_mm = DEEP_MM  # type: ignore[attr-defined]
# ... and within this distance of the preserved region already NEAR_DEPTH_MM under both skins: the skull and
# CSF that brain extractors read as context stay the input's. Option `near_brain_mm=0` turns it off.
remodel.near_brain_mm = NEAR_BRAIN_MM  # type: ignore[attr-defined]
# deidentify gives the generated scalp the input's own layer depths and contrasts (scalp.py); option
# `layered_scalp=False` keeps the template's blurred layers.
remodel.layered_scalp = True  # type: ignore[attr-defined]
# deidentify maps the generated tissue's intensities, last, onto the distribution of the input tissue it
# replaced (intensity.py): the fat's bright tail comes back. Option `match_tissue=False` turns it off.
remodel.match_tissue = True  # type: ignore[attr-defined]

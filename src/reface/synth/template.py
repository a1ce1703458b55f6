"""The template head every identity is remodelled from: the ROBEX atlas (one real adult), in RAS, with its
brain mask and hand-placed facial landmarks.

Landmarks are world (RAS mm) positions on this head, read off its mid-sagittal skin profile and front
rendering (nose tip = most anterior skin point at x=0, z=-55; the eyes, cheeks and ears from the surface at
their levels). Deformations are centred on them with wide Gaussian supports, so a few mm of error is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from ..masks import otsu_level
from ..resources import load_volume, robex_brain_mask_path, robex_head_path

# name -> (x, y, z) RAS mm on the ROBEX atlas head. Paired parts list the subject's left side (+x = right).
LANDMARKS: dict[str, tuple[float, float, float]] = {
    "nose_tip": (0.0, 112.0, -55.0),
    "nose_bridge": (0.0, 100.0, -38.0),
    "nose_base": (0.0, 104.0, -64.0),
    "forehead": (0.0, 88.0, 0.0),
    "brow_r": (30.0, 86.0, -22.0),
    "brow_l": (-30.0, 86.0, -22.0),
    "eye_r": (32.0, 76.0, -37.0),
    "eye_l": (-32.0, 76.0, -37.0),
    "cheek_r": (42.0, 76.0, -58.0),
    "cheek_l": (-42.0, 76.0, -58.0),
    "lips": (0.0, 92.0, -72.0),
    "chin": (0.0, 80.0, -95.0),
    "jaw_r": (50.0, 45.0, -88.0),
    "jaw_l": (-50.0, 45.0, -88.0),
    "ear_r": (76.0, -14.0, -45.0),
    "ear_l": (-76.0, -14.0, -45.0),
}

# Intensity that maps to 1.0 after normalisation (about the atlas' 99.5th percentile).
NORM_PERCENTILE = 99.5
SKIN_FLOOR = 1.0  # skin-shell floor intensity, in units of the head's Otsu level
LOWER_FACE_TOP_Z = -42.0  # the floor applies below this height (mm), fading in over 10 mm, in front of y=0


@dataclass(frozen=True)
class Template:
    """Template head in RAS: float32 intensities [X, Y, Z], brain mask, voxel->world affine."""

    head: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    scale: float  # intensity that normalises the head to ~[0, 1]
    support: np.ndarray  # voxels worth interpolating (the head, dilated); zero outside
    brain_support: np.ndarray  # the brain mask dilated by 2 voxels

    @property
    def brain_centre(self) -> np.ndarray:
        ijk = np.array(ndi.center_of_mass(self.brain), dtype=float)
        return self.affine[:3, :3] @ ijk + self.affine[:3, 3]

    @property
    def centre(self) -> np.ndarray:
        """Centre of the field of view (world mm): where acquisition grids are centred."""
        ijk = (np.array(self.head.shape) - 1) / 2.0
        return self.affine[:3, :3] @ ijk + self.affine[:3, 3]

    def landmark(self, name: str) -> np.ndarray:
        return np.asarray(LANDMARKS[name], dtype=float)


@lru_cache(maxsize=1)
def load_template() -> Template:
    """The ROBEX atlas head + brain mask in RAS (cached; read-only arrays)."""
    head, affine = load_volume(str(robex_head_path()))
    mask, mask_affine = load_volume(str(robex_brain_mask_path()))
    if not np.allclose(affine, mask_affine):
        raise AssertionError("ROBEX atlas and its mask must share a grid")
    head_img = nib.as_closest_canonical(nib.Nifti1Image(np.array(head), affine))
    mask_img = nib.as_closest_canonical(nib.Nifti1Image(np.array(mask), affine))
    data = np.clip(np.asarray(head_img.dataobj, dtype=np.float32), 0, None)
    brain = np.asarray(mask_img.dataobj) > 0.5
    scale = float(np.percentile(data[data > 0], NORM_PERCENTILE))
    support, skin = head_support(data)
    data = data * ndi.gaussian_filter(support.astype(np.float32), 1.0)  # the atlas' own noise out, soft edge
    # The atlas' lower face is dim and ragged (coil falloff): give the outer skin layer a floor intensity so
    # the skin surface is one closed, smooth sheet whatever a session's bias, gamma and noise.
    floor = SKIN_FLOOR * otsu_level(data[support])
    world = np.stack(np.meshgrid(*[head_img.affine[a, a] * np.arange(n) + head_img.affine[a, 3]
                                   for a, n in enumerate(data.shape)], indexing="ij"))
    lower_face = (np.clip((LOWER_FACE_TOP_Z - world[2]) / 10.0, 0, 1) * np.clip(world[1] / 20.0, 0, 1))
    data = np.maximum(data, floor * lower_face * ndi.gaussian_filter(skin.astype(np.float32), 1.0))
    brain_support = ndi.binary_dilation(brain, iterations=2)
    for array in (data, brain, support, brain_support):
        array.setflags(write=False)
    return Template(head=data, brain=brain, affine=head_img.affine.copy(), scale=scale, support=support,
                    brain_support=brain_support)


def head_support(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the head dilated by 3 voxels, its outer 4.5 mm skin shell).

    The head is the largest blob above a quarter of the Otsu level, holes filled, surface smoothed."""
    smooth = ndi.gaussian_filter(data, 1.0)
    labels, n = ndi.label(smooth > 0.25 * otsu_level(smooth))
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        labels = labels == int(np.argmax(sizes))
    head = ndi.gaussian_filter(ndi.binary_fill_holes(labels > 0).astype(np.float32), 1.5) > 0.5
    skin = head & ~ndi.binary_erosion(head, iterations=3)
    return ndi.binary_dilation(head, iterations=3), skin

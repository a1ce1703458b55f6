"""tissue_depth_mm without a whole-box distance transform, checked against that transform.

The reference is the function as first written (distance_transform_edt of the head on the brain's box padded
by 20 mm, median over the brain's surface); the fast one counts depths over DEPTH_CAP_MM as DEPTH_CAP_MM,
so it must equal the reference's median of capped depths, and give the same verdict and the same reported
median whenever the reference would refuse.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from reface.headcheck import DEPTH_CAP_MM, MIN_TISSUE_MM, tissue_depth_mm
from reface.phantom import phantom_image


def _reference_depths(brain: np.ndarray, head: np.ndarray, zooms) -> np.ndarray:
    pad = [int(np.ceil(20.0 / float(z))) for z in zooms]
    box = tuple(slice(max(0, int(i.min()) - p), int(i.max()) + p + 1) for i, p in zip(np.nonzero(brain), pad,
                                                                                          strict=True))
    brain, head = brain[box], head[box]
    depth = ndi.distance_transform_edt(head, sampling=zooms)
    surface = brain & ~ndi.binary_erosion(brain)
    inner = np.zeros_like(surface)
    inner[2:-2, 2:-2, 2:-2] = True
    return depth[surface & inner] if (surface & inner).any() else depth[surface]


def _check(brain: np.ndarray, head: np.ndarray, zooms) -> None:
    values = _reference_depths(brain, head, zooms)
    fast = tissue_depth_mm(brain, head, zooms)
    assert fast == pytest.approx(float(np.median(np.minimum(values, DEPTH_CAP_MM))), abs=1e-12)
    reference = float(np.median(values))
    assert (fast < MIN_TISSUE_MM) == (reference < MIN_TISSUE_MM)
    if reference < MIN_TISSUE_MM:
        assert fast == reference


def _blob(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0


@pytest.mark.parametrize("seed", range(12))
def test_fast_depth_matches_the_distance_transform(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(30, 56, 3))
    zooms = tuple(float(z) for z in rng.choice([1.0, 1.0, 0.9, 1.3, 2.0, 3.0], 3))
    centre = [s / 2 + rng.uniform(-3, 3) for s in shape]
    brain = _blob(shape, centre, [s * rng.uniform(0.15, 0.3) for s in shape])
    head = _blob(shape, centre, [s * rng.uniform(0.3, 0.6) for s in shape]) | brain
    head &= rng.random(shape) > rng.choice([0.0, 0.02, 0.3])  # air pockets, up to a sieve
    head |= brain & (rng.random(shape) > 0.5)
    if seed % 3 == 0:
        head[:, :, : shape[2] // 3] = True  # cut by the field of view: beyond the image is not air
    _check(brain, head, zooms)


def test_fast_depth_on_phantom_and_block():
    img, brain = phantom_image()
    head = (np.asarray(img.dataobj) > 100) | brain
    zooms = tuple(float(z) for z in img.header.get_zooms())
    _check(brain, head, zooms)
    _check(brain[:, :, 20:], head[:, :, 20:], zooms)
    block = np.zeros((60, 60, 60), bool)
    block[10:50, 10:50, 10:50] = True
    inside = np.zeros_like(block)
    inside[12:48, 12:48, 12:48] = True
    _check(inside, block, (1.0, 1.0, 1.0))
    _check(inside, block, (2.0, 1.0, 0.5))


def test_depth_without_any_air_uses_the_transform():
    brain = _blob((30, 30, 30), (15, 15, 15), (8, 8, 8))
    _check(brain, np.ones(brain.shape, bool), (1.0, 1.0, 1.0))


@pytest.mark.parametrize("shell", [3, 5, 6, 7, 8, 10])
def test_check_head_refuses_exactly_when_the_full_median_is_shallow(shell):
    """check_head decides on depths capped at the threshold first; its verdict must still be the full one's."""
    from reface.errors import RefaceError
    from reface.headcheck import check_head

    rng = np.random.default_rng(shell)
    brain = _blob((60, 60, 60), (30, 30, 30), (14, 16, 12))
    head = _blob((60, 60, 60), (30, 30, 30), (14 + shell, 16 + shell * rng.uniform(0.6, 1.4), 12 + shell)) | brain
    shallow = float(np.median(_reference_depths(brain, head, (1.0, 1.0, 1.0)))) < MIN_TISSUE_MM
    if shallow:
        with pytest.raises(RefaceError, match="does not look like a head"):
            check_head(brain, head, (1.0, 1.0, 1.0), "blob")
    else:
        check_head(brain, head, (1.0, 1.0, 1.0), "blob")
    assert shallow == (shell <= 6)  # both outcomes are exercised

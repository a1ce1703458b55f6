"""The input's deep tissue under a generated head's skin (deep_tissue.py)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from reface.deep_tissue import _upsample_linear, deep_weight, depth_mm, keep_deep_tissue


def _ball(shape, radius_vox, centre=None) -> np.ndarray:
    centre = np.array(shape) / 2 if centre is None else np.asarray(centre)
    ijk = np.indices(shape).reshape(3, -1).T + 0.5
    return (np.linalg.norm(ijk - centre, axis=1) <= radius_vox).reshape(shape)


def test_depth_is_the_distance_to_the_outside_in_mm_on_anisotropic_voxels():
    head = _ball((60, 60, 40), 25)
    zooms = (1.0, 1.0, 1.5)
    exact = ndi.distance_transform_edt(head, sampling=zooms)
    got = depth_mm(head, zooms)
    assert np.all(got[~head] == 0)
    assert np.abs(got - exact)[head].max() < 2.5  # read on a ~2 mm grid, interpolated back
    assert np.abs(got - exact)[head].mean() < 0.5


def test_upsampling_a_strided_sample_is_exact_on_a_linear_ramp():
    ramp = np.add.outer(np.add.outer(np.arange(21.0), 2 * np.arange(20.0)), 3 * np.arange(9.0))
    back = _upsample_linear(ramp[::2, ::2, ::1], (2, 2, 1), ramp.shape)
    inner = back[:-1, :-1]  # the last odd index has no right neighbour in the sample
    assert np.allclose(inner, ramp[:-1, :-1])


def test_shell_stays_generated_and_the_core_is_the_inputs():
    shape, zooms = (80, 80, 80), (1.0, 1.0, 1.0)
    input_head, new_head = _ball(shape, 35), _ball(shape, 32, centre=(42, 40, 40))
    data = np.where(input_head, 100.0, 0.0).astype(np.float32)
    new = np.where(new_head, 50.0, 0.0).astype(np.float32)
    out, changed = keep_deep_tissue(data, new, input_head, new_head, zooms, depth=15.0)
    shallow = np.minimum(ndi.distance_transform_edt(input_head), ndi.distance_transform_edt(new_head))
    assert np.all(out[shallow <= 13] == new[shallow <= 13])  # skin, and 13 mm under it, are the new head's
    assert np.all(out[shallow >= 23.5] == 100.0)  # deep inside both: the input's own tissue
    assert np.all(out[~new_head] == new[~new_head])  # never outside the new head (not even where the input was)
    assert not changed[~new_head].any()
    w = deep_weight(input_head, new_head, zooms, depth=15.0)
    assert 0.0 <= w.min() and w.max() == 1.0


def test_near_the_brain_the_shell_is_thinner():
    """Within `near_mm` of the preserved region the input's tissue comes back from NEAR_DEPTH_MM (+ ramp) under
    both skins; farther out, only below `depth`. The skin stays generated everywhere."""
    from reface.deep_tissue import NEAR_DEPTH_MM, NEAR_DEPTH_RAMP_MM, NEAR_RAMP_MM

    shape, zooms = (80, 80, 80), (1.0, 1.0, 1.0)
    input_head, new_head = _ball(shape, 35), _ball(shape, 34)
    preserved = _ball(shape, 22)
    data = np.where(input_head, 100.0, 0.0).astype(np.float32)
    new = np.where(new_head, 50.0, 0.0).astype(np.float32)
    brain_dist = ndi.distance_transform_edt(~preserved).astype(np.float32)
    shallow = np.minimum(ndi.distance_transform_edt(input_head), ndi.distance_transform_edt(new_head))
    far_only, _ = keep_deep_tissue(data, new, input_head, new_head, zooms, depth=15.0)
    out, changed = keep_deep_tissue(data, new, input_head, new_head, zooms, depth=15.0, brain_dist=brain_dist,
                                    near_mm=10.0)
    kept = (brain_dist > 0) & (brain_dist <= 10.0 - NEAR_RAMP_MM) & (shallow >= NEAR_DEPTH_MM + NEAR_DEPTH_RAMP_MM + 1)
    assert kept.sum() > 1000
    assert np.all(out[kept] == 100.0)  # the skull and CSF around the brain are the input's
    assert np.all(far_only[kept] == 50.0)  # (without near_mm they were generated)
    skin = new_head & (shallow <= NEAR_DEPTH_MM - 1)
    assert np.array_equal(out[skin], new[skin])  # the skin stays generated
    assert not changed[~new_head].any()

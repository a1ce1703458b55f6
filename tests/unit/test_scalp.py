"""The generated scalp takes the input's layering (scalp.py): layer depths and contrasts from the input,
shape and fine texture from the generated head, the skin and the face left alone."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from reface.scalp import BAND_MM, FADE_MM, SKIN_MM, layer_table, layered_scalp


def _ball(shape, radius, centre):
    ijk = np.indices(shape).reshape(3, -1).T + 0.5
    return (np.linalg.norm(ijk - np.asarray(centre), axis=1) <= radius).reshape(shape)


def _profile(values, depth, where, edges):
    pairs = zip(edges[:-1], edges[1:], strict=True)
    return np.array([values[where & (depth > a) & (depth <= b)].mean() for a, b in pairs])


def _heads():
    """A brain ball under a 14 mm scalp (input: skin, a bright fat layer 2-4 mm deep, dark bone), and a
    generated head 2 mm larger with the template's look: one blurred bright band 4-8 mm deep, plus noise.
    Below the brain, a thick 'face' block (over 40 mm of tissue) that must keep the generated values."""
    shape, centre = (96, 96, 112), (48, 48, 70)
    preserved = _ball(shape, 24, centre)
    face = np.zeros(shape, bool)
    face[16:80, 16:80, 2:40] = True
    input_head = _ball(shape, 38, centre) | face
    new_head = _ball(shape, 40, centre) | face
    d_in = ndi.distance_transform_edt(input_head)
    d_new = ndi.distance_transform_edt(new_head)
    data = np.where(input_head, 30.0, 0.0)
    data[input_head & (d_in <= 1)] = 40.0
    data[input_head & (d_in > 2) & (d_in <= 5)] = 100.0
    data[input_head & (d_in > 6)] = 15.0
    data[preserved] = 80.0
    new = np.where(new_head, 30.0, 0.0)
    new[new_head & (d_new > 5) & (d_new <= 10)] = 70.0
    new = ndi.gaussian_filter(new, 1.5) * new_head
    rng = np.random.default_rng(0)
    new = (new + rng.normal(0, 2.0, shape) * new_head).astype(np.float32)
    new[preserved] = data[preserved]
    return data.astype(np.float32), new, input_head, new_head, preserved, d_in, d_new


def test_the_vault_takes_the_inputs_layers_and_keeps_its_texture():
    data, new, input_head, new_head, preserved, d_in, d_new = _heads()
    out, changed = layered_scalp(data, new, input_head, new_head, preserved, (1.0, 1.0, 1.0))
    vault = new_head & ~preserved & (np.indices(new.shape)[2] > 75)
    edges = np.arange(0, 13, 1.0)
    want = _profile(data, d_in, input_head & ~preserved & (np.indices(new.shape)[2] > 75), edges)
    before, after = _profile(new, d_new, vault, edges), _profile(out, d_new, vault, edges)
    layers = slice(3, 12)  # 3-12 mm deep: under the kept skin (SKIN_MM, then a ramp)
    assert np.abs(after - want)[layers].mean() < 0.4 * np.abs(before - want)[layers].mean()
    assert after[3] > 70 and after[8] < 25  # the fat layer is bright and the bone under it dark
    assert before[3] < 40 and before[8] > 50  # (the generated band was the other way round)
    # the generated head's noise is kept (its detail finer than the texture scale), not smoothed away
    deep = vault & (d_new > 9) & (d_new < 12)
    assert out[deep].std() > 1.0
    # the skin itself and everything outside the generated scalp are untouched
    assert np.array_equal(out[~changed], new[~changed])
    skin = new_head & (d_new <= SKIN_MM)  # (exact depth here; the method reads it on a 2 mm grid)
    fat = vault & (d_new > 3) & (d_new <= 4)
    assert np.abs(out - new)[skin].mean() < 0.2 * np.abs(out - new)[fat].mean()
    assert not (changed & (preserved | ~new_head)).any()


def test_the_face_far_from_the_brain_keeps_the_generated_anatomy():
    data, new, input_head, new_head, preserved, _d_in, d_new = _heads()
    out, _changed = layered_scalp(data, new, input_head, new_head, preserved, (1.0, 1.0, 1.0))
    to_brain = ndi.distance_transform_edt(~preserved)
    far = new_head & (d_new + to_brain > BAND_MM + FADE_MM + 3)
    assert far.sum() > 10_000
    assert np.array_equal(out[far], new[far])


def test_layer_table_takes_medians_by_the_two_depths_and_fills_empty_cells_from_the_nearest():
    skin = np.array([0.5, 0.5, 0.4, 3.2, 3.7, 3.1, 10.0])
    brain = np.array([6.2, 6.9, 6.1, 1.1, 1.4, 1.9, 1.0])
    values = np.array([10.0, 20.0, 90.0, 200.0, 100.0, 150.0, 7.0])  # medians 20 and 150 (means 40, 150)
    where = np.ones(values.size, bool)
    import reface.scalp as scalp

    old = scalp.MIN_COUNT
    scalp.MIN_COUNT = 1
    try:
        table = layer_table(values, skin, brain, where)
    finally:
        scalp.MIN_COUNT = old
    assert table[0, 6] == 20.0 and table[3, 1] == 150.0 and table[10, 1] == 7.0
    assert not np.isnan(table).any()
    assert table[0, 5] == 20.0  # an empty cell next to (0, 6) takes its value


def test_too_little_scalp_changes_nothing():
    data, new, input_head, new_head, preserved, *_ = _heads()
    empty = np.zeros_like(input_head)
    out, changed = layered_scalp(data, new, empty, new_head, preserved, (1.0, 1.0, 1.0))
    assert not changed.any() and np.array_equal(out, new)


def test_on_a_coarse_grid_the_outermost_voxel_keeps_the_generated_skin():
    """4 mm voxels, and an input head mask one voxel larger than its tissue (air in its outer shell, as a
    closed mask gives): the table's outer cells read air, yet the new skin must not be blanked into islands."""
    shape, centre = (40, 40, 44), (20, 20, 26)
    preserved = _ball(shape, 6, centre)
    input_head = _ball(shape, 10, centre)
    new_head = _ball(shape, 10.5, centre)
    zooms = (4.0, 4.0, 4.0)
    d_in = ndi.distance_transform_edt(input_head) * 4.0
    data = np.where(input_head & (d_in > 4.0), 60.0, 0.0).astype(np.float32)  # outer voxel shell is air
    data[preserved] = 80.0
    d_new = ndi.distance_transform_edt(new_head) * 4.0
    new = np.where(new_head, 50.0, 0.0).astype(np.float32)
    new[new_head & (d_new > 4.0)] = 150.0  # a brighter layer under the skin: the skin's fine detail is < 0
    new[preserved] = data[preserved]
    out, changed = layered_scalp(data, new, input_head, new_head, preserved, zooms)
    assert changed.any()
    outer = new_head & (d_new <= 4.0)
    assert np.all(out[outer] > 0)  # the skin stays
    labels, n = ndi.label(out != 0)
    assert n == 1  # one head, no islands

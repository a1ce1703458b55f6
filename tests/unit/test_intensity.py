"""Quantile matching of a generated head's tissue onto the tissue it replaced (reface.intensity)."""

from __future__ import annotations

import numpy as np

from reface.intensity import SKIN_MM, match_replaced, quantile_mapper

SHAPE = (60, 60, 60)


def _depth(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.distance_transform_edt(mask).astype(np.float32)


def _heads():
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0)
    r = np.linalg.norm(grid - 30, axis=-1)
    return r <= 25, r <= 24, r <= 10  # input head, generated head, preserved


def _case(seed: int = 0):
    rng = np.random.default_rng(seed)
    input_head, new_head, preserved = _heads()
    data = np.where(input_head, rng.gamma(2.0, 100.0, SHAPE), 5.0).astype(np.float32)  # a long bright tail
    new = data.copy()
    shell = new_head & ~preserved
    new[shell] = 150 + 40 * rng.standard_normal(int(shell.sum()))  # generated: the right mean, no tail
    new[input_head & ~new_head] = 5.0  # where the generated head is smaller: air
    return data, new, input_head, new_head, preserved


def test_the_bright_tail_of_the_replaced_tissue_comes_back():
    data, new, input_head, new_head, preserved = _case()
    out, changed = match_replaced(data, new, input_head, new_head, preserved, _depth(input_head), _depth(new_head))
    deep = changed & (_depth(new_head) > SKIN_MM + 1)
    replaced = input_head & ~preserved & (_depth(input_head) > SKIN_MM + 1)
    want = np.percentile(data[replaced], [50, 99, 99.9])
    before = np.percentile(new[deep], [50, 99, 99.9])
    after = np.percentile(out[deep], [50, 99, 99.9])
    assert before[2] < 0.5 * want[2]  # the case has the problem...
    assert np.all(np.abs(after / want - 1) < 0.06), (after, want)  # ... and the mapping fixes it


def test_skin_preserved_and_unchanged_voxels_keep_their_values():
    data, new, input_head, new_head, preserved = _case(1)
    new_depth = _depth(new_head)
    out, changed = match_replaced(data, new, input_head, new_head, preserved, _depth(input_head), new_depth)
    skin = new_head & (new_depth <= SKIN_MM)
    assert np.array_equal(out[skin], new[skin])  # thin skin would fall below a renderer's level
    assert np.array_equal(out[preserved], new[preserved])
    assert np.array_equal(out[new == data], new[new == data])
    assert not changed[preserved].any() and changed.sum() > 0
    assert out[changed].min() >= 0  # mapped onto a non-negative input: non-negative


def test_too_little_tissue_changes_nothing():
    data, new, input_head, new_head, preserved = _case(2)
    tiny = np.zeros(SHAPE, bool)
    tiny[:5, :5, :5] = True
    out, changed = match_replaced(data, new, tiny, tiny, preserved, _depth(tiny), _depth(tiny))
    assert np.array_equal(out, new) and not changed.any()


def test_quantile_mapper_with_a_fine_tail():
    rng = np.random.default_rng(3)
    source = rng.normal(100, 10, 100_000)
    reference = rng.gamma(2.0, 50.0, 100_000)
    q = np.array([1.0, 50.0, 99.0, 99.9])
    mapping = quantile_mapper(source, reference, q)
    assert np.allclose(np.percentile(mapping(source), q), np.percentile(reference, q), rtol=0.02)

"""fit_front: a generated face that runs past the front of the field of view is pressed back inside it."""

from __future__ import annotations

import numpy as np
import torch

from reface.model.inference import FRONT_MARGIN_MM, SHAPE_HEAD_LEVEL, _front, fit_front


def _scene(face_front: int):
    shape = (40, 120, 48)
    x, y, z = np.indices(shape)
    preserved = ((x - 20) ** 2 + (y - 45) ** 2 + (z - 24) ** 2) <= 14 ** 2
    head = ((x - 20) ** 2 / 18 ** 2 + (y - 50) ** 2 / 28 ** 2 + (z - 24) ** 2 / 22 ** 2 <= 1.0).astype(np.float32)
    nose = (np.abs(x - 20) <= 4) & (np.abs(z - 24) <= 6) & (y >= 60) & (y <= face_front)
    head = np.maximum(head, nose.astype(np.float32)) * 0.8
    head[preserved] = 1.0 + 0.01 * y[preserved]  # something to recognise there
    inside = y <= 95  # the field of view ends at y = 95
    input_head = (head > SHAPE_HEAD_LEVEL) & (y <= 84)  # the input's own face ended 11 mm inside it
    return torch.from_numpy(head)[None, None], preserved, inside, input_head


def test_a_face_past_the_field_of_view_is_pressed_back_inside_it():
    head, preserved, inside, input_head = _scene(face_front=110)
    out = fit_front(head, preserved, inside, input_head)[0, 0].numpy()
    front = _front(out > SHAPE_HEAD_LEVEL)
    assert front.max() <= 95 - FRONT_MARGIN_MM + 1  # ends inside, with the margin (to a voxel)
    assert front.max() >= 95 - FRONT_MARGIN_MM - 3  # pressed back, not cut off far short
    assert np.array_equal(out[preserved], head[0, 0].numpy()[preserved])  # the brain's region never moves
    behind = np.zeros_like(preserved)  # nothing behind the preserved region's centre moves either
    behind[:, : int(np.nonzero(preserved)[1].mean()) + 1, :] = True
    assert np.array_equal(out[behind], head[0, 0].numpy()[behind])


def test_a_face_inside_the_field_of_view_is_left_alone():
    head, preserved, inside, input_head = _scene(face_front=80)
    assert torch.equal(fit_front(head, preserved, inside, input_head), head)


def test_where_the_input_reached_the_edge_the_output_may_too():
    head, preserved, inside, input_head = _scene(face_front=110)
    y = np.indices(preserved.shape)[1]
    input_head = (head[0, 0].numpy() > SHAPE_HEAD_LEVEL) & (y <= 95)  # the input's nose was cut by the edge
    out = fit_front(head, preserved, inside, input_head)[0, 0].numpy()
    assert 95 - 2 <= _front(out > SHAPE_HEAD_LEVEL).max() <= 95 + 1


def test_columns_an_oblique_field_of_view_cuts_short_are_no_front():
    """A column that leaves the field of view through its bottom (tilted), not its front, keeps its face."""
    head, preserved, inside, input_head = _scene(face_front=80)
    x, y, z = np.indices(preserved.shape)
    chin = (np.abs(x - 20) <= 8) & (z < 8) & (y >= 30) & (y <= 75)
    head = torch.maximum(head, torch.from_numpy(0.8 * chin.astype(np.float32))[None, None])
    input_head = input_head | chin
    inside = inside & ~((z < 8) & (y > 40 + 8 * z))  # a tilted floor: the lowest columns end early
    assert torch.equal(fit_front(head, preserved, inside, input_head), head)

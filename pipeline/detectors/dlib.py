"""dlib's HOG face detector with the 68-point shape predictor, reduced to the five alignment points.

The model files come from the face_recognition_models package (no download). :func:`frontal_detector`,
:func:`shape_predictor`, :func:`hog_boxes` and :func:`shape68` are the one dlib set-up, used by
:class:`DlibDetector` and by the demo renderer.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..align import to_aligned
from .base import Detection, DetectorError

#: dlib's 68-point shape predictor, a file of face_recognition_models
SHAPE_68 = "shape_predictor_68_face_landmarks.dat"


def model_dir() -> Path:
    """Folder of face_recognition_models' model files (found without importing it: its import needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError("face_recognition_models is not installed: `pip install face-recognition-models`")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def model_path(name: str) -> Path:
    """The model file ``name`` of face_recognition_models (DetectorError when it is missing)."""
    path = model_dir() / name
    if not path.is_file():
        raise DetectorError(f"{path}: missing; reinstall face-recognition-models")
    return path


@lru_cache(maxsize=1)
def frontal_detector():
    """dlib's HOG frontal face detector (one per process)."""
    import dlib

    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=1)
def shape_predictor():
    """dlib's 68-point shape predictor (one per process; DetectorError when its model file is missing)."""
    import dlib

    return dlib.shape_predictor(str(model_path(SHAPE_68)))


def hog_boxes(img: np.ndarray, upsample: int, threshold: float) -> list[tuple[np.ndarray, float]]:
    """HOG detections in ``img`` as (box x0 y0 x1 y1, score), in dlib's order."""
    rects, scores, _ = frontal_detector().run(np.ascontiguousarray(img), upsample, threshold)
    return [
        (np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64), float(s))
        for r, s in zip(rects, scores)
    ]


def shape68(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """dlib's 68 points (image pixels) of the face in ``box``."""
    import dlib

    rect = dlib.rectangle(*(int(round(v)) for v in box[:4]))
    shape = shape_predictor()(np.ascontiguousarray(img), rect)
    return np.array([[pt.x, pt.y] for pt in shape.parts()], dtype=np.float64)


#: 68-point indices giving the five alignment points
_EYE_L = slice(36, 42)
_EYE_R = slice(42, 48)
_NOSE_TIP = 30
_MOUTH_L = 48
_MOUTH_R = 54


@dataclass
class DlibConfig:
    #: "auto": detect on a downscaled frame first and upsample only where nothing is found;
    #: an int k: always detect on the full frame at dlib upsample k (the naive recipe).
    upsample: str | int = "auto"
    max_upsample: int = 1  # the last step of the "auto" cascade (full frame, dlib upsample 1)
    fast_width: int = 320  # width of the downscaled frame tried first
    track_face_px: int = 100  # while tracking, the face is rescaled to about this width
    threshold: float = 0.0  # dlib HOG score threshold
    #: "auto" only: when the upright search finds nothing, the frame is rotated by these angles
    #: (degrees) and searched again (HOG is frontal-only; tilted heads are common)
    rotations: tuple[float, ...] = (-30.0, 30.0)


def _rotation(shape: tuple[int, ...], angle: float) -> np.ndarray:
    """2x3 matrix rotating an image of ``shape`` about its centre (same output size)."""
    import cv2

    h, w = shape[:2]
    return cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)


def _map_back(det: Detection, m: np.ndarray, offset: np.ndarray) -> Detection:
    """A detection found in a warped image (``m`` maps original -> warped) back in original pixels."""
    import cv2

    inv = cv2.invertAffineTransform(m)
    x0, y0, x1, y1 = det.box
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) @ inv[:, :2].T + inv[:, 2]
    # the axis-aligned box of the same size around the mapped centre (a rotated box's hull is too big)
    c = corners.mean(0)
    half = np.array([x1 - x0, y1 - y0]) / 2
    box = np.concatenate([c - half, c + half]) + np.concatenate([offset, offset])
    lm = to_aligned(det.landmarks, inv) + offset
    dense = None if det.dense is None else to_aligned(det.dense, inv) + offset
    return Detection(box, lm, det.score, dense)


class DlibDetector:
    """dlib's HOG face detector + the 68-point shape predictor (reduced to five points).

    The five points come from the 68-point model (eye centres, nose tip, mouth corners)
    because dlib's 5-point model has no mouth points, and both detectors must give the
    same five points for the same alignment template.
    """

    name = "dlib"

    def __init__(self, cfg: DlibConfig | None = None) -> None:
        self.cfg = cfg or DlibConfig()
        if self.cfg.upsample != "auto" and not (isinstance(self.cfg.upsample, int) and self.cfg.upsample >= 0):
            raise DetectorError(f"dlib upsample must be 'auto' or an integer >= 0, got {self.cfg.upsample!r}")
        shape_predictor()  # a missing model file fails here, not at the first face

    def _detection(self, frame: np.ndarray, box: np.ndarray, score: float) -> Detection:
        pts = shape68(frame, box)
        five = np.stack([pts[_EYE_L].mean(0), pts[_EYE_R].mean(0), pts[_NOSE_TIP], pts[_MOUTH_L], pts[_MOUTH_R]])
        return Detection(box, five, score, pts)

    def _finish(self, frame: np.ndarray, found: list[tuple[np.ndarray, float]]) -> list[Detection]:
        frame = np.ascontiguousarray(frame)
        return [self._detection(frame, b, s) for b, s in found]

    def _scaled(self, frame: np.ndarray, scale: float, upsample: int) -> list[tuple[np.ndarray, float]]:
        import cv2

        if scale == 1.0:
            return hog_boxes(frame, upsample, self.cfg.threshold)
        h, w = frame.shape[:2]
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
        return [(b / scale, s) for b, s in hog_boxes(small, upsample, self.cfg.threshold)]

    def _cascade(self, img: np.ndarray, steps: list[tuple[float, int]]) -> list[Detection]:
        """The first step (scale, upsample) that finds anything; landmarks on ``img`` itself."""
        for scale, up in steps:
            found = self._scaled(img, scale, up)
            if found:
                return self._finish(img, found)
        return []

    def _rotated(self, img: np.ndarray, steps: list[tuple[float, int]], offset: np.ndarray) -> list[Detection]:
        import cv2

        for angle in self.cfg.rotations:
            m = _rotation(img.shape, angle)
            rot = cv2.warpAffine(
                np.ascontiguousarray(img),
                m,
                (img.shape[1], img.shape[0]),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            )
            found = self._cascade(rot, steps)
            if found:
                return [_map_back(d, m, offset) for d in found]
        return []

    def _steps(self, width: int) -> list[tuple[float, int]]:
        """The "auto" cascade's (scale, upsample) steps for a frame ``width`` pixels wide, cheapest first."""
        steps: list[tuple[float, int]] = []
        if width > self.cfg.fast_width * 1.25:
            steps.append((self.cfg.fast_width / width, 0))
        return steps + [(1.0, k) for k in range(0, self.cfg.max_upsample + 1)]

    def detect(self, frame: np.ndarray) -> list[Detection]:
        if self.cfg.upsample != "auto":
            return self._finish(frame, hog_boxes(frame, int(self.cfg.upsample), self.cfg.threshold))
        steps = self._steps(frame.shape[1])
        found = self._cascade(frame, steps)
        if found or not self.cfg.rotations:
            return found
        # tilted heads: the upright cascade's cheap steps again on rotated frames
        return self._rotated(frame, steps[:-1] or steps, np.zeros(2))

    def detect_cheap(self, frame: np.ndarray) -> list[Detection]:
        """The first step of :meth:`detect` alone (upright, downscaled): no upsampling, no rotations."""
        if self.cfg.upsample != "auto":
            return self.detect(frame)
        return self._cascade(frame, self._steps(frame.shape[1])[:1])

    def detect_all(self, frame: np.ndarray) -> list[Detection]:
        """Every face, small ones next to large ones too: the cascade's last step on the whole frame, no early stop."""
        if self.cfg.upsample != "auto":
            return self.detect(frame)
        return self._finish(frame, hog_boxes(frame, self.cfg.max_upsample, self.cfg.threshold))

    def detect_near(self, frame: np.ndarray, box: np.ndarray) -> list[Detection]:
        """Search a window of three face widths around ``box``, rescaled so the face is ~100 px."""
        h, w = frame.shape[:2]
        size = max(box[2] - box[0], box[3] - box[1], 1.0)
        x0, y0 = int(max(0, box[0] - size)), int(max(0, box[1] - size))
        x1, y1 = int(min(w, box[2] + size)), int(min(h, box[3] + size))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        crop = frame[y0:y1, x0:x1]
        scale = float(np.clip(self.cfg.track_face_px / size, 0.25, 2.5))
        offset = np.array([x0, y0], dtype=np.float64)
        found = [(b + np.concatenate([offset, offset]), s) for b, s in self._scaled(crop, scale, 0)]
        if found:
            return self._finish(frame, found)  # landmarks on the full-resolution frame
        if self.cfg.upsample == "auto" and self.cfg.rotations:
            return self._rotated(crop, [(scale, 0)], offset)
        return []

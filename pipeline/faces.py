"""Per-video face pipeline: decoded frames -> detect -> follow the subject -> align.

:func:`faces_from_video` and :func:`faces_from_image` are the public entry points (also
re-exported by :mod:`hilif.pipeline.extract`); the evaluation CLI uses the same functions,
so a model sees faces prepared exactly as in training.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import schema
from .align import align_face
from .decode import DecodedFrames, read_image, read_image_sequence, read_video
from .detect import Detection, FaceDetector, make_detector
from .sampling import nearest_with_face
from .track import SubjectTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceConfig:
    """How faces are found and aligned."""

    detector: str = "dlib"  # "dlib" (offline) or "insightface" (SCRFD)
    margin: float = 1.3  # crop size relative to the ArcFace template
    size: int = schema.FACE_SIZE  # aligned face side in pixels
    device: str = "auto"  # insightface: auto / cpu / cuda
    model_dir: str | None = None  # insightface model folder (default ~/.insightface/models/buffalo_l)
    upsample: str | int = "auto"  # dlib: "auto" (only where a frame needs it) or a fixed dlib upsample
    track: bool = True  # search near the subject's last box first (dlib: faster)
    decode_backend: str = "auto"  # auto (decord, PyAV fallback) / decord / pyav

    def validate(self) -> None:
        if self.detector not in ("dlib", "insightface"):
            raise ValueError(f"detector must be dlib or insightface, got {self.detector!r}")
        if not self.margin > 0:
            raise ValueError(f"margin must be positive, got {self.margin}")
        if self.size < 16:
            raise ValueError(f"face size must be at least 16 px, got {self.size}")


@dataclass
class VideoFaces:
    """The faces of one video: one per sampled frame, replaced frames included."""

    faces: list[np.ndarray]  # HxWx3 uint8 RGB aligned faces
    frame_indices: list[int]  # frame each face was taken from
    target_indices: list[int]  # frame asked for (!= frame_indices where replaced)
    replaced: list[bool]
    boxes: list[list[float]]
    landmarks: list[list[list[float]]]
    scores: list[float]
    missing: int  # frames asked for but without a face (no face anywhere, or a short video)
    fps: float
    frame_count: int
    asked: int = 0
    backend: str = ""
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: decode / detect / align

    @property
    def num_replaced(self) -> int:
        return int(sum(self.replaced))


_DETECTORS: dict[tuple, FaceDetector] = {}


def get_detector(cfg: FaceConfig) -> FaceDetector:
    """A detector for ``cfg``, loaded once per process."""
    key = (cfg.detector, cfg.upsample, cfg.model_dir, cfg.device)
    if key not in _DETECTORS:
        _DETECTORS[key] = make_detector(cfg.detector, upsample=cfg.upsample, model_dir=cfg.model_dir, device=cfg.device)
    return _DETECTORS[key]


def detect_subject(frames: Sequence[np.ndarray], detector: FaceDetector, track: bool = True) -> list[Detection | None]:
    """The followed subject's detection in each frame (None where it is not found)."""
    tracker = SubjectTracker()
    out: list[Detection | None] = []
    for frame in frames:
        chosen = None
        if track and tracker.box is not None:
            chosen = tracker.update(detector.detect_near(frame, tracker.box))
        if chosen is None:
            chosen = tracker.update(detector.detect(frame))
        out.append(chosen)
    return out


def faces_from_frames(decoded: DecodedFrames, cfg: FaceConfig, asked: int,
                      detector: FaceDetector | None = None) -> VideoFaces:
    cfg.validate()
    det = detector or get_detector(cfg)
    t0 = time.perf_counter()
    found = detect_subject(decoded.frames, det, track=cfg.track)
    t1 = time.perf_counter()
    pick = nearest_with_face([d is not None for d in found])
    vf = VideoFaces([], [], [], [], [], [], [], 0, decoded.fps, decoded.frame_count, asked=asked,
                    backend=decoded.backend, notes=list(decoded.notes))
    aligned: dict[int, np.ndarray] = {}
    for pos, src in enumerate(pick):
        if src is None:
            continue
        d = found[src]
        assert d is not None
        if src not in aligned:
            aligned[src] = align_face(decoded.frames[src], d.landmarks, cfg.size, cfg.margin)
        vf.faces.append(aligned[src])
        vf.frame_indices.append(int(decoded.indices[src]))
        vf.target_indices.append(int(decoded.indices[pos]))
        vf.replaced.append(src != pos)
        vf.boxes.append([round(float(v), 2) for v in d.box])
        vf.landmarks.append([[round(float(x), 2), round(float(y), 2)] for x, y in d.landmarks])
        vf.scores.append(round(float(d.score), 4))
    t2 = time.perf_counter()
    vf.missing = asked - len(vf.faces)
    if len(decoded.indices) < asked:
        vf.notes.append(f"video has only {decoded.frame_count} frames, {asked} asked")
    vf.timings.update(detect=t1 - t0, align=t2 - t1)
    return vf


def faces_from_video(path: str | Path, num_frames: int, cfg: FaceConfig | None = None) -> VideoFaces:
    """Aligned faces of the main subject on ``num_frames`` uniformly sampled frames."""
    cfg = cfg or FaceConfig()
    t0 = time.perf_counter()
    decoded = read_video(path, num_frames, backend=cfg.decode_backend)
    t1 = time.perf_counter()
    vf = faces_from_frames(decoded, cfg, num_frames)
    vf.timings["decode"] = t1 - t0
    return vf


def faces_from_sequence(frames: Sequence[str], num_frames: int, cfg: FaceConfig | None = None,
                        archive: str | None = None) -> VideoFaces:
    """Like :func:`faces_from_video` for an image sequence (files, or members of a tar archive)."""
    cfg = cfg or FaceConfig()
    t0 = time.perf_counter()
    decoded = read_image_sequence(frames, num_frames, archive=archive)
    t1 = time.perf_counter()
    vf = faces_from_frames(decoded, cfg, num_frames)
    vf.timings["decode"] = t1 - t0
    return vf


def faces_from_image(path: str | Path, cfg: FaceConfig | None = None) -> VideoFaces:
    """The main face of one image (a one-frame "video")."""
    cfg = cfg or FaceConfig()
    img = read_image(path)
    decoded = DecodedFrames([img], [0], 1, 0.0, "image")
    return faces_from_frames(decoded, cfg, 1)

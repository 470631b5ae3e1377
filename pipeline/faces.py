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
from typing import Callable, Sequence

import numpy as np

from . import schema
from .align import align_face, similarity_matrix, to_aligned
from .decode import DecodedFrames, read_frames_at, read_image, read_image_sequence, read_sequence_at, read_video
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
    probe: int = 4  # a sampled frame without the subject: try up to this many neighbouring frames first
    decode_backend: str = "auto"  # auto (decord, PyAV fallback) / decord / pyav
    det_batch: int = 16  # insightface: frames per SCRFD session run (does not change the results)

    def validate(self) -> None:
        if self.detector not in ("dlib", "insightface"):
            raise ValueError(f"detector must be dlib or insightface, got {self.detector!r}")
        if not self.margin > 0:
            raise ValueError(f"margin must be positive, got {self.margin}")
        if self.size < 16:
            raise ValueError(f"face size must be at least 16 px, got {self.size}")
        if self.probe < 0:
            raise ValueError(f"--probe must be >= 0, got {self.probe}")
        if self.det_batch < 1:
            raise ValueError(f"--det-batch must be >= 1, got {self.det_batch}")


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
    #: per face: the five points and the dense landmarks (dlib 68 / insightface 106; [] when the
    #: detector gives none) in aligned-face pixels (schema version 2)
    aligned_landmarks: list[list[list[float]]] = field(default_factory=list)
    dense_landmarks: list[list[list[float]]] = field(default_factory=list)

    @property
    def num_replaced(self) -> int:
        return int(sum(self.replaced))


_DETECTORS: dict[tuple, FaceDetector] = {}


def get_detector(cfg: FaceConfig) -> FaceDetector:
    """A detector for ``cfg``, loaded once per process."""
    key = (cfg.detector, cfg.upsample, cfg.model_dir, cfg.device, cfg.det_batch)
    if key not in _DETECTORS:
        _DETECTORS[key] = make_detector(cfg.detector, upsample=cfg.upsample, model_dir=cfg.model_dir, device=cfg.device,
                                        batch=cfg.det_batch)
    return _DETECTORS[key]


def detect_subject(frames: Sequence[np.ndarray], detector: FaceDetector, track: bool = True) -> list[Detection | None]:
    """The followed subject's detection in each frame (None where it is not found).

    A detector whose ``detect_near`` is its whole-frame ``detect`` (``batch_detect = True``, SCRFD)
    detects all frames first with ``detect_batch``; the tracker then picks from the same lists.
    """
    tracker = SubjectTracker()
    out: list[Detection | None] = []
    if getattr(detector, "batch_detect", False):
        for dets in detector.detect_batch(frames):  # type: ignore[attr-defined]
            out.append(tracker.update(dets))
        return out
    for frame in frames:
        chosen = None
        if track and tracker.box is not None:
            chosen = tracker.update(detector.detect_near(frame, tracker.box))
        if chosen is None:
            chosen = tracker.update(detector.detect(frame))
        out.append(chosen)
    return out


def probe_indices(pos: int, indices: Sequence[int], frame_count: int, limit: int) -> list[int]:
    """Unsampled frames around ``indices[pos]``, nearest first (earlier on ties), at most ``limit``.

    They stay strictly inside the midpoints to the neighbouring samples, so a probe never
    takes a frame that is closer to another sample.
    """
    t = indices[pos]
    lo = (indices[pos - 1] + t) // 2 + 1 if pos > 0 else 0
    hi = (t + indices[pos + 1] - 1) // 2 if pos + 1 < len(indices) else frame_count - 1
    out: list[int] = []
    d = 1
    while len(out) < limit and (t - d >= lo or t + d <= hi):
        for c in (t - d, t + d):
            if lo <= c <= hi and len(out) < limit:
                out.append(c)
        d += 1
    return out


Fetch = Callable[[list[int]], list[np.ndarray]]


def _probe(decoded: DecodedFrames, found: list[Detection | None], det: FaceDetector, fetch: Fetch,
           limit: int) -> dict[int, tuple[int, np.ndarray, Detection]]:
    """For sampled frames without the subject: the nearest neighbouring frame that has it."""
    hits = [i for i, d in enumerate(found) if d is not None]
    holes = [i for i, d in enumerate(found) if d is None]
    if not hits or not holes or limit <= 0:
        return {}
    cands = {p: probe_indices(p, decoded.indices, decoded.frame_count, limit) for p in holes}
    wanted = sorted({i for c in cands.values() for i in c})
    try:
        frames = dict(zip(wanted, fetch(wanted)))
    except Exception as exc:  # e.g. a tail the container lists but cannot decode: keep sampled frames only
        log.debug("probing frames %s failed: %s", wanted[:8], exc)
        return {}
    out: dict[int, tuple[int, np.ndarray, Detection]] = {}
    for p in holes:
        ref = found[min(hits, key=lambda j: (abs(j - p), j))]
        assert ref is not None
        for fi in cands[p]:
            tracker = SubjectTracker(last=ref)  # the subject as seen in the nearest sampled frame
            d = tracker.pick(det.detect_near(frames[fi], ref.box)) or tracker.pick(det.detect(frames[fi]))
            if d is not None:
                out[p] = (fi, frames[fi], d)
                break
    return out


def faces_from_frames(decoded: DecodedFrames, cfg: FaceConfig, asked: int,
                      detector: FaceDetector | None = None, fetch: Fetch | None = None) -> VideoFaces:
    """Faces of the followed subject in ``decoded``; ``fetch(indices)`` decodes neighbours for probing."""
    cfg.validate()
    det = detector or get_detector(cfg)
    t0 = time.perf_counter()
    found = detect_subject(decoded.frames, det, track=cfg.track)
    probed = _probe(decoded, found, det, fetch, cfg.probe) if fetch is not None else {}
    t1 = time.perf_counter()
    pick = nearest_with_face([d is not None for d in found])
    vf = VideoFaces([], [], [], [], [], [], [], 0, decoded.fps, decoded.frame_count, asked=asked,
                    backend=decoded.backend, notes=list(decoded.notes))
    aligned: dict[int, np.ndarray] = {}
    for pos, src in enumerate(pick):
        if src is None:
            continue
        if pos in probed:  # a neighbouring, unsampled frame
            frame_index, frame, d = probed[pos]
            face = align_face(frame, d.landmarks, cfg.size, cfg.margin)
        else:  # the frame itself, or the nearest sampled frame with the subject
            d = found[src]
            assert d is not None
            if src not in aligned:
                aligned[src] = align_face(decoded.frames[src], d.landmarks, cfg.size, cfg.margin)
            frame_index, face = int(decoded.indices[src]), aligned[src]
        vf.faces.append(face)
        vf.frame_indices.append(int(frame_index))
        vf.target_indices.append(int(decoded.indices[pos]))
        vf.replaced.append(int(frame_index) != int(decoded.indices[pos]))
        vf.boxes.append([round(float(v), 2) for v in d.box])
        vf.landmarks.append(_round_points(d.landmarks))
        vf.scores.append(round(float(d.score), 4))
        five, dense = aligned_points(d, frame if pos in probed else decoded.frames[src], det, cfg)
        vf.aligned_landmarks.append(five)
        vf.dense_landmarks.append(dense)
    t2 = time.perf_counter()
    vf.missing = asked - len(vf.faces)
    if len(decoded.indices) < asked:
        vf.notes.append(f"video has only {decoded.frame_count} frames, {asked} asked")
    vf.timings.update(detect=t1 - t0, align=t2 - t1)
    return vf


def _round_points(points: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 2), round(float(y), 2)] for x, y in points]


def aligned_points(d: Detection, frame: np.ndarray, detector: FaceDetector,
                   cfg: FaceConfig) -> tuple[list[list[float]], list[list[float]]]:
    """The five points and the dense landmarks of ``d`` in aligned-face pixels ([] without dense ones).

    A detector that finds dense landmarks only on request (insightface's 106-point model) runs
    them here, for the followed face alone."""
    dense = d.dense
    if dense is None and hasattr(detector, "dense_landmarks"):
        dense = detector.dense_landmarks(frame, d)  # type: ignore[attr-defined]
    m = similarity_matrix(d.landmarks, cfg.size, cfg.margin)
    return _round_points(to_aligned(d.landmarks, m)), ([] if dense is None else _round_points(to_aligned(dense, m)))


def video_fetch(path: str | Path, decoded: DecodedFrames) -> Fetch:
    """Decodes more frames of ``path`` with the backend that decoded ``decoded``."""
    return lambda idx: read_frames_at(path, idx, backend=decoded.backend)


def sequence_fetch(frames: Sequence[str], archive: str | None) -> Fetch:
    return lambda idx: read_sequence_at(frames, idx, archive=archive)


def faces_from_video(path: str | Path, num_frames: int, cfg: FaceConfig | None = None) -> VideoFaces:
    """Aligned faces of the main subject on ``num_frames`` uniformly sampled frames."""
    cfg = cfg or FaceConfig()
    t0 = time.perf_counter()
    decoded = read_video(path, num_frames, backend=cfg.decode_backend)
    t1 = time.perf_counter()
    vf = faces_from_frames(decoded, cfg, num_frames, fetch=video_fetch(path, decoded))
    vf.timings["decode"] = t1 - t0
    return vf


def faces_from_sequence(frames: Sequence[str], num_frames: int, cfg: FaceConfig | None = None,
                        archive: str | None = None) -> VideoFaces:
    """Like :func:`faces_from_video` for an image sequence (files, or members of a tar archive)."""
    cfg = cfg or FaceConfig()
    t0 = time.perf_counter()
    decoded = read_image_sequence(frames, num_frames, archive=archive)
    t1 = time.perf_counter()
    vf = faces_from_frames(decoded, cfg, num_frames, fetch=sequence_fetch(frames, archive))
    vf.timings["decode"] = t1 - t0
    return vf


def faces_from_image(path: str | Path, cfg: FaceConfig | None = None) -> VideoFaces:
    """The main face of one image (a one-frame "video")."""
    cfg = cfg or FaceConfig()
    img = read_image(path)
    decoded = DecodedFrames([img], [0], 1, 0.0, "image")
    return faces_from_frames(decoded, cfg, 1)

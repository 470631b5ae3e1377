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

from hilif.common.options import auto_or_count, option

from . import schema
from .align import align_face, similarity_matrix, to_aligned
from .decode import DecodedFrames, read_frames_at, read_image, read_image_sequence, read_sequence_at, read_video
from .detectors import Detection, FaceDetector, make_detector
from .sampling import nearest_with_face
from .shots import ShotConfig, detect_cuts
from .track import SubjectTracker, box_iou, shot_of_positions, size_order, track_faces

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceConfig:
    """How faces are found and aligned."""

    detector: str = option("dlib (offline) | insightface (SCRFD).", "dlib")
    margin: float = option("Face crop margin: crop size relative to the ArcFace template.", 1.3)
    size: int = option("Aligned face size in pixels.", schema.FACE_SIZE)
    device: str = option("insightface: auto | cuda | cpu.", "auto")
    model_dir: str | None = option(
        "insightface model folder (default: ~/.insightface/models/buffalo_l).", None, type=Path
    )
    upsample: str | int = option(
        "dlib upsample: auto (only where a frame needs it) or N.", "auto", type=str, parse=auto_or_count
    )
    track: bool = True  # search near the subject's last box first (dlib: faster)
    probe: int = option(
        "A sampled frame without the face: neighbouring frames tried before the nearest sampled one.", 4
    )
    decode_backend: str = "auto"  # auto (decord, PyAV fallback) / decord / pyav
    # does not change the results
    det_batch: int = option("insightface: frames per SCRFD run (models with a dynamic batch axis).", 16)
    faces: str = option(
        "subject: one face per frame, the subject of each shot; all: every tracked person as its own sample stream.",
        "subject",
    )
    cut_threshold: float = option(
        "Colour-histogram distance between consecutive sampled frames that starts a new shot (>= 1: no cut detection).",
        0.35,
    )
    full_every: int = 8  # where the face is lost: the full search at least every this many sampled frames

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
        if self.faces not in FACES_MODES:
            raise ValueError(f"--faces must be one of {', '.join(FACES_MODES)}, got {self.faces!r}")
        if not self.cut_threshold > 0:
            raise ValueError(f"--cut-threshold must be > 0 (>= 1 turns cut detection off), got {self.cut_threshold}")
        if self.full_every < 1:
            raise ValueError(f"full_every must be >= 1, got {self.full_every}")


#: --faces: one subject per shot (the default), or every tracked person
FACES_MODES = ("subject", "all")


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
    #: per face: its position among the sampled frames and its track (-1: the shot's subject, --faces subject)
    positions: list[int] = field(default_factory=list)
    tracks: list[int] = field(default_factory=list)
    #: per sampled frame: its shot; and the positions where a new shot starts
    shots: list[int] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)
    sampled: list[int] = field(default_factory=list)  # the sampled frame indices

    def shot_spans(self) -> list[tuple[int, int]]:
        """Each shot's first and last sampled frame index."""
        spans: dict[int, list[int]] = {}
        for shot, fi in zip(self.shots, self.sampled):
            spans.setdefault(shot, []).append(fi)
        return [(v[0], v[-1]) for _, v in sorted(spans.items())]

    @property
    def num_replaced(self) -> int:
        return int(sum(self.replaced))


_DETECTORS: dict[tuple, FaceDetector] = {}


def get_detector(cfg: FaceConfig) -> FaceDetector:
    """A detector for ``cfg``, loaded once per process."""
    key = (cfg.detector, cfg.upsample, cfg.model_dir, cfg.device, cfg.det_batch)
    if key not in _DETECTORS:
        _DETECTORS[key] = make_detector(
            cfg.detector, upsample=cfg.upsample, model_dir=cfg.model_dir, device=cfg.device, batch=cfg.det_batch
        )
    return _DETECTORS[key]


def detect_subject(
    frames: Sequence[np.ndarray],
    detector: FaceDetector,
    track: bool = True,
    cuts: Sequence[int] = (),
    full_every: int = 8,
) -> list[Detection | None]:
    """The followed subject's detection in each frame (None where it is not found).

    The subject is chosen afresh at the start of every shot (``cuts``: positions where a new shot
    starts). A detector whose ``detect_near`` is its whole-frame ``detect`` (``batch_detect =
    True``, SCRFD) detects all frames first with ``detect_batch``; the tracker then picks from the
    same lists. Otherwise each frame is searched near the subject's last box first, then over the
    whole frame with the full search (:meth:`detect`: upsampling, rotations; where that stops at
    other people's faces, ``detect_all`` looks for the subject among every face) - but once the full
    search has found nothing, the following frames of the shot get only the cheap whole-frame
    pass (``detect_cheap``), with the full search again after 2, 4, ... sampled frames (at most
    ``full_every``). When a face turns up again, the frames that had only the cheap pass are
    searched fully, backwards from it, until one has no face. A shot without a face thus costs
    one cheap pass per frame and a few full searches.
    """
    shots = shot_of_positions(len(frames), cuts)
    tracker = SubjectTracker(frame_size=(frames[0].shape[1], frames[0].shape[0]) if len(frames) else None)
    if not getattr(detector, "batch_detect", False):
        return _SubjectSearch(frames, detector, track, full_every).run(shots, tracker)
    out: list[Detection | None] = []
    for pos, dets in enumerate(detector.detect_batch(frames)):  # type: ignore[attr-defined]
        if pos and shots[pos] != shots[pos - 1]:
            tracker.reset()
        out.append(tracker.update(dets))
    return out


class _SubjectSearch:
    """:func:`detect_subject` for a detector searched frame by frame (dlib): the cascade described there."""

    def __init__(self, frames: Sequence[np.ndarray], detector: FaceDetector, track: bool, full_every: int) -> None:
        self.frames, self.detector, self.track, self.full_every = frames, detector, track, full_every
        self.cheap = getattr(detector, "detect_cheap", detector.detect)
        self.every = getattr(detector, "detect_all", None)

    def run(self, shots: Sequence[int], tracker: SubjectTracker) -> list[Detection | None]:
        out: list[Detection | None] = []
        skipped: list[int] = []  # positions of this shot that had the cheap pass only, since the last full miss
        next_full, gap = 0, 0
        for pos, frame in enumerate(self.frames):
            if pos and shots[pos] != shots[pos - 1]:
                tracker.reset()
                skipped, next_full, gap = [], pos, 0
            if pos < next_full:  # after a full search that found nothing: the cheap pass only
                chosen = tracker.update(self.cheap(frame))
                if chosen is None:
                    skipped.append(pos)
            else:
                chosen = self._search(frame, tracker)
                if chosen is None:  # the full search found nothing: cheap passes until the next full one
                    gap = min(max(2, 2 * gap), self.full_every)
                    next_full = pos + gap
            out.append(chosen)
            if chosen is not None:
                next_full, gap = pos + 1, 0
                self._search_back(out, skipped, chosen)
                skipped = []
        return out

    def _full(self, frame: np.ndarray, tr: SubjectTracker) -> Detection | None:
        dets = self.detector.detect(frame)
        d = tr.pick(dets)
        if d is None and dets and tr.last is not None and self.every is not None:
            d = tr.pick(self.every(frame))  # the search stopped at other people's faces: look for the subject too
        return d

    def _search(self, frame: np.ndarray, tracker: SubjectTracker) -> Detection | None:
        """Near the subject's last box first (when tracking), then the full search."""
        chosen = None
        if self.track and tracker.box is not None:
            chosen = tracker.update(self.detector.detect_near(frame, tracker.box))
        if chosen is None:
            chosen = self._full(frame, tracker)
            if chosen is not None:
                tracker.last = chosen
        return chosen

    def _search_back(self, out: list[Detection | None], skipped: list[int], ref: Detection) -> None:
        """The full search on the frames that had the cheap pass only, backwards from ``ref`` until one has no face."""
        for q in reversed(skipped):
            back = SubjectTracker(last=ref)
            frame = self.frames[q]
            near = back.pick(self.detector.detect_near(frame, ref.box)) if self.track else None
            d = near or self._full(frame, back)
            if d is None:
                break
            out[q] = ref = d


def _merge(dets: Sequence[Detection], overlap: float = 0.5) -> list[Detection]:
    """``dets`` without repeats: a box that covers more than ``overlap`` of an earlier kept one, or is
    covered by it that much, is dropped (two searches at different scales give one face boxes of different sizes)."""
    kept: list[Detection] = []
    for d in dets:
        if all(box_iou(d.box, k.box, of_smaller=True) <= overlap for k in kept):
            kept.append(d)
    return kept


def detect_every_face(
    frames: Sequence[np.ndarray], detector: FaceDetector, cuts: Sequence[int] = (), full_every: int = 8
) -> list[list[Detection]]:
    """Every face in each frame (for ``--faces all``).

    A batch detector (SCRFD) runs on all frames. Otherwise a frame gets the search that finds
    every face (``detect_all``: dlib at upsample 1 over the whole frame) at the start of each shot
    and every ``full_every`` sampled frames; in between, each face seen in the shot during the
    last ``full_every`` frames is searched near its last box (``detect_near``) and the cheap
    whole-frame pass looks for new large faces. A small face that comes into view between two
    full searches is found at the next one, and then searched for near its box in the frames
    before it, back to the previous full search.
    """
    if getattr(detector, "batch_detect", False):
        return detector.detect_batch(frames)  # type: ignore[attr-defined]
    shots = shot_of_positions(len(frames), cuts)
    full = getattr(detector, "detect_all", detector.detect)
    cheap = getattr(detector, "detect_cheap", detector.detect)
    out: list[list[Detection]] = []
    recent: list[tuple[np.ndarray, int]] = []  # last box and position of the faces seen lately in this shot
    last_full = 0
    for pos, frame in enumerate(frames):
        new_shot = pos == 0 or shots[pos] != shots[pos - 1]
        if new_shot:
            recent = []
        if new_shot or pos - last_full >= full_every:
            dets = _merge(sorted(full(frame), key=size_order, reverse=True))
            # a face new to the windows: look for it backwards, near its box, since the last full search
            if not new_shot:
                for d in dets:
                    if any(box_iou(d.box, box) > 0.3 for box, _ in recent):
                        continue
                    ref = d
                    for q in range(pos - 1, last_full, -1):
                        back = SubjectTracker(last=ref).pick(detector.detect_near(frames[q], ref.box))
                        if back is None or any(box_iou(back.box, o.box) > 0.3 for o in out[q]):
                            break
                        out[q] = out[q] + [back]
                        ref = back
            last_full = pos
        else:
            dets = [d for box, _ in recent for d in detector.detect_near(frame, box)] + cheap(frame)
            dets = _merge(sorted(dets, key=size_order, reverse=True))
        out.append(dets)
        kept = [(d.box, pos) for d in dets]
        kept += [
            (box, seen)
            for box, seen in recent
            if pos - seen < full_every and all(box_iou(box, d.box) <= 0.3 for d in dets)
        ]
        recent = kept
    return out


def probe_indices(pos: int, indices: Sequence[int], frame_count: int, limit: int, side: int = 0) -> list[int]:
    """Unsampled frames around ``indices[pos]``, nearest first (earlier on ties), at most ``limit``.

    They stay strictly inside the midpoints to the neighbouring samples, so a probe never
    takes a frame that is closer to another sample. ``side`` 1 keeps only later frames, -1 only
    earlier ones (the sample is the first / last of its shot: the cut lies on the other side).
    """
    t = indices[pos]
    lo = (indices[pos - 1] + t) // 2 + 1 if pos > 0 else 0
    hi = (t + indices[pos + 1] - 1) // 2 if pos + 1 < len(indices) else frame_count - 1
    if side > 0:
        lo = t + 1
    elif side < 0:
        hi = t - 1
    out: list[int] = []
    d = 1
    while len(out) < limit and (t - d >= lo or t + d <= hi):
        for c in (t - d, t + d):
            if lo <= c <= hi and len(out) < limit:
                out.append(c)
        d += 1
    return out


Fetch = Callable[[list[int]], list[np.ndarray]]


def _probe(
    decoded: DecodedFrames,
    found: list[Detection | None],
    det: FaceDetector,
    fetch: Fetch,
    limit: int,
    shots: Sequence[int] | None = None,
) -> dict[int, tuple[int, np.ndarray, Detection]]:
    """For sampled frames without the subject: the nearest neighbouring frame (of the same shot) that has it.

    Probes are searched near the subject's box of the nearest sampled frame that has it; the whole
    frame is searched too only for a frame next to one that has the subject (a long stretch
    without the subject costs one window search per probe).
    """
    shots = [0] * len(found) if shots is None else list(shots)
    hits = [i for i, d in enumerate(found) if d is not None]
    holes = [i for i, d in enumerate(found) if d is None and any(shots[j] == shots[i] for j in hits)]
    if not hits or not holes or limit <= 0:
        return {}

    def candidates(p: int) -> list[int]:
        after_cut = p > 0 and shots[p - 1] != shots[p]  # the frames before it may be in the previous shot
        before_cut = p + 1 < len(shots) and shots[p + 1] != shots[p]
        if after_cut and before_cut:
            return []
        side = 1 if after_cut else -1 if before_cut else 0
        return probe_indices(p, decoded.indices, decoded.frame_count, limit, side)

    cands = {p: candidates(p) for p in holes}
    wanted = sorted({i for c in cands.values() for i in c})
    if not wanted:
        return {}
    try:
        frames = dict(zip(wanted, fetch(wanted)))
    except Exception as exc:  # e.g. a tail the container lists but cannot decode: keep sampled frames only
        log.debug("probing frames %s failed: %s", wanted[:8], exc)
        return {}
    out: dict[int, tuple[int, np.ndarray, Detection]] = {}
    for p in holes:
        near = min((j for j in hits if shots[j] == shots[p]), key=lambda j: (abs(j - p), j))
        ref = found[near]
        assert ref is not None
        for fi in cands[p]:
            tracker = SubjectTracker(last=ref)  # the subject as seen in the nearest sampled frame
            d = tracker.pick(det.detect_near(frames[fi], ref.box))
            if d is None and abs(near - p) == 1:
                d = tracker.pick(det.detect(frames[fi]))
            if d is not None:
                out[p] = (fi, frames[fi], d)
                break
    return out


#: one stream of faces: its track id (-1: the shot's subject), the detection per sampled position,
#: and per position the position whose face fills it (None: no face)
Stream = tuple[int, list[Detection | None], list[int | None]]
#: sampled position -> (frame index, frame, detection) of the unsampled neighbouring frame that replaces it
Probed = dict[int, tuple[int, np.ndarray, Detection]]


def faces_from_frames(
    decoded: DecodedFrames,
    cfg: FaceConfig,
    asked: int,
    detector: FaceDetector | None = None,
    fetch: Fetch | None = None,
) -> VideoFaces:
    """Faces in ``decoded``: the subject of each shot, or (``cfg.faces == "all"``) every tracked person.

    ``fetch(indices)`` decodes neighbouring frames for probing (subject mode). Faces come ordered
    by track, then by sampled frame; a frame without the face is replaced by the nearest sampled
    frame of the same shot (``--faces all``: of the same track, between its first and last frame).
    """
    cfg.validate()
    det = detector or get_detector(cfg)
    t0 = time.perf_counter()
    cuts = detect_cuts(decoded.frames, ShotConfig(threshold=cfg.cut_threshold)) if cfg.cut_threshold < 1 else []
    shots = shot_of_positions(len(decoded.frames), cuts)
    if cfg.faces == "all":
        streams, probed = _track_streams(decoded, det, cfg, cuts, shots), {}
    else:
        streams, probed = _subject_stream(decoded, det, cfg, cuts, shots, fetch)
    t1 = time.perf_counter()
    vf = VideoFaces(
        [],
        [],
        [],
        [],
        [],
        [],
        [],
        0,
        decoded.fps,
        decoded.frame_count,
        asked=asked,
        backend=decoded.backend,
        notes=list(decoded.notes),
        shots=shots,
        cuts=list(cuts),
        sampled=[int(i) for i in decoded.indices],
    )
    _align_streams(vf, streams, probed, decoded, det, cfg)
    t2 = time.perf_counter()
    vf.missing = asked - len(set(vf.positions))
    if len(decoded.indices) < asked:
        vf.notes.append(f"video has only {decoded.frame_count} frames, {asked} asked")
    vf.timings.update(detect=t1 - t0, align=t2 - t1)
    return vf


def _track_streams(
    decoded: DecodedFrames, det: FaceDetector, cfg: FaceConfig, cuts: Sequence[int], shots: list[int]
) -> list[Stream]:
    """``--faces all``: one stream per tracked person, filled only between its first and last frame."""
    streams: list[Stream] = []
    for t in track_faces(detect_every_face(decoded.frames, det, cuts, cfg.full_every), cuts):
        found = [t.detections.get(pos) for pos in range(len(shots))]
        first, last = min(t.detections), max(t.detections)
        nearest = nearest_with_face([d is not None for d in found])
        streams.append((t.id, found, [src if first <= pos <= last else None for pos, src in enumerate(nearest)]))
    return streams


def _subject_stream(
    decoded: DecodedFrames,
    det: FaceDetector,
    cfg: FaceConfig,
    cuts: Sequence[int],
    shots: list[int],
    fetch: Fetch | None,
) -> tuple[list[Stream], Probed]:
    """``--faces subject``: the subject of each shot, and the neighbouring frames probed where it is missing."""
    found = detect_subject(decoded.frames, det, track=cfg.track, cuts=cuts, full_every=cfg.full_every)
    probed = _probe(decoded, found, det, fetch, cfg.probe, shots) if fetch is not None else {}
    return [(-1, found, nearest_with_face([d is not None for d in found], shots))], probed


def _align_streams(
    vf: VideoFaces, streams: list[Stream], probed: Probed, decoded: DecodedFrames, det: FaceDetector, cfg: FaceConfig
) -> None:
    """Align every stream's face at every position it fills and add it to ``vf``."""
    # (track, source frame) -> aligned face, its five points and dense landmarks: a frame that fills several
    # positions (replacement) is aligned and its landmarks run once
    aligned: dict[tuple[int, int], tuple[np.ndarray, list[list[float]], list[list[float]]]] = {}
    for track_id, found, pick in streams:
        for pos, src in enumerate(pick):
            if src is None:
                continue
            if pos in probed:  # a neighbouring, unsampled frame
                frame_index, frame, d = probed[pos]
                face = align_face(frame, d.landmarks, cfg.size, cfg.margin)
                five, dense = aligned_points(d, frame, det, cfg)
            else:  # the frame itself, or the nearest sampled frame with the subject
                d = found[src]
                assert d is not None
                if (track_id, src) not in aligned:
                    aligned[track_id, src] = (
                        align_face(decoded.frames[src], d.landmarks, cfg.size, cfg.margin),
                        *aligned_points(d, decoded.frames[src], det, cfg),
                    )
                frame_index = int(decoded.indices[src])
                face, five, dense = aligned[track_id, src]
            _add_face(vf, pos, track_id, int(frame_index), int(decoded.indices[pos]), face, d, five, dense)


def _add_face(
    vf: VideoFaces,
    pos: int,
    track_id: int,
    frame_index: int,
    target_index: int,
    face: np.ndarray,
    d: Detection,
    five: list[list[float]],
    dense: list[list[float]],
) -> None:
    vf.positions.append(pos)
    vf.tracks.append(track_id)
    vf.faces.append(face)
    vf.frame_indices.append(frame_index)
    vf.target_indices.append(target_index)
    vf.replaced.append(frame_index != target_index)
    vf.boxes.append([round(float(v), 2) for v in d.box])
    vf.landmarks.append(_round_points(d.landmarks))
    vf.scores.append(round(float(d.score), 4))
    vf.aligned_landmarks.append(five)
    vf.dense_landmarks.append(dense)


def _round_points(points: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 2), round(float(y), 2)] for x, y in points]


def aligned_points(
    d: Detection, frame: np.ndarray, detector: FaceDetector, cfg: FaceConfig
) -> tuple[list[list[float]], list[list[float]]]:
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


def faces_from_sequence(
    frames: Sequence[str], num_frames: int, cfg: FaceConfig | None = None, archive: str | None = None
) -> VideoFaces:
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

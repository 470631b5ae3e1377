"""Follow faces across the sampled frames of a video.

:class:`SubjectTracker` follows one subject: the largest face of the first frame where a
face is found; in later frames only a face close to the subject's last position (centre
within ``gate`` face widths, size within a factor ``size_ratio``) is taken, so the crop
never jumps to another person. A frame where only other people are found counts as "no
face" and is replaced by the nearest frame of the same shot that has the subject.

:func:`track_faces` follows every person: detections of consecutive frames are joined
into :class:`Track` objects by the same gate and size rule, one-to-one (Hungarian
assignment on the centre distance); a track never crosses a cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .detectors import Detection


def size_order(d: Detection, frame_size: tuple[int, int] | None = None) -> tuple:
    """Sort key of "the larger face first": area (inside a frame of ``frame_size`` (w, h) when given, so a
    face half out of the picture counts as smaller), then score, then position (deterministic)."""
    if frame_size is None:
        area = d.area
    else:
        w = min(d.box[2], frame_size[0]) - max(d.box[0], 0.0)
        h = min(d.box[3], frame_size[1]) - max(d.box[1], 0.0)
        area = max(w, 0.0) * max(h, 0.0)
    return (round(area, 3), d.score, -d.box[0], -d.box[1])


def box_iou(a: Sequence[float], b: Sequence[float], of_smaller: bool = False) -> float:
    """Intersection over union of two boxes x0 y0 x1 y1 (``of_smaller``: over the smaller box's area)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    whole = min(area_a, area_b) if of_smaller else area_a + area_b - inter
    return float(inter / whole) if whole > 0 else 0.0


def gate_distance(ref: Detection, d: Detection, gate: float, size_ratio: float) -> float | None:
    """Centre distance from ``ref`` to ``d`` when ``d`` can be the same face, else None.

    The same face: centre within ``gate`` times ``ref``'s size, width within a factor ``size_ratio``.
    """
    size = max(ref.width, ref.height, 1.0)
    dist = float(np.linalg.norm(d.center - ref.center))
    ratio = max(d.width, 1.0) / max(ref.width, 1.0)
    if dist > gate * size or not (1 / size_ratio <= ratio <= size_ratio):
        return None
    return dist


@dataclass
class SubjectTracker:
    gate: float = 1.0
    size_ratio: float = 2.0
    last: Detection | None = None
    frame_size: tuple[int, int] | None = None  # (w, h): the first subject is the largest face inside the frame

    @property
    def box(self) -> np.ndarray | None:
        return None if self.last is None else self.last.box

    def pick(self, dets: list[Detection]) -> Detection | None:
        """The subject among ``dets`` (without updating the state)."""
        if not dets:
            return None
        if self.last is None:
            return max(dets, key=lambda d: size_order(d, self.frame_size))
        best, best_dist = None, None
        for d in dets:
            dist = gate_distance(self.last, d, self.gate, self.size_ratio)
            if dist is not None and (best_dist is None or dist < best_dist):
                best, best_dist = d, dist
        return best

    def reset(self) -> None:
        """Forget the subject (a new shot starts): the next frame's largest face is taken."""
        self.last = None

    def update(self, dets: list[Detection]) -> Detection | None:
        d = self.pick(dets)
        if d is not None:
            self.last = d
        return d


@dataclass
class Track:
    """One person followed through one shot."""

    id: int  # 0, 1, ... in order of first appearance (same frame: the larger face first)
    detections: dict[int, Detection] = field(default_factory=dict)  # position among the sampled frames -> detection
    shot: int = 0  # the shot the track lives in (tracks never cross a cut)

    @property
    def positions(self) -> list[int]:
        return sorted(self.detections)

    @property
    def last(self) -> Detection:
        return self.detections[max(self.detections)]


def shot_of_positions(num: int, cuts: Sequence[int]) -> list[int]:
    """The shot index of each of ``num`` positions, given the positions where a new shot starts."""
    starts = sorted({int(c) for c in cuts if 0 < int(c) < num})
    out, shot = [], 0
    for pos in range(num):
        while shot < len(starts) and starts[shot] <= pos:
            shot += 1
        out.append(shot)
    return out


def track_faces(
    dets_per_frame: Sequence[Sequence[Detection]],
    cuts: Sequence[int] = (),
    gate: float = 1.0,
    size_ratio: float = 2.0,
    max_gap: int | None = None,
) -> list[Track]:
    """Every person of a video as a track of detections over the sampled frames.

    Frame by frame, the detections are assigned one-to-one to the tracks of the current shot by
    the Hungarian method on the centre distance; a pair is allowed only under the gate and size
    rule of :class:`SubjectTracker` (measured from the track's last detection). A detection left
    over starts a new track (the larger face first). ``cuts`` are the positions where a new shot
    starts: every track ends there. A track not seen for more than ``max_gap`` positions ends too
    (None: it may come back anywhere later in its shot). Tracks are returned by id.
    """
    from scipy.optimize import linear_sum_assignment

    if max_gap is not None and max_gap < 0:
        raise ValueError(f"max_gap must be >= 0 or None, got {max_gap}")
    shots = shot_of_positions(len(dets_per_frame), cuts)
    tracks: list[Track] = []
    active: list[Track] = []
    for pos, dets in enumerate(dets_per_frame):
        if pos > 0 and shots[pos] != shots[pos - 1]:
            active = []
        if max_gap is not None:
            active = [t for t in active if pos - max(t.detections) <= max_gap + 1]
        dets = sorted(dets, key=size_order, reverse=True)
        taken: set[int] = set()
        if active and dets:
            big = 1e9
            cost = np.full((len(active), len(dets)), big)
            for i, t in enumerate(active):
                ref = t.last
                for j, d in enumerate(dets):
                    dist = gate_distance(ref, d, gate, size_ratio)
                    if dist is not None:
                        cost[i, j] = dist
            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols):
                if cost[i, j] < big:
                    active[i].detections[pos] = dets[j]
                    taken.add(int(j))
        for j, d in enumerate(dets):
            if j not in taken:
                t = Track(len(tracks), {pos: d}, shots[pos])
                tracks.append(t)
                active.append(t)
    return tracks

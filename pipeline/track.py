"""Follow one subject across the sampled frames of a video.

The subject is the largest face of the first frame where a face is found; in later
frames only a face close to the subject's last position (centre within ``gate`` face
widths, size within a factor ``size_ratio``) is taken, so the crop never jumps to
another person. A frame where only other people are found counts as "no face" and is
replaced by the nearest frame that has the subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detect import Detection


@dataclass
class SubjectTracker:
    gate: float = 1.0
    size_ratio: float = 2.0
    last: Detection | None = None

    @property
    def box(self) -> np.ndarray | None:
        return None if self.last is None else self.last.box

    def pick(self, dets: list[Detection]) -> Detection | None:
        """The subject among ``dets`` (without updating the state)."""
        if not dets:
            return None
        if self.last is None:
            # the largest face; ties by score, then position (deterministic)
            return max(dets, key=lambda d: (round(d.area, 3), d.score, -d.box[0], -d.box[1]))
        ref = self.last
        size = max(ref.width, ref.height, 1.0)
        best, best_dist = None, None
        for d in dets:
            dist = float(np.linalg.norm(d.center - ref.center))
            ratio = max(d.width, 1.0) / max(ref.width, 1.0)
            if dist > self.gate * size or not (1 / self.size_ratio <= ratio <= self.size_ratio):
                continue
            if best_dist is None or dist < best_dist:
                best, best_dist = d, dist
        return best

    def update(self, dets: list[Detection]) -> Detection | None:
        d = self.pick(dets)
        if d is not None:
            self.last = d
        return d

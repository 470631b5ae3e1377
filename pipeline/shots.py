"""Shot cuts among the sampled frames of a video: a colour-histogram test.

Each sampled frame is reduced to a small image and described by its joint hue-saturation-
value histogram; a new shot starts where the Bhattacharyya distance between the
histograms of two consecutive sampled frames exceeds ``threshold``.

Why histograms and not a pixel difference: consecutive samples are up to a second apart
(20 samples of a 10 s video), and a camera pan, a zoom or a person walking moves most
pixels in that time, so a frame difference is large within a shot too. A colour
histogram does not depend on where things are in the frame, only on what is in it, so it
stays close within a shot and jumps at a cut to another scene. Its blind spot, a cut
between two scenes of the same colours, costs little here: the tracker's position and
size gate still refuses to join two different people.

A single sampled frame unlike both of its neighbours, which are alike (a flash, a black
frame, a frame the codec damaged), is not a shot of its own: no cut is recorded around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ShotConfig:
    threshold: float = 0.35  # Bhattacharyya distance (0 same colours, 1 disjoint) that makes a cut; >= 1: never
    width: int = 96  # frames are reduced to this width before the histogram
    bins: tuple[int, int, int] = (16, 4, 4)  # hue, saturation, value


def frame_histogram(frame: np.ndarray, cfg: ShotConfig = ShotConfig()) -> np.ndarray:
    """The normalised HSV histogram of an RGB frame (float32, sums to 1)."""
    import cv2

    h, w = frame.shape[:2]
    if w > cfg.width:
        frame = cv2.resize(frame, (cfg.width, max(1, round(h * cfg.width / w))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(cfg.bins), [0, 180, 0, 256, 0, 256])
    return (hist / max(float(hist.sum()), 1.0)).astype(np.float32)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    import cv2

    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def detect_cuts(frames: Sequence[np.ndarray], cfg: ShotConfig = ShotConfig()) -> list[int]:
    """Positions (among ``frames``) where a new shot starts; empty for one shot."""
    if len(frames) < 2 or cfg.threshold >= 1:
        return []
    hists = [frame_histogram(f, cfg) for f in frames]
    dist = [histogram_distance(hists[i - 1], hists[i]) for i in range(1, len(hists))]
    cuts = [i for i in range(1, len(frames)) if dist[i - 1] > cfg.threshold]
    flashes = {p for p in cuts if p + 1 in cuts and histogram_distance(hists[p - 1], hists[p + 1]) <= cfg.threshold}
    return [p for p in cuts if p not in flashes and p - 1 not in flashes]

"""Which frames to take from a video: uniform indices, and nearest-frame replacement.

Nothing here drops frames silently: a video shorter than the number asked gives all of
its frames and the caller records the shortfall; a sampled frame without a face is
replaced by the nearest sampled frame of the same shot that has one, and the replacement
is recorded.
"""

from __future__ import annotations

from typing import Sequence


def uniform_indices(frame_count: int, num: int) -> list[int]:
    """``num`` frame indices spread uniformly over ``frame_count`` frames (segment centres).

    Strictly increasing and inside ``[0, frame_count)``. When the video has fewer frames
    than asked, every frame is returned (the caller records how many are short).
    """
    if frame_count <= 0:
        raise ValueError(f"frame_count must be positive, got {frame_count}")
    if num <= 0:
        raise ValueError(f"num must be positive, got {num}")
    if num >= frame_count:
        return list(range(frame_count))
    # centre of each of `num` equal segments; integer arithmetic keeps it exact
    return [((2 * i + 1) * frame_count) // (2 * num) for i in range(num)]


def nearest_with_face(has_face: Sequence[bool], shots: Sequence[int] | None = None) -> list[int | None]:
    """For each position, itself if it has a face, else the nearest position that has one.

    With ``shots`` (the shot index of each position) the nearest position is taken in the same
    shot only: a replacement never crosses a cut. Ties go to the earlier position; ``None`` where
    no position (of the shot) has a face.
    """
    shots = [0] * len(has_face) if shots is None else list(shots)
    if len(shots) != len(has_face):
        raise ValueError(f"{len(shots)} shot indices for {len(has_face)} positions")
    hits: dict[int, list[int]] = {}
    for i, h in enumerate(has_face):
        if h:
            hits.setdefault(shots[i], []).append(i)
    out: list[int | None] = []
    for i, h in enumerate(has_face):
        same = hits.get(shots[i], [])
        if h:
            out.append(i)
        elif not same:
            out.append(None)
        else:
            out.append(min(same, key=lambda j: (abs(j - i), j)))
    return out

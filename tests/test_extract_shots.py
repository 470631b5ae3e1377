"""Footage that is not a slow pan: shot cuts, several people, faceless stretches (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from hilif.pipeline.detect import Detection
from hilif.pipeline.track import SubjectTracker, Track, shot_of_positions, track_faces


def _det(x, y, w, score=1.0):
    return Detection(np.array([x, y, x + w, y + w], float), np.zeros((5, 2)), score)


def test_shot_of_positions():
    assert shot_of_positions(6, [2, 4]) == [0, 0, 1, 1, 2, 2]
    assert shot_of_positions(3, []) == [0, 0, 0]
    assert shot_of_positions(3, [0, 3, 7]) == [0, 0, 0]  # a cut at 0 or past the end starts nothing
    assert shot_of_positions(4, [2, 2]) == [0, 0, 1, 1]


def test_track_faces_two_people_crossing_paths_keep_their_ids():
    """Two people moving towards each other: the one-to-one assignment never swaps them."""
    frames = []
    for k in range(6):
        a = _det(100 + 30 * k, 100, 100)  # moves right
        b = _det(400 - 30 * k, 110, 80)  # moves left, smaller
        frames.append([b, a] if k % 2 else [a, b])  # detector order must not matter
    tracks = track_faces(frames)
    assert [t.id for t in tracks] == [0, 1]
    big, small = tracks
    assert big.positions == small.positions == list(range(6))
    assert all(big.detections[k].box[0] == 100 + 30 * k for k in range(6))  # the larger face is id 0
    assert all(small.detections[k].box[0] == 400 - 30 * k for k in range(6))


def test_track_faces_ends_tracks_at_a_cut_and_orders_ids_by_appearance():
    same_place = _det(200, 100, 100)
    frames = [[same_place], [], [same_place], [_det(205, 100, 100), _det(10, 10, 150)], [_det(20, 12, 150)]]
    tracks = track_faces(frames, cuts=[3])
    # shot 0: one track over 0 and 2 (a gap inside a shot is allowed by default)
    # shot 1: a face at the same place is a new track; ids in order of appearance, larger first
    assert [(t.id, t.shot, t.positions) for t in tracks] == [(0, 0, [0, 2]), (1, 1, [3, 4]), (2, 1, [3])]
    assert tracks[1].detections[3].width == 150
    gap = track_faces(frames[:3], max_gap=0)  # unseen for a position: the track ends
    assert [t.positions for t in gap] == [[0], [2]]
    with pytest.raises(ValueError):
        track_faces(frames, max_gap=-1)


def test_track_faces_gate_and_size_rule_as_the_subject_tracker():
    ref = _det(100, 100, 100)
    far, huge, near = _det(260, 100, 100), _det(100, 100, 260), _det(130, 110, 95)
    for other in (far, huge, near):
        tr = SubjectTracker(last=ref)
        picked = tr.pick([other])
        tracks = track_faces([[ref], [other]])
        joined = len(tracks) == 1
        assert joined == (picked is other)
    assert len(track_faces([[ref], [near]])) == 1 and len(track_faces([[ref], [far]])) == 2

"""Footage that is not a slow pan: shot cuts, several people, faceless stretches (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hilif.pipeline.detectors import Detection
from hilif.pipeline.track import SubjectTracker, shot_of_positions, track_faces


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


# --------------------------------------------------------------------------- real faces, dlib


def _faces():
    """Two different people: a face of insightface's t1.jpg and matplotlib's Grace Hopper (RGB crops)."""
    import cv2
    import insightface
    import matplotlib

    t1 = cv2.imread(str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"))
    hopper = cv2.imread(str(Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"))
    return (
        cv2.cvtColor(np.ascontiguousarray(t1[238:486, 390:639]), cv2.COLOR_BGR2RGB),
        cv2.cvtColor(np.ascontiguousarray(hopper[90:390, 120:420]), cv2.COLOR_BGR2RGB),
    )


def _paste(canvas: np.ndarray, face: np.ndarray, x: int, y: int, size: int) -> np.ndarray:
    import cv2

    canvas[y : y + size, x : x + size] = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
    return canvas


def _write(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    from hilif.pipeline.demo import encode_mp4

    encode_mp4(frames, path, fps, crf=18)
    return path


def _cut_video(path: Path) -> Path:
    """40 frames: person A large on the left (blue room) for 20 frames, a hard cut, person B smaller on the right
    (orange room)."""
    a, b = _faces()
    frames = []
    for i in range(40):
        if i < 20:
            frames.append(_paste(np.full((192, 256, 3), (40, 60, 150), np.uint8), a, 10 + i // 4, 36, 120))
        else:
            frames.append(_paste(np.full((192, 256, 3), (200, 120, 40), np.uint8), b, 150 - (i - 20) // 4, 60, 96))
    return _write(path, frames)


def _task(path: Path, faces: str, num: int = 8):
    from hilif.pipeline.datasets import VideoItem
    from hilif.pipeline.extract import VideoTask
    from hilif.pipeline.faces import FaceConfig

    return VideoTask(
        "folder",
        "raw",
        VideoItem("test", 0, "real", path.stem, str(path), path.name),
        num,
        FaceConfig(faces=faces),
        "png",
    )


def test_cut_between_two_people_two_shots_no_replacement_across(tmp_path):
    from hilif.pipeline.extract import process_video
    from hilif.pipeline.faces import FaceConfig, faces_from_video

    video = _cut_video(tmp_path / "cut.mp4")
    vf = faces_from_video(video, 8, FaceConfig())
    # 8 samples of 40 frames: 2, 7, 12, 17 | 22, 27, 32, 37
    assert vf.cuts == [4] and vf.shots == [0] * 4 + [1] * 4
    assert vf.missing == 0 and not any(vf.replaced)
    after = [k for k, p in enumerate(vf.positions) if p >= 4]
    assert len(after) == 4 and all(vf.frame_indices[k] >= 20 for k in after)  # nothing from before the cut
    assert all(vf.boxes[k][0] > 100 for k in after)  # the second person (on the right), not the first
    assert all(vf.boxes[k][2] < 160 for k in range(len(vf.boxes)) if k not in after)
    # the same video without cut detection: the tracker waits for the first person and replaces
    # every frame after the cut with one from before it (the bug of issue 16)
    old = faces_from_video(video, 8, FaceConfig(cut_threshold=1.0))
    assert old.cuts == [] and old.replaced[4:] == [True] * 4 and all(f < 20 for f in old.frame_indices[4:])
    # the manifest record names the cuts and the shots, each sample its shot; default keys unchanged
    res = process_video(_task(video, "subject"))
    assert res.record["cuts"] == [22] and res.record["shots"] == [[2, 17], [22, 37]] and res.record["tracks"] == 0
    assert [m.shot for m, _ in res.samples] == [0] * 4 + [1] * 4
    assert [m.key for m, _ in res.samples] == [f"folder_real_cut_f{f:06d}" for f in (2, 7, 12, 17, 22, 27, 32, 37)]


def test_faces_all_one_track_per_person_with_distinct_keys(tmp_path):
    from hilif.pipeline.extract import process_video
    from hilif.pipeline.schema import SampleMeta

    a, b = _faces()
    frames = [
        _paste(_paste(np.full((160, 320, 3), 90, np.uint8), a, 15 + i // 3, 20, 110), b, 190 - i // 3, 30, 100)
        for i in range(30)
    ]
    video = _write(tmp_path / "two.mp4", frames)
    res = process_video(_task(video, "all", num=6))
    metas = [m for m, _ in res.samples]
    assert res.record["tracks"] == 2 and res.record["status"] == "ok"
    assert sorted({m.track for m in metas}) == [0, 1]
    sides, widths = [], []
    for t in (0, 1):
        mine = [m for m in metas if m.track == t]
        assert len(mine) == 6 and [m.target_index for m in mine] == [2, 7, 12, 17, 22, 27]
        left = [m.box[0] < 160 for m in mine]
        assert len(set(left)) == 1  # each track is one person: always on the same side
        sides.append(left[0])
        widths.append(np.mean([m.box[2] - m.box[0] for m in mine]))
    assert sides[0] != sides[1] and widths[0] > widths[1]  # two people, the larger face is track 0
    keys = [m.key for m in metas]
    assert len(set(keys)) == len(keys) == 12 and all(k.endswith(("_t00", "_t01")) for k in keys)
    assert [SampleMeta.from_json(m.to_json()).key for m in metas] == keys  # the track survives the round trip
    subject = process_video(_task(video, "subject", num=6))
    assert [m.track for m, _ in subject.samples] == [-1] * 6 and [m.key for m, _ in subject.samples] == [
        f"folder_real_two_f{f:06d}" for f in (2, 7, 12, 17, 22, 27)
    ]
    assert all((m.box[0] < 160) == sides[0] for m, _ in subject.samples)  # the subject: the larger face


# --------------------------------------------------------------------------- bounded cost without faces


class CountingDetector:
    """A stand-in detector: frame[0, 0, 0] is 0 (no face), 1 (a face only the full search finds) or
    2 (a face the cheap pass finds too); it counts its calls."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = {"detect": 0, "detect_cheap": 0, "detect_near": 0, "detect_all": 0}

    def _face(self, frame: np.ndarray, kinds: tuple[int, ...]) -> list[Detection]:
        return [_det(40, 40, 50)] if int(frame[0, 0, 0]) in kinds else []

    def detect(self, frame):
        self.calls["detect"] += 1
        return self._face(frame, (1, 2))

    def detect_all(self, frame):
        self.calls["detect_all"] += 1
        return self._face(frame, (1, 2))

    def detect_cheap(self, frame):
        self.calls["detect_cheap"] += 1
        return self._face(frame, (2,))

    def detect_near(self, frame, box):
        self.calls["detect_near"] += 1
        return self._face(frame, (1, 2))


def _frames(kinds: list[int]) -> list[np.ndarray]:
    out = []
    for k in kinds:
        f = np.full((120, 160, 3), 100, np.uint8)
        f[0, 0, 0] = k
        out.append(f)
    return out


def test_faceless_video_no_face_within_a_bounded_number_of_full_searches():
    from hilif.pipeline.faces import detect_subject

    n = 80
    det = CountingDetector()
    found = detect_subject(_frames([0] * n), det, full_every=8)
    assert found == [None] * n
    # full searches at 0, 2, 6, 14, 22, ..., 78 (every 8 at most): 12, not 80; a cheap pass elsewhere
    assert det.calls["detect"] == 12 and det.calls["detect_cheap"] == n - 12
    assert det.calls["detect_all"] == 0 and det.calls["detect_near"] == 0
    # a new shot starts with the full search again
    det = CountingDetector()
    detect_subject(_frames([0] * n), det, cuts=[40], full_every=8)
    assert det.calls["detect"] == 2 * 7  # 0, 2, 6, 14, 22, 30, 38 in each half


def test_face_after_a_faceless_stretch_is_found_on_every_frame():
    """Cheap passes in between must not lose a face that only the full search finds: backfill."""
    from hilif.pipeline.faces import detect_subject

    kinds = [0] * 25 + [1] * 15 + [0] * 10 + [2] * 10
    det = CountingDetector()
    found = detect_subject(_frames(kinds), det, full_every=8)
    assert [d is not None for d in found] == [k > 0 for k in kinds]
    assert det.calls["detect"] < len(kinds) // 2


def test_faceless_video_recorded_no_face_with_dlib(tmp_path):
    """A real faceless video through the real detector: "no face", and a bounded number of full searches."""
    import skimage.data

    from hilif.pipeline.extract import process_video
    from hilif.pipeline.faces import FaceConfig, get_detector

    scene = np.ascontiguousarray(skimage.data.coffee()[:, :, :3])
    video = _write(
        tmp_path / "noface.mp4",
        [np.ascontiguousarray(np.roll(scene, 4 * i, axis=1)[100:292, 100:356]) for i in range(60)],
    )
    det = get_detector(FaceConfig())
    calls = {"detect": 0, "detect_cheap": 0}
    for name in calls:
        orig = getattr(det, name)

        def counted(frame, _orig=orig, _name=name):
            calls[_name] += 1
            return _orig(frame)

        setattr(det, name, counted)
    try:
        res = process_video(_task(video, "subject", num=30))
    finally:
        for name in calls:
            delattr(det, name)
    assert res.record["status"] == "noface" and res.samples == [] and res.record["missing"] == 30
    assert "no face" in res.record["reason"]
    assert calls["detect"] <= 7 and calls["detect"] + calls["detect_cheap"] == 30  # 0, 2, 6, 14, 22: not 30

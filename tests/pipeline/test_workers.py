"""Worker pool: deadlines enforced from outside the worker, crashes recorded, recycling; decode fallback."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from hilif.pipeline.workers import PoolConfig, WorkerPool


def _handler(payload, report):
    kind, arg = payload
    if kind == "hang_decode":  # never reports the decode phase done
        time.sleep(arg)
    elif kind == "slow_detect":
        report("detect")
        time.sleep(arg)
    elif kind == "crash":
        os._exit(3)
    elif kind == "raise":
        raise RuntimeError("bad input")
    return ("pid", os.getpid())


def _run(tasks, **kw) -> dict:
    got: dict = {}
    cfg = PoolConfig(start_method="fork", **kw)
    WorkerPool(cfg, _handler).run(list(enumerate(tasks)), lambda o: got.__setitem__(o.task_id, o))
    return got


def test_decode_timeout_kills_the_worker_and_the_run_goes_on():
    t0 = time.monotonic()
    got = _run([("ok", 0), ("hang_decode", 60), ("ok", 0)], workers=1, first_timeout=1.0, total_timeout=30)
    assert time.monotonic() - t0 < 20
    assert got[0].ok and got[2].ok
    assert not got[1].ok and "timeout" in got[1].error and "decode" in got[1].error
    assert got[0].result[1] != got[2].result[1]  # a fresh worker after the kill


def test_total_timeout_applies_after_decode():
    got = _run([("slow_detect", 2.5), ("slow_detect", 60)], workers=1, first_timeout=1.0, total_timeout=4.0)
    assert got[0].ok  # past the decode deadline but reported decode done: allowed up to the total
    assert not got[1].ok and "detect took longer than 4 s" in got[1].error


def test_crash_and_exception_are_recorded():
    got = _run([("crash", 0), ("raise", 0), ("ok", 0)], workers=2, first_timeout=20, total_timeout=20)
    assert not got[0].ok and "died" in got[0].error and "exit code 3" in got[0].error
    assert not got[1].ok and "RuntimeError: bad input" in got[1].error
    assert got[2].ok


def test_workers_are_recycled():
    got = _run([("ok", 0)] * 5, workers=1, recycle=2)
    pids = [got[i].result[1] for i in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_decord_failure_falls_back_to_pyav(tmp_path, monkeypatch):
    import av

    from hilif.pipeline import decode

    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"crf": "0"}
        for i in range(20):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    ref = decode.read_video(path, 5, backend="decord")
    alt = decode.read_video(path, 5, backend="pyav")
    assert ref.indices == alt.indices == [2, 6, 10, 14, 18] and ref.frame_count == alt.frame_count == 20
    for a, b in zip(ref.frames, alt.frames):  # the same frames (near-lossless: same grey level)
        assert abs(float(a.mean()) - float(b.mean())) < 3
    assert [round(float(f.mean()) / 10) for f in alt.frames] == [2, 6, 10, 14, 18]

    def broken(*a, **k):
        raise RuntimeError("decord hiccup")

    monkeypatch.setattr(decode, "read_decord", broken)
    fb = decode.read_video(path, 5)
    assert fb.backend == "pyav" and "decord failed" in fb.notes[0] and fb.indices == ref.indices

    # the container claims more frames than decode: indices are clamped to what decodes
    monkeypatch.setattr(decode, "_pyav_count", lambda p: (40, 10.0))
    cl = decode.read_video(path, 5, backend="pyav")
    assert cl.frame_count == 20 and cl.indices == [2, 6, 10, 14, 18] and any("clamped" in n for n in cl.notes)


def test_faces_from_image_bundled_photo():
    import insightface

    from hilif.pipeline.align import template
    from hilif.pipeline.extract import FaceConfig, faces_from_image

    photo = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    vf = faces_from_image(photo, FaceConfig())
    assert len(vf.faces) == 1 and vf.missing == 0 and vf.faces[0].shape == (256, 256, 3)
    # re-detected on the aligned crop, the eyes and mouth sit where the template puts them
    from hilif.pipeline.faces import get_detector

    again = get_detector(FaceConfig()).detect(vf.faces[0])
    assert len(again) == 1
    err = np.linalg.norm(again[0].landmarks - template(256, 1.3), axis=1)
    assert err[[0, 1]].max() < 8 and err.max() < 24, err  # dlib's nose tip sits ~15 px below ArcFace's
    inter_eye = np.linalg.norm(template()[0] - template()[1])
    assert np.linalg.norm(again[0].landmarks[0] - again[0].landmarks[1]) == pytest.approx(inter_eye, rel=0.15)
    # the largest face of the six is the one taken
    x0, y0, x1, y1 = vf.boxes[0]
    assert (x1 - x0) > 100


def test_small_faces_are_found_by_upsampling_only_where_needed():
    import cv2
    import insightface

    from hilif.pipeline.detectors import DlibConfig, DlibDetector

    photo = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    img = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    crop = img[238:486, 390:639]  # around the largest face (~125 px wide)
    small = cv2.resize(crop, (100, 100), interpolation=cv2.INTER_AREA)  # face ~50 px
    frame = np.full((240, 320, 3), 128, np.uint8)
    frame[70:170, 110:210] = small
    auto = DlibDetector(DlibConfig())
    assert DlibDetector(DlibConfig(upsample=0)).detect(frame) == []  # too small without upsampling
    found = auto.detect(frame)
    assert len(found) == 1 and 35 < found[0].width < 75
    near = auto.detect_near(frame, found[0].box)  # tracking rescales the window instead
    assert len(near) == 1 and np.abs(near[0].center - found[0].center).max() < 10


def test_tilted_head_found_by_the_rotation_fallback_with_landmarks_in_frame_pixels():
    import cv2
    import insightface

    from hilif.pipeline.detectors import DlibConfig, DlibDetector

    photo = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    img = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    crop = np.ascontiguousarray(img[238:486, 390:639])
    upright = DlibDetector(DlibConfig()).detect(crop)
    assert len(upright) == 1
    m = cv2.getRotationMatrix2D((124.0, 124.0), -40, 1.0)  # tilt the head by 40 degrees
    tilted = cv2.warpAffine(crop, m, (249, 248), borderMode=cv2.BORDER_REFLECT)
    assert DlibDetector(DlibConfig(rotations=())).detect(tilted) == []  # HOG is frontal-only
    found = DlibDetector(DlibConfig()).detect(tilted)
    assert len(found) == 1
    expected = upright[0].landmarks @ m[:, :2].T + m[:, 2]  # where the upright landmarks went
    assert np.abs(found[0].landmarks - expected)[:2].max() < 8  # eyes
    assert np.linalg.norm(found[0].center - (upright[0].center @ m[:, :2].T + m[:, 2])) < 15


def test_probe_indices_stay_between_the_neighbouring_samples():
    from hilif.pipeline.faces import probe_indices

    idx = [5, 15, 25, 35]
    assert probe_indices(1, idx, 40, 4) == [14, 16, 13, 17]
    assert probe_indices(0, idx, 40, 20) == [4, 6, 3, 7, 2, 8, 1, 9, 0]  # 10 is as close to 15: not taken
    assert probe_indices(3, idx, 40, 20) == [34, 36, 33, 37, 32, 38, 31, 39]
    assert probe_indices(1, [0, 1, 2], 3, 4) == []  # every frame is sampled
    assert probe_indices(1, idx, 40, 0) == []


def _face_video(path: Path, blank: set[int], n: int = 40) -> None:
    import av
    import cv2
    import insightface

    img = cv2.cvtColor(
        cv2.imread(str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg")), cv2.COLOR_BGR2RGB
    )
    face = cv2.resize(np.ascontiguousarray(img[238:486, 390:639]), (160, 160), interpolation=cv2.INTER_AREA)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 160, 160, "yuv420p"
        s.options = {"crf": "18"}
        for i in range(n):
            f = np.full_like(face, 120) if i in blank else face
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_frame_without_face_replaced_by_nearest_frame_with_one(tmp_path):
    from hilif.pipeline.extract import FaceConfig, faces_from_video

    # 4 samples of 40 frames: 5, 15, 25, 35; frame 15 has no face, its neighbours do
    _face_video(tmp_path / "a.mp4", blank={15, 14})
    vf = faces_from_video(tmp_path / "a.mp4", 4, FaceConfig())
    assert vf.target_indices == [5, 15, 25, 35] and vf.missing == 0
    assert vf.frame_indices == [5, 16, 25, 35] and vf.replaced == [False, True, False, False]
    # without probing (or when no neighbour has the face): the nearest sampled frame, earlier on ties
    vf = faces_from_video(tmp_path / "a.mp4", 4, FaceConfig(probe=0))
    assert vf.frame_indices == [5, 5, 25, 35] and vf.replaced == [False, True, False, False]
    _face_video(tmp_path / "b.mp4", blank=set(range(11, 21)))
    vf = faces_from_video(tmp_path / "b.mp4", 4, FaceConfig())
    assert vf.frame_indices == [5, 5, 25, 35] and len(vf.faces) == 4

"""Unit tests of the extract side that need no video: sampling, alignment, tracking, units, detectors' set-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scrfd_fixture import tiny_scrfd

from hilif.pipeline import schema
from hilif.pipeline.align import align_face, similarity_matrix, template
from hilif.pipeline.datasets import VideoItem
from hilif.pipeline.detectors import (
    Detection,
    DetectorError,
    InsightFaceConfig,
    InsightFaceDetector,
    find_scrfd_model,
    onnx_providers,
    resolve_device,
)
from hilif.pipeline.extract import plan_units
from hilif.pipeline.sampling import nearest_with_face, uniform_indices
from hilif.pipeline.track import SubjectTracker


@pytest.mark.parametrize("n,k", [(300, 80), (81, 80), (80, 80), (10, 3), (1, 1), (7, 20), (1000, 20)])
def test_uniform_indices(n, k):
    idx = uniform_indices(n, k)
    assert len(idx) == min(n, k)
    assert all(0 <= i < n for i in idx)
    assert idx == sorted(set(idx))  # strictly increasing, no duplicates
    if k < n:  # spread evenly: consecutive gaps differ by at most one frame, ends near the ends
        d = np.diff(idx)
        assert len(d) == 0 or d.max() - d.min() <= 1
        assert idx[0] <= n // k and idx[-1] >= n - 1 - n // k


def test_uniform_indices_rejects_empty():
    with pytest.raises(ValueError):
        uniform_indices(0, 5)


def test_nearest_with_face():
    assert nearest_with_face([False, True, False, False, True, False]) == [1, 1, 1, 4, 4, 4]
    assert nearest_with_face([True, False, True]) == [0, 0, 2]  # tie -> earlier
    assert nearest_with_face([False, False]) == [None, None]
    assert nearest_with_face([True, True]) == [0, 1]


def test_template_margin_and_size():
    t1, t13 = template(256, 1.0), template(256, 1.3)
    # a larger margin means a smaller face in the crop, around the same centre
    d1 = np.linalg.norm(t1[0] - t1[1])
    d13 = np.linalg.norm(t13[0] - t13[1])
    assert d13 == pytest.approx(d1 / 1.3)
    assert np.allclose(
        template(112, 1.0),
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    )


def test_align_recovers_a_known_similarity():
    """Landmarks moved by a known rotation+scale+shift are mapped back onto the template."""
    dst = template(256, 1.3)
    ang, s, tx, ty = np.deg2rad(20), 0.6, 140.0, 90.0
    R = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = dst @ R.T + [tx, ty]
    m = similarity_matrix(src, 256, 1.3)
    mapped = src @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - dst).max() < 1e-6
    # the warped image puts a marked source pixel where the template says
    frame = np.zeros((400, 500, 3), np.uint8)
    x, y = np.round(src[2]).astype(int)
    frame[y - 2 : y + 3, x - 2 : x + 3] = 255
    face = align_face(frame, src, 256, 1.3)
    assert face.shape == (256, 256, 3) and face.dtype == np.uint8
    yy, xx = np.nonzero(face[..., 0] > 100)
    assert abs(xx.mean() - dst[2, 0]) < 2.5 and abs(yy.mean() - dst[2, 1]) < 2.5


def _det(x, y, w, score=1.0):
    return Detection(np.array([x, y, x + w, y + w], float), np.zeros((5, 2)), score)


def test_tracker_follows_subject_and_never_jumps():
    tr = SubjectTracker()
    big, small = _det(100, 100, 120), _det(400, 100, 60)
    assert tr.update([small, big]) is big  # first frame: the largest face
    moved = _det(110, 105, 118)
    assert tr.update([small, moved]) is moved  # follows the subject, not the other person
    assert tr.update([small]) is None  # only the other person: no face (replaced later), no jump
    assert tr.box is not None and tr.box[0] == 110
    assert tr.update([_det(115, 100, 400)]) is None  # implausible size change


def test_plan_units_deterministic_and_parts_disjoint():
    items = [
        VideoItem(split, label, "real" if label == 0 else m, f"{i:03d}", f"/x/{split}{m}{i}.mp4", f"{split}{m}{i}")
        for split in schema.SPLITS
        for label in (0, 1)
        for m in (["real"] if label == 0 else ["A", "B"])
        for i in range(7)
    ]
    frames = {"train": 80, "val": 20, "test": 20}
    u1 = plan_units(items, frames, 3)
    u2 = plan_units(list(reversed(items)), frames, 3)  # input order does not matter
    assert [[it.rel for it in u.items] for u in u1] == [[it.rel for it in u.items] for u in u2]
    assert [u.number for u in u1] == list(range(len(u1)))
    assert all(len({(it.split, it.label) for it in u.items}) == 1 for u in u1)
    assert sorted(it.rel for u in u1 for it in u.items) == sorted(it.rel for it in items)
    parts = [[u for u in u1 if u.number % 3 == p] for p in range(3)]
    seen = [u.number for p in parts for u in p]
    assert sorted(seen) == list(range(len(u1)))  # disjoint and complete
    names = {(u.split, u.label, u.shard(Path("r")).name) for u in u1}
    assert len(names) == len(u1)
    auto = plan_units(items, frames, None)  # default: ~3200 faces per shard
    assert all(len(u.items) <= 3200 // frames[u.split] for u in auto)


# --------------------------------------------------------------------------- insightface set-up


def test_insightface_missing_model_says_where_and_what_else(tmp_path):
    with pytest.raises(DetectorError) as ei:
        find_scrfd_model(tmp_path / "nomodels")
    msg = str(ei.value)
    assert str(tmp_path / "nomodels") in msg and "det_10g.onnx" in msg and "--detector dlib" in msg
    with pytest.raises(DetectorError):
        InsightFaceDetector(InsightFaceConfig(model_dir=str(tmp_path)))


def test_insightface_model_dir_lookup(tmp_path):
    (tmp_path / "w600k_r50.onnx").write_bytes(b"x")
    with pytest.raises(DetectorError):
        find_scrfd_model(tmp_path)  # a recognition model is not a detector
    (tmp_path / "det_500m.onnx").write_bytes(b"x")
    assert find_scrfd_model(tmp_path).name == "det_500m.onnx"
    (tmp_path / "det_10g.onnx").write_bytes(b"x")
    assert find_scrfd_model(tmp_path).name == "det_10g.onnx"  # the buffalo_l detector first
    assert find_scrfd_model(tmp_path / "det_500m.onnx").name == "det_500m.onnx"  # a file works too


def test_device_and_providers(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DetectorError, match="--device cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert onnx_providers("cuda")[0] == "CUDAExecutionProvider"
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(DetectorError):
        resolve_device("tpu")


def test_insightface_corrupt_model_is_a_clear_error(tmp_path):
    (tmp_path / "det_10g.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(DetectorError, match="--detector dlib"):
        InsightFaceDetector(InsightFaceConfig(model_dir=str(tmp_path), device="cpu"))


def test_insightface_detector_code_path_with_a_tiny_onnx_model(tmp_path):
    """InsightFaceDetector end to end (onnxruntime session, SCRFD decoding, NMS, alignment) on CPU."""
    from hilif.pipeline.decode import DecodedFrames
    from hilif.pipeline.faces import FaceConfig, faces_from_frames

    tiny_scrfd(tmp_path / "det_10g.onnx")
    det = InsightFaceDetector(InsightFaceConfig(model_dir=str(tmp_path), device="cpu"))
    assert det.providers == ["CPUExecutionProvider"]
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[200:264, 300:364] = 255  # the only bright "face"
    dets = det.detect(frame)
    assert dets, "the bright square must be detected"
    best = max(dets, key=lambda d: d.score)
    cx, cy = best.center
    assert 290 < cx < 374 and 190 < cy < 274 and best.score > 0.9
    assert best.landmarks.shape == (5, 2)
    assert best.landmarks[0, 0] < best.landmarks[1, 0]  # image-left eye before image-right eye
    vf = faces_from_frames(
        DecodedFrames([frame, np.zeros_like(frame)], [0, 5], 6, 25.0, "test"),
        FaceConfig(detector="insightface", model_dir=str(tmp_path), device="cpu"),
        2,
        detector=det,
    )
    assert len(vf.faces) == 2 and vf.replaced == [False, True] and vf.frame_indices == [0, 0]
    assert vf.faces[0].shape == (256, 256, 3) and vf.faces[0].max() == 255

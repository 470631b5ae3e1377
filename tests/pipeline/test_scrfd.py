"""Batched SCRFD (InsightFaceDetector.detect_batch): one onnxruntime run per batch, same results as per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scrfd_fixture import tiny_scrfd

from hilif.pipeline.detectors import InsightFaceConfig, InsightFaceDetector


def _with_batch_axis(path: Path, rank3: bool, shape: tuple[int, ...] = (0, -1, 1)) -> Path:
    """The tiny SCRFD graph with a free batch axis; outputs (N * anchors, C) or, with ``rank3``, ``shape``
    (default (N, anchors, C))."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_value")
    dim.dim_param = "batch"
    if rank3:
        for init in model.graph.initializer:
            if init.name == "shp":
                init.CopyFrom(numpy_helper.from_array(np.array(shape, np.int64), "shp"))
        for out in model.graph.output:
            width = out.type.tensor_type.shape.dim[1].dim_value
            out.type.tensor_type.shape.ClearField("dim")
            for d in ("batch", "A", width):
                new = out.type.tensor_type.shape.dim.add()
                if isinstance(d, str):
                    new.dim_param = d
                else:
                    new.dim_value = d
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _frames() -> list[np.ndarray]:
    """Frames of different sizes and aspect ratios (landscape, portrait, square), bright squares as faces."""
    specs = [
        ((480, 640), [(200, 300, 64)]),
        ((360, 360), [(40, 50, 48), (220, 230, 64)]),  # two faces: both kept by NMS
        ((400, 224), [(150, 60, 56)]),  # portrait: letterbox pads on the right
        ((240, 320), []),  # no face
        ((720, 1280), [(300, 900, 128)]),
    ]
    out = []
    for (h, w), squares in specs:
        f = np.zeros((h, w, 3), np.uint8)
        f[..., 2] = 30  # channels differ: an RGB/BGR mix-up shows in the blob test
        for y, x, s in squares:
            f[y : y + s, x : x + s] = 255
        out.append(f)
    return out


def _count_runs(det: InsightFaceDetector) -> list[int]:
    """Batch sizes of the runs of the detector's main (dynamic) session."""
    session = det._det.session
    real_run = session.run
    sizes: list[int] = []

    def run(names, feeds, *a, **k):
        sizes.append(int(next(iter(feeds.values())).shape[0]))
        return real_run(names, feeds, *a, **k)

    session.run = run
    return sizes


def _assert_same(a, b):
    assert len(a) == len(b)
    for da, db in zip(a, b):
        assert len(da) == len(db)
        for x, y in zip(da, db):
            assert np.abs(x.box - y.box).max() < 1e-4
            assert np.abs(x.landmarks - y.landmarks).max() < 1e-4
            assert abs(x.score - y.score) < 1e-4


@pytest.mark.parametrize("rank3", [False, True], ids=["flat_outputs", "batched_outputs"])
def test_batched_equals_per_frame(tmp_path, rank3):
    _with_batch_axis(tiny_scrfd(tmp_path / "det_10g.onnx"), rank3)
    det = InsightFaceDetector(InsightFaceConfig(model_dir=str(tmp_path), device="cpu", batch=3))
    assert det.dynamic_batch
    frames = _frames()
    per_frame = [det.detect(f) for f in frames]
    runs = _count_runs(det)
    batched = det.detect_batch(frames)
    assert runs == [3, 2]  # 5 frames in batches of 3: two session runs
    assert [len(d) > 0 for d in per_frame] == [True, True, True, False, True]  # a test that can fail
    assert len(per_frame[1]) >= 2
    _assert_same(batched, per_frame)
    # the found faces are where the squares are, in each frame's own pixels (the per-image scale)
    best = max(batched[4], key=lambda d: d.score)
    assert 900 < best.center[0] < 1028 and 300 < best.center[1] < 428
    best = max(batched[2], key=lambda d: d.score)
    assert 60 < best.center[0] < 116 and 150 < best.center[1] < 206


def test_fixed_batch_model_runs_frame_by_frame(tmp_path):
    tiny_scrfd(tmp_path / "det_10g.onnx")  # input [1, 3, H, W]
    det = InsightFaceDetector(InsightFaceConfig(model_dir=str(tmp_path), device="cpu", batch=4))
    assert not det.dynamic_batch
    frames = _frames()
    runs = _count_runs(det)
    got = det.detect_batch(frames)
    assert all(n == 1 for n in runs)
    _assert_same(got, [det.detect(f) for f in frames])


def test_fake_batch_axis_falls_back_to_per_frame(tmp_path, caplog):
    """A graph that declares a free batch axis but puts every image in one (1, N * anchors, C) output
    (batch 1 hard-coded inside, like insightface's shipped packs) is noticed and run frame by frame."""
    _with_batch_axis(tiny_scrfd(tmp_path / "det_10g.onnx"), rank3=True, shape=(1, -1, 1))
    det = InsightFaceDetector(InsightFaceConfig(model_dir=str(tmp_path), device="cpu", batch=4))
    assert det.dynamic_batch  # as declared
    frames = _frames()
    got = det.detect_batch(frames)
    assert not det.dynamic_batch and "one frame at a time" in caplog.text
    _assert_same(got, [det.detect(f) for f in frames])
    runs = _count_runs(det)
    det.detect_batch(frames)
    assert runs == []  # later batches go straight to the per-frame path


def test_faces_pipeline_uses_the_batch(tmp_path):
    """faces_from_frames feeds SCRFD in batches and gives the same faces as one frame at a time."""
    from hilif.pipeline.decode import DecodedFrames
    from hilif.pipeline.faces import FaceConfig, faces_from_frames

    _with_batch_axis(tiny_scrfd(tmp_path / "det_10g.onnx"), rank3=True)
    frames = []
    for k in range(6):
        f = np.zeros((360, 480, 3), np.uint8)
        if k != 2:  # frame 2 has no face: replaced by a neighbour
            f[100 + 4 * k : 164 + 4 * k, 200 + 6 * k : 264 + 6 * k] = 255
        frames.append(f)
    decoded = DecodedFrames(frames, list(range(0, 60, 10)), 60, 25.0, "test")
    cfg = FaceConfig(detector="insightface", model_dir=str(tmp_path), device="cpu", det_batch=4)
    batched = InsightFaceDetector(InsightFaceConfig(model_dir=str(tmp_path), device="cpu", batch=4))
    single = InsightFaceDetector(InsightFaceConfig(model_dir=str(tmp_path), device="cpu", batch=1))
    runs = _count_runs(batched)
    a = faces_from_frames(decoded, cfg, 6, detector=batched)
    b = faces_from_frames(decoded, cfg, 6, detector=single)
    assert runs == [4, 2]
    assert a.replaced == b.replaced == [False, False, True, False, False, False]
    assert np.allclose(a.boxes, b.boxes, atol=1e-4) and np.allclose(a.landmarks, b.landmarks, atol=1e-4)
    assert all(np.array_equal(x, y) for x, y in zip(a.faces, b.faces))


def test_det_batch_validated():
    from hilif.pipeline.faces import FaceConfig

    with pytest.raises(ValueError, match="--det-batch"):
        FaceConfig(det_batch=0).validate()


def test_blob_is_what_insightface_feeds_per_frame(tmp_path):
    """Letterbox, mean/std and channel order of the batch blob = the input insightface's SCRFD.detect builds."""
    _with_batch_axis(tiny_scrfd(tmp_path / "det_10g.onnx"), rank3=False)
    det = InsightFaceDetector(InsightFaceConfig(model_dir=str(tmp_path), device="cpu"))
    frames = _frames()
    for f in frames:
        f[::7, ::5, 0] = 200  # texture that differs per channel
    blob, scales = det._blob(frames)
    assert blob.shape == (len(frames), 3, 640, 640)
    session = det._det._session_for_input_size((640, 640))  # the session insightface's detect runs
    real_run = session.run
    seen: list[np.ndarray] = []
    session.run = lambda names, feeds, *a, **k: (
        seen.append(next(iter(feeds.values()))) or real_run(names, feeds, *a, **k)
    )
    for f in frames:
        det.detect(f)
    assert len(seen) == len(frames)
    for i, ref in enumerate(seen):
        assert np.array_equal(blob[i], ref[0])
    assert scales == [1.0, 640 / 360, 640 / 400, 2.0, 0.5]

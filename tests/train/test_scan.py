"""hilif-eval detect as a forensic tool: every face, tracks per person, pictures, folders, the JSON records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from hilif.train import annotate
from hilif.train import checkpoint as ck
from hilif.train.cli import eval_app
from hilif.train.scan import SCHEMA_VERSION

runner = CliRunner()
H, W = 320, 640  # two 320 x 320 portraits side by side


def _portraits() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """A real face (t1-lisa) and a fake one (t1-ross with t1-chandler's face pasted on, FaceSwap), each a 320 px
    square portrait; and their expected face boxes in the side-by-side frame."""
    from hilif.pipeline.demo import render as R

    ids = {i.name: i for split in R.IDENTITIES.values() for i in split}
    real = R.make_portrait(ids["t1-lisa"])
    target, source = R.make_portrait(ids["t1-ross"]), R.make_portrait(ids["t1-chandler"])
    fake = R.fake_portrait(target, source, R.draw_blend("FaceSwap", np.random.default_rng(0)))
    out, boxes = [], []
    for i, (img, box) in enumerate(((real.image, real.box), (fake, target.box))):
        s = H / img.shape[0]
        out.append(cv2.resize(img, (H, H), interpolation=cv2.INTER_AREA))
        boxes.append(np.asarray(box, float) * s + np.array([i * H, 0, i * H, 0]))
    return out[0], out[1], boxes


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | list[np.ndarray]]:
    import av

    d = tmp_path_factory.mktemp("media")
    left, right, boxes = _portraits()
    frame = np.concatenate([left, right], axis=1)
    img = d / "two.png"
    cv2.imwrite(str(img), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    vid = d / "two.mp4"  # the two people, the camera drifting 2 px per frame
    with av.open(str(vid), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for k in range(12):
            m = np.float32([[1, 0, 2 * k - 12], [0, 1, k - 6]])
            f = cv2.warpAffine(frame, m, (W, H), borderMode=cv2.BORDER_REFLECT)
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    cut = d / "cut.mp4"  # 6 frames of the two people, a hard cut, 6 frames of scikit-image's astronaut
    from skimage import data

    astronaut = cv2.resize(data.astronaut(), (H, H))
    other = np.concatenate([astronaut, astronaut[:, ::-1] // 2], axis=1)  # one face, its dimmed mirror half
    with av.open(str(cut), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for k in range(12):
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame if k < 6 else other, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return {"image": img, "video": vid, "cut": cut, "boxes": boxes, "dir": d}


def _save(path: Path, extract: dict | None) -> Path:
    from hilif.model import HiLIFConfig, build_model

    cfg = dataclasses.replace(HiLIFConfig.preset("tiny"), pretrained=False, backbone_weights=None)
    return ck.save_checkpoint(
        path,
        model=build_model(cfg),
        model_config=cfg.to_dict(),
        train_config={},
        stage=2,
        epoch=1,
        step=1,
        extract=extract,
        with_rng=False,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model's checkpoint whose training shards were extracted with dlib, auto upsample, margin 1.3."""
    face = {"detector": "dlib", "margin": 1.3, "size": 256, "upsample": "auto", "model_dir": None, "track": True}
    return _save(tmp_path_factory.mktemp("ckpt") / "best.pt", {"face": face, "face_size": 256})


def _records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _iou(a: list[float], b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_image_two_people_two_tracks_boxes_drawn_where_the_faces_are(
    media: dict, checkpoint: Path, tmp_path: Path
) -> None:
    res = runner.invoke(
        eval_app,
        ["detect", str(media["image"]), "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--json", "--explain"],
    )
    assert res.exit_code == 0, res.output
    (rec,) = _records(res.output)
    assert rec["schema"] == SCHEMA_VERSION and rec["kind"] == "image" and rec["status"] == "ok"
    assert len(rec["tracks"]) == 2 and rec["faces_scored"] == 2
    # each expected face is one track's box, left person first (tracks by first appearance, then larger/left)
    tracks = sorted(rec["tracks"], key=lambda t: t["faces"][0]["box"][0])
    for t, want in zip(tracks, media["boxes"]):
        assert _iou(t["faces"][0]["box"], want) > 0.5, (t["faces"][0]["box"], want)
        assert 0.0 <= t["mean_fake_prob"] <= 1.0 and t["verdict"] in ("real", "fake")
    assert rec["verdict"] == ("fake" if any(t["verdict"] == "fake" for t in tracks) else "real")
    # the annotated picture: each box line in the colour of its verdict, the face inside untouched
    ann = cv2.cvtColor(cv2.imread(rec["outputs"]["annotated"]), cv2.COLOR_BGR2RGB)
    orig = cv2.cvtColor(cv2.imread(str(media["image"])), cv2.COLOR_BGR2RGB)
    assert ann.shape == orig.shape
    for t in tracks:
        x0, y0, x1, y1 = (int(round(v)) for v in t["faces"][0]["box"])
        colour = annotate.FAKE_RGB if t["verdict"] == "fake" else annotate.REAL_RGB
        ym, xm = (y0 + y1) // 2, (x0 + x1) // 2
        for x, y in ((x0, ym), (x1, ym), (xm, y1)):  # left, right and bottom edges
            assert tuple(ann[y, x]) == colour, (x, y, ann[y, x], colour)
        assert np.array_equal(ann[ym, xm], orig[ym, xm])
    # --explain: a Grad-CAM grid with a row per face
    assert [Path(p).name for p in rec["outputs"]["gradcam"]] == ["gradcam-00.png"]
    assert json.loads((tmp_path / "results.jsonl").read_text()) == rec


def test_video_tracks_pictures_and_settings_from_the_checkpoint(media: dict, checkpoint: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        eval_app,
        [
            "detect",
            str(media["video"]),
            "--checkpoint",
            str(checkpoint),
            "--frames",
            "6",
            "--out",
            str(tmp_path),
            "--video-out",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    (rec,) = _records(res.output)
    assert rec["kind"] == "video" and rec["frames_sampled"] == 6 and rec["cuts"] == []
    assert len(rec["tracks"]) == 2
    for t in rec["tracks"]:
        assert t["frames_scored"] == 6 and len(set(t["frames"])) == 6
        probs = [f["fake_prob"] for f in t["faces"]]
        assert t["max_fake_prob"] == pytest.approx(max(probs)) and t["mean_fake_prob"] == pytest.approx(np.mean(probs))
    # the two tracks are two people: one on the left half, one on the right, in every frame
    sides = sorted({f["box"][0] < W / 2 for f in t["faces"]} for t in rec["tracks"])
    assert sides == [{False}, {True}]
    assert rec["detector"]["source"] == {
        "detector": "checkpoint",
        "margin": "checkpoint",
        "size": "checkpoint",
        "upsample": "checkpoint",
        "model_dir": "default",
    }
    assert rec["detector"]["dlib_upsample"] == 1 and rec["min_face_px"] == 40.0
    # the contact sheet: 6 thumbnails half the frame's width, 4 to a row; boxes drawn at thumbnail scale
    sheet = cv2.cvtColor(cv2.imread(rec["outputs"]["contact_sheet"]), cv2.COLOR_BGR2RGB)
    tw, th = annotate.THUMB_WIDTH, H * annotate.THUMB_WIDTH // W
    assert sheet.shape[1] == annotate.SHEET_COLUMNS * tw and sheet.shape[0] > 2 * th
    for t in rec["tracks"]:
        f = t["faces"][1]  # the second sampled frame: second thumbnail of the first row
        x0, y0, x1, y1 = (round(v * tw / W) for v in f["box"])
        colour = annotate.FAKE_RGB if f["fake_prob"] >= 0.5 else annotate.REAL_RGB
        assert tuple(sheet[(y0 + y1) // 2, tw + x0]) == colour
    assert cv2.imread(rec["outputs"]["plot"]) is not None
    import av

    with av.open(rec["outputs"]["video"]) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_video_with_a_cut_tracks_stay_in_their_shot(media: dict, checkpoint: Path) -> None:
    res = runner.invoke(
        eval_app, ["detect", str(media["cut"]), "--checkpoint", str(checkpoint), "--frames", "6", "--json"]
    )
    assert res.exit_code == 0, res.output
    (rec,) = _records(res.output)
    assert len(rec["cuts"]) == 1
    cut = rec["cuts"][0]  # the frame number where the astronaut's shot starts, among the sampled frames
    assert 6 <= cut and cut == min(f for t in rec["tracks"] if t["shot"] == 1 for f in t["frames"])
    before = [t for t in rec["tracks"] if t["shot"] == 0]
    assert len(before) == 2 and all(max(t["frames"]) < 6 for t in before)
    assert any(t["shot"] == 1 and t["frames_scored"] > 0 for t in rec["tracks"])


def test_options_override_the_checkpoint_and_old_checkpoints_fall_back(media: dict, tmp_path: Path) -> None:
    old = _save(tmp_path / "old.pt", None)
    res = runner.invoke(eval_app, ["detect", str(media["image"]), "--checkpoint", str(old), "--json", "-v"])
    assert res.exit_code == 0, res.output
    (rec,) = _records(res.output)
    assert set(rec["detector"]["source"].values()) == {"default"}
    assert "records no extract settings" in res.output
    # a checkpoint whose shards used a fixed upsample 0: the minimum face is dlib's 80 px window, and the 72 px
    # faces of the test image are listed as too small (not scored); --min-face overrides the minimum
    fixed = _save(tmp_path / "fixed.pt", {"face": {"detector": "dlib", "upsample": 2, "margin": 1.25}})
    res = runner.invoke(
        eval_app,
        ["detect", str(media["image"]), "--checkpoint", str(fixed), "--json", "--upsample", "0", "--margin", "1.4"],
    )
    assert res.exit_code == 0, res.output
    (rec,) = _records(res.output)
    assert rec["detector"]["upsample"] == 0 and rec["detector"]["source"]["upsample"] == "option"
    assert rec["detector"]["margin"] == 1.4
    assert rec["min_face_px"] == 80.0
    small = [f for t in rec["tracks"] for f in t["faces"] if f["too_small"]]
    assert all(f["fake_prob"] is None and f["width"] < 80 for f in small)
    assert rec["faces_too_small"] == len(small) and rec["faces_scored"] + len(small) == sum(
        len(t["faces"]) for t in rec["tracks"]
    )
    res = runner.invoke(
        eval_app, ["detect", str(media["image"]), "--checkpoint", str(fixed), "--json", "--min-face", "200"]
    )
    (rec,) = _records(res.output)
    assert rec["detector"]["margin"] == 1.25 and rec["detector"]["upsample"] == 2
    assert rec["faces_scored"] == 0 and rec["faces_too_small"] == 2 and rec["verdict"] is None
    assert all(t["verdict"] is None for t in rec["tracks"])


def test_folder_with_a_broken_file_and_an_unknown_type(media: dict, checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "two.png").write_bytes(Path(media["image"]).read_bytes())
    (folder / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    (folder / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    res = runner.invoke(eval_app, ["detect", str(folder), "--checkpoint", str(checkpoint), "--out", str(out)])
    assert res.exit_code == 1, res.output
    recs = {Path(r["path"]).name: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(recs) == {"two.png", "broken.mp4", "notes.txt"}
    assert recs["broken.mp4"]["status"] == "error" and "cannot read" in recs["broken.mp4"]["error"]
    assert recs["notes.txt"]["status"] == "skipped" and ".txt" in recs["notes.txt"]["error"]
    assert recs["two.png"]["status"] == "ok" and len(recs["two.png"]["tracks"]) == 2
    assert (out / "in__sub__two.png" / "annotated.png").is_file()
    text = " ".join(res.output.split())  # the console wraps lines
    assert "1 unreadable" in text and "1 skipped" in text
    # the results are not overwritten by a second run without --overwrite; bad input is exit 2
    res = runner.invoke(eval_app, ["detect", str(folder), "--checkpoint", str(checkpoint), "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = runner.invoke(eval_app, ["detect", str(tmp_path / "none.mp4"), "--checkpoint", str(checkpoint)])
    assert res.exit_code == 2 and "no such file" in res.output


def test_a_failure_past_decoding_is_that_files_record(
    media: dict, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The detector failing on one file (after it decoded) gives that file an error record; the next file is scored."""
    from hilif.train import scan as detect_mod

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(Path(media["image"]).read_bytes())
    real_detect_all, calls = detect_mod.detect_all, []

    def first_call_fails(frames, det):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("detector crashed")
        return real_detect_all(frames, det)

    monkeypatch.setattr(detect_mod, "detect_all", first_call_fails)
    out = tmp_path / "out"
    res = runner.invoke(eval_app, ["detect", str(folder), "--checkpoint", str(checkpoint), "--out", str(out)])
    assert res.exit_code == 1, res.output
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in recs] == ["error", "ok"]
    assert "detector crashed" in recs[0]["error"] and len(recs[1]["tracks"]) == 2

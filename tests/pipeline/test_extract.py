"""The extract run end to end on demo videos: shards, manifest, resume after kill -9, parts, broken inputs, CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hilif.pipeline import schema
from hilif.pipeline.extract import ExtractConfig, ExtractError, run_extract
from hilif.pipeline.faces import FaceConfig

FRAMES = {"train": 3, "val": 2, "test": 2}
METHODS = ["Deepfakes", "FaceSwap"]


@pytest.fixture(scope="module")
def demo_root(request, tmp_path_factory) -> Path:
    """The session's small demo (tests/conftest.py) when there is one, else a small demo made here."""
    try:
        return request.getfixturevalue("small_demo")
    except pytest.FixtureLookupError:
        from hilif.pipeline.demo import DemoConfig, make_demo

        out = tmp_path_factory.mktemp("demo") / "demo"
        make_demo(
            DemoConfig(
                out=out, num_sources=6, seconds=1.2, fps=10, qualities=("c40",), methods=tuple(METHODS), workers=1
            )
        )
        return out


def _cfg(root: Path, out: Path, **kw) -> ExtractConfig:
    base = dict(
        dataset="demo",
        root=str(root),
        out=str(out),
        quality="c40",
        methods=list(METHODS),
        frames=dict(FRAMES),
        videos_per_shard=2,
        workers=1,
    )
    base.update(kw)
    return ExtractConfig(**base)


def _tree(out: Path) -> dict[str, bytes]:
    """Every output file that must be identical between runs (dataset.json has a timestamp: compared apart)."""
    skip = {schema.DATASET_JSON, "contact_sheet.png"}
    return {
        str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name not in skip
    }


def _samples(out: Path) -> list[dict]:
    import webdataset as wds

    tars = sorted(str(p) for p in out.rglob("*.tar"))
    ds = wds.WebDataset(tars, shardshuffle=False, empty_check=False)
    return list(ds)


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory) -> Path:
    """An uninterrupted run, two workers."""
    out = tmp_path_factory.mktemp("ref") / "shards"
    res = run_extract(_cfg(demo_root, out, workers=2))
    assert res.units_done == res.units_total == res.units_run
    return out


def test_shards_manifest_and_dataset_json(reference, demo_root):
    out = reference
    manifest = [json.loads(line) for line in (out / schema.MANIFEST_JSONL).read_text().splitlines()]
    assert len(manifest) == 18 and len({r["video"] for r in manifest}) == 18  # 6 reals + 2 methods x 6 fakes
    samples = _samples(out)
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys))
    per_video: dict[str, list[schema.SampleMeta]] = {}
    for s in samples:
        meta = schema.SampleMeta.from_json(s["json"])
        assert meta.key == s["__key__"] and s["cls"] == str(meta.label).encode()
        assert s["png"][:8] == b"\x89PNG\r\n\x1a\n"
        assert meta.dataset == "demo" and meta.quality == "c40" and meta.detector == "dlib"
        assert (meta.label == schema.REAL) == (meta.method == schema.REAL_METHOD)
        assert (
            Path(s["__url__"]).parent.parent.name == meta.split
            and Path(s["__url__"]).parent.name == schema.LABEL_NAMES[meta.label]
        )
        assert meta.replaced == (meta.frame_index != meta.target_index)
        per_video.setdefault(meta.video, []).append(meta)
    for r in manifest:
        metas = per_video.get(r["video"], [])
        assert r["status"] in ("ok", "noface")
        asked = FRAMES[r["split"]]
        if r["status"] == "ok":  # never silently fewer frames: one sample per asked frame
            assert len(metas) == r["samples"] == asked and r["missing"] == 0
            assert sorted(m.sample_index for m in metas) == list(range(asked))
            assert sum(m.replaced for m in metas) == r["replaced"]
            # targets are the uniform indices over the whole video
            from hilif.pipeline.sampling import uniform_indices

            assert sorted(m.target_index for m in metas) == uniform_indices(r["frame_count"], asked)
        else:
            assert not metas and r["samples"] == 0 and r["missing"] == asked and "no face" in r["reason"]
    assert sum(r["status"] == "ok" for r in manifest) >= 15
    info = schema.DatasetInfo.load(out)
    assert sum(info.count(s) for s in schema.SPLITS) == len(samples)
    for split in schema.SPLITS:
        for lab in ("real", "fake"):
            assert info.count(split, lab) == sum(
                1 for m in per_video.values() for x in m if x.split == split and schema.LABEL_NAMES[x.label] == lab
            )
    assert info.failed == sum(r["status"] == "noface" for r in manifest) and info.missing == 0
    assert info.config["units_complete"] == info.config["units_total"]
    assert not list(out.rglob("*.tmp"))


def test_inspect_counts_and_contact_sheet(reference, tmp_path):
    from PIL import Image

    from hilif.pipeline.inspect import inspect_shards

    rep = inspect_shards(reference, tmp_path / "sheet.png", n_faces=12, check=1000)
    assert rep.problems == [] and rep.incomplete == []
    assert sum(rep.counts.values()) == len(_samples(reference)) and rep.checked == sum(rep.counts.values())
    assert {k[2] for k in rep.counts} == {"real", *METHODS}
    im = Image.open(rep.sheet)
    assert im.size[0] == 8 * 128 and im.size[1] >= 2 * 128


def test_kill_9_then_resume_equals_uninterrupted(reference, demo_root, tmp_path):
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "hilif.pipeline.cli",
        "extract",
        "--dataset",
        "demo",
        "--root",
        str(demo_root),
        "--out",
        str(out),
        "--quality",
        "c40",
        "--methods",
        ",".join(METHODS),
        "--frames",
        ",".join(f"{k}={v}" for k, v in FRAMES.items()),
        "--videos-per-shard",
        "2",
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.monotonic()
    while not list(out.rglob("*" + schema.STATS_SUFFIX)) and time.monotonic() - t0 < 60 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker, mid-run
    proc.wait()
    done = len(list(out.rglob("*" + schema.STATS_SUFFIX)))
    total = len(list(reference.rglob("*" + schema.STATS_SUFFIX)))
    assert 1 <= done < total, f"kill landed outside the run ({done}/{total} shards done)"
    assert not (out / schema.DATASET_JSON).exists()
    res = run_extract(_cfg(demo_root, out))
    assert res.units_run == total - done
    assert _tree(out) == _tree(reference)  # same keys, same bytes, same manifest


def test_parts_write_disjoint_shards_equal_to_one_run(reference, demo_root, tmp_path):
    out = tmp_path / "parts"
    r0 = run_extract(_cfg(demo_root, out, part=(0, 2)))
    assert 0 < r0.units_done < r0.units_total
    r1 = run_extract(_cfg(demo_root, out, part=(1, 2)))
    assert r1.units_done == r1.units_total and r0.units_run + r1.units_run == r1.units_total
    assert _tree(out) == _tree(reference)


def test_changed_arguments_refused_and_overwrite(reference, demo_root, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(reference, out)
    with pytest.raises(ExtractError, match="frames"):
        run_extract(_cfg(demo_root, out, frames={"train": 4, "val": 2, "test": 2}))
    with pytest.raises(ExtractError, match="face"):
        run_extract(_cfg(demo_root, out, face=FaceConfig(margin=1.5)))
    res = run_extract(_cfg(demo_root, out))  # same arguments: nothing to do
    assert res.units_run == 0 and _tree(out) == _tree(reference)
    res = run_extract(
        _cfg(demo_root, out, frames={"train": 1, "val": 1, "test": 1}, methods=["FaceSwap"], overwrite=True)
    )
    assert res.units_run == res.units_total
    assert {json.loads(line)["method"] for line in (out / schema.MANIFEST_JSONL).read_text().splitlines()} == {
        "real",
        "FaceSwap",
    }


# --------------------------------------------------------------------------- broken inputs


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def _write_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(10):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_broken_inputs_are_recorded_and_the_run_goes_on(demo_root, tmp_path):
    good = next((demo_root / "original_sequences/youtube/c40/videos").glob("*.mp4"))
    d = tmp_path / "videos"
    d.mkdir()
    shutil.copy(good, d / "good.mp4")
    (d / "zero.mp4").write_bytes(b"")
    data = good.read_bytes()
    (d / "trunc.mp4").write_bytes(data[: len(data) // 3])
    (d / "text.mp4").write_text("this is not a video\n")
    _write_audio_only(d / "audio.mp4")
    _write_video(d / "noface.mp4", [np.full((96, 128, 3), 90 + i, np.uint8) for i in range(8)])
    names = ["good", "zero", "trunc", "text", "audio", "noface"]
    with (tmp_path / "list.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows([(f"videos/{n}.mp4", "real", "train") for n in names])
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "hilif.pipeline.cli",
        "extract",
        "--dataset",
        "folder",
        "--root",
        str(tmp_path / "list.csv"),
        "--out",
        str(out),
        "--frames",
        "3",
        "--workers",
        "2",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr[-2000:]
    assert "manifest.jsonl" in p.stderr and "videos/zero.mp4" in p.stderr
    recs = {Path(r["path"]).stem: r for r in map(json.loads, (out / schema.MANIFEST_JSONL).read_text().splitlines())}
    assert set(recs) == set(names)
    assert recs["good"]["status"] == "ok" and recs["good"]["samples"] == 3
    assert recs["noface"]["status"] == "noface"
    for n in ("zero", "trunc", "text", "audio"):
        assert recs[n]["status"] == "error" and recs[n]["samples"] == 0 and recs[n]["reason"], recs[n]
    assert "0 bytes" in recs["zero"]["reason"]
    assert "no video stream" in recs["audio"]["reason"]
    assert schema.DatasetInfo.load(out).count("train", "real") == 3 and len(_samples(out)) == 3


# --------------------------------------------------------------------------- CLI: bad arguments


@pytest.mark.parametrize(
    "args,needle",
    [
        (["extract", "--dataset", "demo"], "--root"),
        (["extract", "--dataset", "nope", "--root", "."], "unknown dataset"),
        (["extract", "--dataset", "demo", "--root", "ROOT", "--part", "3/2"], "--part"),
        (["extract", "--dataset", "demo", "--root", "ROOT", "--quality", "c41"], "c23, c40"),
        (
            ["extract", "--dataset", "ffpp", "--root", "ROOT", "--quality", "raw"],
            "original_sequences/youtube/raw/videos",
        ),
        (
            [
                "extract",
                "--dataset",
                "demo",
                "--root",
                "ROOT",
                "--quality",
                "c40",
                "--detector",
                "insightface",
                "--model-dir",
                "NOMODELS",
            ],
            "--detector dlib",
        ),
        (["extract", "--dataset", "demo", "--root", "ROOT", "--workers", "x"], "--workers"),
        (["inspect", "NOMODELS"], "no such folder"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, needle, demo_root, tmp_path):
    args = [a.replace("ROOT", str(demo_root)).replace("NOMODELS", str(tmp_path / "none")) for a in args]
    p = subprocess.run(
        [sys.executable, "-m", "hilif.pipeline.cli", *args, "--out", str(tmp_path / "o")]
        if args[0] == "extract"
        else [sys.executable, "-m", "hilif.pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr
    assert not (tmp_path / "o" / schema.MANIFEST_JSONL).exists()


def test_wilddeepfake_image_sequences_extract(tmp_path):
    """Image sequences (unpacked and inside a tar.gz) go through the same workers and shards."""
    import io
    import tarfile

    import cv2
    import insightface

    img = cv2.imread(str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"))
    face = cv2.resize(img[238:486, 390:639], (128, 128), interpolation=cv2.INTER_AREA)
    frames = [cv2.imencode(".png", np.roll(face, i, axis=1))[1].tobytes() for i in range(5)]
    root = tmp_path / "wdf"
    for i, data in enumerate(frames):
        p = root / "real_train" / "3" / "real" / "21" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "fake_test").mkdir()
    with tarfile.open(root / "fake_test" / "9.tar.gz", "w:gz") as tf:
        for i, data in enumerate(frames):
            ti = tarfile.TarInfo(f"9/fake/4/{i}.png")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    res = run_extract(
        ExtractConfig(dataset="wilddeepfake", root=str(root), out=str(tmp_path / "out"), frames={"train": 3, "test": 2})
    )
    assert not res.failed
    got = {(r["split"], r["label"], r["video_id"], r["samples"]) for r in res.records}
    assert got == {("train", 0, "3_21", 3), ("test", 1, "9_4", 2)}
    metas = [schema.SampleMeta.from_json(s["json"]) for s in _samples(tmp_path / "out")]
    assert sorted((m.video_id, m.frame_index) for m in metas) == [
        ("3_21", 0),
        ("3_21", 2),
        ("3_21", 4),
        ("9_4", 1),
        ("9_4", 3),
    ]
    assert {m.method for m in metas} == {"real", "WildDeepfake"}

"""The embedded demo dataset: FF++ layout and splits, playable H.264, c40 < c23, faces findable, fakes only in the
face."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import SMALL_DEMO

from hilif.pipeline.demo import DEMO_JSON, DemoConfig, DemoError, load_demo_json, make_demo, plan_sources, split_pairs
from hilif.pipeline.demo import render as demo_render

METHODS = demo_render.METHODS
QUALITIES = SMALL_DEMO["qualities"]
FRAMES = round(SMALL_DEMO["seconds"] * SMALL_DEMO["fps"])
SIZE = (DemoConfig(out=Path(".")).width, DemoConfig(out=Path(".")).height)


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _pairs(root: Path) -> dict[str, list[list[str]]]:
    return {s: json.loads((root / "splits" / f"{s}.json").read_text()) for s in ("train", "val", "test")}


# --------------------------------------------------------------------------- layout and splits


def test_layout_is_ffpp_and_matches_the_splits(small_demo: Path):
    pairs = _pairs(small_demo)
    ids = [v for split in pairs.values() for pair in split for v in pair]
    # official format: a JSON list of [target, source] pairs of 3-digit ids, ids disjoint across splits
    for split in pairs.values():
        for pair in split:
            assert isinstance(pair, list) and len(pair) == 2
            assert all(re.fullmatch(r"\d{3}", v) for v in pair)
    assert len(ids) == len(set(ids)) == SMALL_DEMO["num_sources"]
    assert {s: len(p) for s, p in pairs.items()} == split_pairs(SMALL_DEMO["num_sources"] // 2)

    expected = set()
    for q in QUALITIES:
        expected |= {f"original_sequences/youtube/{q}/videos/{v}.mp4" for v in ids}
        for m in METHODS:
            for split in pairs.values():
                for a, b in split:  # a pair [a, b] holds the fakes a_b and b_a of every method
                    expected |= {
                        f"manipulated_sequences/{m}/{q}/videos/{a}_{b}.mp4",
                        f"manipulated_sequences/{m}/{q}/videos/{b}_{a}.mp4",
                    }
    found = {str(p.relative_to(small_demo)) for p in small_demo.rglob("*.mp4")}
    assert found == expected
    assert not [p for p in small_demo.rglob("*") if p.name.endswith(".tmp")]


def test_demo_json_identities_stay_inside_one_split(small_demo: Path):
    meta = load_demo_json(small_demo)
    assert meta["complete"] is True and meta["seed"] == SMALL_DEMO["seed"] and meta["frames"] == FRAMES
    assert meta["crf"] == {"c23": 23, "c40": 40}
    who = {s["vid"]: s for s in meta["sources"]}
    split_of_identity: dict[str, str] = {}
    for split, pairs in _pairs(small_demo).items():
        for a, b in pairs:
            assert who[a]["split"] == who[b]["split"] == split
            assert who[a]["identity"] != who[b]["identity"]  # a fake always shows another person's face
            for v in (a, b):
                assert split_of_identity.setdefault(who[v]["identity"], split) == split
    # every method's blend settings are recorded per fake
    assert set(meta["blend"]) == set(METHODS)


@pytest.mark.parametrize("n", [6, 16, 40, 200])
def test_plan_keeps_identities_disjoint_for_any_size(n, tmp_path):
    ids = demo_render.IDENTITIES
    sources, pairs = plan_sources(DemoConfig(out=tmp_path, num_sources=n, seed=3), {k: list(v) for k, v in ids.items()})
    assert len({s.vid for s in sources}) == n
    assert {s: len(p) for s, p in pairs.items()} == split_pairs(n // 2)
    by_vid = {s.vid: s for s in sources}
    splits_of = {}
    for split, ps in pairs.items():
        for a, b in ps:
            assert by_vid[a].identity != by_vid[b].identity
            for v in (a, b):
                splits_of.setdefault(by_vid[v].identity, set()).add(split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert splits_of.get("hanks", {"train"}) == {"train"}  # the greyscale face never is the whole test set
    paired = [v for ps in pairs.values() for p in ps for v in p]
    assert sorted(paired) == sorted(by_vid)  # every source video is in exactly one pair


def test_default_sizes_fit_the_quick_start(tmp_path):
    cfg = DemoConfig(out=tmp_path)
    counts = split_pairs(cfg.num_sources // 2)
    assert counts["train"] >= 4 and counts["val"] >= 1 and counts["test"] >= 2
    assert cfg.frames >= 80  # extract takes 80 frames per training video
    assert cfg.qualities == ("c23", "c40")
    assert cfg.width % 128 == 0  # the byte-identical widths (see test below)


# --------------------------------------------------------------------------- the video files


def test_videos_are_playable_h264(small_demo: Path):
    import decord

    paths = sorted(small_demo.rglob("*.mp4"))
    for p in paths:
        with av.open(str(p)) as c:
            s = c.streams.video[0]
            assert s.codec_context.name == "h264"
            assert s.codec_context.pix_fmt == "yuv420p"
            assert (s.codec_context.width, s.codec_context.height) == SIZE
            assert float(s.average_rate) == pytest.approx(SMALL_DEMO["fps"])
            n = sum(1 for _ in c.decode(video=0))
        assert n == FRAMES, p
    # decord (what extract reads with) agrees with PyAV on frame count and pixels
    for p in paths[::7]:
        vr = decord.VideoReader(str(p))
        assert len(vr) == FRAMES
        a = vr[0].asnumpy().astype(int)
        b = _decode(p)[0].astype(int)
        assert a.shape == b.shape == (SIZE[1], SIZE[0], 3)
        assert np.abs(a - b).mean() < 3.0
    ffprobe = shutil.which("ffprobe")
    if ffprobe:  # the issue's wording; PyAV above is the same libavformat, so no ffprobe is no gap
        out = subprocess.run(
            [
                ffprobe,
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=codec_name,pix_fmt",
                "-of",
                "json",
                str(paths[0]),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out)["streams"][0] == {"codec_name": "h264", "pix_fmt": "yuv420p"}


def test_c40_smaller_than_c23_twin(small_demo: Path):
    c23 = sorted(small_demo.rglob("c23/videos/*.mp4"))
    assert len(c23) == 30
    for p in c23:
        twin = Path(str(p).replace("/c23/", "/c40/"))
        assert twin.stat().st_size < p.stat().st_size, p


def test_fakes_compress_like_their_reals(small_demo: Path):
    """No codec shortcut: a fake's file is about as big as its target's real (flickering fakes would not be)."""
    for q in QUALITIES:
        for m in METHODS:
            for p in (small_demo / "manipulated_sequences" / m / q / "videos").glob("*.mp4"):
                real = small_demo / "original_sequences" / "youtube" / q / "videos" / f"{p.stem.split('_')[0]}.mp4"
                ratio = p.stat().st_size / real.stat().st_size
                assert 0.8 < ratio < 1.25, (p, ratio)


def test_fake_differs_from_its_real_only_in_the_face(small_demo: Path):
    import dlib

    det = dlib.get_frontal_face_detector()
    for m in METHODS:
        for p in sorted((small_demo / "manipulated_sequences" / m / "c23" / "videos").glob("*.mp4")):
            real = small_demo / "original_sequences" / "youtube" / "c23" / "videos" / f"{p.stem.split('_')[0]}.mp4"
            fake_frames, real_frames = _decode(p), _decode(real)
            k = FRAMES // 2
            d = np.abs(fake_frames[k].astype(int) - real_frames[k].astype(int)).max(-1)
            faces = det(real_frames[k], 1)
            assert faces, real
            b = max(faces, key=lambda r: r.width())
            cx, cy, w = (b.left() + b.right()) / 2, (b.top() + b.bottom()) / 2, b.width()
            yy, xx = np.mgrid[: d.shape[0], : d.shape[1]]
            near = (np.abs(xx - cx) < 0.9 * w) & (np.abs(yy - cy) < 1.0 * w)
            core = (np.abs(xx - cx) < 0.5 * w) & (np.abs(yy - cy) < 0.5 * w)
            changed = d > 24  # above x264 c23's own differences (99.9th percentile off the face: 10-15)
            assert changed[~near].sum() <= 0.02 * max(1, changed.sum()), p  # nothing pasted off the face
            # and the face itself really changed: at least 5 % of the central face square differs by more than the
            # codec's own 99th-percentile difference off the face (5x the off-face rate). Reenactment
            # (NeuralTextures: lower face only, the target's own face re-rendered) is the subtlest: 9-18 % here
            noise = np.percentile(d[~near], 99)
            assert (d[core] > noise).mean() > 0.05, p


@pytest.mark.slow  # about 10 s on 2 idle cores (240 dlib detections); essential: keep it in CI
def test_dlib_finds_a_face_in_95_percent_of_frames(small_demo: Path):
    """Reals and fakes each, both qualities: detection must not fail more often on one label."""
    import dlib

    det = dlib.get_frontal_face_detector()
    for q in QUALITIES:
        for kind in ("original_sequences", "manipulated_sequences"):
            found = total = 0
            for p in sorted((small_demo / kind).rglob(f"{q}/videos/*.mp4")):
                for i, f in enumerate(_decode(p)):
                    if i % 3:
                        continue
                    total += 1
                    found += len(det(f, 1)) > 0
            assert total > 0
            assert found / total >= 0.95, (q, kind, found, total)


# --------------------------------------------------------------------------- pixels


def test_fake_portrait_changes_only_the_blend_region():
    ids = demo_render.IDENTITIES
    target = demo_render.make_portrait(ids["test"][0])
    source = demo_render.make_portrait(ids["val"][0], flipped=True)
    areas = {}
    for m in METHODS:
        p = demo_render.draw_blend(m, np.random.default_rng(0))
        mask = demo_render.blend_mask(target, p)
        out = demo_render.fake_portrait(target, source, p)
        changed = np.abs(out.astype(int) - target.image.astype(int)).max(-1) > 0
        assert changed.sum() > 0.2 * (mask > 0.5).sum()  # the face really changed
        assert not changed[mask < 1e-3].any(), m  # and nothing outside the mask
        areas[p.region] = (mask > 0.5).sum()
    assert areas["lower"] < areas["inner"] < areas["face"]  # methods differ in what they replace


def test_reenactment_keeps_the_identity_swaps_do_not():
    """Face2Face / NeuralTextures re-render the target's own face (the source's face must not leak in);
    Deepfakes / FaceSwap paste the source's face (a different source gives a different fake)."""
    ids = demo_render.IDENTITIES
    target = demo_render.make_portrait(ids["test"][0])
    src_a = demo_render.make_portrait(ids["val"][0])
    src_b = demo_render.make_portrait(ids["val"][1])
    for m in METHODS:
        p = demo_render.draw_blend(m, np.random.default_rng(3))
        a = demo_render.fake_portrait(target, src_a, p)
        b = demo_render.fake_portrait(target, src_b, p)
        assert not np.array_equal(a, target.image), m  # every method changes the face
        if m in ("Face2Face", "NeuralTextures"):
            assert p.reenact and np.array_equal(a, b), m
        else:
            assert not p.reenact and not np.array_equal(a, b), m


# --------------------------------------------------------------------------- determinism


TINY = dict(num_sources=6, seconds=0.3, fps=10, qualities=("c40",), methods=("FaceSwap",))


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != DEMO_JSON
    }


def test_same_seed_same_bytes_any_worker_count(tmp_path):
    a = make_demo(DemoConfig(out=tmp_path / "a", seed=5, workers=1, **TINY))
    b = make_demo(DemoConfig(out=tmp_path / "b", seed=5, workers=2, **TINY))
    c = make_demo(DemoConfig(out=tmp_path / "c", seed=6, workers=1, **TINY))
    fa, fb, fc = _files(a.out), _files(b.out), _files(c.out)
    assert len(fa) == 6 + 6 + 3  # reals, fakes, split files
    assert fa == fb
    ja, jb = load_demo_json(a.out), load_demo_json(b.out)
    for j in (ja, jb):
        j["config"].pop("out"), j["config"].pop("workers")
    assert ja == jb
    # another seed: other ids, other camera paths, other bytes
    assert fa != fc
    assert set(fa.values()).isdisjoint(v for k, v in fc.items() if k.endswith(".mp4"))


# --------------------------------------------------------------------------- output folder and CLI


def _prep(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("hilif-prep")  # the console script of the running environment
    if not exe.exists():
        exe = Path(shutil.which("hilif-prep") or "hilif-prep")
    return subprocess.run([str(exe), "demo", *args], capture_output=True, text=True, timeout=300)


def test_cli_refuses_non_empty_folder_and_keeps_its_files(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):  # --overwrite replaces only an earlier demo, never other data
        r = _prep("--out", str(out), *extra)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and str(out) in r.stderr
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
        assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "args,words",
    [
        (["--sources", "7"], "--sources"),
        (["--quality", "c99"], "--quality"),
        (["--seconds", "0"], "--seconds"),
    ],
)
def test_cli_bad_options_one_line_exit_2(tmp_path, args, words):
    r = _prep("--out", str(tmp_path / "new"), *args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr
    assert not (tmp_path / "new").exists()


def test_cli_unwritable_folder_one_line_exit_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = _prep("--out", str(blocker / "sub"))  # a folder below a file can never be made (even as root)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "writable" in r.stderr
    r = _prep("--out", str(blocker))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_cli_overwrite_replaces_an_earlier_demo(tmp_path):
    out = tmp_path / "d"
    make_demo(DemoConfig(out=out, seed=1, workers=1, **TINY))
    (out / "notes.txt").write_text("keep me")
    stale = out / "manipulated_sequences" / "FaceSwap" / "c40" / "videos" / "999_998.mp4"
    stale.write_bytes(b"old")
    r = _prep(
        "--out",
        str(out),
        "--overwrite",
        "--sources",
        "6",
        "--seconds",
        "0.3",
        "--fps",
        "10",
        "--quality",
        "c40",
        "--seed",
        "2",
        "--workers",
        "1",
    )
    assert r.returncode == 0, r.stderr
    meta = load_demo_json(out)
    assert meta["seed"] == 2 and meta["config"]["qualities"] == ["c40"]
    assert not stale.exists()  # the old demo's files are gone ...
    assert (out / "notes.txt").read_text() == "keep me"  # ... other files are not
    assert len(list(out.rglob("*.mp4"))) == 6 + 6 * 4


def test_library_errors_are_demo_errors(tmp_path):
    with pytest.raises(DemoError):
        make_demo(DemoConfig(out=tmp_path / "x", num_sources=4))
    with pytest.raises(DemoError):
        make_demo(DemoConfig(out=tmp_path / "x", width=321))
    with pytest.raises(DemoError):
        load_demo_json(tmp_path)

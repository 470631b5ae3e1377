"""Every dataset layout, on small trees made here (file contents do not matter to the readers)."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import pytest

from hilif.pipeline import schema
from hilif.pipeline.datasets import LayoutError, list_dataset
from hilif.pipeline.datasets.ffpp import official_splits


def touch(p: Path, data: bytes = b"v") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_official_ffpp_splits_shipped():
    s = official_splits()
    assert {k: len(v) for k, v in s.items()} == {"train": 360, "val": 70, "test": 70}
    ids = {k: {x for pair in v for x in pair} for k, v in s.items()}
    assert sum(len(v) for v in ids.values()) == 1000
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])


def test_ffpp_partial_download(tmp_path):
    splits = official_splits()
    a, b = splits["train"][0]
    c, d = splits["test"][0]
    root = tmp_path / "ff"
    for v in (a, b, c):
        touch(root / f"original_sequences/youtube/c40/videos/{v}.mp4")
    touch(root / f"manipulated_sequences/Deepfakes/c40/videos/{a}_{b}.mp4")
    touch(root / f"manipulated_sequences/Deepfakes/c40/videos/{b}_{a}.mp4")
    touch(root / f"manipulated_sequences/NeuralTextures/c40/videos/{d}_{c}.mp4")
    touch(root / f"manipulated_sequences/Deepfakes/c23/videos/{c}_{d}.mp4")  # other quality: ignored
    lst = list_dataset("ffpp", root, "c40")
    got = {(it.split, it.label, it.method, it.video_id) for it in lst.items}
    assert got == {
        ("train", 0, "real", a),
        ("train", 0, "real", b),
        ("test", 0, "real", c),
        ("train", 1, "Deepfakes", f"{a}_{b}"),
        ("train", 1, "Deepfakes", f"{b}_{a}"),
        ("test", 1, "NeuralTextures", f"{d}_{c}"),
    }
    # everything the splits name for 4 methods: 1000 reals + 4 x 1000 fakes
    assert len(lst.items) + len(lst.missing) == 5000
    assert lst.default_frames == {"train": 80, "val": 20, "test": 20}
    assert all(Path(it.path).is_file() for it in lst.items) and not any(Path(it.path).exists() for it in lst.missing)
    only = list_dataset("ffpp", root, "c40", ["NeuralTextures"])
    assert {it.method for it in only.items} == {"real", "NeuralTextures"}
    fs = list_dataset("ffpp", root, "c40", ["FaceShifter"])  # on request; absent here -> all missing
    assert (
        not any(it.method == "FaceShifter" for it in fs.items)
        and len([m for m in fs.missing if m.method == "FaceShifter"]) == 1000
    )


def test_ffpp_wrong_root_and_bad_args(tmp_path):
    with pytest.raises(LayoutError, match="original_sequences/youtube/c40/videos"):
        list_dataset("ffpp", tmp_path, "c40")
    (tmp_path / "original_sequences/youtube/c40/videos").mkdir(parents=True)
    with pytest.raises(LayoutError, match="no videos found"):
        list_dataset("ffpp", tmp_path, "c40")
    with pytest.raises(LayoutError, match="raw, c23, c40"):
        list_dataset("ffpp", tmp_path, "c50")
    with pytest.raises(LayoutError, match="FaceShifter"):
        list_dataset("ffpp", tmp_path, "c40", ["DeepFake"])
    with pytest.raises(LayoutError, match="no such folder"):
        list_dataset("ffpp", tmp_path / "nope", "c40")


def test_demo_uses_its_own_splits(tmp_path):
    root = tmp_path / "demo"
    touch(root / "original_sequences/youtube/c23/videos/000.mp4")
    touch(root / "original_sequences/youtube/c23/videos/001.mp4")
    touch(root / "manipulated_sequences/FaceSwap/c23/videos/001_000.mp4")
    for s, pairs in {"train": [], "val": [], "test": [["000", "001"]]}.items():
        touch(root / "splits" / f"{s}.json", json.dumps(pairs).encode())
    lst = list_dataset("demo", root, "c23", ["FaceSwap"])
    assert lst.dataset == "demo"
    assert {(it.split, it.method, it.video_id) for it in lst.items} == {
        ("test", "real", "000"),
        ("test", "real", "001"),
        ("test", "FaceSwap", "001_000"),
    }
    assert [m.video_id for m in lst.missing] == ["000_001"]
    (root / "splits/val.json").unlink()
    with pytest.raises(LayoutError, match="val.json"):
        list_dataset("demo", root, "c23")


def test_celebdf_test_list_uses_1_for_real(tmp_path):
    root = tmp_path / "Celeb-DF-v2"
    touch(root / "Celeb-real/id0_0000.mp4")
    touch(root / "Celeb-real/id0_0001.mp4")
    touch(root / "YouTube-real/00170.mp4")
    touch(root / "Celeb-synthesis/id1_id0_0007.mp4")
    touch(root / "Celeb-synthesis/id1_id0_0008.mp4")
    (root / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id1_id0_0007.mp4\n"
        "1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id9_id8_0001.mp4\n"
    )
    lst = list_dataset("celebdf", root)
    by = {it.rel: it for it in lst.items}
    assert by["YouTube-real/00170.mp4"].label == schema.REAL and by["YouTube-real/00170.mp4"].split == "test"
    assert by["Celeb-real/id0_0000.mp4"].label == schema.REAL
    assert (
        by["Celeb-synthesis/id1_id0_0007.mp4"].label == schema.FAKE
        and by["Celeb-synthesis/id1_id0_0007.mp4"].split == "test"
    )
    assert by["Celeb-real/id0_0001.mp4"].split == "train" and by["Celeb-synthesis/id1_id0_0008.mp4"].split == "train"
    assert [m.rel for m in lst.missing] == ["Celeb-synthesis/id9_id8_0001.mp4"]
    assert len({it.video_id for it in lst.items}) == len(lst.items)
    assert lst.default_frames["test"] == 32
    # a list read with the wrong convention is caught, not silently inverted
    (root / "List_of_testing_videos.txt").write_text("0 YouTube-real/00170.mp4\n")
    with pytest.raises(LayoutError, match="1 = real"):
        list_dataset("celebdf", root)
    with pytest.raises(LayoutError, match="List_of_testing_videos.txt"):
        list_dataset("celebdf", tmp_path)


def test_dfdc_parts_and_test_labels(tmp_path):
    root = tmp_path / "dfdc"
    touch(root / "dfdc_train_part_0/aaa.mp4")
    touch(root / "dfdc_train_part_0/bbb.mp4")
    touch(
        root / "dfdc_train_part_0/metadata.json",
        json.dumps(
            {
                "aaa.mp4": {"label": "REAL", "split": "train"},
                "bbb.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
                "ccc.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
            }
        ).encode(),
    )
    touch(root / "test/videos/t1.mp4")
    touch(root / "test/t2.mp4")
    (root / "test/labels.csv").write_text("filename,label\nt1.mp4,1\nt2.mp4,0\n")
    lst = list_dataset("dfdc", root)
    got = {(it.split, it.label, it.video_id) for it in lst.items}
    assert got == {("train", 0, "aaa"), ("train", 1, "bbb"), ("test", 1, "t1"), ("test", 0, "t2")}
    assert [m.video_id for m in lst.missing] == ["ccc"]
    (root / "test/labels.csv").write_text("name,lab\nt1.mp4,1\n")
    with pytest.raises(LayoutError, match="filename,label"):
        list_dataset("dfdc", root)
    with pytest.raises(LayoutError, match="dfdc_train_part_N"):
        list_dataset("dfdc", tmp_path / "dfdc" / "test" / "videos")


def _png() -> bytes:
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    return buf.tobytes()


def test_wilddeepfake_archives_and_unpacked(tmp_path):
    root = tmp_path / "wdf"
    png = _png()
    arc = root / "fake_test" / "7.tar.gz"
    arc.parent.mkdir(parents=True)
    with tarfile.open(arc, "w:gz") as tf:
        for seq in ("12", "3"):
            for f in ("10.png", "2.png", "1.png"):
                ti = tarfile.TarInfo(f"7/fake/{seq}/{f}")
                ti.size = len(png)
                tf.addfile(ti, io.BytesIO(png))
    for f in ("0.png", "1.png"):
        touch(root / "real_train/4/real/55" / f, png)
    lst = list_dataset("wilddeepfake", root)
    by = {it.video_id: it for it in lst.items}
    assert set(by) == {"7_12", "7_3", "4_55"}
    assert by["7_12"].split == "test" and by["7_12"].label == schema.FAKE and by["7_12"].archive == str(arc)
    assert by["7_12"].frames == ("7/fake/12/1.png", "7/fake/12/2.png", "7/fake/12/10.png")  # natural order
    assert by["4_55"].split == "train" and by["4_55"].label == schema.REAL and by["4_55"].archive is None
    from hilif.pipeline.decode import read_image_sequence

    dec = read_image_sequence(list(by["7_12"].frames), 2, archive=by["7_12"].archive)
    assert dec.indices == [0, 2] and dec.frames[0].shape == (8, 8, 3)
    with pytest.raises(LayoutError, match="real_train"):
        list_dataset("wilddeepfake", tmp_path / "wdf" / "fake_test")


def test_folder_csv(tmp_path):
    touch(tmp_path / "v/a.mp4")
    touch(tmp_path / "v/b.mp4")
    rows = [("v/a.mp4", "real", "train"), ("v/b.mp4", "1", "test"), ("v/c.mp4", "0", "val")]
    with (tmp_path / "list.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    lst = list_dataset("folder", tmp_path / "list.csv")
    assert {(it.split, it.label, it.rel) for it in lst.items} == {("train", 0, "v/a.mp4"), ("test", 1, "v/b.mp4")}
    assert [m.rel for m in lst.missing] == ["v/c.mp4"]
    (tmp_path / "bad.csv").write_text("path,label,split\nv/a.mp4,maybe,train\n")
    with pytest.raises(LayoutError, match=r"bad.csv:2: label"):
        list_dataset("folder", tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text("path,label,split\nv/a.mp4,0,training\n")
    with pytest.raises(LayoutError, match="split must be"):
        list_dataset("folder", tmp_path / "bad.csv")


def test_unknown_dataset_and_quality(tmp_path):
    with pytest.raises(LayoutError, match="unknown dataset"):
        list_dataset("faceforensics", tmp_path)
    with pytest.raises(LayoutError, match="orig"):
        list_dataset("celebdf", tmp_path, "c40")

"""The shard format module: keys, sample round trips through real tars, stats as completion marker, dataset JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from hilif.pipeline import schema


def _meta(**kw) -> schema.SampleMeta:
    base = dict(
        dataset="ffpp",
        split="train",
        label=schema.FAKE,
        method="Deepfakes",
        quality="c23",
        video_id="000_003",
        frame_index=12,
        frame_count=300,
        fps=29.97,
        box=[10.5, 20.0, 110.0, 130.25],
        landmarks=[[30.0, 50.0], [70.0, 50.0], [50.0, 70.0], [35.0, 90.0], [65.0, 90.0]],
        detector="dlib",
        score=1.25,
        sample_index=3,
        samples_in_video=80,
        target_index=12,
        source_path="manipulated_sequences/Deepfakes/c23/videos/000_003.mp4",
    )
    base.update(kw)
    return schema.SampleMeta(**base)


def _png(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "dataset,method,video",
    [
        ("ffpp", "Deepfakes", "000_003"),
        ("celeb.df", "Celeb-synthesis", "id1_id0_0007.mp4"),
        ("dfdc", "FAKE", "dfdc_train_part_0/aaqaifqrwn.mp4"),
        ("wild", "fake", "../a b/c.d.e"),
        ("x", "...", ""),
    ],
)
def test_sample_key_has_no_dots_or_slashes(dataset, method, video):
    key = schema.sample_key(dataset, method, video, 7)
    assert "." not in key and "/" not in key and " " not in key
    assert key.endswith("_f000007")
    assert key == schema.sample_key(dataset, method, video, 7)  # deterministic
    assert key != schema.sample_key(dataset, method, video, 8)


def test_sample_key_separates_methods_of_one_pair():
    keys = {
        schema.sample_key("ffpp", m, "000_003", 0) for m in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
    }
    assert len(keys) == 4
    videos = {schema.video_key("ffpp", m, "000_003") for m in ("Deepfakes", "Face2Face")}
    assert len(videos) == 2


def test_replaced_frame_keyed_by_frame_asked_for():
    asked = _meta(frame_index=13, target_index=12, replaced=True)
    neighbour = _meta(frame_index=13, target_index=13)
    assert asked.key != neighbour.key
    assert asked.key.endswith("_f000012")


# --------------------------------------------------------------------------- sample metadata


def test_sample_meta_json_round_trip():
    m = _meta()
    back = schema.SampleMeta.from_json(m.to_json())
    assert back == m
    d = json.loads(m.to_json())
    assert d["label"] == 1 and d["schema"] == schema.SCHEMA_VERSION
    # a newer writer's extra field is ignored; a missing required field is a SchemaError, not a TypeError
    d["future_field"] = 1
    assert schema.SampleMeta.from_json(json.dumps(d)) == m
    del d["box"]
    with pytest.raises(schema.SchemaError, match="box"):
        schema.SampleMeta.from_json(json.dumps(d))
    with pytest.raises(schema.SchemaError):
        schema.SampleMeta.from_json(b"{not json")


@pytest.mark.parametrize(
    "bad",
    [
        dict(split="training"),
        dict(label=2),
        dict(label=-1),
        dict(landmarks=[[0.0, 0.0]] * 4),
        dict(landmarks=[[0.0, 0.0, 0.0]] * 5),
        dict(box=[0.0, 0.0, 1.0]),
    ],
)
def test_sample_meta_rejects_bad_fields(bad):
    with pytest.raises(schema.SchemaError):
        _meta(**bad)


def test_label_encoding():
    assert (schema.REAL, schema.FAKE) == (0, 1)
    assert schema.LABEL_NAMES == {0: "real", 1: "fake"}
    assert schema.LABEL_IDS == {"real": 0, "fake": 1}


# --------------------------------------------------------------------------- through a real tar


def test_samples_round_trip_through_webdataset(tmp_path):
    # awkward names: dots in the dataset, method and video id must not split a sample in two
    metas = [
        _meta(
            dataset="celeb.df",
            method="Celeb.synthesis",
            video_id="id1_id0_0007.mp4",
            frame_index=i,
            target_index=i,
            label=i % 2,
        )
        for i in range(5)
    ]
    images = [_png(i) for i in range(5)]
    tar = tmp_path / "000-00000.tar"
    with wds.TarWriter(str(tar)) as w:
        for m, img in zip(metas, images):
            w.write(schema.encode_sample(m, img))
    got = list(wds.WebDataset(str(tar), shardshuffle=False, empty_check=False))
    assert len(got) == 5
    for s, m, img in zip(got, metas, images):
        assert s["__key__"] == m.key
        assert set(k for k in s if not k.startswith("__")) == {"png", "cls", "json"}
        assert schema.sample_image_ext(s) == "png"
        assert s["png"] == img  # stored byte for byte: no re-compression
        assert int(s["cls"]) == m.label
        assert schema.SampleMeta.from_json(s["json"]) == m


def test_encode_sample_members_and_bad_ext():
    m = _meta()
    s = schema.encode_sample(m, b"JPEGDATA", "jpg")
    assert s["__key__"] == m.key and s["jpg"] == b"JPEGDATA" and s["cls"] == b"1"
    assert schema.sample_image_ext(s) == "jpg"
    with pytest.raises(schema.SchemaError):
        schema.encode_sample(m, b"x", "webp")
    with pytest.raises(schema.SchemaError):
        schema.sample_image_ext({"__key__": "k", "cls": b"0"})


# --------------------------------------------------------------------------- shard files and stats


def test_shard_names_and_folders(tmp_path):
    p = schema.shard_path(tmp_path, "val", schema.REAL, 2, 17)
    assert p == tmp_path / "val" / "real" / "002-00017.tar"
    assert schema.shard_path(tmp_path, "val", "fake", 0, 0).parent == tmp_path / "val" / "fake"
    assert schema.stats_path(p) == tmp_path / "val" / "real" / "002-00017.stats.json"
    assert schema.tmp_path(p).name == ".002-00017.tar.tmp"
    with pytest.raises(schema.SchemaError):
        schema.shard_dir(tmp_path, "train", "maybe")
    with pytest.raises(schema.SchemaError):
        schema.shard_dir(tmp_path, "train", 5)


def _shard(root: Path, split: str, label: int, index: int, samples: int, stats: bool = True) -> Path:
    tar = schema.shard_path(root, split, label, 0, index)
    tar.parent.mkdir(parents=True, exist_ok=True)
    tar.write_bytes(b"x" * 10)
    if stats:
        schema.write_stats(tar, schema.ShardStats(tar.name, split, label, samples, 1, 10, {"Deepfakes": samples}))
    return tar


def test_complete_shards_needs_tar_and_stats(tmp_path):
    a = _shard(tmp_path, "train", schema.FAKE, 1, 4)
    b = _shard(tmp_path, "train", schema.FAKE, 0, 3)
    _shard(tmp_path, "train", schema.FAKE, 2, 5, stats=False)  # a killed writer: tar, no stats
    orphan = _shard(tmp_path, "train", schema.FAKE, 3, 6)
    orphan.unlink()  # stats whose tar is gone
    _shard(tmp_path, "train", schema.REAL, 0, 7)  # the other label
    done = schema.complete_shards(tmp_path, "train", schema.FAKE)
    assert [p for p, _ in done] == [b, a]  # sorted by name
    assert [s.samples for _, s in done] == [3, 4]
    assert schema.complete_shards(tmp_path, "val", schema.FAKE) == []
    assert schema.sum_stats(s for _, s in done) == {"train": {"fake": 7}}
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_shard_stats_round_trip_and_corrupt(tmp_path):
    tar = _shard(tmp_path, "test", schema.REAL, 0, 9)
    st = schema.ShardStats.load(schema.stats_path(tar))
    assert (st.shard, st.split, st.label, st.samples, st.methods) == (tar.name, "test", 0, 9, {"Deepfakes": 9})
    schema.stats_path(tar).write_text("{truncated")
    with pytest.raises(schema.SchemaError, match=str(tar.parent)):
        schema.complete_shards(tmp_path, "test", schema.REAL)
    schema.stats_path(tar).write_text(json.dumps({"shard": tar.name, "split": "test"}))
    with pytest.raises(schema.SchemaError, match="samples"):
        schema.ShardStats.load(schema.stats_path(tar))


# --------------------------------------------------------------------------- dataset JSON


def _info() -> schema.DatasetInfo:
    return schema.DatasetInfo(
        dataset="ffpp",
        quality="c40",
        command="hilif-prep extract --dataset ffpp --root /data/ffpp",
        config={"frames": {"train": 80}},
        versions={"webdataset": "1.0.2"},
        samples={"train": {"real": 80, "fake": 320}, "val": {"real": 20, "fake": 80}},
        videos={"train": {"real": 1, "fake": 4}, "val": {"real": 1, "fake": 4}},
        methods={"train": {"real": 80, "Deepfakes": 320}},
        created="2026-01-01T00:00:00Z",
    )


def test_dataset_info_round_trip_and_counts(tmp_path):
    info = _info()
    p = info.save(tmp_path)
    assert p == tmp_path / schema.DATASET_JSON
    back = schema.DatasetInfo.load(tmp_path)
    assert back == info
    assert back.count("train") == 400
    assert back.count("train", schema.REAL) == 80 and back.count("train", "fake") == 320
    assert back.count("test") == 0 and back.count("test", schema.FAKE) == 0


def test_dataset_info_errors_name_the_file_and_fix(tmp_path):
    with pytest.raises(schema.SchemaError, match="hilif-prep extract") as e:
        schema.DatasetInfo.load(tmp_path)
    assert str(tmp_path) in str(e.value)
    (tmp_path / schema.DATASET_JSON).write_text("{oops")
    with pytest.raises(schema.SchemaError, match="corrupt"):
        schema.DatasetInfo.load(tmp_path)
    d = json.loads(_info().to_json())
    del d["samples"]
    (tmp_path / schema.DATASET_JSON).write_text(json.dumps(d))
    with pytest.raises(schema.SchemaError, match="samples"):
        schema.DatasetInfo.load(tmp_path)
    (tmp_path / schema.DATASET_JSON).write_text("[1, 2]")
    with pytest.raises(schema.SchemaError):
        schema.DatasetInfo.load(tmp_path)


def test_video_records_round_trip_sorted_and_next_to_their_shard(tmp_path):
    rec = schema.video_record(
        "ffpp",
        "c23",
        "test",
        schema.FAKE,
        "Deepfakes",
        "000_003",
        "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4",
        asked=20,
    )
    assert rec["status"] == schema.MISSING and rec["missing"] == 20 and rec["samples"] == 0
    assert rec["video"] == schema.video_key("ffpp", "Deepfakes", "000_003")
    done = dict(rec, status=schema.OK, samples=18, missing=2)
    shard = schema.shard_path(tmp_path, "test", schema.FAKE, 0, 3)
    shard.parent.mkdir(parents=True)
    path = schema.videos_path(shard)
    assert path.parent == shard.parent and path.name == "000-00003" + schema.VIDEOS_SUFFIX
    assert schema.read_records(path) == []  # not written yet: no records
    schema.write_records(path, [done, rec])
    assert schema.read_records(path) == [done, rec]
    first = path.read_bytes()
    schema.write_records(path, [dict(reversed(list(done.items()))), rec])  # key order does not change the bytes
    assert path.read_bytes() == first
    assert {schema.OK, schema.NOFACE, schema.ERROR, schema.MISSING} > set(schema.FAILED)
    assert schema.OK not in schema.FAILED and schema.MISSING not in schema.FAILED

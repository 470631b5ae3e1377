"""The training and evaluation loaders: class balance, fixed epoch length, every sample once, broken shards."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import cv2
import pytest
import torch
from shards_fixture import make_shards

from hilif.pipeline import schema
from hilif.train.data import (
    BalancedTrainStream,
    DataError,
    EvalStream,
    class_counts,
    load_info,
    make_loader,
    normalize,
    plan_epoch,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # FF++-like imbalance: 4 real videos vs 8 fake videos (2 methods) in train
    return make_shards(
        tmp_path_factory.mktemp("shards"),
        layout={
            "train": (2, {"Deepfakes": 2, "FaceSwap": 2}),
            "val": (1, {"Deepfakes": 1}),
            "test": (2, {"Deepfakes": 1, "FaceSwap": 1}),
        },
        maxcount=3,
    )


def _batches(stream, workers=0):
    return list(make_loader(stream, workers))


def test_batches_are_class_balanced_and_epoch_has_planned_steps(shards: Path) -> None:
    info = load_info(shards)
    n_real, n_fake = class_counts(info, "train")
    assert (n_real, n_fake) == (8, 16)  # reals are the minority, as in FF++
    plan = plan_epoch(n_real, n_fake, global_batch=6, world_size=1)
    assert plan.steps == 6  # ceil(16 fakes / 3 per step): the larger class once
    stream = BalancedTrainStream(shards, "train", 64, 6, plan.steps, seed=1, rank=0, world_size=1)
    batches = _batches(stream, workers=2)
    assert len(batches) == plan.steps
    reals_seen = Counter()
    for b in batches:
        assert b["image"].shape == (6, 3, 64, 64) and b["image"].dtype == torch.uint8
        assert int(b["label"].sum()) == 3  # exactly half fake in every batch
        for key, y in zip(b["key"], b["label"].tolist()):
            assert ("_real_" in key) == (y == schema.REAL)
            if y == schema.REAL:
                reals_seen[key] += 1
    # the minority class is upsampled by mixing: 18 real draws from 8 real files, so some repeat
    assert sum(reals_seen.values()) == 18 and max(reals_seen.values()) >= 2


def test_train_methods_filter_and_unknown_method(shards: Path) -> None:
    info = load_info(shards)
    assert class_counts(info, "train", ["Deepfakes"]) == (8, 8)
    with pytest.raises(DataError, match="NeuralTextures"):
        class_counts(info, "train", ["NeuralTextures"])
    stream = BalancedTrainStream(shards, "train", 64, 4, 6, methods=["Deepfakes"], seed=0, rank=0, world_size=1)
    methods = {m for b in _batches(stream) for m in b["method"]}
    assert methods == {"real", "Deepfakes"}


def test_epoch_is_seeded_same_epoch_same_data_next_epoch_new_order(shards: Path) -> None:
    def keys(epoch: int) -> list[str]:
        s = BalancedTrainStream(shards, "train", 64, 4, 5, seed=3, rank=0, world_size=1)
        s.set_epoch(epoch)
        out = []
        for b in _batches(s):
            out += b["key"]
            out.append(str(b["image"].float().mean().item()))  # augmentation (crop, flip) is seeded too
        return out

    assert keys(0) == keys(0)
    assert keys(0) != keys(1)


def test_steps_per_epoch_identical_whatever_the_rank_and_worker_count() -> None:
    # the plan depends only on dataset counts and sizes, never on the rank or the loader workers
    a = plan_epoch(800, 3200, global_batch=12, world_size=2, workers=4)
    assert a.local_batch == 6 and a.steps == 534 and a == plan_epoch(800, 3200, 12, 2, workers=0)
    assert plan_epoch(800, 3200, 12, 1, 0, steps_override=7).steps == 7
    with pytest.raises(DataError, match="divisible"):
        plan_epoch(8, 8, global_batch=12, world_size=5, workers=1)


def test_eval_stream_reads_every_sample_exactly_once(shards: Path) -> None:
    info = load_info(shards)
    batches = _batches(EvalStream(shards, "test", 64, batch_size=5), workers=2)
    keys = [k for b in batches for k in b["key"]]
    assert len(keys) == info.count("test") == len(set(keys))
    # centre crop: the same sample gives the same pixels twice
    again = _batches(EvalStream(shards, "test", 64, batch_size=5), workers=0)
    first = {k: img for b in batches for k, img in zip(b["key"], b["image"])}
    for b in again:
        for k, img in zip(b["key"], b["image"]):
            assert torch.equal(first[k], img)


def test_truncated_shard_is_skipped_with_a_count(shards: Path, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    shutil.copytree(shards, root)
    tars = sorted((root / "test" / "fake").glob("*.tar"))
    data = tars[0].read_bytes()
    tars[0].write_bytes(data[: len(data) // 2 + 100])  # cut mid-member
    stream = EvalStream(root, "test", 64, batch_size=4)
    keys = [k for b in stream for k in b["key"]]
    assert stream.missing >= 1
    assert 0 < len(keys) < load_info(shards).count("test")
    assert len(keys) == len(set(keys))


def test_missing_dataset_json_and_empty_split(tmp_path: Path, shards: Path) -> None:
    with pytest.raises(DataError, match="dataset.json"):
        load_info(tmp_path)
    with pytest.raises(DataError, match="no complete shards"):
        EvalStream(shards.parent / "nothing", "test", 64, 4)


def test_normalize_is_imagenet() -> None:
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = normalize(x)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))


def test_colour_augment_is_global_seeded_and_optional() -> None:
    import numpy as np

    from hilif.train.config import TrainConfig
    from hilif.train.data import colour_jitter, train_augment

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    a = colour_jitter(img, np.random.default_rng(1))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert not np.array_equal(a, img)
    assert np.array_equal(a, colour_jitter(img, np.random.default_rng(1)))  # seeded
    # global, never local: a flat image stays flat (a local change could imitate a blending seam)
    flat = np.full((32, 32, 3), 120, np.uint8)
    out = colour_jitter(flat, np.random.default_rng(2)).reshape(-1, 3)
    assert (out == out[0]).all()
    # "paper" is crop + flip only: the pixels are a crop of the input, possibly mirrored
    crop = train_augment(img, 56, np.random.default_rng(3), "paper")
    assert any(
        (img[y : y + 56, x : x + 56] == c).all() for y in range(9) for x in range(9) for c in (crop, crop[:, ::-1])
    )
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(shards="x", augment="mixup")
    assert TrainConfig(shards="x").augment == "paper"


def test_strong_augment_is_seeded_and_keeps_a_local_change_local() -> None:
    """Rotation, zoom, blur and JPEG act on the whole face: two faces that differ only in a central patch (a
    manipulated region) still differ only around that patch, so the augmentation cannot hide or fake a seam."""
    import numpy as np

    from hilif.train.data import train_augment

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), (0, 0), 2)
    other = base.copy()
    other[104:152, 104:152] = 255 - other[104:152, 104:152]  # the "manipulated" patch: 48 px at the centre
    for seed in range(12):
        a = train_augment(base, 96, np.random.default_rng(seed), "strong")
        assert a.shape == (96, 96, 3) and a.dtype == np.uint8 and a.flags.c_contiguous
        assert np.array_equal(a, train_augment(base, 96, np.random.default_rng(seed), "strong"))  # seeded
        diff = np.abs(a.astype(int) - train_augment(other, 96, np.random.default_rng(seed), "strong")).max(-1)
        window = np.zeros_like(diff, bool)
        window[20:76, 20:76] = True  # the patch after zoom, rotation and crop offset, plus JPEG's 16-px blocks
        # outside: only the quantisation of the jitter's global contrast shift; another seed moves it all
        assert diff[~window].mean() <= 1.0, seed
        other_seed = train_augment(base, 96, np.random.default_rng(seed + 100), "strong")
        assert np.abs(a.astype(int) - other_seed).max(-1)[~window].mean() > 10, seed
        assert diff[38:58, 38:58].mean() > 8, seed  # inside: the change survives

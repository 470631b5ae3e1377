"""Tiny synthetic shard folders for the train tests, written with webdataset.ShardWriter + schema.encode_sample,
and the tiny training config the tests run on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import webdataset as wds

from hilif.pipeline import schema
from hilif.pipeline.align import template

#: the five alignment points of a face that is aligned already (a version-1 sample's frame points): SBI hulls fit
FIVE_POINTS = template(schema.FACE_SIZE).round(2).tolist()


def synthetic_face(rng: np.random.Generator, fake: bool, size: int = schema.FACE_SIZE) -> np.ndarray:
    """A smooth random 'face'; fakes carry a blended high-frequency patch in the middle (learnable)."""
    small = rng.integers(40, 216, (4, 4, 3)).astype(np.uint8)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    if fake:
        s = size // 4
        patch = rng.integers(0, 256, (2 * s, 2 * s, 3)).astype(np.float32)
        region = img[s : 3 * s, s : 3 * s].astype(np.float32)
        img[s : 3 * s, s : 3 * s] = np.clip(0.6 * region + 0.4 * patch, 0, 255).astype(np.uint8)
    return img


def write_split(
    root: Path,
    split: str,
    label: int,
    methods: dict[str, int],
    frames: int,
    dataset: str,
    rng: np.random.Generator,
    maxcount: int,
    video_id: Callable[[int], str] = "{:03d}".format,
) -> tuple[int, dict[str, int]]:
    """Write `methods[m]` videos x `frames` faces per method into shards of one split/label; video v of a method is
    named `video_id(v)`."""
    d = schema.shard_dir(root, split, label)
    d.mkdir(parents=True, exist_ok=True)
    pattern = str(d / "000-%05d.tar")
    counts: dict[str, int] = {}
    with wds.ShardWriter(pattern, maxcount=maxcount, verbose=0) as sink:
        for method, n_videos in methods.items():
            for v in range(n_videos):
                for f in range(frames):
                    meta = schema.SampleMeta(
                        dataset=dataset,
                        split=split,
                        label=label,
                        method=method,
                        quality="c40",
                        video_id=video_id(v),
                        frame_index=f,
                        frame_count=frames,
                        fps=25.0,
                        box=[0, 0, 10, 10],
                        landmarks=FIVE_POINTS,
                        detector="synthetic",
                        score=1.0,
                        sample_index=f,
                        samples_in_video=frames,
                        target_index=f,
                    )
                    ok, png = cv2.imencode(
                        ".png", cv2.cvtColor(synthetic_face(rng, label == schema.FAKE), cv2.COLOR_RGB2BGR)
                    )
                    assert ok
                    sink.write(schema.encode_sample(meta, png.tobytes()))
                    counts[method] = counts.get(method, 0) + 1
    # stats JSON marks each shard complete (as the extract writer does)
    for tar in sorted(d.glob("*.tar")):
        n = sum(1 for _ in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False))
        schema.write_stats(
            tar,
            schema.ShardStats(
                shard=tar.name, split=split, label=label, samples=n, videos=0, bytes=tar.stat().st_size, methods={}
            ),
        )
    return sum(counts.values()), counts


def make_shards(
    root: Path,
    dataset: str = "synth",
    frames: int = 4,
    seed: int = 0,
    maxcount: int = 8,
    layout: dict[str, tuple[int, dict[str, int]]] | None = None,
    twin_names: bool = False,
) -> Path:
    """A shard folder with dataset.json. layout: split -> (real videos, {fake method: videos}). With `twin_names`,
    fake v of a split with n reals is named FF++-style ``t_s`` with target t = v mod n (its real twin)."""
    rng = np.random.default_rng(seed)
    layout = layout or {
        "train": (4, {"Deepfakes": 2, "FaceSwap": 2}),
        "val": (2, {"Deepfakes": 1, "FaceSwap": 1}),
        "test": (2, {"Deepfakes": 1, "FaceSwap": 1}),
    }
    samples: dict[str, dict[str, int]] = {}
    videos: dict[str, dict[str, int]] = {}
    methods: dict[str, dict[str, int]] = {}
    for split, (n_real, fakes) in layout.items():
        nr, cr = write_split(root, split, schema.REAL, {schema.REAL_METHOD: n_real}, frames, dataset, rng, maxcount)
        names = (lambda v, n=n_real: f"{v % n:03d}_{(v + 1) % n:03d}") if twin_names else "{:03d}".format
        nf, cf = write_split(root, split, schema.FAKE, fakes, frames, dataset, rng, maxcount, names)
        samples[split] = {"real": nr, "fake": nf}
        videos[split] = {"real": n_real, "fake": sum(fakes.values())}
        methods[split] = {**cr, **cf}
    schema.DatasetInfo(
        dataset=dataset,
        quality="c40",
        command="synthetic",
        config={},
        versions={},
        samples=samples,
        videos=videos,
        methods=methods,
    ).save(root)
    return root


def tiny_train_config(shards: Path, out: Path, **overrides: Any):
    """A TrainConfig of the tiny preset that trains in seconds on CPU (2 + 1 epochs of 2 steps, batch 4, no loader
    workers); ``overrides`` replace any field."""
    from hilif.train.config import TrainConfig

    base: dict[str, Any] = dict(
        shards=str(shards),
        out=str(out),
        preset="tiny",
        stage1_epochs=2,
        stage2_epochs=1,
        batch_size=4,
        workers=0,
        steps_per_epoch=2,
        val_batch_size=16,
        shuffle_buffer=20,
    )
    return TrainConfig(**{**base, **overrides})

"""Shards -> batches: the webdataset pipelines for training (class-balanced) and evaluation (every sample once).

Training, per class stream (real, fake), top to bottom::

    shard list, reshuffled per epoch with a seed and cycled -> split_by_node -> split_by_worker
    -> tar to samples (a broken sample or truncated shard is logged, counted and skipped)
    -> method filter (--train-methods) -> shuffle buffer -> decode -> augment (resize, random crop, flip)

The two class streams are interleaved real, fake, real, fake, ... before batching, so every batch holds
the same number of reals and fakes: the paper's "reals upsampled x4" for FF++ is done by mixing the
streams (the smaller class is simply read more often), never by copying files. An epoch is a fixed
number of batches per worker, derived from ``dataset.json``, so every rank takes the same number of steps.

Batches carry uint8 images (N, 3, H, W); `normalize` turns them into ImageNet-normalised floats on
the device (4x less to copy than floats).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hilif.pipeline import schema
from hilif.train.config import AUGMENTS

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The paper crops 224 out of 256-pixel faces; other input sizes keep that ratio (resize first).
CROP_RATIO = 224 / 256


class DataError(ValueError):
    """The shard folder cannot feed this run (missing dataset JSON, empty split, ...)."""


# --------------------------------------------------------------------------- errors while reading


class SkipCounter:
    """webdataset handler: log a broken sample or truncated shard, count it, and continue.

    Counts are per process (each DataLoader worker has its own copy); every skip is logged with its URL.
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, exn: Exception) -> bool:
        self.count += 1
        log.warning("skipped a broken sample or shard (%d so far in this process): %s", self.count,
                    " | ".join(str(a) for a in exn.args if not hasattr(a, "read")) or repr(exn))
        return True


# --------------------------------------------------------------------------- decode and augment


def face_resize(img_size: int) -> int:
    """Side the 256 faces are resized to before cropping `img_size` (256 for 224: no resize)."""
    return int(round(img_size / CROP_RATIO))


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> HxWx3 uint8 RGB."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError("undecodable image")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def _resize(img: np.ndarray, side: int) -> np.ndarray:
    if img.shape[0] == side and img.shape[1] == side:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > side else cv2.INTER_LINEAR
    return cv2.resize(img, (side, side), interpolation=interp)


def train_augment(img: np.ndarray, img_size: int, rng: np.random.Generator, augment: str = "paper") -> np.ndarray:
    """The paper's training augmentation: random crop (224 of 256) + horizontal flip; ``augment="colour"`` adds
    `colour_jitter`."""
    img = _resize(img, face_resize(img_size))
    h, w = img.shape[:2]
    y = int(rng.integers(0, h - img_size + 1))
    x = int(rng.integers(0, w - img_size + 1))
    img = img[y:y + img_size, x:x + img_size]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if augment == "colour":
        img = colour_jitter(img, rng)
    elif augment != "paper":
        raise ValueError(f"unknown augment {augment!r}: choose from {AUGMENTS}")
    return img


def colour_jitter(img: np.ndarray, rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """Random brightness, contrast and saturation in [1 - strength, 1 + strength] and per-channel gains in
    [1 - strength / 4, 1 + strength / 4] (white balance), applied to the whole image (never locally: a local
    change could imitate or hide a blending trace)."""
    f = img.astype(np.float32)
    grey = f @ np.array([0.299, 0.587, 0.114], np.float32)
    b, c, sat = rng.uniform(1 - strength, 1 + strength, 3)
    gains = rng.uniform(1 - strength / 4, 1 + strength / 4, 3).astype(np.float32)
    f = grey[..., None] + (f - grey[..., None]) * np.float32(sat)
    mean = np.float32(grey.mean())
    f = ((f - mean) * np.float32(c) + mean) * (np.float32(b) * gains)
    return np.clip(f, 0, 255).round().astype(np.uint8)


def center_crop(img: np.ndarray, img_size: int) -> np.ndarray:
    """Evaluation: centre crop (224 of 256)."""
    img = _resize(img, face_resize(img_size))
    h, w = img.shape[:2]
    y, x = (h - img_size) // 2, (w - img_size) // 2
    return img[y:y + img_size, x:x + img_size]


def to_chw_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def normalize(images: torch.Tensor, device: torch.device | str = "cpu", channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float, ImageNet mean/std, on `device`."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@dataclass
class Sample:
    image: torch.Tensor  # uint8 (3, H, W)
    label: int
    key: str
    video: str
    method: str


def _meta(sample: dict[str, Any]) -> schema.SampleMeta:
    if "_meta" not in sample:
        sample["_meta"] = schema.SampleMeta.from_json(sample["json"])
    return sample["_meta"]


def _label(sample: dict[str, Any]) -> int:
    label = int(sample["cls"])
    if label not in schema.LABEL_NAMES:
        raise schema.SchemaError(f"sample {sample.get('__key__')!r}: label {label} is neither 0 nor 1")
    return label


def collate(samples: Sequence[Sample]) -> dict[str, Any]:
    return {
        "image": torch.stack([s.image for s in samples]),
        "label": torch.tensor([s.label for s in samples], dtype=torch.long),
        "key": [s.key for s in samples],
        "video": [s.video for s in samples],
        "method": [s.method for s in samples],
    }


# --------------------------------------------------------------------------- shard lists and epoch length


def class_shards(root: str | Path, split: str, label: int) -> list[str]:
    return [str(p) for p, _ in schema.complete_shards(root, split, label)]


def load_info(root: str | Path) -> schema.DatasetInfo:
    """dataset.json of `root`, or a DataError whose message names the file and the fix."""
    try:
        return schema.DatasetInfo.load(root)
    except schema.SchemaError as exc:
        raise DataError(str(exc)) from exc


def class_counts(info: schema.DatasetInfo, split: str, methods: Sequence[str] = ()) -> tuple[int, int]:
    """(reals, fakes) in `split`; fakes only of `methods` when given."""
    n_real = info.count(split, schema.REAL)
    if not methods:
        return n_real, info.count(split, schema.FAKE)
    per = info.methods.get(split, {})
    unknown = [m for m in methods if m not in per or m == schema.REAL_METHOD]
    if unknown:
        have = sorted(m for m in per if m != schema.REAL_METHOD)
        raise DataError(f"--train-methods {unknown} not in the {split} split of this dataset (it has {have})")
    return n_real, sum(int(per[m]) for m in methods)


@dataclass
class EpochPlan:
    """How long a training epoch is: identical on every rank (it depends only on dataset.json and sizes)."""

    steps: int  # optimiser steps per epoch on every rank
    batches_per_worker: int
    local_batch: int  # samples per step on one rank
    workers: int  # data-loading processes per rank (0 counts as 1)


def plan_epoch(n_real: int, n_fake: int, global_batch: int, world_size: int, workers: int,
               steps_override: int | None = None) -> EpochPlan:
    """Batches per worker so that an epoch reads every sample of the larger class about once.

    The smaller class is read as often as the larger one (balance by mixing). With `steps_override`,
    that many steps (rounded up to a multiple of the worker count).
    """
    if global_batch % world_size:
        raise DataError(f"batch size {global_batch} is not divisible by the {world_size} processes")
    local_batch = global_batch // world_size
    nw = max(1, workers)
    if steps_override is not None:
        steps = max(1, int(steps_override))
    else:
        steps = max(1, math.ceil(2 * max(n_real, n_fake) / global_batch))
    per_worker = math.ceil(steps / nw)
    return EpochPlan(steps=per_worker * nw, batches_per_worker=per_worker, local_batch=local_batch, workers=nw)


def _seed(*parts: int | str) -> int:
    """A stable seed from parts (Python's hash() of a str is salted per process, so not that)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def _worker_id() -> tuple[int, int]:
    wi = get_worker_info()
    return (wi.id, wi.num_workers) if wi is not None else (0, 1)


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


# --------------------------------------------------------------------------- training stream


class BalancedTrainStream(IterableDataset):
    """Infinite per-class streams interleaved real/fake, batched, cut to a fixed number of batches per worker.

    Call `set_epoch(e)` before iterating: shard order, shuffle buffer and augmentation are seeded by
    (seed, epoch, rank, worker), so an epoch reads the same samples in the same order whenever it runs
    (a resumed run sees exactly the data the uninterrupted run would have).
    """

    def __init__(self, root: str | Path, split: str, img_size: int, local_batch: int, batches_per_worker: int,
                 methods: Sequence[str] = (), seed: int = 0, shuffle_buffer: int = 2000,
                 augment: str = "paper") -> None:
        self.urls = {label: class_shards(root, split, label) for label in (schema.REAL, schema.FAKE)}
        for label, urls in self.urls.items():
            if not urls:
                raise DataError(f"{schema.shard_dir(root, split, label)}: no complete shards of "
                                f"{schema.LABEL_NAMES[label]} {split} samples; run `hilif-prep extract` for this split")
        self.img_size = img_size
        self.local_batch = local_batch
        self.batches_per_worker = batches_per_worker
        self.methods = frozenset(methods)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        if augment not in AUGMENTS:
            raise ValueError(f"unknown augment {augment!r}: choose from {AUGMENTS}")
        self.augment = augment
        self.epoch = 0
        self.handler = SkipCounter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _shard_cycle(self, label: int) -> Iterator[dict[str, str]]:
        # every pass over the shard list is reshuffled with its own seed; cycling means a class with
        # fewer shards than ranks x workers still feeds every worker, and the smaller class repeats
        urls = list(self.urls[label])
        for rep in range(10**9):
            order = urls[:]
            random.Random(_seed(self.seed, self.epoch, rep, label)).shuffle(order)
            for u in order:
                yield {"url": u}

    def _keep(self, sample: dict[str, Any]) -> bool:
        return not self.methods or _label(sample) == schema.REAL or _meta(sample).method in self.methods

    def _class_stream(self, label: int, rank: int, worker: int) -> Iterator[Sample]:
        rng = np.random.default_rng(_seed(self.seed, self.epoch, rank, worker, label, 1))
        src = self._shard_cycle(label)
        src = wds.split_by_node(src)
        src = wds.split_by_worker(src)
        src = wds.tarfile_to_samples(handler=self.handler)(src)
        src = wds.select(self._keep)(src)
        src = wds.shuffle(self.shuffle_buffer, min(self.shuffle_buffer, 200),
                          rng=random.Random(_seed(self.seed, self.epoch, rank, worker, label, 2)))(src)
        decode = _Decoder(self.img_size, train=True, rng=rng, augment=self.augment)
        src = wds.map(decode, handler=self.handler)(src)
        seen = 0
        for s in src:
            if s.label != label:
                raise schema.SchemaError(f"sample {s.key!r} labelled {s.label} sits in a "
                                         f"{schema.LABEL_NAMES[label]} shard folder; re-run extract")
            seen += 1
            yield s
        if seen == 0:  # an infinite cycle that yields nothing: every shard of this worker is unreadable
            raise DataError(f"no readable {schema.LABEL_NAMES[label]} samples in {self.urls[label]}")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, _ = _worker_id()
        rank = _rank()
        streams = [self._class_stream(schema.REAL, rank, worker), self._class_stream(schema.FAKE, rank, worker)]
        n = 0  # real, fake, real, fake, ...: an even batch holds exactly as many reals as fakes
        for _ in range(self.batches_per_worker):
            batch = []
            for _ in range(self.local_batch):
                batch.append(next(streams[n % 2]))
                n += 1
            yield collate(batch)


class _Decoder:
    """Raw webdataset sample -> Sample (decode, then train augmentation or centre crop, then optional perturbation)."""

    def __init__(self, img_size: int, train: bool, rng: np.random.Generator | None = None,
                 perturb: Callable[[np.ndarray], np.ndarray] | None = None, augment: str = "paper") -> None:
        self.img_size, self.train, self.rng, self.perturb, self.augment = img_size, train, rng, perturb, augment

    def __call__(self, sample: dict[str, Any]) -> Sample:
        ext = schema.sample_image_ext(sample)
        img = decode_image(sample[ext])
        img = (train_augment(img, self.img_size, self.rng, self.augment) if self.train
               else center_crop(img, self.img_size))
        if self.perturb is not None:
            img = self.perturb(img)
        meta = _meta(sample)
        return Sample(to_chw_tensor(img), _label(sample), sample["__key__"], meta.video, meta.method)


# --------------------------------------------------------------------------- evaluation stream


class EvalStream(IterableDataset):
    """Every sample of a split exactly once (shards split over ranks and workers), centre crop, partial last batch."""

    def __init__(self, root: str | Path, split: str, img_size: int, batch_size: int,
                 perturb: Callable[[np.ndarray], np.ndarray] | None = None, max_batches: int | None = None) -> None:
        self.urls = class_shards(root, split, schema.REAL) + class_shards(root, split, schema.FAKE)
        if not self.urls:
            raise DataError(f"{Path(root) / split}: no complete shards in the {split} split; "
                            f"run `hilif-prep extract` for it or pick another --split")
        self.img_size, self.batch_size, self.perturb, self.max_batches = img_size, batch_size, perturb, max_batches
        self.handler = SkipCounter()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        src: Iterator[Any] = iter([{"url": u} for u in self.urls])
        src = wds.split_by_node(src)
        src = wds.split_by_worker(src)
        src = wds.tarfile_to_samples(handler=self.handler)(src)
        src = wds.map(_Decoder(self.img_size, train=False, perturb=self.perturb), handler=self.handler)(src)
        src = wds.batched(self.batch_size, collation_fn=collate, partial=True)(src)
        for i, batch in enumerate(src):
            if self.max_batches is not None and i >= self.max_batches:
                break
            yield batch


def make_loader(stream: IterableDataset, workers: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over a stream that batches itself. Workers start fresh every epoch, so they see `set_epoch`."""
    return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=False, prefetch_factor=4 if workers > 0 else None)

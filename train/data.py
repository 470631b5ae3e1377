"""Shards -> batches: the training stream (class-balanced, planned epochs) and the evaluation stream (each sample
once).

Both streams read samples by random access into the tar shards. `ShardIndex` lists, per split and label, every
complete sample of every complete shard with the byte offsets of its members (read once from the tar headers with
:mod:`tarfile` and cached per process); reading a sample is one ``pread`` of its members.

Training (`BalancedTrainStream`): the data plan. With a global batch of B (even) samples, h = B / 2 reals and
h fakes per step, T steps per epoch and L = T * h samples of each class per epoch:

- each class has a sequence of permutations of its samples ("cycles"), seeded by (seed, label, cycle number);
- epoch e takes positions [e * L, (e + 1) * L) of each class's sequence, global step g of it positions g * h ...;
- where L is within one step of a class's size (the larger class when T is derived from the data), that class's
  cycle is padded to L with the first samples of its own permutation: every epoch reads a fresh permutation of the
  larger class (each sample exactly once, up to h - 1 repeats); the smaller class runs on through its cycles, so it is
  repeated evenly (FF++ reals ~4x per epoch, every real k or k + 1 times). With ``steps`` set (``--steps-per-epoch``),
  the epochs simply continue along both sequences;
- with twins (``twins=True``, ``--pair-twins``) the real at position p is the real twin of the fake at position p
  (its target video's same frame, `twin_map`) where the fake has one, so reals are read as often as the fakes
  made from them;
- the B samples of a global step are laid out real, fake, real, fake, ...; rank r takes slots [r * b, (r + 1) * b)
  (b = B / world size). With an odd b, consecutive ranks start on complementary classes, so every global step holds
  exactly h reals and h fakes; b = 1 is refused (L_d needs a real and a fake on every rank);
- worker w of a rank's DataLoader builds that rank's steps w, w + W, w + 2W, ...; the loader hands them out in
  step order.

The plan depends only on (seed, epoch, the indexed samples, B, world size), never on the number of loader workers,
and `BalancedTrainStream.set_epoch` with ``start_step=k`` yields exactly batches k, k + 1, ... of the epoch without
reading the ones before (mid-epoch resume). Augmentation is seeded per sample by its place in the plan.

Self-blended fakes (``synth="sbi"``, :mod:`hilif.train.sbi`): a fake slot at position p of the fake sequence is, with
probability ``synth_ratio`` (drawn from (seed, epoch, p)), a self-blended image of the real at position p of the real
sequence - the real it is paired with in its step - blended before augmentation and seeded by its place like any
sample. Without dataset fakes (``dataset_fakes=False``, ``--train-methods none``) every fake slot is one, and the
fake sequence is the real one (the reals are the plan's larger class).

Bad data: samples that the shard stats announce but a truncated tar does not hold are counted when indexing
(``missing``); a sample that cannot be read or decoded is logged, counted and replaced by a seeded random sample of
the same class (training; balance and step counts hold) or left out (evaluation). Every batch carries its worker's
running count (``skipped``, ``worker``); `SkipTally` sums them over a loader's workers.

Batches carry uint8 images (N, 3, H, W); `normalize` turns them into ImageNet-normalised floats on
the device (4x less to copy than floats).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import tarfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hilif.pipeline import schema
from hilif.train import distributed as dist_util
from hilif.train.config import AUGMENTS

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The paper crops 224 out of 256-pixel faces; other input sizes keep that ratio (resize first).
CROP_RATIO = 224 / 256
#: A training sample that cannot be read is replaced by a random one of its class; after this many unreadable
#: draws in a row the class is declared unreadable (DataError).
MAX_DRAWS = 64


class DataError(ValueError):
    """The shard folder cannot feed this run (missing dataset JSON, empty split, ...)."""


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
    `colour_jitter`; ``"strong"`` also `random_affine` before the crop and `blur_and_compress` after the jitter."""
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}: choose from {AUGMENTS}")
    img = _resize(img, face_resize(img_size))
    if augment == "strong":
        img = random_affine(img, rng)
    h, w = img.shape[:2]
    y = int(rng.integers(0, h - img_size + 1))
    x = int(rng.integers(0, w - img_size + 1))
    img = img[y : y + img_size, x : x + img_size]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if augment in ("colour", "strong"):
        img = colour_jitter(img, rng)
    if augment == "strong":
        img = blur_and_compress(img, rng)
    return img


def random_affine(img: np.ndarray, rng: np.random.Generator, degrees: float = 8.0, scale: float = 0.08) -> np.ndarray:
    """A small random rotation and zoom of the whole face about its centre (mirrored border): the same photograph
    never lands on the same pixels twice, so its exact texture cannot be memorised."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(
        (w / 2, h / 2), float(rng.uniform(-degrees, degrees)), float(rng.uniform(1 - scale, 1 + scale))
    )
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def blur_and_compress(
    img: np.ndarray,
    rng: np.random.Generator,
    p_blur: float = 0.3,
    p_jpeg: float = 0.5,
    quality: tuple[int, int] = (60, 95),
) -> np.ndarray:
    """Whole-image degradations of the field's standard recipe: Gaussian blur (probability `p_blur`) and JPEG
    re-compression (`p_jpeg`, quality drawn from `quality`). Applied to the whole image, as colour jitter: a
    blending trace is a difference between the face and its surroundings, which a global operation keeps."""
    if rng.random() < p_blur:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 0.8)))
    if rng.random() < p_jpeg:
        ok, buf = cv2.imencode(
            ".jpg",
            np.ascontiguousarray(img[..., ::-1]),
            [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(quality[0], quality[1] + 1))],
        )
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(img)


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
    return img[y : y + img_size, x : x + img_size]


def to_chw_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


@functools.lru_cache(maxsize=None)
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as (1, 3, 1, 1) tensors on `device`, made once: a host-to-device copy per batch would
    be a sync point, and is not allowed at all inside a CUDA graph capture."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return mean, std


def normalize(images: torch.Tensor, device: torch.device | str = "cpu", channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float, ImageNet mean/std, on `device`."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    mean, std = _imagenet_stats(x.device)
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
    try:
        label = int(sample["cls"])
    except ValueError as exc:
        raise schema.SchemaError(f"sample {sample.get('__key__')!r}: label {sample['cls']!r} is not a number") from exc
    if label not in schema.LABEL_NAMES:
        raise schema.SchemaError(f"sample {sample.get('__key__')!r}: label {label} is neither 0 nor 1")
    return label


def collate(samples: Sequence[Sample], img_size: int = 0, **extra: Any) -> dict[str, Any]:
    """Samples -> a batch dict; `extra` entries (step, worker, skipped) are added as they are. An empty list gives an
    empty batch of (0, 3, img_size, img_size) images."""
    images = (
        torch.stack([s.image for s in samples])
        if samples
        else torch.zeros((0, 3, img_size, img_size), dtype=torch.uint8)
    )
    return {
        "image": images,
        "label": torch.tensor([s.label for s in samples], dtype=torch.long),
        "key": [s.key for s in samples],
        "video": [s.video for s in samples],
        "method": [s.method for s in samples],
        **extra,
    }


#: method / key / video suffix of a self-blended fake in a batch
SBI_METHOD = "SBI"
#: The face margin of an extract run whose dataset.json does not record one (hilif-prep's default).
DEFAULT_MARGIN = 1.3


class _Decoder:
    """Raw sample (members by extension) -> Sample: decode, then train augmentation or centre crop, then optional
    perturbation. With ``blend_rng`` (training, a real sample): a self-blended fake of it first (``sbi``, landmarks
    mapped with the extract run's ``margin``), augmented like any sample after."""

    def __init__(
        self,
        img_size: int,
        train: bool,
        rng: np.random.Generator | None = None,
        perturb: Callable[[np.ndarray], np.ndarray] | None = None,
        augment: str = "paper",
        sbi: Any = None,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        self.img_size, self.train, self.rng, self.perturb, self.augment = img_size, train, rng, perturb, augment
        self.sbi, self.margin = sbi, margin

    def __call__(
        self,
        sample: dict[str, Any],
        rng: np.random.Generator | None = None,
        blend_rng: np.random.Generator | None = None,
    ) -> Sample:
        meta = _meta(sample)
        label = _label(sample)
        ext = schema.sample_image_ext(sample)
        img = decode_image(sample[ext])
        key, video, method = sample.get("__key__") or meta.key, meta.video, meta.method
        if blend_rng is not None:
            from hilif.train import sbi

            if label != schema.REAL:
                raise schema.SchemaError(f"sample {key!r}: self-blended fakes are made from reals, got label {label}")
            points = sbi.sample_landmarks(meta, img.shape[0], self.margin)
            img = sbi.self_blend_sized(img, points, face_resize(self.img_size), blend_rng, self.sbi)
            label, key, video, method = schema.FAKE, f"{key}_sbi", f"{video}/{SBI_METHOD}", SBI_METHOD
        img = (
            train_augment(img, self.img_size, rng if rng is not None else self.rng, self.augment)
            if self.train
            else center_crop(img, self.img_size)
        )
        if self.perturb is not None:
            img = self.perturb(img)
        return Sample(to_chw_tensor(img), label, key, video, method)


#: What a broken sample raises while it is read and decoded (cv2.error for images OpenCV cannot parse).
_SAMPLE_ERRORS = (ValueError, OSError, KeyError, EOFError, cv2.error)


# --------------------------------------------------------------------------- the shard index


@dataclass
class _ShardScan:
    offsets: np.ndarray  # int64 (n, 3): data offsets of the cls, json and image members of each complete sample
    lengths: np.ndarray  # int64 (n, 3)
    image_ext: np.ndarray  # int8 (n,): index into schema.IMAGE_EXTS
    error: str | None  # why the scan stopped early (truncated or unreadable tar), None when it read to the end


_SCANS: dict[tuple[str, int, int], _ShardScan] = {}


def scan_shard(path: str) -> _ShardScan:
    """Where the members of each complete sample of one tar lie, from its headers (cached per file and mtime).

    A sample is complete when its cls, json and image members are all in the file; a truncated or corrupt tar
    gives the samples before the damage and an `error`."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return _ShardScan(np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64), np.zeros(0, np.int8), str(exc))
    cache_key = (path, st.st_size, st.st_mtime_ns)
    if cache_key in _SCANS:
        return _SCANS[cache_key]
    groups, error = _tar_members(path, st.st_size)
    rows, exts = [], []
    for members in groups.values():
        img = next((e for e in schema.IMAGE_EXTS if e in members), None)
        if img is None or "cls" not in members or "json" not in members:
            continue
        rows.append((members["cls"], members["json"], members[img]))
        exts.append(schema.IMAGE_EXTS.index(img))
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 3, 2)
    scan = _ShardScan(
        np.ascontiguousarray(arr[:, :, 0]), np.ascontiguousarray(arr[:, :, 1]), np.asarray(exts, dtype=np.int8), error
    )
    _SCANS[cache_key] = scan
    return scan


def _tar_members(path: str, size: int) -> tuple[dict[str, dict[str, tuple[int, int]]], str | None]:
    """(webdataset key -> extension -> (data offset, size)) of a tar's complete members of its first `size` bytes,
    and why reading stopped early (None when it read to the end)."""
    groups: dict[str, dict[str, tuple[int, int]]] = {}
    error = None
    try:
        with tarfile.open(path, mode="r:") as tf:
            while (m := tf.next()) is not None:
                if not m.isfile():
                    continue
                if m.offset_data + m.size > size:
                    error = f"truncated in member {m.name}"
                    break
                # the webdataset key: the path up to the first dot of the file name
                slash = m.name.rfind("/") + 1
                dot = m.name.find(".", slash)
                if dot < 0:
                    continue
                groups.setdefault(m.name[:dot], {})[m.name[dot + 1 :]] = (m.offset_data, m.size)
                tf.members.clear()  # nothing needs the member list; keep memory flat on big shards
    except (tarfile.TarError, OSError, EOFError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return groups, error


@dataclass
class ShardIndex:
    """Every readable sample of a list of shards, with the byte ranges of its members (pickles small: numpy arrays)."""

    shards: list[str]
    shard: np.ndarray  # int32 (n,): index into `shards`
    offsets: np.ndarray  # int64 (n, 3): cls, json, image
    lengths: np.ndarray  # int64 (n, 3)
    image_ext: np.ndarray  # int8 (n,)
    missing: int = 0  # samples the shard stats announce that no tar holds complete (truncated shards)
    problems: list[str] = field(default_factory=list)  # "<shard>: <why>" for each damaged shard

    def __len__(self) -> int:
        return len(self.shard)

    @classmethod
    def build(cls, shards: Sequence[tuple[str, int]]) -> "ShardIndex":
        """Index `shards`, given as (tar path, samples its stats announce)."""
        paths, shard_ids, offs, lens, exts, problems = [], [], [], [], [], []
        missing = 0
        for path, announced in shards:
            scan = scan_shard(path)
            n = len(scan.image_ext)
            if scan.error is not None or n != announced:
                problems.append(f"{path}: {n} of {announced} samples readable ({scan.error or 'incomplete samples'})")
                log.warning(
                    "shard %s: %d of %d samples readable (%s); the rest are skipped",
                    path,
                    n,
                    announced,
                    scan.error or "incomplete samples",
                )
            missing += max(0, int(announced) - n)
            shard_ids.append(np.full(n, len(paths), np.int32))
            paths.append(path)
            offs.append(scan.offsets)
            lens.append(scan.lengths)
            exts.append(scan.image_ext)

        def cat(xs: list[np.ndarray], shape: int, dt: type) -> np.ndarray:
            return np.concatenate(xs) if xs else np.zeros(shape, dt)

        return cls(
            paths,
            cat(shard_ids, 0, np.int32),
            cat(offs, (0, 3), np.int64),
            cat(lens, (0, 3), np.int64),
            cat(exts, 0, np.int8),
            missing,
            problems,
        )

    def subset(self, keep: np.ndarray, dropped: int = 0) -> "ShardIndex":
        """The samples where `keep` is true; `dropped` more are counted as missing (unreadable while filtering)."""
        return ShardIndex(
            self.shards,
            self.shard[keep],
            self.offsets[keep],
            self.lengths[keep],
            self.image_ext[keep],
            self.missing + dropped,
            self.problems,
        )


def class_shards(root: str | Path, split: str, label: int) -> list[str]:
    return [str(p) for p, _ in schema.complete_shards(root, split, label)]


#: The method filter of `class_index` by (each shard's path, size and mtime; methods): every sample's metadata is
#: read once per process, however many streams (one per training stage) index the same fakes.
_METHOD_MASKS: dict[tuple[Any, ...], tuple[np.ndarray, int]] = {}


def class_index(root: str | Path, split: str, label: int, methods: Sequence[str] = ()) -> ShardIndex:
    """The readable samples of one split and label; fakes only of `methods` when given (read from each sample's
    metadata; a sample whose metadata cannot be read is counted as missing)."""
    index = ShardIndex.build([(str(p), st.samples) for p, st in schema.complete_shards(root, split, label)])
    if not methods or label == schema.REAL or len(index) == 0:
        return index
    key = (tuple(_file_key(p) for p in index.shards), tuple(sorted(set(methods))))
    if key not in _METHOD_MASKS or len(_METHOD_MASKS[key][0]) != len(index):
        _METHOD_MASKS[key] = _method_mask(index, set(methods))
    return index.subset(*_METHOD_MASKS[key])


def _file_key(path: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, st.st_size, st.st_mtime_ns


def _method_mask(index: ShardIndex, wanted: set[str]) -> tuple[np.ndarray, int]:
    """(which samples of `index` are of a `wanted` method, how many could not be read)."""
    keep = np.zeros(len(index), bool)
    dropped = []

    def unreadable(i: int, exc: BaseException) -> None:
        dropped.append(i)
        log.warning("skipped an unreadable sample of %s: %s", index.shards[index.shard[i]], exc)

    with _Reader() as reader:
        for i, meta in _metas(reader, index, unreadable):
            keep[i] = meta.method in wanted
    return keep, len(dropped)


def twin_video(dataset: str, video_id: str) -> str | None:
    """The real video a fake was made from (its target: same camera, background and frames), where the dataset's
    names say it: FF++ and the demo ``t_s`` -> ``t``; Celeb-DF ``Celeb-synthesis_idA_idB_NNNN`` ->
    ``Celeb-real_idA_NNNN``. None where the names do not tell (DFDC, WildDeepfake, folders)."""
    if dataset in ("ffpp", "demo"):
        target, sep, _ = video_id.partition("_")
        return target if sep else None
    if dataset == "celebdf" and video_id.startswith("Celeb-synthesis_"):
        parts = video_id.split("_")
        return f"Celeb-real_{parts[1]}_{parts[-1]}" if len(parts) == 4 else None
    return None


def twin_map(reals: ShardIndex, fakes: ShardIndex) -> np.ndarray:
    """For every fake of `fakes`, the index in `reals` of its real twin: the target video's sample nearest in
    frame index (the same frame where both were sampled alike), or -1 where the fake has none (unknown target,
    target not in the split, unreadable metadata)."""
    frames: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with _Reader() as reader:
        per_video: dict[str, list[tuple[int, int]]] = {}
        for i, meta in _metas(reader, reals):
            per_video.setdefault(meta.video_id, []).append((meta.frame_index, i))
        for video, pairs in per_video.items():
            pairs.sort()
            frames[video] = (np.array([f for f, _ in pairs]), np.array([i for _, i in pairs]))
        out = np.full(len(fakes), -1, np.int64)
        for i, meta in _metas(reader, fakes):
            target = twin_video(meta.dataset, meta.video_id)
            if target in frames:
                fi, idx = frames[target]
                out[i] = idx[int(np.abs(fi - meta.frame_index).argmin())]  # a tie goes to the earlier frame
    return out


def _metas(
    reader: "_Reader", index: ShardIndex, unreadable: Callable[[int, BaseException], None] | None = None
) -> Iterator[tuple[int, schema.SampleMeta]]:
    """(i, metadata) of every sample of `index` whose metadata reads; the others go to `unreadable` (default:
    skipped, as they are counted where the sample itself is read)."""
    for i in range(len(index)):
        try:
            meta = schema.SampleMeta.from_json(reader.read(index, i, members=("json",))["json"])
        except _SAMPLE_ERRORS as exc:
            if unreadable is not None:
                unreadable(i, exc)
            continue
        yield i, meta


class _Reader:
    """Random access to indexed samples: one pread per sample; keeps at most `max_open` files open (per process)."""

    def __init__(self, max_open: int = 64) -> None:
        self.max_open = max_open
        self.fds: OrderedDict[str, int] = OrderedDict()

    def _fd(self, path: str) -> int:
        fd = self.fds.pop(path, None)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            while len(self.fds) >= self.max_open:
                os.close(self.fds.popitem(last=False)[1])
        self.fds[path] = fd
        return fd

    def read(self, index: ShardIndex, i: int, members: Sequence[str] = ("cls", "json", "image")) -> dict[str, Any]:
        """The raw sample: member bytes by extension (``png``/``jpg`` for the image)."""
        path = index.shards[index.shard[i]]
        which = [("cls", "json", "image").index(m) for m in members]
        off, ln = index.offsets[i, which], index.lengths[i, which]
        lo, hi = int(off.min()), int((off + ln).max())
        buf = os.pread(self._fd(path), hi - lo, lo)
        if len(buf) != hi - lo:
            raise OSError(f"{path}: short read at byte {lo} (the file changed after indexing?)")
        out: dict[str, Any] = {"__url__": path}
        for m, o, n in zip(members, off.tolist(), ln.tolist()):
            name = schema.IMAGE_EXTS[index.image_ext[i]] if m == "image" else m
            out[name] = buf[o - lo : o - lo + n]
        return out

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.popitem()[1])

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- dataset counts and epoch length


def load_info(root: str | Path) -> schema.DatasetInfo:
    """dataset.json of `root`, or a DataError whose message names the file and the fix."""
    try:
        return schema.DatasetInfo.load(root)
    except schema.SchemaError as exc:
        raise DataError(str(exc)) from exc


def face_margin(root: str | Path, info: schema.DatasetInfo | None = None) -> float:
    """The face margin the shard folder's extract run aligned with (dataset.json; `info` when already read): the
    alignment that maps version-1 samples' five points, which self-blending needs."""
    face = ((info or load_info(root)).config or {}).get("face") or {}
    return float(face.get("margin", DEFAULT_MARGIN))


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


def local_batch_size(global_batch: int, world_size: int) -> int:
    """Samples per step on one rank, or a DataError naming the fix (odd global batch, 1 sample per rank, ...)."""
    if global_batch < 2 or global_batch % 2:
        raise DataError(f"--batch-size {global_batch}: the global batch must be even (half real, half fake)")
    if global_batch % world_size:
        raise DataError(
            f"--batch-size {global_batch} is not divisible by the {world_size} processes; "
            f"use a multiple of {world_size}"
        )
    local = global_batch // world_size
    if local < 2:
        raise DataError(
            f"--batch-size {global_batch} over {world_size} processes is 1 sample per process: L_d and "
            f"BatchNorm need a real and a fake on every process; use --batch-size {2 * world_size} or more"
        )
    return local


def natural_steps(n_real: int, n_fake: int, global_batch: int) -> int:
    """Steps that read the larger class once: ceil(larger / (global_batch / 2))."""
    return max(1, math.ceil(max(n_real, n_fake) / (global_batch // 2)))


@dataclass
class EpochPlan:
    """How long a training epoch is: identical on every rank (it depends only on the data and the global batch)."""

    steps: int  # optimiser steps per epoch on every rank
    local_batch: int  # samples per step on one rank


def plan_epoch(
    n_real: int,
    n_fake: int,
    global_batch: int,
    world_size: int,
    workers: int | None = None,
    steps_override: int | None = None,
) -> EpochPlan:
    """Steps per epoch: the larger class read once (`natural_steps`), or `steps_override`.

    `workers` is accepted for older callers and ignored: the plan never depends on the loader's worker count."""
    local = local_batch_size(global_batch, world_size)
    steps = max(1, int(steps_override)) if steps_override is not None else natural_steps(n_real, n_fake, global_batch)
    return EpochPlan(steps=steps, local_batch=local)


def _worker_id() -> tuple[int, int]:
    wi = get_worker_info()
    return (wi.id, wi.num_workers) if wi is not None else (0, 1)


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit (rank, world size), or torch.distributed's when called in the main process and not given."""
    if rank is None or world_size is None:
        live = dist_util.current()
        rank = live.rank if rank is None else rank
        world_size = live.world_size if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return int(rank), int(world_size)


class _Skips:
    """Running count of unreadable samples met by one worker in one pass."""

    def __init__(self) -> None:
        self.count = 0
        self.bad: set[tuple[int, int]] = set()

    def add(self, where: str, exc: BaseException) -> None:
        self.count += 1
        log.warning("skipped a broken sample (%d so far in this worker): %s: %s", self.count, where, exc)


class SkipTally:
    """Sums the skip counts of a loader's batches: each batch carries its worker's running count."""

    def __init__(self) -> None:
        self.per_worker: dict[int, int] = {}

    def update(self, batch: dict[str, Any]) -> None:
        if "worker" in batch:
            self.per_worker[int(batch["worker"])] = int(batch["skipped"])

    def total(self) -> int:
        return sum(self.per_worker.values())

    def wrap(self, batches: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The batches, counted; empty ones (every sample of an evaluation batch unreadable) left out."""
        for batch in batches:
            self.update(batch)
            if len(batch["label"]):
                yield batch


# --------------------------------------------------------------------------- training stream


def _cycle_length(n: int, per_epoch: int, half: int) -> int:
    """A class's cycle: its permutation, padded to the epoch's length when that is within one step of it."""
    return per_epoch if n <= per_epoch < n + half else n


def _stream_index(root: str | Path, split: str, methods: Sequence[str], dataset_fakes: bool) -> dict[int, ShardIndex]:
    """The training stream's per-class sample index; without dataset fakes the fake sequence is the real one
    (every fake slot blends its paired real). An empty class is a one-line DataError naming the folder."""
    index = {
        label: class_index(root, split, label, methods if label == schema.FAKE else ())
        for label in ((schema.REAL, schema.FAKE) if dataset_fakes else (schema.REAL,))
    }
    if not dataset_fakes:  # the fake sequence is the real one: every fake slot blends its paired real
        index[schema.FAKE] = index[schema.REAL]
    for label, idx in index.items():
        if len(idx) == 0:
            folder = schema.shard_dir(root, split, label)
            what = f" of --train-methods {list(methods)}" if methods and label == schema.FAKE else ""
            if not idx.shards:
                raise DataError(
                    f"{folder}: no complete shards of {schema.LABEL_NAMES[label]} {split} samples; "
                    f"run `hilif-prep extract` for this split"
                )
            raise DataError(
                f"{folder}: no readable {schema.LABEL_NAMES[label]} {split} samples{what} in its "
                f"{len(idx.shards)} shard(s) ({'; '.join(idx.problems[:3])}); re-run "
                f"`hilif-prep extract` for this split"
            )
    return index


class BalancedTrainStream(IterableDataset):
    """Class-balanced training batches following the data plan of the module docstring.

    `global_batch` is the batch over all ranks; this rank yields `steps` batches of ``global_batch / world_size``
    per epoch. `rank` and `world_size` default to torch.distributed's, read here in the main process (never inside
    a loader worker); pass them explicitly to simulate ranks. Everything the stream holds pickles (spawn-safe).
    `info`: the folder's dataset.json when the caller has read it (self-blending maps landmarks with its face margin).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        img_size: int,
        global_batch: int,
        steps: int | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        methods: Sequence[str] = (),
        seed: int = 0,
        augment: str = "paper",
        synth: str = "none",
        synth_ratio: float = 0.5,
        sbi: Any = None,
        dataset_fakes: bool = True,
        info: schema.DatasetInfo | None = None,
        twins: bool = False,
    ) -> None:
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.global_batch = int(global_batch)
        self.local_batch = local_batch_size(self.global_batch, self.world_size)
        self.half = self.global_batch // 2
        if augment not in AUGMENTS:
            raise ValueError(f"unknown augment {augment!r}: choose from {AUGMENTS}")
        self.img_size, self.seed, self.augment = img_size, int(seed), augment
        if synth not in ("none", "sbi") or not 0.0 < synth_ratio <= 1.0:
            raise ValueError(f"synth {synth!r} / synth_ratio {synth_ratio}: use none or sbi, a ratio in (0, 1]")
        if not dataset_fakes and synth == "none":
            raise ValueError("a stream without dataset fakes needs synthetic fakes (synth='sbi')")
        self.synth, self.synth_ratio, self.dataset_fakes = synth, float(synth_ratio), bool(dataset_fakes)
        self.sbi = sbi
        if synth != "none":
            from hilif.train.sbi import SBIConfig

            self.sbi = sbi or SBIConfig()
            self.margin = face_margin(root, info)
        else:
            self.margin = DEFAULT_MARGIN
        self.index = _stream_index(root, split, methods, self.dataset_fakes)
        # the real slot of a step holds the twin of the fake beside it (-1: the real sequence's own sample)
        self.twins: np.ndarray | None = None
        if twins and self.dataset_fakes:
            self.twins = twin_map(self.index[schema.REAL], self.index[schema.FAKE])
            if not (self.twins >= 0).any():
                raise DataError(f"{root}: no fake of the {split} split has a known real twin; drop --pair-twins")
            log.info("twins: %d of %d fakes paired with their target's frame", (self.twins >= 0).sum(), len(self.twins))
        self.counts = (len(self.index[schema.REAL]), len(self.index[schema.FAKE]))
        self.steps = natural_steps(*self.counts, self.global_batch) if steps is None else max(1, int(steps))
        self.per_epoch = self.steps * self.half
        self.cycle = {label: _cycle_length(len(idx), self.per_epoch, self.half) for label, idx in self.index.items()}
        self.missing = sum(idx.missing for label, idx in self.index.items() if dataset_fakes or label == schema.REAL)
        self.epoch = 0
        self.start_step = 0
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Yield epoch `epoch` next, from its step `start_step` on (0: the whole epoch).

        The batches of steps ``start_step, start_step + 1, ..., steps - 1`` are exactly those an uninterrupted
        epoch yields at those steps (same samples, same augmentation), and the steps before are not read:
        a run resumed mid-epoch continues with `set_epoch(epoch, start_step=steps already taken)`."""
        if not 0 <= int(start_step) <= self.steps:
            raise ValueError(f"start_step {start_step} is outside epoch of {self.steps} steps")
        self.epoch, self.start_step = int(epoch), int(start_step)

    def __len__(self) -> int:
        """Batches the next pass yields on this rank."""
        return self.steps - self.start_step

    # ---- the plan

    def _perm(self, label: int, cycle: int) -> np.ndarray:
        key = (label, cycle)
        if key not in self._perms:
            if len(self._perms) >= 8:
                self._perms.pop(next(iter(self._perms)))
            n = len(self.index[label])
            self._perms[key] = np.random.default_rng([self.seed, label, cycle, 0x5A3]).permutation(n)
        return self._perms[key]

    def sample_at(self, label: int, position: int) -> int:
        """Index (into ``self.index[label]``) of the sample at `position` of the class's sequence; with twins, the
        real at a position is the twin of the fake there."""
        if label == schema.REAL and self.twins is not None:
            twin = int(self.twins[self.sample_at(schema.FAKE, position)])
            if twin >= 0:
                return twin
        cycle, offset = divmod(int(position), self.cycle[label])
        return int(self._perm(label, cycle)[offset % len(self.index[label])])

    def step_slots(self, step: int, epoch: int | None = None) -> list[tuple[int, int]]:
        """(label, position in the class's sequence) of this rank's samples at `step` of `epoch`."""
        epoch = self.epoch if epoch is None else epoch
        base = epoch * self.per_epoch + step * self.half
        first = self.rank * self.local_batch
        return [
            (schema.REAL if j % 2 == 0 else schema.FAKE, base + j // 2) for j in range(first, first + self.local_batch)
        ]

    def is_synth(self, position: int, epoch: int | None = None) -> bool:
        """Whether the fake slot at `position` of the fake sequence is a self-blended fake (of the real at
        `position`)."""
        if self.synth == "none":
            return False
        if not self.dataset_fakes or self.synth_ratio >= 1.0:
            return True
        epoch = self.epoch if epoch is None else epoch
        draw = np.random.default_rng([self.seed, epoch, schema.FAKE, int(position), 2]).random()
        return bool(draw < self.synth_ratio)

    # ---- reading

    def _load(self, reader: _Reader, decode: _Decoder, label: int, position: int, skips: _Skips) -> Sample:
        slot = label  # seeds follow the slot; a self-blended fake reads the real paired with it
        synth = label == schema.FAKE and self.is_synth(position)
        if synth:
            label = schema.REAL
        index = self.index[label]
        i = self.sample_at(label, position)
        draws = None  # replacements for unreadable samples, seeded by the slot (made only when needed: rngs cost)
        for _ in range(MAX_DRAWS):
            bad_key = ("sbi" if synth else label, i)  # a real SBI cannot blend (e.g. its landmarks) stays a usable real
            if bad_key not in skips.bad:
                rng = np.random.default_rng([self.seed, self.epoch, slot, position, 0])
                blend_rng = np.random.default_rng([self.seed, self.epoch, slot, position, 3]) if synth else None
                try:
                    sample = decode(reader.read(index, i), rng, blend_rng)
                except _SAMPLE_ERRORS as exc:
                    skips.bad.add(bad_key)
                    skips.add(index.shards[index.shard[i]], exc)
                else:
                    if sample.label != slot:
                        raise schema.SchemaError(
                            f"sample {sample.key!r} labelled {sample.label} sits in a "
                            f"{schema.LABEL_NAMES[label]} shard folder; re-run extract"
                        )
                    return sample
            else:
                skips.count += 1
            if draws is None:
                draws = np.random.default_rng([self.seed, self.epoch, label, position, 1])
            i = int(draws.integers(len(index)))
        what = "self-blended fakes of " if synth else ""
        raise DataError(
            f"{MAX_DRAWS} {what}{schema.LABEL_NAMES[label]} samples in a row were unreadable "
            f"(e.g. in {index.shards[index.shard[i]]}); check the shards or re-run `hilif-prep extract`"
        )

    def batches(self, worker: int = 0, num_workers: int = 1) -> Iterator[dict[str, Any]]:
        """The batches of loader worker `worker` of `num_workers`: this rank's steps start_step + worker, + num_workers,
        ... (the whole epoch for 1 worker). Each carries ``step``, ``worker`` and the worker's running ``skipped``."""
        decode = _Decoder(self.img_size, train=True, augment=self.augment, sbi=self.sbi, margin=self.margin)
        skips = _Skips()
        with _Reader() as reader:
            for step in range(self.start_step + worker, self.steps, num_workers):
                samples = [self._load(reader, decode, label, pos, skips) for label, pos in self.step_slots(step)]
                yield collate(samples, step=step, worker=worker, skipped=skips.count)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.batches(*_worker_id())


# --------------------------------------------------------------------------- evaluation stream


def stratified_pick(n_real: int, n_fake: int, total: int) -> tuple[int, int]:
    """How many reals and fakes a cap of `total` samples takes: in proportion, at least one of each class present."""
    n = n_real + n_fake
    if total >= n:
        return n_real, n_fake
    reals = round(total * n_real / n)
    if n_real and n_fake and total >= 2:
        reals = min(max(reals, 1), total - 1)
    reals = max(min(reals, n_real), total - n_fake)
    return reals, total - reals


class EvalStream(IterableDataset):
    """Every sample of a split exactly once, centre crop, in batches of `batch_size` (the last one partial).

    Global batch i (reals first, then fakes, in shard order) goes to rank i % world_size, and a rank's batches to
    its loader workers in turn. With `max_batches`, exactly that many batches in total over all ranks and workers
    (fewer only if the split is smaller), both classes in proportion, spread evenly over each class. An
    unreadable sample is logged, counted (``skipped``) and left out of its batch. `rank`/`world_size` as in
    `BalancedTrainStream`; `require_both` makes a split without readable reals or fakes a DataError.

    Fakes: the split's, only of `methods` when given; with `sbi` (an SBIConfig) none of the split's, but one
    self-blended fake of every real instead, the same every pass (its generator seeded by `seed` and the sample), so
    that validation can score a run trained on reals only without the dataset's fakes.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        img_size: int,
        batch_size: int,
        perturb: Callable[[np.ndarray], np.ndarray] | None = None,
        max_batches: int | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        require_both: bool = False,
        methods: Sequence[str] = (),
        sbi: Any = None,
        seed: int = 0,
        info: schema.DatasetInfo | None = None,
    ) -> None:
        self.rank, self.world_size = _rank_world(rank, world_size)
        real = class_index(root, split, schema.REAL)
        self.sbi, self.seed, self.margin = sbi, seed, DEFAULT_MARGIN
        if sbi is not None:  # the fakes are the reals, each self-blended when read
            self.index = {schema.REAL: real, schema.FAKE: real}
            self.margin = face_margin(root, info)
        else:
            self.index = {schema.REAL: real, schema.FAKE: class_index(root, split, schema.FAKE, methods)}
        if not any(idx.shards for idx in self.index.values()):
            raise DataError(
                f"{Path(root) / split}: no complete shards in the {split} split; "
                f"run `hilif-prep extract` for it or pick another --split"
            )
        n_real, n_fake = (len(self.index[schema.REAL]), len(self.index[schema.FAKE]))
        if require_both and not (n_real and n_fake):
            raise DataError(
                f"{Path(root) / split}: {n_real} readable real and {n_fake} readable fake samples; "
                f"metrics need both classes - extract the {split} split (both classes)"
            )
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be at least 1, got {max_batches}")
        self.img_size, self.batch_size, self.perturb, self.max_batches = img_size, batch_size, perturb, max_batches
        total = n_real + n_fake if max_batches is None else min(n_real + n_fake, max_batches * batch_size)
        picks = stratified_pick(n_real, n_fake, total)
        self.order = np.concatenate(
            [
                np.stack([np.full(k, label), (np.arange(k) * len(self.index[label])) // max(k, 1)], 1)
                for label, k in zip((schema.REAL, schema.FAKE), picks)
            ]
        ).astype(np.int64)
        self.expected = int(total)  # samples this stream is to score over all ranks
        self.n_batches = math.ceil(self.expected / batch_size)
        self.missing = real.missing + (0 if sbi is not None else self.index[schema.FAKE].missing)

    def batches(self, worker: int = 0, num_workers: int = 1) -> Iterator[dict[str, Any]]:
        """The batches of loader worker `worker` of `num_workers` on this rank."""
        decode = _Decoder(self.img_size, train=False, perturb=self.perturb, sbi=self.sbi, margin=self.margin)
        skips = _Skips()
        mine = range(self.rank + worker * self.world_size, self.n_batches, num_workers * self.world_size)
        with _Reader() as reader:
            for b in mine:
                samples = []
                for label, i in self.order[b * self.batch_size : (b + 1) * self.batch_size].tolist():
                    index = self.index[label]
                    blend = self.sbi is not None and label == schema.FAKE
                    blend_rng = np.random.default_rng([self.seed, i, 5]) if blend else None
                    try:
                        samples.append(decode(reader.read(index, i), blend_rng=blend_rng))
                    except _SAMPLE_ERRORS as exc:
                        skips.add(index.shards[index.shard[i]], exc)
                yield collate(samples, self.img_size, step=b, worker=worker, skipped=skips.count)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.batches(*_worker_id())


def make_loader(stream: IterableDataset, workers: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over a stream that batches itself. Workers start fresh every epoch, so they see `set_epoch`."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )

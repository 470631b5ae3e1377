"""The shard format: the one module that the shard writer and the shard reader both import.

It owns the folder layout, shard and sample naming, the label encoding, the
per-sample metadata, the per-shard stats JSON (the completion marker) and the
dataset-level JSON. docs/shards.md documents the same thing for people.

Layout under a dataset folder ``ROOT`` (e.g. ``shards/ffpp_c40``)::

    ROOT/dataset.json                       dataset-level JSON, written when a run ends
    ROOT/manifest.jsonl                     one record per video (:func:`video_record`; its status says ok / noface /
                                            error / missing)
    ROOT/<split>/<label>/<part>-<index>.tar       one shard: samples of one split and one label
    ROOT/<split>/<label>/<part>-<index>.videos.jsonl  the records of the shard's videos
    ROOT/<split>/<label>/<part>-<index>.stats.json  written last: the shard is complete

A sample is three tar members sharing a key: ``<key>.png`` (the aligned face,
lossless by default; ``.jpg`` when asked), ``<key>.cls`` (the label as ASCII
``0`` real / ``1`` fake) and ``<key>.json`` (:class:`SampleMeta`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

#: 2: samples also carry their landmarks in aligned-face pixels (five points + dense); readers take 1 and 2
SCHEMA_VERSION = 2
#: dense landmark sets a detector may store: dlib's 68 points, insightface's 106
DENSE_LANDMARK_COUNTS = (68, 106)

#: Label encoding used everywhere: logit / probability index 1 is "fake".
REAL = 0
FAKE = 1
LABEL_NAMES = {REAL: "real", FAKE: "fake"}
LABEL_IDS = {v: k for k, v in LABEL_NAMES.items()}

SPLITS = ("train", "val", "test")
#: Method name written for real (pristine) videos.
REAL_METHOD = "real"

IMAGE_EXTS = ("png", "jpg")
DEFAULT_IMAGE_EXT = "png"  # lossless: forensic traces must not be re-compressed away
FACE_SIZE = 256  # aligned faces are written at 256x256 (the paper's recipe)

DATASET_JSON = "dataset.json"
MANIFEST_JSONL = "manifest.jsonl"
STATS_SUFFIX = ".stats.json"
VIDEOS_SUFFIX = ".videos.jsonl"
TAR_SUFFIX = ".tar"
TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"

_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]+")


class SchemaError(ValueError):
    """A shard folder or sample does not follow this format."""


def _from_dict(cls: type, d: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a dict: unknown keys ignored (newer writers), missing required ones are
    a SchemaError."""
    if not isinstance(d, dict):
        raise SchemaError(f"{where}: expected a JSON object, got {type(d).__name__}")
    fields = dataclasses.fields(cls)
    missing = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in d
    ]
    if missing:
        raise SchemaError(f"{where}: lacks {missing}")
    known = {f.name for f in fields}
    return cls(**{k: v for k, v in d.items() if k in known})


def sanitize_key_part(text: str) -> str:
    """Make ``text`` safe inside a webdataset key: no dots (they start the extension), no slashes."""
    return _KEY_BAD.sub("-", str(text)).strip("-") or "x"


def sample_key(dataset: str, method: str, video_id: str, frame_index: int, track: int = -1) -> str:
    """Key of one sample, unique within a dataset: ``<dataset>_<method>_<video>_f<frame>``.

    A sample of one tracked person among several (``--faces all``, ``track`` >= 0) ends in
    ``_t<track>``. Key parts are sanitised so that the key contains no dots and no slashes.
    """
    parts = [sanitize_key_part(p) for p in (dataset, method, video_id)]
    return "_".join(parts) + f"_f{int(frame_index):06d}" + (f"_t{int(track):02d}" if track >= 0 else "")


def video_key(dataset: str, method: str, video_id: str) -> str:
    """The identity of a video for video-level metrics: dataset + method + video id.

    Keying by method keeps the four FF++ fakes ``000_003`` of one source pair apart.
    """
    return f"{dataset}/{method}/{video_id}"


@dataclass
class SampleMeta:
    """Metadata of one face sample (stored as ``<key>.json``)."""

    dataset: str
    split: str
    label: int
    method: str
    quality: str
    video_id: str
    frame_index: int  # index of the decoded frame the face was taken from
    frame_count: int  # frames in the source video (or sequence)
    fps: float
    box: list[float]  # face box in source-frame pixels, x0 y0 x1 y1
    landmarks: list[list[float]]  # five points (eyes, nose, mouth corners) in source-frame pixels
    detector: str
    score: float
    sample_index: int = 0  # position of this sample among the video's samples
    samples_in_video: int = 0  # samples written for this video
    target_index: int = -1  # the frame index asked for; != frame_index when replaced
    replaced: bool = False  # True when the asked frame had no face and a neighbour was used
    source_path: str = ""  # path of the video relative to the dataset root
    schema: int = SCHEMA_VERSION
    # version 2 (empty in version-1 samples):
    aligned_landmarks: list[list[float]] = field(default_factory=list)  # the five points in aligned-face pixels
    #: dlib's 68 / insightface's 106 points in aligned-face pixels; [] if none
    dense_landmarks: list[list[float]] = field(default_factory=list)
    shot: int = 0  # the shot (between two scene cuts) of the video the face is from
    track: int = -1  # the tracked person (--faces all: 0, 1, ... by first appearance); -1: the shot's subject

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise SchemaError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.label not in LABEL_NAMES:
            raise SchemaError(f"label must be 0 (real) or 1 (fake), got {self.label!r}")
        if len(self.landmarks) != 5 or any(len(p) != 2 for p in self.landmarks):
            raise SchemaError("landmarks must be five (x, y) points")
        if len(self.box) != 4:
            raise SchemaError("box must be x0, y0, x1, y1")
        if self.aligned_landmarks and (
            len(self.aligned_landmarks) != 5 or any(len(p) != 2 for p in self.aligned_landmarks)
        ):
            raise SchemaError("aligned_landmarks must be five (x, y) points or empty")
        if self.dense_landmarks and (
            len(self.dense_landmarks) not in DENSE_LANDMARK_COUNTS or any(len(p) != 2 for p in self.dense_landmarks)
        ):
            counts = " or ".join(map(str, DENSE_LANDMARK_COUNTS))
            raise SchemaError(f"dense_landmarks must be {counts} (x, y) points or empty")

    @property
    def key(self) -> str:
        # keyed by the frame asked for, so a replaced frame never collides with another sample
        return sample_key(
            self.dataset,
            self.method,
            self.video_id,
            self.target_index if self.target_index >= 0 else self.frame_index,
            self.track,
        )

    @property
    def video(self) -> str:
        return video_key(self.dataset, self.method, self.video_id)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> "SampleMeta":
        try:
            d = json.loads(data) if isinstance(data, (bytes, str)) else dict(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SchemaError(f"sample metadata is not JSON ({exc})") from exc
        return _from_dict(cls, d, "sample metadata")


def encode_sample(meta: SampleMeta, image_bytes: bytes, image_ext: str = DEFAULT_IMAGE_EXT) -> dict[str, Any]:
    """A webdataset sample dict (``__key__`` plus members) for ``ShardWriter.write``."""
    if image_ext not in IMAGE_EXTS:
        raise SchemaError(f"image format must be one of {IMAGE_EXTS}, got {image_ext!r}")
    return {
        "__key__": meta.key,
        image_ext: image_bytes,
        "cls": str(meta.label).encode(),
        "json": meta.to_json(),
    }


def sample_image_ext(sample: dict[str, Any]) -> str:
    """Which image member a raw sample carries."""
    for ext in IMAGE_EXTS:
        if ext in sample:
            return ext
    raise SchemaError(f"sample {sample.get('__key__')!r} has no image member ({'/'.join(IMAGE_EXTS)})")


# --------------------------------------------------------------------------- shards


def shard_stem(part: int, index: int) -> str:
    """File stem of a shard: the work part that wrote it and its index in that part."""
    return f"{int(part):03d}-{int(index):05d}"


def shard_dir(root: str | os.PathLike, split: str, label: int | str) -> Path:
    name = LABEL_NAMES.get(label, label) if isinstance(label, int) else label
    if name not in LABEL_IDS:
        raise SchemaError(f"label folder must be 'real' or 'fake', got {name!r}")
    return Path(root) / split / name


def shard_path(root: str | os.PathLike, split: str, label: int | str, part: int, index: int) -> Path:
    return shard_dir(root, split, label) / (shard_stem(part, index) + TAR_SUFFIX)


def videos_path(shard: str | os.PathLike) -> Path:
    """The JSON-lines file of ``shard``'s video records (see :func:`video_record`)."""
    shard = Path(shard)
    return shard.with_name(shard.name[: -len(TAR_SUFFIX)] + VIDEOS_SUFFIX)


def stats_path(shard: str | os.PathLike) -> Path:
    """The stats JSON that marks ``shard`` complete."""
    shard = Path(shard)
    return shard.with_name(shard.name[: -len(TAR_SUFFIX)] + STATS_SUFFIX)


def tmp_path(final: str | os.PathLike) -> Path:
    """Temporary name a file is written under before the atomic rename to ``final``."""
    final = Path(final)
    return final.with_name(TMP_PREFIX + final.name + TMP_SUFFIX)


@dataclass
class ShardStats:
    """Contents of ``<shard>.stats.json``: written after the tar is renamed into place."""

    shard: str  # file name of the tar
    split: str
    label: int
    samples: int
    videos: int
    bytes: int
    methods: dict[str, int] = field(default_factory=dict)  # samples per method
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ShardStats":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SchemaError(
                f"{path}: unreadable shard stats ({exc}); delete it and re-run extract to redo that shard"
            ) from exc
        return _from_dict(cls, d, f"{path} (shard stats; delete it and re-run extract to redo that shard)")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename.

    The temporary name carries the process id: parallel ``--part`` jobs may finish together and rewrite the
    same manifest or dataset JSON, and must not rename each other's half-written temporary file."""
    path = Path(path)
    tmp = tmp_path(path.with_name(f"{path.name}.{os.getpid()}"))
    tmp.write_text(text)
    os.replace(tmp, path)


def write_stats(shard: str | os.PathLike, stats: ShardStats) -> Path:
    """Write a shard's stats JSON (call only after the tar itself is in place)."""
    p = stats_path(shard)
    atomic_write_text(p, stats.to_json())
    return p


def complete_shards(root: str | os.PathLike, split: str, label: int | str) -> list[tuple[Path, ShardStats]]:
    """Shards of one split/label that have their stats JSON, sorted by name.

    A tar without stats (a killed writer) is not complete and is never listed.
    """
    d = shard_dir(root, split, label)
    out: list[tuple[Path, ShardStats]] = []
    if not d.is_dir():
        return out
    for st in sorted(d.glob("*" + STATS_SUFFIX)):
        tar = st.with_name(st.name[: -len(STATS_SUFFIX)] + TAR_SUFFIX)
        if tar.is_file():
            out.append((tar, ShardStats.load(st)))
    return out


# --------------------------------------------------------------------------- video records (the manifest)

#: A video's status: samples written / read but no face found / failed (unreadable, timed out) / listed but not on disk.
OK, NOFACE, ERROR, MISSING = "ok", "noface", "error", "missing"
#: the statuses of a video that was on disk and gave no samples
FAILED = (NOFACE, ERROR)


def video_record(
    dataset: str, quality: str, split: str, label: int, method: str, video_id: str, path: str, asked: int = 0
) -> dict[str, Any]:
    """A video's manifest record before any work on it: status MISSING, nothing sampled.

    The extractor fills in what it found: ``samples`` written, ``replaced`` frames (a neighbour's face
    used), ``missing`` frames short, the video's ``frame_count`` / ``fps``, the decode ``backend``,
    ``notes``, scene ``cuts`` and ``shots``, ``tracks`` followed, and ``status`` / ``reason``.
    """
    return {
        "video": video_key(dataset, method, video_id),
        "dataset": dataset,
        "quality": quality,
        "split": split,
        "label": label,
        "method": method,
        "video_id": video_id,
        "path": path,
        "asked": asked,
        "samples": 0,
        "replaced": 0,
        "missing": asked,
        "frame_count": 0,
        "fps": 0.0,
        "status": MISSING,
        "reason": "",
        "backend": "",
        "notes": [],
        "cuts": [],
        "shots": [],
        "tracks": 0,
    }


def write_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Video records as JSON lines (keys sorted: the same records give the same bytes), written atomically."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The video records of a JSON-lines file; none when it does not exist."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- dataset JSON


@dataclass
class DatasetInfo:
    """Contents of ``dataset.json``: what was extracted, how, and how many samples.

    ``samples[split][label_name]`` sets an epoch's length for training.
    """

    dataset: str
    quality: str
    command: str
    config: dict[str, Any]
    versions: dict[str, str]
    samples: dict[str, dict[str, int]]  # split -> real/fake -> samples
    videos: dict[str, dict[str, int]]  # split -> real/fake -> videos with samples
    methods: dict[str, dict[str, int]]  # split -> method -> samples
    failed: int = 0
    missing: int = 0
    image_ext: str = DEFAULT_IMAGE_EXT
    face_size: int = FACE_SIZE
    created: str = ""
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, indent=1)

    def save(self, root: str | os.PathLike) -> Path:
        p = Path(root) / DATASET_JSON
        atomic_write_text(p, self.to_json())
        return p

    @classmethod
    def load(cls, root: str | os.PathLike) -> "DatasetInfo":
        p = Path(root) / DATASET_JSON
        if not p.is_file():
            raise SchemaError(
                f"{p}: no dataset JSON; this is not a finished shard folder - "
                "run `hilif-prep extract` (or let it finish) first"
            )
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{p}: corrupt dataset JSON ({exc}); re-run `hilif-prep extract` to rewrite it") from exc
        return _from_dict(cls, d, f"{p} (dataset JSON; re-run `hilif-prep extract`)")

    def count(self, split: str, label: int | str | None = None) -> int:
        per = self.samples.get(split, {})
        if label is None:
            return sum(per.values())
        name = LABEL_NAMES[label] if isinstance(label, int) else label
        return int(per.get(name, 0))


def sum_stats(stats: Iterable[ShardStats]) -> dict[str, dict[str, int]]:
    """Samples per split and label name, summed over shard stats."""
    out: dict[str, dict[str, int]] = {}
    for s in stats:
        per = out.setdefault(s.split, {})
        per[LABEL_NAMES[s.label]] = per.get(LABEL_NAMES[s.label], 0) + s.samples
    return out

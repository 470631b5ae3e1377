"""`hilif-prep extract`: a dataset as shipped -> aligned faces in WebDataset shards.

Face API (also used by evaluation): :func:`faces_from_video`, :func:`faces_from_image`,
:class:`FaceConfig`, :class:`VideoFaces` (defined in :mod:`hilif.pipeline.faces`).

The run: the dataset's videos of one split and label are sorted and cut into fixed work
units, one shard each. A unit is done when its stats JSON exists, so a re-run skips it
(resume); ``--part I/N`` takes the units whose number is I modulo N (disjoint shards, no
merge step). Shard names do not depend on I/N: any division of the work, resumed or not,
writes the same files with the same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hilif.common.options import comma_names, nested, option, part_of, per_key

from . import schema
from .datasets import Listing, VideoItem, list_dataset
from .decode import DecodeError, read_image_sequence, read_video
from .detectors import DetectorError, find_scrfd_model, resolve_device
from .faces import (
    FaceConfig,
    VideoFaces,
    faces_from_frames,
    faces_from_image,
    faces_from_sequence,
    faces_from_video,
    get_detector,
    sequence_fetch,
    video_fetch,
)
from .workers import FatalWorkerError, Outcome, PoolConfig, WorkerPool
from .write import UnitShardWriter, encode_image

__all__ = [
    "FaceConfig",
    "VideoFaces",
    "faces_from_video",
    "faces_from_image",
    "faces_from_sequence",
    "DecodeError",
    "DetectorError",
    "ExtractConfig",
    "ExtractError",
    "RunResult",
    "run_extract",
    "plan_units",
    "default_out",
]

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
#: faces per shard when --videos-per-shard is not given: shards of a few hundred MB of PNG faces
FACES_PER_SHARD = 3200


class ExtractError(ValueError):
    """Bad arguments or output folder: a one-line message naming the fix."""


@dataclass
class ExtractConfig:
    dataset: str = option("ffpp, celebdf, dfdc, wilddeepfake, folder or demo.", flags=("--dataset", "-d"))
    root: str = option(
        "The dataset as downloaded (folder: the CSV path,label,split). Default: $HILIF_DATA/<dataset> "
        "if HILIF_DATA is set, else data/<dataset>.",
        flags=("--root", "-r"),
        type=Path,
        required=False,
    )
    out: str | None = option(
        "Output folder (default: shards/<dataset>_<quality>).", None, flags=("--out", "-o"), type=Path
    )
    quality: str | None = option(
        "ffpp: raw | c23 | c40 (default c23); demo: c23 | c40.", None, flags=("--quality", "-q")
    )
    methods: list[str] | None = option(
        "ffpp: comma list (default Deepfakes,Face2Face,FaceSwap,NeuralTextures; FaceShifter on request).",
        None,
        type=str,
        parse=comma_names,
    )
    frames: dict[str, int] = option(
        "Frames per video: N, or split=N pairs (default train 80, val/test 20 for FF++, 32 for cross-dataset tests).",
        factory=dict,
        type=str,
        parse=per_key(schema.SPLITS, "train=80,val=20,test=20"),
    )  # per-split overrides
    face: FaceConfig = nested(FaceConfig)
    image_ext: str = option("png (lossless) | jpg.", schema.DEFAULT_IMAGE_EXT, flags=("--image-format",))
    # None: about FACES_PER_SHARD faces per shard
    videos_per_shard: int | None = option("Videos per shard (default: about 3200 faces per shard).", None)
    workers: int = option("Worker processes.", 1, flags=("--workers", "-j"))
    part: tuple[int, int] = option(
        "I/N: this job's share of the work units (Slurm array jobs).", (0, 1), type=str, parse=part_of, show="0/1"
    )
    overwrite: bool = option("Delete the output folder and start again.", False)
    decode_timeout: float = option("Seconds a video may take to decode.", 120.0)
    video_timeout: float = option("Seconds a video may take in all.", 900.0)
    recycle: int = option("Videos per worker process before it is replaced.", 100)
    command: str = ""  # written to dataset.json (the CLI passes its command line)


@dataclass
class Unit:
    number: int  # global, over all splits and labels
    split: str
    label: int
    index: int  # within split/label: the shard index
    items: list[VideoItem]

    def shard(self, root: Path) -> Path:
        return schema.shard_path(root, self.split, self.label, 0, self.index)


@dataclass
class RunResult:
    out: Path
    records: list[dict[str, Any]]  # the whole manifest (all units present + missing)
    units_total: int
    units_done: int  # complete units over all parts
    units_run: int  # units this run processed
    info: schema.DatasetInfo | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] in schema.FAILED]


def default_out(dataset: str, quality: str) -> Path:
    return Path("shards") / f"{dataset}_{quality}"


def frames_per_split(listing: Listing, overrides: dict[str, int]) -> dict[str, int]:
    out = dict(listing.default_frames)
    for k, v in overrides.items():
        if k not in schema.SPLITS:
            raise ExtractError(f"--frames: unknown split {k!r} (use train, val, test)")
        if v < 1:
            raise ExtractError(f"--frames: {k}={v} must be at least 1")
        out[k] = int(v)
    return out


def plan_units(items: list[VideoItem], frames: dict[str, int], videos_per_shard: int | None) -> list[Unit]:
    """Deterministic work units: per split and label, the sorted videos cut into fixed chunks."""
    units: list[Unit] = []
    for split in schema.SPLITS:
        vps = videos_per_shard or max(1, FACES_PER_SHARD // frames[split])
        for label in (schema.REAL, schema.FAKE):
            group = sorted((it for it in items if it.split == split and it.label == label), key=lambda it: it.sort_key)
            for i in range(math.ceil(len(group) / vps)):
                units.append(Unit(len(units), split, label, i, group[i * vps : (i + 1) * vps]))
    return units


# --------------------------------------------------------------------------- per video (in a worker)


@dataclass
class VideoTask:
    dataset: str
    quality: str
    item: VideoItem
    num_frames: int
    face: FaceConfig
    image_ext: str


@dataclass
class VideoResult:
    record: dict[str, Any]
    samples: list[tuple[schema.SampleMeta, bytes]]
    timings: dict[str, float]


def base_record(dataset: str, quality: str, it: VideoItem, asked: int = 0) -> dict[str, Any]:
    """The manifest record of ``it`` before any work on it."""
    return schema.video_record(dataset, quality, it.split, it.label, it.method, it.video_id, it.rel, asked)


def _init_worker(face: FaceConfig) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core: no thread oversubscription inside workers
    get_detector(face)


def process_video(task: VideoTask, report: Callable[[str], None] = lambda phase: None) -> VideoResult:
    """Decode, detect, align and encode one video's faces (runs in a worker process)."""
    it = task.item
    rec = base_record(task.dataset, task.quality, it, task.num_frames)
    t0 = time.perf_counter()
    if it.frames is not None:
        decoded = read_image_sequence(list(it.frames), task.num_frames, archive=it.archive)
        fetch = sequence_fetch(list(it.frames), it.archive)
    else:
        decoded = read_video(it.path, task.num_frames, backend=task.face.decode_backend)
        fetch = video_fetch(it.path, decoded)
    report("detect")
    t1 = time.perf_counter()
    vf = faces_from_frames(decoded, task.face, task.num_frames, fetch=fetch)
    samples: list[tuple[schema.SampleMeta, bytes]] = []
    for i, face in enumerate(vf.faces):
        meta = schema.SampleMeta(
            dataset=task.dataset,
            split=it.split,
            label=it.label,
            method=it.method,
            quality=task.quality,
            video_id=it.video_id,
            frame_index=vf.frame_indices[i],
            frame_count=vf.frame_count,
            fps=round(vf.fps, 4),
            box=vf.boxes[i],
            landmarks=vf.landmarks[i],
            detector=task.face.detector,
            score=vf.scores[i],
            sample_index=i,
            samples_in_video=len(vf.faces),
            target_index=vf.target_indices[i],
            replaced=vf.replaced[i],
            source_path=it.rel,
            aligned_landmarks=vf.aligned_landmarks[i],
            dense_landmarks=vf.dense_landmarks[i],
            shot=vf.shots[vf.positions[i]],
            track=vf.tracks[i],
        )
        samples.append((meta, encode_image(face, task.image_ext)))
    t2 = time.perf_counter()
    rec.update(
        samples=len(samples),
        replaced=vf.num_replaced,
        missing=vf.missing,
        frame_count=vf.frame_count,
        fps=round(vf.fps, 4),
        backend=vf.backend,
        notes=vf.notes,
        cuts=[vf.sampled[c] for c in vf.cuts],
        shots=[list(span) for span in vf.shot_spans()],
        tracks=len({t for t in vf.tracks if t >= 0}),
        status=schema.OK if samples else schema.NOFACE,
        reason="" if samples else f"no face found in {len(decoded.indices)} sampled frames",
    )
    timings = dict(vf.timings, decode=t1 - t0, write=t2 - t1 - sum(vf.timings.values()))
    return VideoResult(rec, samples, timings)


# --------------------------------------------------------------------------- the run


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in (
        "hilif",
        "dlib-bin",
        "decord",
        "av",
        "insightface",
        "onnxruntime-gpu",
        "opencv-python-headless",
        "webdataset",
        "scikit-image",
        "numpy",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_config(cfg: ExtractConfig, listing: Listing, frames: dict[str, int]) -> dict[str, Any]:
    """What determines the output; stored in run.json and compared when resuming."""
    face = dataclasses.asdict(cfg.face)
    face.pop("device", None)  # where it runs does not change what is asked
    face.pop("det_batch", None)  # nor how many frames go through the detector at once
    return {
        "dataset": listing.dataset,
        "root": str(Path(listing.root).resolve()),
        "quality": listing.quality,
        "methods": sorted({it.method for it in listing.items + listing.missing}),
        "frames": frames,
        "face": face,
        "image_ext": cfg.image_ext,
        "videos_per_shard": cfg.videos_per_shard,
        "schema": schema.SCHEMA_VERSION,
    }


def _check_run_json(out: Path, conf: dict[str, Any], overwrite: bool) -> None:
    p = out / RUN_JSON
    if overwrite and out.exists():
        if p.is_file() or (out / schema.DATASET_JSON).is_file() or not any(out.iterdir()):
            shutil.rmtree(out)
        else:
            raise ExtractError(
                f"{out}: --overwrite refuses to delete a folder that is not an extract output; pick another --out"
            )
    if p.is_file():
        try:
            old = json.loads(p.read_text())
        except json.JSONDecodeError:
            raise ExtractError(f"{p}: corrupt run JSON; use --overwrite to start again") from None
        if old.get("schema", 1) != conf["schema"]:
            raise ExtractError(
                f"{out}: holds shard format version {old.get('schema', 1)}, this hilif writes "
                f"version {conf['schema']} (landmarks for --synth-fakes sbi); to upgrade re-run the "
                "same command with --overwrite (re-extracts into this folder) or with a new --out"
            )
        if old != conf:
            diff = sorted(k for k in set(old) | set(conf) if old.get(k) != conf.get(k))
            raise ExtractError(
                f"{out}: was extracted with different arguments ({', '.join(diff)} differ); "
                "repeat the original command to resume, or use --overwrite or another --out"
            )
    elif out.exists() and any(not x.name.startswith(schema.TMP_PREFIX) for x in out.iterdir()):
        raise ExtractError(
            f"{out}: not empty and not an extract output (no {RUN_JSON}); pick another --out or empty it"
        )
    out.mkdir(parents=True, exist_ok=True)
    if not p.is_file():
        schema.atomic_write_text(p, json.dumps(conf, sort_keys=True, indent=1))


def _unit_done(unit: Unit, out: Path) -> bool:
    return schema.stats_path(unit.shard(out)).is_file() and unit.shard(out).is_file()


def _summarise(
    out: Path, units: list[Unit], listing: Listing, cfg: ExtractConfig, conf: dict[str, Any], units_run: int
) -> RunResult:
    records: list[dict[str, Any]] = []
    stats: list[schema.ShardStats] = []
    done = 0
    for u in units:
        if _unit_done(u, out):
            done += 1
            stats.append(schema.ShardStats.load(schema.stats_path(u.shard(out))))
            records += schema.read_records(schema.videos_path(u.shard(out)))
    for it in sorted(listing.missing, key=lambda it: (schema.SPLITS.index(it.split), it.label, it.sort_key)):
        records.append(dict(base_record(listing.dataset, listing.quality, it), reason="not on disk"))
    schema.write_records(out / schema.MANIFEST_JSONL, records)
    videos: dict[str, dict[str, int]] = {}
    methods: dict[str, dict[str, int]] = {}
    for s in stats:
        v = videos.setdefault(s.split, {})
        v[schema.LABEL_NAMES[s.label]] = v.get(schema.LABEL_NAMES[s.label], 0) + s.videos
        m = methods.setdefault(s.split, {})
        for k, n in s.methods.items():
            m[k] = m.get(k, 0) + n
    info = schema.DatasetInfo(
        dataset=listing.dataset,
        quality=listing.quality,
        command=cfg.command or " ".join(["hilif-prep"] + sys.argv[1:]),
        config=dict(conf, units_total=len(units), units_complete=done),
        versions=_versions(),
        samples=schema.sum_stats(stats),
        videos=videos,
        methods=methods,
        failed=sum(r["status"] in schema.FAILED for r in records),
        missing=sum(r["status"] == schema.MISSING for r in records),
        image_ext=cfg.image_ext,
        face_size=cfg.face.size,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    schema.atomic_write_text(out / schema.DATASET_JSON, info.to_json())
    return RunResult(out, records, len(units), done, units_run, info)


ProgressFn = Callable[[str, dict[str, Any]], None]


def _validate(cfg: ExtractConfig) -> None:
    """Reject bad options (ExtractError) before anything is listed or written."""
    part, nparts = cfg.part
    if not (nparts >= 1 and 0 <= part < nparts):
        raise ExtractError(f"--part {part}/{nparts}: need 0 <= I < N")
    if cfg.workers < 1:
        raise ExtractError(f"--workers {cfg.workers}: need at least 1")
    if cfg.videos_per_shard is not None and cfg.videos_per_shard < 1:
        raise ExtractError(f"--videos-per-shard {cfg.videos_per_shard}: need at least 1")
    if cfg.image_ext not in schema.IMAGE_EXTS:
        raise ExtractError(f"--image-format {cfg.image_ext}: use png or jpg")
    try:
        cfg.face.validate()
    except ValueError as exc:
        raise ExtractError(str(exc)) from None


def _units_to_do(units: list[Unit], out: Path, part: tuple[int, int]) -> tuple[list[Unit], list[Unit]]:
    """This part's units and those of them not complete yet (a killed run's leftovers of these are deleted)."""
    mine = [u for u in units if u.number % part[1] == part[0]]
    todo = [u for u in mine if not _unit_done(u, out)]
    for u in todo:  # leftovers of a killed run: an unfinished tar, or a tar without its stats
        for p in (schema.tmp_path(u.shard(out)), u.shard(out)):
            p.unlink(missing_ok=True)
    return mine, todo


class _ShardAssembler:
    """Takes the workers' outcomes in any order and writes each unit's videos to its shard in listing order;
    a unit's shard is committed when its last video is written."""

    def __init__(
        self, todo: list[Unit], out: Path, listing: Listing, frames: dict[str, int], image_ext: str, emit: ProgressFn
    ) -> None:
        self.units = {u.number: u for u in todo}
        self.out, self.listing, self.frames, self.image_ext, self.emit = out, listing, frames, image_ext, emit
        self.writers: dict[int, UnitShardWriter] = {}
        self.pending: dict[int, dict[int, VideoResult]] = {u.number: {} for u in todo}
        self.next_pos: dict[int, int] = {u.number: 0 for u in todo}

    def __call__(self, o: Outcome) -> None:
        unum, pos = o.task_id
        u = self.units[unum]
        if o.ok:
            res: VideoResult = o.result
        else:
            it = u.items[pos]
            rec = base_record(self.listing.dataset, self.listing.quality, it, self.frames[it.split])
            rec.update(status=schema.ERROR, reason=o.error)
            res = VideoResult(rec, [], {})
        self.emit("video", {"record": res.record, "seconds": o.seconds, "timings": res.timings})
        self.pending[unum][pos] = res
        w = self.writers.get(unum)
        if w is None:
            w = self.writers[unum] = UnitShardWriter(u.shard(self.out), u.split, u.label)
        while self.next_pos[unum] in self.pending[unum]:
            r = self.pending[unum].pop(self.next_pos[unum])
            w.write_video(r.samples, r.record, self.image_ext)
            self.next_pos[unum] += 1
        if self.next_pos[unum] == len(u.items):
            w.commit()
            del self.writers[unum]

    def abort(self) -> None:
        """Drop the shards still open (their temporary files): a re-run redoes those units."""
        for w in self.writers.values():
            w.abort()


def run_extract(cfg: ExtractConfig, progress: ProgressFn | None = None) -> RunResult:
    """Extract a dataset to shards (resumable). ``progress(event, data)`` gets "start" and "video" events."""
    emit = progress or (lambda event, data: None)
    _validate(cfg)
    listing = list_dataset(cfg.dataset, cfg.root, cfg.quality, cfg.methods)
    frames = frames_per_split(listing, cfg.frames)
    # fail early on detector set-up problems (missing insightface models, --device cuda without a GPU)
    if cfg.face.detector == "insightface":
        find_scrfd_model(cfg.face.model_dir)
        resolve_device(cfg.face.device)
    out = Path(cfg.out) if cfg.out else default_out(listing.dataset, listing.quality)
    conf = run_config(cfg, listing, frames)
    _check_run_json(out, conf, cfg.overwrite)

    units = plan_units(listing.items, frames, cfg.videos_per_shard)
    mine, todo = _units_to_do(units, out, cfg.part)
    log.info(
        "%s %s: %d videos (%d missing on disk), %d units; part %d/%d: %d units, %d to do",
        listing.dataset,
        listing.quality,
        len(listing.items),
        len(listing.missing),
        len(units),
        *cfg.part,
        len(mine),
        len(todo),
    )
    emit(
        "start",
        {
            "videos": sum(len(u.items) for u in todo),
            "units": len(todo),
            "skipped_units": len(mine) - len(todo),
            "out": str(out),
        },
    )

    tasks = [
        ((u.number, i), VideoTask(listing.dataset, listing.quality, it, frames[it.split], cfg.face, cfg.image_ext))
        for u in todo
        for i, it in enumerate(u.items)
    ]
    pool = WorkerPool(
        PoolConfig(
            workers=min(cfg.workers, max(1, len(tasks))),
            first_timeout=cfg.decode_timeout,
            total_timeout=cfg.video_timeout,
            recycle=cfg.recycle,
        ),
        handler=process_video,
        init=functools.partial(_init_worker, cfg.face),
    )
    assembler = _ShardAssembler(todo, out, listing, frames, cfg.image_ext, emit)
    try:
        pool.run(tasks, assembler)
    except FatalWorkerError as exc:
        raise ExtractError(f"the face detector could not start in a worker: {exc}") from None
    finally:
        assembler.abort()
    return _summarise(out, units, listing, cfg, conf, len(todo))

"""The embedded demo dataset: a small FaceForensics++ look-alike made offline (`hilif-prep demo`).

Owns the plan (which identity each source video shows, the split pairs, the video ids),
the FF++ on-disk layout, H.264 encoding (libx264 through PyAV at CRF 23 / 40, as FF++
c23 / c40 were made) and ``demo.json``. The pixels come from :mod:`hilif.pipeline.demo.render`.

Layout under ``out``::

    original_sequences/youtube/<quality>/videos/NNN.mp4
    manipulated_sequences/<method>/<quality>/videos/TTT_SSS.mp4
    splits/{train,val,test}.json      official format: a JSON list of [target, source] id pairs
    demo.json                          config, seed, identities, pairs, blend settings

Identities never cross splits (see ``render.IDENTITIES``), so a test score measures
generalisation to unseen faces. Everything is drawn from ``numpy`` generators seeded by
``(seed, video, purpose)`` and x264 runs single-threaded, so a seed gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hilif.common.options import option

from .. import schema
from . import render
from .render import METHODS

log = logging.getLogger(__name__)

#: x264 constant rate factor per FF++ quality (raw is lossless CRF 0)
QUALITY_CRF = {"raw": 0, "c23": 23, "c40": 40}
DEMO_JSON = "demo.json"
SPLIT_NAMES = ("train", "val", "test")
X264_PRESET = "medium"  # ffmpeg's default, which FF++ used
#: frame widths that are multiples of this give byte-identical files for a seed (see DemoConfig.width)
DETERMINISTIC_WIDTH = 128

# seed-stream purposes: each random draw has its own stream, so changing one never shifts another
_IDS, _CAMERA, _BLEND = 1, 2, 3


class DemoError(ValueError):
    """Bad demo options or output folder (the CLI turns this into a one-line error, exit 2)."""


@dataclass
class DemoConfig:
    """Options of `hilif-prep demo`."""

    out: Path = option("Output folder (new or empty; an earlier demo with --overwrite).", flags=("--out", "-o"))
    num_sources: int = option("Real (source) videos, even, >= 6; pairs = sources / 2.", 16, flags=("--sources", "-n"))
    # 85 frames at 25 fps: extract takes 80 per training video
    seconds: float = option("Length of each video.", 3.4, flags=("--seconds", "-s"))
    fps: int = option("Frames per second.", 25, min=1)
    # 384 = 24 macroblocks: x264's SIMD macroblock-tree code reads uninitialised memory when the
    # width in macroblocks is not a multiple of 8, so only widths that are multiples of 128 px give
    # the same bytes run to run (measured: 256/384/512/640 stable; 320/336/352/400/448 not)
    width: int = option("Frame width; multiples of 128 give byte-identical files per seed.", 384)
    height: int = option("Frame height.", 288)
    qualities: tuple[str, ...] = option(
        "c23 (CRF 23), c40 (CRF 40) or raw (CRF 0); repeat for several.",
        ("c23", "c40"),
        flags=("--quality", "-q"),
        type=list[str],
    )
    methods: tuple[str, ...] = METHODS
    seed: int = option("Same seed, same files.", 0, min=0)
    overwrite: bool = option("Replace an earlier demo in --out.", False)
    faces: str | None = option(
        "A folder of your own face photos (train/, val/, test/ subfolders; one person per photo, with their "
        "consent) added to the built-in identities; more --sources may be needed.",
        None,
        type=Path,
    )
    workers: int = option("Encoding processes (0: one per core, at most 4).", 0, min=0)

    @property
    def frames(self) -> int:
        return int(round(self.seconds * self.fps))

    def validate(self) -> None:
        if self.num_sources < 6 or self.num_sources % 2:
            raise DemoError(f"--sources must be an even number >= 6 (one pair per split), got {self.num_sources}")
        if self.num_sources > 1000:
            raise DemoError(f"--sources must be at most 1000 (3-digit FF++ ids), got {self.num_sources}")
        if self.frames < 2:
            raise DemoError(f"--seconds {self.seconds} at {self.fps} fps gives {self.frames} frames; need at least 2")
        if self.width < 64 or self.height < 64 or self.width % 2 or self.height % 2:
            raise DemoError(f"frame size must be even and >= 64 (yuv420p), got {self.width}x{self.height}")
        bad = [q for q in self.qualities if q not in QUALITY_CRF]
        if bad or not self.qualities:
            raise DemoError(f"--quality must be among {tuple(QUALITY_CRF)}, got {list(self.qualities)}")
        if self.seed < 0:
            raise DemoError(f"--seed must be >= 0, got {self.seed}")
        badm = [m for m in self.methods if m not in METHODS]
        if badm or not self.methods:
            raise DemoError(f"methods must be among {METHODS}, got {list(self.methods)}")


@dataclass
class SourceVideo:
    """One real video: an identity filmed by one camera path."""

    vid: str  # 3-digit FF++ id
    split: str
    identity: str
    flipped: bool
    index: int  # position in the plan (seeds its random streams)


@dataclass
class DemoResult:
    out: Path
    videos: list[Path]  # every mp4 written
    splits: dict[str, list[list[str]]]  # split -> [target, source] pairs
    sources: list[SourceVideo]
    seconds: float = 0.0  # wall time
    files: list[Path] = field(default_factory=list)  # split files and demo.json


# --------------------------------------------------------------------------- plan


def split_pairs(num_pairs: int) -> dict[str, int]:
    """Pairs per split: about 20% val, 20% test, at least one each."""
    val = max(1, round(num_pairs * 0.2))
    test = max(1, round(num_pairs * 0.2))
    return {"train": num_pairs - val - test, "val": val, "test": test}


def check_sources(num_sources: int, identities: dict[str, list[render.Identity]]) -> None:
    """Every identity needs a video of its own (checked with --faces): a DemoError naming the --sources that gives
    each one."""

    def short(n: int) -> list[str]:
        counts = split_pairs(n // 2)
        return [s for s in SPLIT_NAMES if 2 * counts[s] < len(identities.get(s, []))]

    missing = short(num_sources)
    if not missing:
        return
    need = next((n for n in range(num_sources + 2, 1001, 2) if not short(n)), None)
    people = ", ".join(f"{len(identities[s])} in {s}" for s in missing)
    fix = f"pass --sources {need} or more" if need else "use fewer photos in --faces"
    raise DemoError(f"--sources {num_sources} gives fewer videos than identities ({people}): {fix}")


def plan_sources(
    cfg: DemoConfig, identities: dict[str, list[render.Identity]]
) -> tuple[list[SourceVideo], dict[str, list[list[str]]]]:
    """Assign identities, ids and pairs. Identities stay inside one split; a pair joins two identities."""
    counts = split_pairs(cfg.num_sources // 2)
    rng = np.random.default_rng([cfg.seed, _IDS])
    ids = [f"{i:03d}" for i in rng.permutation(cfg.num_sources)]
    sources: list[SourceVideo] = []
    pairs: dict[str, list[list[str]]] = {}
    for split in SPLIT_NAMES:
        people = identities[split]
        n = 2 * counts[split]
        split_videos = []
        for k in range(n):  # round robin: consecutive videos show different people
            person = people[k % len(people)]
            seen = k // len(people)  # how many videos of this person came before
            sv = SourceVideo(ids[len(sources)], split, person.name, flipped=bool(seen % 2), index=len(sources))
            sources.append(sv)
            split_videos.append(sv)
        pairs[split] = [[split_videos[2 * i].vid, split_videos[2 * i + 1].vid] for i in range(counts[split])]
    return sources, pairs


# --------------------------------------------------------------------------- encoding


def encode_mp4(frames: Sequence[np.ndarray], path: Path, fps: int, crf: int) -> None:
    """H.264 (libx264, yuv420p) in MP4 through PyAV: written to a temporary name, then renamed."""
    import av

    tmp = schema.tmp_path(path)
    h, w = frames[0].shape[:2]
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # one thread: x264's output then depends on nothing but the frames and these options
        stream.options = {"crf": str(crf), "preset": X264_PRESET, "threads": "1"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    os.replace(tmp, path)


def real_path(out: Path, quality: str, vid: str) -> Path:
    return out / "original_sequences" / "youtube" / quality / "videos" / f"{vid}.mp4"


def fake_path(out: Path, method: str, quality: str, target: str, source: str) -> Path:
    return out / "manipulated_sequences" / method / quality / "videos" / f"{target}_{source}.mp4"


@dataclass
class _Job:
    """One clip to film and encode at every quality (picklable for worker processes)."""

    paths: dict[str, str]  # quality -> mp4 path
    target: render.Portrait
    camera: render.Camera
    source: render.Portrait | None = None
    blend: render.BlendParams | None = None


def _run_job(job: _Job, frames: int, fps: int, width: int, height: int) -> list[str]:
    import cv2

    cv2.setNumThreads(1)
    image = job.target.image if job.source is None else render.fake_portrait(job.target, job.source, job.blend)
    clip = render.film(image, job.target, job.camera, frames, fps, width, height)
    for quality, p in job.paths.items():
        encode_mp4(clip, Path(p), fps, QUALITY_CRF[quality])
    return list(job.paths.values())


# --------------------------------------------------------------------------- output folder


_OWNED = ("original_sequences", "manipulated_sequences", "splits", DEMO_JSON)


def prepare_out(cfg: DemoConfig) -> None:
    """Check the output folder: empty or new, or (with overwrite) an earlier demo, whose files are replaced."""
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise DemoError(f"{out}: exists and is not a folder; pick another --out")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries:
        if not cfg.overwrite:
            raise DemoError(
                f"{out}: folder is not empty ({len(entries)} entries); pass --overwrite or pick an empty --out"
            )
        if not (out / DEMO_JSON).is_file():
            raise DemoError(
                f"{out}: not empty and holds no {DEMO_JSON}, so it is not a demo folder; "
                "--overwrite only replaces an earlier demo: pick an empty --out"
            )
        for name in _OWNED:  # only what a demo writes; other files in the folder are kept
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".hilif-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DemoError(f"{out}: cannot write there ({exc.strerror or exc}); pick a writable --out") from exc


def _versions() -> dict[str, str]:
    import av
    import cv2
    import dlib

    return {
        "av": av.__version__,
        "libavcodec": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
        "opencv": cv2.__version__,
        "dlib": dlib.__version__,
        "numpy": np.__version__,
    }


def _write_json(path: Path, obj: object) -> None:
    schema.atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


# --------------------------------------------------------------------------- main entry


def make_demo(cfg: DemoConfig, on_video: Callable[[str], None] | None = None) -> DemoResult:
    """Make the demo dataset described by ``cfg``; ``on_video(path)`` is called as each clip is done.

    With ``workers`` > 1 the clips are encoded in ``spawn``-ed processes: call this from a script under
    ``if __name__ == "__main__":`` (or pass ``workers=1``).
    """
    t0 = time.perf_counter()
    cfg.validate()
    cfg.out = Path(cfg.out)
    if cfg.width % DETERMINISTIC_WIDTH:
        log.warning(
            "demo: width %d is not a multiple of %d px: x264 may write different bytes run to run "
            "(decoded frames stay close); use e.g. --width 384 for byte-identical files",
            cfg.width,
            DETERMINISTIC_WIDTH,
        )
    extra = render.folder_identities(Path(cfg.faces)) if cfg.faces else None
    identities = render.available_identities(extra)
    if extra:  # the user's photos must all be filmed (the built-in people are dropped from small demos)
        check_sources(cfg.num_sources, identities)
    prepare_out(cfg)
    sources, pairs = plan_sources(cfg, identities)
    # demo.json first (complete: false): a killed run leaves a folder that --overwrite recognises
    meta = _demo_meta(cfg, sources, pairs, identities)
    _write_json(cfg.out / DEMO_JSON, meta)

    log.info(
        "demo: %d source videos of %d identities, %d frames each",
        len(sources),
        len({s.identity for s in sources}),
        cfg.frames,
    )
    jobs, blends = _plan_jobs(cfg, sources, pairs, identities)
    written = _run_jobs(cfg, jobs, on_video)
    files = _write_splits(cfg.out, pairs)
    meta.update(complete=True, blend=blends, videos=len(written))
    _write_json(cfg.out / DEMO_JSON, meta)
    files.append(cfg.out / DEMO_JSON)
    elapsed = time.perf_counter() - t0
    log.info("demo: wrote %d videos to %s in %.1f s", len(written), cfg.out, elapsed)
    return DemoResult(cfg.out, written, pairs, sources, elapsed, files)


def _demo_meta(
    cfg: DemoConfig,
    sources: list[SourceVideo],
    pairs: dict[str, list[list[str]]],
    identities: dict[str, list[render.Identity]],
) -> dict:
    """demo.json before the videos are made (``complete`` false; blends and the video count come at the end)."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    return {
        "complete": False,
        "config": config,
        "seed": cfg.seed,
        "frames": cfg.frames,
        "crf": {q: QUALITY_CRF[q] for q in cfg.qualities},
        "x264_preset": X264_PRESET,
        "sources": [dataclasses.asdict(s) for s in sources],
        "splits": pairs,
        "identities": {split: [i.name for i in ids] for split, ids in identities.items()},
        "photos": {i.name: i.where for ids in identities.values() for i in ids},
        "versions": _versions(),
    }


def _plan_jobs(
    cfg: DemoConfig,
    sources: list[SourceVideo],
    pairs: dict[str, list[list[str]]],
    identities: dict[str, list[render.Identity]],
) -> tuple[list[_Job], dict[str, dict[str, dict]]]:
    """One job per clip (every real video, then both fakes of each pair per method) and the blend settings drawn."""
    people = {i.name: i for ids in identities.values() for i in ids}
    portraits: dict[tuple[str, bool], render.Portrait] = {}
    for s in sources:
        key = (s.identity, s.flipped)
        if key not in portraits:
            portraits[key] = render.make_portrait(people[s.identity], s.flipped)
    cameras = {s.vid: render.draw_camera(np.random.default_rng([cfg.seed, _CAMERA, s.index])) for s in sources}
    for q in cfg.qualities:
        real_path(cfg.out, q, "000").parent.mkdir(parents=True, exist_ok=True)
        for m in cfg.methods:
            fake_path(cfg.out, m, q, "000", "000").parent.mkdir(parents=True, exist_ok=True)

    jobs = [
        _Job(
            {q: str(real_path(cfg.out, q, s.vid)) for q in cfg.qualities},
            portraits[(s.identity, s.flipped)],
            cameras[s.vid],
        )
        for s in sources
    ]
    by_vid = {s.vid: s for s in sources}
    blends: dict[str, dict[str, dict]] = {}
    for a, b in (pair for split_pairs_ in pairs.values() for pair in split_pairs_):
        for t, src in ((a, b), (b, a)):
            T, S = by_vid[t], by_vid[src]
            for mi, m in enumerate(METHODS):
                if m not in cfg.methods:
                    continue
                bp = render.draw_blend(m, np.random.default_rng([cfg.seed, _BLEND, T.index, S.index, mi]))
                blends.setdefault(m, {})[f"{t}_{src}"] = dataclasses.asdict(bp)
                paths = {q: str(fake_path(cfg.out, m, q, t, src)) for q in cfg.qualities}
                jobs.append(
                    _Job(paths, portraits[(T.identity, T.flipped)], cameras[t], portraits[(S.identity, S.flipped)], bp)
                )
    return jobs, blends


def _run_jobs(cfg: DemoConfig, jobs: list[_Job], on_video: Callable[[str], None] | None) -> list[Path]:
    """Film and encode every job (in worker processes when there are several workers); the mp4s written."""
    workers = cfg.workers or min(4, os.cpu_count() or 1)
    args = (cfg.frames, cfg.fps, cfg.width, cfg.height)
    written: list[Path] = []

    def done(paths: list[str]) -> None:
        written.extend(Path(p) for p in paths)
        if on_video:
            on_video(paths[0])

    if workers <= 1:
        for job in jobs:
            done(_run_job(job, *args))
        return written
    # spawn, not fork: a forked child inherits OpenCV's thread pool mid-state and can hang
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for paths in pool.map(_run_job, jobs, *[[a] * len(jobs) for a in args], chunksize=1):
            done(paths)
    return written


def _write_splits(out: Path, pairs: dict[str, list[list[str]]]) -> list[Path]:
    """``splits/<split>.json`` in the official FF++ format: a JSON list of [target, source] pairs."""
    split_dir = out / "splits"
    split_dir.mkdir(exist_ok=True)
    files = []
    for split in SPLIT_NAMES:
        p = split_dir / f"{split}.json"
        _write_json(p, pairs[split])
        files.append(p)
    return files


def load_demo_json(root: str | os.PathLike) -> dict:
    """Read a demo folder's ``demo.json`` (raises DemoError when absent or unfinished)."""
    p = Path(root) / DEMO_JSON
    try:
        meta = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DemoError(f"{p}: not a finished demo folder ({exc}); run `hilif-prep demo --out {root}`") from exc
    if not meta.get("complete"):
        raise DemoError(f"{p}: demo was interrupted; rerun `hilif-prep demo --out {root} --overwrite`")
    return meta

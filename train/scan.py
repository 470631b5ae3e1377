"""hilif-eval detect: every face of a video or image, followed per person, scored, with pictures.

For each file: sample frames (videos) or take the image, find **every** face with the detector settings the
checkpoint's training shards used, follow each person across the sampled frames
(:func:`hilif.pipeline.track.track_faces`), align each face as the extract pipeline does, score all faces of
the file in batches (one forward pass per batch) and report per track: frames used, mean and max fake
probability and a verdict at a threshold. Faces under the detector's reliable minimum size are listed as
``too_small`` and not scored. The record of a file is a plain dict in the schema documented in
docs/evaluation.md (:data:`SCHEMA_VERSION`); pictures are drawn by :mod:`hilif.train.annotate`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from hilif.pipeline import schema
from hilif.pipeline.align import align_face
from hilif.pipeline.decode import DecodedFrames, read_image, read_video
from hilif.pipeline.detectors import Detection, DlibConfig, FaceDetector, InsightFaceConfig
from hilif.pipeline.faces import FaceConfig, get_detector
from hilif.train.config import DetectInputError, DetectOptions
from hilif.train.data import center_crop, normalize, to_chw_tensor

log = logging.getLogger(__name__)

#: version of the record layout (results.jsonl, --json); raised when a field changes meaning or goes away
SCHEMA_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".3gp")
#: dlib's frontal HOG detector scans an 80x80 px window over an image pyramid that only shrinks, so on an
#: image upsampled k times (dlib's ``upsample``) the smallest face it finds is 80 / 2**k px of the frame
DLIB_WINDOW_PX = 80
#: SCRFD's smallest anchors are 16 px (stride 8) at its letterboxed input
SCRFD_MIN_PX = 16
#: the settings of a shard folder's faces that detect takes over (dataset.json's config.face)
EXTRACT_FIELDS = ("detector", "margin", "size", "upsample", "model_dir")

OK, NOFACE, ERROR, SKIPPED = "ok", "noface", "error", "skipped"


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class InputFile:
    path: Path
    kind: str  # video | image | skipped
    name: str  # unique, file-system safe name of its output folder


def _kind(p: Path) -> str:
    s = p.suffix.lower()
    return "image" if s in IMAGE_SUFFIXES else "video" if s in VIDEO_SUFFIXES else "skipped"


def list_inputs(paths: list[str | Path]) -> list[InputFile]:
    """Files and folders (recursive, sorted) -> files with their kind by extension; a missing path is an error."""
    found: list[tuple[Path, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            found += [(f, str(f.relative_to(p.parent))) for f in files]
        elif p.is_file():
            found.append((p, p.name))
        else:
            raise DetectInputError(f"{p}: no such file or folder; give videos, images or folders of them")
    out: list[InputFile] = []
    used: set[str] = set()
    for f, rel in found:
        name = rel.replace("/", "__").replace("\\", "__")
        base, n = name, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        out.append(InputFile(f, _kind(f), name))
    return out


# --------------------------------------------------------------------------- detector settings


def face_settings(ckpt: dict[str, Any], opts: DetectOptions) -> tuple[FaceConfig, dict[str, str]]:
    """The FaceConfig to find faces with: the checkpoint's training shards' settings, then the options' overrides.

    Returns the config and, per field of :data:`EXTRACT_FIELDS`, where its value came from
    (``checkpoint`` | ``option`` | ``default``).
    """
    recorded = dict((ckpt.get("extract") or {}).get("face") or {})
    if not recorded:
        log.info(
            "checkpoint records no extract settings of its training shards (written before they were "
            "recorded, or trained on shards without them): default detector settings"
        )
    kw: dict[str, Any] = {}
    source: dict[str, str] = {}
    for k in EXTRACT_FIELDS:
        override = getattr(opts, k, None)  # the aligned face size has no option: the model saw that size
        if override is not None:
            kw[k], source[k] = override, "option"
        elif k in recorded and recorded[k] is not None:
            kw[k], source[k] = recorded[k], "checkpoint"
        else:
            source[k] = "default"
    if source.get("model_dir") == "checkpoint" and not Path(str(kw["model_dir"])).expanduser().exists():
        log.info("the training shards' insightface model folder %s is not here: the default folder", kw["model_dir"])
        kw.pop("model_dir")
        source["model_dir"] = "default"
    if isinstance(kw.get("upsample"), str) and kw["upsample"] != "auto":
        kw["upsample"] = int(kw["upsample"])
    cfg = FaceConfig(**kw, device=opts.device if opts.device in ("auto", "cpu", "cuda") else "auto")
    cfg.validate()
    return cfg, source


def every_face_upsample(cfg: FaceConfig) -> int:
    """dlib upsample of the every-face search (``DlibDetector.detect_all``): the shards' fixed value, or for
    "auto" the cascade's deepest step (the whole frame at DlibConfig.max_upsample)."""
    return int(cfg.upsample) if cfg.upsample != "auto" else DlibConfig().max_upsample


def min_face_px(cfg: FaceConfig, frame_shape: tuple[int, ...]) -> float:
    """The detector's reliable minimum face size (box width, frame pixels): dlib 80 / 2**upsample (40 px for
    the "auto" cascade), SCRFD its 16 px smallest anchor at the letterboxed 640 px input."""
    if cfg.detector == "dlib":
        return DLIB_WINDOW_PX / 2 ** every_face_upsample(cfg)
    h, w = frame_shape[:2]
    return SCRFD_MIN_PX * max(h, w) / InsightFaceConfig().input_size


def detect_all(frames: list[np.ndarray], det: FaceDetector) -> list[list[Detection]]:
    """Every face of each frame (SCRFD: in batches; dlib: the whole-frame search without early stop)."""
    if getattr(det, "batch_detect", False):
        return det.detect_batch(frames)  # type: ignore[attr-defined]
    return [det.detect_all(f) for f in frames]


# --------------------------------------------------------------------------- scoring


@torch.no_grad()
def score_faces(
    model: torch.nn.Module,
    faces: list[np.ndarray],
    img_size: int,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
) -> list[float]:
    """Fake probability of aligned RGB faces (centre crop, as in evaluation); one forward pass per batch."""
    probs: list[float] = []
    model.eval()
    for i in range(0, len(faces), batch_size):
        x = torch.stack([to_chw_tensor(center_crop(f, img_size)) for f in faces[i : i + batch_size]])
        logits = model(normalize(x, device))
        probs += torch.softmax(logits.float(), dim=1)[:, schema.FAKE].cpu().tolist()
    return probs


# --------------------------------------------------------------------------- one file


@dataclass
class FaceResult:
    track: int
    position: int  # index into the sampled frames
    frame_index: int
    det: Detection
    too_small: bool
    face: np.ndarray | None = None  # aligned face (None when too small)
    fake_prob: float | None = None


@dataclass
class FileResult:
    """Everything about one file; :meth:`record` is its JSON record, the rest feeds the pictures."""

    file: InputFile
    status: str = OK
    error: str = ""
    decoded: DecodedFrames | None = None
    faces: list[FaceResult] = field(default_factory=list)
    tracks: list[dict[str, Any]] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)
    min_face: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    rec: dict[str, Any] = field(default_factory=dict)  # the JSON record, once written

    def track_faces(self, tid: int) -> list[FaceResult]:
        return [f for f in self.faces if f.track == tid]

    def record(self, threshold: float, settings: dict[str, Any]) -> dict[str, Any]:
        d = self.decoded
        scored = [t for t in self.tracks if t["mean_fake_prob"] is not None]
        worst = max(scored, key=lambda t: t["mean_fake_prob"]) if scored else None
        return {
            "schema": SCHEMA_VERSION,
            "path": str(self.file.path),
            "kind": self.file.kind,
            "status": self.status,
            "error": self.error or None,
            "frames_sampled": len(d.indices) if d else 0,
            "frame_count": d.frame_count if d else 0,
            "fps": round(float(d.fps), 4) if d else 0.0,
            "width": int(d.frames[0].shape[1]) if d and d.frames else 0,
            "height": int(d.frames[0].shape[0]) if d and d.frames else 0,
            "cuts": [int(d.indices[c]) for c in self.cuts] if d else [],  # frames where a new shot starts
            "threshold": threshold,
            "fake_prob": worst["mean_fake_prob"] if worst else None,
            "verdict": ("fake" if any(t["verdict"] == "fake" for t in scored) else "real") if scored else None,
            "faces_scored": sum(f.fake_prob is not None for f in self.faces),
            "faces_too_small": sum(f.too_small for f in self.faces),
            "min_face_px": round(self.min_face, 2),
            "tracks": self.tracks,
            "detector": settings,
            "outputs": dict(self.outputs),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


def _track_record(tid: int, shot: int, faces: list[FaceResult], threshold: float) -> dict[str, Any]:
    probs = [f.fake_prob for f in faces if f.fake_prob is not None]
    mean = float(np.mean(probs)) if probs else None
    return {
        "id": tid,
        "shot": shot,
        "frames": [f.frame_index for f in faces],
        "frames_scored": len(probs),
        "frames_too_small": sum(f.too_small for f in faces),
        "mean_fake_prob": round(mean, 6) if mean is not None else None,
        "max_fake_prob": round(max(probs), 6) if probs else None,
        "verdict": None if mean is None else ("fake" if mean >= threshold else "real"),
        "faces": [
            {
                "frame": f.frame_index,
                "box": [round(float(v), 2) for v in f.det.box],
                "width": round(f.det.width, 2),
                "det_score": round(float(f.det.score), 4),
                "too_small": f.too_small,
                "fake_prob": None if f.fake_prob is None else round(f.fake_prob, 6),
            }
            for f in faces
        ],
    }


def decode(f: InputFile, num_frames: int, backend: str = "auto") -> DecodedFrames:
    if f.kind == "image":
        return DecodedFrames([read_image(f.path)], [0], 1, 0.0, "image")
    return read_video(f.path, num_frames, backend=backend)


def analyse(
    f: InputFile,
    model: torch.nn.Module,
    img_size: int,
    cfg: FaceConfig,
    opts: DetectOptions,
    device: torch.device | str = "cpu",
) -> FileResult:
    """Decode, find every face, track, align and score one file (errors become the result's status)."""
    from hilif.pipeline.shots import detect_cuts
    from hilif.pipeline.track import track_faces

    res = FileResult(f)
    if f.kind == "skipped":
        res.status, res.error = SKIPPED, f"unknown file type {f.path.suffix or '(no extension)'!r}"
        return res
    t0 = time.perf_counter()
    try:
        res.decoded = d = decode(f, opts.frames, cfg.decode_backend)
        if not d.frames:
            raise ValueError("no frame could be decoded")
    except Exception as exc:  # any decoder failure: a record with the error, the run goes on
        res.status, res.error = ERROR, f"cannot read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        res.decoded = None
        return res
    t1 = time.perf_counter()
    det = get_detector(cfg)
    dets = detect_all(d.frames, det)
    res.cuts = [int(c) for c in detect_cuts(d.frames)]
    tracks = track_faces(dets, cuts=res.cuts)
    t2 = time.perf_counter()
    res.min_face = opts.min_face if opts.min_face is not None else min_face_px(cfg, d.frames[0].shape)
    for tr in tracks:  # ids in order of first appearance
        for pos in tr.positions:
            dt = tr.detections[pos]
            small = dt.width < res.min_face
            face = None if small else align_face(d.frames[pos], dt.landmarks, cfg.size, cfg.margin)
            res.faces.append(FaceResult(tr.id, pos, int(d.indices[pos]), dt, small, face))
    todo = [x for x in res.faces if x.face is not None]
    t3 = time.perf_counter()
    for x, p in zip(todo, score_faces(model, [x.face for x in todo], img_size, device, opts.batch_size)):
        x.fake_prob = float(p)
    t4 = time.perf_counter()
    res.tracks = [_track_record(tr.id, tr.shot, res.track_faces(tr.id), opts.threshold) for tr in tracks]
    if not res.faces:
        res.status = NOFACE
    res.timings = {"decode": t1 - t0, "detect": t2 - t1, "align": t3 - t2, "score": t4 - t3}
    return res


# --------------------------------------------------------------------------- many files


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


RESULTS_JSONL = "results.jsonl"


def prepare_out(out: str | Path, overwrite: bool) -> Path:
    o = Path(out)
    if o.exists() and not o.is_dir():
        raise DetectInputError(f"--out {o}: is a file; give a folder")
    if (o / RESULTS_JSONL).exists() and not overwrite:
        raise DetectInputError(f"--out {o}: already holds {RESULTS_JSONL}; pass --overwrite or another --out")
    o.mkdir(parents=True, exist_ok=True)
    return o


def run(
    paths: list[str | Path], opts: DetectOptions, on_start: Callable[[list[InputFile]], None] = lambda files: None
) -> Iterator[FileResult]:
    """Analyse every file of ``paths``; yields each file's result (record written to results.jsonl when ``out``)."""
    from hilif.train.evaluate import load_model

    opts.validate()
    files = list_inputs(paths)
    dev = resolve_device(opts.device)
    model, mcfg, ckpt = load_model(opts.checkpoint, dev)
    cfg, source = face_settings(ckpt, opts)
    settings = {**{k: getattr(cfg, k) for k in EXTRACT_FIELDS}, "source": source}
    if cfg.detector == "dlib":
        settings["dlib_upsample"] = every_face_upsample(cfg)
    out = prepare_out(opts.out, opts.overwrite) if opts.out else None
    log.info("faces: %s", ", ".join(f"{k}={settings[k]} ({source[k]})" for k in EXTRACT_FIELDS))
    on_start(files)
    sink = open(out / RESULTS_JSONL, "w") if out else None
    try:
        for f in files:
            try:
                res = analyse(f, model, mcfg.img_size, cfg, opts, dev)
            except Exception as exc:  # a failure past decoding (detector, alignment) is that file's record too
                log.warning("%s: analysis failed", f.path, exc_info=True)
                res = FileResult(f)
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                res.status, res.error = ERROR, f"analysis failed: {type(exc).__name__}: {first_line}"
            if out is not None and res.status in (OK, NOFACE):
                from hilif.train.annotate import write_pictures

                try:
                    res.outputs = write_pictures(res, out / f.name, opts, model, mcfg.img_size, dev)
                except Exception as exc:  # a picture that cannot be written does not lose the scores
                    log.warning("%s: pictures not written (%s)", f.path, exc)
                    res.outputs = {"error": str(exc)}
            res.rec = res.record(opts.threshold, settings)
            if sink is not None:
                sink.write(json.dumps(res.rec, sort_keys=True) + "\n")
                sink.flush()
            yield res
    finally:
        if sink is not None:
            sink.close()


def detect(
    path: str | Path, checkpoint: str | Path, num_frames: int = 32, device: str = "auto", **kw: Any
) -> dict[str, Any]:
    """The record of one file (a convenience over :func:`run`)."""
    opts = DetectOptions(checkpoint=str(checkpoint), frames=num_frames, device=device, **kw)
    return [r.rec for r in run([path], opts)][0]


__all__ = [
    "DetectOptions",
    "DetectInputError",
    "InputFile",
    "FileResult",
    "SCHEMA_VERSION",
    "list_inputs",
    "face_settings",
    "score_faces",
    "analyse",
    "run",
    "detect",
]

"""hilif-eval: measure a checkpoint on any dataset's shards, as the paper and the field do.

Frame-level Acc@0.5 and AUC (the paper's metrics), EER, AP, TPR@FPR 1e-2/1e-3, video-level AUC (mean
frame score per `schema.video_key`), a table per fake method (Table II), optional perturbations of the
test images (JPEG, Table IV; Gaussian noise, salt-and-pepper, Gaussian blur, Table V) with the drop
against the clean run, a ROC PNG and a JSON report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np
import torch

from hilif.common.jsonable import finite_values
from hilif.pipeline import schema
from hilif.train import checkpoint as ckpt_io
from hilif.train import distributed as dist_util
from hilif.train.config import EvalOptions
from hilif.train.data import EvalStream, SkipTally, load_info, make_loader, normalize
from hilif.train.metrics import BinaryMetrics, binary_metrics, per_method_metrics, roc_points, video_metrics
from hilif.train.precision import amp_dtype, autocast

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
ROC_PNG = "roc.png"
SCORES_CSV = "scores.csv"


# --------------------------------------------------------------------------- predictions


@dataclass
class Predictions:
    labels: np.ndarray
    scores: np.ndarray  # fake probability (softmax of logit 1): Acc@0.5 and the reported probabilities
    margins: np.ndarray = field(default_factory=lambda: np.zeros(0))  # logit_fake - logit_real (fp32): ranks (AUC..)
    keys: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    device: torch.device | str,
    channels_last: bool = False,
    amp: torch.dtype | None = None,
) -> Predictions:
    """Fake probabilities and logit differences for every batch of `loader`, gathered from all ranks (every rank
    gets them all). Logits are cast to float32 before the softmax and the difference."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    labels: list[int] = []
    logit_batches: list[torch.Tensor] = []  # on the device: one read at the end, no host sync per batch
    keys: list[str] = []
    videos: list[str] = []
    methods: list[str] = []
    ctx = autocast(device, amp)
    for batch in loader:
        x = normalize(batch["image"], device, channels_last)
        with ctx:
            logit_batches.append(model(x).float())
        labels += batch["label"].tolist()
        keys += batch["key"]
        videos += batch["video"]
        methods += batch["method"]
    model.train(was_training)
    scores: list[float] = []
    margins: list[float] = []
    if logit_batches:
        logits = torch.cat(logit_batches)
        scores = torch.softmax(logits, dim=1)[:, schema.FAKE].cpu().tolist()
        margins = (logits[:, schema.FAKE] - logits[:, schema.REAL]).cpu().tolist()
    parts = dist_util.all_gather_objects((labels, scores, margins, keys, videos, methods))
    out = Predictions(np.zeros(0, np.int64), np.zeros(0))
    lab, sco, mar = [], [], []
    for part in parts:
        lab += part[0]
        sco += part[1]
        mar += part[2]
        out.keys += part[3]
        out.videos += part[4]
        out.methods += part[5]
    out.labels = np.asarray(lab, dtype=np.int64)
    out.scores = np.asarray(sco, dtype=np.float64)
    out.margins = np.asarray(mar, dtype=np.float64)
    if len(set(out.keys)) != len(out.keys):
        log.warning("%d duplicate sample keys in the evaluated split", len(out.keys) - len(set(out.keys)))
    return out


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """(model in eval mode, its HiLIFConfig, the checkpoint dict) from a hilif-train checkpoint."""
    from hilif.model import HiLIFConfig, build_model

    ck = ckpt_io.load_checkpoint(path)
    try:
        mcfg = HiLIFConfig.from_dict(ck["model_config"])
    except (TypeError, ValueError) as exc:
        raise ckpt_io.CheckpointError(f"{path}: its model config does not fit this hilif.model ({exc})") from exc
    # the checkpoint holds all weights: never fetch ImageNet weights for a model about to be overwritten
    mcfg = dataclasses.replace(mcfg, pretrained=False, backbone_weights=None)
    model = build_model(mcfg)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise ckpt_io.CheckpointError(
            f"{path}: weights do not fit the model its config describes ({str(exc).splitlines()[0]})"
        ) from exc
    model.to(device).eval()
    return model, mcfg, ck


# --------------------------------------------------------------------------- perturbations (Tables IV and V)


def jpeg(img: np.ndarray, quality: float) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT_101)


class _Seeded:
    """A random perturbation with a fixed seed per process, so a run is repeatable."""

    def __init__(self, fn: Callable[[np.ndarray, float, np.random.Generator], np.ndarray], level: float, seed: int = 0):
        self.fn, self.level, self.rng = fn, level, np.random.default_rng(seed)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return self.fn(img, self.level, self.rng)


def _gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = img.astype(np.float32) + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _salt_pepper(img: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    u = rng.random(img.shape[:2])
    out[u < amount / 2] = 0
    out[u > 1 - amount / 2] = 255
    return out


#: name -> (default levels, level meaning). JPEG levels are Table IV's; the paper does not give
#: Table V's strengths, so these defaults are ours (options of hilif-eval).
PERTURBATIONS: dict[str, tuple[tuple[float, ...], str]] = {
    "jpeg": ((100, 85, 70, 55, 40), "JPEG quality"),
    "gaussian_noise": ((5.0,), "noise std in 0-255 units"),
    "salt_pepper": ((0.01,), "fraction of pixels set to 0 or 255"),
    "gaussian_blur": ((1.0,), "blur sigma in pixels (at the model's input size)"),
}


@dataclass(frozen=True)
class Jpeg:
    """JPEG re-compression at `quality` (a module-level callable: it pickles into spawn/forkserver loader workers)."""

    quality: float

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return jpeg(img, self.quality)


@dataclass(frozen=True)
class GaussianBlur:
    sigma: float

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return gaussian_blur(img, self.sigma)


def perturbation(name: str, level: float) -> Callable[[np.ndarray], np.ndarray]:
    """The perturbation `name` at `level`, as a picklable callable (loader workers may be spawned processes)."""
    if name == "jpeg":
        return Jpeg(level)
    if name == "gaussian_blur":
        return GaussianBlur(level)
    if name == "gaussian_noise":
        return _Seeded(_gaussian_noise, level)
    if name == "salt_pepper":
        return _Seeded(_salt_pepper, level)
    raise ValueError(f"unknown perturbation {name!r}; choose from {', '.join(PERTURBATIONS)} or all")


def expand_perturbations(
    names: Iterable[str], levels: dict[str, tuple[float, ...]] | None = None
) -> list[tuple[str, float]]:
    """['jpeg', 'salt_pepper'] or ['all'] -> [(name, level), ...]."""
    levels = levels or {}
    out: list[tuple[str, float]] = []
    names = list(names)
    if "all" in names:
        names = list(PERTURBATIONS)
    for n in names:
        if n not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {n!r}; choose from {', '.join(PERTURBATIONS)} or all")
        out += [(n, float(v)) for v in levels.get(n, PERTURBATIONS[n][0])]
    return out


# --------------------------------------------------------------------------- the evaluation


@dataclass
class PerturbationResult:
    """One perturbation condition against the clean run (``d_*``: perturbed minus clean)."""

    name: str
    level: float
    acc: float
    auc: float
    d_acc: float
    d_auc: float

    def to_dict(self) -> dict[str, Any]:
        return finite_values(dataclasses.asdict(self))


@dataclass
class EvalReport:
    """What :func:`evaluate` measured; :meth:`to_dict` is report.json (plus ``report_json``, its path)."""

    checkpoint: str
    stage: int
    epoch: int
    shards: str
    dataset: str
    quality: str | None
    split: str
    frame: BinaryMetrics
    video: BinaryMetrics
    methods: dict[str, BinaryMetrics]
    samples: dict[str, Any]  # sample_counts()
    perturbations: list[PerturbationResult] = field(default_factory=list)
    roc_png: str | None = None
    gradcam: list[str] | None = None  # PNG grids, with --gradcam
    scores_csv: str | None = None  # one row per scored sample (clean condition)
    report_json: str | None = None  # set once written

    def to_dict(self) -> dict[str, Any]:
        d = {
            k: getattr(self, k)
            for k in ("checkpoint", "stage", "epoch", "shards", "dataset", "quality", "split", "samples")
        }
        d.update(
            frame=self.frame.to_dict(),
            video=self.video.to_dict(),
            methods={m: v.to_dict() for m, v in self.methods.items()},
            perturbations=[p.to_dict() for p in self.perturbations],
        )
        d.update(
            {
                k: getattr(self, k)
                for k in ("roc_png", "gradcam", "scores_csv", "report_json")
                if getattr(self, k) is not None
            }
        )
        return d


def default_out_dir(checkpoint: str | Path, info: schema.DatasetInfo, split: str) -> Path:
    """`<checkpoint folder>/eval-<dataset>-<quality>-<split>` from the shard folder's dataset.json, so that one
    dataset's c23 and c40 reports (or its val and test splits) never overwrite each other."""
    parts = [str(p) for p in (info.dataset, info.quality, split) if p]
    return Path(checkpoint).parent / ("eval-" + "-".join(re.sub(r"[^\w.+]+", "_", p) for p in parts))


class _Session:
    """A loaded model and one stream over the split (its shards indexed once) for every condition."""

    def __init__(self, opts: EvalOptions) -> None:
        self.opts = opts
        self.dinfo, self.device = dist_util.init_distributed(opts.device)
        if self.device.type == "cpu":  # leave the loader workers their cores (oversubscribed OpenMP threads crawl)
            dist_util.set_cpu_threads(opts.workers)
        self.model, self.mcfg, self.ck = load_model(opts.checkpoint, self.device)
        self.amp = amp_dtype("auto", self.device)
        self.model.to(memory_format=torch.channels_last)  # as in training: NHWC is faster on CUDA and CPU
        self.stream = EvalStream(
            opts.shards,
            opts.split,
            self.mcfg.img_size,
            opts.batch_size,
            max_batches=opts.max_batches,
            rank=self.dinfo.rank,
            world_size=self.dinfo.world_size,
        )
        self.skipped = 0

    def predict(self, perturb: Callable[[np.ndarray], np.ndarray] | None) -> Predictions:
        """Scores of the split under ``perturb`` (set on the stream before its loader is made)."""
        self.stream.perturb = perturb
        tally = SkipTally()
        loader = make_loader(self.stream, self.opts.workers, self.device.type == "cuda")
        pred = predict(self.model, tally.wrap(loader), self.device, True, self.amp)
        self.skipped = sum(dist_util.all_gather_objects(tally.total())) + self.stream.missing
        return pred


def evaluate(opts: EvalOptions) -> EvalReport:
    """Run the evaluation, write report.json and roc.png (and Grad-CAM grids) under the output folder."""
    info = load_info(opts.shards)
    if opts.split not in schema.SPLITS:
        raise ValueError(f"--split must be one of {schema.SPLITS}")
    conditions = expand_perturbations(opts.perturb, opts.perturb_levels)
    sess = _Session(opts)
    clean = sess.predict(None)
    samples = sample_counts(
        len(clean.labels), sess.stream.expected, sess.skipped, info.count(opts.split), opts.max_batches is not None
    )
    if samples["warning"]:
        log.warning("%s", samples["warning"])
    if len(clean.labels) == 0:
        raise ValueError(f"{opts.shards}: the {opts.split} split yielded no readable samples")
    frame = binary_metrics(clean.labels, clean.scores, ranking=clean.margins)
    report = EvalReport(
        checkpoint=str(opts.checkpoint),
        stage=sess.ck["stage"],
        epoch=sess.ck["epoch"],
        shards=str(opts.shards),
        dataset=info.dataset,
        quality=info.quality,
        split=opts.split,
        frame=frame,
        video=video_metrics(clean.videos, clean.labels, clean.scores, clean.margins),
        methods=per_method_metrics(clean.methods, clean.labels, clean.scores, clean.margins),
        samples=samples,
    )
    curves = {}
    if frame.n_real and frame.n_fake:
        curves["clean"] = (*roc_points(clean.labels, clean.margins), frame.auc)
    for name, level in conditions:
        pred = sess.predict(perturbation(name, level))
        m = binary_metrics(pred.labels, pred.scores, ranking=pred.margins)
        report.perturbations.append(PerturbationResult(name, level, m.acc, m.auc, m.acc - frame.acc, m.auc - frame.auc))
        log.info(
            "%s %g: acc %.4f (%+.4f)  AUC %.4f (%+.4f)", name, level, m.acc, m.acc - frame.acc, m.auc, m.auc - frame.auc
        )
        if m.n_real and m.n_fake and name == "jpeg":
            curves[f"JPEG {level:g}"] = (*roc_points(pred.labels, pred.margins), m.auc)
    if sess.dinfo.is_master:
        out = Path(opts.out) if opts.out else default_out_dir(opts.checkpoint, info, opts.split)
        _write(report, curves, sess, out, clean)
    return report


def write_scores_csv(pred: Predictions, path: Path) -> None:
    """One row per scored sample: key, video, method, label (0 real, 1 fake), fake probability, logit margin.

    What the report's metrics were computed from, so that a reader can re-group them (per person, per source video,
    per threshold) without scoring the split again. Written whole under a temporary name, then renamed."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("key", "video", "method", "label", "fake_prob", "margin"))
    for k, v, m, lab, p, mar in zip(pred.keys, pred.videos, pred.methods, pred.labels, pred.scores, pred.margins):
        # shortest exact repr: rounded digits would flip scores next to the 0.5 threshold (Acc) or tie margins
        w.writerow((k, v, m, int(lab), repr(float(p)), repr(float(mar))))
    schema.atomic_write_text(path, buf.getvalue())


def read_scores_csv(path: Path) -> Predictions:
    """The predictions a scores.csv holds (the exact inverse of :func:`write_scores_csv`)."""
    import csv

    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return Predictions(
        labels=np.asarray([int(r["label"]) for r in rows], dtype=np.int64),
        scores=np.asarray([float(r["fake_prob"]) for r in rows]),
        margins=np.asarray([float(r["margin"]) for r in rows]),
        keys=[r["key"] for r in rows],
        videos=[r["video"] for r in rows],
        methods=[r["method"] for r in rows],
    )


def _write(report: EvalReport, curves: dict[str, Any], sess: _Session, out: Path, clean: Predictions) -> None:
    """roc.png, scores.csv, the Grad-CAM grids and report.json under ``out``; their paths go into ``report``."""
    from hilif.train.plots import plot_roc

    out.mkdir(parents=True, exist_ok=True)
    write_scores_csv(clean, out / SCORES_CSV)
    report.scores_csv = str(out / SCORES_CSV)
    if curves:
        plot_roc(curves, out / ROC_PNG, title=f"{report.dataset} {report.split}")
        report.roc_png = str(out / ROC_PNG)
    if sess.opts.gradcam > 0:
        from hilif.train.gradcam import gradcam_grids

        report.gradcam = [
            str(p)
            for p in gradcam_grids(
                sess.model, sess.opts.shards, sess.opts.split, sess.mcfg.img_size, sess.opts.gradcam, out, sess.device
            )
        ]
    schema.atomic_write_text(out / REPORT_JSON, json.dumps(report.to_dict(), indent=1, sort_keys=True))
    report.report_json = str(out / REPORT_JSON)


def sample_counts(scored: int, planned: int, skipped: int, in_dataset_json: int, capped: bool) -> dict[str, Any]:
    """The report's ``samples``: scored vs what dataset.json lists (vs the planned number under --max-batches), the
    skipped ones, and a warning line when they differ (metrics of a partly unreadable split only look normal)."""
    expected = planned if capped else in_dataset_json
    warning = None
    if scored != expected:
        source = "planned under --max-batches" if capped else "dataset.json lists"
        warning = (
            f"scored {scored} of the {expected} samples {source} ({skipped} unreadable skipped); these metrics "
            "do not cover the whole split"
        )
    return {
        "scored": scored,
        "expected": expected,
        "dataset_json": in_dataset_json,
        "skipped": skipped,
        "capped": capped,
        "complete": warning is None,
        "warning": warning,
    }

"""The run configs: TrainConfig, every knob of a hilif-train run (saved next to the run and in checkpoints);
EvalOptions, one hilif-eval evaluation; DetectOptions, TableOptions and InfoOptions, the hilif-eval commands
detect, table and info. Each ``option`` field is the command-line option of the same name. This module imports
nothing heavy: the command lines build their options from it before the work's modules are loaded."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hilif.common.options import auto_or_count, comma_names, comma_numbers, option

#: Learning-rate schedules within one stage (stepped per optimiser step).
LR_SCHEDULES = ("cosine", "constant", "linear")

#: Training augmentations: "paper" = random crop + horizontal flip (section V-B); "colour" adds a per-sample
#: photometric jitter (brightness, contrast, saturation, white balance; hilif.train.data.colour_jitter); "strong"
#: adds a small rotation and zoom, Gaussian blur and JPEG re-compression (the field's usual set), all global.
AUGMENTS = ("paper", "colour", "strong")

#: Synthetic fakes made on the fly from the train reals: "none", or "sbi" = self-blended images (hilif.train.sbi).
SYNTH_FAKES = ("none", "sbi")
#: ``--train-methods none``: no dataset fakes at all (only with synthetic fakes: the SBI protocol, reals only).
NO_METHODS = "none"
#: Fakes of the val split that choose the best epoch: "train" = the fakes the run trains on (the --train-methods'
#: fakes; self-blended val reals with --train-methods none), so a method held out of training stays out of model
#: selection too; "all" = every fake of the val split.
VAL_FAKES = ("train", "all")
#: Which epoch a stage keeps as its best.pt: "val" = highest validation AUC; "last" = the final epoch (a fixed
#: budget, for validation splits too small to rank checkpoints).
SELECTS = ("val", "last")


def kept_epoch_word(select: str) -> str:
    """How logs name the epoch a stage keeps as best.pt: "best" (by validation) or "last"."""
    return "last" if select == "last" else "best"


#: TrainConfig fields that do not change what a run computes; a resumed run may change them freely.
RUNTIME_FIELDS = frozenset(
    {
        "shards",
        "out",
        "resume",
        "workers",
        "tensorboard",
        "compile",
        "cuda_graphs",
        "stage",
        "device",
        "log_every",
        "val_batch_size",
        "threads",
        "save_every_steps",
        "val_every",
    }
)


#: Training recipe per model preset; explicit options override. "paper" is section V-B (20 + 20 epochs of the
#: whole train split, batch 12, lr 2e-4). "demo" is sized for the quick start's 15 minutes on a 2-core CPU: 14 + 2
#: epochs of 40 steps of 32 faces: 16 + 3 fitted the budget on the test machine's fast hours only, and at 12 + 2 its
#: worst seed fell below 0.85 (docs/demo.md). Its 2 validation people rank checkpoints no better than chance, so
#: each stage keeps its last epoch (select="last"); self-blended fakes in half the fake slots take away the
#: shortcut "a face I have not seen is fake" that its 5 training people otherwise teach
#: (docs/demo.md has the measurements). Its weight decay is 0.05, not the paper's 0.01: over seeds 0-4 and the
#: 2-thread run the worst figure rose, though seed to seed the change is within the spread; on reals only it did not
#: help alone. Half its self-blended fakes skip SBI's frequency change (sbi_p_frequency=0.5): the demo's
#: NeuralTextures re-renders the lower face at about the network's input scale, so those fakes carry little
#: frequency trace, and self-blended fakes that always carry one taught reals-only runs to look for that trace
#: (docs/demo.md has the seeds). It validates every 4th epoch of a stage and the last (val_every=4): it keeps its last
#: epochs whatever their validation says, validation changes no weight, and per-epoch validation cost the quick start
#: its 15-minute budget on a slow machine.
#: A from-scratch b0 needs the higher lr in stage 1, while stage 2 fine-tunes the stage-1 model
#: and a restart at 1e-3 undid most of what stage 1 had learnt within one epoch, hence 1e-4 there; each stage
#: ramps its lr up over its first epoch (warmup_steps=40, one epoch): without the ramp the worst seeds on a second
#: kind of CPU fell below the target, with it every seed measured there passed (docs/demo.md has the seeds);
#: "strong" augmentation (rotation, zoom, blur, JPEG on top of colour jitter) keeps the model from memorising the
#: exact pixels of its 5 training identities' faces, which the demo films from one photograph each: it lifted the
#: worst measured seed more than any other change (docs/demo.md). The demo loads its small faces in the main
#: process (workers=0) so that torch gets every core: on a small CPU a step is much faster than with one loader
#: worker beside one torch thread, and loading is a small share of it. (Workers never change the figures: the
#: plan and the augmentation are seeded per sample; the thread count does, being float arithmetic.)
#: "tiny" is for tests.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(
        stage1_epochs=20,
        stage2_epochs=20,
        batch_size=12,
        lr=2e-4,
        steps_per_epoch=None,
        workers=4,
        augment="paper",
        select="val",
        synth_fakes="none",
        weight_decay=1e-2,
        sbi_p_frequency=1.0,
        val_every=1,
        warmup_steps=0,
    ),
    "demo": dict(
        stage1_epochs=14,
        stage2_epochs=2,
        batch_size=32,
        lr=1e-3,
        stage2_lr=1e-4,
        steps_per_epoch=40,
        workers=0,
        augment="strong",
        select="last",
        synth_fakes="sbi",
        weight_decay=5e-2,
        sbi_p_frequency=0.5,
        val_every=4,
        warmup_steps=40,
    ),
    "tiny": dict(
        stage1_epochs=1,
        stage2_epochs=1,
        batch_size=4,
        lr=1e-3,
        steps_per_epoch=2,
        workers=0,
        augment="paper",
        select="val",
        synth_fakes="none",
        weight_decay=1e-2,
        sbi_p_frequency=1.0,
        val_every=1,
        warmup_steps=0,
    ),
}


#: What a preset's recipe changes when a run trains on reals only (``--train-methods none``: every fake is
#: self-blended); explicit options still override. The demo trains 24 + 3 epochs there: its reals-only runs of 16
#: stage-1 epochs that missed an unseen method had learnt least (their training loss still falling when stage 1
#: ended), and the longer stage 1 lifted the worst seeds and the 2-thread run (docs/demo.md has the seeds). The
#: recipe with dataset fakes is shorter (the quick start's budget); the reals-only one has no budget and keeps the
#: 3 stage-2 epochs it was measured with.
REALS_ONLY_RECIPES: dict[str, dict[str, Any]] = {
    "demo": dict(stage1_epochs=24, stage2_epochs=3),
}


@dataclass
class TrainConfig:
    """One training run. Defaults are the paper's recipe (section V-B).

    Each field made with ``option`` is a hilif-train option of the same name; the others (shuffle_buffer,
    val_batch_size, log_every) are set only from Python."""

    shards: str = option(
        "Shard folder written by `hilif-prep extract` (holds dataset.json).", "", type=Path, required=True
    )
    out: str = option("Run folder: checkpoints, metrics.jsonl, plots.", "runs/hilif", type=Path)
    preset: str = option("Model preset: paper (2x EfficientNet-b4, 224) | demo | tiny.", "paper")
    stage: str = option("1 | 2 | both. Stage 2 starts from OUT/stage1/best.pt.", "both")
    # None below = the preset's training recipe (RECIPES): the paper's for "paper"
    stage1_epochs: int | None = option("Stage-1 epochs, cross-entropy (paper: 20).", None)
    stage2_epochs: int | None = option("Stage-2 epochs, CE + lambda_d * L_d (paper: 20).", None)
    batch_size: int | None = option("Global batch, split over ranks, half real, half fake (paper: 12).", None)
    lr: float | None = option("AdamW learning rate at the start of each stage (paper: 2e-4).", None)
    weight_decay: float | None = option("AdamW weight decay (paper: 0.01; demo: 0.05).", None)
    # None: the same lr as stage 1 (the paper: "the same optimizer and parameters")
    stage2_lr: float | None = option(
        "Stage-2 lr (default: the preset's; paper: the same as --lr, as in the paper; demo: 1e-4).", None
    )
    # the paper gives only the initial lr; the reference code used cosine
    lr_schedule: str = option("Per stage, per step: cosine (to --min-lr) | linear | constant.", "cosine")
    min_lr: float = option("Final lr of the cosine / linear schedule.", 1e-5)  # the reference code's eta_min
    warmup_steps: int | None = option(
        "Linear warm-up steps at the start of each stage (default: the preset's; paper: 0, demo: 40).", None
    )
    lambda_d: float = option("Weight of the local relationship constraint loss (stage 2).", 0.5)
    lrc_k: int | None = option("Block size K of L_d (preset: 5).", None)
    lrc_s: int | None = option("Block stride S of L_d (preset: 2).", None)
    lrc_n: int | None = option("Top-N blocks of L_d (preset: 8).", None)
    # a named row of Tables VI-X (hilif.train.ablations)
    ablation: str | None = option(
        "A named row of Tables VI-X (e.g. eff+dftm, ld-k3s3n1): sets the model switches "
        "and L_d; an explicit option that contradicts it is an error. List: "
        "--print-ablations.",
        None,
    )
    train_methods: list[str] = option(
        "Fake methods to train on (repeat; default all): Table II. 'none': no dataset "
        "fakes (reals only; needs --synth-fakes sbi).",
        factory=list,
    )
    # the demo's 2 validation people rank checkpoints no better than chance (docs/demo.md): it keeps the last epoch
    select: str | None = option(
        "Which epoch each stage keeps as stageN/best.pt (stage 2's start, what hilif-eval reads): val (highest "
        "validation AUC, the paper's) | last (the stage's final epoch; validation is still run and logged). "
        "Default: the preset's (paper: val, demo: last).",
        None,
    )
    val_fakes: str = option(
        "Val fakes that choose the best epoch: train (default: the --train-methods' fakes; self-blended val reals "
        "with --train-methods none) | all (every method of the val split).",
        "train",
    )
    augment: str | None = option(
        "paper (random crop + flip, the paper's) | colour (+ photometric jitter) | strong (+ rotation, zoom, blur, "
        "JPEG). Default: the preset's.",
        None,
    )
    # the paper trains without one; an average damps the step-to-step wander a small, noisy split cannot rank
    ema_decay: float = option(
        "Exponential moving average of the weights: decay per step, with warm-up (0: off, the paper's). Validation, "
        "best.pt and stage 2's start use the averaged weights.",
        0.0,
    )
    # made in the loader workers
    synth_fakes: str | None = option(
        "none | sbi: self-blended fakes made from the train reals in the loader. Default: the preset's (paper: none, "
        "demo: sbi).",
        None,
    )
    synth_ratio: float = option(
        "Share (0, 1] of the fake slots filled with SBI (all of them with --train-methods none).", 0.5
    )
    sbi_blend_ratios: list[float] = option(
        "SBI blend ratios, one drawn per fake (the SBI paper's set).",
        factory=lambda: [0.25, 0.5, 0.75, 1.0, 1.0, 1.0],
        type=str,
        parse=comma_numbers(float, "0.25,0.5,0.75,1,1,1"),
    )
    sbi_mask_blur: list[int] = option(
        "SBI mask blur: smallest,largest odd Gaussian kernel size (SBI code: 5,25).",
        factory=lambda: [5, 25],
        type=str,
        parse=comma_numbers(int, "5,25", count=2),
    )
    sbi_regions: list[str] = option(
        "SBI mask regions, one drawn per fake (repeats weight the draw): face (landmark hull), extended (with the "
        "forehead), components (union of the face's parts; needs 68 landmarks). The SBI code's mix.",
        factory=lambda: ["face", "face", "extended", "components"],
        type=str,
        parse=comma_names,
    )
    sbi_p_frequency: float | None = option(
        "Probability that the SBI source-target generator makes a frequency change (down-scale or sharpen); 1 = "
        "always, as the SBI code. Below 1, the other fakes carry only the colour change and the source's resize and "
        "shift. Default: the preset's (paper: 1, demo: 0.5).",
        None,
    )
    sbi_size: str = option(
        "Where SBI blends: input (the face resized to the network's input scale first, so its traces survive the "
        "resize) or crop (the stored face as it is).",
        "input",
    )
    # FF++, the demo and Celeb-DF name each fake's target; elsewhere every real comes from the real sequence
    pair_twins: bool = option(
        "Put every fake beside its real twin in the step (its target video's same frame; they differ only where "
        "the face was manipulated).",
        False,
        flags=("--pair-twins/--no-pair-twins",),
    )
    backbone_weights: str | None = option("Local ImageNet weights file for the backbones.", None, type=Path)
    pretrained: bool | None = option(
        "ImageNet backbones (default: the preset's choice).", None, flags=("--pretrained/--no-pretrained",)
    )
    # any timm model built by its EfficientNet class (EfficientNet, EfficientNetV2, MobileNetV2 ...): the streams
    # are cut at its stage strides
    backbone: str | None = option(
        "timm backbone of both streams, e.g. efficientnet_b4, mobilenetv2_050 (default: the preset's).", None
    )
    img_size: int | None = option("Input size (default: the preset's).", None)
    compile: bool = option("torch.compile the model.", False)
    # None: on for one CUDA process without --compile (hilif.train.cuda_graphs; measured in docs/performance.md)
    cuda_graphs: bool | None = option(
        "Replay the training step as a CUDA graph (default: on for one CUDA process without --compile).",
        None,
        flags=("--cuda-graphs/--no-cuda-graphs",),
    )
    precision: str = option("auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32.", "auto")
    # NHWC: faster convolutions on CUDA and on CPU (oneDNN) alike
    channels_last: bool = option("NHWC memory format (faster on CUDA and CPU).", True)
    workers: int | None = option("Data-loading processes per rank (paper preset: 4, demo: 0 = the main process).", None)
    # None = cores left after the workers (at least 1)
    threads: int | None = option("CPU: torch threads (default: cores left after --workers).", None)
    shuffle_buffer: int = 2000  # samples per class stream
    resume: bool = option(
        "Continue the run in OUT from its last checkpoint (mid-epoch too). A torchrun restart resumes by itself.", False
    )
    # mid-epoch checkpoint (stageN/last.pt) every N optimiser steps; None: every ~30 minutes of training, N from the
    # step rate measured on the first steps of each stage; 0: only at epoch ends
    save_every_steps: int | None = option(
        "Mid-epoch checkpoint (stageN/last.pt) every N steps; default: about every 30 minutes (N from the measured "
        "step rate); 0: at epoch ends only.",
        None,
    )
    sync_bn: bool | None = option(
        "SyncBatchNorm across ranks (default: on with more than one CUDA rank; CUDA only).",
        None,
        flags=("--sync-bn/--no-sync-bn",),
    )
    # None: the recipe's; 0 or None there: from dataset.json (larger class once)
    steps_per_epoch: int | None = option(
        "Epoch length in steps; 0 = from dataset.json (paper preset's default; demo: 40).", None
    )
    # a skipped validation still makes the val loader's one draw from torch's generator (Trainer.end_epoch), so the
    # weights do not depend on it and this is a runtime field: a resume may change it; with --select val it narrows
    # the epochs that can be kept to the validated ones
    val_every: int | None = option(
        "Validate every N-th epoch of each stage and always its last (1: every epoch, the paper's). With --select "
        "val only validated epochs can be kept. Default: the preset's (paper: 1, demo: 4).",
        None,
    )
    val_max_batches: int | None = option(
        "Cap validation per epoch at N batches in all, both classes in proportion (default: whole split).", None
    )
    val_batch_size: int = 64
    tensorboard: bool = option("Also log to OUT/tensorboard.", False)
    seed: int = option("Seed of weights, data order and augmentation.", 0)
    device: str = option("auto | cuda | cpu.", "auto")
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.preset not in RECIPES:
            raise ValueError(f"unknown preset {self.preset!r}: choose one of {', '.join(RECIPES)}")
        recipe = dict(RECIPES[self.preset])
        if NO_METHODS in self.train_methods:
            recipe.update(REALS_ONLY_RECIPES.get(self.preset, {}))
        for name, value in recipe.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.steps_per_epoch == 0:
            self.steps_per_epoch = None
        if self.backbone is not None:  # before anything is written (a meta-device build: no memory, no weights)
            from hilif.model.backbone import check_backbone

            try:
                check_backbone(self.backbone)
            except ValueError as e:
                raise ValueError(f"--backbone: {e}") from None
        if self.stage not in ("1", "2", "both"):
            raise ValueError(f"stage must be 1, 2 or both, got {self.stage!r}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.batch_size < 2:
            raise ValueError("batch size must be at least 2 (one real and one fake per batch)")
        for name in ("stage1_epochs", "stage2_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.val_every < 1:
            raise ValueError(f"--val-every must be >= 1 (1: validate every epoch), got {self.val_every}")
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps must be >= 0 (0: no warm-up), got {self.warmup_steps}")
        if self.weight_decay < 0:  # else AdamW raises it as a traceback after the run folder is written
            raise ValueError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.ablation is not None:  # the row's L_d settings / stage 1 only; contradicting options raise
            from hilif.train.ablations import apply_to_train_config

            apply_to_train_config(self)
        if self.synth_fakes not in SYNTH_FAKES:
            raise ValueError(f"--synth-fakes must be one of {', '.join(SYNTH_FAKES)}, got {self.synth_fakes!r}")
        if not 0.0 < self.synth_ratio <= 1.0:
            raise ValueError(f"--synth-ratio must be in (0, 1] (share of the fake slots), got {self.synth_ratio}")
        if NO_METHODS in self.train_methods:
            if len(self.train_methods) > 1:
                raise ValueError(f"--train-methods {NO_METHODS} cannot be combined with method names")
            if self.synth_fakes == "none":
                raise ValueError(f"--train-methods {NO_METHODS} leaves no fakes to train on: add --synth-fakes sbi")
        if self.select not in SELECTS:
            raise ValueError(f"--select must be one of {', '.join(SELECTS)}, got {self.select!r}")
        if self.val_fakes not in VAL_FAKES:
            raise ValueError(f"--val-fakes must be one of {', '.join(VAL_FAKES)}, got {self.val_fakes!r}")
        self.sbi_config()  # the SBI ranges are valid
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1) (0: off), got {self.ema_decay}")
        if self.save_every_steps is not None and self.save_every_steps < 0:
            raise ValueError("--save-every-steps must be >= 0 (0: checkpoints at epoch ends only)")

    @property
    def dataset_fakes(self) -> bool:
        """Whether dataset fakes are trained on (False with ``--train-methods none``)."""
        return NO_METHODS not in self.train_methods

    def val_methods(self) -> tuple[list[str], bool]:
        """What validation scores as fakes: (dataset methods, [] = all; whether they are self-blended val reals)."""
        if self.val_fakes == "all":
            return [], False
        if not self.dataset_fakes:
            return [], True
        return list(self.train_methods), False

    def sbi_config(self):
        """The :class:`hilif.train.sbi.SBIConfig` of this run (the SBI paper's values except where set)."""
        from .sbi import SBIConfig

        try:
            return SBIConfig(
                blend_ratios=tuple(float(r) for r in self.sbi_blend_ratios),
                blur_kernel=tuple(int(k) for k in self.sbi_mask_blur),
                hull_types=tuple(self.sbi_regions),
                size=self.sbi_size,
                p_frequency=float(self.sbi_p_frequency),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"--sbi-blend-ratios / --sbi-mask-blur / --sbi-regions / --sbi-size / --sbi-p-frequency: {exc}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def identity(self) -> dict[str, Any]:
        """The fields that define what the run computes (a resume must match them)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1)


# --------------------------------------------------------------------------- hilif-eval


def parse_level(spec: str) -> tuple[str, tuple[float, ...]]:
    """``"jpeg=90,50"`` -> ``("jpeg", (90.0, 50.0))`` (one ``--perturb-level``)."""
    name, _, vals = spec.partition("=")
    try:
        levels = tuple(float(v) for v in vals.split(",") if v.strip())
    except ValueError:
        levels = ()
    if not levels:
        raise ValueError("expected NAME=V1,V2 (e.g. jpeg=90,50)")
    return name.strip(), levels


@dataclass
class EvalOptions:
    """One evaluation; each field is the hilif-eval option of the same name (perturb_levels: --perturb-level)."""

    # checkpoint and shards: required for an evaluation but not for the subcommands, so the command checks them
    checkpoint: str = option(
        "Required: a checkpoint written by hilif-train (e.g. RUN/stage2/best.pt).", type=Path, required=False
    )
    shards: str = option(
        "Required: the shard folder of any dataset (cross-dataset: Table III).", type=Path, required=False
    )
    split: str = option("train | val | test.", "test")
    # None: <checkpoint folder>/eval-<dataset>-<quality>-<split> (default_out_dir)
    out: str | None = option("Report folder (default: next to the checkpoint).", None, type=Path)
    perturb: list[str] = option(
        "Repeat: jpeg (100/85/70/55/40), gaussian_noise, salt_pepper, gaussian_blur, or all.", factory=list
    )
    perturb_levels: dict[str, tuple[float, ...]] = option(
        "Override levels, e.g. gaussian_noise=5,10.",
        factory=dict,
        flags=("--perturb-level",),
        type=list[str],
        parse=parse_level,
    )
    gradcam: int = option("Grad-CAM overlays of N faces (DFTM, RGB, noise stream) as PNG grids.", 0)
    batch_size: int = option("Faces per forward pass.", 64)
    workers: int = option("Data-loading processes.", 1)
    device: str = option("auto | cuda | cpu.", "auto")
    max_batches: int | None = option("Evaluate N batches in all, both classes in proportion (a quick look).", None)


class DetectInputError(ValueError):
    """Bad arguments of hilif-eval detect (paths, options, output folder): one line naming the fix."""


@dataclass
class DetectOptions:
    """One hilif-eval detect run (hilif.train.scan.run); each field is the option of the same name (as_json
    and the input paths belong to the command)."""

    checkpoint: str = option("A checkpoint written by hilif-train.", type=Path)
    frames: int = option("Frames sampled uniformly from each video.", 32)
    threshold: float = option(
        "A track is 'fake' at mean p(fake) >= this: the model's calibration, not a legal finding.", 0.5
    )
    out: str | None = option("Folder for results.jsonl and the pictures (one subfolder per file).", None, type=Path)
    explain: bool = option("Grad-CAM overlays of the faces (with --out).", False)
    video_out: bool = option("An annotated MP4 of the sampled frames (with --out).", False)
    # overrides of the checkpoint's extract settings (None: take the checkpoint's, else the defaults)
    detector: str | None = option("dlib | insightface (default: as the checkpoint's training shards).", None)
    upsample: str | int | None = option(
        "dlib upsample: auto or N (default: as the training shards).", None, type=str, parse=auto_or_count
    )
    margin: float | None = option("Face crop margin (default: as the training shards).", None)
    model_dir: str | None = option("insightface model folder (default: the shards' or buffalo_l).", None)
    min_face: float | None = option(
        "Faces narrower than this (px) are listed as too small and not scored (default: "
        "the detector's reliable minimum).",
        None,
    )
    batch_size: int = option("Faces per forward pass.", 32)
    device: str = option("auto | cuda | cpu.", "auto")
    overwrite: bool = option("Replace an existing OUT/results.jsonl.", False)

    def validate(self) -> None:
        if self.frames < 1:
            raise DetectInputError(f"--frames {self.frames}: must be at least 1")
        if not 0.0 <= self.threshold <= 1.0:
            raise DetectInputError(f"--threshold {self.threshold}: must be in [0, 1]")
        if self.batch_size < 1:
            raise DetectInputError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.min_face is not None and self.min_face < 0:
            raise DetectInputError(f"--min-face {self.min_face}: must be >= 0")
        if (self.explain or self.video_out) and not self.out:
            raise DetectInputError("--explain and --video-out write pictures: give --out DIR")


@dataclass
class TableOptions:
    """hilif-eval table: the paper's tables from run folders; each field is the option of the same name
    (table_names: --table, evaluate_missing: --evaluate)."""

    runs: str = option("Folder holding hilif-train run folders (config.json) and their eval reports.", type=Path)
    table_names: list[str] = option("I ... XII, repeat, or all (default).", factory=list, flags=("--table",))
    out: str | None = option("Where table-N.md / table-N.csv go (default: RUNS/tables).", None, type=Path)
    evaluate_missing: bool = option(
        "First evaluate every run's stage-1/2 best checkpoint on its own shards' test split where no report exists.",
        False,
        flags=("--evaluate",),
    )
    workers: int = option("Data-loading processes for --evaluate.", 1)
    device: str = option("Device for --evaluate.", "auto")


@dataclass
class InfoOptions:
    """hilif-eval info: parameters and FLOPs of a model; each field is the option of the same name."""

    preset: str = option("Model preset: paper | demo | tiny.", "paper")
    checkpoint: str | None = option("Take the model config from this checkpoint instead.", None, type=Path)
    img_size: int | None = option("Input size (default: the config's).", None)
    batch: int = option("Batch size for the FLOP count.", 1)

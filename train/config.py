"""TrainConfig: every knob of a hilif-train run, as one dataclass (saved next to the run and in checkpoints)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

#: Learning-rate schedules within one stage (stepped per optimiser step).
LR_SCHEDULES = ("cosine", "constant", "linear")

#: Training augmentations: "paper" = random crop + horizontal flip (section V-B); "colour" adds a per-sample
#: photometric jitter (brightness, contrast, saturation, white balance; hilif.train.data.colour_jitter).
AUGMENTS = ("paper", "colour")

#: Synthetic fakes made on the fly from the train reals: "none", or "sbi" = self-blended images (hilif.train.sbi).
SYNTH_FAKES = ("none", "sbi")
#: ``--train-methods none``: no dataset fakes at all (only with synthetic fakes: the SBI protocol, reals only).
NO_METHODS = "none"

#: TrainConfig fields that do not change what a run computes; a resumed run may change them freely.
RUNTIME_FIELDS = frozenset({"shards", "out", "resume", "workers", "tensorboard", "compile", "stage", "device",
                            "log_every", "val_batch_size", "threads", "save_every_steps"})


#: Training recipe per model preset; explicit options override. "paper" is section V-B (20 + 20 epochs of the
#: whole train split, batch 12, lr 2e-4). "demo" is sized for the quick start on a 2-core CPU (about 7 minutes):
#: 440 steps of 32 faces; a from-scratch b0 needs the higher lr in stage 1, while stage 2 fine-tunes the best
#: stage-1 model and a restart at 1e-3 knocked it back (val AUC 0.90 -> 0.44 in one epoch), hence 1e-4 there;
#: colour jitter keeps 5 training identities' few real videos from being memorised by their lighting.
#: "tiny" is for tests.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(stage1_epochs=20, stage2_epochs=20, batch_size=12, lr=2e-4, steps_per_epoch=None, workers=4,
                  augment="paper"),
    "demo": dict(stage1_epochs=8, stage2_epochs=3, batch_size=32, lr=1e-3, stage2_lr=1e-4, steps_per_epoch=40,
                 workers=1, augment="colour"),
    "tiny": dict(stage1_epochs=1, stage2_epochs=1, batch_size=4, lr=1e-3, steps_per_epoch=2, workers=0,
                 augment="paper"),
}


@dataclass
class TrainConfig:
    """One training run. Defaults are the paper's recipe (section V-B)."""

    shards: str = ""
    out: str = "runs/hilif"
    preset: str = "paper"  # hilif.model preset: paper (2x efficientnet_b4, 224) | demo | tiny
    stage: str = "both"  # 1 | 2 | both
    # None below = the preset's training recipe (RECIPES): the paper's for "paper"
    stage1_epochs: int | None = None
    stage2_epochs: int | None = None
    batch_size: int | None = None  # global batch (split over ranks)
    lr: float | None = None
    weight_decay: float = 1e-2
    stage2_lr: float | None = None  # None: the same lr as stage 1 (the paper: "the same optimizer and parameters")
    lr_schedule: str = "cosine"  # per stage; the paper gives only the initial lr, the reference code used cosine
    min_lr: float = 1e-5  # end of the cosine / linear schedule (the reference code's eta_min)
    warmup_steps: int = 0
    lambda_d: float = 0.5  # weight of the local relationship constraint loss in stage 2
    lrc_k: int | None = None  # None: the model preset's K / S / N (5, 2, 8)
    lrc_s: int | None = None
    lrc_n: int | None = None
    ablation: str | None = None  # a named row of Tables VI-X (hilif.train.ablations); sets the model switches and L_d
    train_methods: list[str] = field(default_factory=list)  # fake methods to train on; empty = all
    augment: str | None = None  # None: the recipe's; "paper" (crop + flip) or "colour" (+ photometric jitter)
    synth_fakes: str = "none"  # none | sbi: self-blended fakes from the train reals, made in the loader workers
    synth_ratio: float = 0.5  # share of the fake slots filled with synthetic fakes (all of them with --train-methods none)
    sbi_blend_ratios: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])  # SBI paper
    sbi_mask_blur: list[int] = field(default_factory=lambda: [5, 25])  # odd Gaussian kernel sizes of the mask blurs (SBI code)
    backbone_weights: str | None = None
    pretrained: bool | None = None  # None: the preset's choice (paper: ImageNet weights)
    img_size: int | None = None  # None: the preset's input size
    compile: bool = False
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    channels_last: bool = True  # NHWC: faster convolutions on CUDA and on CPU (oneDNN) alike
    workers: int | None = None  # DataLoader worker processes per rank
    threads: int | None = None  # CPU only: torch threads; None = cores left after the workers (at least 1)
    shuffle_buffer: int = 2000  # samples per class stream
    resume: bool = False
    # mid-epoch checkpoint (stageN/last.pt) every N optimiser steps; None: every ~30 minutes of training, N from the
    # step rate measured on the first steps of each stage; 0: only at epoch ends
    save_every_steps: int | None = None
    sync_bn: bool | None = None  # SyncBatchNorm under DDP; None: on when more than one CUDA rank trains
    steps_per_epoch: int | None = None  # None: the recipe's; 0 or None there: from dataset.json (larger class once)
    val_max_batches: int | None = None  # None: the whole val split every epoch
    val_batch_size: int = 64
    tensorboard: bool = False
    seed: int = 0
    device: str = "auto"
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.preset not in RECIPES:
            raise ValueError(f"unknown preset {self.preset!r}: choose one of {', '.join(RECIPES)}")
        recipe = RECIPES[self.preset]
        for name, value in recipe.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.steps_per_epoch == 0:
            self.steps_per_epoch = None
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
        self.sbi_config()  # the SBI ranges are valid
        if self.save_every_steps is not None and self.save_every_steps < 0:
            raise ValueError("--save-every-steps must be >= 0 (0: checkpoints at epoch ends only)")

    @property
    def dataset_fakes(self) -> bool:
        """Whether dataset fakes are trained on (False with ``--train-methods none``)."""
        return NO_METHODS not in self.train_methods

    def sbi_config(self):
        """The :class:`hilif.train.sbi.SBIConfig` of this run (the SBI paper's values except where set)."""
        from .sbi import SBIConfig

        try:
            return SBIConfig(blend_ratios=tuple(float(r) for r in self.sbi_blend_ratios),
                             blur_kernel=tuple(int(k) for k in self.sbi_mask_blur))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--sbi-blend-ratios / --sbi-mask-blur: {exc}") from None

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

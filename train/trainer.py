"""The two-stage schedule: stage 1 cross-entropy, stage 2 CE + lambda * L_d from the best stage-1 epoch.

AdamW with a per-stage schedule (cosine by default), bf16 autocast on CUDA, channels_last,
optional torch.compile, DDP under torchrun. Model selection uses the validation split only.
Every epoch appends a row to ``OUT/metrics.jsonl``, redraws ``OUT/plots/curves.png`` and writes
``stageN/last.pt`` (and ``best.pt`` when validation AUC improved, or every epoch with ``--select last``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel

from hilif.common.jsonable import finite_values
from hilif.pipeline import schema
from hilif.train import checkpoint as ckpt_io
from hilif.train import distributed as dist_util
from hilif.train.config import TrainConfig, kept_epoch_word
from hilif.train.cuda_graphs import GraphedTrainStep, graphs_supported
from hilif.train.data import (
    BalancedTrainStream,
    DataError,
    EvalStream,
    SkipTally,
    class_counts,
    load_info,
    make_loader,
    plan_epoch,
)
from hilif.train.evaluate import predict
from hilif.train.metrics import binary_metrics
from hilif.train.precision import amp_dtype
from hilif.train.step import train_step

log = logging.getLogger(__name__)

METRICS_JSONL = "metrics.jsonl"
CONFIG_JSON = "config.json"
#: Per-epoch running sums kept on the device and in a mid-epoch checkpoint: loss, CE, L_d, then stage 2's M_fake and
#: M_real summed over two-class batches and their count, then the unreadable samples met (filled when summed).
RUNNING_SUMS = ("loss", "ce", "ld", "m_fake", "m_real", "n_both", "skipped")
SKIPPED = RUNNING_SUMS.index("skipped")
#: Default --save-every-steps: a mid-epoch checkpoint about every AUTO_SAVE_SECONDS of training, the interval in steps
#: measured on steps AUTO_SAVE_PROBE[0]..[1] of each stage (rank 0's rate, broadcast so that all ranks agree).
AUTO_SAVE_SECONDS = 1800.0
AUTO_SAVE_PROBE = (5, 25)
#: --cuda-graphs when not given: on wherever the step can be graphed (one CUDA process, no --compile); the graphed
#: step was measured faster on an H200 at batch 12 and 48 (docs/performance.md).
CUDA_GRAPHS_DEFAULT = True


class TrainError(ValueError):
    """The run cannot start as asked (bad options, existing output, missing stage-1 checkpoint)."""


class Reporter(Protocol):
    """What the trainer tells a UI (the CLI's rich progress bar); every method is optional to act on.
    Epochs are numbered from 1, as in the log and metrics.jsonl. ``step``'s loss is the last one read on the host:
    each step's on a CPU, the mean since the last log line on a GPU (reading a GPU loss every step would stall
    the device). A reporter may also have ``remaining(seconds)``: the run's estimated time left, given at each
    step log line once a step rate is measured."""

    def start_epoch(self, stage: int, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, stage: int, epoch: int, step: int, loss: float, lr: float, images_per_s: float) -> None: ...

    def end_epoch(self, row: dict[str, Any]) -> None: ...


class _NullReporter:
    def start_epoch(self, *a: Any) -> None:
        pass

    def step(self, *a: Any) -> None:
        pass

    def end_epoch(self, row: dict[str, Any]) -> None:
        pass


@dataclass
class StageResult:
    stage: int
    best_path: Path
    best_auc: float
    best_epoch: int  # 1-based; 0 when no epoch was validated
    epochs_run: int  # epochs run by this call (0 when a resumed stage was already complete)
    steps_per_epoch: int


@dataclass
class _Stage:
    """One stage's training state, shared by its epochs (what a checkpoint records, and the training objects)."""

    number: int
    epochs: int
    model: torch.nn.Module  # the plain module: validation and checkpoints
    optimizer: torch.optim.Optimizer
    scheduler: Any
    last: Path  # stageN/last.pt
    step: int = 0  # optimiser steps taken in this stage
    epochs_done: int = 0
    best_auc: float = -math.inf
    best_epoch: int = 0  # 1-based; 0 until an epoch improved on -inf
    start_step: int = 0  # a mid-epoch resume: steps of the next epoch already taken, ...
    resume_rng: dict[str, Any] | None = None  # ... the RNG state after them ...
    running: torch.Tensor | None = None  # ... and the epoch's RUNNING_SUMS over all ranks up to them
    save_every: int | None = None  # mid-epoch checkpoint interval in steps (None: probed, 0: never)
    t_probe: float = 0.0
    steps_run: int = 0  # steps taken by this call (the probe of the automatic checkpoint interval)
    train_model: Any = None  # `model` under DDP / torch.compile, or `model`
    stream: Any = None  # the BalancedTrainStream
    loader: Any = None
    lrc: Any = None  # stage 2's constraint loss
    ema: Any = None  # timm ModelEmaV3 of `model` with --ema-decay: validated and saved as the checkpoints' model
    graphed: GraphedTrainStep | None = None  # the step as a CUDA graph (--cuda-graphs)
    log_lines: int = 0  # step log lines of this stage in this call (the second one prints the time estimate)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validation, best.pt and stage 2's start use: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model


@dataclass
class _Epoch:
    """Progress through one epoch; the running sums stay on the device (no host sync per step)."""

    number: int  # 1-based
    skip: int  # steps taken before a mid-epoch resume
    sums: torch.Tensor  # this rank's RUNNING_SUMS (rank 0 also holds all ranks' sums up to a resume)
    carried_skips: int  # unreadable samples of all ranks before a mid-epoch resume
    tally: SkipTally
    n_steps: int  # steps of this epoch taken so far
    logged: tuple[int, torch.Tensor]  # n_steps and loss sums at the last log line
    t0: float
    t_last: float
    t_logged: float = 0.0  # time of the last log line (the step rate of the time estimate)
    loss: float = math.nan  # the loss the progress bar shows: the last one read on the host
    ips: float = 0.0  # images/s the progress bar shows


# --------------------------------------------------------------------------- setup helpers


def model_config(cfg: TrainConfig) -> Any:
    """The HiLIFConfig of a run: the preset with this run's overrides."""
    from hilif.model import HiLIFConfig

    mcfg = HiLIFConfig.preset(cfg.preset)
    over: dict[str, Any] = {}
    if cfg.img_size is not None:
        over["img_size"] = cfg.img_size
    if cfg.backbone is not None:
        over["backbone"] = cfg.backbone
    if cfg.pretrained is not None:
        over["pretrained"] = cfg.pretrained
    if cfg.backbone_weights is not None:
        over["backbone_weights"] = cfg.backbone_weights
        over.setdefault("pretrained", True)
    for name in ("lrc_k", "lrc_s", "lrc_n"):
        if getattr(cfg, name) is not None:
            over[name] = getattr(cfg, name)
    mcfg = dataclasses.replace(mcfg, **over) if over else mcfg
    if cfg.ablation is not None:  # the row's model switches, on this run's backbone and input size
        from hilif.train.ablations import model_config_for

        mcfg = model_config_for(cfg.ablation, mcfg)
    return mcfg


def make_optimizer(
    params: list[torch.nn.Parameter], lr: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel on CUDA and CPU: one call per step for all parameters, where the default
    loops over them (one Python step per tensor on CPU, a few times slower than the fused one there)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type in ("cuda", "cpu") or None)


def make_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule within a stage: linear warm-up (optional), then cosine / constant / linear to min_lr."""
    total = max(1, total_steps - cfg.warmup_steps)
    end = cfg.min_lr / optimizer.param_groups[0]["lr"]
    if cfg.lr_schedule == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=cfg.min_lr)
    elif cfg.lr_schedule == "linear":
        main = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=end, total_iters=total)
    else:
        main = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if cfg.warmup_steps <= 0:
        return main
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=cfg.warmup_steps)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[cfg.warmup_steps])


def set_lrc_trainable(model: torch.nn.Module, trainable: bool) -> None:
    """The constraint loss's 1x1 convs only get gradients in stage 2; freezing them in stage 1 keeps DDP
    free of unused parameters (no find_unused_parameters)."""
    for p in model.lrc_parameters():
        p.requires_grad_(trainable)


def check_data(cfg: TrainConfig) -> tuple[schema.DatasetInfo, tuple[int, int]]:
    info = load_info(cfg.shards)
    if cfg.dataset_fakes:
        n_real, n_fake = class_counts(info, "train", cfg.train_methods)
    else:  # --train-methods none: every fake is a self-blended real, the fake sequence is the real one
        n_real = n_fake = class_counts(info, "train")[0]
    if n_real == 0 or n_fake == 0:
        raise DataError(
            f"{Path(cfg.shards) / schema.DATASET_JSON}: the train split has {n_real} real and {n_fake} "
            f"fake samples; training needs both - extract the train split first"
        )
    val_methods, val_sbi = cfg.val_methods()  # the fakes model selection scores (--val-fakes)
    try:
        v_real, v_fake = class_counts(info, "val", val_methods)
    except DataError as exc:
        raise DataError(f"{exc}; pass --val-fakes all to validate on every method") from None
    if val_sbi:
        v_fake = v_real
    if v_real == 0 or v_fake == 0:
        raise DataError(
            f"{Path(cfg.shards) / schema.DATASET_JSON}: the val split has {v_real} real and {v_fake} fake "
            f"samples; model selection needs both (never the test split) - extract the val split"
        )
    return info, (n_real, n_fake)


# --------------------------------------------------------------------------- the run


class Trainer:
    """Runs the stages asked for by a TrainConfig. `run()` returns one StageResult per stage run."""

    def __init__(self, cfg: TrainConfig, reporter: Reporter | None = None) -> None:
        self.cfg = cfg
        self.reporter: Reporter = reporter or _NullReporter()
        self.step_log_level = logging.DEBUG if reporter is not None else logging.INFO  # no progress bar: log steps
        self.out = Path(cfg.out)
        self.info, self.counts = check_data(cfg)
        self.dist, self.device = dist_util.init_distributed(cfg.device)
        if self.device.type == "cpu":
            threads = dist_util.set_cpu_threads(cfg.workers, cfg.threads)
            log.info("CPU: %d torch thread(s), %d loader worker(s)", threads, cfg.workers)
        self.mcfg = model_config(cfg)
        self.mcfg_dict = self.mcfg.to_dict()
        self.amp = amp_dtype(cfg.precision, self.device)
        self.channels_last = cfg.channels_last
        self.sync_bn = self._use_sync_bn()  # decided (an impossible --sync-bn refused) before anything is written
        self.cuda_graphs = self._use_cuda_graphs()  # likewise --cuda-graphs
        # losses are read on the host each step on a CPU, every log_every steps on a GPU (a read waits for the device)
        self.read_every = 1 if self.device.type == "cpu" else cfg.log_every  # 0: at epoch ends only
        self.val_s = 0.0  # the last validation's duration (the time estimate)
        self.plan = plan_epoch(
            *self.counts,
            global_batch=cfg.batch_size,
            world_size=self.dist.world_size,
            workers=cfg.workers,
            steps_override=cfg.steps_per_epoch,
        )
        # built (and its shards indexed) before training: a val split without readable reals or fakes stops here
        val_methods, val_sbi = cfg.val_methods()
        self.val_stream = EvalStream(
            cfg.shards,
            "val",
            self.mcfg.img_size,
            cfg.val_batch_size,
            max_batches=cfg.val_max_batches,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            require_both=True,
            methods=val_methods,
            sbi=cfg.sbi_config() if val_sbi else None,
            seed=cfg.seed,
            info=self.info,
        )
        what = "self-blended val reals" if val_sbi else "all methods" if not val_methods else ", ".join(val_methods)
        log.info("model selection: the val split's %d samples, its fakes: %s", self.val_stream.expected, what)
        self.val_skipped = 0
        self.tb = None
        self.model: torch.nn.Module | None = None  # the model of the last stage run (plain module)

    # ---- output folder

    def _prepare_out(self) -> None:
        stages = (2,) if self.cfg.stage == "2" else (1, 2)
        existing = [ckpt_io.last_path(self.out, s) for s in stages if ckpt_io.last_path(self.out, s).exists()]
        if existing and not self.cfg.resume and dist_util.restart_count() > 0:
            # torchrun --max-restarts restarted this job after a failure: continue from last.pt by itself
            log.warning(
                "torchrun restart %d: resuming the run in %s from its last checkpoint",
                dist_util.restart_count(),
                self.out,
            )
            self.cfg.resume = True
        if existing and not self.cfg.resume:
            raise TrainError(
                f"{self.out}: already holds a run ({existing[0].name} in {existing[0].parent.name}); "
                f"pass --resume to continue it, or choose another --out"
            )
        if self.cfg.resume:  # every check before anything is written: a refused resume leaves the run as it was
            self._check_resume(existing)
        if self.dist.is_master:
            self.out.mkdir(parents=True, exist_ok=True)
            saved = self.out / CONFIG_JSON
            schema.atomic_write_text(
                saved, json.dumps({"train": self.cfg.to_dict(), "model": self.mcfg_dict}, indent=1, sort_keys=True)
            )
            if self.cfg.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as exc:
                    raise TrainError(
                        "--tensorboard needs the tensorboard package: pip install 'hilif[tensorboard]'"
                    ) from exc
                self.tb = SummaryWriter(str(self.out / "tensorboard"))
        dist_util.barrier()

    def _check_resume(self, checkpoints: list[Path]) -> None:
        """Refuse (TrainError / CheckpointError) a resume whose model config, training identity or data plan differs
        from the run's: config.json and every stage's last.pt are read, nothing is written. Runs on every rank."""
        saved = self.out / CONFIG_JSON
        if saved.exists():
            old = json.loads(saved.read_text())
            diff = ckpt_io.model_config_mismatch(self.mcfg_dict, old.get("model", {}))
            if diff:
                raise TrainError(
                    f"{saved}: this run was made with another model config (differs in "
                    f"{', '.join(diff)}); repeat its options or use another --out"
                )
            diff = ckpt_io.identity_mismatch(self.cfg.identity(), old.get("train", {}))
            if diff:
                raise TrainError(
                    f"{saved}: this run was made with other training options (differs in "
                    f"{', '.join(diff)}); repeat the original options to resume, or use another --out"
                )
        for path in checkpoints:
            ck = ckpt_io.load_checkpoint(path)
            ckpt_io.check_config(path, ck, self.mcfg_dict, self.cfg.identity())
            self._check_plan(path, ck)

    def _plan_record(self) -> dict[str, int]:
        """What fixes the data plan of an epoch (seed, samples, global batch; never the workers)."""
        return {
            "steps": self.plan.steps,
            "global_batch": int(self.cfg.batch_size),
            "n_real": int(self.counts[0]),
            "n_fake": int(self.counts[1]),
            "world_size": self.dist.world_size,
        }

    def _check_plan(self, path: Path, ck: dict[str, Any]) -> None:
        have = ck.get("plan") or {}
        want = self._plan_record()
        # the world size only splits each global step over ranks: another number of ranks reads the same batches
        diff = [k for k in want if k != "world_size" and k in have and have[k] != want[k]]
        if diff:
            changes = ", ".join(f"{k} {have[k]} -> {want[k]}" for k in diff)
            raise TrainError(
                f"{path}: its run planned epochs on other data ({changes}); "
                f"resume with the same --shards contents and options, or use another --out"
            )

    def run(self) -> list[StageResult]:
        self._prepare_out()
        log.info(
            "data: %d real / %d fake train samples; %d steps per epoch of %d (global batch %d, %d rank(s))",
            *self.counts,
            self.plan.steps,
            self.cfg.batch_size,
            self.cfg.batch_size,
            self.dist.world_size,
        )
        stages = [(n, e) for n, e in ((1, self.cfg.stage1_epochs), (2, self.cfg.stage2_epochs)) if self._runs(n)]
        log.info(
            "plan: %s = %d optimiser steps%s",
            " + ".join(f"stage {n}: {e} epochs x {self.plan.steps} steps" for n, e in stages),
            sum(e for _, e in stages) * self.plan.steps,
            "; CUDA graphs on" if self.cuda_graphs else "",
        )
        results = []
        try:
            if self._runs(1):
                results.append(self.run_stage(1, self.cfg.stage1_epochs, init=None))
            if self._runs(2):
                init = ckpt_io.best_path(self.out, 1)
                if not init.is_file():
                    raise TrainError(
                        f"{init}: stage 2 starts from the best stage-1 checkpoint and there is none; "
                        f"run --stage 1 (or both) into this --out first"
                    )
                results.append(self.run_stage(2, self.cfg.stage2_epochs, init=init))
        finally:
            if self.tb is not None:
                self.tb.close()
        return results

    def _runs(self, stage: int) -> bool:
        return self.cfg.stage in (str(stage), "both")

    def _use_cuda_graphs(self) -> bool:
        """--cuda-graphs: on by default where the step can be graphed; asked for where it cannot, refused."""
        why = graphs_supported(self.device, self.dist.distributed, self.cfg.compile)
        if why is not None:
            if self.cfg.cuda_graphs:
                raise TrainError(f"--cuda-graphs: {why}; drop --cuda-graphs")
            return False
        return CUDA_GRAPHS_DEFAULT if self.cfg.cuda_graphs is None else self.cfg.cuda_graphs

    # ---- one stage

    def _build(self, stage: int, init: Path | None) -> torch.nn.Module:
        """The stage's model on this rank's device; stage 2 starts from the stage-1 checkpoint `init`."""
        from hilif.model import build_model

        torch.manual_seed(self.cfg.seed + stage)  # same initial weights on every rank (DDP also broadcasts them)
        model = build_model(self.mcfg)
        if init is not None:
            self._load_init(model, stage, init)
        set_lrc_trainable(model, stage == 2)
        if self.sync_bn:
            # timm's conversion keeps the activations of its BatchNormAct2d layers (torch's drops them)
            from timm.layers import convert_sync_batchnorm

            model = convert_sync_batchnorm(model)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _load_init(self, model: torch.nn.Module, stage: int, init: Path) -> None:
        ck = ckpt_io.load_checkpoint(init)
        # L_d's settings take no part in stage 1: one stage-1 run serves every K/S/N and loss variant
        loss_only = {"lrc_k", "lrc_s", "lrc_n", "lrc_loss"}
        ckpt_io.check_config(
            init,
            {**ck, "model_config": {k: v for k, v in ck["model_config"].items() if k not in loss_only}},
            {k: v for k, v in self.mcfg_dict.items() if k not in loss_only},
        )
        model.load_state_dict(ck["model"])
        log.info(
            "stage %d starts from %s (stage-1 epoch %d, val AUC %.4f)", stage, init, ck["best_epoch"], ck["best_metric"]
        )

    def run_stage(self, stage: int, epochs: int, init: Path | None) -> StageResult:
        """Train `stage` up to `epochs` epochs (continuing its last.pt with --resume); stage 2 starts from `init`."""
        st = self._setup_stage(stage, epochs, init)
        if st.epochs_done >= epochs:
            log.info("stage %d already complete (%d epochs)", stage, st.epochs_done)
            return StageResult(
                stage, ckpt_io.best_path(self.out, stage), st.best_auc, st.best_epoch, 0, self.plan.steps
            )
        self._start_training(st)
        ran = 0
        for epoch in range(st.epochs_done + 1, epochs + 1):
            ep = self.train_one_epoch(st, epoch)
            self.end_epoch(st, ep)
            ran += 1
        self.model = st.eval_model
        return StageResult(stage, ckpt_io.best_path(self.out, stage), st.best_auc, st.best_epoch, ran, self.plan.steps)

    def _setup_stage(self, stage: int, epochs: int, init: Path | None) -> _Stage:
        """Model, optimiser and schedule of a stage, from its last.pt when resuming."""
        cfg = self.cfg
        model = self._build(stage, init)
        params = [p for p in model.parameters() if p.requires_grad]
        lr = cfg.stage2_lr if stage == 2 and cfg.stage2_lr is not None else cfg.lr
        optimizer = make_optimizer(params, lr, cfg.weight_decay, self.device)
        st = _Stage(
            stage,
            epochs,
            model,
            optimizer,
            make_scheduler(cfg, optimizer, epochs * self.plan.steps),
            ckpt_io.last_path(self.out, stage),
            save_every=cfg.save_every_steps,
        )
        if cfg.ema_decay:
            from timm.utils import ModelEmaV3

            # warm-up: the average starts short and lengthens towards 1 / (1 - decay) steps, so early epochs are not
            # pulled back to the stage's starting weights; power 3/4 is timm's suggestion for short runs
            st.ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, warmup_power=3 / 4)
        if cfg.resume and st.last.is_file():
            self._resume(st)
        return st

    def _resume(self, st: _Stage) -> None:
        """Continue from the stage's last.pt (checked by _check_resume before anything was written)."""
        ck = ckpt_io.load_checkpoint(st.last, map_location=self.device)
        if st.ema is not None:  # last.pt of an EMA run: `model` is the average, `train_model` the optimiser's
            st.ema.module.load_state_dict(ck["model"])
            ckpt_io.unwrap(st.model).load_state_dict(ck["train_model"])
        else:
            ckpt_io.unwrap(st.model).load_state_dict(ck["model"])
        st.optimizer.load_state_dict(ck["optimizer"])
        st.scheduler.load_state_dict(ck["scheduler"])
        st.epochs_done, st.step = ck["epoch"], ck["step"]
        st.best_auc, st.best_epoch = ck["best_metric"], ck["best_epoch"]
        st.start_step = int(ck["epoch_step"])
        if st.start_step:  # the RNG is restored once the epoch's loader iterator exists (creating it draws)
            st.resume_rng = ck["rng"]
            st.running = ck["running"].to(self.device)  # the epoch's sums over all ranks up to the save, skips
            log.info(
                "stage %d resumes in epoch %d at step %d of %d (stage step %d)",
                st.number,
                st.epochs_done + 1,
                st.start_step,
                self.plan.steps,
                st.step,
            )
        else:
            ckpt_io.set_rng_state(ck["rng"])
            log.info("stage %d resumes after epoch %d (step %d)", st.number, st.epochs_done, st.step)

    def _start_training(self, st: _Stage) -> None:
        """The stage's training wrappers (DDP, torch.compile), its data stream and loader, and stage 2's L_d."""
        cfg = self.cfg
        st.train_model = st.model
        if self.dist.distributed:
            st.train_model = DistributedDataParallel(
                st.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.compile:
            st.train_model = torch.compile(st.train_model)
        st.stream = BalancedTrainStream(
            cfg.shards,
            "train",
            self.mcfg.img_size,
            cfg.batch_size,
            self.plan.steps,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            methods=cfg.train_methods if cfg.dataset_fakes else (),
            seed=cfg.seed * 1000 + st.number,
            augment=cfg.augment,
            synth=cfg.synth_fakes,
            synth_ratio=cfg.synth_ratio,
            sbi=cfg.sbi_config(),
            dataset_fakes=cfg.dataset_fakes,
            info=self.info,
            twins=cfg.pair_twins,
        )
        st.loader = make_loader(st.stream, cfg.workers, pin_memory=self.device.type == "cuda")
        if st.number == 2:
            from hilif.model.loss import make_lrc_loss

            st.lrc = make_lrc_loss(self.mcfg)  # eq. 27, or Li et al.'s original with lrc_loss="li"
        if self.cuda_graphs:
            st.graphed = GraphedTrainStep(
                st.train_model, st.optimizer, st.lrc, self.cfg.lambda_d, self.amp, self.channels_last
            )
        st.log_lines = 0

    # ---- one epoch

    def train_one_epoch(self, st: _Stage, epoch: int) -> _Epoch:
        """The steps of epoch `epoch` (1-based) of a stage, from a mid-epoch resume's step on."""
        ep = self._open_epoch(st, epoch)
        batches = iter(st.loader)
        if ep.skip and st.resume_rng is not None:  # now the RNG is where the uninterrupted run had it at this step
            ckpt_io.set_rng_state(st.resume_rng)
        for batch in batches:
            ep.tally.update(batch)
            self._after_step(st, ep, self._train_step(st, ep, batch))
        if ep.n_steps != self.plan.steps:  # would desynchronise DDP ranks: the stream is built to make this impossible
            raise RuntimeError(f"epoch {epoch} took {ep.n_steps} steps, planned {self.plan.steps}")
        st.start_step, st.resume_rng, st.running = 0, None, None  # later epochs start at their first step
        return ep

    def _open_epoch(self, st: _Stage, epoch: int) -> _Epoch:
        skip = st.start_step
        st.stream.set_epoch(epoch - 1, start_step=skip)  # the data plan counts epochs from 0
        st.train_model.train()
        self.reporter.start_epoch(st.number, epoch, st.epochs, self.plan.steps)
        sums = torch.zeros(len(RUNNING_SUMS), device=self.device)
        carried_skips = 0
        if skip:
            if self.dist.is_master:  # rank 0 carries all ranks' sums up to the save, the others start at 0
                sums[:SKIPPED].copy_(st.running[:SKIPPED].to(sums.dtype))
            carried_skips = int(st.running[SKIPPED])
        t0 = time.perf_counter()
        return _Epoch(epoch, skip, sums, carried_skips, SkipTally(), skip, (skip, sums[:3].clone()), t0, t0, t0)

    def _train_step(self, st: _Stage, ep: _Epoch, batch: dict[str, Any]) -> int:
        """One optimiser step on `batch`, its losses added to the epoch's sums on the device (and read into
        ``ep.loss`` every `read_every` steps: no host sync on a GPU in between); returns the batch size."""
        if st.graphed is not None:
            out = st.graphed(batch["image"], batch["label"])
        else:
            images = batch["image"].to(self.device, non_blocking=True)
            labels = batch["label"].to(self.device, non_blocking=True)
            out = train_step(
                st.train_model, st.optimizer, images, labels, st.lrc, self.cfg.lambda_d, self.amp, self.channels_last
            )
        st.scheduler.step()
        st.step += 1
        if st.ema is not None:
            st.ema.update(st.model, step=st.step)
        ep.n_steps += 1
        st.steps_run += 1
        ep.sums[:3] += torch.stack([out.loss, out.ce, out.ld])
        if st.lrc is not None:  # the loss's own class means of M (eq. 25), no recomputation
            ep.sums[3:6] += torch.stack([out.m_fake * out.both, out.m_real * out.both, out.both])
        if self.read_every == 1:  # this rank's loss: the NaN check and the progress bar
            ep.loss = float(out.loss)
            self._check_finite(ep.loss, st, ep, ep.n_steps)
        return len(batch["label"])

    @staticmethod
    def _check_finite(loss: float, st: _Stage, ep: _Epoch, first_step: int) -> None:
        """A NaN / inf loss stops the run, naming the epoch's steps it came from (one step when read each step)."""
        if math.isfinite(loss):
            return
        steps = f"step {ep.n_steps}" if first_step >= ep.n_steps else f"steps {first_step}-{ep.n_steps}"
        raise FloatingPointError(
            f"stage {st.number} epoch {ep.number} {steps} (stage step {st.step}): loss is {loss}; lower --lr"
        )

    def _after_step(self, st: _Stage, ep: _Epoch, batch_size: int) -> None:
        """Progress report, the periodic log line (with the time estimate) and the mid-epoch checkpoint after a step.
        Images/s: of this step on a CPU; on a GPU, where the host runs ahead of the device, of the last log window."""
        now = time.perf_counter()
        if self.read_every == 1:
            ep.ips = batch_size * self.dist.world_size / max(now - ep.t_last, 1e-9)
        ep.t_last = now
        lr = st.optimizer.param_groups[0]["lr"]
        if self.cfg.log_every and ep.n_steps % self.cfg.log_every == 0:
            # mean over the ranks and the steps since the last log line (one all_reduce per log line); on a GPU
            # this read is where the host waits for the device, so the window's time is the device's
            window = dist_util.all_reduce_sum(ep.sums[:3] - ep.logged[1])
            n_window = ep.n_steps - ep.logged[0]
            mean = float(window[0]) / (self.dist.world_size * n_window)
            self._check_finite(mean, st, ep, ep.logged[0] + 1)
            now = time.perf_counter()
            per_step = (now - ep.t_logged) / n_window
            if self.read_every != 1:
                ep.loss, ep.ips = mean, batch_size * self.dist.world_size / max(per_step, 1e-9)
            self._estimate(st, ep, per_step)
            ep.logged, ep.t_logged = (ep.n_steps, ep.sums[:3].clone()), now
            log.log(
                self.step_log_level,
                "stage %d epoch %d step %d/%d loss %.4f lr %.2e %.1f img/s",
                st.number,
                ep.number,
                ep.n_steps,
                self.plan.steps,
                mean,
                lr,
                ep.ips,
            )
        self.reporter.step(st.number, ep.number, ep.n_steps, ep.loss, lr, ep.ips)
        if st.save_every is None:
            st.save_every, st.t_probe = self._probe_save_every(st.steps_run, st.t_probe)
        if st.save_every and st.step % st.save_every == 0 and ep.n_steps < self.plan.steps:
            self._save_mid_epoch(st, ep)

    def _steps_left(self, st: _Stage, ep: _Epoch) -> tuple[int, int]:
        """(optimiser steps, validations) left in this call after the current step: this stage's, then stage 2's
        when stage 1 of a two-stage run is training."""
        epochs_after = st.epochs - ep.number
        steps = epochs_after * self.plan.steps + self.plan.steps - ep.n_steps
        vals = sum(self.validates(e, st.epochs) for e in range(ep.number, st.epochs + 1))
        if st.number == 1 and self.cfg.stage == "both":
            n2 = self.cfg.stage2_epochs
            steps += n2 * self.plan.steps
            vals += sum(self.validates(e, n2) for e in range(1, n2 + 1))
        return steps, vals

    def _estimate(self, st: _Stage, ep: _Epoch, per_step: float) -> None:
        """The run's time left from the step rate of the last log window (and the last validation's duration), for
        the progress bar; logged once per stage, at its second log line (the first window holds the warm-up:
        cuDNN's autotuning, the CUDA graph's capture, the loader's start)."""
        st.log_lines += 1
        if st.log_lines < 2:
            return
        steps, vals = self._steps_left(st, ep)
        seconds = steps * per_step + vals * self.val_s
        remaining = getattr(self.reporter, "remaining", None)
        if remaining is not None:
            remaining(seconds)
        if st.log_lines == 2:
            log.info(
                "stage %d: %.3f s per step (%.1f img/s): an epoch of %d steps takes about %s; the run's %d steps "
                "left about %s%s",
                st.number,
                per_step,
                self.cfg.batch_size / max(per_step, 1e-9),
                self.plan.steps,
                format_duration(self.plan.steps * per_step),
                steps,
                format_duration(seconds),
                f" with {vals} validations" if self.val_s else " plus validation (not yet timed)",
            )

    def end_epoch(self, st: _Stage, ep: _Epoch) -> None:
        """Sum the epoch over the ranks, validate, then log it and write the stage's checkpoints."""
        # unreadable samples met by all workers of all ranks ride with the loss sums
        ep.sums[SKIPPED] = ep.tally.total()
        dist_util.all_reduce_sum(ep.sums)
        train_time = time.perf_counter() - ep.t0
        # the steps since the last read (all of them with log_every 0 on a GPU) are checked here at the latest
        self._check_finite(float(ep.sums[0]), st, ep, ep.logged[0] + 1)
        # DDP keeps parameters equal but BN running stats drift per rank after the last forward:
        # take rank 0's, so that validation and the checkpoint see one model on every rank
        dist_util.broadcast_buffers(st.model)
        if st.ema is not None:  # the average of each rank's own BN statistics: rank 0's too
            dist_util.broadcast_buffers(st.ema.module)
        val = None
        if self.validates(ep.number, st.epochs):
            t_val = time.perf_counter()
            val = self.validate(st.eval_model)
            self.val_s = time.perf_counter() - t_val
        else:
            # the val loader's iterator draws one number from torch's global generator (its workers' base seed),
            # and the next epoch's steps continue from there: a skipped validation makes the same draw, so
            # --val-every changes no weight and runs measured before it existed keep their figures
            torch.empty((), dtype=torch.int64).random_()
        # --select last keeps every epoch in turn (the final one stays); best_val_auc is then the kept epoch's (NaN
        # for an epoch --val-every skipped); --select val chooses among the validated epochs
        improved = self.cfg.select == "last" or (val is not None and val.auc > st.best_auc)
        if improved:
            st.best_auc, st.best_epoch = (math.nan if val is None else val.auc), ep.number
        row = self._epoch_row(st, ep, val, train_time)
        if self.dist.is_master:
            if improved:
                self._save(st, ckpt_io.best_path(self.out, st.number), ep.number, training_state=False, metrics=row)
            self._save(st, st.last, ep.number, metrics=row)
            self._log_row(row)
        self.reporter.end_epoch(row)
        dist_util.barrier()

    def validates(self, epoch: int, epochs: int) -> bool:
        """Whether epoch `epoch` (1-based) of a stage of `epochs` is validated: every --val-every-th and the last."""
        return epoch % self.cfg.val_every == 0 or epoch == epochs

    def _epoch_row(self, st: _Stage, ep: _Epoch, val: Any, train_time: float) -> dict[str, Any]:
        """The epoch's metrics.jsonl row: losses are means over all ranks' steps; val_* are None on an epoch that
        --val-every skipped."""
        steps = self.plan.steps * self.dist.world_size
        loss, ce, ld = (v / steps for v in ep.sums[:3].tolist())
        row = {
            "stage": st.number,
            "epoch": ep.number,
            "step": st.step,
            "lr": st.optimizer.param_groups[0]["lr"],
            "train_loss": loss,
            "train_ce": ce,
            "train_ld": ld,
            "images_per_s": (ep.n_steps - ep.skip) * self.plan.local_batch * self.dist.world_size / train_time,
            "epoch_time_s": time.perf_counter() - ep.t0,
            "val_acc": None if val is None else val.acc,
            "val_auc": None if val is None else val.auc,
            "val_eer": None if val is None else val.eer,
            "val_ap": None if val is None else val.ap,
            "best_epoch": st.best_epoch,
            "best_val_auc": st.best_auc,
            # plus the samples missing from truncated shards and those met before a mid-epoch resume
            "skipped": int(ep.sums[SKIPPED]) + st.stream.missing + ep.carried_skips,
            "val_skipped": self.val_skipped if val is not None else 0,
        }
        if st.lrc is not None:  # L_d's terms: mean M over fakes, over reals, and the gap the hinge pushes towards 1
            m_fake, m_real, n_both = ep.sums[3:6].tolist()
            if n_both:
                row.update(
                    train_m_fake=m_fake / n_both, train_m_real=m_real / n_both, train_gap=(m_fake - m_real) / n_both
                )
        return row

    def _save(self, st: _Stage, path: Path, epochs_done: int, training_state: bool = True, **extra: Any) -> None:
        """A checkpoint of the stage after `epochs_done` epochs; `training_state`: with optimiser, schedule and RNG
        (last.pt, which --resume continues), else the weights only (best.pt)."""
        state = dict(optimizer=st.optimizer, scheduler=st.scheduler) if training_state else dict(with_rng=False)
        if training_state and st.ema is not None:
            state["train_model"] = st.model
        ckpt_io.save_checkpoint(
            path,
            model=st.eval_model,
            model_config=self.mcfg_dict,
            train_config=self.cfg.to_dict(),
            stage=st.number,
            epoch=epochs_done,
            step=st.step,
            best_metric=st.best_auc,
            best_epoch=st.best_epoch,
            extract=ckpt_io.extract_settings(self.info),
            plan=self._plan_record(),
            **state,
            **extra,
        )

    def _use_sync_bn(self) -> bool:
        """SyncBatchNorm: asked with --sync-bn, default on when more than one CUDA rank trains. PyTorch's SyncBatchNorm
        runs on GPUs only, so CPU (gloo) ranks keep per-rank BatchNorm; --sync-bn on CPU ranks is refused."""
        want = self.cfg.sync_bn
        if not self.dist.distributed:
            return False
        if self.device.type != "cuda":
            if want:
                raise TrainError(
                    "--sync-bn needs CUDA ranks (PyTorch's SyncBatchNorm has no CPU kernel); "
                    "drop --sync-bn or train on GPUs"
                )
            log.info("BatchNorm: per rank (%d CPU ranks; SyncBatchNorm is CUDA only)", self.dist.world_size)
            return False
        on = want is None or want
        log.info(
            "BatchNorm: %s across %d ranks",
            "synchronised (SyncBatchNorm)" if on else "per rank (--no-sync-bn)",
            self.dist.world_size,
        )
        return on

    def _probe_save_every(self, done: int, t_probe: float) -> tuple[int | None, float]:
        """The default checkpoint interval: (None, start time) while probing, then the steps of ~AUTO_SAVE_SECONDS."""
        first, last = AUTO_SAVE_PROBE
        if done in (first, last) and self.device.type == "cuda":  # the host runs ahead of the device: wait for it
            torch.cuda.synchronize(self.device)
        if done == first:
            return None, time.perf_counter()
        if done < last:
            return None, t_probe
        per_step = (time.perf_counter() - t_probe) / (last - first)
        n = int(dist_util.broadcast_object(max(1, round(AUTO_SAVE_SECONDS / max(per_step, 1e-9)))))
        log.info(
            "mid-epoch checkpoints every %d steps (about %.0f min at %.3f s/step; --save-every-steps to set)",
            n,
            AUTO_SAVE_SECONDS / 60,
            per_step,
        )
        return n, t_probe

    def _save_mid_epoch(self, st: _Stage, ep: _Epoch) -> None:
        """The stage's last.pt within epoch `ep` after its first `ep.n_steps` steps (atomic; rank 0 writes, all ranks
        sum the running sums). --resume continues from the next step, bit-identical on one CPU process."""
        ep.sums[SKIPPED] = ep.tally.total()
        total = dist_util.all_reduce_sum(ep.sums.detach().clone())
        if self.dist.is_master:
            running = total.cpu().double()
            running[SKIPPED] += ep.carried_skips
            self._save(st, st.last, ep.number - 1, epoch_step=ep.n_steps, running=running)
            log.debug(
                "stage %d epoch %d step %d/%d: mid-epoch checkpoint %s",
                st.number,
                ep.number,
                ep.n_steps,
                self.plan.steps,
                st.last,
            )

    def validate(self, model: torch.nn.Module) -> Any:
        """Frame-level metrics on the val split (every sample once, all ranks), same value on every rank."""
        stream = self.val_stream
        loader = make_loader(stream, min(self.cfg.workers, 2), pin_memory=self.device.type == "cuda")
        tally = SkipTally()
        preds = predict(ckpt_io.unwrap(model), tally.wrap(loader), self.device, self.channels_last, self.amp)
        self.val_skipped = sum(dist_util.all_gather_objects(tally.total())) + stream.missing
        return binary_metrics(preds.labels, preds.scores, ranking=preds.margins)  # AUC by logit difference

    def _log_row(self, row: dict[str, Any]) -> None:
        from hilif.train.plots import plot_curves

        with open(self.out / METRICS_JSONL, "a") as fh:
            fh.write(json.dumps(finite_values(row)) + "\n")
        log.info(
            "stage %d epoch %d: loss %.4f  %s%s%s",
            row["stage"],
            row["epoch"],
            row["train_loss"],
            "not validated (--val-every)"
            if row["val_auc"] is None
            else f"val acc {row['val_acc']:.4f}  val AUC {row['val_auc']:.4f}",
            f"  ({kept_epoch_word(self.cfg.select)})" if row["best_epoch"] == row["epoch"] else "",
            f"  skipped {row['skipped']} train / {row['val_skipped']} val samples"
            if row["skipped"] or row["val_skipped"]
            else "",
        )
        if self.tb is not None:
            for k in ("train_loss", "train_ce", "train_ld", "val_acc", "val_auc", "lr", "images_per_s"):
                if row[k] is not None:
                    self.tb.add_scalar(f"stage{row['stage']}/{k}", row[k], row["step"])
        try:
            plot_curves(self.out / METRICS_JSONL, self.out / "plots" / "curves.png")
        except Exception as exc:  # a plot must never stop training
            log.warning("could not draw the training curves: %s", exc)


def format_duration(seconds: float) -> str:
    """A duration for people: "45 s", "12 min 5 s", "3 h 20 min", "2 d 4 h"."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def train(cfg: TrainConfig, reporter: Reporter | None = None) -> list[StageResult]:
    """Library entry point of hilif-train: the stages ``cfg`` asks for (``reporter`` gets the progress), one
    StageResult each; the process group of a torchrun launch is left however the run ends."""
    try:
        return Trainer(cfg, reporter).run()
    finally:
        dist_util.cleanup()

"""The two-stage schedule: stage 1 cross-entropy, stage 2 CE + lambda * L_d from the best stage-1 epoch.

AdamW with a per-stage schedule (cosine by default), bf16 autocast on CUDA, channels_last,
optional torch.compile, DDP under torchrun. Model selection uses the validation split only.
Every epoch appends a row to ``OUT/metrics.jsonl``, redraws ``OUT/plots/curves.png`` and writes
``stageN/last.pt`` (and ``best.pt`` when validation AUC improved).
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
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from hilif.pipeline import schema
from hilif.train import checkpoint as ckpt_io
from hilif.train import distributed as dist_util
from hilif.train.config import TrainConfig
from hilif.train.data import (BalancedTrainStream, DataError, EvalStream, SkipTally, class_counts, load_info,
                              make_loader, normalize, plan_epoch)
from hilif.train.evaluate import predict
from hilif.train.metrics import binary_metrics
from hilif.train.precision import amp_dtype, autocast

log = logging.getLogger(__name__)

METRICS_JSONL = "metrics.jsonl"
CONFIG_JSON = "config.json"
#: Per-epoch running sums kept on the device (and in a mid-epoch checkpoint, followed by the skip count).
RUNNING_SUMS = ("loss", "ce", "ld", "m_fake", "m_real", "n_both")
#: Default --save-every-steps: a mid-epoch checkpoint about every AUTO_SAVE_SECONDS of training, the interval in steps
#: measured on steps AUTO_SAVE_PROBE[0]..[1] of each stage (rank 0's rate, broadcast so that all ranks agree).
AUTO_SAVE_SECONDS = 1800.0
AUTO_SAVE_PROBE = (5, 25)


class TrainError(ValueError):
    """The run cannot start as asked (bad options, existing output, missing stage-1 checkpoint)."""


class Reporter(Protocol):
    """What the trainer tells a UI (the CLI's rich progress bar); every method is optional to act on."""

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
    best_epoch: int
    epochs_run: int  # epochs run by this call (0 when a resumed stage was already complete)
    steps_per_epoch: int


# --------------------------------------------------------------------------- setup helpers


def model_config(cfg: TrainConfig) -> Any:
    """The HiLIFConfig of a run: the preset with this run's overrides."""
    from hilif.model import HiLIFConfig

    mcfg = HiLIFConfig.preset(cfg.preset)
    over: dict[str, Any] = {}
    if cfg.img_size is not None:
        over["img_size"] = cfg.img_size
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




def make_optimizer(params: list[torch.nn.Parameter], lr: float, weight_decay: float,
                   device: torch.device) -> torch.optim.AdamW:
    """AdamW; on CUDA the fused kernel (one launch per step instead of PyTorch's default multi-tensor loop)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cuda" or None)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
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


def forward_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lrc: torch.nn.Module | None,
                 lambda_d: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training forward: (loss, CE, L_d). Stage 1 passes ``lrc=None`` (CE only); stage 2 adds
    ``lambda_d * L_d`` on the features the same forward returns. Losses are computed in float32."""
    if lrc is None:
        ce = F.cross_entropy(model(x).float(), y)
        return ce, ce, torch.zeros((), device=x.device)
    logits, f_all = model(x, return_lrc=True)
    ce = F.cross_entropy(logits.float(), y)
    ld = lrc(f_all.float(), y)
    return ce + lambda_d * ld, ce, ld


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
        raise DataError(f"{Path(cfg.shards) / schema.DATASET_JSON}: the train split has {n_real} real and {n_fake} "
                        f"fake samples; training needs both - extract the train split first")
    v_real, v_fake = class_counts(info, "val")  # validation scores the whole val split, whatever --train-methods
    if v_real == 0 or v_fake == 0:
        raise DataError(f"{Path(cfg.shards) / schema.DATASET_JSON}: the val split has {v_real} real and {v_fake} fake "
                        f"samples; model selection needs both (never the test split) - extract the val split")
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
        self.plan = plan_epoch(*self.counts, global_batch=cfg.batch_size, world_size=self.dist.world_size,
                               workers=cfg.workers, steps_override=cfg.steps_per_epoch)
        # built (and its shards indexed) before training: a val split without readable reals or fakes stops here
        self.val_stream = EvalStream(cfg.shards, "val", self.mcfg.img_size, cfg.val_batch_size,
                                     max_batches=cfg.val_max_batches, rank=self.dist.rank,
                                     world_size=self.dist.world_size, require_both=True)
        self.val_skipped = 0
        self.tb = None
        self.model: torch.nn.Module | None = None  # the model of the last stage run (plain module)

    # ---- output folder

    def _prepare_out(self) -> None:
        stages = (2,) if self.cfg.stage == "2" else (1, 2)
        existing = [ckpt_io.last_path(self.out, s) for s in stages if ckpt_io.last_path(self.out, s).exists()]
        if existing and not self.cfg.resume and dist_util.restart_count() > 0:
            # torchrun --max-restarts restarted this job after a failure: continue from last.pt by itself
            log.warning("torchrun restart %d: resuming the run in %s from its last checkpoint",
                        dist_util.restart_count(), self.out)
            self.cfg.resume = True
        if existing and not self.cfg.resume:
            raise TrainError(f"{self.out}: already holds a run ({existing[0].name} in {existing[0].parent.name}); "
                             f"pass --resume to continue it, or choose another --out")
        if self.cfg.resume:  # every check before anything is written: a refused resume leaves the run as it was
            self._check_resume(existing)
        if self.dist.is_master:
            self.out.mkdir(parents=True, exist_ok=True)
            saved = self.out / CONFIG_JSON
            schema.atomic_write_text(saved, json.dumps({"train": self.cfg.to_dict(), "model": self.mcfg_dict},
                                                       indent=1, sort_keys=True))
            if self.cfg.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as exc:
                    raise TrainError("--tensorboard needs the tensorboard package: pip install 'hilif[tensorboard]'") from exc
                self.tb = SummaryWriter(str(self.out / "tensorboard"))
        dist_util.barrier()

    def _check_resume(self, checkpoints: list[Path]) -> None:
        """Refuse (TrainError / CheckpointError) a resume whose model config, training identity or data plan differs
        from the run's: config.json and every stage's last.pt are read, nothing is written. Runs on every rank."""
        saved = self.out / CONFIG_JSON
        if saved.exists():
            old = json.loads(saved.read_text())
            diff = ckpt_io.config_mismatch(self.mcfg_dict, old.get("model", {}))
            if diff:
                raise TrainError(f"{saved}: this run was made with another model config (differs in "
                                 f"{', '.join(diff)}); repeat its options or use another --out")
            diff = ckpt_io.identity_mismatch(self.cfg.identity(), old.get("train", {}))
            if diff:
                raise TrainError(f"{saved}: this run was made with other training options (differs in "
                                 f"{', '.join(diff)}); repeat the original options to resume, or use another --out")
        for path in checkpoints:
            ck = ckpt_io.load_checkpoint(path)
            ckpt_io.check_config(path, ck, self.mcfg_dict, self.cfg.identity())
            self._check_plan(path, ck)

    def _plan_record(self) -> dict[str, int]:
        """What fixes the data plan of an epoch (A1's plan: seed, samples, global batch; never the workers)."""
        return {"steps": self.plan.steps, "global_batch": int(self.cfg.batch_size), "n_real": int(self.counts[0]),
                "n_fake": int(self.counts[1]), "world_size": self.dist.world_size}

    def _check_plan(self, path: Path, ck: dict[str, Any]) -> None:
        have = ck.get("plan") or {}
        want = self._plan_record()
        # the world size only splits each global step over ranks: another number of ranks reads the same batches
        diff = [k for k in want if k != "world_size" and k in have and have[k] != want[k]]
        if diff:
            raise TrainError(f"{path}: its run planned epochs on other data ({', '.join(f'{k} {have[k]} -> {want[k]}' for k in diff)}); "
                             f"resume with the same --shards contents and options, or use another --out")

    def run(self) -> list[StageResult]:
        self._prepare_out()
        log.info("data: %d real / %d fake train samples; %d steps per epoch of %d (global batch %d, %d rank(s))",
                 *self.counts, self.plan.steps, self.cfg.batch_size, self.cfg.batch_size, self.dist.world_size)
        results = []
        try:
            if self.cfg.stage in ("1", "both"):
                results.append(self.run_stage(1, self.cfg.stage1_epochs, init=None))
            if self.cfg.stage in ("2", "both"):
                init = ckpt_io.best_path(self.out, 1)
                if not init.is_file():
                    raise TrainError(f"{init}: stage 2 starts from the best stage-1 checkpoint and there is none; "
                                     f"run --stage 1 (or both) into this --out first")
                results.append(self.run_stage(2, self.cfg.stage2_epochs, init=init))
        finally:
            if self.tb is not None:
                self.tb.close()
        return results

    # ---- one stage

    def _build(self, stage: int, init: Path | None) -> torch.nn.Module:
        from hilif.model import build_model

        torch.manual_seed(self.cfg.seed + stage)  # same initial weights on every rank (DDP also broadcasts them)
        model = build_model(self.mcfg)
        if init is not None:
            ck = ckpt_io.load_checkpoint(init)
            # L_d's settings take no part in stage 1: one stage-1 run serves every K/S/N and loss variant (Table X)
            loss_only = {"lrc_k", "lrc_s", "lrc_n", "lrc_loss"}
            ckpt_io.check_config(init, {**ck, "model_config": {k: v for k, v in ck["model_config"].items()
                                                               if k not in loss_only}},
                                 {k: v for k, v in self.mcfg_dict.items() if k not in loss_only})
            model.load_state_dict(ck["model"])
            log.info("stage %d starts from %s (stage-1 epoch %d, val AUC %.4f)", stage, init, ck["best_epoch"],
                     ck["best_metric"])
        set_lrc_trainable(model, stage == 2)
        return model

    def run_stage(self, stage: int, epochs: int, init: Path | None) -> StageResult:
        cfg = self.cfg
        steps = self.plan.steps
        model = self._build(stage, init)
        if self.sync_bn:
            from timm.layers import convert_sync_batchnorm  # keeps timm's BatchNormAct2d activations (torch's drops them)

            model = convert_sync_batchnorm(model)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        params = [p for p in model.parameters() if p.requires_grad]
        lr = cfg.stage2_lr if stage == 2 and cfg.stage2_lr is not None else cfg.lr
        optimizer = make_optimizer(params, lr, cfg.weight_decay, self.device)
        scheduler = make_scheduler(cfg, optimizer, epochs * steps)
        start_epoch, step, best_auc, best_epoch = 0, 0, -math.inf, -1
        start_step, resume_rng, running = 0, None, None  # a mid-epoch resume: steps done, RNG, the epoch's sums

        last = ckpt_io.last_path(self.out, stage)
        if cfg.resume and last.is_file():
            ck = ckpt_io.load_checkpoint(last, map_location=self.device)  # checked by _check_resume before any write
            ckpt_io.unwrap(model).load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            start_epoch, step = ck["epoch"], ck["step"]
            best_auc, best_epoch = ck["best_metric"], ck["best_epoch"]
            start_step = int(ck["epoch_step"])
            if start_step:  # the RNG is restored once the epoch's loader iterator exists (creating it draws)
                resume_rng = ck["rng"]
                running = ck["running"].to(self.device)  # the epoch's sums over all ranks up to the save, skips
                log.info("stage %d resumes in epoch %d at step %d of %d (stage step %d)", stage, start_epoch,
                         start_step, steps, step)
            else:
                ckpt_io.set_rng_state(ck["rng"])
                log.info("stage %d resumes after epoch %d (step %d)", stage, start_epoch, step)
        if start_epoch >= epochs:
            log.info("stage %d already complete (%d epochs)", stage, start_epoch)
            return StageResult(stage, ckpt_io.best_path(self.out, stage), best_auc, best_epoch, 0, steps)

        train_model: torch.nn.Module = model
        if self.dist.distributed:
            train_model = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            train_model = torch.compile(train_model)

        stream = BalancedTrainStream(cfg.shards, "train", self.mcfg.img_size, cfg.batch_size, self.plan.steps,
                                     rank=self.dist.rank, world_size=self.dist.world_size,
                                     methods=cfg.train_methods if cfg.dataset_fakes else (),
                                     seed=cfg.seed * 1000 + stage, augment=cfg.augment, synth=cfg.synth_fakes,
                                     synth_ratio=cfg.synth_ratio, sbi=cfg.sbi_config(),
                                     dataset_fakes=cfg.dataset_fakes)
        loader = make_loader(stream, cfg.workers, pin_memory=self.device.type == "cuda")
        lrc = None
        if stage == 2:
            from hilif.model.loss import make_lrc_loss

            lrc = make_lrc_loss(self.mcfg)  # eq. 27, or Li et al.'s original with lrc_loss="li" (Table X/XI)

        ran = 0
        done = 0  # steps taken by this call (probe of the auto checkpoint interval)
        save_every, t_probe = cfg.save_every_steps, 0.0  # None: auto, set after the first AUTO_SAVE_PROBE steps
        for epoch in range(start_epoch, epochs):
            skip = start_step if epoch == start_epoch else 0
            stream.set_epoch(epoch, start_step=skip)
            train_model.train()
            self.reporter.start_epoch(stage, epoch, epochs, steps)
            # the epoch's running sums on the device (no host sync per step): loss, CE, L_d, then stage 2's
            # M_fake, M_real over two-class batches and their count; summed over ranks when read
            sums = torch.zeros(len(RUNNING_SUMS), device=self.device)
            carried_skips = 0
            if skip:
                if self.dist.is_master:  # rank 0 carries all ranks' sums up to the save, the others start at 0
                    sums.copy_(running[:len(RUNNING_SUMS)].to(sums.dtype))
                carried_skips = int(running[len(RUNNING_SUMS)])
            ld_sums = sums[3:6]  # stage 2: sums of M_fake, M_real over two-class batches, count
            n_steps = skip
            logged = (n_steps, sums[:3].clone())  # window of the last log line
            t0 = time.perf_counter()
            t_last = t0
            tally = SkipTally()
            batches = iter(loader)
            if skip and resume_rng is not None:  # now the RNG is where the uninterrupted run had it at this step
                ckpt_io.set_rng_state(resume_rng)
            for batch in batches:
                tally.update(batch)
                x = normalize(batch["image"], self.device, self.channels_last)
                y = batch["label"].to(self.device, non_blocking=True)
                with autocast(self.device, self.amp):
                    loss, ce, ld = forward_loss(train_model, x, y, lrc, cfg.lambda_d)
                if lrc is not None:  # the loss's own class means of M (eq. 25), no recomputation
                    both = lrc.stats["both"].float()
                    ld_sums += torch.stack([lrc.stats["m_fake"] * both, lrc.stats["m_real"] * both, both])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                n_steps += 1
                done += 1
                sums[:3] += torch.stack([loss.detach(), ce.detach(), ld.detach()]).float()
                lv = float(loss.detach())  # this rank's loss: the NaN check and the progress bar
                if not math.isfinite(lv):
                    raise FloatingPointError(f"stage {stage} epoch {epoch} step {step}: loss is {lv}; lower --lr")
                now = time.perf_counter()
                ips = len(y) * self.dist.world_size / max(now - t_last, 1e-9)
                t_last = now
                lr = optimizer.param_groups[0]["lr"]
                self.reporter.step(stage, epoch, n_steps, lv, lr, ips)
                if cfg.log_every and n_steps % cfg.log_every == 0:
                    # mean over the ranks and the steps since the last log line (one all_reduce per log line)
                    window = dist_util.all_reduce_sum(sums[:3] - logged[1])
                    mean = float(window[0]) / (self.dist.world_size * (n_steps - logged[0]))
                    logged = (n_steps, sums[:3].clone())
                    log.log(self.step_log_level, "stage %d epoch %d step %d/%d loss %.4f lr %.2e %.1f img/s",
                            stage, epoch, n_steps, steps, mean, lr, ips)
                if save_every is None:
                    save_every, t_probe = self._probe_save_every(done, t_probe)
                if save_every and step % save_every == 0 and n_steps < steps:
                    self._save_mid_epoch(last, model, optimizer, scheduler, stage, epoch, n_steps, step, best_auc,
                                         best_epoch, sums, sum(dist_util.all_gather_objects(tally.total()))
                                         + carried_skips)
            if n_steps != steps:  # would desynchronise DDP ranks: the stream is built to make this impossible
                raise RuntimeError(f"epoch {epoch} took {n_steps} steps, planned {steps}")
            # unreadable samples met by all workers of all ranks, plus those missing from truncated shards
            skipped = sum(dist_util.all_gather_objects(tally.total())) + stream.missing + carried_skips
            # the logged losses (and L_d's terms) are means over all ranks' steps
            dist_util.all_reduce_sum(sums)
            epoch_sums = {k: v / (steps * self.dist.world_size) for k, v in zip(("loss", "ce", "ld"), sums[:3].tolist())}
            train_time = time.perf_counter() - t0
            # DDP keeps parameters equal but BN running stats drift per rank after the last forward:
            # take rank 0's, so that validation and the checkpoint see one model on every rank
            dist_util.broadcast_buffers(model)

            val = self.validate(model)
            improved = val.auc > best_auc
            if improved:
                best_auc, best_epoch = val.auc, epoch
            row = {"stage": stage, "epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"],
                   "train_loss": epoch_sums["loss"], "train_ce": epoch_sums["ce"], "train_ld": epoch_sums["ld"],
                   "images_per_s": (n_steps - skip) * self.plan.local_batch * self.dist.world_size / train_time,
                   "epoch_time_s": time.perf_counter() - t0,
                   "val_acc": val.acc, "val_auc": val.auc, "val_eer": val.eer, "val_ap": val.ap,
                   "best_epoch": best_epoch, "best_val_auc": best_auc,
                   "skipped": skipped, "val_skipped": self.val_skipped}
            if lrc is not None:  # L_d's terms: mean M over fakes, over reals, and the gap the hinge pushes towards 1
                m_fake, m_real, n_both = ld_sums.tolist()
                if n_both:
                    row.update(train_m_fake=m_fake / n_both, train_m_real=m_real / n_both,
                               train_gap=(m_fake - m_real) / n_both)
            if self.dist.is_master:
                common = dict(model=model, model_config=self.mcfg_dict, train_config=cfg.to_dict(), stage=stage,
                              epoch=epoch + 1, step=step, best_metric=best_auc, best_epoch=best_epoch, metrics=row,
                              extract=ckpt_io.extract_settings(self.info), plan=self._plan_record())
                if improved:
                    ckpt_io.save_checkpoint(ckpt_io.best_path(self.out, stage), **common, with_rng=False)
                ckpt_io.save_checkpoint(last, optimizer=optimizer, scheduler=scheduler, **common)
                self._log_row(row)
            self.reporter.end_epoch(row)
            dist_util.barrier()
            ran += 1
        self.model = model
        return StageResult(stage, ckpt_io.best_path(self.out, stage), best_auc, best_epoch, ran, steps)

    def _use_sync_bn(self) -> bool:
        """SyncBatchNorm: asked with --sync-bn, default on when more than one CUDA rank trains. PyTorch's SyncBatchNorm
        runs on GPUs only, so CPU (gloo) ranks keep per-rank BatchNorm; --sync-bn on CPU ranks is refused."""
        want = self.cfg.sync_bn
        if not self.dist.distributed:
            return False
        if self.device.type != "cuda":
            if want:
                raise TrainError("--sync-bn needs CUDA ranks (PyTorch's SyncBatchNorm has no CPU kernel); "
                                 "drop --sync-bn or train on GPUs")
            log.info("BatchNorm: per rank (%d CPU ranks; SyncBatchNorm is CUDA only)", self.dist.world_size)
            return False
        on = want is None or want
        log.info("BatchNorm: %s across %d ranks", "synchronised (SyncBatchNorm)" if on else "per rank (--no-sync-bn)",
                 self.dist.world_size)
        return on

    def _probe_save_every(self, done: int, t_probe: float) -> tuple[int | None, float]:
        """The default checkpoint interval: (None, start time) while probing, then the steps of ~AUTO_SAVE_SECONDS."""
        first, last = AUTO_SAVE_PROBE
        if done == first:
            return None, time.perf_counter()
        if done < last:
            return None, t_probe
        per_step = (time.perf_counter() - t_probe) / (last - first)
        n = int(dist_util.broadcast_object(max(1, round(AUTO_SAVE_SECONDS / max(per_step, 1e-9)))))
        log.info("mid-epoch checkpoints every %d steps (about %.0f min at %.3f s/step; --save-every-steps to set)",
                 n, AUTO_SAVE_SECONDS / 60, per_step)
        return n, t_probe

    def _save_mid_epoch(self, last: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                        stage: int, epoch: int, epoch_step: int, step: int, best_auc: float, best_epoch: int,
                        sums: torch.Tensor, skipped: int) -> None:
        """stageN/last.pt within epoch `epoch` after `epoch_step` of its steps (atomic; rank 0 writes, all ranks
        sum the running sums). --resume continues from the next step, bit-identical on one CPU process."""
        total = dist_util.all_reduce_sum(sums.detach().clone())
        if self.dist.is_master:
            running = torch.cat([total.cpu().double(), torch.tensor([float(skipped)], dtype=torch.float64)])
            ckpt_io.save_checkpoint(last, model=model, model_config=self.mcfg_dict, train_config=self.cfg.to_dict(),
                                    stage=stage, epoch=epoch, step=step, optimizer=optimizer, scheduler=scheduler,
                                    best_metric=best_auc, best_epoch=best_epoch, epoch_step=epoch_step,
                                    running=running, plan=self._plan_record(),
                                    extract=ckpt_io.extract_settings(self.info))
            log.debug("stage %d epoch %d step %d/%d: mid-epoch checkpoint %s", stage, epoch, epoch_step,
                      self.plan.steps, last)

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
            fh.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                 for k, v in row.items()}) + "\n")
        log.info("stage %d epoch %d: loss %.4f  val acc %.4f  val AUC %.4f%s%s", row["stage"], row["epoch"],
                 row["train_loss"], row["val_acc"], row["val_auc"],
                 "  (best)" if row["best_epoch"] == row["epoch"] else "",
                 f"  skipped {row['skipped']} train / {row['val_skipped']} val samples"
                 if row["skipped"] or row["val_skipped"] else "")
        if self.tb is not None:
            for k in ("train_loss", "train_ce", "train_ld", "val_acc", "val_auc", "lr", "images_per_s"):
                self.tb.add_scalar(f"stage{row['stage']}/{k}", row[k], row["step"])
        try:
            plot_curves(self.out / METRICS_JSONL, self.out / "plots" / "curves.png")
        except Exception as exc:  # a plot must never stop training
            log.warning("could not draw the training curves: %s", exc)


def train(cfg: TrainConfig, reporter: Reporter | None = None) -> list[StageResult]:
    """Library entry point of hilif-train: the stages ``cfg`` asks for (``reporter`` gets the progress), one
    StageResult each; the process group of a torchrun launch is left however the run ends."""
    try:
        return Trainer(cfg, reporter).run()
    finally:
        dist_util.cleanup()

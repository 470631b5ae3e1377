"""`hilif-train` and `hilif-eval`: the command lines over hilif.train (thin: parsing, progress, tables, exit codes)."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

train_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train HiLIF from shards (two-stage schedule).")
eval_app = typer.Typer(add_completion=False, no_args_is_help=True, invoke_without_command=True,
                       help="Evaluate a HiLIF checkpoint (default command); `info`: parameters and FLOPs; "
                            "`detect`: fake probability of a video or image; `table`: the paper's tables from runs.")
console = Console(stderr=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False, console=Console(stderr=True))],
                        force=True)


def _user_errors() -> tuple[type[BaseException], ...]:
    from hilif.model import BackboneWeightsError
    from hilif.pipeline.schema import SchemaError
    from hilif.train.checkpoint import CheckpointError
    from hilif.train.data import DataError
    from hilif.train.trainer import TrainError

    return (SchemaError, CheckpointError, DataError, TrainError, BackboneWeightsError, FileNotFoundError)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------- hilif-train


class RichReporter:
    """The training progress bar: stage, epoch, step, loss, lr, images/s (rank 0 only)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  "
                                            "{task.fields[ips]:.1f} img/s"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self.task: Any = None

    def __enter__(self) -> "RichReporter":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def start_epoch(self, stage: int, epoch: int, epochs: int, steps: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"stage {stage} epoch {epoch}/{epochs}", total=steps,
                                           loss=float("nan"), lr=0.0, ips=0.0)

    def step(self, stage: int, epoch: int, step: int, loss: float, lr: float, images_per_s: float) -> None:
        self.progress.update(self.task, completed=step, loss=loss, lr=lr, ips=images_per_s)

    def end_epoch(self, row: dict[str, Any]) -> None:
        self.progress.console.print(
            f"stage {row['stage']} epoch {row['epoch']}: loss {row['train_loss']:.4f} (CE {row['train_ce']:.4f}, "
            f"L_d {row['train_ld']:.4f})  val acc {_fmt(row['val_acc'])}  val AUC {_fmt(row['val_auc'])}  "
            f"{row['images_per_s']:.1f} img/s" + ("  [green]best[/green]" if row["best_epoch"] == row["epoch"] else "")
            + (f"  [yellow]skipped {row['skipped']} train / {row['val_skipped']} val samples[/yellow]"
               if row.get("skipped") or row.get("val_skipped") else ""))


def _print_ablations(value: bool) -> None:
    """--print-ablations: the named presets of Tables VI-X with their table and row, then exit."""
    if not value:
        return
    from hilif.train.ablations import listing

    t = Table(title="hilif-train --ablation NAME (one paper row per run; rows without L_d train stage 1 only)")
    for c in ("name", "paper table: row", "settings - what the row tests"):
        t.add_column(c, overflow="fold")
    for row in listing():
        t.add_row(*row)
    console.print(t)
    raise typer.Exit(0)


@train_app.command()
def train(
    shards: Path = typer.Option(..., "--shards", help="Shard folder written by `hilif-prep extract` (holds dataset.json)."),
    preset: str = typer.Option("paper", help="Model preset: paper (2x EfficientNet-b4, 224) | demo | tiny."),
    out: Path = typer.Option(Path("runs/hilif"), help="Run folder: checkpoints, metrics.jsonl, plots."),
    stage: str = typer.Option("both", help="1 | 2 | both. Stage 2 starts from OUT/stage1/best.pt."),
    stage1_epochs: Optional[int] = typer.Option(None, help="Stage-1 epochs, cross-entropy (paper: 20)."),
    stage2_epochs: Optional[int] = typer.Option(None, help="Stage-2 epochs, CE + lambda_d * L_d (paper: 20)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch, split over ranks, half real, half fake (paper: 12)."),
    lr: Optional[float] = typer.Option(None, help="AdamW learning rate at the start of each stage (paper: 2e-4)."),
    weight_decay: float = typer.Option(1e-2, help="AdamW weight decay."),
    stage2_lr: Optional[float] = typer.Option(None, help="Stage-2 lr (default: the preset's; paper: the same as --lr, as in the paper; demo: 1e-4)."),
    lr_schedule: str = typer.Option("cosine", help="Per stage, per step: cosine (to --min-lr) | linear | constant."),
    min_lr: float = typer.Option(1e-5, help="Final lr of the cosine / linear schedule."),
    warmup_steps: int = typer.Option(0, help="Linear warm-up steps at the start of each stage."),
    lambda_d: float = typer.Option(0.5, help="Weight of the local relationship constraint loss (stage 2)."),
    lrc_k: Optional[int] = typer.Option(None, "--lrc-k", help="Block size K of L_d (preset: 5)."),
    lrc_s: Optional[int] = typer.Option(None, "--lrc-s", help="Block stride S of L_d (preset: 2)."),
    lrc_n: Optional[int] = typer.Option(None, "--lrc-n", help="Top-N blocks of L_d (preset: 8)."),
    ablation: Optional[str] = typer.Option(
        None, help="A named row of Tables VI-X (e.g. eff+dftm, ld-k3s3n1): sets the model switches and L_d; an "
                   "explicit option that contradicts it is an error. List: --print-ablations."),
    print_ablations: bool = typer.Option(False, "--print-ablations", is_eager=True, callback=_print_ablations,
                                         help="List the --ablation presets with their table and row, and exit."),
    train_methods: Optional[list[str]] = typer.Option(None, "--train-methods",
                                                      help="Fake methods to train on (repeat; default all): Table II. "
                                                           "'none': no dataset fakes (reals only; needs --synth-fakes sbi)."),
    augment: Optional[str] = typer.Option(
        None, help="paper (random crop + flip, the paper's) | colour (+ photometric jitter). Default: the preset's."),
    synth_fakes: str = typer.Option("none", "--synth-fakes",
                                    help="none | sbi: self-blended fakes made from the train reals in the loader."),
    synth_ratio: float = typer.Option(0.5, "--synth-ratio", help="Share (0, 1] of the fake slots filled with SBI "
                                                                 "(all of them with --train-methods none)."),
    sbi_blend_ratios: str = typer.Option("0.25,0.5,0.75,1,1,1", "--sbi-blend-ratios",
                                         help="SBI blend ratios, one drawn per fake (the SBI paper's set)."),
    sbi_mask_blur: str = typer.Option("5,25", "--sbi-mask-blur",
                                      help="SBI mask blur: smallest,largest odd Gaussian kernel size (SBI code: 5,25)."),
    backbone_weights: Optional[Path] = typer.Option(None, help="Local ImageNet weights file for the backbones."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained",
                                              help="ImageNet backbones (default: the preset's choice)."),
    img_size: Optional[int] = typer.Option(None, help="Input size (default: the preset's)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    precision: str = typer.Option("auto", help="auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32."),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last",
                                       help="NHWC memory format (faster on CUDA and CPU)."),
    workers: Optional[int] = typer.Option(None, help="Data-loading processes per rank (paper preset: 4, demo: 1)."),
    threads: Optional[int] = typer.Option(None, help="CPU: torch threads (default: cores left after --workers)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT from its last checkpoint "
                                                        "(mid-epoch too). A torchrun restart resumes by itself."),
    save_every_steps: Optional[int] = typer.Option(
        None, help="Mid-epoch checkpoint (stageN/last.pt) every N steps; default: about every 30 minutes "
                   "(N from the measured step rate); 0: at epoch ends only."),
    sync_bn: Optional[bool] = typer.Option(None, "--sync-bn/--no-sync-bn",
                                           help="SyncBatchNorm across ranks (default: on with more than one CUDA "
                                                "rank; CUDA only)."),
    steps_per_epoch: Optional[int] = typer.Option(
        None, help="Epoch length in steps; 0 = from dataset.json (paper preset's default; demo: 40)."),
    val_max_batches: Optional[int] = typer.Option(None, help="Cap validation per epoch at N batches in all, both classes in proportion (default: whole split)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to OUT/tensorboard."),
    seed: int = typer.Option(0, help="Seed of weights, data order and augmentation."),
    device: str = typer.Option("auto", help="auto | cuda | cpu."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Two-stage HiLIF training: stage 1 CE, stage 2 CE + lambda_d * L_d from the best stage-1 epoch (val AUC).

    Options left out take the preset's recipe: --preset paper is the paper's (20 + 20 epochs, batch 12, lr 2e-4);
    --preset demo is the CPU quick start's (8 + 3 epochs of 40 steps, batch 32, lr 1e-3 then 1e-4 in stage 2,
    colour jitter, 1 loader worker)."""
    setup_logging(verbose)
    from hilif.train import distributed as dist_util
    from hilif.train.config import TrainConfig
    from hilif.train.trainer import Trainer

    try:
        blend_ratios = [float(v) for v in sbi_blend_ratios.split(",")]
        mask_blur = [int(v) for v in sbi_mask_blur.split(",")]
    except ValueError:
        raise fail(f"--sbi-blend-ratios {sbi_blend_ratios!r} / --sbi-mask-blur {sbi_mask_blur!r}: expected "
                   "comma-separated numbers, e.g. 0.25,0.5,0.75,1,1,1 and 5,25")
    if len(mask_blur) != 2:
        raise fail(f"--sbi-mask-blur {sbi_mask_blur!r}: expected two odd kernel sizes LO,HI, e.g. 5,25")
    try:
        cfg = TrainConfig(
            shards=str(shards), out=str(out), preset=preset, stage=stage, stage1_epochs=stage1_epochs,
            stage2_epochs=stage2_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, stage2_lr=stage2_lr,
            lr_schedule=lr_schedule, min_lr=min_lr, warmup_steps=warmup_steps, lambda_d=lambda_d, lrc_k=lrc_k,
            lrc_s=lrc_s, lrc_n=lrc_n, ablation=ablation, train_methods=list(train_methods or []), augment=augment,
            synth_fakes=synth_fakes, synth_ratio=synth_ratio, sbi_blend_ratios=blend_ratios, sbi_mask_blur=mask_blur,
            backbone_weights=str(backbone_weights) if backbone_weights else None, pretrained=pretrained,
            img_size=img_size, compile=compile, precision=precision, channels_last=channels_last, workers=workers, threads=threads, resume=resume,
            steps_per_epoch=steps_per_epoch, val_max_batches=val_max_batches, tensorboard=tensorboard, seed=seed,
            save_every_steps=save_every_steps, sync_bn=sync_bn,
            device=device)
    except ValueError as exc:
        raise fail(str(exc))
    try:
        trainer = Trainer(cfg)
        if dist_util.env_dist_info().is_master and sys.stderr.isatty():
            with RichReporter() as rep:
                trainer.reporter, trainer.step_log_level = rep, logging.DEBUG
                results = trainer.run()
        else:
            results = trainer.run()
    except _user_errors() as exc:
        raise fail(str(exc))
    finally:
        dist_util.cleanup()
    if dist_util.env_dist_info().is_master:
        for r in results:
            console.print(f"stage {r.stage}: best epoch {r.best_epoch} (val AUC {_fmt(r.best_auc)}) -> {r.best_path}")


# --------------------------------------------------------------------------- hilif-eval


def _metrics_table(title: str, rows: dict[str, dict[str, Any]]) -> Table:
    t = Table(title=title)
    cols = [("n", "n"), ("acc", "Acc@0.5"), ("auc", "AUC"), ("eer", "EER"), ("ap", "AP"),
            ("tpr_at_fpr_1e2", "TPR@1e-2"), ("tpr_at_fpr_1e3", "TPR@1e-3")]
    t.add_column("")
    for _, name in cols:
        t.add_column(name, justify="right")
    for label, m in rows.items():
        t.add_row(label, *[_fmt(m.get(k)) for k, _ in cols])
    return t


def print_report(report: dict[str, Any]) -> None:
    console.print(_metrics_table(f"{report['dataset']} {report['split']} - {report['checkpoint']}",
                                 {"frames": report["frame"], "videos (mean score)": report["video"]}))
    n = report.get("samples")
    if n:
        console.print(f"samples: {n['scored']} scored of {n['expected']} expected ({n['skipped']} unreadable skipped)")
        if n["warning"]:
            console.print(f"[bold red]WARNING: {n['warning']}[/bold red]")
    if report["methods"]:
        console.print(_metrics_table("per method (its fakes vs all reals)", report["methods"]))
    if report["perturbations"]:
        t = Table(title="perturbations (drop vs clean)")
        for c in ("perturbation", "level", "Acc", "dAcc", "AUC", "dAUC"):
            t.add_column(c, justify="right")
        for p in report["perturbations"]:
            t.add_row(p["name"], f"{p['level']:g}", _fmt(p["acc"]), _fmt(p["d_acc"]), _fmt(p["auc"]), _fmt(p["d_auc"]))
        console.print(t)
    for k in ("report_json", "roc_png"):
        if k in report:
            console.print(f"{k.replace('_', ' ')}: {report[k]}")
    for p in report.get("gradcam", []):
        console.print(f"grad-cam: {p}")


def _parse_levels(specs: list[str]) -> dict[str, tuple[float, ...]]:
    """['jpeg=90,50', 'gaussian_noise=10'] -> {'jpeg': (90, 50), 'gaussian_noise': (10,)}."""
    out = {}
    for s in specs:
        name, _, vals = s.partition("=")
        try:
            out[name.strip()] = tuple(float(v) for v in vals.split(",") if v.strip())
        except ValueError:
            raise fail(f"--perturb-level {s!r}: expected NAME=V1,V2 (e.g. jpeg=90,50)")
        if not out[name.strip()]:
            raise fail(f"--perturb-level {s!r}: expected NAME=V1,V2 (e.g. jpeg=90,50)")
    return out


@eval_app.callback()
def evaluate(
    ctx: typer.Context,
    checkpoint: Optional[Path] = typer.Option(None, help="A checkpoint written by hilif-train (e.g. RUN/stage2/best.pt)."),
    shards: Optional[Path] = typer.Option(None, help="Shard folder of any dataset (cross-dataset: Table III)."),
    split: str = typer.Option("test", help="train | val | test."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: next to the checkpoint)."),
    perturb: Optional[list[str]] = typer.Option(
        None, help="Repeat: jpeg (100/85/70/55/40), gaussian_noise, salt_pepper, gaussian_blur, or all."),
    perturb_level: Optional[list[str]] = typer.Option(None, help="Override levels, e.g. gaussian_noise=5,10."),
    gradcam: int = typer.Option(0, help="Grad-CAM overlays of N faces (DFTM, RGB, noise stream) as PNG grids."),
    batch_size: int = typer.Option(64),
    workers: int = typer.Option(1, help="Data-loading processes."),
    max_batches: Optional[int] = typer.Option(None, help="Evaluate N batches in all, both classes in proportion (a quick look)."),
    device: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of tables."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Evaluate CHECKPOINT on a split of SHARDS: frame and video metrics, a per-method table, ROC PNG, JSON report."""
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(verbose)
    if checkpoint is None or shards is None:
        raise fail("hilif-eval needs --checkpoint CKPT and --shards DIR (or a command: info, detect)")
    from hilif.train import distributed as dist_util
    from hilif.train.evaluate import EvalOptions
    from hilif.train.evaluate import evaluate as run_eval

    opts = EvalOptions(checkpoint=str(checkpoint), shards=str(shards), split=split, out=str(out) if out else None,
                       perturb=list(perturb or []), perturb_levels=_parse_levels(list(perturb_level or [])),
                       gradcam=gradcam, batch_size=batch_size, workers=workers, device=device, max_batches=max_batches)
    try:
        report = run_eval(opts)
    except _user_errors() as exc:
        raise fail(str(exc))
    except ValueError as exc:  # unknown perturbation, bad split, empty split
        raise fail(str(exc))
    finally:
        dist_util.cleanup()
    if dist_util.env_dist_info().is_master:
        if as_json:
            typer.echo(json.dumps(report, indent=1, sort_keys=True))
        else:
            print_report(report)


@eval_app.command()
def table(
    runs: Path = typer.Option(..., help="Folder holding hilif-train run folders (config.json) and their eval reports."),
    table_names: Optional[list[str]] = typer.Option(None, "--table", help="I ... XII, repeat, or all (default)."),
    out: Optional[Path] = typer.Option(None, help="Where table-N.md / table-N.csv go (default: RUNS/tables)."),
    evaluate_missing: bool = typer.Option(False, "--evaluate", help="First evaluate every run's stage-1/2 best "
                                          "checkpoint on its own shards' test split where no report exists."),
    workers: int = typer.Option(1, help="Data-loading processes for --evaluate."),
    device: str = typer.Option("auto", help="Device for --evaluate."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """The paper's Tables I-XII from run folders: paper, ours, difference; missing rows with their commands."""
    setup_logging(verbose)
    from hilif.train import tables as tb

    names = [n.upper() for n in (table_names or ["all"])]
    names = list(tb.TABLES) if "ALL" in names else names
    bad = [n for n in names if n not in tb.TABLES]
    if bad:
        raise fail(f"--table {bad[0]}: choose one of {', '.join(tb.TABLES)} or all")
    try:
        if evaluate_missing:
            from hilif.train.evaluate import EvalOptions
            from hilif.train.evaluate import evaluate as run_eval

            for run, stage, shards, perturb in tb.missing_evaluations(names, tb.load_runs(runs)):
                console.print(f"evaluating {run.path}/stage{stage}/best.pt on {shards} (test)")
                run_eval(EvalOptions(checkpoint=str(run.path / f"stage{stage}" / "best.pt"), shards=shards,
                                     split="test", perturb=perturb, workers=workers, device=device))
        done = tb.write_tables(names, runs, out or runs / "tables")
    except _user_errors() as exc:
        raise fail(str(exc))
    except ValueError as exc:  # TableError: unreadable run folder, a run that contradicts the row it claims
        raise fail(str(exc))
    for md in done.values():
        typer.echo(md)
    typer.echo(f"written: {out or runs / 'tables'}/table-<N>.md and .csv")


@eval_app.command()
def info(
    preset: str = typer.Option("paper", help="Model preset: paper | demo | tiny."),
    checkpoint: Optional[Path] = typer.Option(None, help="Take the model config from this checkpoint instead."),
    img_size: Optional[int] = typer.Option(None, help="Input size (default: the config's)."),
    batch: int = typer.Option(1, help="Batch size for the FLOP count."),
) -> None:
    """Parameters and FLOPs per module (torch.utils.flop_counter), for a preset or a checkpoint's config."""
    import dataclasses

    from hilif.model import HiLIFConfig
    from hilif.model.profile import profile_model

    try:
        if checkpoint is not None:
            from hilif.train.checkpoint import load_checkpoint

            cfg = HiLIFConfig.from_dict(load_checkpoint(checkpoint)["model_config"])
        else:
            cfg = HiLIFConfig.preset(preset)
        cfg = dataclasses.replace(cfg, pretrained=False, backbone_weights=None)  # counting needs no weights
        size = img_size or cfg.img_size
        prof = profile_model(cfg, size, batch=batch)
    except _user_errors() as exc:
        raise fail(str(exc))
    except ValueError as exc:  # unknown preset, input size the model cannot take
        raise fail(str(exc))
    t = Table(title=f"HiLIF {cfg.backbone} at {size}x{size}, batch {batch}")
    for c in ("module", "params", "trainable", "GFLOPs"):
        t.add_column(c, justify="right" if c != "module" else "left")
    for r in prof.rows:
        t.add_row(str(r.name), f"{r.params / 1e6:.3f}M", f"{r.trainable_params / 1e6:.3f}M", f"{r.flops / 1e9:.3f}")
    t.add_row("[bold]total", f"[bold]{prof.total_params / 1e6:.3f}M", "", f"[bold]{prof.total_flops / 1e9:.3f}")
    console.print(t)
    console.print(f"MACs: {prof.macs / 1e9:.3f} G (FLOPs / 2, torch.utils.flop_counter); at inference (without "
                  f"the stage-2 lrc projections) {prof.inference_flops / 2e9:.3f} GMACs")


@eval_app.command()
def detect(
    paths: list[Path] = typer.Argument(..., help="Videos, images, or folders of them (searched recursively)."),
    checkpoint: Path = typer.Option(..., help="A checkpoint written by hilif-train."),
    frames: int = typer.Option(32, help="Frames sampled uniformly from each video."),
    threshold: float = typer.Option(0.5, help="A track is 'fake' at mean p(fake) >= this: the model's calibration, "
                                              "not a legal finding."),
    out: Optional[Path] = typer.Option(None, help="Folder for results.jsonl and the pictures (one subfolder per file)."),
    explain: bool = typer.Option(False, "--explain", help="Grad-CAM overlays of the faces (with --out)."),
    video_out: bool = typer.Option(False, "--video-out", help="An annotated MP4 of the sampled frames (with --out)."),
    detector: Optional[str] = typer.Option(None, help="dlib | insightface (default: as the checkpoint's training shards)."),
    upsample: Optional[str] = typer.Option(None, help="dlib upsample: auto or N (default: as the training shards)."),
    margin: Optional[float] = typer.Option(None, help="Face crop margin (default: as the training shards)."),
    model_dir: Optional[str] = typer.Option(None, help="insightface model folder (default: the shards' or buffalo_l)."),
    min_face: Optional[float] = typer.Option(None, help="Faces narrower than this (px) are listed as too small and "
                                                        "not scored (default: the detector's reliable minimum)."),
    batch_size: int = typer.Option(32, help="Faces per forward pass."),
    device: str = typer.Option("auto"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT/results.jsonl."),
    as_json: bool = typer.Option(False, "--json", help="Print each file's record as a JSON line (docs/evaluation.md)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Every face of each video or image: tracks per person, p(fake) per track, pictures with --out."""
    setup_logging(verbose)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hilif.pipeline.detectors import DetectorError
    from hilif.train import scan as det

    if upsample is not None and upsample != "auto":
        if not upsample.isdigit():
            raise fail(f"--upsample {upsample!r}: use auto or a whole number >= 0")
    opts = det.DetectOptions(
        checkpoint=str(checkpoint), frames=frames, threshold=threshold, out=str(out) if out else None,
        explain=explain, video_out=video_out, device=device, batch_size=batch_size, min_face=min_face,
        overwrite=overwrite, detector=detector, upsample=int(upsample) if upsample and upsample.isdigit() else upsample,
        margin=margin, model_dir=model_dir)
    records: list[dict[str, Any]] = []
    progress = Progress(TextColumn("[bold]detect"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                        TimeElapsedColumn(), console=Console(stderr=True), transient=as_json)
    task = progress.add_task("", total=None)
    try:
        with progress:
            results = det.run(paths, opts, on_start=lambda files: progress.update(task, total=len(files)))
            for res in results:
                records.append(res.rec)
                progress.update(task, advance=1, description=res.file.path.name)
                if as_json:
                    typer.echo(json.dumps(res.rec, sort_keys=True))
    except (*_user_errors(), ValueError, DetectorError) as exc:  # bad options or --out, a detector that cannot start
        raise fail(str(exc))
    if not as_json:
        print_detect_summary(records, threshold)
    if any(r["status"] == det.ERROR for r in records):
        raise typer.Exit(1)


def print_detect_summary(records: list[dict[str, Any]], threshold: float) -> None:
    """One row per track (or per file without one), then the counts."""
    t = Table(title=f"hilif-eval detect (threshold {threshold:.2f})")
    for c in ("file", "kind", "status", "track", "shot", "frames", "too small", "mean p(fake)", "max p(fake)", "verdict"):
        t.add_column(c, justify="left" if c in ("file", "kind", "status", "verdict") else "right")
    for r in records:
        name = Path(r["path"]).name
        if not r["tracks"]:
            t.add_row(name, r["kind"], r["status"], "", "", "", "", "", "", r["error"] or "no face")
        for k in r["tracks"]:
            verdict = {"fake": "[bold red]FAKE", "real": "[green]real", None: "[yellow]too small"}[k["verdict"]]
            t.add_row(name, r["kind"], r["status"], f"#{k['id']}", str(k["shot"]), str(k["frames_scored"]),
                      str(k["frames_too_small"]), _fmt(k["mean_fake_prob"], 3), _fmt(k["max_fake_prob"], 3), verdict)
            name = ""
    console.print(t)
    n = {s: sum(r["status"] == s for r in records) for s in ("ok", "noface", "error", "skipped")}
    fakes = sum(r["verdict"] == "fake" for r in records)
    console.print(f"{len(records)} file(s): {n['ok']} with faces ({fakes} with a fake track), {n['noface']} without a "
                  f"face, {n['error']} unreadable, {n['skipped']} skipped (unknown type)")


def train_main() -> None:
    train_app(prog_name="hilif-train")


def eval_main() -> None:
    eval_app(prog_name="hilif-eval")

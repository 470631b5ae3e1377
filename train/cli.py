"""`hilif-train` and `hilif-eval`: the command lines over hilif.train (thin: parsing, progress, tables, exit codes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from hilif.common.cli import VERBOSE, Options, config_options, fail, run_app, setup_logging
from hilif.common.jsonable import finite_or_none
from hilif.train.config import DetectOptions, EvalOptions, InfoOptions, TableOptions, TrainConfig, kept_epoch_word

if TYPE_CHECKING:
    from hilif.train.evaluate import EvalReport

train_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Train HiLIF from shards (two-stage schedule)."
)
eval_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    invoke_without_command=True,
    help="Evaluate a HiLIF checkpoint (default command); `info`: parameters and FLOPs; "
    "`detect`: fake probability of a video or image; `table`: the paper's tables from runs.",
)
console = Console(stderr=False)


def _user_errors() -> tuple[type[BaseException], ...]:
    from hilif.model import BackboneWeightsError
    from hilif.pipeline.schema import SchemaError
    from hilif.train.checkpoint import CheckpointError
    from hilif.train.data import DataError
    from hilif.train.trainer import TrainError

    return (SchemaError, CheckpointError, DataError, TrainError, BackboneWeightsError, FileNotFoundError)


def _fmt(v: Any, digits: int = 4) -> str:
    if finite_or_none(v) is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------- hilif-train


class RichReporter:
    """The training progress bar: stage, epoch, step, loss, lr, images/s, the epoch's time left and the whole
    run's (rank 0 only)."""

    def __init__(self, select: str = "val") -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[ips]:.1f} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("run {task.fields[run_left]}"),
            console=Console(stderr=True),
        )
        self.task: Any = None
        self.run_left = "-"  # until the trainer has measured a step rate
        self.kept = kept_epoch_word(select)  # marks the epoch stageN/best.pt holds

    def __enter__(self) -> "RichReporter":
        return self  # the bar starts with the first epoch, after the run's set-up has logged

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def start_epoch(self, stage: int, epoch: int, epochs: int, steps: int) -> None:
        self.progress.start()  # a no-op once started
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            f"stage {stage} epoch {epoch}/{epochs}",
            total=steps,
            loss=float("nan"),
            lr=0.0,
            ips=0.0,
            run_left=self.run_left,
        )

    def step(self, stage: int, epoch: int, step: int, loss: float, lr: float, images_per_s: float) -> None:
        self.progress.update(self.task, completed=step, loss=loss, lr=lr, ips=images_per_s, run_left=self.run_left)

    def remaining(self, seconds: float) -> None:
        from hilif.train.trainer import format_duration

        self.run_left = f"~{format_duration(seconds)} left"

    def end_epoch(self, row: dict[str, Any]) -> None:
        self.progress.console.print(
            f"stage {row['stage']} epoch {row['epoch']}: loss {row['train_loss']:.4f} (CE {row['train_ce']:.4f}, "
            f"L_d {row['train_ld']:.4f})  val acc {_fmt(row['val_acc'])}  val AUC {_fmt(row['val_auc'])}  "
            f"{row['images_per_s']:.1f} img/s"
            + (f"  [green]{self.kept}[/green]" if row["best_epoch"] == row["epoch"] else "")
            + (
                f"  [yellow]skipped {row['skipped']} train / {row['val_skipped']} val samples[/yellow]"
                if row.get("skipped") or row.get("val_skipped")
                else ""
            )
        )


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
@config_options(TrainConfig)
def train(
    options: Options[TrainConfig],
    print_ablations: bool = typer.Option(
        False,
        "--print-ablations",
        is_eager=True,
        callback=_print_ablations,
        help="List the --ablation presets with their table and row, and exit.",
    ),
    verbose: bool = VERBOSE,
) -> None:
    """Two-stage HiLIF training: stage 1 CE, stage 2 CE + lambda_d * L_d from the kept stage-1 epoch (--select).

    Options left out take the preset's recipe: --preset paper is the paper's (20 + 20 epochs, batch 12, lr 2e-4,
    best epochs by val AUC); --preset demo is the CPU quick start's (14 + 2 epochs of 40 steps, batch 32, lr 1e-3
    then 1e-4 in stage 2, each stage's lr warmed up over its first epoch, weight decay 0.05, strong augmentation,
    self-blended fakes in half the fake slots (half of them without a frequency change), faces loaded in the main
    process, last epochs kept; on reals only, with --train-methods none, 24 + 3 epochs)."""
    setup_logging(verbose)
    from hilif.train import distributed as dist_util
    from hilif.train.trainer import train as run_training

    cfg = options.build()
    master = dist_util.env_dist_info().is_master
    try:
        if master and sys.stderr.isatty():
            with RichReporter(cfg.select) as rep:
                results = run_training(cfg, rep)
        else:
            results = run_training(cfg)
    except _user_errors() as exc:
        raise fail(str(exc))
    if master:
        for r in results:
            kept = kept_epoch_word(cfg.select)
            console.print(f"stage {r.stage}: {kept} epoch {r.best_epoch} (val AUC {_fmt(r.best_auc)}) -> {r.best_path}")


# --------------------------------------------------------------------------- hilif-eval


def _metrics_table(title: str, rows: dict[str, dict[str, Any]]) -> Table:
    t = Table(title=title)
    cols = [
        ("n", "n"),
        ("acc", "Acc@0.5"),
        ("auc", "AUC"),
        ("eer", "EER"),
        ("ap", "AP"),
        ("tpr_at_fpr_1e2", "TPR@1e-2"),
        ("tpr_at_fpr_1e3", "TPR@1e-3"),
    ]
    t.add_column("")
    for _, name in cols:
        t.add_column(name, justify="right")
    for label, m in rows.items():
        t.add_row(label, *[_fmt(m.get(k)) for k, _ in cols])
    return t


def print_report(report: EvalReport) -> None:
    console.print(
        _metrics_table(
            f"{report.dataset} {report.split} - {report.checkpoint}",
            {"frames": report.frame.to_dict(), "videos (mean score)": report.video.to_dict()},
        )
    )
    n = report.samples
    if n:
        console.print(f"samples: {n['scored']} scored of {n['expected']} expected ({n['skipped']} unreadable skipped)")
        if n["warning"]:
            console.print(f"[bold red]WARNING: {n['warning']}[/bold red]")
    if report.methods:
        console.print(
            _metrics_table("per method (its fakes vs all reals)", {m: v.to_dict() for m, v in report.methods.items()})
        )
    if report.perturbations:
        t = Table(title="perturbations (drop vs clean)")
        for c in ("perturbation", "level", "Acc", "dAcc", "AUC", "dAUC"):
            t.add_column(c, justify="right")
        for p in report.perturbations:
            t.add_row(p.name, f"{p.level:g}", _fmt(p.acc), _fmt(p.d_acc), _fmt(p.auc), _fmt(p.d_auc))
        console.print(t)
    for k in ("report_json", "roc_png", "scores_csv"):
        if getattr(report, k) is not None:
            console.print(f"{k.replace('_', ' ')}: {getattr(report, k)}")
    for p in report.gradcam or []:
        console.print(f"grad-cam: {p}")


@eval_app.callback()
@config_options(EvalOptions)
def evaluate(
    options: Options[EvalOptions],
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of tables."),
    verbose: bool = VERBOSE,
) -> None:
    """Evaluate CHECKPOINT on a split of SHARDS: frame and video metrics, a per-method table, ROC PNG, JSON report."""
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(verbose)
    if options["checkpoint"] is None or options["shards"] is None:
        raise fail("hilif-eval needs --checkpoint CKPT and --shards DIR (or a command: info, detect)")
    from hilif.train import distributed as dist_util
    from hilif.train.evaluate import evaluate as run_eval

    opts = options.build()
    try:
        report = run_eval(opts)
    except (*_user_errors(), ValueError) as exc:  # ValueError: unknown perturbation, bad split, empty split
        raise fail(str(exc))
    finally:
        dist_util.cleanup()
    if dist_util.env_dist_info().is_master:
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=1, sort_keys=True))
        else:
            print_report(report)


@eval_app.command()
@config_options(TableOptions)
def table(options: Options[TableOptions], verbose: bool = VERBOSE) -> None:
    """The paper's Tables I-XII from run folders: paper, ours, difference; missing rows with their commands."""
    setup_logging(verbose)
    from hilif.train import tables as tb

    opts = options.build()
    runs = Path(opts.runs)
    out = Path(opts.out) if opts.out else runs / "tables"
    names = [n.upper() for n in (opts.table_names or ["all"])]
    names = list(tb.TABLES) if "ALL" in names else names
    bad = [n for n in names if n not in tb.TABLES]
    if bad:
        raise fail(f"--table {bad[0]}: choose one of {', '.join(tb.TABLES)} or all")
    try:
        if opts.evaluate_missing:
            from hilif.train.evaluate import evaluate as run_eval

            for run, stage, shards, perturb in tb.missing_evaluations(names, tb.load_runs(runs)):
                console.print(f"evaluating {run.path}/stage{stage}/best.pt on {shards} (test)")
                run_eval(
                    EvalOptions(
                        checkpoint=str(run.path / f"stage{stage}" / "best.pt"),
                        shards=shards,
                        split="test",
                        perturb=perturb,
                        workers=opts.workers,
                        device=opts.device,
                    )
                )
        done = tb.write_tables(names, runs, out)
    except _user_errors() as exc:
        raise fail(str(exc))
    except ValueError as exc:  # TableError: unreadable run folder, a run that contradicts the row it claims
        raise fail(str(exc))
    for md in done.values():
        typer.echo(md)
    typer.echo(f"written: {out}/table-<N>.md and .csv")


@eval_app.command()
@config_options(InfoOptions)
def info(options: Options[InfoOptions]) -> None:
    """Parameters and FLOPs per module (torch.utils.flop_counter), for a preset or a checkpoint's config."""
    import dataclasses

    from hilif.model import HiLIFConfig
    from hilif.model.profile import profile_model

    opts = options.build()
    batch = opts.batch
    try:
        if opts.checkpoint is not None:
            from hilif.train.checkpoint import load_checkpoint

            cfg = HiLIFConfig.from_dict(load_checkpoint(Path(opts.checkpoint))["model_config"])
        else:
            cfg = HiLIFConfig.preset(opts.preset)
        cfg = dataclasses.replace(cfg, pretrained=False, backbone_weights=None)  # counting needs no weights
        size = opts.img_size or cfg.img_size
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
    console.print(
        f"MACs: {prof.macs / 1e9:.3f} G (FLOPs / 2, torch.utils.flop_counter); at inference (without "
        f"the stage-2 lrc projections) {prof.inference_flops / 2e9:.3f} GMACs"
    )


@eval_app.command()
@config_options(DetectOptions)
def detect(
    options: Options[DetectOptions],
    paths: list[Path] = typer.Argument(..., help="Videos, images, or folders of them (searched recursively)."),
    as_json: bool = typer.Option(False, "--json", help="Print each file's record as a JSON line (docs/evaluation.md)."),
    verbose: bool = VERBOSE,
) -> None:
    """Every face of each video or image: tracks per person, p(fake) per track, pictures with --out."""
    setup_logging(verbose)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hilif.pipeline.detectors import DetectorError
    from hilif.train import scan as det

    opts = options.build()
    records: list[dict[str, Any]] = []
    progress = Progress(
        TextColumn("[bold]detect"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=as_json,
    )
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
        print_detect_summary(records, opts.threshold)
    if any(r["status"] == det.ERROR for r in records):
        raise typer.Exit(1)


def print_detect_summary(records: list[dict[str, Any]], threshold: float) -> None:
    """One row per track (or per file without one), then the counts."""
    t = Table(title=f"hilif-eval detect (threshold {threshold:.2f})")
    for c in (
        "file",
        "kind",
        "status",
        "track",
        "shot",
        "frames",
        "too small",
        "mean p(fake)",
        "max p(fake)",
        "verdict",
    ):
        t.add_column(c, justify="left" if c in ("file", "kind", "status", "verdict") else "right")
    for r in records:
        name = Path(r["path"]).name
        if not r["tracks"]:
            t.add_row(name, r["kind"], r["status"], "", "", "", "", "", "", r["error"] or "no face")
        for k in r["tracks"]:
            verdict = {"fake": "[bold red]FAKE", "real": "[green]real", None: "[yellow]too small"}[k["verdict"]]
            t.add_row(
                name,
                r["kind"],
                r["status"],
                f"#{k['id']}",
                str(k["shot"]),
                str(k["frames_scored"]),
                str(k["frames_too_small"]),
                _fmt(k["mean_fake_prob"], 3),
                _fmt(k["max_fake_prob"], 3),
                verdict,
            )
            name = ""
    console.print(t)
    n = {s: sum(r["status"] == s for r in records) for s in ("ok", "noface", "error", "skipped")}
    fakes = sum(r["verdict"] == "fake" for r in records)
    console.print(
        f"{len(records)} file(s): {n['ok']} with faces ({fakes} with a fake track), {n['noface']} without a "
        f"face, {n['error']} unreadable, {n['skipped']} skipped (unknown type)"
    )


def train_main() -> None:
    run_app(train_app, "hilif-train")


def eval_main() -> None:
    run_app(eval_app, "hilif-eval")

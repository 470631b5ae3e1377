"""`hilif-prep`: the command line over hilif.pipeline (thin: parsing, progress, exit codes)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from hilif.common.cli import VERBOSE, Options, config_options, fail, run_app, setup_logging

from .demo import DemoConfig
from .extract import ExtractConfig
from .inspect import InspectOptions

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="HiLIF preprocessing: datasets -> aligned faces -> WebDataset shards.",
)

#: Environment variable naming the folder that holds the datasets: --root defaults to $HILIF_DATA/<dataset>.
DATA_ENV = "HILIF_DATA"


# --------------------------------------------------------------------------- extract / inspect


def default_root(dataset: str) -> Path:
    """Where ``--root`` defaults to: ``$HILIF_DATA/<dataset>`` if HILIF_DATA is set, else ``data/<dataset>`` (in the
    working folder). A known dataset that is not there: one-line error naming the folder and --root, exit 2."""
    from .datasets import DATASETS

    base = os.environ.get(DATA_ENV)
    root = Path(base) / dataset if base else Path("data") / dataset
    if dataset in DATASETS and not root.exists():
        looked = f"${DATA_ENV}/{dataset} ({root})" if base else f"{root} ({DATA_ENV} is not set)"
        raise fail(
            f"--dataset {dataset}: no --root given and the default {looked} does not exist; pass --root with "
            f"the {dataset} download" + (" (its CSV path,label,split)" if dataset == "folder" else "")
        )
    return root


@app.command()
@config_options(ExtractConfig)
def extract(options: Options[ExtractConfig], verbose: bool = VERBOSE) -> None:
    """Extract aligned faces from a dataset into WebDataset shards (resumable)."""
    from rich.console import Console

    from . import extract as extraction
    from .datasets import LayoutError
    from .detectors import DetectorError
    from .report import ExtractProgress, summary_table

    setup_logging(verbose, stderr=False)
    root = options["root"] or default_root(options["dataset"])
    cfg = options.build(root=str(root), command=" ".join(["hilif-prep"] + sys.argv[1:]))
    console = Console(stderr=True)
    try:
        with ExtractProgress(console) as prog:
            result = extraction.run_extract(cfg, progress=prog)
    except (extraction.ExtractError, LayoutError, DetectorError) as exc:
        raise fail(str(exc)) from None
    console.print(summary_table(result.records))
    done = f"{result.units_done}/{result.units_total} shards complete"
    console.print(f"{result.out}: {done}; manifest {result.out / 'manifest.jsonl'}")
    failed = result.failed
    if failed:
        names = ", ".join(r["path"] for r in failed[:5]) + (" ..." if len(failed) > 5 else "")
        typer.echo(
            f"error: {len(failed)} video(s) failed ({names}); see status/reason in {result.out / 'manifest.jsonl'}",
            err=True,
        )
        raise typer.Exit(1)


@app.command("inspect")
@config_options(InspectOptions)
def inspect_cmd(
    options: Options[InspectOptions],
    folder: Path = typer.Argument(..., help="A folder written by extract, e.g. shards/ffpp_c40."),
) -> None:
    """Counts per split/label/method, sample checks, a contact sheet of random faces (and of SBI triplets)."""
    from rich.console import Console
    from rich.table import Table

    from .inspect import inspect_shards, sbi_sheet
    from .schema import SchemaError

    console = Console()
    opts = options.build()
    sheet = Path(opts.sheet) if opts.sheet else folder / "contact_sheet.png"
    try:
        rep = inspect_shards(folder, sheet, n_faces=opts.faces, check=opts.check, seed=opts.seed)
        sbi_made = None
        if opts.sbi and rep.shards:
            sbi_path = Path(opts.sbi_sheet) if opts.sbi_sheet else folder / "sbi_sheet.png"
            sbi_made = sbi_sheet(folder, sbi_path, opts.sbi, opts.seed)
    except SchemaError as exc:
        raise fail(str(exc)) from None
    if not rep.shards:
        raise fail(
            f"{folder}: no complete shards (<split>/<real|fake>/*.tar with .stats.json); run `hilif-prep extract` first"
        )
    t = Table(title=f"{folder}: {rep.shards} shards")
    for c in ("split", "label", "method", "samples"):
        t.add_column(c, justify="right" if c == "samples" else "left")
    for (split, label, method), n in sorted(rep.counts.items()):
        t.add_row(split, label, method, str(n))
    console.print(t)
    if rep.info is None:
        console.print("[yellow]no dataset.json: the extract run has not finished")
    if rep.incomplete:
        console.print(f"[yellow]{len(rep.incomplete)} unfinished shards (no stats JSON), ignored")
    console.print(f"checked {rep.checked} samples: {len(rep.problems)} problems")
    for p in rep.problems[:20]:
        console.print(f"  [red]{p}")
    if rep.sheet:
        console.print(f"contact sheet: {rep.sheet}")
    if sbi_made:
        console.print(f"SBI contact sheet ({sbi_made[1]} real / SBI / mask triplets): {sbi_made[0]}")
    if rep.problems:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- demo


@app.command("demo")
@config_options(DemoConfig)
def demo_cmd(options: Options[DemoConfig], verbose: bool = VERBOSE) -> None:
    """Make the embedded demo dataset: a small FaceForensics++ look-alike, offline (faces from installed packages,
    plus your own photos with --faces)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .demo import DemoError, make_demo, split_pairs
    from .demo.render import FaceSourceError

    setup_logging(verbose, stderr=False)
    cfg = options.build(qualities=tuple(dict.fromkeys(options["qualities"])))
    try:
        cfg.validate()
    except DemoError as exc:
        raise fail(str(exc)) from None
    pairs = sum(split_pairs(cfg.num_sources // 2).values())
    total = cfg.num_sources + 2 * pairs * len(cfg.methods)
    with Progress(TextColumn("demo"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("videos", total=total)
        try:
            res = make_demo(cfg, on_video=lambda _p: bar.advance(task))
        except (DemoError, FaceSourceError) as exc:
            raise fail(str(exc)) from None
    n = {s: len(p) for s, p in res.splits.items()}
    typer.echo(
        f"demo: {len(res.videos)} videos ({', '.join(cfg.qualities)}) in {res.out}; pairs train/val/test "
        f"{n['train']}/{n['val']}/{n['test']}; {res.seconds:.0f} s"
    )


def main() -> None:
    run_app(app, "hilif-prep")


if __name__ == "__main__":
    main()

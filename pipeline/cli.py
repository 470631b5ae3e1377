"""`hilif-prep`: the command line over hilif.pipeline (thin: parsing, progress, exit codes)."""

from __future__ import annotations

import logging
import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="HiLIF preprocessing: datasets -> aligned faces -> WebDataset shards.")


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print a one-line error and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False)], force=True)


# --------------------------------------------------------------------------- extract / inspect


def _parse_part(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise fail(f"--part {text!r}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise fail(f"--part {text}: need 0 <= I < N")
    return i, n


def _parse_frames(text: str | None) -> dict[str, int]:
    from .schema import SPLITS

    if not text:
        return {}
    try:
        if "=" not in text:
            return {s: int(text) for s in SPLITS}
        out = {}
        for kv in text.split(","):
            k, v = kv.split("=")
            out[k.strip()] = int(v)
        return out
    except ValueError:
        raise fail(f"--frames {text!r}: expected a number or split=N pairs, e.g. train=80,val=20,test=20") from None


def _parse_upsample(text: str) -> str | int:
    if text == "auto":
        return text
    try:
        k = int(text)
    except ValueError:
        k = -1
    if k < 0:
        raise fail(f"--upsample {text!r}: use auto or an integer >= 0")
    return k


@app.command()
def extract(
    dataset: str = typer.Option(..., "--dataset", "-d", help="ffpp, celebdf, dfdc, wilddeepfake, folder or demo"),
    root: str = typer.Option(..., "--root", "-r", help="the dataset as downloaded (folder: the CSV path,label,split)"),
    quality: str = typer.Option(None, "--quality", "-q", help="ffpp: raw|c23|c40 (default c23); demo: c23|c40"),
    methods: str = typer.Option(None, "--methods", help="ffpp: comma list (default Deepfakes,Face2Face,FaceSwap,NeuralTextures; FaceShifter on request)"),
    out: str = typer.Option(None, "--out", "-o", help="output folder (default shards/<dataset>_<quality>)"),
    frames: str = typer.Option(None, "--frames", help="frames per video: N, or split=N pairs (default train 80, val/test 20 for FF++, 32 for cross-dataset tests)"),
    detector: str = typer.Option("dlib", "--detector", help="dlib (offline) or insightface (SCRFD)"),
    device: str = typer.Option("auto", "--device", help="insightface: auto, cpu or cuda"),
    model_dir: str = typer.Option(None, "--model-dir", help="insightface model folder (default ~/.insightface/models/buffalo_l)"),
    det_batch: int = typer.Option(16, "--det-batch", help="insightface: frames per SCRFD run (models with a dynamic batch axis)"),
    margin: float = typer.Option(1.3, "--margin", help="crop size relative to the ArcFace template"),
    size: int = typer.Option(256, "--size", help="aligned face size in pixels"),
    upsample: str = typer.Option("auto", "--upsample", help="dlib: auto (only where a frame needs it) or a fixed upsample"),
    probe: int = typer.Option(4, "--probe", help="a sampled frame without the face: neighbouring frames tried before the nearest sampled one"),
    faces: str = typer.Option("subject", "--faces", help="subject: one face per frame, the subject of each shot; all: every tracked person as its own sample stream"),
    cut_threshold: float = typer.Option(0.35, "--cut-threshold", help="colour-histogram distance between consecutive sampled frames that starts a new shot (>= 1: no cut detection)"),
    image_format: str = typer.Option("png", "--image-format", help="png (lossless) or jpg"),
    videos_per_shard: int = typer.Option(None, "--videos-per-shard", help="videos per shard (default: about 3200 faces per shard)"),
    workers: int = typer.Option(1, "--workers", "-j", help="worker processes"),
    part: str = typer.Option("0/1", "--part", help="I/N: this job's share of the work units (Slurm array jobs)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="delete the output folder and start again"),
    decode_timeout: float = typer.Option(120.0, "--decode-timeout", help="seconds a video may take to decode"),
    video_timeout: float = typer.Option(900.0, "--video-timeout", help="seconds a video may take in all"),
    recycle: int = typer.Option(100, "--recycle", help="videos per worker process before it is replaced"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Extract aligned faces from a dataset into WebDataset shards (resumable)."""
    from rich.console import Console

    from .datasets import LayoutError
    from .detectors import DetectorError
    from .extract import ExtractConfig, ExtractError, run_extract
    from .faces import FaceConfig
    from .report import ExtractProgress, summary_table

    setup_logging(verbose)
    cfg = ExtractConfig(
        dataset=dataset, root=root, out=out, quality=quality,
        methods=[m.strip() for m in methods.split(",") if m.strip()] if methods else None,
        frames=_parse_frames(frames),
        face=FaceConfig(detector=detector, margin=margin, size=size, device=device, model_dir=model_dir,
                        upsample=_parse_upsample(upsample), probe=probe, det_batch=det_batch, faces=faces,
                        cut_threshold=cut_threshold),
        image_ext=image_format, videos_per_shard=videos_per_shard, workers=workers, part=_parse_part(part),
        overwrite=overwrite, decode_timeout=decode_timeout, video_timeout=video_timeout, recycle=recycle,
        command=" ".join(["hilif-prep"] + sys.argv[1:]))
    console = Console(stderr=True)
    try:
        with ExtractProgress(console) as prog:
            result = run_extract(cfg, progress=prog)
    except (ExtractError, LayoutError, DetectorError) as exc:
        raise fail(str(exc)) from None
    console.print(summary_table(result.records))
    done = f"{result.units_done}/{result.units_total} shards complete"
    console.print(f"{result.out}: {done}; manifest {result.out / 'manifest.jsonl'}")
    failed = result.failed
    if failed:
        names = ", ".join(r["path"] for r in failed[:5]) + (" ..." if len(failed) > 5 else "")
        typer.echo(f"error: {len(failed)} video(s) failed ({names}); see status/reason in {result.out / 'manifest.jsonl'}", err=True)
        raise typer.Exit(1)


@app.command("inspect")
def inspect_cmd(
    folder: str = typer.Argument(..., help="a folder written by extract, e.g. shards/ffpp_c40"),
    sheet: str = typer.Option(None, "--sheet", help="contact sheet PNG (default <folder>/contact_sheet.png)"),
    faces: int = typer.Option(48, "--faces", help="faces on the contact sheet"),
    check: int = typer.Option(200, "--check", help="samples to check in depth"),
    seed: int = typer.Option(0, "--seed"),
    sbi: int = typer.Option(0, "--sbi", help="also draw N (real, self-blended fake, mask) triplets from train reals"),
    sbi_sheet_path: str = typer.Option(None, "--sbi-sheet", help="SBI contact sheet PNG (default <folder>/sbi_sheet.png)"),
) -> None:
    """Counts per split/label/method, sample checks, a contact sheet of random faces (and of SBI triplets)."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from .inspect import inspect_shards, sbi_sheet
    from .schema import SchemaError

    console = Console()
    if sbi < 0:
        raise fail(f"--sbi {sbi}: give the number of triplets (>= 1), or 0 for none")
    try:
        rep = inspect_shards(folder, sheet or Path(folder) / "contact_sheet.png", n_faces=faces, check=check, seed=seed)
        sbi_made = sbi_sheet(folder, sbi_sheet_path or Path(folder) / "sbi_sheet.png", sbi, seed) if sbi and rep.shards else None
    except SchemaError as exc:
        raise fail(str(exc)) from None
    if not rep.shards:
        raise fail(f"{folder}: no complete shards (<split>/<real|fake>/*.tar with .stats.json); run `hilif-prep extract` first")
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
def demo_cmd(
    out: str = typer.Option(..., "--out", "-o", help="output folder (new or empty; an earlier demo with --overwrite)"),
    sources: int = typer.Option(16, "--sources", "-n", help="real (source) videos, even, >= 6; pairs = sources / 2"),
    seconds: float = typer.Option(3.4, "--seconds", "-s", help="length of each video"),
    seed: int = typer.Option(0, "--seed", help="same seed, same files", min=0),
    quality: list[str] = typer.Option(["c23", "c40"], "--quality", "-q", help="c23 (CRF 23), c40 (CRF 40) or raw (CRF 0); repeat for several"),
    fps: int = typer.Option(25, "--fps", min=1),
    width: int = typer.Option(384, "--width", help="frame width; multiples of 128 give byte-identical files per seed"),
    height: int = typer.Option(288, "--height"),
    workers: int = typer.Option(0, "--workers", help="encoding processes (0: one per core, at most 4)", min=0),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier demo in --out"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Make the embedded demo dataset: a small FaceForensics++ look-alike, offline (real faces shipped in installed packages)."""
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .demo import DemoConfig, DemoError, make_demo, split_pairs
    from .demo.render import FaceSourceError

    setup_logging(verbose)
    cfg = DemoConfig(out=Path(out), num_sources=sources, seconds=seconds, fps=fps, width=width, height=height,
                     qualities=tuple(dict.fromkeys(quality)), seed=seed, overwrite=overwrite, workers=workers)
    try:
        cfg.validate()
    except DemoError as exc:
        raise fail(str(exc)) from None
    pairs = sum(split_pairs(sources // 2).values())
    total = sources + 2 * pairs * len(cfg.methods)
    with Progress(TextColumn("demo"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("videos", total=total)
        try:
            res = make_demo(cfg, on_video=lambda _p: bar.advance(task))
        except (DemoError, FaceSourceError) as exc:
            raise fail(str(exc)) from None
    n = {s: len(p) for s, p in res.splits.items()}
    typer.echo(f"demo: {len(res.videos)} videos ({', '.join(cfg.qualities)}) in {res.out}; pairs train/val/test "
               f"{n['train']}/{n['val']}/{n['test']}; {res.seconds:.0f} s")


def main() -> None:
    try:  # typer >= 0.29 vendors click; older typer re-raises click's own exceptions
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        import click.exceptions as cx

    try:
        code = app(prog_name="hilif-prep", standalone_mode=False)
    except cx.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        code = 0
    except cx.UsageError as exc:  # bad arguments: one line, exit 2
        cmd = exc.ctx.command_path if exc.ctx else "hilif-prep"
        typer.echo(f"error: {exc.format_message()} (see `{cmd} --help`)".replace("\n", " "), err=True)
        code = 2
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

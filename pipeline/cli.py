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


def main() -> None:
    app(prog_name="hilif-prep")


if __name__ == "__main__":
    sys.exit(main())

"""`hilif-train` and `hilif-eval`: the command lines over hilif.train (thin)."""

from __future__ import annotations

import typer

train_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train HiLIF from shards (two-stage schedule).")
eval_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evaluate a HiLIF checkpoint; model info; detect on a video.")


def train_main() -> None:
    train_app(prog_name="hilif-train")


def eval_main() -> None:
    eval_app(prog_name="hilif-eval")

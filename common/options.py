"""Command-line options declared once, on the config dataclass fields they set.

A field made with :func:`option` carries its help text (and, where the command line differs from the field, its
flags, its command-line type and the parser from that type to the field's); :mod:`hilif.common.cli` builds the
typer options from it. A field made with :func:`nested` brings in the options of its own dataclass. Fields made
with plain ``field()`` or a bare default are not on the command line. This module imports no CLI library, so
library config modules can use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from typing import Any, Callable

#: The ``metadata`` key of a field's :class:`Cli` record.
CLI = "cli"
#: The ``metadata`` key that marks a field whose dataclass's own options are taken in.
NESTED = "cli_nested"


@dataclass(frozen=True)
class Cli:
    """How one dataclass field appears on a command line."""

    help: str
    #: option names; default ``--field-name`` (a bool: ``--name`` when off by default, else ``--name/--no-name``)
    flags: tuple[str, ...] = ()
    #: the type typer parses when it is not the field's own: ``Path`` for a path the config keeps as ``str``,
    #: ``str`` for a comma list, ``list[str]`` for a repeated option
    type: Any = None
    #: command-line value -> field value; its ValueError becomes a one-line usage error naming the option
    parse: Callable[[Any], Any] | None = None
    #: None: required on the command line exactly when the field has no default
    required: bool | None = None
    #: the smallest value typer accepts (numbers only)
    min: float | None = None
    #: the default as typed on the command line where ``parse`` cannot be inverted by joining with commas
    show: str | None = None


def option(
    help: str,
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | Any = MISSING,
    flags: tuple[str, ...] = (),
    type: Any = None,
    parse: Callable[[Any], Any] | None = None,
    required: bool | None = None,
    min: float | None = None,
    show: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line option (``factory``: its ``default_factory``)."""
    return dataclasses.field(
        default=default,
        default_factory=factory,
        metadata={CLI: Cli(help, tuple(flags), type, parse, required, min, show)},
    )


def nested(cls: type) -> Any:
    """A dataclass field holding another config dataclass whose options the command line shows alongside."""
    return dataclasses.field(default_factory=cls, metadata={NESTED: True})


def cli_fields(cls: type) -> list[tuple[type, dataclasses.Field, Cli]]:
    """(dataclass, field, its Cli) of every command-line option of ``cls``, nested configs' included, in field
    order."""
    out: list[tuple[type, dataclasses.Field, Cli]] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get(NESTED):
            out += cli_fields(f.default_factory)
        elif CLI in f.metadata:
            out.append((cls, f, f.metadata[CLI]))
    return out


def comma_numbers(kind: type, example: str, count: int | None = None) -> Callable[[str], list]:
    """A parser of ``"0.25,0.5,1"`` into ``[0.25, 0.5, 1.0]`` (``kind`` each; exactly ``count`` of them if set)."""

    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",")]
        except ValueError:
            raise ValueError(f"expected comma-separated numbers, e.g. {example}") from None
        if count is not None and len(values) != count:
            raise ValueError(f"expected {count} comma-separated numbers, e.g. {example}")
        return values

    return parse


def comma_text(values: Any) -> str:
    """``[0.25, 1.0]`` -> ``"0.25,1"``: a list default as the comma option shows it."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def comma_names(text: str) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def per_key(keys: tuple[str, ...], example: str) -> Callable[[str], dict[str, int]]:
    """A parser of ``"N"`` (N for every key) or ``"k=N,k2=M"`` into a dict of ints."""

    def parse(text: str) -> dict[str, int]:
        try:
            if "=" not in text:
                return {k: int(text) for k in keys}
            pairs = (kv.split("=") for kv in text.split(","))
            return {k.strip(): int(v) for k, v in pairs}
        except ValueError:
            raise ValueError(f"expected a number or key=N pairs, e.g. {example}") from None

    return parse


def part_of(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N): this job's share of a job array, 0 <= I < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError("expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError("need 0 <= I < N")
    return i, n


def auto_or_count(text: str) -> str | int:
    """``"auto"``, or a whole number >= 0."""
    if text == "auto":
        return text
    if not text.isdigit():
        raise ValueError("use auto or an integer >= 0")
    return int(text)

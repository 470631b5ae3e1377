"""What the three command lines (hilif-prep, hilif-train, hilif-eval) share: one-line usage errors with exit 2,
logging set-up, and typer options built from config dataclass fields (:mod:`hilif.common.options`)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

import typer

from hilif.common.options import CLI, NESTED, Cli, cli_fields, comma_text

T = TypeVar("T")

#: ``-v``: the same switch on every command.
VERBOSE = typer.Option(False, "--verbose", "-v", help="Log debug messages.")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def setup_logging(verbose: bool, stderr: bool = True) -> None:
    """Rich log lines at INFO (DEBUG with ``verbose``) on stderr, or on stdout where stderr is kept for errors."""
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False, console=Console(stderr=stderr))],
        force=True,
    )


def run_app(app: typer.Typer, prog_name: str) -> None:
    """Run a typer app as a console script: bad arguments give one ``error:`` line and exit 2, no arguments the
    help (exit 0), Ctrl-C exit 130."""
    try:  # typer >= 0.29 vendors click; older typer re-raises click's own exceptions
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        import click.exceptions as cx

    try:
        code = app(prog_name=prog_name, standalone_mode=False)
    except cx.NoArgsIsHelpError:  # typer has printed the help
        code = 0
    except cx.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else prog_name
        typer.echo(f"error: {exc.format_message()} (see `{cmd} --help`)".replace("\n", " "), err=True)
        code = 2
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


# --------------------------------------------------------------------------- options from dataclass fields


class Options(Generic[T]):
    """The command-line values of a config dataclass's options; :meth:`build` makes the config."""

    def __init__(self, cls: type[T], values: dict[str, Any]) -> None:
        self.cls, self.values = cls, values

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def build(self, **fixed: Any) -> T:
        """The config: each value parsed into its field's type, options left out at the field's default, ``fixed``
        set as given. A value that does not parse or a config that refuses it: one-line error, exit 2."""
        try:
            return _build(self.cls, self.values, fixed)
        except ValueError as exc:
            raise fail(str(exc)) from None


def _build(cls: type, values: dict[str, Any], fixed: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in fixed:
            kwargs[f.name] = fixed[f.name]
        elif f.metadata.get(NESTED):
            kwargs[f.name] = _build(f.default_factory, values, fixed)
        elif f.name in values:
            value = values[f.name]
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if has_default and (value is None or value == () or value == []):
                continue  # option left out (a repeated one given no value): the field's default
            kwargs[f.name] = _parse(f, f.metadata[CLI], _optional(hints[f.name]), value)
    return cls(**kwargs)


def _parse(f: dataclasses.Field, meta: Cli, field_type: Any, value: Any) -> Any:
    """A command-line value as its field's type: ``parse`` applied (to each value of a repeated option), paths as
    text (configs are JSON-ready), a repeated option's values as the field's list, tuple or dict (of pairs)."""
    repeated = isinstance(value, (list, tuple))
    items = list(value) if repeated else [value]
    if meta.parse is not None:
        parsed = []
        for v in items:
            try:
                parsed.append(meta.parse(v))
            except ValueError as exc:
                raise ValueError(f"{_option_name(f, meta)} {v!r}: {exc}") from None
        items = parsed
    if field_type is not Path:  # the config keeps paths as text (JSON-ready)
        items = [str(v) if isinstance(v, Path) else v for v in items]
    if not repeated:
        return items[0]
    container = typing.get_origin(field_type) or field_type
    return container(items) if container in (list, tuple, dict) else items


def _optional(tp: Any) -> Any:
    """``int | None`` -> int."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _flags(f: dataclasses.Field, meta: Cli, field_type: Any) -> tuple[str, ...]:
    if meta.flags:
        return meta.flags
    name = "--" + f.name.replace("_", "-")
    if field_type is bool and f.default is not False:
        return (f"{name}/--no-{name[2:]}",)
    return (name,)


def _option_name(f: dataclasses.Field, meta: Cli) -> str:
    return meta.flags[0].split("/")[0] if meta.flags else "--" + f.name.replace("_", "-")


def _default(f: dataclasses.Field, meta: Cli, cli_type: Any) -> Any:
    """The option's default as typer shows and passes it; ``...`` where the option is required."""
    has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    if meta.required if meta.required is not None else not has_default:
        return ...
    if not has_default:
        return None  # optional here, checked by the command (a group's option that its subcommands do not need)
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if meta.show is not None:
        return meta.show
    if value is None:
        return None
    if cli_type is str and isinstance(value, (list, tuple)):
        return comma_text(value)  # a comma option shows its list default as it would be typed
    if cli_type is Path and isinstance(value, str):
        return Path(value)
    if isinstance(value, (list, tuple, dict)):
        # a repeated option: typer shows a list default; an empty one is left out (the factory's)
        return list(value) if value and not isinstance(value, dict) else None
    return value


def _parameter(cls: type, f: dataclasses.Field, meta: Cli) -> inspect.Parameter:
    field_type = _optional(typing.get_type_hints(cls)[f.name])
    cli_type = meta.type or field_type
    default = _default(f, meta, cli_type)
    annotation = cli_type if default is ... else typing.Optional[cli_type]
    extra: dict[str, Any] = {"min": meta.min} if meta.min is not None else {}
    if cli_type is bool:  # an on/off flag takes no value: no metavar (typer shows "<bool>" for a tri-state one)
        extra["metavar"] = ""
    info = typer.Option(default, *_flags(f, meta, field_type), help=meta.help, **extra)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def config_options(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a typer command whose first parameter takes an :class:`Options` of ``cls``: the command gets one
    option per :func:`~hilif.common.options.option` field of ``cls`` (nested configs included), in field order,
    before its own parameters."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(fn).parameters.values())[1:]
        hints = typing.get_type_hints(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in own]
        fields = [_parameter(owner, f, meta) for owner, f, meta in cli_fields(cls)]
        names = [p.name for p in fields]
        clash = set(names) & {p.name for p in own}
        if clash or len(set(names)) != len(names):
            raise TypeError(f"{fn.__name__}: option names declared twice: {sorted(clash) or names}")

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            return fn(Options(cls, values), **kwargs)

        params = fields + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must read the signature above, not fn's
        return command

    return decorate

"""The command lines are built from the config dataclasses: one option per field (and one field per option, but
for the documented exceptions), the dataclass defaults, one-line usage errors, and hilif-prep's --root default."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from hilif.common.cli import Options, run_app
from hilif.common.options import CLI, NESTED
from hilif.pipeline import cli as prep_cli
from hilif.pipeline.datasets import DATASETS
from hilif.pipeline.demo import DemoConfig
from hilif.pipeline.extract import ExtractConfig
from hilif.pipeline.inspect import InspectOptions
from hilif.train.cli import eval_app, train_app
from hilif.train.config import DetectOptions, EvalOptions, InfoOptions, TableOptions, TrainConfig

runner = CliRunner()

#: command -> (its config, options of the command alone, config fields set only from Python)
COMMANDS = {
    "hilif-train": (TrainConfig, {"print_ablations", "verbose"}, {"shuffle_buffer", "val_batch_size", "log_every"}),
    "hilif-eval": (EvalOptions, {"as_json", "verbose"}, set()),
    "hilif-eval detect": (DetectOptions, {"paths", "as_json", "verbose"}, set()),
    "hilif-eval table": (TableOptions, {"verbose"}, set()),
    "hilif-eval info": (InfoOptions, set(), set()),
    "hilif-prep extract": (ExtractConfig, {"verbose"}, {"command", "track", "decode_backend", "full_every"}),
    "hilif-prep demo": (DemoConfig, {"verbose"}, {"methods"}),
    "hilif-prep inspect": (InspectOptions, {"folder"}, set()),
}


def _command(name: str):
    tool, _, sub = name.partition(" ")
    app = {"hilif-train": train_app, "hilif-eval": eval_app, "hilif-prep": prep_cli.app}[tool]
    cmd = typer.main.get_command(app)
    return cmd.commands[sub] if sub else cmd


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    """Every leaf field of ``cls``, nested configs' included (by name)."""
    out: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cls):
        out.update(_fields(f.default_factory) if f.metadata.get(NESTED) else {f.name: f})
    return out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_field_is_one_option_and_every_option_a_field(name: str) -> None:
    cls, own, python_only = COMMANDS[name]
    params = [p for p in _command(name).params if p.name != "help"]
    names = [p.name for p in params]
    assert len(names) == len(set(names))
    fields = _fields(cls)
    assert set(names) - own == set(fields) - python_only, name
    assert own <= set(names) and not (python_only & set(names))
    for f in fields.values():  # a field is on the command line exactly when it carries its help text
        assert (CLI in f.metadata) == (f.name not in python_only), f.name
    flags = [o for p in params for o in (*p.opts, *p.secondary_opts)]
    assert len(flags) == len(set(flags)), name  # no option name twice


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_a_help_sentence(name: str) -> None:
    for p in _command(name).params:
        assert p.help and p.help.endswith("."), (name, p.name, p.help)


REQUIRED = {
    "hilif-train": ["--shards", "s"],
    "hilif-eval": ["--checkpoint", "c", "--shards", "s"],
    "hilif-eval detect": ["--checkpoint", "c", "v.mp4"],
    "hilif-eval table": ["--runs", "r"],
    "hilif-eval info": [],
    "hilif-prep extract": ["--dataset", "ffpp", "--root", "r"],
    "hilif-prep demo": ["--out", "o"],
    "hilif-prep inspect": ["f"],
}
REQUIRED_VALUES = {
    "hilif-train": dict(shards="s"),
    "hilif-eval": dict(checkpoint="c", shards="s"),
    "hilif-eval detect": dict(checkpoint="c"),
    "hilif-eval table": dict(runs="r"),
    "hilif-eval info": {},
    "hilif-prep extract": dict(dataset="ffpp", root="r"),
    "hilif-prep demo": dict(out=Path("o")),
    "hilif-prep inspect": {},
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_options_left_out_give_the_dataclass_defaults(name: str) -> None:
    cls = COMMANDS[name][0]
    ctx = _command(name).make_context(name, list(REQUIRED[name]), resilient_parsing=True)
    values = {k: v for k, v in ctx.params.items() if k in _fields(cls)}
    assert Options(cls, values).build() == cls(**REQUIRED_VALUES[name])


def test_typed_values_reach_the_config() -> None:
    ctx = _command("hilif-train").make_context(
        "t",
        [
            "--shards",
            "s",
            "--sbi-mask-blur",
            "3,9",
            "--train-methods",
            "a",
            "--train-methods",
            "b",
            "--no-channels-last",
            "--out",
            "o",
        ],
    )
    cfg = Options(TrainConfig, {k: v for k, v in ctx.params.items() if k in _fields(TrainConfig)}).build()
    assert cfg.sbi_mask_blur == [3, 9] and cfg.train_methods == ["a", "b"] and not cfg.channels_last
    assert cfg.out == "o" and isinstance(cfg.out, str)  # paths are kept as text: config.json stays the same
    ctx = _command("hilif-eval").make_context(
        "e", ["--perturb-level", "jpeg=90,50", "--perturb", "jpeg"], resilient_parsing=True
    )
    opts = Options(EvalOptions, {k: v for k, v in ctx.params.items() if k in _fields(EvalOptions)}).build(
        checkpoint="c", shards="s"
    )
    assert opts.perturb_levels == {"jpeg": (90.0, 50.0)} and opts.perturb == ["jpeg"]


@pytest.mark.parametrize(
    "app, args, needle",
    [
        (train_app, ["--shards", "s", "--sbi-mask-blur", "5"], "--sbi-mask-blur '5'"),
        (train_app, ["--shards", "s", "--sbi-blend-ratios", "half"], "--sbi-blend-ratios 'half'"),
        (eval_app, ["--checkpoint", "c", "--shards", "s", "--perturb-level", "jpeg="], "--perturb-level 'jpeg='"),
        (eval_app, ["detect", "v.mp4", "--checkpoint", "c", "--upsample", "x"], "--upsample 'x'"),
        (prep_cli.app, ["extract", "-d", "demo", "-r", ".", "--part", "3/2"], "--part '3/2'"),
        (prep_cli.app, ["extract", "-d", "demo", "-r", ".", "--upsample", "x"], "--upsample 'x'"),
    ],
)
def test_a_value_that_does_not_parse_is_one_line_naming_the_option(app, args, needle) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and needle in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_usage_errors_are_one_line_exit_2(monkeypatch, capsys) -> None:
    for app, prog in ((train_app, "hilif-train"), (eval_app, "hilif-eval"), (prep_cli.app, "hilif-prep")):
        monkeypatch.setattr("sys.argv", [prog, "--bogus"])
        with pytest.raises(SystemExit) as e:
            run_app(app, prog)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "--bogus" in err[0], err


# --------------------------------------------------------------------------- hilif-prep extract --root


@pytest.fixture
def extract_cfg(monkeypatch) -> list:
    """run_extract replaced by one that records the config it gets and stops."""
    from hilif.pipeline import extract

    seen: list = []

    def fake(cfg, progress=None):
        seen.append(cfg)
        raise extract.ExtractError("stopped by the test")

    monkeypatch.setattr(extract, "run_extract", fake)
    return seen


@pytest.mark.parametrize("dataset", DATASETS)
def test_root_defaults_to_data_dataset(dataset: str, tmp_path: Path, monkeypatch, extract_cfg) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HILIF_DATA", raising=False)
    res = runner.invoke(prep_cli.app, ["extract", "--dataset", dataset])
    assert res.exit_code == 2 and not extract_cfg
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and f"data/{dataset}" in line and "--root" in line, line
    (tmp_path / "data" / dataset).mkdir(parents=True)
    res = runner.invoke(prep_cli.app, ["extract", "--dataset", dataset])
    assert "stopped by the test" in res.output and extract_cfg[-1].root == f"data/{dataset}"


@pytest.mark.parametrize("dataset", DATASETS)
def test_root_defaults_to_hilif_data(dataset: str, tmp_path: Path, monkeypatch, extract_cfg) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / dataset).mkdir(parents=True)  # not looked at when HILIF_DATA is set
    monkeypatch.setenv("HILIF_DATA", str(tmp_path / "store"))
    res = runner.invoke(prep_cli.app, ["extract", "--dataset", dataset])
    line = res.output.strip()
    assert res.exit_code == 2 and len(line.splitlines()) == 1 and not extract_cfg
    assert str(tmp_path / "store" / dataset) in line and "HILIF_DATA" in line and "--root" in line, line
    (tmp_path / "store" / dataset).mkdir(parents=True)
    runner.invoke(prep_cli.app, ["extract", "--dataset", dataset])
    assert extract_cfg[-1].root == str(tmp_path / "store" / dataset)
    runner.invoke(prep_cli.app, ["extract", "--dataset", dataset, "--root", "elsewhere"])  # --root wins
    assert extract_cfg[-1].root == "elsewhere"

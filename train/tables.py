"""`hilif-eval table`: the paper's Tables I-XII from run folders, with the paper's numbers beside ours.

A run folder is what hilif-train writes (``config.json`` with the train and model configs, ``stage1/``,
``stage2/``); its test-split eval reports are the ``report.json`` files hilif-eval wrote anywhere under it (the
default folder ``stageN/eval-<dataset>-<quality>-<split>``, an older ``eval-<dataset>-<split>``, or any ``--out``
inside the run). Every report names its checkpoint's stage and the data it measured.

Rows are matched by settings, not by name: a report belongs to a paper row when the run's model config is the
row's `hilif.train.ablations` preset applied to it, and the stage fits (rows without the constraint loss are the
best stage-1 model, rows with it the stage-2 model at the paper's lambda 0.5). So a full two-stage run fills both
"Eff + DFTM + DDAFM" (its stage-1 report) and "... + Constraint Loss" (its stage-2 report). A run that names an
``--ablation`` in its config but whose model does not fit that preset is an error.

Columns are matched by data: a column names the data trained on and tested on ("ffpp-c40", "fsh-c23" = FF++ with
FaceShifter fakes only, "celebdf", ...). When no run has a table's data at all (the demo), intra-dataset reports on
the runs' own data stand in for the paper's, and the table says so: its differences then compare different data.
Several runs of one row (seeds) give their mean, with the count and the range; reports of one checkpoint copied
into several run folders (a shared stage 1) count once.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from hilif.common.jsonable import finite_or_none
from hilif.train.ablations import PAPER_LAMBDA_D, Ablation, AblationError, get_ablation

log = logging.getLogger(__name__)

TABLES = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII")
REPORT_JSON = "report.json"
CONFIG_JSON = "config.json"
#: Fields of HiLIFConfig used only by the stage-2 constraint loss (free in rows without it).
LRC_FIELDS = ("lrc_k", "lrc_s", "lrc_n", "lrc_loss")


class TableError(ValueError):
    """A run folder that cannot be read or contradicts the row it claims; an unknown table."""


def paper_tables() -> dict[str, Any]:
    """The paper's numbers (train/paper_tables.json): {table: {title, columns, rows}}."""
    text = (resources.files("hilif.train") / "paper_tables.json").read_text()
    return json.loads(text)["tables"]


# --------------------------------------------------------------------------- data names


def data_key(dataset: str | None, quality: str | None, methods: Iterable[str] = ()) -> str | None:
    """The name of a dataset as the tables use it: "ffpp-c23", "fsh-c40" (FF++ reals with FaceShifter fakes only),
    "celebdf", "dfdc", "wilddeepfake" (one version each), else "<dataset>-<quality>" (e.g. "demo-c23")."""
    if not dataset:
        return None
    methods = set(methods)
    if dataset == "ffpp" and methods == {"FaceShifter"}:
        return f"fsh-{quality}"
    if dataset in ("celebdf", "dfdc", "wilddeepfake"):
        return dataset
    return f"{dataset}-{quality}" if quality else dataset


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TableError(f"{path}: cannot be read as JSON ({exc}); remove it or rerun the command that writes it")


def _shards_key(shards: str | None, methods: Iterable[str] = ()) -> str | None:
    """data_key of a shard folder from its dataset.json (None when the folder is not on this machine)."""
    if not shards:
        return None
    p = Path(shards) / "dataset.json"
    if not p.is_file():
        return None
    info = _read_json(p)
    methods = list(methods) or sorted({m for per in info.get("methods", {}).values() for m in per})
    return data_key(info.get("dataset"), info.get("quality"), methods)


# --------------------------------------------------------------------------- runs and reports


@dataclass
class Report:
    """One test-split eval report of one run's checkpoint."""

    path: Path
    stage: int
    test: str | None  # data_key of the evaluated shards
    body: dict[str, Any]


@dataclass
class Run:
    path: Path
    train: dict[str, Any]
    model: dict[str, Any]
    train_key: str | None  # data_key of the training shards (None: not on this machine)
    reports: list[Report] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.path)


def _report_stage(body: dict[str, Any], run: Path) -> int | None:
    if isinstance(body.get("stage"), int):
        return body["stage"]
    ck = Path(str(body.get("checkpoint", "")))
    for stage in (1, 2):
        if ck.parent.name == f"stage{stage}":
            return stage
    return None


def load_runs(root: str | Path) -> list[Run]:
    """Every run folder (a folder with config.json) at or under ``root``, with its test-split reports."""
    root = Path(root)
    if not root.is_dir():
        raise TableError(f"--runs {root}: not a folder; pass the folder that holds hilif-train run folders")
    configs = sorted(
        {p.parent for p in root.rglob(CONFIG_JSON)} | ({root} if (root / CONFIG_JSON).is_file() else set())
    )
    runs: list[Run] = []
    for folder in configs:
        cfg = _read_json(folder / CONFIG_JSON)
        if "train" not in cfg or "model" not in cfg:
            continue  # some other config.json
        train = cfg["train"]
        run = Run(folder, train, cfg["model"], _shards_key(train.get("shards"), train.get("train_methods") or ()))
        inner = [c for c in configs if c != folder and folder in c.parents]  # nested runs own their reports
        for rp in sorted(folder.rglob(REPORT_JSON)):
            if any(c in rp.parents for c in inner):
                continue
            body = _read_json(rp)
            if body.get("split", "test") != "test" or "frame" not in body:
                continue
            stage = _report_stage(body, folder)
            if stage is None:
                log.warning("%s: no stage recorded, skipped", rp)
                continue
            test = data_key(body.get("dataset"), body.get("quality"), body.get("methods", {}).keys())
            run.reports.append(Report(rp, stage, test, body))
        runs.append(run)
    return runs


# --------------------------------------------------------------------------- rows


def _model_diff(ab: Ablation, model: dict[str, Any], with_lrc: bool) -> list[str] | None:
    """Fields in which ``model`` differs from preset ``ab`` applied to it (None: not a model config we can read)."""
    from hilif.model import HiLIFConfig

    try:
        base = HiLIFConfig.from_dict(model)
        expected = dataclasses.replace(base, **ab.model_overrides(base)).to_dict()
    except (TypeError, ValueError):
        return None
    got = base.to_dict()
    return [k for k in expected if expected[k] != got[k] and (with_lrc or k not in LRC_FIELDS)]


def check_claim(run: Run) -> None:
    """A run whose config names an --ablation must be that preset's model (one-line TableError otherwise)."""
    name = run.train.get("ablation")
    if not name:
        return
    try:
        ab = get_ablation(name)
    except AblationError as exc:
        raise TableError(f"{run.path / CONFIG_JSON}: {exc}") from exc
    diff = _model_diff(ab, run.model, with_lrc=ab.constraint_loss)
    if diff is None:
        raise TableError(
            f"{run.path / CONFIG_JSON}: its model config does not fit this hilif.model; it cannot be "
            f"checked against --ablation {name}"
        )
    if diff:
        raise TableError(
            f"{run.path / CONFIG_JSON}: claims --ablation {name} but its model differs in "
            f"{', '.join(f'{k}={run.model.get(k)!r}' for k in diff)}; retrain it with --ablation {name} "
            f"or remove 'ablation' from its config"
        )
    if ab.constraint_loss and run.train.get("lambda_d") != PAPER_LAMBDA_D:
        raise TableError(
            f"{run.path / CONFIG_JSON}: claims --ablation {name} (lambda_d {PAPER_LAMBDA_D}) but was "
            f"trained with lambda_d {run.train.get('lambda_d')}"
        )


def fits_row(run: Run, report: Report, preset: str, train_methods: list[str]) -> bool:
    """Whether ``report`` measures the configuration of a paper row (preset + training fakes)."""
    ab = get_ablation(preset)
    if report.stage != (2 if ab.constraint_loss else 1):
        return False
    if list(run.train.get("train_methods") or []) != list(train_methods):
        return False
    if run.train.get("synth_fakes", "none") not in (None, "none"):
        return False
    if ab.constraint_loss and run.train.get("lambda_d") != PAPER_LAMBDA_D:
        return False
    return _model_diff(ab, run.model, with_lrc=ab.constraint_loss) == []


# --------------------------------------------------------------------------- cells


def metric_value(report: dict[str, Any], metric: str) -> float | None:
    """A report's figure for a column's metric, in percent (None when the report lacks it)."""
    parts = metric.split(":")
    v: Any = None
    if parts[0] in ("acc", "auc"):
        v = report.get("frame", {}).get(parts[0])
    elif parts[0] == "method":  # Table II: method:<name>:auc
        v = report.get("methods", {}).get(parts[1], {}).get(parts[2])
    elif parts[0] == "jpeg":  # Table IV: jpeg:<quality>:auc
        v = next(
            (
                p.get(parts[2])
                for p in report.get("perturbations", [])
                if p.get("name") == "jpeg" and float(p.get("level")) == float(parts[1])
            ),
            None,
        )
    elif parts[0] == "drop":  # Table V: drop:<perturbation>:acc|auc, the paper's positive-is-worse drop
        d = next((p.get(f"d_{parts[2]}") for p in report.get("perturbations", []) if p.get("name") == parts[1]), None)
        v = None if d is None else -d
    if finite_or_none(v) is None:
        return None
    return 100.0 * float(v)


@dataclass
class Cell:
    table: str
    row: str
    preset: str
    column: str
    paper: float | None
    values: list[float]
    runs: list[str]
    data: str  # what ours was measured on ("ffpp-c40", "demo-c23 -> demo-c23", ...)
    command: str

    @property
    def ours(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def diff(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours - self.paper


def _checkpoint_identity(rep: Report) -> tuple:
    """A stage-1 folder copied into several runs (one stage 1 for many L_d rows) is one measurement: reports of one
    checkpoint on one test split agree in every figure, so they count once."""
    f = rep.body.get("frame", {})
    return (rep.test, rep.stage, rep.body.get("epoch"), f.get("n"), f.get("acc"), f.get("auc"), f.get("ap"))


def _commands(preset: str, train: str, test: str, train_methods: list[str], metric: str, runs_dir: str) -> str:
    ab = get_ablation(preset)
    out = f"{runs_dir}/{preset}-{train}" + (f"-{'+'.join(train_methods)}" if train_methods else "")
    train_cmd = f"hilif-train --shards shards/{train} --ablation {preset} --out {out}"
    if train_methods:
        train_cmd += "".join(f" --train-methods {m}" for m in train_methods)
    perturb = " --perturb jpeg" if metric.startswith("jpeg") else " --perturb all" if metric.startswith("drop") else ""
    eval_cmd = (
        f"hilif-eval --checkpoint {out}/stage{2 if ab.constraint_loss else 1}/best.pt --shards shards/{test}"
        f" --split test{perturb}"
    )
    return f"{train_cmd} && {eval_cmd}"


def _stand_ins(table: dict[str, Any], runs: list[Run]) -> dict[str, str]:
    """paper data -> our data, for a table none of whose intra-dataset data any run has (e.g. the demo)."""
    intra = [c["train"] for c in table["columns"] if c.get("train") and c["train"] == c.get("test")]
    ours = sorted({r.test for run in runs for r in run.reports if r.test and r.test == (run.train_key or r.test)})
    if not intra or any(k in ours for k in intra):
        return {}
    if not ours:
        return {}
    # one stand-in: our first data for the paper column of the same quality (c23/c40), else the first column
    mine = ours[0]
    quality = mine.rsplit("-", 1)[-1]
    paper = next((k for k in intra if k.endswith("-" + quality)), intra[0])
    return {paper: mine}


def _column_values(
    fit: list[tuple[Run, Any]], want_train: str, want_test: str, metric: str
) -> tuple[list[float], list[str]]:
    """(values, run names) of one cell: the row's reports on this column's data, one per checkpoint."""
    values, names, seen = [], [], set()
    for run, rep in fit:
        if rep.test != want_test or (run.train_key or rep.test) != want_train:
            continue
        v = metric_value(rep.body, metric)
        same = _checkpoint_identity(rep)
        if v is not None and same not in seen:
            seen.add(same)
            values.append(v)
            names.append(run.name)
    return values, names


def build_table(
    name: str, runs: list[Run], runs_dir: str = "runs"
) -> tuple[dict[str, Any], list[Cell], dict[str, str]]:
    """(paper table, one Cell per row and column, stand-in data mapping) for Tables I-XI."""
    tables = paper_tables()
    if name not in tables:
        raise TableError(f"--table {name}: choose one of {', '.join(TABLES)}")
    table = tables[name]
    for run in runs:
        check_claim(run)
    stand = _stand_ins(table, runs)
    cells: list[Cell] = []
    for row in table["rows"]:
        methods = row.get("train_methods", [])
        # which (run, report) pairs are this row's depends on the row alone, not on the column
        fit = [(run, rep) for run in runs for rep in run.reports if fits_row(run, rep, row["preset"], methods)]
        for col, paper in zip(table["columns"], row["paper"]):
            if col["metric"] == "avg":
                continue
            train, test = col["train"], col["test"]
            want_train, want_test = stand.get(train, train), stand.get(test, test)
            values, names = _column_values(fit, want_train, want_test, col["metric"])
            data = want_test if want_train == want_test else f"{want_train} -> {want_test}"
            cells.append(
                Cell(
                    name,
                    row["label"],
                    row["preset"],
                    col["label"],
                    paper,
                    values,
                    names,
                    data,
                    _commands(row["preset"], want_train, want_test, methods, col["metric"], runs_dir),
                )
            )
        avg = [c for c in table["columns"] if c["metric"] == "avg"]
        if avg:  # Table II's mean over the four test methods, of whichever cells we have
            mine = [c for c in cells if c.row == row["label"]]
            ours = [c.ours for c in mine if c.ours is not None]
            cells.append(
                Cell(
                    name,
                    row["label"],
                    row["preset"],
                    avg[0]["label"],
                    row["paper"][-1],
                    [statistics.fmean(ours)] if len(ours) == len(mine) else [],
                    [],
                    mine[0].data,
                    mine[0].command,
                )
            )
    return table, cells, stand


def build_cost_table(runs_dir: str = "runs") -> tuple[dict[str, Any], list[Cell], dict[str, str]]:
    """Table XII from `hilif.model.profile` (what `hilif-eval info` prints) for the paper preset."""
    from hilif.model import HiLIFConfig
    from hilif.model.profile import profile_model

    table = paper_tables()["XII"]
    prof = profile_model(HiLIFConfig.preset("paper", pretrained=False))
    lrc = sum(r.params for r in prof.rows if r.name == "lrc")
    ours = {"gmacs": prof.inference_flops / 2e9, "mparams": (prof.total_params - lrc) / 1e6}
    row = table["rows"][0]
    cells = [
        Cell(
            "XII",
            row["label"],
            row["preset"],
            c["label"],
            p,
            [ours[c["metric"]]],
            ["hilif-eval info"],
            "paper preset, 224",
            "hilif-eval info --preset paper",
        )
        for c, p in zip(table["columns"], row["paper"])
    ]
    return table, cells, {}


# --------------------------------------------------------------------------- output


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _ours(c: Cell) -> str:
    if not c.values:
        return "-"
    if len(c.values) == 1:
        return _f(c.ours)
    return f"{c.ours:.2f} ({min(c.values):.2f}-{max(c.values):.2f})"


def to_markdown(name: str, table: dict[str, Any], cells: list[Cell], stand: dict[str, str]) -> str:
    lines = [f"## Table {name}: {table['title']}", ""]
    if stand:
        lines += [
            "Our data stand in for the paper's (no run has the paper's): "
            + ", ".join(f"{o} for {p}" for p, o in stand.items())
            + ". The differences then compare different data, not a reproduction.",
            "",
        ]
    unit = "" if name == "XII" else " (%)"
    lines += [
        f"| row | column | paper{unit} | ours{unit} | ours - paper | runs | measured on | run folders, or the "
        f"commands that make the row |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for c in cells:
        where = ", ".join(f"`{r}`" for r in dict.fromkeys(c.runs)) if c.values else f"`{c.command}`"
        diff = "-" if c.diff is None else f"{c.diff:+.2f}"
        lines.append(
            f"| {c.row} | {c.column} | {_f(c.paper)} | {_ours(c)} | {diff} | {len(c.values)} | {c.data} | {where} |"
        )
    return "\n".join(lines) + "\n"


def to_csv(cells: list[Cell]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "table",
            "row",
            "preset",
            "column",
            "paper",
            "ours",
            "ours_minus_paper",
            "n_runs",
            "ours_min",
            "ours_max",
            "measured_on",
            "runs",
            "command",
        ]
    )
    for c in cells:
        w.writerow(
            [
                c.table,
                c.row,
                c.preset,
                c.column,
                c.paper,
                c.ours,
                c.diff,
                len(c.values),
                min(c.values) if c.values else None,
                max(c.values) if c.values else None,
                c.data,
                ";".join(c.runs),
                "" if c.values else c.command,
            ]
        )
    return buf.getvalue()


def write_tables(names: list[str], runs_dir: str | Path, out: str | Path | None = None) -> dict[str, str]:
    """Build the tables ``names`` from the runs under ``runs_dir``; write table-<N>.md / .csv under ``out`` (when
    given). Returns {name: markdown}."""
    runs = load_runs(runs_dir) if any(n != "XII" for n in names) else []
    done: dict[str, str] = {}
    for n in names:
        table, cells, stand = build_cost_table(str(runs_dir)) if n == "XII" else build_table(n, runs, str(runs_dir))
        md = to_markdown(n, table, cells, stand)
        done[n] = md
        if out is not None:
            from hilif.pipeline import schema

            Path(out).mkdir(parents=True, exist_ok=True)
            schema.atomic_write_text(Path(out) / f"table-{n}.md", md)
            schema.atomic_write_text(Path(out) / f"table-{n}.csv", to_csv(cells))
    return done


def missing_evaluations(names: list[str], runs: list[Run]) -> list[tuple[Run, int, str, list[str]]]:
    """(run, stage, shards, perturbations) of test-split evaluations the tables ``names`` would use and that no
    report holds yet: each run's stage-1 and stage-2 best checkpoints on its own training shards."""
    perturb = sorted({"jpeg" for n in names if n == "IV"} | {"all" for n in names if n == "V"})
    todo = []
    for run in runs:
        shards = run.train.get("shards")
        if not shards or run.train_key is None:
            continue
        for stage in (1, 2):
            if not (run.path / f"stage{stage}" / "best.pt").is_file():
                continue
            have = [r for r in run.reports if r.stage == stage and r.test == run.train_key]
            if not have or (perturb and not any(r.body.get("perturbations") for r in have)):
                todo.append((run, stage, shards, perturb))
    return todo

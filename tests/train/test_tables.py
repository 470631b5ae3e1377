"""hilif-eval table: paper tables from fabricated run folders (config.json as hilif-train writes it, report.json as
hilif-eval writes it), row matching by settings, missing rows, refused claims, and the CLI."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hilif.train import tables as tb
from hilif.train.cli import eval_app, train_app
from hilif.train.config import TrainConfig
from hilif.train.trainer import model_config

runner = CliRunner()


def _shards(root: Path, dataset: str, quality: str, methods: tuple[str, ...] = ("Deepfakes", "FaceSwap")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(
        json.dumps({"dataset": dataset, "quality": quality, "methods": {"train": {m: 10 for m in methods}}})
    )
    return root


def _run(folder: Path, shards: Path, reports: dict[int, dict], claim: bool = True, **train) -> Path:
    """A run folder: config.json from a real TrainConfig + model config, and one test report per stage given."""
    cfg = TrainConfig(shards=str(shards), out=str(folder), preset="tiny", **train)
    model = model_config(cfg).to_dict()
    t = cfg.to_dict()
    if not claim:
        t.pop("ablation")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train": t, "model": model}))
    info = json.loads((shards / "dataset.json").read_text())
    for stage, body in reports.items():
        out = folder / f"stage{stage}" / f"eval-{info['dataset']}-{info['quality']}-test"
        out.mkdir(parents=True)
        rep = {
            "checkpoint": str(folder / f"stage{stage}" / "best.pt"),
            "stage": stage,
            "split": "test",
            "dataset": info["dataset"],
            "quality": info["quality"],
            "perturbations": [],
            "methods": {m: {"auc": body.get("auc", 0.5)} for m in next(iter(info["methods"].values()))},
            **body,
        }
        rep["frame"] = {"acc": body.get("acc", 0.5), "auc": body.get("auc", 0.5)}
        (out / "report.json").write_text(json.dumps(rep))
    return folder


def _cell(cells: list[tb.Cell], row: str, column: str | None = None) -> tb.Cell:
    return next(c for c in cells if c.row == row and (column is None or c.column == column))


def test_table_vi_puts_each_run_in_its_row_by_settings(tmp_path: Path) -> None:
    c40 = _shards(tmp_path / "shards" / "ffpp-c40", "ffpp", "c40")
    runs = tmp_path / "runs"
    _run(runs / "eff", c40, {1: {"auc": 0.90}}, ablation="eff")
    # a plain two-stage run (no --ablation): its stage-1 report is "Eff + DFTM + DDAFM", its stage-2 one the full row
    _run(runs / "full-s0", c40, {1: {"auc": 0.91}, 2: {"auc": 0.92}})
    _run(runs / "full-s1", c40, {2: {"auc": 0.94}}, seed=1)
    _run(runs / "no-ld", c40, {2: {"auc": 0.50}}, lambda_d=0.0)  # lambda 0: no paper row
    table, cells, stand = tb.build_table("VI", tb.load_runs(runs))
    assert stand == {}
    eff = _cell(cells, "Efficient Net")
    assert eff.ours == pytest.approx(90.0) and eff.diff == pytest.approx(90.0 - 88.71) and eff.data == "ffpp-c40"
    assert _cell(cells, "Eff + DFTM + DDAFM").values == pytest.approx([91.0])
    full = _cell(cells, "Eff + DFTM + DDAFM + Constraint Loss")
    assert sorted(full.values) == pytest.approx([92.0, 94.0]) and full.ours == pytest.approx(93.0)
    assert full.paper == pytest.approx(89.98)
    missing = _cell(cells, "Eff + DFTM")
    assert missing.values == [] and missing.ours is None
    assert "--ablation eff+dftm " in missing.command and "stage1/best.pt" in missing.command
    assert "shards/ffpp-c40" in missing.command
    md = tb.to_markdown("VI", table, cells, stand)
    assert "| Eff + DFTM | FF++ (C40) AUC | 89.47 | - | - | 0 |" in md
    assert "| 93.00 (92.00-94.00) | +3.02 | 2 | ffpp-c40 |" in md
    rows = list(csv.DictReader(io.StringIO(tb.to_csv(cells))))
    assert [r["row"] for r in rows] == [r["label"] for r in table["rows"]]
    assert float(rows[0]["ours_minus_paper"]) == pytest.approx(90.0 - 88.71)


def test_a_run_that_contradicts_the_row_it_claims_is_refused(tmp_path: Path) -> None:
    c40 = _shards(tmp_path / "shards", "ffpp", "c40")
    folder = _run(tmp_path / "runs" / "bad", c40, {1: {"auc": 0.9}}, ablation="eff")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["dftm"] = True  # trained with DFTM, but claims the plain backbones
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(tb.TableError, match="claims --ablation eff but its model differs in dftm=True"):
        tb.build_table("VI", tb.load_runs(tmp_path / "runs"))
    res = runner.invoke(eval_app, ["table", "--runs", str(tmp_path / "runs"), "--table", "VI"])
    assert res.exit_code == 2
    err = res.output.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "config.json" in err[0]


def test_columns_follow_the_data_and_the_demo_stands_in(tmp_path: Path) -> None:
    c23 = _shards(tmp_path / "shards" / "ffpp-c23", "ffpp", "c23")
    demo = _shards(tmp_path / "shards" / "demo", "demo", "c23")
    _run(tmp_path / "runs" / "ffpp", c23, {1: {"acc": 0.93, "auc": 0.98}, 2: {"acc": 0.95, "auc": 0.99}})
    _, cells, stand = tb.build_table("X", tb.load_runs(tmp_path / "runs"))
    assert stand == {}
    model = [c for c in cells if c.row == "Model"]
    assert [(c.column, c.ours) for c in model] == [
        ("FF++ (C23) ACC", pytest.approx(93.0)),
        ("FF++ (C23) AUC", pytest.approx(98.0)),
        ("FF++ (C40) ACC", None),
        ("FF++ (C40) AUC", None),
    ]
    assert _cell(cells, "Model + LRCL (Ours, K = 5, S = 2, N = 8)", "FF++ (C23) AUC").ours == pytest.approx(99.0)
    # the same run is not a K=3 row
    assert _cell(cells, "Model + LRCL (Ours, K = 3, S = 3, N = 8)", "FF++ (C23) AUC").ours is None
    # only demo data: it stands in for the paper's column, and the table says so
    _run(tmp_path / "demo-runs" / "run", demo, {2: {"auc": 0.88}})
    table, cells, stand = tb.build_table("VI", tb.load_runs(tmp_path / "demo-runs"))
    assert stand == {"ffpp-c40": "demo-c23"}
    full = _cell(cells, "Eff + DFTM + DDAFM + Constraint Loss")
    assert full.ours == pytest.approx(88.0) and full.data == "demo-c23"
    assert "demo-c23 for ffpp-c40" in tb.to_markdown("VI", table, cells, stand)


def test_cross_manipulation_rows_use_the_training_methods(tmp_path: Path) -> None:
    c23 = _shards(tmp_path / "shards", "ffpp", "c23", ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"))
    folder = _run(tmp_path / "runs" / "df", c23, {2: {"auc": 0.8}}, train_methods=["Deepfakes"])
    rp = next(folder.rglob("report.json"))
    rep = json.loads(rp.read_text())
    rep["methods"] = {
        "Deepfakes": {"auc": 0.99},
        "Face2Face": {"auc": 0.6},
        "FaceSwap": {"auc": 0.3},
        "NeuralTextures": {"auc": 0.7},
    }
    rp.write_text(json.dumps(rep))
    _, cells, _ = tb.build_table("II", tb.load_runs(tmp_path / "runs"))
    df = [c for c in cells if c.row == "DF -> Ours"]
    assert [c.ours for c in df] == pytest.approx([99.0, 60.0, 30.0, 70.0, 64.75])
    assert all(c.ours is None for c in cells if c.row == "F2F -> Ours")
    assert "--train-methods Face2Face" in _cell(cells, "F2F -> Ours").command


def test_cli_writes_markdown_and_csv_and_lists_presets(tmp_path: Path) -> None:
    c40 = _shards(tmp_path / "shards", "ffpp", "c40")
    _run(tmp_path / "runs" / "mix", c40, {1: {"auc": 0.89}}, ablation="mixblock")
    res = runner.invoke(eval_app, ["table", "--runs", str(tmp_path / "runs"), "--table", "IX", "--table", "vi"])
    assert res.exit_code == 0, res.output
    assert "| Mix Block | FF++ (C40) AUC | 88.96 | 89.00 | +0.04 | 1 |" in res.output
    assert (tmp_path / "runs" / "tables" / "table-IX.csv").is_file()
    assert (tmp_path / "runs" / "tables" / "table-VI.md").read_text().startswith("## Table VI")
    assert runner.invoke(eval_app, ["table", "--runs", str(tmp_path / "runs"), "--table", "XIII"]).exit_code == 2
    listed = runner.invoke(train_app, ["--print-ablations"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0 and "ld-k3s3n16" in listed.output
    assert "VII: Efficient Net + Self-Attention" in listed.output


def test_one_stage_one_run_serves_the_l_d_rows_and_evaluate_fills_the_table(tmp_path: Path) -> None:
    """Real tiny runs: --ablation eff+dftm+ddafm (stage 1 only), then --ablation ld-k3s3n1 --stage 2 from a copy of
    that folder (L_d's settings do not touch stage 1); `table --evaluate` evaluates both and files them."""
    import shutil

    from shards_fixture import make_shards, tiny_train_config

    from hilif.train.trainer import train

    shards = make_shards(tmp_path / "shards", dataset="ffpp")
    runs = tmp_path / "runs"
    model = runs / "model"
    stage1 = tiny_train_config(shards, model, stage1_epochs=1, ablation="eff+dftm+ddafm")
    assert [r.stage for r in train(stage1)] == [1]
    shutil.copytree(model, runs / "k3s3n1")
    stage2 = tiny_train_config(shards, runs / "k3s3n1", stage1_epochs=1, ablation="ld-k3s3n1", stage="2")
    assert [r.stage for r in train(stage2)] == [2]
    res = runner.invoke(
        eval_app, ["table", "--runs", str(runs), "--table", "X", "--evaluate", "--workers", "0", "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    key = tb.data_key("ffpp", "c40")
    _, cells, _ = tb.build_table("X", tb.load_runs(runs))
    col = f"FF++ ({key.split('-')[1].upper()}) AUC"
    # the "Model" row is the shared stage 1, counted once though both folders hold a report of it; the copy's
    # stage 2 is K=3 S=3 N=1 only
    assert len(list(runs.rglob("report.json"))) == 3
    assert len(_cell(cells, "Model", col).runs) == 1
    assert _cell(cells, "Model + LRCL (Ours, K = 3, S = 3, N = 1)", col).runs == [str(runs / "k3s3n1")]
    assert _cell(cells, "Model + LRCL (Ours, K = 5, S = 2, N = 8)", col).runs == []

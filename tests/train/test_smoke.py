"""CI smoke run of hilif-train / hilif-eval on a tiny synthetic shard folder, resume, and the CLIs' bad-input exits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from shards_fixture import make_shards, tiny_train_config
from typer.testing import CliRunner

from hilif.train import checkpoint as ck
from hilif.train.cli import eval_app, train_app
from hilif.train.config import TrainConfig
from hilif.train.trainer import Trainer, train

runner = CliRunner()


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards"))


def _cfg(shards: Path, out: Path, **kw) -> TrainConfig:
    return tiny_train_config(shards, out, **kw)


@pytest.fixture(scope="module")
def run(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    results = train(_cfg(shards, out))
    assert [r.stage for r in results] == [1, 2]
    return out


def test_both_stages_write_checkpoints_metrics_and_plots(run: Path) -> None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"], r["step"]) for r in rows] == [(1, 1, 2), (1, 2, 4), (2, 1, 2)]
    assert all(r["train_ld"] == 0 for r in rows if r["stage"] == 1)
    assert all(r["train_ld"] > 0 for r in rows if r["stage"] == 2)  # L_d is really in the stage-2 loss
    # stage 2 logs L_d's terms: the gap is M_fake - M_real of the same rows; stage 1 has none
    assert all(r["train_gap"] == pytest.approx(r["train_m_fake"] - r["train_m_real"]) for r in rows if r["stage"] == 2)
    assert all("train_gap" not in r for r in rows if r["stage"] == 1)
    assert (run / "plots" / "curves.png").stat().st_size > 1000
    for stage in (1, 2):
        got = ck.load_checkpoint(ck.best_path(run, stage))
        assert got["stage"] == stage and got["model_config"]["backbone"] == "efficientnet_b0"
        # one epoch number (from 1) for the best epoch in the checkpoint, its metrics row and the stage's last row
        last_row = [r for r in rows if r["stage"] == stage][-1]
        assert got["epoch"] == got["best_epoch"] == got["metrics"]["epoch"] == last_row["best_epoch"] >= 1
        assert got["extract"] == {"dataset": "synth", "face": {}, "face_size": 256}  # the shards' extract settings
    # stage 2 trained the L_d projections that stage 1 kept frozen
    s1 = ck.load_checkpoint(ck.last_path(run, 1))["model"]
    s2 = ck.load_checkpoint(ck.last_path(run, 2))["model"]
    lrc = [k for k in s1 if k.startswith("lrc.") and s1[k].is_floating_point()]
    assert lrc and any(not torch.equal(s1[k], s2[k]) for k in lrc)


def test_checkpoint_reloads_and_eval_runs(run: Path, shards: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        eval_app,
        [
            "--checkpoint",
            str(ck.best_path(run, 2)),
            "--shards",
            str(shards),
            "--out",
            str(tmp_path),
            "--workers",
            "0",
            "--perturb",
            "jpeg",
            "--perturb-level",
            "jpeg=50",
            "--gradcam",
            "2",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["frame"]["n"] == 16 and report["video"]["n"] == 4
    assert set(report["methods"]) == {"Deepfakes", "FaceSwap"}
    assert [(p["name"], p["level"]) for p in report["perturbations"]] == [("jpeg", 50.0)]
    assert (tmp_path / "roc.png").is_file() and (tmp_path / "gradcam-00.png").is_file()
    # the per-sample scores the report was computed from: one row per sample, the same metrics when re-computed
    from hilif.train.evaluate import read_scores_csv
    from hilif.train.metrics import binary_metrics, video_metrics

    assert report["scores_csv"] == str(tmp_path / "scores.csv")
    pred = read_scores_csv(tmp_path / "scores.csv")
    assert len(pred.keys) == len(set(pred.keys)) == 16 and set(pred.methods) == {"real", "Deepfakes", "FaceSwap"}
    assert all((m == "real") == (lab == 0) for m, lab in zip(pred.methods, pred.labels))
    again = binary_metrics(pred.labels, pred.scores, ranking=pred.margins)
    assert again.auc == pytest.approx(report["frame"]["auc"])
    assert again.acc == pytest.approx(report["frame"]["acc"])
    vids = video_metrics(pred.videos, pred.labels, pred.scores, pred.margins)
    assert vids.auc == pytest.approx(report["video"]["auc"])


class _Kill:
    """Reporter that interrupts the run at the end of a given epoch (after its checkpoint is written)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def start_epoch(self, *a) -> None: ...

    def step(self, *a) -> None: ...

    def end_epoch(self, row: dict) -> None:
        if row["epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_resume_after_interruption_continues_at_the_right_step(shards: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    train(_cfg(shards, whole, stage="1", stage1_epochs=3))
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(shards, cut, stage="1", stage1_epochs=3), reporter=_Kill(epoch=1)).run()
    assert ck.load_checkpoint(ck.last_path(cut, 1))["step"] == 2
    # the same command without --resume refuses to overwrite the run
    with pytest.raises(Exception, match="--resume"):
        Trainer(_cfg(shards, cut, stage="1", stage1_epochs=3)).run()
    # runtime-only options (here the validation batch) may change on resume
    (res,) = train(_cfg(shards, cut, stage="1", stage1_epochs=3, resume=True, val_batch_size=5))
    assert res.epochs_run == 2
    rows = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 2), (2, 4), (3, 6)]
    a = ck.load_checkpoint(ck.last_path(whole, 1))
    b = ck.load_checkpoint(ck.last_path(cut, 1))
    assert a["step"] == b["step"] == 6
    # same data, same RNG, same optimiser state: the resumed run ends with the uninterrupted run's weights
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_train_bad_input_exits_2(shards: Path, tmp_path: Path, run: Path) -> None:
    res = runner.invoke(train_app, ["--shards", str(tmp_path), "--preset", "tiny", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "dataset.json" in res.output and len(res.output.strip().splitlines()) == 1
    # resuming a run with another model config
    res = runner.invoke(
        train_app, ["--shards", str(shards), "--preset", "demo", "--out", str(run), "--resume", "--workers", "0"]
    )
    assert res.exit_code == 2 and "model config" in res.output
    res = runner.invoke(
        train_app,
        [
            "--shards",
            str(shards),
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "o"),
            "--train-methods",
            "NeuralTextures",
        ],
    )
    assert res.exit_code == 2 and "NeuralTextures" in res.output
    res = runner.invoke(train_app, ["--shards", str(shards), "--preset", "huge", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "huge" in res.output
    for decay in ("1", "-0.5"):  # an average needs 0 <= decay < 1
        res = runner.invoke(
            train_app,
            ["--shards", str(shards), "--preset", "tiny", "--out", str(tmp_path / "o"), "--ema-decay", decay],
        )
        assert res.exit_code == 2 and "--ema-decay" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(
        train_app, ["--shards", str(shards), "--preset", "tiny", "--out", str(tmp_path / "wd"), "--weight-decay", "-1"]
    )
    assert res.exit_code == 2 and "--weight-decay" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "wd").exists()  # refused before anything is written
    res = runner.invoke(
        train_app, ["--shards", str(shards), "--preset", "tiny", "--out", str(tmp_path / "ve"), "--val-every", "0"]
    )
    assert res.exit_code == 2 and "--val-every" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "ve").exists()
    res = runner.invoke(
        train_app, ["--shards", str(shards), "--preset", "tiny", "--out", str(tmp_path / "wu"), "--warmup-steps", "-1"]
    )
    assert res.exit_code == 2 and "--warmup-steps" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "wu").exists()
    res = runner.invoke(
        train_app, ["--shards", str(shards), "--preset", "tiny", "--out", str(tmp_path / "o"), "--select", "best"]
    )
    assert res.exit_code == 2 and "--select" in res.output and len(res.output.strip().splitlines()) == 1
    for name, msg in (("resnet18", "EfficientNet class"), ("effnet_b9", "unknown timm backbone")):
        res = runner.invoke(
            train_app,
            ["--shards", str(shards), "--preset", "tiny", "--out", str(tmp_path / "o"), "--backbone", name],
        )
        assert res.exit_code == 2 and "--backbone" in res.output and msg in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "o").exists()  # nothing written on bad input
    # ImageNet weights from a file that is not there: the backbone's one-line error, not a traceback
    res = runner.invoke(
        train_app,
        [
            "--shards",
            str(shards),
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "o"),
            "--pretrained",
            "--backbone-weights",
            str(tmp_path / "nope.safetensors"),
            "--workers",
            "0",
        ],
    )
    assert res.exit_code == 2 and "nope.safetensors" in res.output, res.output
    errors = [line for line in res.output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output


def test_eval_bad_input_exits_2(shards: Path, tmp_path: Path, run: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"format": ck.FORMAT, "model": {}, "x": _Kill(0)}, evil)
    res = runner.invoke(eval_app, ["--checkpoint", str(evil), "--shards", str(shards)])
    assert res.exit_code == 2 and "pickled" in res.output
    empty = tmp_path / "empty"
    (empty).mkdir()
    (empty / "dataset.json").write_text((shards / "dataset.json").read_text())
    res = runner.invoke(eval_app, ["--checkpoint", str(ck.best_path(run, 2)), "--shards", str(empty)])
    assert res.exit_code == 2 and "no complete shards" in res.output


def test_detect_on_an_image(run: Path, tmp_path: Path) -> None:
    import cv2
    from skimage import data

    img = tmp_path / "astronaut.png"
    cv2.imwrite(str(img), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    res = runner.invoke(eval_app, ["detect", str(img), "--checkpoint", str(ck.best_path(run, 2)), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(next(line for line in res.output.splitlines() if line.startswith("{")))
    assert out["kind"] == "image" and out["status"] == "ok" and len(out["tracks"]) >= 1
    assert 0.0 <= out["fake_prob"] <= 1.0
    res = runner.invoke(eval_app, ["detect", str(tmp_path / "none.mp4"), "--checkpoint", str(ck.best_path(run, 2))])
    assert res.exit_code == 2 and "no such file" in res.output


def test_info_prints_parameters_and_flops() -> None:
    res = runner.invoke(eval_app, ["info", "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    assert "noise backbone" in res.output and "MACs" in res.output
    res = runner.invoke(eval_app, ["info", "--preset", "nonesuch"])
    assert res.exit_code == 2 and "nonesuch" in res.output

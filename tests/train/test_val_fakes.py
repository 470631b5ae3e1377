"""Model selection scores the fakes a run trains on (--val-fakes train, the default): only the --train-methods'
fakes of the val split, or self-blended val reals for a run on reals only; --val-fakes all scores every method."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from shards_fixture import make_shards, tiny_train_config

from hilif.pipeline import schema
from hilif.train.data import EvalStream

# make_shards' val split: 2 real videos, 1 Deepfakes and 1 FaceSwap video, 4 frames each
VAL_REALS, VAL_PER_METHOD = 8, 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards"))


def _read(stream: EvalStream) -> tuple[list[str], list[int], list[str], torch.Tensor]:
    methods, labels, keys, images = [], [], [], []
    for batch in stream:
        methods += batch["method"]
        labels += batch["label"].tolist()
        keys += batch["key"]
        images.append(batch["image"])
    return methods, labels, keys, torch.cat(images)


def test_eval_stream_scores_only_the_named_methods(shards: Path) -> None:
    methods, labels, _, _ = _read(EvalStream(shards, "val", 64, 5, methods=["Deepfakes"]))
    assert sorted(set(methods)) == ["Deepfakes", schema.REAL_METHOD]
    assert labels.count(schema.REAL) == VAL_REALS and labels.count(schema.FAKE) == VAL_PER_METHOD
    _, labels, _, _ = _read(EvalStream(shards, "val", 64, 5))
    assert labels.count(schema.FAKE) == 2 * VAL_PER_METHOD


def test_eval_stream_self_blends_each_real_once_the_same_every_pass(shards: Path) -> None:
    from hilif.train.sbi import SBIConfig

    stream = EvalStream(shards, "val", 64, 6, sbi=SBIConfig(), seed=3)
    methods, labels, keys, images = _read(stream)
    assert stream.expected == 2 * VAL_REALS and len(labels) == 2 * VAL_REALS
    reals = [k for k, lab in zip(keys, labels) if lab == schema.REAL]
    fakes = [k for k, lab in zip(keys, labels) if lab == schema.FAKE]
    assert sorted(fakes) == sorted(f"{k}_sbi" for k in reals)  # every real once as itself, once blended
    assert {m for m, lab in zip(methods, labels) if lab == schema.FAKE} == {"SBI"}
    by_key = dict(zip(keys, images))
    assert all(not torch.equal(by_key[k], by_key[f"{k}_sbi"]) for k in reals)  # the blend changed each face
    again = _read(EvalStream(shards, "val", 64, 6, sbi=SBIConfig(), seed=3))
    assert again[2] == keys and torch.equal(again[3], images)  # model selection sees the same fakes every epoch
    other = _read(EvalStream(shards, "val", 64, 6, sbi=SBIConfig(), seed=4))[3]
    assert not torch.equal(other, images)


@pytest.mark.parametrize(
    "kw,expected,sbi",
    [
        (dict(), VAL_REALS + 2 * VAL_PER_METHOD, False),  # all methods trained: all scored
        (dict(train_methods=["Deepfakes"]), VAL_REALS + VAL_PER_METHOD, False),  # held-out FaceSwap stays out
        (dict(train_methods=["Deepfakes"], val_fakes="all"), VAL_REALS + 2 * VAL_PER_METHOD, False),
        (dict(train_methods=["none"], synth_fakes="sbi"), 2 * VAL_REALS, True),  # reals only: blended val reals
        (dict(train_methods=["none"], synth_fakes="sbi", val_fakes="all"), VAL_REALS + 2 * VAL_PER_METHOD, False),
    ],
)
def test_the_trainer_validates_on_what_it_trains_on(shards: Path, tmp_path: Path, kw, expected, sbi) -> None:
    from hilif.train.trainer import Trainer

    trainer = Trainer(tiny_train_config(shards, tmp_path / "run", device="cpu", **kw))
    assert trainer.val_stream.expected == expected
    assert (trainer.val_stream.sbi is not None) == sbi


def test_a_reals_only_run_selects_its_epoch_on_self_blended_val_reals(shards: Path, tmp_path: Path) -> None:
    import json

    from hilif.train.trainer import train

    out = tmp_path / "run"
    train(tiny_train_config(shards, out, stage="1", train_methods=["none"], synth_fakes="sbi", device="cpu"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["val_auc"] is not None and 0.0 <= r["val_auc"] <= 1.0 for r in rows)


def test_a_missing_val_method_names_the_way_out(tmp_path: Path) -> None:
    from hilif.train.data import DataError
    from hilif.train.trainer import check_data

    layout = {"train": (2, {"Deepfakes": 1, "FaceSwap": 1}), "val": (2, {"FaceSwap": 1}), "test": (1, {"FaceSwap": 1})}
    root = make_shards(tmp_path / "shards", layout=layout)
    cfg = tiny_train_config(root, tmp_path / "run", train_methods=["Deepfakes"], device="cpu")
    with pytest.raises(DataError, match="not in the val split.*pass --val-fakes all to validate on every method"):
        check_data(cfg)
    check_data(tiny_train_config(root, tmp_path / "run", train_methods=["Deepfakes"], val_fakes="all"))


def test_bad_val_fakes_is_a_one_line_error_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hilif.train.cli import train_app

    res = CliRunner().invoke(
        train_app, ["--shards", str(tmp_path), "--preset", "tiny", "--out", str(tmp_path / "o"), "--val-fakes", "x"]
    )
    assert res.exit_code == 2 and "--val-fakes must be one of train, all" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_runs_on_some_methods_saved_before_val_fakes_resume_with_val_fakes_all() -> None:
    """Before --val-fakes, validation scored every method: a run on some methods (or none) did that."""
    from hilif.train.checkpoint import identity_mismatch
    from hilif.train.config import TrainConfig

    for methods in (["Deepfakes"], ["none"]):
        extra = dict(synth_fakes="sbi") if methods == ["none"] else {}
        run = TrainConfig(preset="tiny", train_methods=methods, **extra)
        old = {k: v for k, v in run.to_dict().items() if k != "val_fakes"}
        assert identity_mismatch(run.identity(), old) == ["val_fakes"]
        same = TrainConfig(preset="tiny", train_methods=methods, val_fakes="all", **extra)
        assert identity_mismatch(same.identity(), old) == []
    every = TrainConfig(preset="tiny")  # all methods: both choices score the same fakes, the default fits
    assert identity_mismatch(every.identity(), {k: v for k, v in every.to_dict().items() if k != "val_fakes"}) == []

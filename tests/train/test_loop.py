"""The training loop and evaluation at scale: ranking by logit difference, picklable perturbations, eval folders,
mid-epoch checkpoints and resume, refused resumes that write nothing, SyncBatchNorm, losses averaged over ranks."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from ranks_fixture import become_rank, free_port
from shards_fixture import make_shards, tiny_train_config
from torch.utils.data import DataLoader

from hilif.train import evaluate as ev
from hilif.train.data import EvalStream, load_info
from hilif.train.metrics import binary_metrics, per_method_metrics, video_metrics


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards"))


# --------------------------------------------------------------------------- ranking by logit difference


class _ConfidentModel(torch.nn.Module):
    """Logits (0, 20 + i/4) for the i-th sample of a batch: softmaxes that all round to 1.0 in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = torch.arange(x.shape[0], dtype=x.dtype, device=x.device)
        return torch.stack([torch.zeros_like(i), 20 + i / 4 + x.flatten(1)[:, 0] * 0], dim=1)


def test_predict_ranks_by_logit_difference_where_softmax_saturates() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 1])  # the fakes get the larger logit differences
    batch = {
        "image": torch.zeros(6, 3, 4, 4, dtype=torch.uint8),
        "label": labels,
        "key": list("abcdef"),
        "video": list("abcdef"),
        "method": ["real"] * 3 + ["Deepfakes"] * 3,
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        preds = ev.predict(_ConfidentModel(), [batch], "cpu", amp=torch.bfloat16)
    assert np.all(preds.scores == 1.0)  # reported probabilities: softmax as before, saturated
    assert len(set(preds.margins.tolist())) == 6  # the logit differences are all distinct
    by_prob = binary_metrics(preds.labels, preds.scores)
    by_margin = binary_metrics(preds.labels, preds.scores, ranking=preds.margins)
    assert by_prob.auc == pytest.approx(0.5)  # every pair tied
    assert by_margin.auc == 1.0 and by_margin.tpr_at_fpr_1e2 == 1.0 and by_margin.eer == 0.0
    assert by_margin.acc == by_prob.acc == 0.5  # Acc still thresholds the probability at 0.5
    rows = per_method_metrics(preds.methods, preds.labels, preds.scores, preds.margins)
    assert rows["Deepfakes"].auc == 1.0
    assert video_metrics(preds.videos, preds.labels, preds.scores, preds.margins).auc == 1.0


# --------------------------------------------------------------------------- perturbations in loader workers


@pytest.mark.parametrize("name", list(ev.PERTURBATIONS))
def test_perturbations_pickle_and_act_the_same_after(name: str) -> None:
    fn = ev.perturbation(name, ev.PERTURBATIONS[name][0][-1])
    back = pickle.loads(pickle.dumps(fn))
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(back(img), fn(img))  # _Seeded: the pickled copy carries the same RNG state
    assert not np.array_equal(fn(img), img)


def test_eval_loader_with_a_perturbation_under_spawn(shards: Path) -> None:
    stream = EvalStream(shards, "test", 32, 8, perturb=ev.perturbation("jpeg", 30))
    plain = EvalStream(shards, "test", 32, 8)
    loader = DataLoader(stream, batch_size=None, num_workers=1, multiprocessing_context="spawn")
    got = {k: img for b in loader for k, img in zip(b["key"], b["image"])}
    ref = {k: img for b in plain for k, img in zip(b["key"], b["image"])}
    assert sorted(got) == sorted(ref) and len(got) == 16
    assert any(not torch.equal(got[k], ref[k]) for k in got)  # the perturbation really ran in the spawned worker
    want = {k: img for b in stream for k, img in zip(b["key"], b["image"])}  # same perturbation in-process
    assert all(torch.equal(got[k], want[k]) for k in got)


# --------------------------------------------------------------------------- eval report folders


def test_eval_folders_carry_dataset_quality_and_split(shards: Path) -> None:
    info = load_info(shards)
    c40 = ev.default_out_dir("run/stage2/best.pt", info, "test")
    c23 = ev.default_out_dir("run/stage2/best.pt", dataclasses.replace(info, quality="c23"), "test")
    val = ev.default_out_dir("run/stage2/best.pt", info, "val")
    assert c40 == Path("run/stage2/eval-synth-c40-test")
    assert len({c40, c23, val}) == 3


# --------------------------------------------------------------------------- mid-epoch checkpoints and resume


def _cfg(shards: Path, out: Path, **kw):
    base = dict(stage="1", threads=1, steps_per_epoch=3, save_every_steps=2, log_every=1)
    return tiny_train_config(shards, out, **{**base, **kw})


class _KillAtStep:
    """Reporter that interrupts the run when stage step `at` has been taken (before its checkpoint, if any)."""

    def __init__(self, at: int) -> None:
        self.at, self.n = at, 0

    def start_epoch(self, *a) -> None: ...

    def step(self, *a) -> None:
        self.n += 1
        if self.n == self.at:
            raise KeyboardInterrupt

    def end_epoch(self, row: dict) -> None: ...


def _rows(out: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def whole(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hilif.train.trainer import train

    out = tmp_path_factory.mktemp("whole")
    train(_cfg(shards, out, save_every_steps=0))
    return out


def test_resume_mid_epoch_is_bit_identical(shards: Path, whole: Path, tmp_path: Path) -> None:
    from hilif.train import checkpoint as ck
    from hilif.train.trainer import Trainer, train

    cut = tmp_path / "cut"
    # 2 epochs x 3 steps, a checkpoint every 2 steps: at step 2 (epoch 0), 3 (epoch end), 4 (epoch 1, 1 step in);
    # killed during step 5, so the run continues from epoch 1, step 1
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(shards, cut), reporter=_KillAtStep(5)).run()
    mid = ck.load_checkpoint(ck.last_path(cut, 1))
    assert (mid["epoch"], mid["epoch_step"], mid["step"]) == (1, 1, 4)
    assert mid["plan"]["steps"] == 3 and mid["running"].shape == (7,)
    (res,) = train(_cfg(shards, cut, resume=True, val_batch_size=5))  # runtime options may change
    assert res.epochs_run == 1
    a, b = ck.load_checkpoint(ck.last_path(whole, 1)), ck.load_checkpoint(ck.last_path(cut, 1))
    assert a["step"] == b["step"] == 6 and b["epoch_step"] == 0
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert all(torch.equal(v[n], b["optimizer"]["state"][k][n]) for n in v), k
    # the resumed epoch's logged loss covers all its steps, the interrupted part included
    ra, rb = _rows(whole), _rows(cut)
    assert [r["step"] for r in rb] == [3, 6]
    for key in ("train_loss", "train_ce", "val_auc", "val_acc"):
        assert ra[1][key] == rb[1][key], key


def test_ema_validates_saves_and_resumes_the_average(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ema-decay: validation, best.pt and last.pt's `model` are the moving average; last.pt also keeps the
    optimiser's own weights (`train_model`), and a run killed mid-epoch resumes both bit-identically."""
    from hilif.train import checkpoint as ck
    from hilif.train.trainer import Trainer, train

    validated: list[dict[str, torch.Tensor]] = []
    plain_validate = Trainer.validate

    def validate(self, model):
        validated.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return plain_validate(self, model)

    monkeypatch.setattr(Trainer, "validate", validate)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(_cfg(shards, whole, ema_decay=0.9, save_every_steps=0))
    a = ck.load_checkpoint(ck.last_path(whole, 1))
    assert all(torch.equal(validated[-1][k], a["model"][k]) for k in a["model"])
    floats = [k for k, v in a["model"].items() if v.is_floating_point()]
    assert any(not torch.equal(a["model"][k], a["train_model"][k]) for k in floats)  # an average, not a copy
    best = ck.load_checkpoint(ck.best_path(whole, 1))
    assert "train_model" not in best
    assert all(torch.equal(validated[best["best_epoch"] - 1][k], best["model"][k]) for k in best["model"])
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(shards, cut, ema_decay=0.9), reporter=_KillAtStep(5)).run()
    train(_cfg(shards, cut, ema_decay=0.9, resume=True))
    b = ck.load_checkpoint(ck.last_path(cut, 1))
    for part in ("model", "train_model"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def test_select_last_keeps_the_final_epoch_whatever_validation_says(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--select last: each stage's best.pt holds its final epoch even when an earlier epoch validated higher;
    --select val keeps the highest. Validation is still run and logged either way."""
    from types import SimpleNamespace

    from hilif.train import checkpoint as ck
    from hilif.train.trainer import Trainer, train

    aucs = iter([0.9, 0.6, 0.7] * 4)  # epoch 1 validates best in every stage

    def validate(self, model):
        self.val_skipped = 0
        return SimpleNamespace(auc=next(aucs), acc=0.5, eer=0.5, ap=0.5)

    monkeypatch.setattr(Trainer, "validate", validate)
    for select, kept in (("last", 3), ("val", 1)):
        out = tmp_path / select
        train(_cfg(shards, out, stage="both", stage1_epochs=3, stage2_epochs=3, save_every_steps=0, select=select))
        for stage in (1, 2):
            best, last = ck.load_checkpoint(ck.best_path(out, stage)), ck.load_checkpoint(ck.last_path(out, stage))
            assert best["best_epoch"] == kept and best["metrics"]["val_auc"] == [0.9, 0.6, 0.7][kept - 1]
            same = all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])
            assert same == (select == "last"), (select, stage)
        assert [r["val_auc"] for r in _rows(out)] == [0.9, 0.6, 0.7] * 2


@pytest.mark.parametrize("extra", [dict(), dict(train_methods=["none"], synth_fakes="sbi")])
def test_val_every_skips_validations_without_changing_a_weight(shards: Path, tmp_path: Path, extra: dict) -> None:
    """--val-every 2: epochs 2 and the last of each stage are validated, the others log no val metrics, and every
    checkpoint's weights are bit-identical to a run that validates every epoch (a skipped validation makes the val
    loader's one draw from torch's generator; with reals only, validation self-blends the val reals)."""
    from hilif.train import checkpoint as ck
    from hilif.train.trainer import train

    runs = {}
    for every in (1, 2):
        out = runs[every] = tmp_path / f"every{every}"
        cfg = _cfg(shards, out, stage="both", stage1_epochs=3, stage2_epochs=2, save_every_steps=0, select="last")
        train(dataclasses.replace(cfg, val_every=every, **extra))
    every1, every2 = _rows(runs[1]), _rows(runs[2])
    assert [(r["stage"], r["epoch"]) for r in every2] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    validated = [r["val_auc"] is not None for r in every2]
    assert validated == [False, True, True, False, True]  # every 2nd epoch of a stage, and each stage's last
    for a, b, v in zip(every1, every2, validated):
        assert a["train_loss"] == b["train_loss"]
        assert (a["val_auc"] == b["val_auc"]) if v else (b["val_acc"] is None and b["val_eer"] is None)
    for stage in (1, 2):
        for path in (ck.last_path, ck.best_path):
            a, b = ck.load_checkpoint(path(runs[1], stage)), ck.load_checkpoint(path(runs[2], stage))
            assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), (stage, path.__name__)
    assert (runs[2] / "plots" / "curves.png").is_file()


def test_val_every_with_select_val_keeps_a_validated_epoch(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--select val --val-every 2 over 3 epochs: epochs 2 and 3 are validated; epoch 1, never scored, is never
    kept, whichever AUC epoch 2 gets."""
    from types import SimpleNamespace

    from hilif.train import checkpoint as ck
    from hilif.train.trainer import Trainer, train

    aucs = iter([0.4, 0.3])  # epoch 2 would lose to any real score of epoch 1; epoch 3 lower still

    def validate(self, model):
        self.val_skipped = 0
        return SimpleNamespace(auc=next(aucs), acc=0.5, eer=0.5, ap=0.5)

    monkeypatch.setattr(Trainer, "validate", validate)
    out = tmp_path / "run"
    train(_cfg(shards, out, stage1_epochs=3, save_every_steps=0, select="val", val_every=2))
    best = ck.load_checkpoint(ck.best_path(out, 1))
    assert best["best_epoch"] == 2 and best["best_metric"] == 0.4
    assert [r["best_epoch"] for r in _rows(out)] == [0, 2, 2]


def test_refused_resume_writes_nothing(shards: Path, whole: Path, tmp_path: Path) -> None:
    import shutil

    from hilif.train.checkpoint import CheckpointError
    from hilif.train.trainer import Trainer, TrainError

    run = tmp_path / "run"
    shutil.copytree(whole, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for change in (dict(lr=5e-4), dict(steps_per_epoch=4), dict(seed=1), dict(sync_bn=True), dict(ema_decay=0.9)):
        with pytest.raises((TrainError, CheckpointError), match="differs in"):
            Trainer(_cfg(shards, run, resume=True, stage1_epochs=3, **change)).run()
    with pytest.raises((TrainError, CheckpointError), match="model config"):
        Trainer(_cfg(shards, run, resume=True, img_size=96)).run()
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # config.json included


def test_torchrun_restart_resumes_by_itself(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hilif.train import checkpoint as ck
    from hilif.train.trainer import Trainer, TrainError, train

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(shards, out, stage1_epochs=1), reporter=_KillAtStep(3)).run()
    assert ck.load_checkpoint(ck.last_path(out, 1))["epoch_step"] == 2
    with pytest.raises(TrainError, match="--resume"):  # a plain second launch still refuses
        Trainer(_cfg(shards, out, stage1_epochs=1)).run()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    (res,) = train(_cfg(shards, out, stage1_epochs=1))  # the same command line, relaunched by torchrun
    assert res.epochs_run == 1 and [r["step"] for r in _rows(out)] == [3]


# --------------------------------------------------------------------------- SyncBatchNorm


def test_sync_batchnorm_conversion_keeps_the_model() -> None:
    """timm's converter (not torch's) keeps BatchNormAct2d's activation; checkpoints load either way."""
    from timm.layers import convert_sync_batchnorm

    from hilif.model import HiLIFConfig, build_model

    torch.manual_seed(0)
    model = build_model(HiLIFConfig.preset("tiny")).eval()
    synced = convert_sync_batchnorm(build_model(HiLIFConfig.preset("tiny"))).eval()
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in synced.modules())
    synced.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(synced(x), model(x))


# --------------------------------------------------------------------------- two gloo ranks: losses over ranks


def _rank_losses(rank: int, world: int, port: int, shards: str, out: str) -> None:
    become_rank(rank, world, port)
    from hilif.train import distributed as dist_util
    from hilif.train.trainer import Trainer

    class Losses:
        seen: list[float] = []

        def start_epoch(self, *a) -> None: ...

        def step(self, stage, epoch, step, loss, lr, ips) -> None:
            Losses.seen.append(loss)

        def end_epoch(self, row) -> None: ...

    cfg = _cfg(Path(shards), Path(out), stage1_epochs=1, steps_per_epoch=3, save_every_steps=1, device="cpu")
    Trainer(cfg, reporter=Losses()).run()
    torch.save(torch.tensor(Losses.seen, dtype=torch.float64), Path(out) / f"losses{rank}.pt")
    dist_util.cleanup()


@pytest.mark.slow
def test_logged_loss_is_the_mean_over_ranks(shards: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    out = tmp_path / "run"
    mp.spawn(_rank_losses, args=(2, free_port(), str(shards), str(out)), nprocs=2, join=True)
    l0, l1 = (torch.load(out / f"losses{r}.pt", weights_only=True) for r in (0, 1))
    assert len(l0) == len(l1) == 3 and not torch.equal(l0, l1)  # the ranks saw different samples
    (row,) = _rows(out)
    assert row["train_loss"] == pytest.approx(float(torch.cat([l0, l1]).mean()), rel=1e-6)
    assert row["train_loss"] != pytest.approx(float(l0.mean()), rel=1e-6)  # not rank 0's alone


def test_sync_bn_default_and_cpu_refusal(shards: Path, tmp_path: Path) -> None:
    """On by default with more than one CUDA rank, off alone; CPU ranks cannot run SyncBatchNorm: asked, refused."""
    from hilif.train.distributed import DistInfo
    from hilif.train.trainer import Trainer, TrainError

    def use(sync_bn, world: int, device: str) -> bool:
        t = Trainer.__new__(Trainer)  # the decision only reads the options, the ranks and the device
        t.cfg, t.dist, t.device = _cfg(shards, tmp_path, sync_bn=sync_bn), DistInfo(0, world), torch.device(device)
        return t._use_sync_bn()

    assert use(None, 4, "cuda") and use(True, 4, "cuda") and not use(False, 4, "cuda")
    assert not use(None, 1, "cuda") and not use(True, 1, "cuda")
    assert not use(None, 2, "cpu")
    with pytest.raises(TrainError, match="--sync-bn needs CUDA"):
        use(True, 2, "cpu")


# --------------------------------------------------------------------------- losses read on the host, time estimate


def _nan_from_step(monkeypatch: pytest.MonkeyPatch, bad: int) -> None:
    """Make the trainer's step return a NaN loss from its `bad`-th call on (the model still trains)."""
    from hilif.train import trainer as tr

    real, calls = tr.train_step, [0]

    def step(*a, **kw):
        out = real(*a, **kw)
        calls[0] += 1
        if calls[0] >= bad:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(tr, "train_step", step)


def test_a_nan_loss_stops_the_run_at_its_step_on_a_cpu(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hilif.train.trainer import Trainer

    _nan_from_step(monkeypatch, 2)
    with pytest.raises(FloatingPointError, match=r"stage 1 epoch 1 step 2 \(stage step 2\): loss is nan; lower --lr"):
        Trainer(_cfg(shards, tmp_path / "run", save_every_steps=0)).run()


def test_read_every_log_line_a_nan_loss_names_the_window(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU losses stay on the device between log lines: the check then names the steps of the window."""
    from hilif.train.trainer import Trainer

    _nan_from_step(monkeypatch, 4)
    trainer = Trainer(_cfg(shards, tmp_path / "run", save_every_steps=0, log_every=3, steps_per_epoch=6))
    trainer.read_every = 3  # what a CUDA device gets
    with pytest.raises(FloatingPointError, match=r"stage 1 epoch 1 steps 4-6 \(stage step 6\): loss is nan"):
        trainer.run()


def test_without_log_lines_a_nan_loss_stops_the_run_at_the_epoch_end(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hilif.train.trainer import Trainer

    _nan_from_step(monkeypatch, 2)
    trainer = Trainer(_cfg(shards, tmp_path / "run", save_every_steps=0, log_every=0))
    trainer.read_every = 0  # a GPU with log_every 0: read at the epoch's end only
    with pytest.raises(FloatingPointError, match=r"stage 1 epoch 1 steps 1-3 \(stage step 3\): loss is nan"):
        trainer.run()
    assert not (tmp_path / "run" / "stage1" / "best.pt").exists()  # nothing saved from the broken epoch


def test_the_run_time_left_is_estimated_and_shrinks(
    shards: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from hilif.train.trainer import Trainer, format_duration

    class Left:
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def start_epoch(self, *a) -> None: ...

        def step(self, *a) -> None: ...

        def end_epoch(self, row: dict) -> None: ...

        def remaining(self, seconds: float) -> None:
            self.seconds.append(seconds)

    rep = Left()
    cfg = _cfg(shards, tmp_path / "run", stage="both", stage1_epochs=2, stage2_epochs=1, save_every_steps=0)
    with caplog.at_level("INFO", logger="hilif.train.trainer"):
        Trainer(cfg, reporter=rep).run()
    # 3 steps per epoch, log line every step, the first line of each stage unestimated: 9 - 2 estimates
    assert len(rep.seconds) == 7 and all(s >= 0 for s in rep.seconds)
    assert rep.seconds[-1] < rep.seconds[0]
    text = caplog.text
    assert "plan: stage 1: 2 epochs x 3 steps + stage 2: 1 epochs x 3 steps = 9 optimiser steps" in text
    assert "s per step" in text and "the run's 7 steps left about" in text  # stage 1, after its second step
    assert format_duration(42) == "42 s" and format_duration(3725) == "1 h 2 min"
    assert format_duration(725) == "12 min 5 s" and format_duration(2 * 86400 + 4 * 3600) == "2 d 4 h"


def test_runs_saved_before_select_resume_as_best_validated_and_presets_resolve() -> None:
    """A config.json written before --select existed chose every epoch on validation: it matches --select val
    (the paper's default) and not a demo run, which keeps its last epochs and self-blends (its recipe)."""
    from hilif.train.checkpoint import identity_mismatch
    from hilif.train.config import TrainConfig

    paper = TrainConfig(shards="s", preset="paper")
    assert (paper.select, paper.synth_fakes) == ("val", "none")
    assert identity_mismatch(paper.identity(), {k: v for k, v in paper.to_dict().items() if k != "select"}) == []
    demo = TrainConfig(shards="s", preset="demo")
    assert (demo.select, demo.synth_fakes, demo.stage1_epochs) == ("last", "sbi", 14)
    old_demo = {**demo.to_dict(), "synth_fakes": "none"}
    del old_demo["select"]
    assert set(identity_mismatch(demo.identity(), old_demo)) == {"select", "synth_fakes"}
    assert TrainConfig(shards="s", preset="demo", synth_fakes="none", select="val").synth_fakes == "none"
    # the demo's weight decay is its recipe's (0.05); a demo run saved with the paper's 0.01 resumes only when asked
    assert (paper.weight_decay, demo.weight_decay) == (0.01, 0.05)
    saved_001 = {**demo.to_dict(), "weight_decay": 0.01}
    assert identity_mismatch(demo.identity(), saved_001) == ["weight_decay"]
    assert identity_mismatch(TrainConfig(shards="s", preset="demo", weight_decay=0.01).identity(), saved_001) == []


def test_reals_only_takes_the_presets_reals_only_recipe_and_older_runs_resume_when_asked() -> None:
    """Trained on reals only, the demo's epochs are its reals-only recipe's (24 + 3), the recipe with dataset fakes
    keeps its own (14 + 2); an explicit option wins, a preset without a reals-only recipe keeps its own, and a
    reals-only demo run saved with 16 stage-1 epochs resumes only with --stage1-epochs 16 (the refusal names the
    field); a run with dataset fakes saved with 16 + 3 resumes only when both are asked for."""
    from hilif.train.checkpoint import identity_mismatch
    from hilif.train.config import REALS_ONLY_RECIPES, RECIPES, TrainConfig

    reals_only = dict(train_methods=["none"], synth_fakes="sbi")
    demo = TrainConfig(shards="s", preset="demo", **reals_only)
    assert (demo.stage1_epochs, demo.stage2_epochs) == (24, 3)
    assert REALS_ONLY_RECIPES["demo"] == dict(stage1_epochs=24, stage2_epochs=3)
    shipped = TrainConfig(shards="s", preset="demo")
    assert (shipped.stage1_epochs, shipped.stage2_epochs) == (14, 2)
    assert (RECIPES["demo"]["stage1_epochs"], RECIPES["demo"]["stage2_epochs"]) == (14, 2)
    assert TrainConfig(shards="s", preset="demo", train_methods=["Deepfakes"]).stage1_epochs == 14
    assert TrainConfig(shards="s", preset="demo", stage1_epochs=5, **reals_only).stage1_epochs == 5
    assert TrainConfig(shards="s", preset="demo", stage2_epochs=1, **reals_only).stage2_epochs == 1
    # only the epochs change: everything else is the demo's recipe
    with_fakes = shipped.to_dict()
    differ = {k for k, v in demo.to_dict().items() if with_fakes[k] != v}
    assert differ == {"stage1_epochs", "stage2_epochs", "train_methods"}
    assert TrainConfig(shards="s", preset="paper", **reals_only).stage1_epochs == RECIPES["paper"]["stage1_epochs"]
    saved_16 = {**demo.to_dict(), "stage1_epochs": 16}
    assert identity_mismatch(demo.identity(), saved_16) == ["stage1_epochs"]
    asked = TrainConfig(shards="s", preset="demo", stage1_epochs=16, **reals_only)
    assert identity_mismatch(asked.identity(), saved_16) == []
    # a quick-start run saved before the demo's recipe took 14 + 2 epochs
    saved_16_3 = {**shipped.to_dict(), "stage1_epochs": 16, "stage2_epochs": 3}
    assert sorted(identity_mismatch(shipped.identity(), saved_16_3)) == ["stage1_epochs", "stage2_epochs"]
    asked = TrainConfig(shards="s", preset="demo", stage1_epochs=16, stage2_epochs=3)
    assert identity_mismatch(asked.identity(), saved_16_3) == []


def test_sbi_p_frequency_is_the_presets_and_older_runs_resume_with_what_they_computed() -> None:
    """The demo makes SBI's frequency change on half its self-blended fakes (its recipe), the paper always; a run
    saved before the option existed always made it: a paper run resumes as it is, a demo run only when asked."""
    from hilif.train.checkpoint import identity_mismatch
    from hilif.train.config import TrainConfig

    paper = TrainConfig(shards="s", preset="paper", synth_fakes="sbi")
    demo = TrainConfig(shards="s", preset="demo")
    assert (paper.sbi_p_frequency, demo.sbi_p_frequency) == (1.0, 0.5)
    assert (paper.sbi_config().p_frequency, demo.sbi_config().p_frequency) == (1.0, 0.5)
    assert TrainConfig(shards="s", preset="demo", sbi_p_frequency=0.8).sbi_config().p_frequency == 0.8

    def before_option(cfg: TrainConfig) -> dict:
        saved = cfg.to_dict()
        del saved["sbi_p_frequency"]
        return saved

    assert identity_mismatch(paper.identity(), before_option(paper)) == []
    assert identity_mismatch(demo.identity(), before_option(demo)) == ["sbi_p_frequency"]
    demo_p1 = TrainConfig(shards="s", preset="demo", sbi_p_frequency=1.0)
    assert identity_mismatch(demo_p1.identity(), before_option(demo)) == []
    # a demo run saved with the option at 1 (the default until the recipe changed) is told the same
    assert identity_mismatch(demo.identity(), demo_p1.to_dict()) == ["sbi_p_frequency"]


def test_demo_warms_each_stage_up_and_older_runs_resume_with_what_they_computed() -> None:
    """The demo ramps each stage's lr up over its first epoch (its recipe), the paper does not; the schedule starts
    near 0, reaches the stage's lr at the end of the ramp and then follows the cosine down to --min-lr; a demo run
    saved before the ramp (0 warm-up steps) resumes only with --warmup-steps 0, and the refusal names the field."""
    import torch

    from hilif.train.checkpoint import identity_mismatch
    from hilif.train.config import REALS_ONLY_RECIPES, TrainConfig
    from hilif.train.trainer import make_scheduler

    paper, demo = TrainConfig(shards="s", preset="paper"), TrainConfig(shards="s", preset="demo")
    assert (paper.warmup_steps, demo.warmup_steps) == (0, 40) and demo.warmup_steps == demo.steps_per_epoch
    assert "warmup_steps" not in REALS_ONLY_RECIPES["demo"]  # reals only ramps up too
    assert TrainConfig(shards="s", preset="demo", train_methods=["none"], synth_fakes="sbi").warmup_steps == 40
    assert TrainConfig(shards="s", preset="demo", warmup_steps=0).warmup_steps == 0

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=demo.lr)
    sched = make_scheduler(demo, opt, 200)
    lrs = []
    for _ in range(200):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < demo.lr / 100 and all(a < b for a, b in zip(lrs[:40], lrs[1:41]))  # rising over the ramp
    assert abs(lrs[40] - demo.lr) < 1e-12 and all(a >= b for a, b in zip(lrs[40:], lrs[41:]))  # then falling
    assert abs(lrs[-1] - demo.min_lr) < 1e-4 * demo.lr
    no_ramp = make_scheduler(paper, torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=paper.lr), 200)
    assert abs(no_ramp.get_last_lr()[0] - paper.lr) < 1e-12  # the paper starts at its lr

    saved_before = {**demo.to_dict(), "warmup_steps": 0}
    assert identity_mismatch(demo.identity(), saved_before) == ["warmup_steps"]
    asked = TrainConfig(shards="s", preset="demo", warmup_steps=0)
    assert identity_mismatch(asked.identity(), saved_before) == []

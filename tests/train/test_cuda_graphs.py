"""The training step as a CUDA graph (hilif.train.cuda_graphs): the same loss trajectory as the eager step on the
same batches, the host's learning-rate schedule reaching the graph, a batch of another shape running eagerly;
and hilif-train's --cuda-graphs switch. The tests marked ``cuda`` need a GPU (CPU CI skips them)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from shards_fixture import make_shards, tiny_train_config

from hilif.model import HiLIFConfig, build_model
from hilif.model.loss import LocalRelationLoss
from hilif.train.step import train_step


def cuda(test):
    """Marked ``cuda`` (``pytest -m cuda`` runs only these) and skipped without a CUDA device."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


STEPS = 20
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (the fixture below)


def _batches(n: int, batch: int, size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        images = torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8)
        labels = torch.arange(batch) % 2  # both classes in every batch, as the training stream makes them
        out.append((images.pin_memory(), labels.pin_memory()))
    return out


def _trajectory(
    graphed: bool, stage: int, amp: torch.dtype | None, batches: list, preset: str = "tiny"
) -> tuple[list[float], dict[str, torch.Tensor], object]:
    """Per-step losses and final weights of STEPS steps from the same initial weights, lr changed every step.
    The head's dropout is off: a replay draws its masks from the same generator but not in eager's order."""
    from hilif.train.cuda_graphs import GraphedTrainStep
    from hilif.train.trainer import make_optimizer

    device = torch.device("cuda")
    cfg = dataclasses.replace(HiLIFConfig.preset(preset), pretrained=False, dropout=0.0)
    torch.manual_seed(0)
    torch.cuda.manual_seed(0)
    model = build_model(cfg).to(device).to(memory_format=torch.channels_last).train()
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], 1e-3, 1e-2, device)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS, eta_min=1e-5)
    lrc = LocalRelationLoss(cfg.lrc_k, cfg.lrc_s, cfg.lrc_n) if stage == 2 else None
    step = GraphedTrainStep(model, opt, lrc, 0.5, amp, True) if graphed else None
    losses = []
    for images, labels in batches:
        if step is not None:
            out = step(images, labels)
        else:
            out = train_step(model, opt, images.cuda(), labels.cuda(), lrc, 0.5, amp, True)
        losses.append(float(out.loss))
        sched.step()
    weights = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    return losses, weights, step


@pytest.fixture
def deterministic():
    """PyTorch's deterministic kernels for one test. With the default ones two eager runs of stage 2 already part
    (on an H200, 8e-2 apart by step 20; stage 1 stayed equal): some backward kernels add with atomics (PyTorch warns
    of the memory-efficient attention's), and 20 training steps amplify the last bits. With these kernels graph and
    eager agreed exactly. cuBLAS also needs CUBLAS_WORKSPACE_CONFIG, set before CUDA starts (this module sets it)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


@cuda
@pytest.mark.parametrize("stage", [1, 2])
def test_graphed_step_follows_the_eager_trajectory_in_fp32(stage: int, deterministic: None) -> None:
    batches = _batches(STEPS, 8, 64)
    eager, w_eager, _ = _trajectory(False, stage, None, batches)
    graphed, w_graphed, step = _trajectory(True, stage, None, batches)
    assert step.graph is not None and step.eager_calls == step.warmup  # the rest were replays
    print(f"stage {stage} fp32: max |loss difference| {max(abs(a - b) for a, b in zip(eager, graphed)):.2e}")
    torch.testing.assert_close(torch.tensor(graphed), torch.tensor(eager), rtol=1e-5, atol=1e-5)
    for k in w_eager:
        torch.testing.assert_close(w_graphed[k], w_eager[k], rtol=1e-4, atol=1e-5, msg=k)


@cuda
def test_graphed_step_follows_the_eager_trajectory_in_bf16(deterministic: None) -> None:
    batches = _batches(STEPS, 8, 64, seed=1)
    eager, _, _ = _trajectory(False, 2, torch.bfloat16, batches)
    graphed, _, _ = _trajectory(True, 2, torch.bfloat16, batches)
    print(f"stage 2 bf16: max |loss difference| {max(abs(a - b) for a, b in zip(eager, graphed)):.2e}")
    torch.testing.assert_close(torch.tensor(graphed), torch.tensor(eager), rtol=2e-2, atol=2e-2)


@cuda
def test_each_replay_draws_new_dropout_masks() -> None:
    """With lr 0 the weights stay put, so two replays on one batch differ only by the head's dropout masks."""
    from hilif.train.cuda_graphs import GraphedTrainStep
    from hilif.train.trainer import make_optimizer

    device = torch.device("cuda")
    losses = {}
    for dropout in (0.0, 0.5):
        torch.manual_seed(0)
        cfg = dataclasses.replace(HiLIFConfig.preset("tiny"), pretrained=False, dropout=dropout)
        model = build_model(cfg).to(device).eval()  # eval: BatchNorm's statistics do not move either
        opt = make_optimizer(list(model.parameters()), 0.0, 0.0, device)
        step = GraphedTrainStep(model, opt, None, 0.5, None, False, warmup=1)
        model.head.dropout.train()  # only the dropout in training mode
        images, labels = _batches(1, 8, 64)[0]
        losses[dropout] = [float(step(images, labels).loss) for _ in range(4)]  # eager, capture + replay, 2 replays
    assert len(set(losses[0.0][1:])) == 1 and losses[0.0][0] == pytest.approx(losses[0.0][1], rel=1e-5)
    assert len(set(losses[0.5][1:])) == 3


@cuda
def test_the_graph_reads_the_host_schedule_and_short_batches_run_eagerly() -> None:
    """An lr of 0 from the host freezes the weights in a replay; a batch of another size runs eagerly, after which
    the graph still replays with its own buffers."""
    from hilif.train.cuda_graphs import GraphedTrainStep
    from hilif.train.trainer import make_optimizer

    device = torch.device("cuda")
    model = build_model(dataclasses.replace(HiLIFConfig.preset("tiny"), pretrained=False)).to(device).train()
    opt = make_optimizer(list(model.parameters()), 1e-3, 0.0, device)
    step = GraphedTrainStep(model, opt, None, 0.5, None, False, warmup=2)
    batches = _batches(6, 8, 64)
    for images, labels in batches[:3]:  # two eager warm-up steps, then the capture (and its replay)
        step(images, labels)
    assert step.graph is not None
    before = [p.detach().clone() for p in model.parameters()]
    for g in opt.param_groups:
        g["lr"] = 0.0
    step(*batches[3])
    torch.testing.assert_close([p.detach() for p in model.parameters()], before, rtol=0, atol=0)
    for g in opt.param_groups:
        g["lr"] = 1e-3
    short = (batches[4][0][:6], batches[4][1][:6])
    out = step(*short)
    assert step.eager_calls == 3 and torch.isfinite(out.loss)
    changed = [p.detach().clone() for p in model.parameters()]
    out = step(*batches[5])  # a replay again
    assert step.eager_calls == 3 and torch.isfinite(out.loss)
    assert any(not torch.equal(a, p.detach()) for a, p in zip(changed, model.parameters()))
    assert all(isinstance(g["lr"], float) for g in opt.param_groups)  # the groups hold floats outside the capture


@cuda
def test_hilif_train_with_and_without_cuda_graphs_logs_the_same_losses(tmp_path: Path) -> None:
    shards = make_shards(tmp_path / "shards")
    rows = {}
    for graphs in (False, True):
        out = tmp_path / f"run_{graphs}"
        cfg = tiny_train_config(
            shards, out, stage="both", steps_per_epoch=8, device="cuda", precision="fp32", cuda_graphs=graphs
        )
        from hilif.train.trainer import train

        train(cfg)
        rows[graphs] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for eager, graphed in zip(rows[False], rows[True], strict=True):
        assert graphed["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-3)


# --------------------------------------------------------------------------- the switch, on any machine


def test_cuda_graphs_asked_for_where_they_cannot_run_is_refused(tmp_path: Path) -> None:
    from hilif.train.trainer import Trainer, TrainError

    shards = make_shards(tmp_path / "shards")
    cfg = tiny_train_config(shards, tmp_path / "run", device="cpu", cuda_graphs=True)
    with pytest.raises(TrainError, match="--cuda-graphs: CUDA graphs need a CUDA device; drop --cuda-graphs"):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    assert Trainer(tiny_train_config(shards, tmp_path / "run", device="cpu")).cuda_graphs is False  # auto: off


def test_graphs_supported_names_each_obstacle() -> None:
    from hilif.train.cuda_graphs import graphs_supported

    gpu = torch.device("cuda", 0)
    assert graphs_supported(gpu, distributed=False, compiled=False) is None
    assert "DDP" in graphs_supported(gpu, distributed=True, compiled=False)
    assert "--compile" in graphs_supported(gpu, distributed=False, compiled=True)
    assert "CUDA device" in graphs_supported(torch.device("cpu"), distributed=False, compiled=False)

"""Checkpoints: atomic writes, weights_only loading that refuses pickled payloads, config checks, RNG state."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hilif.train import checkpoint as ck


class Payload:
    """Any Python object: unpickling it could run code, so weights_only loading must refuse it."""

    def __init__(self) -> None:
        self.x = 1


def _save(path: Path, model: torch.nn.Module, **kw) -> Path:
    return ck.save_checkpoint(
        path,
        model=model,
        model_config={"backbone": "b0", "img_size": 64},
        train_config={"lr": 1e-3, "workers": 2},
        stage=1,
        epoch=3,
        step=30,
        **kw,
    )


def test_roundtrip_with_optimiser_scheduler_and_no_temp_left(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    p = _save(tmp_path / "s" / "last.pt", model, optimizer=opt, scheduler=sched, best_metric=0.9, best_epoch=2)
    assert [f.name for f in p.parent.iterdir()] == ["last.pt"]
    got = ck.load_checkpoint(p)
    assert got["model_config"] == {"backbone": "b0", "img_size": 64}
    assert (got["stage"], got["epoch"], got["step"], got["best_epoch"]) == (1, 3, 30, 2)
    m2 = torch.nn.Linear(3, 2)
    m2.load_state_dict(got["model"])
    assert torch.equal(m2.weight, model.weight)
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    opt2.load_state_dict(got["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    sched2.load_state_dict(got["scheduler"])
    assert sched2.last_epoch == 1


def test_version_1_epochs_are_read_counted_from_one(tmp_path: Path) -> None:
    """Version 1 numbered the best epoch from 0 (-1: none): a resume of such a run keeps the same best epoch."""
    p = _save(tmp_path / "last.pt", torch.nn.Linear(3, 2), best_epoch=3, metrics={"epoch": 3, "best_epoch": 3})
    payload = torch.load(p, weights_only=True)
    torch.save({**payload, "version": 1, "best_epoch": 2, "metrics": '{"epoch": 2, "best_epoch": 2}'}, p)
    got = ck.load_checkpoint(p)
    assert (got["epoch"], got["best_epoch"], got["metrics"]) == (3, 3, {"epoch": 3, "best_epoch": 3})
    torch.save({**payload, "version": 1, "best_epoch": -1, "metrics": "{}"}, p)
    assert ck.load_checkpoint(p)["best_epoch"] == 0
    assert ck.load_checkpoint(_save(tmp_path / "new.pt", torch.nn.Linear(3, 2)))["best_epoch"] == 0


def test_pickled_payload_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.pt"
    torch.save({"format": ck.FORMAT, "version": 1, "model": {}, "extra": Payload()}, p)
    with pytest.raises(ck.CheckpointError, match="pickled Python object"):
        ck.load_checkpoint(p)


def test_not_a_checkpoint_and_missing_file(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ck.CheckpointError, match="not a hilif-train checkpoint"):
        ck.load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ck.CheckpointError, match="unreadable"):
        ck.load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(ck.CheckpointError, match="no such checkpoint"):
        ck.load_checkpoint(tmp_path / "none.pt")


def test_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    p = _save(tmp_path / "a.pt", torch.nn.Linear(3, 2))
    got = ck.load_checkpoint(p)
    ck.check_config(p, got, {"backbone": "b0", "img_size": 64})
    with pytest.raises(ck.CheckpointError, match="img_size"):
        ck.check_config(p, got, {"backbone": "b0", "img_size": 96})
    # runtime-only fields (workers) may differ on resume; the lr may not
    ck.check_config(p, got, {"backbone": "b0", "img_size": 64}, {"lr": 1e-3})
    # an execution-only field (how, not what, the model computes) is not compared, present or missing
    ck.check_config(p, got, {"backbone": "b0", "img_size": 64, "small_map_depthwise": True})
    ck.check_config(
        p,
        {**got, "model_config": {**got["model_config"], "small_map_depthwise": False}},
        {"backbone": "b0", "img_size": 64, "small_map_depthwise": True},
    )
    with pytest.raises(ck.CheckpointError, match="lr"):
        ck.check_config(p, got, {"backbone": "b0", "img_size": 64}, {"lr": 2e-4})


def test_model_config_mismatch_skips_execution_fields() -> None:
    """A run written before small_map_depthwise existed (or with it off) resumes; a real difference still counts."""
    new = {"backbone": "b0", "img_size": 96, "small_map_depthwise": True}
    assert ck.model_config_mismatch(new, {"backbone": "b0", "img_size": 96}) == []
    assert ck.model_config_mismatch(new, {**new, "small_map_depthwise": False}) == []
    assert ck.model_config_mismatch(new, {"backbone": "b0", "img_size": 64}) == ["img_size"]
    assert ck.config_mismatch(new, {"backbone": "b0", "img_size": 96}) == ["small_map_depthwise"]


def test_rng_state_restores_python_numpy_torch() -> None:
    state = ck.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a

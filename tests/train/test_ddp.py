"""DDP on two CPU processes (gloo): both ranks take the same number of steps and end with identical weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from ranks_fixture import become_rank, free_port
from shards_fixture import make_shards, tiny_train_config


def _rank_main(rank: int, world: int, port: int, shards: str, out: str) -> None:
    become_rank(rank, world, port)
    from hilif.train import distributed as dist_util
    from hilif.train.trainer import Trainer

    class Count:
        steps = 0
        labels = 0
        rows: list = []

        def start_epoch(self, *a) -> None: ...

        def step(self, *a) -> None:
            Count.steps += 1

        def end_epoch(self, row) -> None:
            Count.rows.append(row)

    cfg = tiny_train_config(
        shards, out, stage="both", stage1_epochs=1, steps_per_epoch=0, val_batch_size=8, shuffle_buffer=10, device="cpu"
    )
    trainer = Trainer(cfg, reporter=Count())
    trainer.run()
    torch.save(
        {
            "steps": Count.steps,
            "planned": trainer.plan.steps,
            "skipped": [(r["skipped"], r["val_skipped"]) for r in Count.rows],
            "weights": {k: v.clone() for k, v in trainer.model.state_dict().items()},
        },
        Path(out) / f"rank{rank}.pt",
    )
    dist_util.cleanup()


@pytest.mark.slow
def test_two_ranks_same_steps_identical_weights(tmp_path: Path) -> None:
    shards = make_shards(tmp_path / "shards")
    out = tmp_path / "run"
    mp.spawn(_rank_main, args=(2, free_port(), str(shards), str(out)), nprocs=2, join=True)
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    # 16 real / 16 fake train samples, global batch 4: 8 steps per epoch on each rank, two stages
    assert r0["planned"] == r1["planned"] == 8
    assert r0["steps"] == r1["steps"] == 2 * 8
    assert r0["skipped"] == r1["skipped"] == [(0, 0), (0, 0)]  # summed over ranks, in every epoch's row
    for k, v in r0["weights"].items():
        assert torch.equal(v, r1["weights"][k]), k
    assert (out / "stage2" / "best.pt").is_file() and not (out / "rank0" / "stage1").exists()

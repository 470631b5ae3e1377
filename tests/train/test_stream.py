"""The training stream under torchrun, simulated: ranks and loader workers at small scale on FF++-like shards.

Ranks are simulated in one process by passing rank/world size explicitly; loader workers by calling
`stream.batches(worker, num_workers)` and merging the workers' batches round-robin as the DataLoader does
(one test checks that merge against a real DataLoader with worker processes, one runs under the spawn start method).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from shards_fixture import make_shards
from torch.utils.data import DataLoader

from hilif.pipeline import schema
from hilif.train.data import (
    BalancedTrainStream,
    DataError,
    EvalStream,
    SkipTally,
    local_batch_size,
    make_loader,
    plan_epoch,
    twin_video,
)
from hilif.train.evaluate import sample_counts

# FF++ proportions: 1 real video per 4 fake ones (two methods), each video's frames written in order
LAYOUT = {
    "train": (2, {"Deepfakes": 4, "FaceSwap": 4}),
    "val": (2, {"Deepfakes": 4, "FaceSwap": 4}),
    "test": (1, {"Deepfakes": 1}),
}
FRAMES = 5


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("stream"), frames=FRAMES, layout=LAYOUT, maxcount=7)


def loader_order(stream: BalancedTrainStream | EvalStream, workers: int) -> list[dict[str, Any]]:
    """What a DataLoader with `workers` processes yields: worker 0's first batch, worker 1's first, ..."""
    if workers == 0:
        return list(stream.batches(0, 1))
    gens = [stream.batches(w, workers) for w in range(workers)]
    out, active = [], list(range(workers))
    while active:
        for w in list(active):
            try:
                out.append(next(gens[w]))
            except StopIteration:
                active.remove(w)
    return out


def run_ranks(
    shards: Path, global_batch: int, world: int, workers: int, epoch: int = 0, start_step: int = 0, **kw: Any
) -> list[list[dict[str, Any]]]:
    out = []
    for rank in range(world):
        s = BalancedTrainStream(shards, "train", 32, global_batch, rank=rank, world_size=world, seed=7, **kw)
        s.set_epoch(epoch, start_step)
        out.append(loader_order(s, workers))
    return out


def keys_by_step(per_rank: list[list[dict[str, Any]]]) -> list[list[str]]:
    return [[k for r in range(len(per_rank)) for k in per_rank[r][g]["key"]] for g in range(len(per_rank[0]))]


# per-rank batch odd (3) and even (2, 4), 2-4 ranks
CASES = [(6, 2), (12, 4), (6, 3), (8, 2), (8, 4)]


@pytest.mark.parametrize("global_batch,world", CASES)
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_every_global_step_balanced_larger_class_once_smaller_even(
    shards: Path, global_batch: int, world: int, workers: int
) -> None:
    n_real, n_fake = 2 * FRAMES, 8 * FRAMES
    half = global_batch // 2
    per_rank = run_ranks(shards, global_batch, world, workers)
    steps = plan_epoch(n_real, n_fake, global_batch, world).steps
    assert [len(b) for b in per_rank] == [steps] * world  # identical step counts on every rank
    for r, batches in enumerate(per_rank):
        assert [b["step"] for b in batches] == list(range(steps))  # in step order, whatever the workers
        assert all(len(b["label"]) == global_batch // world for b in batches)
    fakes, reals = Counter(), Counter()
    for g in range(steps):
        labels = torch.cat([per_rank[r][g]["label"] for r in range(world)])
        assert int(labels.sum()) == half, f"global step {g} is not half fake"  # balanced by construction
        for r in range(world):
            for key, y in zip(per_rank[r][g]["key"], per_rank[r][g]["label"].tolist()):
                (fakes if y == schema.FAKE else reals)[key] += 1
    # the larger class exactly once (the last step topped up with at most half - 1 repeats), none left out
    assert len(fakes) == n_fake and sum(fakes.values()) == steps * half
    assert sum(c - 1 for c in fakes.values()) < half
    # the smaller class repeated evenly: every real k or k + 1 times
    assert len(reals) == n_real and max(reals.values()) - min(reals.values()) <= 1


def test_data_plan_does_not_depend_on_the_workers(shards: Path) -> None:
    plans = {w: keys_by_step(run_ranks(shards, 6, 2, w, epoch=1)) for w in (0, 1, 2, 3)}
    assert plans[0] == plans[1] == plans[2] == plans[3]
    # augmentation too: the same pixels whichever worker built the batch
    a, b = run_ranks(shards, 6, 2, 0, epoch=1), run_ranks(shards, 6, 2, 3, epoch=1)
    assert all(torch.equal(x["image"], y["image"]) for r in range(2) for x, y in zip(a[r], b[r]))
    # and a new epoch is a new permutation
    assert keys_by_step(run_ranks(shards, 6, 2, 0, epoch=2)) != plans[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_start_step_resume_equals_the_uninterrupted_epoch(shards: Path, workers: int) -> None:
    full = run_ranks(shards, 6, 2, 0, epoch=3)
    resumed = run_ranks(shards, 6, 2, workers, epoch=3, start_step=5)
    for r in range(2):
        assert [b["step"] for b in resumed[r]] == list(range(5, len(full[r])))
        for x, y in zip(full[r][5:], resumed[r]):
            assert x["key"] == y["key"] and torch.equal(x["image"], y["image"])


def test_real_dataloader_with_worker_processes_matches_the_simulation(shards: Path) -> None:
    s = BalancedTrainStream(shards, "train", 32, 6, rank=1, world_size=2, seed=7)
    s.set_epoch(0, start_step=3)
    got = list(make_loader(s, 2))  # 11 steps over 2 workers: uneven shares
    want = loader_order(s, 0)
    assert [b["step"] for b in got] == list(range(3, s.steps))
    assert [b["key"] for b in got] == [b["key"] for b in want]


def test_loader_workers_under_the_spawn_start_method(shards: Path) -> None:
    s = BalancedTrainStream(shards, "train", 32, 6, rank=1, world_size=2, seed=7, augment="colour")
    s.set_epoch(2)
    dl = DataLoader(s, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    got = list(dl)
    assert [b["key"] for b in got] == [b["key"] for b in loader_order(s, 0)]  # rank 1's plan, not rank 0's
    e = EvalStream(shards, "val", 32, 8, max_batches=3, rank=0, world_size=1)
    assert len(list(DataLoader(e, batch_size=None, num_workers=2, multiprocessing_context="spawn"))) == 3


def test_batches_mix_many_videos_from_the_first_step(tmp_path: Path) -> None:
    # 40 real and 40 fake videos x 10 frames, each video's frames consecutive in its shard (as extract writes them)
    root = make_shards(
        tmp_path / "s", frames=10, layout={"train": (40, {"Deepfakes": 40}), "val": (1, {"Deepfakes": 1})}, maxcount=50
    )
    s = BalancedTrainStream(root, "train", 16, 16, 10, rank=0, world_size=1, seed=0)
    # the first steps: a shuffle buffer filled from the first shards would give 1-3 videos per class here;
    # 8 draws out of 40 videos give 7.3 distinct ones on average
    distinct = {
        y: [len({v for v, lab in zip(b["video"], b["label"].tolist()) if lab == y}) for b in s.batches()]
        for y in (schema.REAL, schema.FAKE)
    }
    for y, counts in distinct.items():
        assert min(counts) >= 5 and np.mean(counts) >= 6.5, (y, counts)


def test_per_rank_batch_of_one_and_odd_global_batch_refused() -> None:
    with pytest.raises(DataError, match="--batch-size 8 or more"):
        local_batch_size(4, 4)
    with pytest.raises(DataError, match="even"):
        local_batch_size(9, 3)
    assert local_batch_size(12, 4) == 3


def test_stratified_validation_cap_exact_batches_both_classes(shards: Path) -> None:
    # reals come first in shard order: a cap that took the first batches would be all real
    for world, workers in ((1, 0), (2, 2), (3, 1)):
        per_rank = [
            loader_order(EvalStream(shards, "val", 32, 4, max_batches=5, rank=r, world_size=world), workers)
            for r in range(world)
        ]
        batches = [b for r in per_rank for b in r]
        assert len(batches) == 5, (world, workers)
        labels = torch.cat([b["label"] for b in batches])
        assert len(labels) == 20 and 2 <= int((labels == 0).sum()) <= 6  # 10 real : 40 fake -> 4 reals of 20
        keys = [k for b in batches for k in b["key"]]
        assert len(set(keys)) == 20
    # uncapped: every sample once over ranks and workers, one partial batch at the end
    per_rank = [loader_order(EvalStream(shards, "val", 32, 8, rank=r, world_size=2), 2) for r in range(2)]
    keys = [k for r in per_rank for b in r for k in b["key"]]
    assert len(keys) == len(set(keys)) == 50


def _one_class_unreadable(shards: Path, tmp_path: Path, split: str, label: str) -> Path:
    root = tmp_path / "bad"
    shutil.copytree(shards, root)
    for tar in (root / split / label).glob("*.tar"):
        tar.write_bytes(b"\x00garbage" * 4000)
    return root


def test_val_split_without_readable_reals_is_an_error_before_training(shards: Path, tmp_path: Path) -> None:
    root = _one_class_unreadable(shards, tmp_path, "val", "real")
    with pytest.raises(DataError, match="both classes"):
        EvalStream(root, "val", 32, 4, require_both=True)


def test_all_shards_of_a_class_unreadable_is_a_data_error(shards: Path, tmp_path: Path) -> None:
    root = _one_class_unreadable(shards, tmp_path, "train", "fake")
    with pytest.raises(DataError, match="no readable fake train samples"):
        BalancedTrainStream(root, "train", 32, 6, rank=0, world_size=1)


def _corrupt_images(root: Path, split: str, label: str, every: int) -> int:
    """Overwrite the PNG bytes of every `every`-th sample in place (the tar stays valid): undecodable images."""
    import tarfile

    n = 0
    for tar in sorted((root / split / label).glob("*.tar")):
        with tarfile.open(tar) as tf:
            pngs = [(m.offset_data, m.size) for m in tf if m.name.endswith(".png")]
        data = bytearray(tar.read_bytes())
        for off, size in pngs[::every]:
            data[off : off + size] = b"\xff" * size
            n += 1
        tar.write_bytes(bytes(data))
    return n


def test_corrupt_samples_are_replaced_counted_and_balance_holds(shards: Path, tmp_path: Path) -> None:
    root = tmp_path / "corrupt"
    shutil.copytree(shards, root)
    bad = _corrupt_images(root, "train", "fake", every=3)
    assert bad > 3
    # --train-methods path too (its own filter once killed training on a corrupt sample)
    for methods in ((), ("Deepfakes",)):
        per_rank = run_ranks(root, 6, 2, 2, methods=methods)
        tally = [SkipTally() for _ in per_rank]
        for r, batches in enumerate(per_rank):
            for b in batches:
                tally[r].update(b)
        assert sum(t.total() for t in tally) > 0
        for g in range(len(per_rank[0])):
            assert int(per_rank[0][g]["label"].sum() + per_rank[1][g]["label"].sum()) == 3
        assert all(
            m in ("real", *(methods or ("Deepfakes", "FaceSwap"))) for r in per_rank for b in r for m in b["method"]
        )


def test_eval_skips_counted_and_the_report_warns(shards: Path, tmp_path: Path) -> None:
    root = tmp_path / "corrupt"
    shutil.copytree(shards, root)
    bad = _corrupt_images(root, "val", "fake", every=4)
    stream = EvalStream(root, "val", 32, 8)
    tally = SkipTally()
    scored = sum(len(b["label"]) for b in tally.wrap(loader_order(stream, 2)))
    assert tally.total() == bad and scored == 50 - bad
    counts = sample_counts(scored, stream.expected, tally.total() + stream.missing, 50, capped=False)
    assert not counts["complete"] and str(bad) in counts["warning"]
    assert sample_counts(50, 50, 0, 50, capped=False)["warning"] is None


def test_truncated_shard_samples_counted_as_missing(shards: Path, tmp_path: Path) -> None:
    root = tmp_path / "trunc"
    shutil.copytree(shards, root)
    tar = sorted((root / "train" / "fake").glob("*.tar"))[0]
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2 + 100])
    s = BalancedTrainStream(root, "train", 32, 6, rank=0, world_size=1)
    assert s.missing >= 1 and s.counts[1] == 8 * FRAMES - s.missing
    assert sum(int(b["label"].sum()) for b in s.batches()) == 3 * s.steps


# ---- twins: each fake beside its target video's same frame


def test_twin_video_follows_each_datasets_names() -> None:
    assert twin_video("ffpp", "000_003") == "000" and twin_video("demo", "012_004") == "012"
    assert twin_video("ffpp", "000") is None  # a real has no twin
    assert twin_video("celebdf", "Celeb-synthesis_id0_id16_0003") == "Celeb-real_id0_0003"
    assert twin_video("celebdf", "Celeb-real_id0_0003") is None
    assert twin_video("dfdc", "abcdefghij") is None and twin_video("folder", "a_b") is None


@pytest.mark.parametrize("global_batch,world,workers", [(6, 1, 0), (8, 2, 2)])
def test_twins_pair_every_fake_with_its_targets_same_frame(
    tmp_path: Path, global_batch: int, world: int, workers: int
) -> None:
    layout = {split: (3, {"Deepfakes": 3, "FaceSwap": 3}) for split in ("train", "val", "test")}
    root = make_shards(tmp_path, dataset="ffpp", frames=4, layout=layout, maxcount=5, twin_names=True)
    per_rank = [
        loader_order(
            _set(BalancedTrainStream(root, "train", 32, global_batch, rank=r, world_size=world, twins=True)), workers
        )
        for r in range(world)
    ]
    reals: Counter = Counter()
    fakes: Counter = Counter()
    for batches in per_rank:
        for b in batches:
            for j in range(0, len(b["key"]), 2):  # real, fake, real, fake, ...: a fake's twin sits just before it
                (real_video, real_key), (fake_video, fake_key) = (
                    (b["video"][j], b["key"][j]),
                    (b["video"][j + 1], b["key"][j + 1]),
                )
                assert b["label"][j] == schema.REAL and b["label"][j + 1] == schema.FAKE
                assert real_video.rsplit("/", 1)[1] == fake_video.rsplit("/", 1)[1].split("_")[0]  # its target
                assert real_key.rsplit("_f", 1)[1] == fake_key.rsplit("_f", 1)[1]  # the same frame
                reals[real_key] += 1
                fakes[fake_key] += 1
    # every fake once; every real as often as the fakes made from it (here 2 per frame): balance by the pairing
    assert len(fakes) == 24 and set(fakes.values()) == {1}
    assert len(reals) == 12 and set(reals.values()) == {2}


def _set(stream: BalancedTrainStream) -> BalancedTrainStream:
    stream.set_epoch(0)
    return stream


def test_twins_fall_back_to_the_real_sequence_and_refuse_nameless_datasets(shards: Path, tmp_path: Path) -> None:
    layout = {split: (2, {"Deepfakes": 2}) for split in ("train", "val", "test")}  # fakes 000_001 and 001_000
    root = make_shards(tmp_path, dataset="ffpp", frames=3, layout=layout, maxcount=3, twin_names=True)
    real_dir = schema.shard_dir(root, "train", schema.REAL)
    for path in sorted(real_dir.glob("000-00001.*")):  # real video 001 (one shard per video) is gone
        path.unlink()
    s = _set(BalancedTrainStream(root, "train", 32, 4, twins=True, rank=0, world_size=1))
    fake_videos = [b["video"][j] for b in s.batches() for j in range(1, len(b["key"]), 2)]
    real_videos = [b["video"][j] for b in s.batches() for j in range(0, len(b["key"]), 2)]
    # fakes of target 000 sit beside real 000; those of the missing target 001 beside the real sequence's sample
    assert all(r.endswith("/000") for r in real_videos)  # the only real left
    assert sorted(set(fake_videos)) == ["ffpp/Deepfakes/000_001", "ffpp/Deepfakes/001_000"]
    assert sorted(s.twins.tolist()).count(-1) == 3  # 001_000's three frames have no twin
    # a dataset whose names do not tell the target: a one-line error naming the folder
    with pytest.raises(DataError, match="no fake of the train split has a known real twin"):
        BalancedTrainStream(shards, "train", 32, 4, twins=True, rank=0, world_size=1)

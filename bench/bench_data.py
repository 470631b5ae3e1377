"""The training data plan at scale, without a model: today's stream vs the one before issue 10, side by side.

Synthetic shards with FF++ c40's train proportions (720 real / 2880 fake videos x 80 frames, 4 fake methods,
tiny 8x8 images), each video's frames written consecutively and 10 videos per shard, as `hilif-prep extract`
writes them. For each ranks x workers setting, every (rank, worker) stream is run in this process (rank and world
size passed explicitly; the old stream's torch.distributed / worker lookups are patched) for one epoch, the batches
are put back in the order the DataLoaders and ranks would consume them, and per epoch it prints:

- unbalanced: global steps whose batch is not exactly half real, half fake (want 0);
- once: share of the larger class (fakes) read exactly once in the epoch (want >= 99 %); missed: never read;
- distinct real / fake: mean number of different videos among a global batch's reals (fakes), as a share of their
  count (want >= 90 %), over all steps and over the epoch's first 20 steps;
- wall time of the epoch's reading.

Image decoding is skipped in both streams (metadata-only mode: `decode_image` returns a constant 9x9 image; the
crop/flip/collate still run): the plan is what is measured, not PNG speed; `--decode` decodes for real.
The old stream is `train/data.py` of commit f65a9c0 loaded from git (`git show`), not kept in the repository.

    python bench/bench_data.py                       # 1x4, 4x4, 8x2 ranks x workers
    python bench/bench_data.py --videos 72 --frames 20 --settings 2x2   # a quick look
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import webdataset as wds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hilif.pipeline import schema  # noqa: E402
from hilif.train import data as new_data  # noqa: E402

OLD_REV = "f65a9c0"
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


def write_shards(root: Path, real_videos: int, frames: int, videos_per_shard: int = 10) -> Path:
    """FF++-like train split: `real_videos` reals, 4x as many fakes (one per method), frames in video order."""
    tiny = cv2.imencode(".png", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
    samples: dict[str, int] = {}
    methods: dict[str, int] = {}
    for label, names in ((schema.REAL, (schema.REAL_METHOD,)), (schema.FAKE, METHODS)):
        d = schema.shard_dir(root, "train", label)
        d.mkdir(parents=True, exist_ok=True)
        videos = [(m, v) for m in names for v in range(real_videos)]
        for s in range(0, len(videos), videos_per_shard):
            tar = schema.shard_path(root, "train", label, 0, s // videos_per_shard)
            n = 0
            with wds.TarWriter(str(tar)) as sink:
                for method, v in videos[s : s + videos_per_shard]:
                    for f in range(frames):
                        meta = schema.SampleMeta(
                            dataset="ffpp",
                            split="train",
                            label=label,
                            method=method,
                            quality="c40",
                            video_id=f"{v:03d}",
                            frame_index=f,
                            frame_count=frames,
                            fps=25.0,
                            box=[0, 0, 8, 8],
                            landmarks=[[1, 1]] * 5,
                            detector="synthetic",
                            score=1.0,
                            sample_index=f,
                            samples_in_video=frames,
                            target_index=f,
                        )
                        sink.write(schema.encode_sample(meta, tiny))
                        n += 1
                        methods[method] = methods.get(method, 0) + 1
            schema.write_stats(
                tar,
                schema.ShardStats(
                    shard=tar.name,
                    split="train",
                    label=label,
                    samples=n,
                    videos=min(videos_per_shard, len(videos) - s),
                    bytes=tar.stat().st_size,
                ),
            )
            samples.setdefault("train", {})
            name = schema.LABEL_NAMES[label]
            samples["train"][name] = samples["train"].get(name, 0) + n
    schema.DatasetInfo(
        dataset="ffpp",
        quality="c40",
        command="bench_data",
        config={},
        versions={},
        samples=samples,
        videos={"train": {"real": real_videos, "fake": 4 * real_videos}},
        methods={"train": methods},
    ).save(root)
    return root


def load_old_module() -> types.ModuleType:
    """train/data.py as of OLD_REV, imported from `git show` (never copied into the repository)."""
    repo = Path(__file__).resolve().parents[1]
    src = subprocess.run(
        ["git", "show", f"{OLD_REV}:train/data.py"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    mod = types.ModuleType("hilif_train_data_old")
    mod.__file__ = f"git:{OLD_REV}:train/data.py"
    sys.modules[mod.__name__] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


class _Sim:
    """The (rank, world, worker, workers) the patched old stream sees."""

    rank, world, worker, workers = 0, 1, 0, 1


def patch_old(mod: types.ModuleType) -> None:
    def split_by_node(src: Iterator[Any]) -> Iterator[Any]:
        return itertools.islice(src, _Sim.rank, None, _Sim.world)

    def split_by_worker(src: Iterator[Any]) -> Iterator[Any]:
        return itertools.islice(src, _Sim.worker, None, _Sim.workers)

    shim = types.SimpleNamespace(**{k: getattr(wds, k) for k in dir(wds) if not k.startswith("__")})
    shim.split_by_node, shim.split_by_worker = split_by_node, split_by_worker
    mod.wds = shim
    mod._rank = lambda: _Sim.rank
    mod._worker_id = lambda: (_Sim.worker, _Sim.workers)


def skip_decode(*mods: types.ModuleType) -> None:
    img = np.full((9, 9, 3), 128, np.uint8)
    for m in mods:
        m.decode_image = lambda data, _img=img: _img


class Ids:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, s: str) -> int:
        return self.ids.setdefault(s, len(self.ids))


def run_new(root: Path, ranks: int, workers: int, batch: int, epoch: int, ids: Ids, vids: Ids) -> dict[int, list]:
    """Global step -> [(label, key id, video id)] for today's stream."""
    steps: dict[int, list] = {}
    for r in range(ranks):
        s = new_data.BalancedTrainStream(root, "train", 8, batch, rank=r, world_size=ranks, seed=0)
        s.set_epoch(epoch)
        for w in range(workers):
            for b in s.batches(w, workers):
                steps.setdefault(b["step"], []).extend(
                    zip(b["label"].tolist(), map(ids, b["key"]), map(vids, b["video"]))
                )
    return steps


def run_old(
    mod: types.ModuleType, root: Path, ranks: int, workers: int, batch: int, epoch: int, ids: Ids, vids: Ids
) -> dict[int, list]:
    info = mod.load_info(root)
    plan = mod.plan_epoch(*mod.class_counts(info, "train"), global_batch=batch, world_size=ranks, workers=workers)
    steps: dict[int, list] = {}
    for r in range(ranks):
        for w in range(workers):
            _Sim.rank, _Sim.world, _Sim.worker, _Sim.workers = r, ranks, w, workers
            s = mod.BalancedTrainStream(root, "train", 8, plan.local_batch, plan.batches_per_worker, seed=0)
            s.set_epoch(epoch)
            for j, b in enumerate(s):  # the DataLoader takes worker 0's batch, worker 1's, ...: step j * W + w
                steps.setdefault(j * workers + w, []).extend(
                    zip(b["label"].tolist(), map(ids, b["key"]), map(vids, b["video"]))
                )
    return steps


def figures(steps: dict[int, list], n_fake: int, batch: int) -> dict[str, float]:
    order = sorted(steps)
    unbalanced = sum(1 for g in order if sum(lab for lab, _, _ in steps[g]) * 2 != len(steps[g]))
    reads = Counter(k for g in order for lab, k, _ in steps[g] if lab == schema.FAKE)
    once = sum(1 for c in reads.values() if c == 1) / n_fake

    def distinct(label: int, which: list[int]) -> float:
        shares = []
        for g in which:
            v = [vid for lab, _, vid in steps[g] if lab == label]
            if v:
                shares.append(len(set(v)) / len(v))
        return float(np.mean(shares)) if shares else float("nan")

    first = order[:20]
    return {
        "steps": len(order),
        "unbalanced": unbalanced,
        "once": once,
        "missed": 1 - len(reads) / n_fake,
        "real": distinct(schema.REAL, order),
        "fake": distinct(schema.FAKE, order),
        "real20": distinct(schema.REAL, first),
        "fake20": distinct(schema.FAKE, first),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=720, help="real train videos (fakes: 4x)")
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument(
        "--settings",
        default="1x4:12,4x4:12,8x2:24",
        help="ranks x workers : global batch, comma-separated (default: the paper's batch 12; 24 on 8 ranks)",
    )
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--shards", type=Path, default=None, help="reuse a folder written by an earlier run")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic shards (their path is printed)")
    ap.add_argument("--decode", action="store_true", help="decode the images (default: metadata-only)")
    ap.add_argument("--skip-old", action="store_true")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    old = load_old_module()
    patch_old(old)
    if not args.decode:
        skip_decode(old, new_data)
    tmp = Path(tempfile.mkdtemp(prefix="hilif-bench-data-"))
    try:
        root = args.shards
        if root is None or not (root / schema.DATASET_JSON).is_file():
            root = root or tmp / "ffpp_c40"
            t0 = time.perf_counter()
            write_shards(root, args.videos, args.frames)
            print(
                f"# wrote {root}: {args.videos} real / {4 * args.videos} fake videos x {args.frames} frames "
                f"in {time.perf_counter() - t0:.0f} s"
            )
        n_real, n_fake = args.videos * args.frames, 4 * args.videos * args.frames
        t0 = time.perf_counter()
        new_data.class_index(root, "train", schema.REAL), new_data.class_index(root, "train", schema.FAKE)
        print(
            f"# today's stream: shard index of {n_real + n_fake} samples built in {time.perf_counter() - t0:.1f} s "
            f"(once per process; cached)"
        )
        print(
            f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{'decode' if args.decode else 'metadata-only (no image decode)'}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        )
        head = (
            f"{'ranks x workers':>15} {'batch':>5} {'stream':>6} {'epoch':>5} {'steps':>6} {'unbalanced':>10} "
            f"{'once %':>7} {'missed %':>8} {'distinct real %':>15} {'distinct fake %':>15} "
            f"{'first 20: real/fake %':>21} {'wall s':>7}"
        )
        print(head)
        for setting in args.settings.split(","):
            rw, batch = setting.split(":")
            ranks, workers = (int(x) for x in rw.split("x"))
            for epoch in range(args.epochs):
                runs: list[tuple[str, Callable[..., dict[int, list]]]] = [("new", run_new)]
                if not args.skip_old:
                    runs.append(("old", lambda *a: run_old(old, *a)))
                for name, fn in runs:
                    t0 = time.perf_counter()
                    steps = fn(root, ranks, workers, int(batch), epoch, Ids(), Ids())
                    wall = time.perf_counter() - t0
                    f = figures(steps, n_fake, int(batch))
                    print(
                        f"{rw:>15} {batch:>5} {name:>6} {epoch:>5} {f['steps']:>6} {f['unbalanced']:>10} "
                        f"{100 * f['once']:>7.2f} {100 * f['missed']:>8.2f} {100 * f['real']:>15.1f} "
                        f"{100 * f['fake']:>15.1f} {100 * f['real20']:>10.1f}/{100 * f['fake20']:<10.1f} "
                        f"{wall:>7.1f}",
                        flush=True,
                    )
    finally:
        if args.keep:
            print(f"# shards kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Loader throughput of one worker: shards (webdataset, decode + augment to tensors) vs the same faces as PNG files.

Prints samples/s (median of repeats) of
  - the training stream (BalancedTrainStream: planned random access into the tars -> PNG decode -> random crop + flip
    -> uint8 tensors),
  - the evaluation stream (EvalStream: centre crop),
  - a plain folder tree of the same PNGs read with cv2 + the same augmentation through a map-style DataLoader,
all in this process (num_workers=0 = one worker's work), one thread. Target: >= 300 samples/s at 224.

    python bench/bench_loader.py                       # synthetic textured 256x256 faces
    python bench/bench_loader.py --shards shards/demo  # a real shard folder (its train split)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, Dataset

from hilif.pipeline import schema
from hilif.train.data import BalancedTrainStream, EvalStream, decode_image, make_loader, to_chw_tensor, train_augment


def textured_faces(n: int, seed: int = 0) -> list[np.ndarray]:
    """256x256 crops of scikit-image's natural photos with mild noise: PNG sizes like real faces (~100-150 kB)."""
    from skimage import data

    srcs = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = srcs[i % len(srcs)]
        y = int(rng.integers(0, src.shape[0] - 256))
        x = int(rng.integers(0, src.shape[1] - 256))
        img = src[y : y + 256, x : x + 256].astype(np.float32) + rng.normal(0, 3, (256, 256, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def write_synthetic(root: Path, n: int) -> Path:
    faces = textured_faces(n)
    for label in (schema.REAL, schema.FAKE):
        d = schema.shard_dir(root, "train", label)
        d.mkdir(parents=True, exist_ok=True)
        with wds.ShardWriter(str(d / "000-%05d.tar"), maxcount=200, verbose=0) as sink:
            for i, face in enumerate(faces[label::2]):
                meta = schema.SampleMeta(
                    dataset="bench",
                    split="train",
                    label=label,
                    method="real" if label == schema.REAL else "Deepfakes",
                    quality="raw",
                    video_id=f"{i // 20:03d}",
                    frame_index=i % 20,
                    frame_count=20,
                    fps=25.0,
                    box=[0, 0, 1, 1],
                    landmarks=[[0, 0]] * 5,
                    detector="none",
                    score=1.0,
                )
                ok, png = cv2.imencode(".png", cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
                sink.write(schema.encode_sample(meta, png.tobytes()))
        for tar in d.glob("*.tar"):  # the stats announce what the tar holds (the index checks them)
            with tarfile.open(tar) as tf:
                keys = {m.name.split(".", 1)[0] for m in tf.getmembers()}
            stats = schema.ShardStats(tar.name, "train", label, len(keys), 0, tar.stat().st_size)
            schema.write_stats(tar, stats)
    return root


def export_tree(shards: Path, tree: Path, limit: int) -> list[Path]:
    """The same faces as PNG files: tree/<label>/<method>/<video>/<key>.png (bytes copied, not re-encoded)."""
    files = []
    for label in (schema.REAL, schema.FAKE):
        urls = [str(p) for p, _ in schema.complete_shards(shards, "train", label)]
        for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False).slice(limit // 2):
            meta = schema.SampleMeta.from_json(s["json"])
            ext = schema.sample_image_ext(s)
            p = tree / schema.LABEL_NAMES[label] / meta.method / meta.video_id / f"{s['__key__']}.{ext}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(s[ext])
            files.append(p)
    return files


class FolderFaces(Dataset):
    def __init__(self, files: list[Path], img_size: int) -> None:
        self.files, self.img_size = files, img_size
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        img = decode_image(self.files[i].read_bytes())
        img = train_augment(img, self.img_size, self.rng)
        return to_chw_tensor(img), int(self.files[i].parts[-4] == "fake")


def rate(fn, repeats: int) -> tuple[float, int]:
    rates, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, help="a shard folder (train split); default: synthetic faces")
    ap.add_argument("--samples", type=int, default=800)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    tmp = Path(tempfile.mkdtemp(prefix="hilif-bench-"))
    try:
        shards = args.shards or write_synthetic(tmp / "shards", args.samples)
        files = export_tree(shards, tmp / "tree", args.samples)
        n = len(files)
        mean_kb = sum(f.stat().st_size for f in files) / n / 1024
        batches = max(1, n // args.batch)

        def shards_train() -> int:
            s = BalancedTrainStream(shards, "train", args.img_size, args.batch, batches, rank=0, world_size=1)
            return sum(len(b["label"]) for b in make_loader(s, 0))

        def shards_eval() -> int:
            split_root = shards
            return sum(
                len(b["label"])
                for b in make_loader(EvalStream(split_root, "train", args.img_size, args.batch, max_batches=batches), 0)
            )

        def folder() -> int:
            dl = DataLoader(FolderFaces(files, args.img_size), batch_size=args.batch, shuffle=True, num_workers=0)
            return sum(len(y) for _, y in dl)

        print(
            f"one worker, 1 thread, {n} faces of 256x256 ({mean_kb:.0f} kB per PNG), output {args.img_size}x"
            f"{args.img_size} uint8 tensors, batch {args.batch}, median of {args.repeats}"
        )
        res = {}
        for name, fn in (
            ("shards, train (crop+flip)", shards_train),
            ("shards, eval (centre crop)", shards_eval),
            ("PNG folder tree, train", folder),
        ):
            res[name], got = rate(fn, args.repeats)
            print(f"  {name:28s} {res[name]:8.1f} samples/s  ({got} samples per run)")
        base = res["PNG folder tree, train"]
        print(
            f"  shards / folder (train): {res['shards, train (crop+flip)'] / base:.2f}x; "
            f"target >= 300 samples/s: {'met' if res['shards, train (crop+flip)'] >= 300 else 'NOT met'}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

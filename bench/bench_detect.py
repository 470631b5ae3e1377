"""hilif-eval detect speed: faces per second on a 10 s 640x480 video with 1 and with 4 faces.

Clips (made offline with PyAV, libx264 CRF 23, 25 fps, 250 frames): the demo's portraits of the packaged
photos (insightface's t1.jpg) filmed by a slowly drifting camera; "1 face": one portrait filling the frame
(face about 110 px wide), "4 faces": four people in a 2x2 grid (faces about 55 px wide, above dlib's
40 px minimum at upsample 1).

Per clip and repeat, :func:`hilif.train.scan.analyse` runs on --frames sampled frames (the same code as
``hilif-eval detect``, no pictures): decode, every-face detection, tracking, alignment and batched scoring.
Prints per stage the median seconds over --repeats, faces scored per second of the whole file and of the
scoring alone. The model is --checkpoint's, or an untrained model of --preset (speed does not depend on the
weights); detector settings as a checkpoint of dlib-extracted shards ("auto" upsample), or --detector.
Usage: nice -n 5 python bench/bench_detect.py [--repeats 3] [--frames 32] [--preset demo] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import write_clip  # noqa: E402

SIZE = (640, 480)
FPS = 25
SECONDS = 10.0
PEOPLE = ("t1-lisa", "t1-ross", "t1-chandler", "t1-rachel")


def portraits(n: int) -> list[np.ndarray]:
    from hilif.pipeline.demo import render as R

    ids = {i.name: i for split in R.IDENTITIES.values() for i in split}
    return [R.make_portrait(ids[name]).image for name in PEOPLE[:n]]


def scene(n_faces: int) -> np.ndarray:
    """One 640x480 frame: one portrait filling it, or a 2x2 grid of four."""
    import cv2

    W, H = SIZE
    imgs = portraits(n_faces)
    if n_faces == 1:
        p = imgs[0]
        s = W / p.shape[1]
        big = cv2.resize(p, (W, round(p.shape[0] * s)), interpolation=cv2.INTER_AREA)
        y = (big.shape[0] - H) // 2
        return np.ascontiguousarray(big[y : y + H])
    cells = [cv2.resize(p, (W // 2, W // 2), interpolation=cv2.INTER_AREA)[40 : 40 + H // 2] for p in imgs]
    return np.concatenate([np.concatenate(cells[:2], 1), np.concatenate(cells[2:], 1)], 0)


def drift(frame: np.ndarray, n: int):
    """``n`` frames of a slow camera drift (shift and zoom) over ``frame``."""
    import cv2

    W, H = SIZE
    for i in range(n):
        t = i / max(n - 1, 1)
        m = cv2.getRotationMatrix2D((W / 2, H / 2), 0.0, 1.0 + 0.04 * np.sin(np.pi * t))
        m[:, 2] += (12 * np.sin(2 * np.pi * t), 6 * np.cos(2 * np.pi * t))
        yield cv2.warpAffine(frame, m, (W, H), borderMode=cv2.BORDER_REFLECT)


def make_clips(d: Path) -> dict[str, Path]:
    return {
        f"{k} face{'s' if k > 1 else ''}": write_clip(d / f"faces{k}.mp4", drift(scene(k), int(SECONDS * FPS)), crf=23)
        for k in (1, 4)
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--detector", default=None, help="dlib | insightface (default: as the checkpoint, else dlib)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    import torch

    from hilif.train import checkpoint as ck
    from hilif.train import detect as det
    from hilif.train.evaluate import load_model

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        clips = make_clips(d)
        print(
            f"clips: {', '.join(f'{k} ({p.stat().st_size // 1024} KiB)' for k, p in clips.items())}, "
            f"made in {time.perf_counter() - t0:.1f} s"
        )
        path = args.checkpoint
        if path is None:
            from hilif.model import HiLIFConfig, build_model

            cfg = dataclasses.replace(HiLIFConfig.preset(args.preset), pretrained=False, backbone_weights=None)
            face = {"detector": "dlib", "margin": 1.3, "size": 256, "upsample": "auto"}
            path = ck.save_checkpoint(
                d / "model.pt",
                model=build_model(cfg),
                model_config=cfg.to_dict(),
                train_config={},
                stage=2,
                epoch=0,
                step=0,
                with_rng=False,
                extract={"face": face, "face_size": 256},
            )
        dev = torch.device(args.device)
        model, mcfg, ckpt = load_model(path, dev)
        opts = det.DetectOptions(
            checkpoint=str(path),
            frames=args.frames,
            device=args.device,
            batch_size=args.batch_size,
            detector=args.detector,
        )
        fcfg, _ = det.face_settings(ckpt, opts)
        weights = "checkpoint" if args.checkpoint else args.preset + " preset, untrained"
        print(
            f"model: {mcfg.backbone} at {mcfg.img_size} px ({weights}); "
            f"detector {fcfg.detector}, upsample {fcfg.upsample}; {args.frames} sampled frames; device {dev}; "
            f"torch threads {torch.get_num_threads()}"
        )
        print(
            f"{'clip':<8} {'faces':>5} {'tracks':>6} {'decode s':>9} {'detect s':>9} {'align s':>8} {'score s':>8} "
            f"{'total s':>8} {'faces/s':>8} {'scoring faces/s':>16}"
        )
        for name, clip in clips.items():
            f = det.InputFile(clip, "video", clip.name)
            det.analyse(f, model, mcfg.img_size, fcfg, opts, dev)  # warm-up: detector and model loaded, caches
            runs = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                res = det.analyse(f, model, mcfg.img_size, fcfg, opts, dev)
                runs.append((time.perf_counter() - t, res))
            n = sum(x.fake_prob is not None for x in runs[0][1].faces)
            med = {k: statistics.median(r.timings[k] for _, r in runs) for k in ("decode", "detect", "align", "score")}
            total = statistics.median(t for t, _ in runs)
            print(
                f"{name:<8} {n:>5} {len(runs[0][1].tracks):>6} {med['decode']:>9.2f} {med['detect']:>9.2f} "
                f"{med['align']:>8.2f} {med['score']:>8.2f} {total:>8.2f} {n / total:>8.1f} "
                f"{n / max(med['score'], 1e-9):>16.1f}"
            )
        print(
            f"medians of {args.repeats} runs after one warm-up run; faces/s = faces scored / whole-file time; "
            f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )


if __name__ == "__main__":
    main()

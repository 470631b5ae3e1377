"""Per-video extraction speed: this pipeline vs. a naive baseline, side by side in one run.

Clip: 10 s, 640x480, 25 fps, libx264 CRF 40, made with PyAV from insightface's bundled
photo t1.jpg (a slow pan over a group photo: several faces, the largest is the subject).
80 frames are sampled uniformly.

- baseline: decode every frame sequentially (PyAV), keep the 80 sampled ones, dlib HOG at
  upsample 1 on each full frame, 68-point landmarks, align, PNG-encode.
- hilif: decord get_batch on the 80 indices, dlib cascade (downscaled frame first, upsample
  only where nothing is found) with tracking near the subject's last box, align, PNG-encode.

Prints medians over --repeats runs and the speed-up, and checks that every frame where
the baseline finds the subject also has a detected (not replaced) face in hilif's output.
Usage: OMP_NUM_THREADS=1 python bench/bench_extract.py [--repeats 3] [--clip PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_clip(path: Path, seconds: float = 10.0, fps: int = 25, size: tuple[int, int] = (640, 480), crf: int = 40,
              zoom: float = 1.0) -> Path:
    """The clip; ``zoom`` < 1 shrinks the photo (smaller faces) and pads it with its mirror image."""
    import av
    import cv2
    import insightface

    photo = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    img = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    W, H = size
    scale = max(W / (w * 0.8), H / h)
    img = cv2.resize(img, (round(w * scale * zoom), round(h * scale * zoom)), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    if zoom < 1:
        ph, pw = max(0, H - h) // 2 + 1, max(0, int(W / 0.8) - w) // 2 + 1
        img = cv2.copyMakeBorder(img, ph, ph, pw, pw, cv2.BORDER_REFLECT)
        h, w = img.shape[:2]
    n = int(seconds * fps)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": str(crf), "preset": "medium"}
        for i in range(n):
            t = i / max(n - 1, 1)
            x = int(round((w - W) * (0.5 + 0.5 * np.sin(2 * np.pi * t)) ))
            y = int(round((h - H) * 0.5))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[y:y + H, x:x + W]), format="rgb24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def run_baseline(path: Path, num: int) -> tuple[dict[str, float], list[bool]]:
    import av

    from hilif.pipeline.align import align_face
    from hilif.pipeline.detect import DlibConfig, DlibDetector
    from hilif.pipeline.sampling import uniform_indices
    from hilif.pipeline.track import SubjectTracker
    from hilif.pipeline.write import encode_image

    det = DlibDetector(DlibConfig(upsample=1))
    t0 = time.perf_counter()
    frames = []
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            frames.append(f.to_ndarray(format="rgb24"))
    idx = uniform_indices(len(frames), num)
    sampled = [frames[i] for i in idx]
    del frames
    t1 = time.perf_counter()
    tracker = SubjectTracker()
    found = [tracker.update(det.detect(f)) for f in sampled]
    t2 = time.perf_counter()
    faces = [align_face(f, d.landmarks) for f, d in zip(sampled, found) if d is not None]
    t3 = time.perf_counter()
    _ = [encode_image(f) for f in faces]
    t4 = time.perf_counter()
    return dict(decode=t1 - t0, detect=t2 - t1, align=t3 - t2, write=t4 - t3, total=t4 - t0), [d is not None for d in found]


def run_hilif(path: Path, num: int, cfg=None) -> tuple[dict[str, float], list[bool]]:
    from hilif.pipeline.decode import read_video
    from hilif.pipeline.faces import FaceConfig, faces_from_frames, get_detector, video_fetch
    from hilif.pipeline.write import encode_image

    cfg = cfg or FaceConfig(detector="dlib")
    det = get_detector(cfg)
    t0 = time.perf_counter()
    decoded = read_video(path, num)
    t1 = time.perf_counter()
    vf = faces_from_frames(decoded, cfg, num, detector=det, fetch=video_fetch(path, decoded))
    t3 = time.perf_counter()
    _ = [encode_image(f) for f in vf.faces]
    t4 = time.perf_counter()
    detected = [not r for r in vf.replaced] if vf.faces else [False] * num
    return dict(decode=t1 - t0, detect=vf.timings["detect"], align=vf.timings["align"], write=t4 - t3,
                total=t4 - t0), detected


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--clip", type=Path, default=None, help="use this video instead of the generated clip")
    ap.add_argument("--zoom", type=float, default=1.0, help="shrink the photo: 0.5 gives faces of about 50-80 px")
    ap.add_argument("--detector", default="dlib", choices=("dlib", "insightface"), help="hilif's detector (baseline: dlib)")
    ap.add_argument("--model-dir", default=None, help="insightface model folder (buffalo_l)")
    ap.add_argument("--device", default="auto", help="insightface: auto, cpu or cuda")
    ap.add_argument("--det-batch", type=int, default=16, help="insightface: frames per SCRFD run (1 = per frame)")
    args = ap.parse_args()
    from hilif.pipeline.detect import DetectorError
    from hilif.pipeline.faces import FaceConfig, get_detector

    face_cfg = FaceConfig(detector=args.detector, model_dir=args.model_dir, device=args.device, det_batch=args.det_batch)
    try:
        det = get_detector(face_cfg)
    except DetectorError as exc:
        raise SystemExit(f"error: {exc}")
    if args.detector == "insightface":
        batched = getattr(det, "dynamic_batch", False) and args.det_batch > 1
        print(f"SCRFD {getattr(det, 'model_path', '')} on {getattr(det, 'providers', '?')}: "
              f"{f'batches of {args.det_batch} frames' if batched else 'one frame per run (fixed-batch model or --det-batch 1)'}")
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or make_clip(Path(tmp) / "clip.mp4", zoom=args.zoom)
        res: dict[str, list[dict[str, float]]] = {"baseline": [], "hilif": []}
        hits: dict[str, list[bool]] = {}
        for _ in range(args.repeats):  # interleaved so both see the same machine load
            for name, fn in (("baseline", run_baseline), ("hilif", lambda c, n: run_hilif(c, n, face_cfg))):
                t, h = fn(clip, args.frames)
                res[name].append(t)
                hits[name] = h
    keys = ("decode", "detect", "align", "write", "total")
    med = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in res.items()}
    print(f"hilif detector: {args.detector}; clip: {'given' if args.clip else f'10 s 640x480 25 fps CRF 40, zoom {args.zoom}'}; {args.frames} frames; median of {args.repeats}")
    print(f"{'seconds':>10} " + " ".join(f"{k:>8}" for k in keys) + f" {'frames/s':>9}")
    for n in ("baseline", "hilif"):
        print(f"{n:>10} " + " ".join(f"{med[n][k]:8.3f}" for k in keys) + f" {args.frames / med[n]['total']:9.1f}")
    print(f"speed-up (baseline total / hilif total): {med['baseline']['total'] / med['hilif']['total']:.2f}x")
    b, o = hits["baseline"], hits["hilif"]
    lost = [i for i, (x, y) in enumerate(zip(b, o)) if x and not y]
    print(f"frames with a face: baseline {sum(b)}/{len(b)}, hilif {sum(o)}/{len(o)} detected; "
          f"found by the baseline but not by hilif: {len(lost)} {lost[:10]}")


if __name__ == "__main__":
    main()

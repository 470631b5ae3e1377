"""Per-video extraction speed and faces found: this pipeline vs. a naive baseline, side by side in one run.

Clips (10 s, 640x480, 25 fps, libx264 CRF 40, made offline with PyAV from photos shipped in
installed packages; 80 frames sampled uniformly):

- pan: a slow pan over insightface's group photo t1.jpg (six faces, the largest is the subject);
- cut: three shots with hard cuts: Grace Hopper (matplotlib's photo, 4 s), the left part of
  t1.jpg (three people, 3 s), its right part (three others, 3 s);
- faceless: t1.jpg (2 s), a 6 s shot without a face (scikit-image's motorcycle scene), Grace
  Hopper (2 s).

- baseline: decode every frame sequentially (PyAV), keep the 80 sampled ones, dlib HOG at
  upsample 1 on each full frame, 68-point landmarks, align, PNG-encode. Its subject is
  followed with hilif's SubjectTracker, restarted at the clip's true cuts; with
  ``--faces all`` its faces are joined into tracks by hilif's track_faces at the true cuts.
- hilif: decord get_batch on the 80 indices, cut detection, dlib cascade with tracking near
  the subject's last box and cheap passes where the face is lost, align, PNG-encode; and the
  same with ``--faces all``.

Prints per clip medians over --repeats interleaved runs, the speed-ups (same-run ratios),
the cuts found, the frames where the baseline has the subject and hilif has no detected
(unreplaced) face, and per baseline track the frames hilif's --faces all misses.
Usage: OMP_NUM_THREADS=1 python bench/bench_extract.py [--repeats 3] [--clips pan,cut,faceless] [--clip PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

SIZE = (640, 480)
FPS = 25


def photo(package: str, relpath: str) -> np.ndarray:
    """An RGB photo shipped inside an installed package."""
    import cv2

    from hilif.pipeline.demo.render import package_file

    p = package_file(package, relpath)
    if p is None:
        raise SystemExit(f"error: {package}/{relpath} not installed")
    return cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)


def pan(
    img: np.ndarray, n: int, size: tuple[int, int] = SIZE, zoom: float = 1.0, cycles: float = 1.0, cover: float = 0.8
) -> Iterator[np.ndarray]:
    """``n`` frames of a horizontal pan over ``img`` (scaled so a frame shows ``cover`` of its width; ``zoom`` < 1
    shrinks it, padding with its mirror image)."""
    import cv2

    h, w = img.shape[:2]
    W, H = size
    scale = max(W / (w * cover), H / h)
    img = cv2.resize(img, (round(w * scale * zoom), round(h * scale * zoom)), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    if zoom < 1:
        ph, pw = max(0, H - h) // 2 + 1, max(0, int(W / 0.8) - w) // 2 + 1
        img = cv2.copyMakeBorder(img, ph, ph, pw, pw, cv2.BORDER_REFLECT)
        h, w = img.shape[:2]
    for i in range(n):
        t = i / max(n - 1, 1)
        x = int(round((w - W) * (0.5 + 0.5 * np.sin(2 * np.pi * cycles * t))))
        y = int(round((h - H) * 0.5))
        yield np.ascontiguousarray(img[y : y + H, x : x + W])


def write_clip(
    path: Path, frames: Iterator[np.ndarray], size: tuple[int, int] = SIZE, fps: int = FPS, crf: int = 40
) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"crf": str(crf), "preset": "medium"}
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def shots_clip(path: Path, shots: list[tuple[np.ndarray, float]]) -> tuple[Path, list[int]]:
    """A clip of pans over each (photo, seconds), hard cuts between them; returns the frames where shots start."""
    starts, frames, n0 = [], [], 0
    for img, seconds in shots:
        n = int(round(seconds * FPS))
        starts.append(n0)
        frames.append(pan(img, n, cycles=0.5, cover=0.9))
        n0 += n
    return write_clip(path, (f for it in frames for f in it)), starts[1:]


def make_clip(path: Path, seconds: float = 10.0, zoom: float = 1.0) -> Path:
    """The pan clip."""
    return write_clip(path, pan(photo("insightface", "data/images/t1.jpg"), int(seconds * FPS), zoom=zoom))


def make_cut_clip(path: Path) -> tuple[Path, list[int]]:
    t1 = photo("insightface", "data/images/t1.jpg")
    return shots_clip(
        path,
        [
            (photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"), 4.0),
            (t1[40:600, 0:680], 3.0),
            (t1[0:600, 640:1280], 3.0),
        ],
    )


def make_faceless_clip(path: Path) -> tuple[Path, list[int]]:
    return shots_clip(
        path,
        [
            (photo("insightface", "data/images/t1.jpg"), 2.0),
            (photo("skimage", "data/motorcycle_left.png"), 6.0),
            (photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"), 2.0),
        ],
    )


def positions_of_cuts(indices: list[int], cut_frames: list[int]) -> list[int]:
    """The sampled positions where a new shot starts, given the frames where shots start."""
    starts = {next((p for p, i in enumerate(indices) if i >= c), len(indices)) for c in cut_frames}
    return sorted(starts - {0, len(indices)})


def run_baseline(path: Path, num: int, cut_frames: list[int]) -> tuple[dict[str, float], float, list, list]:
    """Timings (subject mode), the extra seconds --faces all takes, the subject per frame, all faces per frame."""
    import av

    from hilif.pipeline.align import align_face
    from hilif.pipeline.detectors import DlibConfig, DlibDetector
    from hilif.pipeline.sampling import uniform_indices
    from hilif.pipeline.track import SubjectTracker, shot_of_positions
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
    shots = shot_of_positions(len(idx), positions_of_cuts(idx, cut_frames))
    tracker = SubjectTracker()
    every, found = [], []
    for pos, f in enumerate(sampled):
        if pos and shots[pos] != shots[pos - 1]:
            tracker.reset()
        every.append(det.detect(f))
        found.append(tracker.update(every[-1]))
    t2 = time.perf_counter()
    faces = [align_face(f, d.landmarks) for f, d in zip(sampled, found) if d is not None]
    t3 = time.perf_counter()
    _ = [encode_image(f) for f in faces]
    t4 = time.perf_counter()
    _ = [encode_image(align_face(f, d.landmarks)) for f, ds in zip(sampled, every) for d in ds]
    t5 = time.perf_counter()
    return (
        dict(decode=t1 - t0, detect=t2 - t1, align=t3 - t2, write=t4 - t3, total=t4 - t0),
        t5 - t4 - (t4 - t2),
        found,
        every,
    )


def run_hilif(path: Path, num: int, cfg=None):
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
    return dict(
        decode=t1 - t0, detect=vf.timings["detect"], align=vf.timings["align"], write=t4 - t3, total=t4 - t0
    ), vf


def bench_clip(name: str, clip: Path, cut_frames: list[int], args, face_cfg) -> None:
    from hilif.pipeline.track import box_iou, track_faces

    keys = ("decode", "detect", "align", "write", "total")
    res: dict[str, list[dict[str, float]]] = {"baseline": [], "hilif": [], "baseline all": [], "hilif all": []}
    for _ in range(args.repeats):  # interleaved so all see the same machine load
        tb, extra, found, every = run_baseline(clip, args.frames, cut_frames)
        res["baseline"].append(tb)
        res["baseline all"].append(dict(tb, total=tb["total"] + extra))
        th, vf = run_hilif(clip, args.frames, face_cfg)
        res["hilif"].append(th)
        ta, vfa = run_hilif(clip, args.frames, replace(face_cfg, faces="all"))
        res["hilif all"].append(ta)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in res.items()}
    ratio = lambda a, b: statistics.median(x["total"] / y["total"] for x, y in zip(res[a], res[b]))  # noqa: E731
    print(f"\n== {name}: {clip.name if args.clip else 'made here'}; {args.frames} frames; median of {args.repeats}")
    print(f"{'seconds':>12} " + " ".join(f"{k:>8}" for k in keys) + f" {'frames/s':>9}")
    for n in res:
        print(f"{n:>12} " + " ".join(f"{med[n][k]:8.3f}" for k in keys) + f" {args.frames / med[n]['total']:9.1f}")
    print(
        f"speed-up (median of same-run baseline/hilif ratios): subject {ratio('baseline', 'hilif'):.2f}x, "
        f"--faces all {ratio('baseline all', 'hilif all'):.2f}x"
    )
    idx = vf.sampled
    true_cuts = positions_of_cuts(idx, cut_frames)
    print(f"cuts (sampled positions): true {true_cuts}, hilif {vf.cuts}")
    detected = [False] * len(idx)
    for pos, rep in zip(vf.positions, vf.replaced):
        detected[pos] |= not rep
    b = [d is not None for d in found]
    lost = [i for i, (x, y) in enumerate(zip(b, detected)) if x and not y]
    print(
        f"subject: frames with a face: baseline {sum(b)}/{len(b)}, hilif {sum(detected)}/{len(detected)} detected; "
        f"found by the baseline but not by hilif: {len(lost)} {lost[:10]}"
    )
    tracks = track_faces(every, true_cuts)
    hilif_faces: dict[int, list[tuple[int, list[float]]]] = {}
    for pos, rep, tr, box in zip(vfa.positions, vfa.replaced, vfa.tracks, vfa.boxes):
        if not rep:
            hilif_faces.setdefault(pos, []).append((tr, box))
    print(f"--faces all: baseline {len(tracks)} tracks, hilif {len(set(vfa.tracks))} tracks")
    for t in tracks:
        miss, ids = [], set()
        for pos, d in t.detections.items():
            hit = [tr for tr, box in hilif_faces.get(pos, []) if box_iou(d.box, box) > 0.3]
            ids.update(hit)
            if not hit:
                miss.append(pos)
        print(
            f"  baseline track {t.id} (shot {t.shot}, {len(t.detections)} frames, width {t.last.width:.0f} px): "
            f"hilif tracks {sorted(ids)}, frames missed {len(miss)} {miss[:8]}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument(
        "--clips", default="pan,cut,faceless", help="which generated clips (comma list of pan, cut, faceless)"
    )
    ap.add_argument(
        "--clip", type=Path, default=None, help="use this video instead (true cuts unknown: baseline assumes none)"
    )
    ap.add_argument(
        "--zoom", type=float, default=1.0, help="pan clip: shrink the photo; 0.5 gives faces of about 50-80 px"
    )
    ap.add_argument(
        "--detector", default="dlib", choices=("dlib", "insightface"), help="hilif's detector (baseline: dlib)"
    )
    ap.add_argument("--model-dir", default=None, help="insightface model folder (buffalo_l)")
    ap.add_argument("--device", default="auto", help="insightface: auto, cpu or cuda")
    ap.add_argument("--det-batch", type=int, default=16, help="insightface: frames per SCRFD run (1 = per frame)")
    args = ap.parse_args()
    from hilif.pipeline.detectors import DetectorError
    from hilif.pipeline.faces import FaceConfig, get_detector

    face_cfg = FaceConfig(
        detector=args.detector, model_dir=args.model_dir, device=args.device, det_batch=args.det_batch
    )
    try:
        det = get_detector(face_cfg)
        get_detector(replace(face_cfg, faces="all"))
    except DetectorError as exc:
        raise SystemExit(f"error: {exc}")
    if args.detector == "insightface":
        batched = getattr(det, "dynamic_batch", False) and args.det_batch > 1
        print(
            f"SCRFD {getattr(det, 'model_path', '')} on {getattr(det, 'providers', '?')}: "
            + (
                f"batches of {args.det_batch} frames"
                if batched
                else "one frame per run (fixed-batch model or --det-batch 1)"
            )
        )
    print(f"hilif detector: {args.detector}; clips 10 s 640x480 25 fps CRF 40 (pan zoom {args.zoom})")
    makers = {"pan": lambda p: (make_clip(p, zoom=args.zoom), []), "cut": make_cut_clip, "faceless": make_faceless_clip}
    with tempfile.TemporaryDirectory() as tmp:
        if args.clip:
            bench_clip("given clip", args.clip, [], args, face_cfg)
            return
        for name in args.clips.split(","):
            if name not in makers:
                raise SystemExit(f"error: --clips: unknown clip {name!r} (use pan, cut, faceless)")
            clip, cuts = makers[name](Path(tmp) / f"{name}.mp4")
            bench_clip(name, clip, cuts, args, face_cfg)


if __name__ == "__main__":
    main()

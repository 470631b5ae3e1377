"""The pictures of ``hilif-eval detect --out DIR``: boxed and labelled faces, contact sheets, per-track plots,
Grad-CAM overlays and an annotated MP4 of the sampled frames.

Box colours: red (:data:`FAKE_RGB`) for a face at or above the threshold, green (:data:`REAL_RGB`) below it,
yellow (:data:`SMALL_RGB`) for a face under the detector's reliable minimum (not scored). A label
``#TRACK P`` sits on a filled bar of the box's colour above the box.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from hilif.pipeline import schema

if TYPE_CHECKING:
    from hilif.train.scan import DetectOptions, FaceResult, FileResult

log = logging.getLogger(__name__)

FAKE_RGB = (255, 0, 0)
REAL_RGB = (0, 200, 0)
SMALL_RGB = (255, 200, 0)
THUMB_WIDTH = 320  # contact-sheet thumbnails
SHEET_COLUMNS = 4
GRADCAM_FACES_PER_TRACK = 3  # videos: the track's faces with the highest fake probability


def face_colour(f: "FaceResult", threshold: float) -> tuple[int, int, int]:
    if f.fake_prob is None:
        return SMALL_RGB
    return FAKE_RGB if f.fake_prob >= threshold else REAL_RGB


def face_label(f: "FaceResult") -> str:
    return f"#{f.track} " + ("too small" if f.fake_prob is None else f"{f.fake_prob:.2f}")


def line_width(shape: tuple[int, ...]) -> int:
    return max(2, round(max(shape[:2]) / 320))


def draw_faces(frame: np.ndarray, faces: list["FaceResult"], threshold: float, box_scale: float = 1.0) -> np.ndarray:
    """A copy of the RGB ``frame`` with each face boxed and labelled in its colour (boxes times ``box_scale``:
    ``frame`` is a resized copy of the frame the faces were found in)."""
    img = np.ascontiguousarray(frame).copy()
    h, w = img.shape[:2]
    t = line_width(img.shape)
    scale = max(0.4, max(h, w) / 1200)
    for f in faces:
        c = face_colour(f, threshold)
        x0, y0, x1, y1 = (int(round(v * box_scale)) for v in f.det.box)
        cv2.rectangle(img, (x0, y0), (x1, y1), c, t)
        text = face_label(f)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y0 - t if y0 - t - th - base >= 0 else y0 + t + th + base  # above the box, else inside its top
        tx = min(max(0, x0 - t // 2), max(0, w - tw - 4))
        cv2.rectangle(img, (tx, ty - th - base), (tx + tw + 4, ty), c, -1)
        ink = (0, 0, 0) if c != FAKE_RGB else (255, 255, 255)
        cv2.putText(img, text, (tx + 2, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)
    return img


def faces_by_position(res: "FileResult") -> dict[int, list["FaceResult"]]:
    by_pos: dict[int, list[FaceResult]] = {}
    for f in res.faces:
        by_pos.setdefault(f.position, []).append(f)
    return by_pos


def annotated_frames(res: "FileResult", threshold: float) -> list[np.ndarray]:
    """Every sampled frame with its faces drawn."""
    assert res.decoded is not None
    by_pos = faces_by_position(res)
    return [draw_faces(fr, by_pos.get(i, []), threshold) for i, fr in enumerate(res.decoded.frames)]


def frame_caption(res: "FileResult", pos: int) -> str:
    assert res.decoded is not None
    idx = res.decoded.indices[pos]
    fps = res.decoded.fps
    return f"frame {idx}" + (f"  {idx / fps:.2f} s" if fps > 0 else "")


def contact_sheet(
    res: "FileResult", threshold: float, columns: int = SHEET_COLUMNS, thumb_width: int = THUMB_WIDTH
) -> np.ndarray:
    """The sampled frames as thumbnails in a grid, faces drawn at thumbnail scale (readable labels), each
    with its frame number and time on a white bar below it."""
    assert res.decoded is not None
    frames = res.decoded.frames
    by_pos = faces_by_position(res)
    h, w = frames[0].shape[:2]
    tw = min(thumb_width, w)
    th = max(1, round(h * tw / w))
    bar = 22
    cols = min(columns, len(frames))
    rows = -(-len(frames) // cols)
    sheet = np.full((rows * (th + bar), cols * tw, 3), 255, np.uint8)
    for i, fr in enumerate(frames):
        r, c = divmod(i, cols)
        y, x = r * (th + bar), c * tw
        small = cv2.resize(fr, (tw, th), interpolation=cv2.INTER_AREA)
        sheet[y : y + th, x : x + tw] = draw_faces(small, by_pos.get(i, []), threshold, box_scale=tw / w)
        cv2.putText(
            sheet,
            frame_caption(res, i),
            (x + 4, y + th + 16),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return sheet


def write_png(img: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = schema.tmp_path(path)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
    return path


def plot_tracks(res: "FileResult", threshold: float, path: Path) -> Path:
    """Each track's fake probability over time (seconds, or frame numbers without a frame rate); PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hilif.train.plots import _atomic_savefig

    assert res.decoded is not None
    fps = res.decoded.fps
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for t in res.tracks:
        pts = [
            (f["frame"] / fps if fps > 0 else f["frame"], f["fake_prob"])
            for f in t["faces"]
            if f["fake_prob"] is not None
        ]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", ms=3, label=f"#{t['id']} mean {t['mean_fake_prob']:.2f}")
    for c in res.cuts:
        x = res.decoded.indices[c] / fps if fps > 0 else res.decoded.indices[c]
        ax.axvline(x, color="grey", lw=0.8, ls=":")
    ax.axhline(threshold, color="k", lw=0.8, ls="--", label=f"threshold {threshold:.2f}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time (s)" if fps > 0 else "frame")
    ax.set_ylabel("p(fake)")
    ax.set_title(res.file.path.name, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return _atomic_savefig(fig, path)


def gradcam_faces(res: "FileResult") -> list["FaceResult"]:
    """The faces to explain: all scored faces of an image; per video track the most fake-looking ones."""
    scored = [f for f in res.faces if f.fake_prob is not None]
    if res.file.kind == "image":
        return scored
    out: list[FaceResult] = []
    for t in res.tracks:
        mine = sorted((f for f in scored if f.track == t["id"]), key=lambda f: -float(f.fake_prob or 0.0))
        out += sorted(mine[:GRADCAM_FACES_PER_TRACK], key=lambda f: f.position)
    return out


def write_gradcam(
    res: "FileResult", model: torch.nn.Module, img_size: int, folder: Path, device: torch.device | str
) -> list[Path]:
    """Grad-CAM grids of the faces (the layers of ``hilif-eval --gradcam``), centre-cropped as scored."""
    from hilif.train.data import center_crop, to_chw_tensor
    from hilif.train.gradcam import overlay_grids

    faces = gradcam_faces(res)
    if not faces:
        return []
    x = torch.stack([to_chw_tensor(center_crop(f.face, img_size)) for f in faces])  # type: ignore[arg-type]
    labels = [f"#{f.track} frame {f.frame_index}" for f in faces]
    return overlay_grids(model, x, labels, folder, device, stem="gradcam")


def write_video(frames: list[np.ndarray], res: "FileResult", path: Path) -> Path:
    """The annotated sampled frames as H.264 MP4 (PyAV), at a rate that spans the video's duration."""
    from hilif.pipeline.demo import encode_mp4

    assert res.decoded is not None
    d = res.decoded
    duration = d.frame_count / d.fps if d.fps > 0 else 0.0
    fps = int(np.clip(round(len(frames) / duration), 1, 30)) if duration > 0 else 2
    h, w = frames[0].shape[:2]
    even = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else f for f in frames]
    encode_mp4(even, path, fps, crf=20)
    return path


def write_pictures(
    res: "FileResult",
    folder: Path,
    opts: "DetectOptions",
    model: torch.nn.Module,
    img_size: int,
    device: torch.device | str,
) -> dict[str, Any]:
    """The pictures of one file into ``folder``; returns name -> path (strings) for its record."""
    out: dict[str, Any] = {}
    if res.file.kind == "image":
        out["annotated"] = str(write_png(annotated_frames(res, opts.threshold)[0], folder / "annotated.png"))
    else:
        out["contact_sheet"] = str(write_png(contact_sheet(res, opts.threshold), folder / "contact_sheet.png"))
        if res.tracks:
            out["plot"] = str(plot_tracks(res, opts.threshold, folder / "tracks.png"))
        if opts.video_out:
            out["video"] = str(write_video(annotated_frames(res, opts.threshold), res, folder / "annotated.mp4"))
    if opts.explain:
        out["gradcam"] = [str(p) for p in write_gradcam(res, model, img_size, folder, device)]
    return out

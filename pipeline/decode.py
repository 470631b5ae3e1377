"""Decode sampled frames: decord ``get_batch`` on uniform indices, PyAV as the fallback.

A hang inside native decoder code cannot be interrupted from Python in the same process,
so the per-video timeout is enforced by :mod:`hilif.pipeline.extract`, which runs this in a
worker process and kills the worker when the deadline passes.
"""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .sampling import uniform_indices

log = logging.getLogger(__name__)


class DecodeError(RuntimeError):
    """The file could not be decoded by any backend."""


@dataclass
class DecodedFrames:
    frames: list[np.ndarray]  # HxWx3 uint8 RGB, one per index
    indices: list[int]  # the frame index of each decoded frame
    frame_count: int  # frames in the video (decodable)
    fps: float
    backend: str  # "decord", "pyav" or "images"
    notes: list[str] = field(default_factory=list)  # e.g. why a fallback was used


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DecodeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DecodeError(f"{path}: empty file (0 bytes)")


_DECORD_QUIET = False


def _decord():
    """decord, with FFmpeg's console messages off (failures are reported in the manifest instead)."""
    global _DECORD_QUIET
    import decord

    if not _DECORD_QUIET:
        decord.logging.set_level(decord.logging.QUIET)
        _DECORD_QUIET = True
    return decord


def read_decord(path: Path, num_frames: int) -> DecodedFrames:
    decord = _decord()

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    n = len(vr)
    if n <= 0:
        raise DecodeError(f"{path}: decord reports no frames")
    fps = float(vr.get_avg_fps() or 0.0)
    idx = uniform_indices(n, num_frames)
    batch = vr.get_batch(idx).asnumpy()
    if batch.ndim != 4 or batch.shape[0] != len(idx) or batch.shape[-1] != 3:
        raise DecodeError(f"{path}: decord returned frames of shape {batch.shape}")
    return DecodedFrames([np.ascontiguousarray(f) for f in batch], idx, n, fps, "decord")


def _pyav_count(path: Path) -> tuple[int, float]:
    import av

    with av.open(str(path)) as c:
        if not c.streams.video:
            raise DecodeError(f"{path}: no video stream")
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 0.0)
        n = 0
        for pkt in c.demux(s):  # counting packets needs no decoding
            if pkt.size:
                n += 1
        return n, fps


def _pyav_decode(path: Path, wanted: Sequence[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode sequentially, keeping the wanted indices; returns them and the frames seen."""
    import av

    want = set(wanted)
    last = max(wanted)
    got: dict[int, np.ndarray] = {}
    seen = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        try:
            for i, frame in enumerate(c.decode(s)):
                seen = i + 1
                if i in want:
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
        except av.error.FFmpegError as exc:  # truncated stream: keep what decoded
            log.debug("%s: PyAV stopped at frame %d: %s", path, seen, exc)
    return got, seen


def read_pyav(path: Path, num_frames: int) -> DecodedFrames:
    try:
        n, fps = _pyav_count(path)
    except DecodeError:
        raise
    except Exception as exc:  # av.error.* and friends
        raise DecodeError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from exc
    if n <= 0:
        raise DecodeError(f"{path}: no frames in the video stream")
    notes: list[str] = []
    for _ in range(3):  # clamp: when fewer frames decode than the container claims, resample over those
        idx = uniform_indices(n, num_frames)
        got, seen = _pyav_decode(path, idx)
        if len(got) == len(idx):
            return DecodedFrames([got[i] for i in idx], idx, n, fps, "pyav", notes)
        if seen <= 0:
            break
        notes.append(f"only {seen} of {n} frames decodable; indices clamped")
        n = seen
    raise DecodeError(f"{path}: no decodable frames")


def read_video(path: str | Path, num_frames: int, backend: str = "auto") -> DecodedFrames:
    """Decode ``num_frames`` uniformly spaced frames (fewer only when the video is shorter).

    ``backend``: "decord", "pyav" or "auto" (decord, then PyAV when decord fails).
    """
    path = Path(path)
    _check_file(path)
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown decode backend {backend!r}")
    if backend in ("auto", "decord"):
        try:
            return read_decord(path, num_frames)
        except Exception as exc:  # decord raises its own DECORDError and RuntimeErrors
            if backend == "decord":
                raise DecodeError(f"{path}: decord failed: {exc}") from exc
            first = f"decord failed ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})"
            log.debug("%s: %s; trying PyAV", path, first)
            out = read_pyav(path, num_frames)
            out.notes.insert(0, first)
            return out
    return read_pyav(path, num_frames)


def read_frames_at(path: str | Path, indices: Sequence[int], backend: str = "decord") -> list[np.ndarray]:
    """The frames at ``indices`` (valid indices of a video already opened by :func:`read_video`)."""
    path = Path(path)
    if not indices:
        return []
    if backend == "decord":
        decord = _decord()
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        return [np.ascontiguousarray(f) for f in vr.get_batch(list(indices)).asnumpy()]
    got, _ = _pyav_decode(path, indices)
    missing = [i for i in indices if i not in got]
    if missing:
        raise DecodeError(f"{path}: frames {missing[:5]} do not decode")
    return [got[i] for i in indices]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _decode_image(data: bytes, name: str) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise DecodeError(f"{name}: not a readable image")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    _check_file(path)
    return _decode_image(path.read_bytes(), str(path))


def read_image_sequence(frames: Sequence[str], num_frames: int, archive: str | None = None) -> DecodedFrames:
    """Sample ``num_frames`` images uniformly from an ordered list of image files.

    ``frames`` are file paths, or member names inside the tar(.gz) ``archive``.
    """
    if not frames:
        raise DecodeError(f"{archive or 'sequence'}: no frames")
    idx = uniform_indices(len(frames), num_frames)
    if archive is None:
        imgs = [read_image(frames[i]) for i in idx]
    else:
        wanted = {frames[i]: i for i in idx}
        got: dict[int, np.ndarray] = {}
        try:
            with tarfile.open(archive, "r:*") as tf:
                for m in tf:
                    if m.name in wanted:
                        f = tf.extractfile(m)
                        if f is not None:
                            got[wanted[m.name]] = _decode_image(f.read(), f"{archive}:{m.name}")
                        if len(got) == len(wanted):
                            break
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DecodeError(f"{archive}: unreadable archive ({exc})") from exc
        if len(got) != len(idx):
            raise DecodeError(f"{archive}: {len(idx) - len(got)} sampled frames missing from the archive")
        imgs = [got[i] for i in idx]
    return DecodedFrames(imgs, idx, len(frames), 0.0, "images")


def read_sequence_at(frames: Sequence[str], indices: Sequence[int], archive: str | None = None) -> list[np.ndarray]:
    """Images at ``indices`` of an image sequence (files, or members of ``archive``)."""
    sub = [frames[i] for i in indices]
    return read_image_sequence(sub, len(sub), archive=archive).frames if sub else []


__all__ = ["DecodeError", "DecodedFrames", "read_video", "read_image", "read_image_sequence"]

"""Shard writer: one tar per work unit, written under a temporary name, renamed, then stats.

Order on disk (the completion protocol of :mod:`hilif.pipeline.schema`):
``.<shard>.tar.tmp`` -> ``<shard>.tar`` (rename) -> ``<shard>.videos.jsonl`` (the unit's
manifest records) -> ``<shard>.stats.json`` (the marker: the unit is complete).
Tar members carry a fixed mtime/user so the same samples give the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import schema

PNG_COMPRESSION = 3  # fixed: the same face always encodes to the same bytes
JPEG_QUALITY = 95


def encode_image(face_rgb: np.ndarray, ext: str = schema.DEFAULT_IMAGE_EXT) -> bytes:
    import cv2

    bgr = np.ascontiguousarray(face_rgb[:, :, ::-1])
    if ext == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    elif ext == "jpg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        raise schema.SchemaError(f"image format must be one of {schema.IMAGE_EXTS}, got {ext!r}")
    if not ok:
        raise RuntimeError(f"image encoding to {ext} failed")
    return buf.tobytes()


class UnitShardWriter:
    """Writes one shard (one work unit) via webdataset's TarWriter."""

    def __init__(self, final: str | os.PathLike, split: str, label: int) -> None:
        import webdataset as wds

        self.final = Path(final)
        self.tmp = schema.tmp_path(self.final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.split, self.label = split, label
        self._fh: BinaryIO | None = open(self.tmp, "wb")
        self._tar = wds.TarWriter(self._fh, user="hilif", group="hilif", mtime=0.0, encoder=False)
        self.samples = 0
        self.videos = 0
        self.methods: dict[str, int] = {}
        self.records: list[dict[str, Any]] = []

    def write_video(self, samples: list[tuple[schema.SampleMeta, bytes]], record: dict[str, Any], ext: str) -> None:
        for meta, img in samples:
            if meta.split != self.split or meta.label != self.label:
                raise schema.SchemaError(
                    f"sample {meta.key} ({meta.split}/{meta.label}) written to a {self.split}/{self.label} shard"
                )
            self._tar.write(schema.encode_sample(meta, img, ext))
            self.methods[meta.method] = self.methods.get(meta.method, 0) + 1
        self.samples += len(samples)
        self.videos += 1 if samples else 0
        self.records.append(dict(record, shard=self.final.name))

    def commit(self) -> schema.ShardStats:
        assert self._fh is not None
        self._tar.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self.tmp, self.final)
        schema.write_records(schema.videos_path(self.final), self.records)
        stats = schema.ShardStats(
            shard=self.final.name,
            split=self.split,
            label=self.label,
            samples=self.samples,
            videos=self.videos,
            bytes=self.final.stat().st_size,
            methods=dict(sorted(self.methods.items())),
        )
        schema.write_stats(self.final, stats)
        return stats

    def abort(self) -> None:
        if self._fh is not None:
            try:
                self._tar.close()
            except Exception:
                pass
            self._fh.close()
            self._fh = None
        self.tmp.unlink(missing_ok=True)

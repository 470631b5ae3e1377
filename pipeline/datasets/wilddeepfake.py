"""WildDeepfake: face-image sequences already cropped, not videos.

``{real,fake}_{train,test}/<N>.tar.gz``, each unpacking to ``<N>/{real|fake}/<seq>/<frame>.png``;
the unpacked tree (``{real,fake}_{train,test}/<N>/{real|fake}/<seq>/*.png``) is read too.
A "video" here is one sequence; frames are sampled uniformly per sequence.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path, PurePosixPath

from .. import schema
from ..decode import IMAGE_SUFFIXES
from . import FRAMES_CROSS, LayoutError, Listing, VideoItem, require_some

NAME = "wilddeepfake"
FAKE_METHOD = "WildDeepfake"
SET_DIRS = ("real_train", "fake_train", "real_test", "fake_test")


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _item(sub: str, vid: str, path: str, rel: str, frames: list[str], archive: str | None) -> VideoItem:
    kind, split = sub.split("_")
    label = schema.REAL if kind == "real" else schema.FAKE
    method = schema.REAL_METHOD if label == schema.REAL else FAKE_METHOD
    return VideoItem(split, label, method, vid, path, rel, tuple(sorted(frames, key=_natural)), archive)


def _archive_sequences(archive: Path) -> dict[str, list[str]]:
    seqs: dict[str, list[str]] = {}
    try:
        with tarfile.open(archive, "r:*") as tf:
            for m in tf:
                if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES):
                    seqs.setdefault(str(PurePosixPath(m.name).parent), []).append(m.name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LayoutError(f"{archive}: unreadable archive ({exc}); re-download it or unpack it by hand") from exc
    return seqs


def list_videos(root: Path) -> Listing:
    root = Path(root)
    present = [s for s in SET_DIRS if (root / s).is_dir()]
    if not present:
        raise LayoutError(f"{root}: not a WildDeepfake root: expected folders {', '.join(SET_DIRS)}")
    items: list[VideoItem] = []
    for sub in present:
        base = root / sub
        for arc in sorted(base.glob("*.tar.gz")) + sorted(base.glob("*.tar")):
            n = arc.name.split(".")[0]
            if (base / n).is_dir():
                continue  # unpacked next to its archive: read the folder
            for seq, frames in sorted(_archive_sequences(arc).items()):
                vid = f"{n}_{PurePosixPath(seq).name}"
                items.append(_item(sub, vid, str(arc), f"{arc.relative_to(root)}:{seq}", frames, str(arc)))
        for d in sorted(p for p in base.iterdir() if p.is_dir()):
            seq_dirs: dict[Path, list[str]] = {}
            for f in d.rglob("*"):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    seq_dirs.setdefault(f.parent, []).append(str(f))
            for seq, frames in sorted(seq_dirs.items()):
                vid = f"{d.name}_{seq.name}"
                items.append(_item(sub, vid, str(seq), str(seq.relative_to(root)), frames, None))
    return require_some(
        Listing(NAME, "orig", str(root), items, [], dict(FRAMES_CROSS)),
        f"{{{','.join(SET_DIRS)}}}/<N>.tar.gz or unpacked <N>/<real|fake>/<sequence>/*.png",
    )

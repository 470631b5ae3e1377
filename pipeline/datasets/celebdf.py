"""Celeb-DF (v2): ``Celeb-real/``, ``YouTube-real/``, ``Celeb-synthesis/`` and the test list.

``List_of_testing_videos.txt`` has lines ``<label> <subdir>/<file>.mp4`` where
**1 = real and 0 = fake** (the reverse of this project's labels). Test = the listed
videos; train = every other video (there is no official validation split).
"""

from __future__ import annotations

from pathlib import Path

from .. import schema
from . import FRAMES_CROSS, LayoutError, Listing, VideoItem, require_some

NAME = "celebdf"
REAL_DIRS = ("Celeb-real", "YouTube-real")
FAKE_DIR = "Celeb-synthesis"
TEST_LIST = "List_of_testing_videos.txt"
FAKE_METHOD = "Celeb-synthesis"


def _video_id(rel: str) -> str:
    p = Path(rel)
    return f"{p.parent.name}_{p.stem}"


def read_test_list(path: Path) -> dict[str, int]:
    """Relative path -> label in this project's convention (0 real, 1 fake)."""
    out: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise LayoutError(f"{path}:{n}: expected '<1 real|0 fake> <subdir>/<file>.mp4', got {line!r}")
        out[parts[1].strip()] = schema.REAL if parts[0] == "1" else schema.FAKE
    return out


def list_videos(root: Path) -> Listing:
    root = Path(root)
    test_list = root / TEST_LIST
    if not test_list.is_file():
        raise LayoutError(f"{root}: not a Celeb-DF v2 root: expected {test_list}")
    tests = read_test_list(test_list)
    items: list[VideoItem] = []
    missing: list[VideoItem] = []
    for rel, label in sorted(tests.items()):
        sub = Path(rel).parts[0]
        method = schema.REAL_METHOD if sub in REAL_DIRS else FAKE_METHOD
        if (label == schema.REAL) != (sub in REAL_DIRS):
            raise LayoutError(
                f"{test_list}: {rel} is labelled {'real' if label == 0 else 'fake'} but lies in {sub}/ "
                "(this list uses 1 = real, 0 = fake)"
            )
        it = VideoItem("test", label, method, _video_id(rel), str(root / rel), rel)
        (items if (root / rel).is_file() else missing).append(it)
    for sub in REAL_DIRS + (FAKE_DIR,):
        d = root / sub
        if not d.is_dir():
            continue
        label = schema.FAKE if sub == FAKE_DIR else schema.REAL
        method = FAKE_METHOD if sub == FAKE_DIR else schema.REAL_METHOD
        for p in sorted(d.glob("*.mp4")):
            rel = f"{sub}/{p.name}"
            if rel not in tests:
                items.append(VideoItem("train", label, method, _video_id(rel), str(p), rel))
    return require_some(
        Listing(NAME, "orig", str(root), items, missing, dict(FRAMES_CROSS)),
        f"{root}/{{Celeb-real,YouTube-real,Celeb-synthesis}}/*.mp4",
    )

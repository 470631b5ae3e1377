"""Dataset readers: each finds a benchmark's videos as its owners ship them, with labels and splits.

Every reader returns a :class:`Listing`: the videos found (:class:`VideoItem`), the ones
its split files name but that are absent on disk (``missing``), and the default number
of frames per split. A wrong root or layout raises :class:`LayoutError` naming the
folder or file that was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import schema

# frames per video: 80 per training video; FF++ val/test 20; cross-dataset tests 32
FRAMES_FFPP = {"train": 80, "val": 20, "test": 20}
FRAMES_CROSS = {"train": 80, "val": 32, "test": 32}


class LayoutError(ValueError):
    """The dataset root does not have the expected layout."""


@dataclass(frozen=True)
class VideoItem:
    split: str
    label: int  # 0 real / 1 fake
    method: str  # schema.REAL_METHOD for reals, else the manipulation's name
    video_id: str
    path: str  # the video file (or, for image sequences, the folder / archive)
    rel: str  # path relative to the dataset root (written as source_path)
    frames: tuple[str, ...] | None = None  # image sequence: ordered files or archive members
    archive: str | None = None  # image sequence inside this tar(.gz)

    def __post_init__(self) -> None:
        if self.split not in schema.SPLITS:
            raise ValueError(f"bad split {self.split!r}")
        if self.label not in schema.LABEL_NAMES:
            raise ValueError(f"bad label {self.label!r}")

    @property
    def sort_key(self) -> tuple:
        return (self.video_id, self.method, self.rel)


@dataclass
class Listing:
    dataset: str
    quality: str
    root: str
    items: list[VideoItem]
    missing: list[VideoItem] = field(default_factory=list)
    default_frames: dict[str, int] = field(default_factory=lambda: dict(FRAMES_CROSS))
    qualities: tuple[str, ...] = ("orig",)


def _readers() -> dict[str, Callable[..., Listing]]:
    from . import celebdf, demo, dfdc, ffpp, folder, wilddeepfake

    return {
        "ffpp": ffpp.list_videos,
        "demo": demo.list_videos,
        "celebdf": celebdf.list_videos,
        "dfdc": dfdc.list_videos,
        "wilddeepfake": wilddeepfake.list_videos,
        "folder": folder.list_videos,
    }


DATASETS = ("ffpp", "celebdf", "dfdc", "wilddeepfake", "folder", "demo")
QUALITIES = {"ffpp": ("raw", "c23", "c40"), "demo": ("c23", "c40")}
DEFAULT_QUALITY = {"ffpp": "c23", "demo": "c23"}


def default_quality(dataset: str) -> str:
    return DEFAULT_QUALITY.get(dataset, "orig")


def check_quality(dataset: str, quality: str) -> None:
    allowed = QUALITIES.get(dataset, ("orig",))
    if quality not in allowed:
        raise LayoutError(f"--quality {quality!r} is not available for {dataset}: use one of {', '.join(allowed)}")


def list_dataset(
    dataset: str, root: str | Path, quality: str | None = None, methods: list[str] | None = None
) -> Listing:
    readers = _readers()
    if dataset not in readers:
        raise LayoutError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    q = quality or default_quality(dataset)
    check_quality(dataset, q)
    root = Path(root).expanduser()
    if not root.exists():
        raise LayoutError(f"{root}: no such folder (--root must point at the {dataset} download)")
    if dataset in ("ffpp", "demo"):
        return readers[dataset](root, q, methods)
    if methods:
        raise LayoutError(f"--methods applies to ffpp/demo only, not {dataset}")
    return readers[dataset](root)


def require_some(listing: Listing, expected: str) -> Listing:
    if not listing.items:
        n = len(listing.missing)
        extra = f" ({n} listed videos are all absent)" if n else ""
        raise LayoutError(f"{listing.root}: no videos found{extra}; expected {expected}")
    return listing

"""The embedded demo dataset: the FF++ layout, with its own splits in ``<root>/splits/``."""

from __future__ import annotations

from pathlib import Path

from . import Listing
from .ffpp import list_from_splits, load_splits


def list_videos(root: Path, quality: str = "c23", methods: list[str] | None = None) -> Listing:
    root = Path(root)
    return list_from_splits(root, quality, methods, load_splits(root / "splits"), name="demo")

"""FaceForensics++ as laid out by the official download script.

``original_sequences/youtube/<q>/videos/NNN.mp4`` (reals) and
``manipulated_sequences/<Method>/<q>/videos/TTT_SSS.mp4`` (fakes); the official splits
(``[target, source]`` pairs) ship with this package. A pair ``[a, b]`` puts the reals
``a`` and ``b`` and, per method, the fakes ``a_b`` and ``b_a`` into its split.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from .. import schema
from . import FRAMES_FFPP, LayoutError, Listing, VideoItem, require_some

DEFAULT_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
ALL_METHODS = DEFAULT_METHODS + ("FaceShifter",)
NAME = "ffpp"


def official_splits() -> dict[str, list[list[str]]]:
    base = resources.files("hilif.pipeline") / "data" / "ffpp_splits"
    return {s: json.loads((base / f"{s}.json").read_text()) for s in schema.SPLITS}


def load_splits(folder: Path) -> dict[str, list[list[str]]]:
    out = {}
    for s in schema.SPLITS:
        p = folder / f"{s}.json"
        if not p.is_file():
            raise LayoutError(f"{p}: split file missing (expected {folder}/{{train,val,test}}.json)")
        try:
            out[s] = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise LayoutError(f"{p}: not valid JSON ({exc})") from exc
    return out


def check_methods(methods: list[str] | None) -> tuple[str, ...]:
    if not methods:
        return DEFAULT_METHODS
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise LayoutError(f"unknown FF++ method(s) {', '.join(bad)}: use {', '.join(ALL_METHODS)}")
    return tuple(dict.fromkeys(methods))


def list_from_splits(
    root: Path, quality: str, methods: list[str] | None, splits: dict[str, list[list[str]]], name: str = NAME
) -> Listing:
    methods_t = check_methods(methods)
    real_dir = root / "original_sequences" / "youtube" / quality / "videos"
    fake_dirs = {m: root / "manipulated_sequences" / m / quality / "videos" for m in methods_t}
    if not real_dir.is_dir() and not any(d.is_dir() for d in fake_dirs.values()):
        raise LayoutError(
            f"{root}: not a FaceForensics++ root for {quality}: expected {real_dir.relative_to(root)} "
            f"or manipulated_sequences/<method>/{quality}/videos"
        )
    items: list[VideoItem] = []
    missing: list[VideoItem] = []
    seen: set[str] = set()
    for split in schema.SPLITS:
        for pair in splits[split]:
            a, b = (str(x) for x in pair)
            cands = [(schema.REAL, schema.REAL_METHOD, v, real_dir / f"{v}.mp4") for v in (a, b)]
            cands += [
                (schema.FAKE, m, v, fake_dirs[m] / f"{v}.mp4") for m in methods_t for v in (f"{a}_{b}", f"{b}_{a}")
            ]
            for label, method, vid, path in cands:
                if (method, vid) in seen:
                    continue
                seen.add((method, vid))
                it = VideoItem(split, label, method, vid, str(path), str(path.relative_to(root)))
                (items if path.is_file() else missing).append(it)
    listing = Listing(name, quality, str(root), items, missing, dict(FRAMES_FFPP), ("raw", "c23", "c40"))
    return require_some(listing, f"{real_dir} and manipulated_sequences/<method>/{quality}/videos/*.mp4")


def list_videos(root: Path, quality: str = "c23", methods: list[str] | None = None) -> Listing:
    return list_from_splits(Path(root), quality, methods, official_splits())

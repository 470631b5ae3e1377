"""DFDC (full challenge set): training parts with ``metadata.json``, the test folder with ``labels.csv``.

``dfdc_train_part_N/metadata.json`` maps ``"<id>.mp4"`` to ``{"label": "REAL"|"FAKE", ...}``;
the public test folder holds mp4s (directly or in ``videos/``) and ``labels.csv``
(``filename,label``, 0 = real, 1 = fake).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .. import schema
from . import FRAMES_CROSS, LayoutError, Listing, VideoItem, require_some

NAME = "dfdc"
FAKE_METHOD = "DFDC"


def _item(split: str, label: int, root: Path, path: Path) -> VideoItem:
    method = schema.REAL_METHOD if label == schema.REAL else FAKE_METHOD
    return VideoItem(split, label, method, path.stem, str(path), str(path.relative_to(root)))


def list_videos(root: Path) -> Listing:
    root = Path(root)
    parts = sorted(root.glob("dfdc_train_part_*/metadata.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    label_files = sorted(p for p in list(root.glob("labels.csv")) + list(root.glob("*/labels.csv")))
    if not parts and not label_files:
        raise LayoutError(
            f"{root}: not a DFDC root: expected dfdc_train_part_N/metadata.json or <test folder>/labels.csv"
        )
    items: list[VideoItem] = []
    missing: list[VideoItem] = []
    for meta in parts:
        try:
            entries = json.loads(meta.read_text())
        except json.JSONDecodeError as exc:
            raise LayoutError(f"{meta}: not valid JSON ({exc})") from exc
        for name, rec in sorted(entries.items()):
            lab = str(rec.get("label", "")).upper()
            if lab not in ("REAL", "FAKE"):
                raise LayoutError(f"{meta}: {name} has label {rec.get('label')!r}, expected REAL or FAKE")
            it = _item("train", schema.FAKE if lab == "FAKE" else schema.REAL, root, meta.parent / name)
            (items if Path(it.path).is_file() else missing).append(it)
    for lf in label_files:
        with lf.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"filename", "label"} <= set(reader.fieldnames):
                raise LayoutError(f"{lf}: expected a header 'filename,label'")
            for n, row in enumerate(reader, 2):
                if row["label"].strip() not in ("0", "1"):
                    raise LayoutError(f"{lf}:{n}: label must be 0 (real) or 1 (fake), got {row['label']!r}")
                name = row["filename"].strip()
                p = lf.parent / name
                if not p.is_file() and (lf.parent / "videos" / name).is_file():
                    p = lf.parent / "videos" / name
                it = _item("test", int(row["label"]), root, p)
                (items if p.is_file() else missing).append(it)
    return require_some(
        Listing(NAME, "orig", str(root), items, missing, dict(FRAMES_CROSS)),
        f"the videos named in {root}/dfdc_train_part_N/metadata.json and labels.csv",
    )

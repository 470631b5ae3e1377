"""Users' own videos, listed in a CSV with the columns ``path,label,split`` (optional ``method``).

``--root`` is the CSV file; relative paths are taken from the CSV's folder. ``label`` is
0/1 or real/fake; ``split`` is train, val or test.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .. import schema
from . import FRAMES_CROSS, LayoutError, Listing, VideoItem, require_some

NAME = "folder"
LABELS = {"0": schema.REAL, "1": schema.FAKE, "real": schema.REAL, "fake": schema.FAKE}


def list_videos(root: Path) -> Listing:
    csv_path = Path(root)
    if csv_path.is_dir():
        cands = sorted(csv_path.glob("*.csv"))
        if len(cands) != 1:
            raise LayoutError(
                f"{csv_path}: --root must be the CSV file (path,label,split), "
                f"found {len(cands)} CSV files in the folder"
            )
        csv_path = cands[0]
    base = csv_path.parent
    items: list[VideoItem] = []
    missing: list[VideoItem] = []
    seen: set[str] = set()
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label", "split"} <= {c.strip() for c in reader.fieldnames}:
            raise LayoutError(f"{csv_path}: expected a header with the columns path,label,split")
        for n, row in enumerate(reader, 2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            label = LABELS.get(row["label"].lower())
            if label is None:
                raise LayoutError(f"{csv_path}:{n}: label must be 0/1 or real/fake, got {row['label']!r}")
            if row["split"] not in schema.SPLITS:
                raise LayoutError(
                    f"{csv_path}:{n}: split must be one of {', '.join(schema.SPLITS)}, got {row['split']!r}"
                )
            rel = row["path"]
            p = Path(rel) if Path(rel).is_absolute() else base / rel
            vid = schema.sanitize_key_part(str(Path(rel).with_suffix("")))
            if vid in seen:
                raise LayoutError(f"{csv_path}:{n}: {rel} gives the same video id {vid!r} as an earlier row")
            seen.add(vid)
            method = row.get("method") or schema.LABEL_NAMES[label]
            it = VideoItem(row["split"], label, method, vid, str(p), rel)
            (items if p.is_file() else missing).append(it)
    return require_some(
        Listing(NAME, "orig", str(csv_path), items, missing, dict(FRAMES_CROSS)), f"the files named in {csv_path}"
    )

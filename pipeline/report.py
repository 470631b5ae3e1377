"""Rich progress and summary tables for `hilif-prep extract` (console side only)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import schema


class ExtractProgress:
    """A progress bar over videos: frames/s, faces replaced, failures, ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("videos"),
            TextColumn("{task.fields[fps]:.1f} frames/s"),
            TextColumn("replaced {task.fields[replaced]}"),
            TextColumn("[red]failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = None
        self.frames = 0
        self.replaced = 0
        self.failed = 0
        self.t0 = time.monotonic()

    def __enter__(self) -> "ExtractProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "start":
            self.t0 = time.monotonic()
            self.task = self.progress.add_task("extract", total=data["videos"], fps=0.0, replaced=0, failed=0)
            if data.get("skipped_units"):
                self.console.print(f"resuming: {data['skipped_units']} complete shards kept in {data['out']}")
        elif event == "video" and self.task is not None:
            rec = data["record"]
            self.frames += rec.get("samples", 0)
            self.replaced += rec.get("replaced", 0)
            self.failed += rec["status"] in schema.FAILED
            fps = self.frames / max(time.monotonic() - self.t0, 1e-6)
            self.progress.update(self.task, advance=1, fps=fps, replaced=self.replaced, failed=self.failed)


#: the table's count columns: videos per status, then samples, replaced frames, frames short
_COUNTS = (schema.OK, schema.NOFACE, schema.ERROR, schema.MISSING, "samples", "replaced", "frames_missing")


def summary_table(records: list[dict[str, Any]]) -> Table:
    """Videos and samples per split and method."""
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for r in records:
        row = rows.setdefault((r["split"], r["method"]), dict.fromkeys(_COUNTS, 0))
        row[r["status"]] += 1
        row["samples"] += r.get("samples", 0)
        row["replaced"] += r.get("replaced", 0)
        if r["status"] != schema.MISSING:
            row["frames_missing"] += r.get("missing", 0)
    t = Table(title="extracted", show_lines=False)
    for col in (
        "split",
        "method",
        "videos ok",
        "no face",
        "errors",
        "not on disk",
        "samples",
        "replaced",
        "frames short",
    ):
        t.add_column(col, justify="left" if col in ("split", "method") else "right")
    order = {s: i for i, s in enumerate(schema.SPLITS)}
    # splits in order; within one, the reals first, then the methods by name
    for (split, method), row in sorted(
        rows.items(), key=lambda kv: (order[kv[0][0]], kv[0][1] != schema.REAL_METHOD, kv[0][1])
    ):
        t.add_row(split, method, *(str(row[k]) for k in _COUNTS))
    return t

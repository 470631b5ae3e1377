"""PNG plots: training curves from metrics.jsonl, ROC curves (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _atomic_savefig(fig: "plt.Figure", path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_curves(metrics_jsonl: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Train loss (CE and L_d), validation AUC/accuracy and learning rate per epoch, both stages in sequence; with
    stage-2 rows that log L_d's terms, a fourth panel: M_fake, M_real and the gap M_fake - M_real (the hinge's
    margin is 1)."""
    rows = read_jsonl(metrics_jsonl)
    x = np.arange(1, len(rows) + 1)
    with_gap = any(r.get("train_gap") is not None for r in rows)
    fig, axes = plt.subplots(1, 4 if with_gap else 3, figsize=(18.5 if with_gap else 14, 3.8))
    stage2 = [i + 1 for i, r in enumerate(rows) if r["stage"] == 2]

    def series(k: str) -> list[float]:
        return [np.nan if r.get(k) is None else r[k] for r in rows]

    axes[0].plot(x, series("train_loss"), "o-", label="loss")
    axes[0].plot(x, series("train_ce"), ".--", label="CE")
    if stage2:
        axes[0].plot(x, series("train_ld"), ".--", label="L_d")
    axes[0].set_title("training loss")
    # the validated epochs only (--val-every skips some), joined across the ones between
    validated = np.array([r.get("val_auc") is not None for r in rows], dtype=bool)
    axes[1].plot(x[validated], np.asarray(series("val_auc"))[validated], "o-", label="val AUC")
    axes[1].plot(x[validated], np.asarray(series("val_acc"))[validated], ".--", label="val acc")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_xlim(axes[0].get_xlim())  # the loss's epochs, whichever of them were validated
    axes[1].set_title("validation")
    axes[2].plot(x, series("lr"), "o-", label="lr (end of epoch)")
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    if with_gap:
        axes[3].plot(x, series("train_gap"), "o-", label="gap M_fake - M_real")
        axes[3].plot(x, series("train_m_fake"), ".--", label="M_fake")
        axes[3].plot(x, series("train_m_real"), ".--", label="M_real")
        axes[3].set_title("L_d terms (train, per epoch)")
    for ax in axes:
        if stage2:
            ax.axvline(stage2[0] - 0.5, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("epoch (stage 1, then stage 2)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _atomic_savefig(fig, Path(path))


def plot_roc(
    curves: dict[str, tuple[Sequence[float], Sequence[float], float]], path: str | os.PathLike, title: str = ""
) -> Path:
    """ROC curves: name -> (fpr, tpr, auc); log-scaled FPR inset shows the low-FPR operating points."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for name, (fpr, tpr, auc) in curves.items():
        for ax in axes:
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.4f})")
    axes[0].plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    axes[0].set_title(f"ROC {title}".strip())
    axes[1].set_xscale("log")
    axes[1].set_xlim(1e-4, 1)
    axes[1].set_title("ROC, log FPR")
    for ax in axes:
        ax.set_xlabel("false positive rate (reals called fake)")
        ax.set_ylabel("true positive rate (fakes caught)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return _atomic_savefig(fig, Path(path))


def save_grid(rows: list[list[np.ndarray]], titles: list[str], row_labels: list[str], path: str | os.PathLike) -> Path:
    """A grid of RGB uint8 images (rows x columns) with column titles and row labels."""
    nr, nc = len(rows), len(titles)
    fig, axes = plt.subplots(nr, nc, figsize=(2.2 * nc, 2.2 * nr), squeeze=False)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            ax = axes[i][j]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=8)
    return _atomic_savefig(fig, Path(path))

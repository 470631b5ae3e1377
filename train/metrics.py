"""Detection metrics: frame-level Acc@0.5 and AUC (the paper's), EER, AP, TPR at fixed FPR, video-level AUC.

Everything is computed by scikit-learn (roc_curve, roc_auc_score, average_precision_score); this module
only groups scores (per method, per video) and reads operating points off the ROC curve.

Two numbers per sample: the fake probability (softmax, thresholded at 0.5 for Acc) and a ranking score for the
ROC-based metrics (AUC, EER, AP, TPR@FPR). hilif ranks by the logit difference logit_fake - logit_real in float32:
it orders samples exactly as the softmax does, but does not saturate - confident softmaxes all round to 1.0 (bf16
logits, float32 softmax) and would tie in the ROC. Without a ranking score the probability ranks.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from hilif.common.jsonable import finite_values
from hilif.pipeline import schema

#: FPR operating points reported as TPR@FPR.
FPR_POINTS = (1e-2, 1e-3)


@dataclass
class BinaryMetrics:
    n: int
    n_real: int
    n_fake: int
    acc: float  # at threshold 0.5 on the fake probability
    auc: float  # NaN when only one class is present
    eer: float
    ap: float
    tpr_at_fpr_1e2: float
    tpr_at_fpr_1e3: float

    def to_dict(self) -> dict[str, float | int | None]:
        return finite_values(dataclasses.asdict(self))  # JSON has no NaN: undefined metrics become null


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Highest TPR whose FPR does not exceed `target` (the ROC is a step function: no interpolation)."""
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """EER: where the false-positive and false-negative rates meet (midpoint at the closest ROC point)."""
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def binary_metrics(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    ranking: Sequence[float] | np.ndarray | None = None,
) -> BinaryMetrics:
    """Metrics of fake probabilities `scores` against labels (1 = fake): Acc from `scores` >= threshold, the
    ROC-based metrics from `ranking` (e.g. logit differences; default: `scores`)."""
    y = np.asarray(labels, dtype=np.int64)
    prob = np.asarray(scores, dtype=np.float64)
    p = prob if ranking is None else np.asarray(ranking, dtype=np.float64)
    if y.shape != prob.shape or y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of one length, got {y.shape}, {prob.shape} and {p.shape}")
    n_fake = int((y == schema.FAKE).sum())
    n_real = int((y == schema.REAL).sum())
    acc = float(((prob >= threshold).astype(np.int64) == y).mean()) if len(y) else math.nan
    nan = math.nan
    if n_fake == 0 or n_real == 0:
        return BinaryMetrics(len(y), n_real, n_fake, acc, nan, nan, nan, nan, nan)
    fpr, tpr, _ = roc_curve(y, p, pos_label=schema.FAKE, drop_intermediate=False)
    return BinaryMetrics(
        n=len(y),
        n_real=n_real,
        n_fake=n_fake,
        acc=acc,
        auc=float(roc_auc_score(y, p)),
        eer=equal_error_rate(fpr, tpr),
        ap=float(average_precision_score(y, p, pos_label=schema.FAKE)),
        tpr_at_fpr_1e2=tpr_at_fpr(fpr, tpr, FPR_POINTS[0]),
        tpr_at_fpr_1e3=tpr_at_fpr(fpr, tpr, FPR_POINTS[1]),
    )


def video_scores(
    videos: Sequence[str], labels: Sequence[int], scores: Sequence[float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean frame score per video. `videos` are `schema.video_key`s (dataset/method/id), so the four FF++
    fakes made from one source pair stay four videos. A video whose frames disagree on the label is an error."""
    group: dict[str, list[float]] = defaultdict(list)
    vlabel: dict[str, int] = {}
    for v, y, s in zip(videos, labels, scores):
        if vlabel.setdefault(v, int(y)) != int(y):
            raise ValueError(f"video {v!r} has frames labelled both real and fake")
        group[v].append(float(s))
    keys = sorted(group)
    return keys, np.array([vlabel[k] for k in keys], dtype=np.int64), np.array([np.mean(group[k]) for k in keys])


def video_metrics(
    videos: Sequence[str], labels: Sequence[int], scores: Sequence[float], ranking: Sequence[float] | None = None
) -> BinaryMetrics:
    """Per video: Acc from the mean frame probability, the ROC-based metrics from the mean frame ranking score."""
    _, y, p = video_scores(videos, labels, scores)
    r = None if ranking is None else video_scores(videos, labels, ranking)[2]
    return binary_metrics(y, p, ranking=r)


def per_method_metrics(
    methods: Sequence[str], labels: Sequence[int], scores: Sequence[float], ranking: Sequence[float] | None = None
) -> dict[str, BinaryMetrics]:
    """One row per fake method: that method's fakes against all the reals (the paper's Table II layout)."""
    m = np.asarray(methods)
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(scores, dtype=np.float64)
    r = p if ranking is None else np.asarray(ranking, dtype=np.float64)
    real = y == schema.REAL
    out: dict[str, BinaryMetrics] = {}
    for method in sorted(set(m[~real].tolist())):
        sel = real | ((m == method) & ~real)
        out[method] = binary_metrics(y[sel], p[sel], ranking=r[sel])
    return out


def roc_points(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the ROC of ranking scores `scores` (probabilities or logit differences)."""
    fpr, tpr, _ = roc_curve(np.asarray(labels), np.asarray(scores), pos_label=schema.FAKE)
    return fpr, tpr

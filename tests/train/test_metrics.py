"""Metrics on inputs with known answers, against scikit-learn, and video grouping by schema.video_key."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from hilif.pipeline import schema
from hilif.train.metrics import binary_metrics, per_method_metrics, video_metrics, video_scores


def test_known_values() -> None:
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    m = binary_metrics(y, p)
    # one real above 0.5 (0.6) and one fake below (0.4): 6 of 8 right
    assert m.acc == pytest.approx(0.75)
    # 16 real-fake pairs, one ordered wrongly (0.6 real > 0.4 fake): AUC 15/16
    assert m.auc == pytest.approx(15 / 16)
    assert m.auc == pytest.approx(roc_auc_score(y, p))
    assert m.ap == pytest.approx(average_precision_score(y, p))
    # at threshold 0.6..0.7 FPR = FNR = 0.25
    assert m.eer == pytest.approx(0.25)
    # with no false positive allowed, the fakes above every real (0.7, 0.8, 0.9) are caught: 3/4
    assert m.tpr_at_fpr_1e2 == pytest.approx(0.75) and m.tpr_at_fpr_1e3 == pytest.approx(0.75)
    assert (m.n, m.n_real, m.n_fake) == (8, 4, 4)


def test_random_inputs_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    m = binary_metrics(y, p)
    assert m.auc == pytest.approx(roc_auc_score(y, p))
    assert m.ap == pytest.approx(average_precision_score(y, p))
    assert m.acc == pytest.approx(np.mean((p >= 0.5) == y))
    assert 0 < m.eer < 0.5


def test_one_class_gives_nan_auc_not_a_crash() -> None:
    m = binary_metrics([1, 1, 1], [0.2, 0.8, 0.9])
    assert math.isnan(m.auc) and m.acc == pytest.approx(2 / 3)
    assert m.to_dict()["auc"] is None  # JSON-safe


def test_video_level_keeps_ffpp_methods_of_one_source_apart() -> None:
    # FF++: Deepfakes and FaceSwap fakes of the same source pair share the id "000_003"
    df = schema.video_key("ffpp", "Deepfakes", "000_003")
    fs = schema.video_key("ffpp", "FaceSwap", "000_003")
    real = schema.video_key("ffpp", "real", "000")
    videos = [df, df, fs, fs, real, real]
    labels = [1, 1, 1, 1, 0, 0]
    scores = [0.9, 0.7, 0.2, 0.3, 0.1, 0.5]
    keys, y, s = video_scores(videos, labels, scores)
    assert len(keys) == 3
    got = dict(zip(keys, s))
    assert got[df] == pytest.approx(0.8) and got[fs] == pytest.approx(0.25) and got[real] == pytest.approx(0.3)
    # real 0.3 vs fakes 0.8 and 0.25: one pair right, one wrong -> 0.5; merging the two methods into
    # one "video" (mean 0.525) would wrongly give 1.0
    assert video_metrics(videos, labels, scores).auc == pytest.approx(0.5)


def test_video_with_mixed_labels_is_an_error() -> None:
    with pytest.raises(ValueError, match="both real and fake"):
        video_scores(["a", "a"], [0, 1], [0.1, 0.2])


def test_per_method_rows_are_each_method_against_all_reals() -> None:
    methods = ["real", "real", "Deepfakes", "Deepfakes", "FaceSwap", "FaceSwap"]
    labels = [0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.3, 0.9, 0.8, 0.2, 0.05]
    rows = per_method_metrics(methods, labels, scores)
    assert set(rows) == {"Deepfakes", "FaceSwap"}
    assert rows["Deepfakes"].auc == pytest.approx(1.0) and rows["Deepfakes"].n == 4
    assert rows["FaceSwap"].auc == pytest.approx(roc_auc_score([0, 0, 1, 1], [0.1, 0.3, 0.2, 0.05]))

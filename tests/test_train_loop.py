"""The training loop and evaluation at scale: ranking by logit difference, picklable perturbations, eval folders,
mid-epoch checkpoints and resume, refused resumes that write nothing, SyncBatchNorm, losses averaged over ranks."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hilif.train import evaluate as ev
from hilif.train.data import EvalStream, load_info
from hilif.train.metrics import binary_metrics, per_method_metrics, video_metrics
from train_shards_fixture import make_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards"))


# --------------------------------------------------------------------------- ranking by logit difference


class _ConfidentModel(torch.nn.Module):
    """Logits (0, 20 + i/4) for the i-th sample of a batch: softmaxes that all round to 1.0 in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = torch.arange(x.shape[0], dtype=x.dtype, device=x.device)
        return torch.stack([torch.zeros_like(i), 20 + i / 4 + x.flatten(1)[:, 0] * 0], dim=1)


def test_predict_ranks_by_logit_difference_where_softmax_saturates() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 1])  # the fakes get the larger logit differences
    batch = {"image": torch.zeros(6, 3, 4, 4, dtype=torch.uint8), "label": labels, "key": list("abcdef"),
             "video": list("abcdef"), "method": ["real"] * 3 + ["Deepfakes"] * 3}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        preds = ev.predict(_ConfidentModel(), [batch], "cpu", amp=torch.bfloat16)
    assert np.all(preds.scores == 1.0)  # reported probabilities: softmax as before, saturated
    assert len(set(preds.margins.tolist())) == 6  # the logit differences are all distinct
    by_prob = binary_metrics(preds.labels, preds.scores)
    by_margin = binary_metrics(preds.labels, preds.scores, ranking=preds.margins)
    assert by_prob.auc == pytest.approx(0.5)  # every pair tied
    assert by_margin.auc == 1.0 and by_margin.tpr_at_fpr_1e2 == 1.0 and by_margin.eer == 0.0
    assert by_margin.acc == by_prob.acc == 0.5  # Acc still thresholds the probability at 0.5
    rows = per_method_metrics(preds.methods, preds.labels, preds.scores, preds.margins)
    assert rows["Deepfakes"].auc == 1.0
    assert video_metrics(preds.videos, preds.labels, preds.scores, preds.margins).auc == 1.0


# --------------------------------------------------------------------------- perturbations in loader workers


@pytest.mark.parametrize("name", list(ev.PERTURBATIONS))
def test_perturbations_pickle_and_act_the_same_after(name: str) -> None:
    fn = ev.perturbation(name, ev.PERTURBATIONS[name][0][-1])
    back = pickle.loads(pickle.dumps(fn))
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(back(img), fn(img))  # _Seeded: the pickled copy carries the same RNG state
    assert not np.array_equal(fn(img), img)


def test_eval_loader_with_a_perturbation_under_spawn(shards: Path) -> None:
    stream = EvalStream(shards, "test", 32, 8, perturb=ev.perturbation("jpeg", 30))
    plain = EvalStream(shards, "test", 32, 8)
    loader = DataLoader(stream, batch_size=None, num_workers=1, multiprocessing_context="spawn")
    got = {k: img for b in loader for k, img in zip(b["key"], b["image"])}
    ref = {k: img for b in plain for k, img in zip(b["key"], b["image"])}
    assert sorted(got) == sorted(ref) and len(got) == 16
    assert any(not torch.equal(got[k], ref[k]) for k in got)  # the perturbation really ran in the spawned worker
    want = {k: img for b in stream for k, img in zip(b["key"], b["image"])}  # same perturbation in-process
    assert all(torch.equal(got[k], want[k]) for k in got)


# --------------------------------------------------------------------------- eval report folders


def test_eval_folders_carry_dataset_quality_and_split(shards: Path) -> None:
    info = load_info(shards)
    c40 = ev.default_out_dir("run/stage2/best.pt", info, "test")
    c23 = ev.default_out_dir("run/stage2/best.pt", dataclasses.replace(info, quality="c23"), "test")
    val = ev.default_out_dir("run/stage2/best.pt", info, "val")
    assert c40 == Path("run/stage2/eval-synth-c40-test")
    assert len({c40, c23, val}) == 3

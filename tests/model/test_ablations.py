"""The ablation switches added for Tables VII, X/XI and eq. 1: a plain self-attention block in DFTM's place, Li et
al.'s original constraint loss, the learnable filter f_w switched off; and the named ablation presets."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F

from hilif.model import HiLIFConfig, build_model
from hilif.model.attention import PixelSelfAttention
from hilif.model.dct import BlockDCTHighPass
from hilif.model.dftm import DFTM, LocalEnhance
from hilif.model.loss import (
    LocalRelationLoss,
    OriginalLocalRelationLoss,
    local_max_difference,
    make_lrc_loss,
    max_pair_difference,
)

TINY = HiLIFConfig.preset("tiny")


def _trainable_without_grad(model: torch.nn.Module, cfg: HiLIFConfig, steps: int = 2) -> list[str]:
    """CE + 0.5 * the config's constraint loss; an SGD step between passes opens DDAFM's zero-initialised gates (see
    tests/model/test_hilif.py); the names of trainable parameters without a non-zero gradient in the last pass."""
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    crit = make_lrc_loss(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        logits, f_all = model(x, return_lrc=True)
        (F.cross_entropy(logits, y) + 0.5 * crit(f_all, y)).backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
        opt.step()
    return missing


# --------------------------------------------------------------------------- Table VII: self-attention at cut A


def test_self_attention_replaces_dftm_at_cut_a() -> None:
    cfg = dataclasses.replace(TINY, dftm=False, self_attention=True, dropout=0.0)
    model = build_model(cfg)
    assert model.dftm is None and not [m for m in model.modules() if isinstance(m, DFTM)]
    blocks = [m for m in model.modules() if isinstance(m, PixelSelfAttention)]
    assert blocks == [model.self_attention]
    # the only module added to the DFTM-less model is that block
    plain = build_model(dataclasses.replace(TINY, dftm=False))
    extra = {k for k in model.state_dict()} - {k for k in plain.state_dict()}
    assert extra and all(k.startswith("self_attention.") for k in extra)
    assert {k for k in plain.state_dict()} <= {k for k in model.state_dict()}
    assert _trainable_without_grad(model, cfg) == []


def test_self_attention_mixes_the_whole_map_unlike_lem() -> None:
    torch.manual_seed(0)
    block = PixelSelfAttention(24, heads=4)
    lem = LocalEnhance(24, (8, 8, 8, 8))
    for module, reaches in ((block, True), (lem, False)):
        x = torch.randn(1, 24, 16, 16, requires_grad=True)
        out = module(x) if module is block else module(x, x, x)
        assert out.shape == x.shape
        out[..., 15, 15].sum().backward()  # does the far corner's output depend on the pixel at (0, 0)?
        assert bool(x.grad[..., 0, 0].abs().sum() > 0) is reaches


def test_self_attention_config_is_checked() -> None:
    with pytest.raises(ValueError, match="dftm=False"):
        HiLIFConfig.preset("tiny", self_attention=True)
    with pytest.raises(ValueError, match="heads"):
        build_model(dataclasses.replace(TINY, dftm=False, self_attention=True, self_attention_heads=5))


# --------------------------------------------------------------------------- eq. 1: f_w switched off


def test_fixed_filter_drops_exactly_f_w() -> None:
    cfg = dataclasses.replace(TINY, dct_learnable_filter=False, dropout=0.0)
    model = build_model(cfg)
    full = build_model(TINY)
    assert model.dftm.highpass.f_w is None and isinstance(full.dftm.highpass.f_w, torch.nn.Parameter)
    assert set(full.state_dict()) - set(model.state_dict()) == {"dftm.highpass.f_w"}
    assert torch.equal(model.dftm.highpass.mask(), model.dftm.highpass.f_base)
    assert _trainable_without_grad(model, cfg) == []


def test_fixed_filter_is_the_f_base_high_pass() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    fixed = BlockDCTHighPass(learnable=False, size=16)
    learn = BlockDCTHighPass(learnable=True, size=16)
    with torch.no_grad():
        learn.f_w.zero_()  # sigma(0) = 0: the learnable mask starts where the fixed one stays
    assert torch.allclose(fixed(x), learn(x), atol=1e-6)
    with torch.no_grad():
        learn.f_w.fill_(1.0)
    assert not torch.allclose(fixed(x), learn(x), atol=1e-3)


# --------------------------------------------------------------------------- Table X/XI: Li et al.'s original loss


def test_max_pair_difference_is_the_most_dissimilar_pair() -> None:
    torch.manual_seed(0)
    f = torch.randn(3, 4, 14, 14)
    starts = range(0, 14 - 5 + 1, 2)
    for b, sample in enumerate(f):
        blocks = [sample[:, y : y + 5, x : x + 5].flatten() for y, x in itertools.product(starts, starts)]
        worst = max(1 - F.cosine_similarity(u, v, dim=0).item() for u, v in itertools.combinations(blocks, 2))
        assert max_pair_difference(f, 5, 2)[b].item() == pytest.approx(worst, abs=1e-5)
    # it is not the paper's M: the top-N mean of mean distances is smaller than the largest single distance
    assert (local_max_difference(f, 5, 2, 8) < max_pair_difference(f, 5, 2)).all()


def test_original_loss_only_changes_the_loss_not_the_model() -> None:
    li = dataclasses.replace(TINY, lrc_loss="li", dropout=0.0)
    assert type(make_lrc_loss(li)) is OriginalLocalRelationLoss
    assert type(make_lrc_loss(TINY)) is LocalRelationLoss
    a, b = build_model(li), build_model(TINY)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    # the same hinge: a fake whose two blocks are opposite (distance 2) against a flat real meets the margin
    v = torch.randn(3, 2, 2)
    fake = torch.cat([torch.cat([v, v], 2), torch.cat([-v, -v], 2)], 1)
    real = torch.cat([torch.cat([v, v], 2), torch.cat([v, v], 2)], 1)
    crit = OriginalLocalRelationLoss(k=2, s=2, n=1)
    assert crit(torch.stack([fake, real]), torch.tensor([1, 0])).item() == pytest.approx(0.0, abs=1e-6)
    assert crit.stats["m_fake"].item() == pytest.approx(2.0, abs=1e-6)
    assert crit(torch.stack([fake, real]), torch.tensor([0, 1])).item() == pytest.approx(3.0, abs=1e-6)
    assert _trainable_without_grad(a, li) == []


def test_new_switches_round_trip_and_old_configs_still_load() -> None:
    cfg = HiLIFConfig.preset("tiny", dftm=False, self_attention=True, dct_learnable_filter=False, lrc_loss="li")
    assert HiLIFConfig.from_dict(cfg.to_dict()) == cfg
    old = {
        k: v
        for k, v in TINY.to_dict().items()
        if k not in ("self_attention", "self_attention_heads", "dct_learnable_filter", "lrc_loss")
    }
    assert HiLIFConfig.from_dict(old) == TINY
    with pytest.raises(ValueError, match="lrc_loss"):
        HiLIFConfig.preset("tiny", lrc_loss="chen")


# --------------------------------------------------------------------------- named presets (hilif-train --ablation)


def test_every_ablation_preset_builds_the_model_it_names() -> None:
    from hilif.train.ablations import ABLATIONS, ALIASES
    from hilif.train.config import TrainConfig
    from hilif.train.trainer import model_config

    x = torch.randn(2, 3, 64, 64)
    for name in [*ABLATIONS, *ALIASES]:
        cfg = TrainConfig(shards="unused", preset="tiny", ablation=name)
        ab = ABLATIONS[cfg.ablation]
        mcfg = model_config(cfg)
        model = build_model(mcfg).eval()
        assert (model.dftm is not None) == mcfg.dftm and (model.ddafm is not None) == mcfg.ddafm
        assert (model.self_attention is not None) == (name == "eff+sa")
        for key, value in ab.switches.items():
            assert getattr(mcfg, key) == value, (name, key)
        if ab.single_patch_div:  # Table VIII: one patch size, the cut-A side / div (16 / 2, 4, 8 at 64)
            assert {m.patch_sizes for m in model.modules() if isinstance(m, LocalEnhance)} == {
                (16 // ab.single_patch_div,) * 4
            }
        if ab.constraint_loss:
            assert cfg.stage == "both" and (mcfg.lrc_k, mcfg.lrc_s, mcfg.lrc_n) == (cfg.lrc_k, cfg.lrc_s, cfg.lrc_n)
            assert type(make_lrc_loss(mcfg)) is (OriginalLocalRelationLoss if name == "lrcl-li" else LocalRelationLoss)
        else:
            assert cfg.stage == "1"  # the row is the best stage-1 model
        with torch.no_grad():
            assert model(x).shape == (2, 2)
    assert TrainConfig(shards="unused", preset="tiny", ablation="ld-k5s2n8").ablation == "eff+dftm+ddafm+ld"


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(ablation="ld-k3s3n1", lrc_n=8), "--lrc-n 8 contradicts"),
        (dict(ablation="eff+dftm+ddafm+ld", lambda_d=0.0), "--lambda-d 0.0 contradicts"),
        (dict(ablation="eff", stage="2"), "--stage 2 contradicts"),
        (dict(ablation="eff+dftm", lrc_k=3), "without the constraint loss"),
        (dict(ablation="eff+dftm+ddafm+lrc"), "unknown --ablation"),
    ],
)
def test_options_that_contradict_a_preset_are_refused(options: dict, message: str) -> None:
    from hilif.train.config import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig(shards="unused", preset="tiny", **options)

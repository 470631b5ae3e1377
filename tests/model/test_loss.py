"""Local relationship constraint loss (eq. 22-27)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from hilif.model.loss import LocalRelationLoss, local_max_difference


def brute_force_m(f: torch.Tensor, k: int, s: int, n: int) -> torch.Tensor:
    """M of eq. 23-25 with explicit loops over blocks."""
    out = []
    side = f.shape[-1]
    starts = range(0, side - k + 1, s)
    for sample in f:
        blocks = [sample[:, y : y + k, x : x + k].flatten() for y, x in itertools.product(starts, starts)]
        dist = torch.tensor([[1 - F.cosine_similarity(a, b, dim=0).item() for b in blocks] for a in blocks])
        s_mean = dist.mean(dim=1)
        out.append(torch.sort(s_mean, descending=True).values[:n].mean())
    return torch.stack(out)


def test_m_matches_a_brute_force_computation() -> None:
    torch.manual_seed(0)
    f = torch.randn(3, 4, 14, 14)
    assert torch.allclose(local_max_difference(f, 5, 2, 8), brute_force_m(f, 5, 2, 8), atol=1e-5)
    assert torch.allclose(local_max_difference(f, 3, 3, 16), brute_force_m(f, 3, 3, 16), atol=1e-5)


def _two_pattern_maps() -> tuple[torch.Tensor, torch.Tensor]:
    """4x4 maps cut into four 2x2 blocks: 'fake' has blocks v, v, -v, -v (M = 1), 'real' four equal blocks (M = 0)."""
    v = torch.randn(3, 2, 2)
    fake = torch.cat([torch.cat([v, v], dim=2), torch.cat([-v, -v], dim=2)], dim=1)
    real = torch.cat([torch.cat([v, v], dim=2), torch.cat([v, v], dim=2)], dim=1)
    return fake, real


def test_loss_is_zero_when_the_margin_is_met_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    fake, real = _two_pattern_maps()
    f_all = torch.stack([fake, real, fake, real])
    crit = LocalRelationLoss(k=2, s=2, n=2)
    m = local_max_difference(f_all, 2, 2, 2)
    assert torch.allclose(m, torch.tensor([1.0, 0.0, 1.0, 0.0]), atol=1e-6)
    assert crit(f_all, torch.tensor([1, 0, 1, 0])).item() == pytest.approx(0.0, abs=1e-6)  # M_f - M_r = 1: met
    assert crit(f_all, torch.tensor([0, 1, 0, 1])).item() == pytest.approx(2.0, abs=1e-6)  # 1 - 0 + 1


def test_loss_is_zero_for_a_one_class_batch_but_stays_in_the_graph() -> None:
    f_all = torch.randn(4, 8, 14, 14, requires_grad=True)
    crit = LocalRelationLoss()
    for labels in (torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)):
        loss = crit(f_all, labels)
        assert loss.item() == 0.0
        assert loss.requires_grad
        loss.backward()


def test_loss_gradient_pushes_fakes_apart_and_reals_together() -> None:
    torch.manual_seed(0)
    f_all = torch.randn(4, 8, 14, 14, requires_grad=True)
    labels = torch.tensor([1, 0, 1, 0])
    crit = LocalRelationLoss()
    m0 = local_max_difference(f_all.detach())
    loss = crit(f_all, labels)
    assert loss.item() > 0
    loss.backward()
    with torch.no_grad():
        m1 = local_max_difference(f_all - 50.0 * f_all.grad)
    assert (m1[labels == 1] > m0[labels == 1]).all() and (m1[labels == 0] < m0[labels == 0]).all()


def test_n_larger_than_the_block_count_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="N=26 exceeds the 25 blocks"):
        LocalRelationLoss(k=5, s=2, n=26)(torch.randn(2, 4, 14, 14), torch.tensor([0, 1]))


def test_loss_exposes_the_class_means_of_m_it_used() -> None:
    torch.manual_seed(0)
    fake, real = _two_pattern_maps()
    crit = LocalRelationLoss(k=2, s=2, n=2)
    loss = crit(torch.stack([fake, real, real]), torch.tensor([1, 0, 0]))
    st = crit.stats
    assert st["m_fake"].item() == pytest.approx(1.0, abs=1e-6) and st["m_real"].item() == pytest.approx(0.0, abs=1e-6)
    assert bool(st["both"]) and not st["m_fake"].requires_grad
    assert loss.item() == pytest.approx(1.0 - (st["m_fake"] - st["m_real"]).item(), abs=1e-6)
    crit(torch.stack([real, real]), torch.tensor([0, 0]))
    assert not bool(crit.stats["both"])  # a one-class batch is marked, so the trainer leaves it out of the means

"""fp32 where the paper's maths needs it: L_d (eq. 23-27) and the block-DCT high-pass (eq. 1) under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from hilif.model.dct import BlockDCTHighPass
from hilif.model.loss import LocalRelationLoss, local_max_difference, max_pair_difference

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _near_parallel_maps(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """F_all whose blocks are almost parallel (small M: where bf16 cosines are coarsest), 4 real + 4 fake."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 16, 1, 1, generator=g).expand(8, 16, 14, 14)
    f = base + 0.05 * torch.randn(8, 16, 14, 14, generator=g)
    f[4:] += 0.1 * torch.randn(4, 16, 14, 14, generator=g)  # fakes a little less consistent
    return f, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize("m_of", [local_max_difference, max_pair_difference])
def test_block_inconsistency_is_fp32_under_bf16_autocast(m_of) -> None:
    f, _ = _near_parallel_maps()
    ref = m_of(f)
    with torch.autocast(**BF16):
        got = m_of(f)
        bf16_inputs = m_of(f.bfloat16())
        naive = m_of.__wrapped__(f)  # the same maths without the fp32 guard
    assert got.dtype == torch.float32 and bf16_inputs.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # the test can fail: the cosine matmul in bf16 is far off on near-parallel blocks
    assert ((naive.float() - ref).abs() / ref).max() > 1e-2


def test_local_relation_loss_under_bf16_autocast_equals_fp32_of_its_input() -> None:
    """The model hands L_d a bf16 F_all under autocast: the loss is the fp32 loss of that input, gradients too."""
    f, y = _near_parallel_maps(1)
    lrc = LocalRelationLoss()
    feat = f.bfloat16().requires_grad_()
    with torch.autocast(**BF16):
        got = lrc(feat, y)
    got.backward()
    feat32 = feat.detach().float().requires_grad_()
    want = lrc(feat32, y)  # no autocast: plain fp32
    want.backward()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(feat.grad.float(), feat32.grad.bfloat16().float(), rtol=0, atol=0)
    assert 0 < float(want.detach()) < 1.0  # a live loss (both classes, margin not met), not the one-class zero


@pytest.mark.parametrize("formulation", ["separable", "conv", "unfold"])
def test_block_dct_high_pass_is_fp32_under_bf16_autocast(formulation: str) -> None:
    torch.manual_seed(0)
    hp = BlockDCTHighPass(formulation=formulation, size=28)
    x = torch.randn(2, 3, 28, 28) * 4 + 10  # an offset, as activations have: the high band is a small remainder
    ref = hp(x)
    with torch.autocast(**BF16):
        got = hp(x)
        got_bf16 = hp(x.bfloat16())
    assert got.dtype == torch.float32 and got_bf16.dtype == torch.bfloat16  # returned in the input's dtype
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # from bf16 input: the fp32 result of the bf16 input, rounded once to bf16 at the end
    with torch.no_grad():
        want = hp(x.bfloat16().float()).bfloat16()
    torch.testing.assert_close(got_bf16, want, rtol=0, atol=0)
    # gradients reach the learnable mask f_w in fp32
    with torch.autocast(**BF16):
        hp(x).square().mean().backward()
    assert hp.f_w.grad is not None and hp.f_w.grad.dtype == torch.float32


def test_block_dct_high_pass_in_bf16_would_be_off() -> None:
    """What the fp32 guard prevents: the separable matmuls under bf16 autocast (today's code path) miss by ~1 %."""
    torch.manual_seed(0)
    hp = BlockDCTHighPass(size=28)
    x = torch.randn(2, 3, 28, 28) * 4 + 10
    ref = hp(x)
    with torch.autocast(**BF16):
        naive = hp._forward_separable(x, hp.mask())
    rel = (naive.float() - ref).norm() / ref.norm()
    assert rel > 1e-3, rel

"""Block-DCT high-pass of DFTM (eq. 1): the three formulations agree, the DCT is orthonormal, the filter is a
high-pass, and f_w learns."""

from __future__ import annotations

import pytest
import torch

from hilif.model.dct import BlockDCTHighPass, block_dct_filter_unfold, dct_matrix, high_pass_base, paper_sigma


def test_dct_matrix_is_orthonormal_dct_ii() -> None:
    d = dct_matrix(8)
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=d.dtype), atol=1e-12)
    # DCT-II of a constant row is all DC: only coefficient 0 is non-zero
    c = d @ torch.ones(8, dtype=d.dtype)
    assert c[0] == pytest.approx(8**0.5)
    assert torch.allclose(c[1:], torch.zeros(7, dtype=d.dtype), atol=1e-12)


def test_high_pass_base_zeroes_the_low_band() -> None:
    base = high_pass_base(8, 2)
    assert base[0, 0] == 0 and base[0, 1] == 0 and base[1, 0] == 0
    assert base[1, 1] == 1 and base[0, 2] == 1 and base.sum() == 64 - 3


def test_paper_sigma_is_the_papers_formula() -> None:
    x = torch.linspace(-5, 5, 11)
    assert torch.allclose(paper_sigma(x), (1 - torch.exp(-x)) / (1 + torch.exp(-x)), atol=1e-6)


@pytest.mark.parametrize("size", [(16, 16), (24, 20), (15, 17)])
@pytest.mark.parametrize("formulation", ["conv", "separable"])
def test_conv_formulations_equal_unfold(size: tuple[int, int], formulation: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size, requires_grad=True)
    ref_mod = BlockDCTHighPass(formulation="unfold")
    mod = BlockDCTHighPass(formulation=formulation, size=16)  # cached operators for 16, built on the fly otherwise
    with torch.no_grad():
        ref_mod.f_w.copy_(torch.randn(8, 8))  # a mask far from f_base, so every coefficient matters
        mod.f_w.copy_(ref_mod.f_w)
    ref = ref_mod(x)
    out = mod(x)
    assert out.shape == x.shape
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
    # and the gradients (w.r.t. the input and the learnable mask) agree as well
    g = torch.randn_like(ref)
    gx_ref, gw_ref = torch.autograd.grad((ref * g).sum(), [x, ref_mod.f_w])
    gx, gw = torch.autograd.grad((out * g).sum(), [x, mod.f_w])
    assert torch.allclose(gx, gx_ref, atol=1e-5)
    assert torch.allclose(gw, gw_ref, atol=1e-4 * gw_ref.abs().max().item())


def test_unfold_reference_with_all_pass_mask_is_identity() -> None:
    # with mask = 1 every window is reconstructed exactly, so the count-normalised overlap-add returns the input
    x = torch.randn(1, 2, 16, 18, dtype=torch.float64)
    out = block_dct_filter_unfold(x, torch.ones(8, 8, dtype=torch.float64))
    assert torch.allclose(out, x, atol=1e-10)


@pytest.mark.parametrize("formulation", ["unfold", "conv", "separable"])
def test_high_pass_removes_a_constant_map_and_keeps_fine_detail(formulation: str) -> None:
    mod = BlockDCTHighPass(formulation=formulation)
    with torch.no_grad():
        mod.f_w.zero_()  # mask = f_base: the low band (DC, (0,1), (1,0)) is removed exactly
    flat = torch.full((1, 2, 16, 16), 3.7)
    assert mod(flat).abs().max() < 1e-5
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1.0  # highest frequency
    out = mod(checker.expand(1, 2, 16, 16))
    assert torch.allclose(out, checker.expand(1, 2, 16, 16), atol=1e-4)  # passes unchanged


def test_separable_operators_fold_in_padding_windows_and_count() -> None:
    from hilif.model.dct import axis_operators

    r = axis_operators(12)
    # the 8 single-frequency operators add up to the identity (all-pass mask along one axis)
    assert torch.allclose(r.sum(dim=0), torch.eye(12, dtype=r.dtype), atol=1e-12)


def test_f_w_receives_gradient() -> None:
    mod = BlockDCTHighPass()
    mod(torch.randn(2, 4, 16, 16)).square().sum().backward()
    assert mod.f_w.grad is not None and mod.f_w.grad.abs().sum() > 0

"""Building blocks of HiLIF: SRM, LEM / token mix, FEM/FSFM, coarse SA, MixBlock, MSCA."""

from __future__ import annotations

import math

import torch

from hilif.model.ddafm import DDAFM, MixBlock, MultiScaleChannelAttention
from hilif.model.dftm import DFTM, CoarseSelfAttention, LocalEnhance, local_attention, token_mix_attention
from hilif.model.srm import SRMConv, srm_kernels


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V over all pixels of a [B, c, H, W] map, written out by hand."""
    b, c, h, w = q.shape
    qt, kt, vt = (t.flatten(2).transpose(1, 2) for t in (q, k, v))  # [B, HW, c]
    att = torch.softmax(qt @ kt.transpose(1, 2) / math.sqrt(c), dim=-1)
    return (att @ vt).transpose(1, 2).reshape(b, c, h, w)


def test_srm_kernels_are_the_three_of_fig5_normalised() -> None:
    k = srm_kernels()
    assert k.shape == (3, 5, 5)
    assert torch.allclose(k.sum(dim=(1, 2)), torch.zeros(3), atol=1e-6)  # high-pass: each kernel sums to zero
    assert [k[0, 2, 2].item(), k[1, 2, 2].item(), k[2, 2, 2].item()] == [-1.0, -1.0, -1.0]  # centre / q


def test_srm_of_a_flat_image_is_zero_and_truncated_otherwise() -> None:
    srm = SRMConv(truncation=3.0)
    flat = torch.ones(2, 3, 32, 32) * torch.tensor([0.2, -1.0, 1.5])[None, :, None, None]
    assert srm(flat).abs().max() < 1e-6  # borders included (reflect padding)
    noisy = torch.randn(2, 3, 32, 32) * 10
    out = srm(noisy)
    assert out.shape == (2, 3, 32, 32)
    assert out.abs().max() <= 3.0 and out.abs().max() == 3.0  # truncated at T


def test_local_attention_with_one_patch_covering_the_map_is_plain_attention() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 6, 8, 8) for _ in range(3))
    assert torch.allclose(local_attention(q, k, v, 8), plain_attention(q, k, v), atol=1e-5)


def test_local_attention_does_not_mix_patches() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 8, 8) for _ in range(3))
    out = local_attention(q, k, v, 4)
    v2 = v.clone()
    v2[..., 4:, 4:] += 10.0  # change only the bottom-right patch
    out2 = local_attention(q, k, v2, 4)
    assert torch.equal(out[..., :4, :], out2[..., :4, :]) and torch.equal(out[..., 4:, :4], out2[..., 4:, :4])
    assert not torch.allclose(out[..., 4:, 4:], out2[..., 4:, 4:])
    # and each patch on its own is plain attention
    sl = (..., slice(4, 8), slice(0, 4))
    assert torch.allclose(out[sl], plain_attention(q[sl], k[sl], v[sl]), atol=1e-5)


def test_token_mix_attends_between_patches() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 8) for _ in range(3))
    # a single patch is a single token: attention over one token returns V unchanged
    assert torch.allclose(token_mix_attention(q, k, v, 8), v, atol=1e-6)
    # patch size 1: every pixel a token of dim c -> plain attention over the pixels
    assert torch.allclose(token_mix_attention(q, k, v, 1), plain_attention(q, k, v), atol=1e-5)


def test_local_enhance_gives_each_channel_group_its_patch_size() -> None:
    torch.manual_seed(0)
    lem = LocalEnhance(8, (8, 4, 2, 1))
    q, k, v = (torch.randn(2, 8, 8, 8) for _ in range(3))
    out = lem(q, k, v)
    for i, p in enumerate((8, 4, 2, 1)):
        sl = slice(2 * i, 2 * i + 2)
        assert torch.allclose(out[:, sl], local_attention(q[:, sl], k[:, sl], v[:, sl], p), atol=1e-6)
    assert torch.allclose(out[:, 6:], v[:, 6:], atol=1e-6)  # patch size 1 = attention with itself


def test_fem_and_fsfm_take_qkv_from_the_sources_of_eq_7_and_9() -> None:
    torch.manual_seed(0)
    dftm = DFTM(8, (4, 4, 2, 2)).eval()
    f, f_h = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8)
    fem, fsfm = dftm.fem, dftm.fsfm
    # FEM: changing F only moves V; FSFM: changing F_H only moves Q.
    for module, q_src, k_src, v_src in ((fem, "h", "h", "f"), (fsfm, "h", "f", "f")):
        seen = {}
        for name in ("q", "k", "v"):
            getattr(module, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0]))
        module(f, f_h)
        for name, src in zip(("q", "k", "v"), (q_src, k_src, v_src)):
            assert seen[name] is (f_h if src == "h" else f), (type(module).__name__, name)


def test_dftm_is_residual_and_coarse_sa_reduces_by_7() -> None:
    torch.manual_seed(0)
    dftm = DFTM(8, (14, 7, 7, 2))
    f = torch.randn(2, 8, 28, 28)
    out = dftm(f)
    assert out.shape == f.shape
    sa = CoarseSelfAttention(8, reduction=7, heads=2)
    assert sa.down(f).shape[-2:] == (4, 4)
    with torch.no_grad():  # zero output projection -> DFTM returns its input (eq. 12 residual)
        dftm.coarse_sa.proj.weight.zero_()
        dftm.coarse_sa.proj.bias.zero_()
    assert torch.allclose(dftm(f), f)


def test_mixblock_is_identity_at_init_and_its_gates_get_gradient() -> None:
    torch.manual_seed(0)
    mix = MixBlock(6)
    r, n = torch.randn(4, 6, 5, 5), torch.randn(4, 6, 5, 5)
    for mode in (mix.train, mix.eval):
        mode()
        yr, yn = mix(r, n)
        assert torch.allclose(yr, r, atol=1e-6) and torch.allclose(yn, n, atol=1e-6)
    mix.train()
    yr, yn = mix(r, n)
    (yr * torch.randn_like(yr)).sum().add((yn * torch.randn_like(yn)).sum()).backward()
    assert mix.rgb_gamma.grad.abs() > 0 and mix.noise_gamma.grad.abs() > 0


def test_mixblock_mixes_the_streams_once_the_gate_opens() -> None:
    torch.manual_seed(0)
    mix = MixBlock(4).eval()
    with torch.no_grad():
        mix.rgb_gamma.fill_(2.0)
        mix.noise_gamma.fill_(2.0)
    r, n = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    yr, _ = mix(r, n)
    yr2, _ = mix(r, n * 2)
    assert not torch.allclose(yr, yr2)  # the RGB output now depends on the noise stream


def test_msca_weights_are_per_channel_in_0_1_and_residual() -> None:
    torch.manual_seed(0)
    msca = MultiScaleChannelAttention()
    r, n = torch.randn(2, 5, 7, 7), torch.randn(2, 5, 7, 7)
    yr, yn = msca(r, n)
    ratio_r, ratio_n = yr / r, yn / n  # = 1 + w, w in (0, 1), constant over space
    for ratio in (ratio_r, ratio_n):
        assert (ratio > 1).all() and (ratio < 2).all()
        assert torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), atol=1e-4)


def test_ddafm_without_msca_is_only_the_mixblock() -> None:
    assert DDAFM(4, msca=False).msca is None
    assert isinstance(DDAFM(4).msca, MultiScaleChannelAttention)


def test_msca_integral_image_box_means_equal_the_average_pools() -> None:
    """The CPU path (integral image) and the GPU path (avg_pool2d) of MSCA give the same means and gradients."""
    x = torch.randn(2, 3, 14, 12, requires_grad=True)
    box = MultiScaleChannelAttention._box_means(x, (3, 5, 7))
    pools = MultiScaleChannelAttention._average_pools(x, (3, 5, 7))
    w = [torch.randn_like(m) for m in box]
    for m, p in zip(box, pools):
        assert torch.allclose(m, p, atol=1e-5)
    (g_box,) = torch.autograd.grad(sum((m * v).sum() for m, v in zip(box, w)), x)
    (g_pool,) = torch.autograd.grad(sum((p * v).sum() for p, v in zip(pools, w)), x)
    assert torch.allclose(g_box, g_pool, atol=1e-5)


def test_mixblock_depthwise_scale_equals_the_grouped_conv() -> None:
    mix = MixBlock(5)
    torch.nn.init.normal_(mix.rgb_conv.weight)
    x = torch.randn(2, 5, 4, 4)
    assert torch.allclose(MixBlock._depthwise(mix.rgb_conv, x), mix.rgb_conv(x), atol=1e-6)


def test_fusion_head_cpu_matmul_path_equals_the_convs() -> None:
    """FusionHead's CPU fast path (batched matmuls) is the same function as its 1x1 convs (the channels_last path),
    in values and in every gradient, and hands the streams contiguous NCHW gradients."""
    from hilif.model.hilif import FusionHead

    torch.manual_seed(0)
    head = FusionHead(6, 5).eval()  # eval: dropout off, BN on running stats, so both paths see the same function
    r, n = torch.randn(3, 6, 4, 4, requires_grad=True), torch.randn(3, 6, 4, 4, requires_grad=True)
    fast = head(r, n)
    grads_fast = torch.autograd.grad(fast.square().sum(), [r, n, *head.parameters()])
    r_cl, n_cl = (t.detach().contiguous(memory_format=torch.channels_last).requires_grad_() for t in (r, n))
    slow = head(r_cl, n_cl)  # not contiguous NCHW: the conv path
    grads_slow = torch.autograd.grad(slow.square().sum(), [r_cl, n_cl, *head.parameters()])
    assert torch.allclose(fast, slow, atol=1e-5)
    for a, b in zip(grads_fast, grads_slow):
        assert torch.allclose(a, b, atol=1e-5)
    assert grads_fast[0].is_contiguous() and grads_fast[1].is_contiguous()

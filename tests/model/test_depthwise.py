"""The small-map depthwise path computes the same convolution (forward and every gradient) as PyTorch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hilif.model import HiLIFConfig, build_model
from hilif.model.depthwise import SmallMapDepthwiseConv2d, depthwise_as_matmul, use_small_map_depthwise


@pytest.mark.parametrize(
    "n, c, h, w, k, pad, bias, channels_last",
    [
        (3, 7, 3, 3, 5, 2, False, True),  # EfficientNet's 5x5 on the demo's 3x3 maps
        (2, 5, 2, 3, 5, 2, True, False),  # non-square, bias
        (2, 4, 2, 2, 3, 1, False, True),
        (2, 3, 4, 3, 5, 1, True, False),  # padding smaller than "same": the output shrinks
        (1, 2, 6, 5, 3, 1, False, False),  # a map larger than the kernel works too
    ],
)
def test_matches_conv2d_forward_and_backward(n, c, h, w, k, pad, bias, channels_last) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    wt = torch.randn(c, 1, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    ref = F.conv2d(x, wt, b, 1, pad, 1, c)
    out = depthwise_as_matmul(x, wt, b, (pad, pad))
    assert out.shape == ref.shape
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(out, ref)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    wrt = [t for t in (x, wt, b) if t is not None]
    for a, e in zip(torch.autograd.grad(out, wrt, grad), torch.autograd.grad(ref, wrt, grad)):
        torch.testing.assert_close(a, e)


def test_conversion_keeps_parameters_and_skips_other_convs() -> None:
    net = nn.Sequential(
        nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False),  # depthwise, stride 1: converted
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # strided: kept
        nn.Conv2d(8, 16, 1),  # pointwise: kept
        nn.Conv2d(16, 16, 3, padding=1, groups=4),  # grouped, not depthwise: kept
    )
    weights = [m.weight for m in net]
    keys = list(net.state_dict())
    assert use_small_map_depthwise(net) == 1
    assert type(net[0]) is SmallMapDepthwiseConv2d and all(type(m) is nn.Conv2d for m in net[1:])
    assert [m.weight for m in net] == weights  # the same Parameter objects (loaded weights, optimizer state)
    assert list(net.state_dict()) == keys
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(net[0](x), F.conv2d(x, net[0].weight, None, 1, 2, 1, 8))


def test_hilif_same_function_with_and_without() -> None:
    """The demo model (its last stages run 5x5 depthwise convs on 3x3 maps) gives the same logits and gradients
    with the matrix path as with PyTorch's convs (same weights)."""
    torch.manual_seed(0)
    on = build_model(HiLIFConfig.preset("demo", pretrained=False)).double().train()
    off = build_model(HiLIFConfig.preset("demo", pretrained=False, small_map_depthwise=False)).double().train()
    off.load_state_dict(on.state_dict())
    assert any(isinstance(m, SmallMapDepthwiseConv2d) for m in on.modules())
    assert not any(isinstance(m, SmallMapDepthwiseConv2d) for m in off.modules())
    x = torch.randn(2, 3, 96, 96, dtype=torch.float64)
    torch.manual_seed(1)
    lo = on(x)
    torch.manual_seed(1)  # the same dropout mask
    lf = off(x)
    torch.testing.assert_close(lo, lf)
    lo.sum().backward()
    lf.sum().backward()
    po, pf = dict(on.named_parameters()), dict(off.named_parameters())
    for name in ("rgb.net.blocks.5.0.conv_dw.weight", "noise.net.blocks.6.0.conv_dw.weight"):
        torch.testing.assert_close(po[name].grad, pf[name].grad)

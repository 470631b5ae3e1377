"""Depthwise convolutions on maps smaller than their kernel, as one small matrix product per channel.

EfficientNet's last stages run 5 x 5 depthwise convolutions; at the demo's 96-px input their maps are 3 x 3 (the
kernel is wider than the map). oneDNN, PyTorch's CPU convolution, computes the backward of exactly these convs
tens of times slower than their forward, and they were a tenth of a b0 HiLIF training step (bench/bench_model.py's
"CPU paths" section times the step with and without this path). On such a map the convolution is a linear map from
the H*W inputs to the Ho*Wo outputs of each channel, a matrix built from the kernel's weights (each weight lands
where its offset joins an output to an input, zero where it falls on the padding), so forward and backward are
a batched matrix product. Same result up to float rounding (the sums run in another order); other convs, and
every conv off the CPU, keep PyTorch's kernels.
"""

from __future__ import annotations

import torch
from torch import nn


def _kernel_index(
    h: int, w: int, kernel: tuple[int, int], padding: tuple[int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """For a stride-1 conv on an h x w map: ``index[p, q]``, the flat kernel position that joins output p to input
    q, and ``valid[p, q]``, whether that offset lies inside the kernel."""
    (kh, kw), (ph, pw) = kernel, padding
    ho, wo = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    ar = lambda n: torch.arange(n, device=device)  # noqa: E731
    ky = ar(h)[None, None, :, None] - ar(ho)[:, None, None, None] + ph  # (ho, 1, h, 1)
    kx = ar(w)[None, None, None, :] - ar(wo)[None, :, None, None] + pw  # (1, wo, 1, w)
    valid = (ky >= 0) & (ky < kh) & (kx >= 0) & (kx < kw)
    index = ky.clamp(0, kh - 1) * kw + kx.clamp(0, kw - 1)
    return index.expand(ho, wo, h, w).reshape(ho * wo, h * w), valid.reshape(ho * wo, h * w)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient (the one arriving from a channels_last map is a
    strided view, for which the CPU bmm backward loops batch by batch)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def depthwise_as_matmul(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, 1, padding, 1, groups=C)`` for a depthwise ``weight`` (C, 1, kh, kw), computed
    as a per-channel matrix product. Meant for small maps (the matrix is (H*W)^2 per channel)."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    ho, wo = h + 2 * padding[0] - kh + 1, w + 2 * padding[1] - kw + 1
    index, valid = _kernel_index(h, w, (kh, kw), padding, x.device)
    mats = weight.reshape(c, kh * kw)[:, index] * valid.to(weight.dtype)  # (C, Ho*Wo, H*W)
    # bmm over channels; its CPU kernel loops batch by batch unless each operand is contiguous
    xc = x.reshape(n, c, h * w).transpose(0, 1).contiguous()  # (C, N, H*W)
    out = _ContiguousGrad.apply(torch.bmm(xc, mats.transpose(1, 2).contiguous()))  # (C, N, Ho*Wo)
    out = out.transpose(0, 1).reshape(n, c, ho, wo)
    if bias is not None:
        out = out + bias.view(1, c, 1, 1)
    if x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


class SmallMapDepthwiseConv2d(nn.Conv2d):
    """A stride-1 depthwise ``nn.Conv2d`` that runs `depthwise_as_matmul` on CPU maps narrower or lower than its
    kernel (where oneDNN's backward is slow; on larger maps it is the faster of the two), PyTorch's convolution
    otherwise. Same parameters, same names, so checkpoints load unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        kh, kw = self.kernel_size
        if x.device.type == "cpu" and (kh > h or kw > w):
            return depthwise_as_matmul(x, self.weight, self.bias, self.padding)  # type: ignore[arg-type]
        return super().forward(x)


def _eligible(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.groups > 1
        and m.groups == m.in_channels == m.out_channels
        and m.stride == (1, 1)
        and m.dilation == (1, 1)
        and isinstance(m.padding, tuple)
        and m.padding_mode == "zeros"
        and max(m.kernel_size) > 1
    )


def use_small_map_depthwise(net: nn.Module) -> int:
    """Turn every stride-1 depthwise ``nn.Conv2d`` of ``net`` into a `SmallMapDepthwiseConv2d`, in place, keeping
    its parameter objects (and so its state-dict keys and any loaded weights). Returns how many were turned."""
    turned = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if _eligible(child):
                new = SmallMapDepthwiseConv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,  # type: ignore[arg-type]
                    padding=child.padding,  # type: ignore[arg-type]
                    groups=child.groups,
                    bias=child.bias is not None,
                    device="meta",
                )
                new.weight = child.weight
                if child.bias is not None:
                    new.bias = child.bias
                new.train(child.training)
                setattr(parent, name, new)
                turned += 1
    return turned


__all__ = ["SmallMapDepthwiseConv2d", "depthwise_as_matmul", "use_small_map_depthwise"]

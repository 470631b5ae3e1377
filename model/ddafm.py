"""Dual Domain Attention Fusion Module (DDAFM, paper section IV-D, Fig. 6): F3Net MixBlock + multi-scale channel
attention (eq. 15-21)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MixBlock(nn.Module):
    """F3Net's MixBlock: cross-stream spatial attention between the RGB and noise features.

    Per stream 1x1-conv queries and keys; an attention map over spatial positions shared by both streams; each stream
    receives the other's features weighted by that map through a depthwise 1x1 conv + BN, scaled by the gate
    2*sigmoid(gamma) - 1 (gamma = 0 at init, so the block starts as the identity), plus a residual.
    As in F3Net the attention map is H x H per channel and multiplies the W axis, so the map must be square.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.rgb_query = nn.Conv2d(channels, channels, 1)
        self.noise_query = nn.Conv2d(channels, channels, 1)
        self.rgb_key = nn.Conv2d(channels, channels, 1)
        self.noise_key = nn.Conv2d(channels, channels, 1)
        self.rgb_gamma = nn.Parameter(torch.zeros(1))
        self.noise_gamma = nn.Parameter(torch.zeros(1))
        self.rgb_conv = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)  # bias is redundant before BN
        self.rgb_bn = nn.BatchNorm2d(channels)
        self.noise_conv = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)
        self.noise_bn = nn.BatchNorm2d(channels)

    def forward(self, x_rgb: torch.Tensor, x_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x_rgb.shape
        if h != w:
            raise ValueError(f"MixBlock needs a square feature map, got {h}x{w}")
        q = torch.cat(
            [self.rgb_query(x_rgb).reshape(b * c, h, w), self.noise_query(x_noise).reshape(b * c, h, w)], dim=2
        )  # [BC, H, 2W]
        k = torch.cat(
            [
                self.rgb_key(x_rgb).reshape(b * c, h, w).transpose(1, 2),
                self.noise_key(x_noise).reshape(b * c, h, w).transpose(1, 2),
            ],
            dim=1,
        )  # [BC, 2W, H]
        attention = torch.softmax(torch.bmm(q, k), dim=-1).reshape(b, c, h, h)
        att_noise = x_noise * attention * (2.0 * torch.sigmoid(self.noise_gamma) - 1.0)
        y_rgb = x_rgb + self.rgb_bn(self._depthwise(self.rgb_conv, att_noise))
        att_rgb = x_rgb * attention * (2.0 * torch.sigmoid(self.rgb_gamma) - 1.0)
        y_noise = x_noise + self.noise_bn(self._depthwise(self.noise_conv, att_rgb))
        return y_rgb, y_noise

    @staticmethod
    def _depthwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        # A 1x1 depthwise conv is a per-channel scale; PyTorch's CPU conv runs it as one tiny conv per channel
        # (hundreds of calls), so apply the conv's own weight as a multiplication instead (same parameters).
        return x * conv.weight.reshape(1, -1, 1, 1)


class MultiScaleChannelAttention(nn.Module):
    """MSCA (eq. 15-21): F_a = concat(F_rgb, F_noise); C_i = GMP(AvgPool_ixi(F_a)) for i = 3, 5, 7; an MLP across
    the 3 scales gives one value per channel; sigmoid; split; F = F * w + F for each stream.
    The average pools are stride 1 with 'same' padding (not counting the padding); the MLP is 3 -> hidden -> 1,
    shared by all channels (eq. 17-18 apply it on the scale axis)."""

    def __init__(self, scales: tuple[int, ...] = (3, 5, 7), hidden: int = 8) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.mlp = nn.Sequential(nn.Linear(len(self.scales), hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    @staticmethod
    def _box_means(x: torch.Tensor, sizes: tuple[int, ...]) -> list[torch.Tensor]:
        """For each i in ``sizes``: the i x i stride-1 average pool with 'same' padding, not counting the padding
        (= F.avg_pool2d(x, i, 1, i // 2, count_include_pad=False)), all from one integral image with slices only;
        PyTorch's CPU avg_pool2d was the slowest op of DDAFM."""
        h, w = x.shape[-2:]
        integral = F.pad(x.cumsum(2).cumsum(3), (1, 0, 1, 0))  # integral[.., y, x] = sum of x[.., :y, :x]
        ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        means = []
        for i in sizes:
            r = i // 2
            # the box's last and first integral rows / columns, clamped to the map (what a replicate pad of the
            # integral would give, without the pad: torch.compile's CPU backward of replication_pad2d mis-strides
            # channels_last maps)
            y1, y0 = (ys + r + 1).clamp(max=h), (ys - r).clamp(min=0)
            x1, x0 = (xs + r + 1).clamp(max=w), (xs - r).clamp(min=0)
            rows = integral.index_select(2, y1) - integral.index_select(2, y0)
            box = rows.index_select(3, x1) - rows.index_select(3, x0)
            count = (y1 - y0)[:, None] * (x1 - x0)[None, :]
            means.append(box / count.to(box.dtype))
        return means

    @staticmethod
    def _average_pools(x: torch.Tensor, sizes: tuple[int, ...]) -> list[torch.Tensor]:
        """The same means as `_box_means` from PyTorch's pooling kernels: the faster path on GPUs, where the
        integral image's short cumulative sums are slow scan kernels."""
        return [F.avg_pool2d(x, i, stride=1, padding=i // 2, count_include_pad=False) for i in sizes]

    def forward(self, x_rgb: torch.Tensor, x_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        means = self._box_means if x_rgb.device.type == "cpu" else self._average_pools
        # F_a = concat(F_rgb, F_noise); the pooling is per channel, so each half is pooled without building F_a
        per_stream = [
            torch.stack([m.amax(dim=(2, 3)) for m in means(x, self.scales)], dim=-1) for x in (x_rgb, x_noise)
        ]
        c = torch.cat(per_stream, dim=1)  # [B, 2C, 3]: GMP(AvgPool_ixi(F_a)) for i = 3, 5, 7
        weights = torch.sigmoid(self.mlp(c).squeeze(-1))  # [B, 2C]
        # contiguous halves: a [B, C, 1, 1] channel slice of [B, 2C, 1, 1] has channels-last-like strides, and the
        # product would then come out channels_last and drag the rest of both backbones into that layout (whose
        # depthwise-conv backward is several times slower on CPU).
        w_rgb, w_noise = (w.contiguous()[:, :, None, None] for w in weights.chunk(2, dim=1))
        return x_rgb * w_rgb + x_rgb, x_noise * w_noise + x_noise


class DDAFM(nn.Module):
    """MixBlock followed (unless ``msca=False``, Table IX) by the multi-scale channel attention."""

    def __init__(self, channels: int, msca: bool = True, msca_hidden: int = 8) -> None:
        super().__init__()
        self.mix = MixBlock(channels)
        self.msca = MultiScaleChannelAttention(hidden=msca_hidden) if msca else None

    def forward(self, x_rgb: torch.Tensor, x_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_rgb, x_noise = self.mix(x_rgb, x_noise)
        if self.msca is not None:
            x_rgb, x_noise = self.msca(x_rgb, x_noise)
        return x_rgb, x_noise

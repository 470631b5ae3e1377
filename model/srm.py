"""Noise stream input (paper section IV-C, eq. 13-14, Fig. 5): three fixed SRM high-pass kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def srm_kernels() -> torch.Tensor:
    """The three 5x5 SRM kernels of Fig. 5, each normalised by its centre weight: [3, 5, 5]."""
    kb = (
        torch.tensor(
            [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]],
            dtype=torch.float32,
        )
        / 4.0
    )
    kv = (
        torch.tensor(
            [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
            dtype=torch.float32,
        )
        / 12.0
    )
    h2 = (
        torch.tensor(
            [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float32
        )
        / 2.0
    )
    return torch.stack([kb, kv, h2])


class SRMConv(nn.Module):
    """SRM residuals: each kernel applied to R, G and B and summed (3 output channels), truncated to [-T, T].

    Deviations, on purpose: the image is reflect-padded (zero padding would turn every image border into a strong
    fake residual), and eq. 14's quantise-and-round step is left out (the input is an ImageNet-normalised float
    image, and rounding would kill the signal and the gradient); truncation T = 3 is kept.
    """

    def __init__(self, truncation: float = 3.0) -> None:
        super().__init__()
        self.truncation = truncation
        weight = srm_kernels()[:, None].expand(3, 3, 5, 5).clone()  # out k <- sum over R, G, B of kernel k
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.weight.to(x.dtype))
        return F.hardtanh(r, -self.truncation, self.truncation)

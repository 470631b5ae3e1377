"""A plain transformer self-attention block on a feature map: the "EfficientNet + Self-Attention" row of Table VII.

The paper's point (section II-D and Table VII) is that ordinary token-mixing self-attention enhances content and
dilutes the subtle artifacts, so a plain block at cut A scores below the bare backbone. This module is that block:
every pixel of the cut-A map is one token (56x56 = 3136 tokens of 32 channels at 224 with b4), global multi-head
self-attention and an MLP, pre-norm, residual connections (``torch.nn.TransformerEncoderLayer``). No positional
encoding is added: the convolutional features carry position through their padding, as DFTM's attention does.
"""

from __future__ import annotations

import torch
from torch import nn

from .dftm import memory_format_of


class PixelSelfAttention(nn.Module):
    """[B, C, H, W] -> [B, C, H, W]: one pre-norm transformer encoder block over the H*W pixel tokens."""

    def __init__(self, channels: int, heads: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(
                f"PixelSelfAttention: {channels} channels are not divisible by {heads} heads; "
                f"choose self_attention_heads that divides {channels}"
            )
        self.block = nn.TransformerEncoderLayer(
            channels,
            heads,
            dim_feedforward=int(channels * mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.block(x.flatten(2).transpose(1, 2))  # [B, HW, C]
        # back to the input's layout (see LocalEnhance: a layout change would slow the rest of the backbone on CPU)
        return t.transpose(1, 2).reshape(b, c, h, w).contiguous(memory_format=memory_format_of(x))

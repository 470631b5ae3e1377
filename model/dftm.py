"""Double-Frequency Transformer Module (DFTM, paper section IV-B, Fig. 3): LEM, FEM, FSFM, fuse, coarse SA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dct import BlockDCTHighPass


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """channels_last when ``t`` is stored so (and not also plain contiguous), else contiguous_format."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _to_patches(t: torch.Tensor, p: int) -> torch.Tensor:
    """[B, c, H, W] -> [B, (H/p)*(W/p), p*p, c]: the pixels of each non-overlapping p x p patch as tokens."""
    b, c, h, w = t.shape
    t = t.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return t.reshape(b, (h // p) * (w // p), p * p, c)


def _from_patches(t: torch.Tensor, c: int, h: int, w: int, p: int) -> torch.Tensor:
    """Inverse of `_to_patches`."""
    b = t.shape[0]
    t = t.reshape(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return t.reshape(b, c, h, w)


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, patch: int) -> torch.Tensor:
    """Eq. 3-5: softmax(Q K^T / sqrt(d_k)) V among the p*p pixels of each patch, no mixing between patches."""
    c, h, w = q.shape[1:]
    o = F.scaled_dot_product_attention(_to_patches(q, patch), _to_patches(k, patch), _to_patches(v, patch))
    return _from_patches(o, c, h, w, patch)


def token_mix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, patch: int) -> torch.Tensor:
    """M2TR-style token mix (ablation of Table VIII): each p x p patch is one token of dim p*p*c; attention between
    the patches."""
    b, c, h, w = q.shape

    def tokens(t: torch.Tensor) -> torch.Tensor:
        return _to_patches(t, patch).reshape(b, -1, patch * patch * c)

    o = F.scaled_dot_product_attention(tokens(q), tokens(k), tokens(v))
    return _from_patches(o.reshape(b, -1, patch * patch, c), c, h, w, patch)


class LocalEnhance(nn.Module):
    """Local Enhance Module (LEM, eq. 2-5, Fig. 4) over already-projected Q, K, V.

    The channels are split into ``len(patch_sizes)`` groups (the heads); group i attends inside patches of size
    ``patch_sizes[i]`` (28, 14, 7, 4 at 224). ``mode="token_mix"`` attends between patches instead (M2TR).
    """

    def __init__(self, channels: int, patch_sizes: tuple[int, ...], mode: str = "local") -> None:
        super().__init__()
        if channels % len(patch_sizes):
            raise ValueError(f"LocalEnhance: {channels} channels cannot be split into {len(patch_sizes)} groups")
        if mode not in ("local", "token_mix"):
            raise ValueError(f"LocalEnhance: unknown mode {mode!r}")
        self.patch_sizes = tuple(patch_sizes)
        self.mode = mode
        self.group = channels // len(patch_sizes)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h, w = q.shape[-2:]
        attend = local_attention if self.mode == "local" else token_mix_attention
        outs = []
        for i, p in enumerate(self.patch_sizes):
            if h % p or w % p:
                raise ValueError(f"LocalEnhance: patch size {p} does not divide the {h}x{w} feature map")
            sl = slice(i * self.group, (i + 1) * self.group)
            outs.append(attend(q[:, sl], k[:, sl], v[:, sl], p))
        # keep the input's memory layout: reshapes of attention outputs can come back as channels_last-like views,
        # and a layout change here would propagate through the rest of the backbone (slow depthwise backward on CPU)
        return torch.cat(outs, dim=1).contiguous(memory_format=memory_format_of(v))

    def extra_repr(self) -> str:
        return f"patch_sizes={self.patch_sizes}, mode={self.mode!r}"


class _FrequencyGuidedLEM(nn.Module):
    """Shared body of FEM and FSFM: 1x1-conv Q/K/V projections feeding LEM; Q always from F_H, V always from F.

    The two modules differ only in where K comes from (``key_from_frequency``)."""

    key_from_frequency: bool

    def __init__(self, channels: int, patch_sizes: tuple[int, ...], mode: str = "local") -> None:
        super().__init__()
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.lem = LocalEnhance(channels, patch_sizes, mode)

    def forward(self, f: torch.Tensor, f_h: torch.Tensor) -> torch.Tensor:
        return self.lem(self.q(f_h), self.k(f_h if self.key_from_frequency else f), self.v(f))


class FrequencyEnhance(_FrequencyGuidedLEM):
    """FEM (eq. 6-7): Q, K = 1x1 conv of F_H; V = 1x1 conv of F; then LEM. Output F_FE."""

    key_from_frequency = True


class FrequencySpatialFusion(_FrequencyGuidedLEM):
    """FSFM (eq. 8-9): Q = 1x1 conv of F_H; K, V = 1x1 conv of F; then LEM. Output F_FS."""

    key_from_frequency = False


class CoarseSelfAttention(nn.Module):
    """Coarse-grained SA of eq. 12: queries at full resolution, keys/values from a 7x7 stride-7 conv + BN (8x8 tokens
    at 224), multi-head attention and an output projection. The residual with F is added by `DFTM`.
    (The reference code adds a small conv feed-forward after it; the paper does not, and neither do we.)"""

    def __init__(self, channels: int, reduction: int = 7, heads: int = 1) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"CoarseSelfAttention: {channels} channels not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Conv2d(channels, channels, 1)
        self.down = nn.Sequential(
            nn.Conv2d(channels, channels, reduction, stride=reduction, bias=False), nn.BatchNorm2d(channels)
        )
        self.kv = nn.Conv2d(channels, 2 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        q = self.q(x).reshape(b, self.heads, d, h * w).transpose(-1, -2)  # [B, heads, HW, d]
        k, v = self.kv(self.down(x)).reshape(b, 2, self.heads, d, -1).transpose(-1, -2).unbind(1)
        o = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, d]
        o = o.transpose(-1, -2).reshape(b, c, h, w).contiguous(memory_format=memory_format_of(x))  # see LocalEnhance
        return self.proj(o)


class DFTM(nn.Module):
    """Double-Frequency Transformer Module on the RGB stream after cut A.

    F_H = BlockDCTHighPass(F); F_FE = FEM(F, F_H); F_FS = FSFM(F, F_H);
    F_DF = BN(Conv3x3(ReLU(BN(Conv1x1(concat(F_FE, F_FS)))))) (eq. 10-11); F_out = SA(F_DF) + F (eq. 12).
    ``attention`` selects FEM + FSFM ("both") or one branch (Table VII ablation); ``dct_learnable=False`` drops the
    learnable filter f_w of eq. 1 (F_H then uses the fixed f_base mask).
    """

    def __init__(
        self,
        channels: int,
        patch_sizes: tuple[int, ...],
        attention: str = "both",
        lem_mode: str = "local",
        dct_window: int = 8,
        dct_stride: int = 2,
        dct_low_cut: int = 2,
        dct_formulation: str = "separable",
        sa_reduction: int = 7,
        sa_heads: int = 1,
        feature_size: int | None = None,
        dct_learnable: bool = True,
    ) -> None:
        super().__init__()
        if attention not in ("both", "fem", "fsfm"):
            raise ValueError(f"DFTM: unknown attention {attention!r}")
        self.highpass = BlockDCTHighPass(
            dct_window, dct_stride, dct_low_cut, dct_formulation, learnable=dct_learnable, size=feature_size
        )
        self.fem = FrequencyEnhance(channels, patch_sizes, lem_mode) if attention in ("both", "fem") else None
        self.fsfm = FrequencySpatialFusion(channels, patch_sizes, lem_mode) if attention in ("both", "fsfm") else None
        branches = 2 if attention == "both" else 1
        self.fuse = nn.Sequential(
            nn.Conv2d(branches * channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.coarse_sa = CoarseSelfAttention(channels, sa_reduction, sa_heads)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        f_h = self.highpass(f)
        parts = []
        if self.fem is not None:
            parts.append(self.fem(f, f_h))
        if self.fsfm is not None:
            parts.append(self.fsfm(f, f_h))
        f_df = self.fuse(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
        return self.coarse_sa(f_df) + f

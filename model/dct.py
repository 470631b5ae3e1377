"""Block-DCT high-pass filter of DFTM (eq. 1): F_H = D^-1[D(F) * (f_base + sigma(f_w))] on sliding 8x8 windows.

Windows are 8x8, stride 2, on each channel; every window goes through an orthonormal 2-D DCT-II, is multiplied by
the mask ``f_base + sigma(f_w)`` and transformed back; the windows are put back by overlap-add divided by the number
of windows covering each pixel.

Borders (our choice, written down here): the map is reflect-padded by ``window - stride`` (6) on each side before
the windows are taken, so that every pixel of the map lies in exactly (window/stride)^2 = 16 windows and borders
are filtered like the interior (the unpadded version covers corner pixels by a single window). Reflect, not zero,
padding keeps a constant map constant, so the high-pass of a constant map is exactly zero.

The operation is linear in F for a given mask, so it has three equal formulations:

* ``unfold``    - the direct one: unfold -> DCT -> mask -> inverse DCT -> fold -> divide by the window count
                  (the reference formulation, used to check the others).
* ``conv``      - a stride-2 conv with the 64 masked DCT basis images, then a stride-2 transposed conv with the 64
                  basis images (no 64 x #windows intermediate kept for a fold).
* ``separable`` - the default. The 2-D DCT is separable, so the whole operator (padding, windows, mask, inverse,
                  overlap-add, division) is ``sum_{u,v} m_uv R_u X R_v^T`` where R_u is a fixed n x n matrix: the
                  1-D "keep only frequency u of every window" operator along one axis. With C_u = sum_v m_uv R_v
                  that is two dense matmuls per channel (8(H+W) multiply-adds per pixel, GEMM-shaped): the fastest
                  of the three for forward + backward on CPU, where the 1-input-channel convolutions of ``conv`` are
                  slow. (A polyphase single-conv variant needs 256 multiply-adds per pixel and is slower on CPU.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def dct_matrix(n: int = 8, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` (rows = frequencies): coefficients are ``D @ x``, and ``D.T @ D = I``."""
    k = torch.arange(n, dtype=dtype)[:, None]
    x = torch.arange(n, dtype=dtype)[None, :]
    d = torch.cos(math.pi * (2 * x + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def high_pass_base(n: int = 8, low_cut: int = 2) -> torch.Tensor:
    """``f_base``: 1 on the high band, 0 on the frequencies (u, v) with u + v < low_cut."""
    u = torch.arange(n)[:, None]
    v = torch.arange(n)[None, :]
    return ((u + v) >= low_cut).float()


def paper_sigma(x: torch.Tensor) -> torch.Tensor:
    """The paper's sigma(x) = (1 - exp(-x)) / (1 + exp(-x)) = 2 * sigmoid(x) - 1, in (-1, 1)."""
    return 2.0 * torch.sigmoid(x) - 1.0


def _pads(size: int, window: int, stride: int) -> tuple[int, int]:
    """Reflect padding (before, after) so that every pixel lies in window/stride windows per axis."""
    extra = (-size) % stride  # pixels needed so that the window grid reaches the last row
    return window - stride, window - stride + extra


def block_dct_filter_unfold(x: torch.Tensor, mask: torch.Tensor, window: int = 8, stride: int = 2) -> torch.Tensor:
    """Direct formulation: unfold -> 2-D DCT -> mask -> inverse DCT -> fold -> divide by window count."""
    b, c, h, w = x.shape
    (top, bottom), (left, right) = _pads(h, window, stride), _pads(w, window, stride)
    xp = F.pad(x.reshape(b * c, 1, h, w), (left, right, top, bottom), mode="reflect")
    hp, wp = xp.shape[-2:]
    cols = F.unfold(xp, window, stride=stride)  # [BC, window*window, L]
    d = dct_matrix(window).to(x.dtype if x.dtype.is_floating_point else torch.float32).to(x.device)
    basis = torch.kron(d, d)  # [(u,v), (y,x)]: 2-D DCT of a row-major flattened window
    coef = basis @ cols
    coef = coef * mask.reshape(-1, 1).to(coef.dtype)
    cols = basis.t() @ coef
    out = F.fold(cols, (hp, wp), window, stride=stride)
    count = F.fold(torch.ones_like(cols[:1]), (hp, wp), window, stride=stride)
    out = out / count
    return out[..., top : top + h, left : left + w].reshape(b, c, h, w)


def axis_operators(size: int, window: int = 8, stride: int = 2) -> torch.Tensor:
    """R [window, size, size] (float64): R[u] @ x keeps only DCT frequency u of every window along one axis of x,
    with the reflect padding, the overlap-add and the 1/(window/stride) share of the window-count division folded
    in. The 2-D filter is then sum_{u,v} m_uv R[u] X R[v]^T."""
    d = dct_matrix(window)
    lo, hi = _pads(size, window, stride)
    length = size + lo + hi
    src = (torch.arange(length) - lo).abs()  # reflect padding as a [length, size] selection matrix
    src = torch.where(src > size - 1, 2 * (size - 1) - src, src)
    pad = torch.zeros(length, size, dtype=torch.float64)
    pad[torch.arange(length), src] = 1.0
    r = torch.zeros(window, length, length, dtype=torch.float64)
    for start in range(0, length - window + 1, stride):
        r[:, start : start + window, start : start + window] += d[:, :, None] * d[:, None, :]
    return r[:, lo : lo + size, :] @ pad / (window // stride)


class BlockDCTHighPass(nn.Module):
    """Block-DCT high-pass of eq. 1 with the fixed mask ``f_base`` and the learnable ``f_w`` (init N(0, 0.1))."""

    def __init__(
        self,
        window: int = 8,
        stride: int = 2,
        low_cut: int = 2,
        formulation: str = "separable",
        learnable: bool = True,
        size: int | None = None,
    ) -> None:
        super().__init__()
        if window % stride:
            raise ValueError(f"BlockDCTHighPass: window {window} must be a multiple of stride {stride}")
        if formulation not in ("separable", "conv", "unfold"):
            raise ValueError(f"BlockDCTHighPass: unknown formulation {formulation!r}")
        self.window, self.stride, self.formulation = window, stride, formulation
        self.register_buffer("f_base", high_pass_base(window, low_cut), persistent=False)
        # f_w of eq. 1 (the reference code switched it off; the paper has it).
        self.f_w = nn.Parameter(torch.randn(window, window) * 0.1) if learnable else None
        d = dct_matrix(window)
        basis = torch.kron(d, d)  # [64 (u,v), 64 (y,x)]
        self.register_buffer("basis", basis.float().reshape(-1, 1, window, window), persistent=False)
        # R matrices of the expected map size (others are built on the fly): [window, size, size]; separable only
        self.size = size if formulation == "separable" else None
        ops = axis_operators(size, window, stride).float() if self.size else torch.zeros(0)
        self.register_buffer("axis_ops", ops, persistent=False)

    def mask(self) -> torch.Tensor:
        """The 8x8 frequency mask f_base + sigma(f_w)."""
        return self.f_base if self.f_w is None else self.f_base + paper_sigma(self.f_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F_H of eq. 1, computed in float32 under any autocast (bf16 rounding of the DCT matmuls is coarse against
        the small high band F_H keeps) and returned in the
        input's dtype (bf16 under a bf16 autocast, so the next layers run as they would without this)."""
        with torch.autocast(x.device.type, enabled=False):
            dtype = torch.promote_types(x.dtype, torch.float32)  # float64 stays float64
            xf, mask = x.to(dtype), self.mask().to(dtype)
            if self.formulation == "unfold":
                out = block_dct_filter_unfold(xf, mask, self.window, self.stride)
            elif self.formulation == "conv":
                out = self._forward_conv(xf, mask)
            else:
                out = self._forward_separable(xf, mask)
        return out.to(x.dtype)

    def _forward_conv(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n, s = self.window, self.stride
        (top, bottom), (left, right) = _pads(h, n, s), _pads(w, n, s)
        xp = F.pad(x.reshape(b * c, 1, h, w), (left, right, top, bottom), mode="reflect")
        analysis = self.basis * mask.reshape(-1, 1, 1, 1)
        coef = F.conv2d(xp, analysis.to(xp.dtype), stride=s)
        out = F.conv_transpose2d(coef, self.basis.to(coef.dtype), stride=s)
        # every kept pixel lies in exactly (n/s)^2 windows
        out = out[..., top : top + h, left : left + w] / ((n // s) ** 2)
        return out.reshape(b, c, h, w)

    def _ops(self, n: int, like: torch.Tensor) -> torch.Tensor:
        if n == self.size:
            return self.axis_ops
        return axis_operators(n, self.window, self.stride).to(device=like.device, dtype=torch.float32)

    def _forward_separable(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k = self.window
        r_h, r_w = self._ops(h, x), self._ops(w, x)
        c_w = torch.einsum("uv,vij->uij", mask, r_w)  # C_u = sum_v m_uv R_v along the width
        # rows: P[(u, h')] = sum_h R_u[h', h] X[h, :]
        p = torch.matmul(r_h.reshape(k * h, h).to(x.dtype), x.reshape(b * c, h, w))  # [BC, k*H, W]
        p = p.reshape(b * c, k, h, w).transpose(1, 2).reshape(b * c * h, k * w)  # [(BC, h'), (u, w)]
        # columns: out[h', w'] = sum_{u, w} P[(u, h'), w] C_u[w', w]
        out = p @ c_w.transpose(1, 2).reshape(k * w, w).to(p.dtype)
        return out.reshape(b, c, h, w)

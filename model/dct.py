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
* ``polyphase`` - the default: since windows start every 2 pixels, the whole window operator is, for each of the
                  2x2 output phases, a fixed 15x15 kernel; one stride-2 conv with 4 output channels (16x16 kernels)
                  followed by pixel_shuffle computes it. 256 multiply-adds per pixel instead of 2x1024 for ``conv``.
                  The kernels are a linear function of the mask, rebuilt each forward so that f_w keeps learning.
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
    (t, bo), (l, r) = _pads(h, window, stride), _pads(w, window, stride)
    xp = F.pad(x.reshape(b * c, 1, h, w), (l, r, t, bo), mode="reflect")
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
    return out[..., t:t + h, l:l + w].reshape(b, c, h, w)


class BlockDCTHighPass(nn.Module):
    """Block-DCT high-pass of eq. 1 with the fixed mask ``f_base`` and the learnable ``f_w`` (init N(0, 0.1))."""

    def __init__(self, window: int = 8, stride: int = 2, low_cut: int = 2, formulation: str = "polyphase",
                 learnable: bool = True) -> None:
        super().__init__()
        if window % stride:
            raise ValueError(f"BlockDCTHighPass: window {window} must be a multiple of stride {stride}")
        if formulation not in ("polyphase", "conv", "unfold"):
            raise ValueError(f"BlockDCTHighPass: unknown formulation {formulation!r}")
        self.window, self.stride, self.formulation = window, stride, formulation
        self.register_buffer("f_base", high_pass_base(window, low_cut), persistent=False)
        # f_w of eq. 1 (the reference code switched it off; the paper has it).
        self.f_w = nn.Parameter(torch.randn(window, window) * 0.1) if learnable else None
        d = dct_matrix(window)
        basis = torch.kron(d, d)  # [64 (u,v), 64 (y,x)]
        self.register_buffer("basis", basis.float().reshape(-1, 1, window, window), persistent=False)
        self.register_buffer("phase_basis", self._phase_basis(basis, window, stride).float(), persistent=False)

    @staticmethod
    def _phase_basis(basis: torch.Tensor, window: int, stride: int) -> torch.Tensor:
        """G[(u,v), phase, ky, kx] so that the polyphase kernels are ``einsum('f,fpij->pij', mask, G)``.

        Output pixel p = stride*i + r of phase r is covered by the windows whose offset a = p - start is
        r, r+stride, ... < window; each contributes sum_f B[f, a] m_f B[f, a + d] to the weight of pixel p + d.
        Kernel index k = d + (window - 1) + r, so all phases share one stride-`stride` conv of size
        2*window - 2 + stride whose input is padded by window - 1 on the left.
        """
        n = window
        ksize = 2 * n - 2 + stride
        count = (n // stride) ** 2
        b = basis.reshape(n * n, n, n)  # [f, y, x]
        g = torch.zeros(n * n, stride * stride, ksize, ksize, dtype=basis.dtype)
        for ry in range(stride):
            for rx in range(stride):
                ph = ry * stride + rx
                for ay in range(ry, n, stride):
                    for ax in range(rx, n, stride):
                        # sum over the input positions (by, bx) of this window: d = b - a
                        ky0 = n - 1 + ry - ay  # kernel index of by = 0
                        kx0 = n - 1 + rx - ax
                        g[:, ph, ky0:ky0 + n, kx0:kx0 + n] += b[:, ay, ax, None, None] * b
        return g / count

    def mask(self) -> torch.Tensor:
        """The 8x8 frequency mask f_base + sigma(f_w)."""
        return self.f_base if self.f_w is None else self.f_base + paper_sigma(self.f_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask()
        if self.formulation == "unfold":
            return block_dct_filter_unfold(x, mask, self.window, self.stride)
        if self.formulation == "conv":
            return self._forward_conv(x, mask)
        return self._forward_polyphase(x, mask)

    def _forward_conv(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n, s = self.window, self.stride
        (t, bo), (l, r) = _pads(h, n, s), _pads(w, n, s)
        xp = F.pad(x.reshape(b * c, 1, h, w), (l, r, t, bo), mode="reflect")
        analysis = self.basis * mask.reshape(-1, 1, 1, 1)
        coef = F.conv2d(xp, analysis.to(xp.dtype), stride=s)
        out = F.conv_transpose2d(coef, self.basis.to(coef.dtype), stride=s)
        out = out[..., t:t + h, l:l + w] / ((n // s) ** 2)  # every kept pixel lies in exactly (n/s)^2 windows
        return out.reshape(b, c, h, w)

    def _forward_polyphase(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n, s = self.window, self.stride
        weight = torch.einsum("f,fpij->pij", mask.reshape(-1), self.phase_basis).unsqueeze(1)  # [s*s, 1, k, k]
        hs, ws = -(-h // s), -(-w // s)
        xp = F.pad(x.reshape(b * c, 1, h, w), (n - 1, s * ws - w + n - 1, n - 1, s * hs - h + n - 1), mode="reflect")
        out = F.conv2d(xp, weight.to(xp.dtype), stride=s)  # [BC, s*s, hs, ws]
        out = F.pixel_shuffle(out, s)[..., :h, :w]
        return out.reshape(b, c, h, w)

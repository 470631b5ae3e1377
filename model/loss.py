"""Local relationship constraint loss (paper section IV-E, eq. 23-27)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .config import HiLIFConfig


def _in_fp32(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run `fn(f_all, ...)` on a float32 (or wider) `f_all` with autocast off: under bf16 autocast the cosine matmul
    of near-parallel blocks is too coarse for M. The maths without the guard stays reachable as ``__wrapped__``."""

    @functools.wraps(fn)
    def guarded(f_all: torch.Tensor, *args: int, **kwargs: int) -> torch.Tensor:
        with torch.autocast(f_all.device.type, enabled=False):
            return fn(f_all.to(torch.promote_types(f_all.dtype, torch.float32)), *args, **kwargs)

    return guarded


def _block_distances(f_all: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """s_xz of eq. 23 for every pair of k x k blocks (stride s) of each sample: [B, n_blocks, n_blocks]."""
    blocks = F.unfold(f_all, k, stride=s).transpose(1, 2)  # [B, n_blocks, C*k*k]
    u = F.normalize(blocks, dim=-1)
    return 1.0 - u @ u.transpose(1, 2)


@_in_fp32
def local_max_difference(f_all: torch.Tensor, k: int = 5, s: int = 2, n: int = 8) -> torch.Tensor:
    """Per-sample M of eq. 25: the mean of the N largest mean block inconsistencies (float32 under any autocast).

    ``f_all`` [B, C, S, S] is cut into k x k blocks with stride s (25 blocks for 14x14, k=5, s=2); each block is
    flattened; s_xz = 1 - cos(u_x, u_z) (eq. 23); s_i = mean over all j of s_ij (eq. 24, j = 1..n as written, the
    zero self-distance included); M = mean(topk(s, N)).
    """
    dist = _block_distances(f_all, k, s)  # [B, n_blocks, n_blocks]
    n_blocks = dist.shape[1]
    if n > n_blocks:
        raise ValueError(
            f"local relationship loss: N={n} exceeds the {n_blocks} blocks of size {k} stride {s} on a "
            f"{f_all.shape[-2]}x{f_all.shape[-1]} map; lower N (lrc_n) or the stride"
        )
    s_mean = dist.mean(dim=-1)
    return s_mean.topk(n, dim=-1).values.mean(dim=-1)


class LocalRelationLoss(nn.Module):
    """L_d = max(0, 1 - mean(M over fakes) + mean(M over reals)) (eq. 27); label 1 = fake, 0 = real.

    A batch without both classes gives 0 (still attached to the graph, so that DDP sees every parameter used).
    The loss is float32 whatever the autocast around it."""

    def __init__(self, k: int = 5, s: int = 2, n: int = 8, margin: float = 1.0) -> None:
        super().__init__()
        self.k, self.s, self.n, self.margin = k, s, n, margin
        self.stats: dict[str, torch.Tensor] = {}

    def forward(self, f_all: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m = self.inconsistency(f_all)  # float32, autocast off inside
        fake, real = (labels == 1).to(m.dtype), (labels == 0).to(m.dtype)
        n_fake, n_real = fake.sum(), real.sum()
        # class means by masked sums: no data-dependent branch or indexing, so no host sync on a GPU and no
        # graph break under torch.compile; a one-class batch gives exactly 0 (and stays attached to the graph)
        both = (n_fake > 0) & (n_real > 0)
        m_fake, m_real = (m * fake).sum() / n_fake.clamp_min(1), (m * real).sum() / n_real.clamp_min(1)
        gap = m_fake - m_real
        # the class means of the last call, for logging (detached tensors: reading them is the caller's host sync)
        self.stats = {"m_fake": m_fake.detach(), "m_real": m_real.detach(), "both": both.detach()}
        return torch.where(both, F.relu(self.margin - gap), m.sum() * 0.0)

    def inconsistency(self, f_all: torch.Tensor) -> torch.Tensor:
        """Per-sample M that the hinge compares between fakes and reals: eq. 25 here."""
        return local_max_difference(f_all, self.k, self.s, self.n)

    def extra_repr(self) -> str:
        return f"k={self.k}, s={self.s}, n={self.n}, margin={self.margin}"


@_in_fp32
def max_pair_difference(f_all: torch.Tensor, k: int = 5, s: int = 2) -> torch.Tensor:
    """Per-sample M of Li et al.'s original constraint: the distance s_xz (eq. 23) of the two most dissimilar blocks,
    max over all block pairs (float32 under any autocast, as `local_max_difference`)."""
    return _block_distances(f_all, k, s).flatten(1).amax(dim=1)


class OriginalLocalRelationLoss(LocalRelationLoss):
    """Li et al.'s local relation constraint (the paper's ref. [12], Table X/XI "Model + LRCL"), as the paper describes
    it: the same hinge on the same F_all blocks, but M is the distance of the two most dissimilar blocks
    (`max_pair_difference`) instead of the mean of the top-N mean distances; N is not used."""

    def inconsistency(self, f_all: torch.Tensor) -> torch.Tensor:
        return max_pair_difference(f_all, self.k, self.s)

    def extra_repr(self) -> str:
        return f"k={self.k}, s={self.s}, max pair (Li et al.), margin={self.margin}"


def make_lrc_loss(cfg: "HiLIFConfig") -> LocalRelationLoss:
    """The stage-2 constraint loss a model config asks for: `lrc_loss` "hilif" (eq. 27) or "li" (the original)."""
    cls = OriginalLocalRelationLoss if cfg.lrc_loss == "li" else LocalRelationLoss
    return cls(cfg.lrc_k, cfg.lrc_s, cfg.lrc_n)

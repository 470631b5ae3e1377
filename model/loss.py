"""Local relationship constraint loss (paper section IV-E, eq. 23-27)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def local_max_difference(f_all: torch.Tensor, k: int = 5, s: int = 2, n: int = 8) -> torch.Tensor:
    """Per-sample M of eq. 25: the mean of the N largest mean block inconsistencies.

    ``f_all`` [B, C, S, S] is cut into k x k blocks with stride s (25 blocks for 14x14, k=5, s=2); each block is
    flattened; s_xz = 1 - cos(u_x, u_z) (eq. 23); s_i = mean over all j of s_ij (eq. 24, j = 1..n as written, the
    zero self-distance included); M = mean(topk(s, N)). Computed in float32 under any autocast (the cosine matmul
    in bf16 puts M off by up to 16 % on near-parallel blocks).
    """
    with torch.autocast(f_all.device.type, enabled=False):
        return _local_max_difference_fp32(f_all.to(torch.promote_types(f_all.dtype, torch.float32)), k, s, n)


def _local_max_difference_fp32(f_all: torch.Tensor, k: int, s: int, n: int) -> torch.Tensor:
    blocks = F.unfold(f_all, k, stride=s).transpose(1, 2)  # [B, n_blocks, C*k*k]
    n_blocks = blocks.shape[1]
    if n > n_blocks:
        raise ValueError(f"local relationship loss: N={n} exceeds the {n_blocks} blocks of size {k} stride {s} on a "
                         f"{f_all.shape[-2]}x{f_all.shape[-1]} map; lower N (lrc_n) or the stride")
    u = F.normalize(blocks, dim=-1)
    dist = 1.0 - u @ u.transpose(1, 2)  # [B, n_blocks, n_blocks]
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
        m = local_max_difference(f_all, self.k, self.s, self.n)  # float32, autocast off inside
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

    def extra_repr(self) -> str:
        return f"k={self.k}, s={self.s}, n={self.n}, margin={self.margin}"

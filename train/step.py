"""One training step, the code the trainer runs eagerly and hilif.train.cuda_graphs captures: the losses of a
forward (stage 1: cross-entropy; stage 2: CE + lambda_d * L_d), backward and the optimiser's update, with its
scalars left on the device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hilif.train.data import normalize
from hilif.train.precision import autocast


def forward_loss(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lrc: torch.nn.Module | None, lambda_d: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training forward: (loss, CE, L_d). Stage 1 passes ``lrc=None`` (CE only); stage 2 adds
    ``lambda_d * L_d`` on the features the same forward returns. Losses are computed in float32."""
    if lrc is None:
        ce = F.cross_entropy(model(x).float(), y)
        return ce, ce, torch.zeros((), device=x.device)
    logits, f_all = model(x, return_lrc=True)
    ce = F.cross_entropy(logits.float(), y)
    ld = lrc(f_all.float(), y)
    return ce + lambda_d * ld, ce, ld


@dataclass
class StepOutput:
    """One training step's scalars on the device: the loss, its CE and L_d terms, and stage 2's class means of M
    with whether the batch had both classes (zeros in stage 1)."""

    loss: torch.Tensor
    ce: torch.Tensor
    ld: torch.Tensor
    m_fake: torch.Tensor
    m_real: torch.Tensor
    both: torch.Tensor


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    lrc: torch.nn.Module | None,
    lambda_d: float,
    amp: torch.dtype | None,
    channels_last: bool,
    autocast_cache: bool = True,
) -> StepOutput:
    """One optimiser step on a uint8 batch already on the model's device (forward, loss, backward, update); the
    learning-rate schedule is the caller's. The same code runs eagerly and under capture."""
    x = normalize(images, images.device, channels_last)
    with autocast(images.device, amp, cache=autocast_cache):
        loss, ce, ld = forward_loss(model, x, labels, lrc, lambda_d)
    if lrc is not None:
        stats = lrc.stats
        m_fake, m_real, both = stats["m_fake"], stats["m_real"], stats["both"].float()
    else:
        m_fake = m_real = both = torch.zeros((), device=images.device)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    detached = (t.detach().float() for t in (loss, ce, ld, m_fake, m_real, both))
    return StepOutput(*detached)

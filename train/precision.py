"""The precision switch shared by training, evaluation and detection: bf16 autocast on CUDA, fp32 on CPU.

The parts of the model that must stay fp32 under autocast (the block DCT, L_d's distances) opt out themselves
(hilif.model.dct, hilif.model.loss); this module only decides whether autocast is on.
"""

from __future__ import annotations

import contextlib

import torch


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a `--precision` value ("auto" | "bf16" | "fp32"): bf16 on CUDA by default,
    None (plain fp32) on CPU unless bf16 is asked for."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None, cache: bool = True) -> contextlib.AbstractContextManager:
    """torch.autocast at `dtype`, or a no-op context when `dtype` is None. ``cache=False`` turns off autocast's cache
    of cast weights, which a CUDA graph capture must not use (hilif.train.cuda_graphs)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)

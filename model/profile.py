"""Parameters and FLOPs of HiLIF per top-level module, counted with torch.utils.flop_counter.FlopCounterMode."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from .config import HiLIFConfig
from .hilif import HiLIF, build_model


@dataclass
class ProfileRow:
    """One module: parameter counts and forward FLOPs (1 multiply-add = 2 FLOPs)."""

    name: str
    params: int
    trainable_params: int
    flops: int


@dataclass
class ModelProfile:
    """Per-module rows; ``total_flops`` is the whole forward including the constraint projections (``lrc``, only
    run in training stage 2); ``inference_flops`` leaves them out."""

    rows: list[ProfileRow]
    input_size: int
    batch: int
    total_params: int
    total_flops: int
    config: dict = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return self.total_flops // 2

    @property
    def inference_flops(self) -> int:
        return self.total_flops - sum(r.flops for r in self.rows if r.name == "lrc")


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode knows the CUDA SDPA kernels but not the CPU one (counts 0); same formula.
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode that also counts PyTorch's CPU attention kernels (forward and backward)."""
    custom = {}
    for name, fn in (
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_flops),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward_flops),
    ):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            custom[op] = fn
    return FlopCounterMode(display=False, custom_mapping=custom)


def _module_rows(model: HiLIF) -> list[tuple[str, nn.Module]]:
    rows: list[tuple[str, nn.Module]] = [
        ("rgb backbone", model.rgb),
        ("noise backbone", model.noise),
        ("srm", model.srm),
    ]
    if model.dftm is not None:
        rows.append(("dftm", model.dftm))
    if model.self_attention is not None:
        rows.append(("self_attention", model.self_attention))
    if model.ddafm is not None:
        rows += [(f"ddafm.{k}", m) for k, m in model.ddafm.items()]
    rows += [("head", model.head), ("lrc", model.lrc)]
    return rows


def profile_model(cfg: HiLIFConfig, input_size: int | None = None, batch: int = 1) -> ModelProfile:
    """Build ``cfg`` (without downloading weights) at ``input_size`` (default cfg.img_size) and count parameters and
    forward FLOPs per top-level module for a batch of ``batch`` images."""
    size = input_size or cfg.img_size
    cfg = dataclasses.replace(cfg, img_size=size, pretrained=False, backbone_weights=None)
    model = build_model(cfg).eval()
    x = torch.zeros(batch, 3, size, size)
    counter = flop_counter()
    # PyTorch's fused inference path of nn.TransformerEncoderLayer (the Table VII self-attention block) is one op the
    # counter does not know: count that block through its ordinary ops
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), counter:
            model(x, return_lrc=True)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    counts = counter.get_flop_counts()
    prefix = type(model).__name__
    # module names in the counter: "HiLIF.<attr>[.<sub>...]"
    attr_of = {id(m): n for n, m in model.named_modules()}

    def flops_of(module: nn.Module) -> int:
        # A module entered through its own __call__ has its entry; a stream is driven by its forward_a..d methods,
        # so its FLOPs are the sum over its children.
        key = f"{prefix}.{attr_of[id(module)]}"
        if key in counts:
            return int(sum(counts[key].values()))
        return sum(flops_of(child) for child in module.children())

    rows = []
    for label, module in _module_rows(model):
        flops = flops_of(module)
        rows.append(
            ProfileRow(
                label,
                sum(p.numel() for p in module.parameters()),
                sum(p.numel() for p in module.parameters() if p.requires_grad),
                flops,
            )
        )
    total_flops = int(sum(counts.get("Global", {}).values()))
    return ModelProfile(rows, size, batch, sum(p.numel() for p in model.parameters()), total_flops, cfg.to_dict())

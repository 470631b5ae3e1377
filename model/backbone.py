"""One EfficientNet stream (timm), cut into the four pieces A-D of the design (stage ends, derived from strides)."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

from .depthwise import use_small_map_depthwise

log = logging.getLogger(__name__)


class BackboneWeightsError(RuntimeError):
    """The ImageNet weights of a backbone could not be obtained (offline hub, bad file)."""


def create_backbone(name: str, pretrained: bool, weights: str | None = None) -> nn.Module:
    """A timm EfficientNet without classifier or pooling, optionally with ImageNet weights.

    ``weights`` is a local timm checkpoint (``pretrained_cfg_overlay=dict(file=...)``); without it and with
    ``pretrained`` the weights come from timm's hub download.
    """
    if not timm.is_model(name):
        raise ValueError(f"unknown timm backbone {name!r} (try efficientnet_b4, efficientnet_b0 or mobilenetv2_050)")
    kwargs: dict = dict(num_classes=0, global_pool="")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise BackboneWeightsError(f"backbone weights file {path} does not exist; fix --backbone-weights")
        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        except (RuntimeError, ValueError, KeyError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BackboneWeightsError(
                f"backbone weights file {path} does not fit timm {name!r} ({first}); "
                f"pass a {name} checkpoint with --backbone-weights"
            ) from e
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as e:  # hub unreachable (huggingface_hub / requests / urllib errors are all OSErrors)
        raise BackboneWeightsError(
            f"could not download the ImageNet weights of {name!r} from the timm hub (offline?); pass a local "
            f"checkpoint with --backbone-weights PATH, or train from scratch with pretrained=False "
            f"(--no-pretrained)"
        ) from e


def _out_channels(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _stage_stride(stage: nn.Module) -> int:
    first = stage[0]
    conv = getattr(first, "conv_dw", None) or getattr(first, "conv_pw", None) or getattr(first, "conv", None)
    if conv is None:
        conv = next(m for m in first.modules() if isinstance(m, nn.Conv2d))
    return int(conv.stride[0])


def _cumulative_strides(net: nn.Module) -> list[int]:
    """Output stride of each stage of a timm EfficientNet-class model."""
    stride = int(net.conv_stem.stride[0])
    strides = []
    for stage in net.blocks:
        stride *= _stage_stride(stage)
        strides.append(stride)
    return strides


def stage_cuts(net: nn.Module, name: str) -> tuple[tuple[int, int, int], list[int]]:
    """Indices of the last stage at stride 4 and the first and last at stride 16 of a timm EfficientNet-class model,
    and the output stride of every stage.

    Raises ValueError naming the backbone when it is not built by that class or lacks that layout."""
    if not all(hasattr(net, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        raise ValueError(
            f"backbone {name!r} is not built by timm's EfficientNet class, whose stages HiLIF cuts; use one that "
            f"is (efficientnet_b*, tf_efficientnetv2_b*, mobilenetv2_*)"
        )
    strides = _cumulative_strides(net)
    try:
        a = max(i for i, s in enumerate(strides) if s == 4)
        b = min(i for i, s in enumerate(strides) if s == 16)
        c = max(i for i, s in enumerate(strides) if s == 16)
    except ValueError:
        a = b = c = -1
    if not (0 <= a < b < c < len(strides) - 1):
        raise ValueError(
            f"backbone {name!r} does not have the EfficientNet stage layout HiLIF cuts "
            f"(stage strides {strides}); use an efficientnet_b* or mobilenetv2_* model"
        )
    return (a, b, c), strides


def check_backbone(name: str) -> None:
    """Raises ValueError when ``name`` is not a timm backbone HiLIF can cut; builds it on the meta device (no memory,
    no weights), so a bad --backbone fails before anything is written."""
    with torch.device("meta"):
        net = create_backbone(name, pretrained=False)
    stage_cuts(net, name)


class EfficientNetStream(nn.Module):
    """A timm EfficientNet split at the ends of its stages:

    A = stem + stages up to the last one at stride 4; B = up to the first stage at stride 16;
    C = up to the last stage at stride 16; D = the rest + conv_head + bn2.
    For efficientnet_b4 at 224 that is A 32x56x56, B 112x14x14, C 160x14x14, D 1792x7x7.
    """

    def __init__(
        self, name: str, pretrained: bool = False, weights: str | None = None, small_map_depthwise: bool = True
    ) -> None:
        super().__init__()
        self.net = create_backbone(name, pretrained, weights)
        net = self.net
        if small_map_depthwise:
            use_small_map_depthwise(net)
        (a, b, c), strides = stage_cuts(net, name)
        self.cut_stages = (a, b, c)
        self.channels = {
            "a": _out_channels(net.blocks[a]),
            "b": _out_channels(net.blocks[b]),
            "c": _out_channels(net.blocks[c]),
            "d": int(net.num_features),
        }
        self.strides = {"a": 4, "b": 16, "c": 16, "d": strides[-1]}

    def forward_a(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net.bn1(self.net.conv_stem(x))
        for stage in self.net.blocks[: self.cut_stages[0] + 1]:
            x = stage(x)
        return x

    def forward_b(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.net.blocks[self.cut_stages[0] + 1 : self.cut_stages[1] + 1]:
            x = stage(x)
        return x

    def forward_c(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.net.blocks[self.cut_stages[1] + 1 : self.cut_stages[2] + 1]:
            x = stage(x)
        return x

    def forward_d(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.net.blocks[self.cut_stages[2] + 1 :]:
            x = stage(x)
        return self.net.bn2(self.net.conv_head(x))

    @property
    def last_feature_module(self) -> nn.Module:
        """The module whose output is the stream's last feature map (for Grad-CAM)."""
        return self.net.bn2

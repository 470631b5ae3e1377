"""The HiLIF detector (paper Fig. 2): RGB stream with DFTM, SRM noise stream, DDAFM at cuts B and C, fused head,
and the per-level projections of the local relationship constraint (eq. 22)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .attention import PixelSelfAttention
from .backbone import EfficientNetStream
from .config import HiLIFConfig
from .ddafm import DDAFM
from .dftm import DFTM
from .srm import SRMConv

log = logging.getLogger(__name__)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous (NCHW)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return grad.contiguous()


class FusionHead(nn.Module):
    """concat(RGB D, noise D) -> 1x1 conv -> BN -> ReLU -> global average pool -> dropout -> linear.

    The 1x1 conv over the concatenation is written as the sum of one 1x1 conv per stream (the same function, its
    weight split in two): the backward of a concat hands each stream a channel slice of the gradient, a
    non-contiguous tensor that sends the backbones' depthwise-conv backward down a much slower path on CPU.
    """

    def __init__(self, channels: int, mid_channels: int, num_classes: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv_rgb = nn.Conv2d(channels, mid_channels, 1, bias=False)
        self.conv_noise = nn.Conv2d(channels, mid_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(mid_channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(mid_channels, num_classes)

    def forward(self, x_rgb: torch.Tensor, x_noise: torch.Tensor) -> torch.Tensor:
        if x_rgb.device.type == "cpu" and x_rgb.is_contiguous() and x_noise.is_contiguous():
            # the same 1x1 convs as one matmul each on the [B, C, H*W] view: faster forward + backward on CPU than
            # the convs. The matmul's input gradient comes back with channels-last strides, which would drag the
            # backbones' backward onto its slow CPU path, so _ContiguousGrad hands them plain NCHW gradients (one
            # copy of the head's input per stream).
            b, _, h, w = x_rgb.shape
            x_rgb, x_noise = _ContiguousGrad.apply(x_rgb), _ContiguousGrad.apply(x_noise)
            y = (
                torch.matmul(self.conv_rgb.weight.flatten(1), x_rgb.flatten(2))
                + torch.matmul(self.conv_noise.weight.flatten(1), x_noise.flatten(2))
            ).view(b, -1, h, w)
        else:  # cuDNN's 1x1 convs, in whatever memory format the streams run
            y = self.conv_rgb(x_rgb) + self.conv_noise(x_noise)
        x = F.relu(self.bn(y), inplace=True)
        return self.fc(self.dropout(x.mean(dim=(2, 3))))


class LocalRelationProjection(nn.Module):
    """Eq. 22: F^l = Conv1x1(F_rgb^l) + Conv1x1(F_noise^l) for l = low (A), mid (B), high (C); resized to
    lrc_size x lrc_size (bilinear) and concatenated: F_all of the constraint loss."""

    def __init__(self, level_channels: dict[str, int], out_channels: int = 64, size: int = 14) -> None:
        super().__init__()
        self.size = size
        self.rgb = nn.ModuleDict({k: nn.Conv2d(c, out_channels, 1) for k, c in level_channels.items()})
        self.noise = nn.ModuleDict({k: nn.Conv2d(c, out_channels, 1, bias=False) for k, c in level_channels.items()})

    def forward(self, levels: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        outs = []
        for k, (x_rgb, x_noise) in levels.items():
            f = self.rgb[k](x_rgb) + self.noise[k](x_noise)
            if f.shape[-2:] != (self.size, self.size):
                f = F.interpolate(f, size=(self.size, self.size), mode="bilinear", align_corners=False)
            outs.append(f)
        return torch.cat(outs, dim=1)


class HiLIF(nn.Module):
    """Two-stream face-forgery detector. ``forward(x)`` -> logits [B, num_classes] (index 1 = fake);
    ``forward(x, return_lrc=True)`` -> (logits, F_all) for the local relationship constraint loss."""

    def __init__(self, cfg: HiLIFConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        streams = (cfg.backbone, cfg.pretrained, cfg.backbone_weights, cfg.small_map_depthwise)
        self.rgb = EfficientNetStream(*streams)
        self.noise = EfficientNetStream(*streams)
        self.srm = SRMConv(cfg.srm_truncation)
        ch = self.rgb.channels
        self.dftm: DFTM | None = None
        if cfg.dftm:
            self.dftm = DFTM(
                ch["a"],
                cfg.lem_patch_sizes,
                cfg.dftm_attention,
                cfg.lem_mode,
                cfg.dct_window,
                cfg.dct_stride,
                cfg.dct_low_cut,
                cfg.dct_formulation,
                cfg.sa_reduction,
                cfg.sa_heads,
                feature_size=cfg.img_size // self.rgb.strides["a"],
                dct_learnable=cfg.dct_learnable_filter,
            )
        self.self_attention: PixelSelfAttention | None = None
        if cfg.self_attention:  # Table VII: a plain transformer block in DFTM's place
            self.self_attention = PixelSelfAttention(ch["a"], cfg.self_attention_heads)
        self.ddafm: nn.ModuleDict | None = None
        if cfg.ddafm:
            self.ddafm = nn.ModuleDict({k: DDAFM(ch[k], cfg.msca, cfg.msca_hidden) for k in ("b", "c")})
        self.head = FusionHead(ch["d"], ch["d"], cfg.num_classes, cfg.dropout)
        self.lrc = LocalRelationProjection({k: ch[k] for k in ("a", "b", "c")}, cfg.lrc_channels, cfg.lrc_size)

    # ------------------------------------------------------------------ forward
    def forward_features(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """-> (RGB cut-D map, noise cut-D map, {level: (rgb, noise)} at cuts A, B, C after DFTM/DDAFM)."""
        if x.shape[-2:] != (self.cfg.img_size, self.cfg.img_size):
            raise ValueError(
                f"HiLIF built for {self.cfg.img_size}x{self.cfg.img_size} inputs, got {tuple(x.shape[-2:])}"
            )
        levels: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        r = self.rgb.forward_a(x)
        n = self.noise.forward_a(self.srm(x))
        if self.dftm is not None:
            r = self.dftm(r)
        elif self.self_attention is not None:
            r = self.self_attention(r)
        levels["a"] = (r, n)
        r, n = self.rgb.forward_b(r), self.noise.forward_b(n)
        if self.ddafm is not None:
            r, n = self.ddafm["b"](r, n)
        levels["b"] = (r, n)
        r, n = self.rgb.forward_c(r), self.noise.forward_c(n)
        if self.ddafm is not None:
            r, n = self.ddafm["c"](r, n)
        levels["c"] = (r, n)
        return self.rgb.forward_d(r), self.noise.forward_d(n), levels

    def forward(self, x: torch.Tensor, return_lrc: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        r, n, levels = self.forward_features(x)
        logits = self.head(r, n)
        if return_lrc:
            return logits, self.lrc(levels)
        return logits

    # ------------------------------------------------------------------ parameter groups and hooks
    def lrc_parameters(self) -> list[nn.Parameter]:
        """Parameters used only by the constraint loss (the eq. 22 projections); frozen in stage 1."""
        return list(self.lrc.parameters())

    def gradcam_layers(self) -> dict[str, nn.Module]:
        """Modules whose forward output is a [B, C, h, w] map: "dftm" (absent when DFTM is switched off), "rgb" and
        "noise" (last feature map of each stream)."""
        layers: dict[str, nn.Module] = {}
        if self.dftm is not None:
            layers["dftm"] = self.dftm
        layers["rgb"] = self.rgb.last_feature_module
        layers["noise"] = self.noise.last_feature_module
        return layers


def build_model(cfg: HiLIFConfig) -> HiLIF:
    """The factory: a HiLIF model for ``cfg``."""
    model = HiLIF(cfg)
    log.info(
        "built HiLIF (%s at %d, pretrained=%s): %.2fM parameters",
        cfg.backbone,
        cfg.img_size,
        cfg.pretrained,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model

"""`HiLIFConfig`: every architectural choice of HiLIF as data, with the ablation switches of Tables VI-IX."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

DFTMAttention = Literal["both", "fem", "fsfm"]
LEMMode = Literal["local", "token_mix"]
DCTFormulation = Literal["separable", "conv", "unfold"]
LRCLoss = Literal["hilif", "li"]

#: Stride of cut A (stem + stages 0-1) in every timm EfficientNet; checked again against the real backbone.
CUT_A_STRIDE = 4


def _closest_divisor(n: int, target: float) -> int:
    """The divisor of ``n`` closest to ``target`` (ties go to the larger one)."""
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), -d))


def derive_patch_sizes(feature_size: int, heads: int = 4) -> tuple[int, ...]:
    """LEM patch sizes for a ``feature_size`` x ``feature_size`` map at cut A.

    The paper sets them to H/8, H/16, H/32, H/64 of the input (28, 14, 7, 4 at 224, i.e. S/2, S/4, S/8, S/16 of the
    56x56 map, 3.5 rounded to 4). We take, for each head, the divisor of S closest to S/2**(i+1), which reproduces
    (28, 14, 7, 4) at 224, gives (32, 16, 8, 4) at 256 and (40, 20, 10, 5) at 320, and always divides the map.
    """
    return tuple(_closest_divisor(feature_size, feature_size / 2 ** (i + 1)) for i in range(heads))


@dataclass
class HiLIFConfig:
    """Architecture of the HiLIF detector (paper section IV)."""

    # --- backbones (two timm EfficientNets with separate weights) ---
    backbone: str = "efficientnet_b4"
    img_size: int = 224
    pretrained: bool = True
    backbone_weights: str | None = None  # local timm checkpoint file; used for both streams
    # depthwise convs on maps smaller than their kernel run as matrix products on CPU (model/depthwise.py): the
    # same function, a faster backward; False keeps PyTorch's convolution everywhere
    small_map_depthwise: bool = True
    #: fields that choose how the model is computed, not what it computes: a checkpoint loads whatever they were
    EXECUTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"small_map_depthwise"})
    # --- DFTM (Table VI-VIII switches) ---
    dftm: bool = True
    # Table VII "EfficientNet + Self-Attention": a plain transformer block (global self-attention over every cut-A
    # pixel + MLP) at cut A in place of DFTM, the paper's case that content attention hurts; needs dftm=False
    self_attention: bool = False
    self_attention_heads: int = 4  # heads of that block (LEM's 4 groups)
    dftm_attention: DFTMAttention = "both"  # FEM + FSFM, or one of them (Table VII)
    lem_mode: LEMMode = "local"  # attention inside patches (LEM) vs between patches (M2TR token mix)
    multi_patch: bool = True  # one patch size per channel group vs the same size for all groups
    patch_sizes: tuple[int, ...] | None = None  # derived from img_size when None (28, 14, 7, 4 at 224)
    single_patch_size: int | None = None  # used when multi_patch=False; derived (S/8, 7 at 224) when None
    dct_window: int = 8
    dct_stride: int = 2
    dct_low_cut: int = 2  # f_base zeroes DCT frequencies (u, v) with u + v < dct_low_cut (DC, (0,1), (1,0))
    dct_formulation: DCTFormulation = "separable"  # all three are equal; separable is the fast one
    dct_learnable_filter: bool = True  # f_w of eq. 1 (the paper's); False = fixed f_base mask (the authors' code)
    sa_reduction: int = 7  # coarse self-attention keys/values come from a 7x7 stride-7 conv (eq. 12)
    sa_heads: int = 1
    # --- noise stream ---
    srm_truncation: float = 3.0
    # --- DDAFM (Table IX switches) ---
    ddafm: bool = True
    msca: bool = True
    msca_hidden: int = 8  # hidden width of the MLP across the 3 pooling scales (eq. 18; not given in the paper)
    # --- head ---
    dropout: float = 0.5
    num_classes: int = 2
    # --- local relationship constraint (eq. 22-27) ---
    lrc_k: int = 5
    lrc_s: int = 2
    lrc_n: int = 8
    lrc_size: int = 14
    lrc_channels: int = 64  # output channels of each level's 1x1 projections (not given in the paper)
    lrc_loss: LRCLoss = "hilif"  # "hilif": eq. 24-27 (top-N mean); "li": Li et al.'s original (Table X/XI "LRCL")

    def __post_init__(self) -> None:
        if self.patch_sizes is not None:
            self.patch_sizes = tuple(int(p) for p in self.patch_sizes)
        self.validate()

    # ------------------------------------------------------------------ derived values
    @property
    def cut_a_size(self) -> int:
        """Side of the cut-A feature map (where DFTM runs), assuming the EfficientNet stride of 4."""
        return self.img_size // CUT_A_STRIDE

    @property
    def lem_patch_sizes(self) -> tuple[int, ...]:
        """Patch size of each LEM channel group (4 groups), after the multi/single switch."""
        sizes = self.patch_sizes or derive_patch_sizes(self.cut_a_size)
        if not self.multi_patch:
            single = self.single_patch_size or _closest_divisor(self.cut_a_size, self.cut_a_size / 8)
            sizes = (single,) * len(sizes)
        return sizes

    @property
    def lrc_blocks(self) -> int:
        """Number of KxK blocks (stride S) on the lrc_size x lrc_size map."""
        per_side = (self.lrc_size - self.lrc_k) // self.lrc_s + 1
        return per_side * per_side

    def validate(self) -> None:
        """Raise ValueError naming the broken constraint."""
        choices = {
            "dftm_attention": ("both", "fem", "fsfm"),
            "lem_mode": ("local", "token_mix"),
            "dct_formulation": ("separable", "conv", "unfold"),
            "lrc_loss": ("hilif", "li"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"HiLIFConfig.{name}={getattr(self, name)!r}: expected one of {allowed}")
        if self.img_size % 32:
            raise ValueError(f"HiLIFConfig.img_size={self.img_size}: must be a multiple of 32 (EfficientNet stride)")
        s = self.cut_a_size
        if self.self_attention and self.dftm:
            raise ValueError("HiLIFConfig: self_attention=True replaces DFTM at cut A; set dftm=False with it")
        if self.dftm:
            bad = [p for p in self.lem_patch_sizes if p < 1 or s % p]
            if bad:
                raise ValueError(
                    f"HiLIFConfig: LEM patch sizes {bad} must divide the {s}x{s} cut-A feature map "
                    f"(img_size {self.img_size} / 4); pass patch_sizes that divide {s}"
                )
            if s < self.sa_reduction:
                raise ValueError(
                    f"HiLIFConfig: the {s}x{s} cut-A map is smaller than sa_reduction={self.sa_reduction}"
                    f"; use img_size >= {4 * self.sa_reduction}"
                )
            if self.dct_window % self.dct_stride or s <= self.dct_window:
                raise ValueError(
                    f"HiLIFConfig: dct_window={self.dct_window} must be a multiple of dct_stride="
                    f"{self.dct_stride} and smaller than the {s}x{s} cut-A map"
                )
        if self.lrc_size < self.lrc_k:
            raise ValueError(f"HiLIFConfig: lrc_k={self.lrc_k} is larger than lrc_size={self.lrc_size}")
        if self.lrc_n > self.lrc_blocks:
            raise ValueError(
                f"HiLIFConfig: lrc_n={self.lrc_n} exceeds the {self.lrc_blocks} blocks of size "
                f"{self.lrc_k} stride {self.lrc_s} on a {self.lrc_size}x{self.lrc_size} map"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HiLIFConfig.dropout={self.dropout}: must be in [0, 1)")

    # ------------------------------------------------------------------ presets and (de)serialisation
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "HiLIFConfig":
        """Named configurations: "paper" (b4, 224, ImageNet weights), "demo" (CPU quick start), "tiny" (unit tests)."""
        presets: dict[str, dict[str, Any]] = {
            "paper": dict(backbone="efficientnet_b4", img_size=224, pretrained=True),
            # A CPU-sized model for the quick start: small enough to train in minutes on a laptop's cores.
            "demo": dict(backbone="efficientnet_b0", img_size=96, pretrained=False),
            # Fastest configuration that still exercises every module (cut A is 16x16, patch sizes 8/4/2/1).
            "tiny": dict(backbone="efficientnet_b0", img_size=64, pretrained=False),
        }
        if name not in presets:
            raise ValueError(f"unknown HiLIF preset {name!r}: choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HiLIFConfig":
        """Inverse of `to_dict`; unknown keys raise ValueError (a checkpoint from another version, a typo)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"HiLIFConfig.from_dict: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)


__all__ = ["HiLIFConfig", "derive_patch_sizes", "DFTMAttention", "LEMMode", "DCTFormulation", "LRCLoss"]

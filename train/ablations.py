"""Named ablation presets: one `hilif-train --ablation NAME` per row of the paper's Tables VI-X.

A preset fixes every model switch of `HiLIFConfig` that an ablation table varies (the others at the paper's
values) and whether the row has the stage-2 constraint loss (with its K, S, N and variant). Rows without the
constraint loss are the best stage-1 model, so their presets train stage 1 only; a full two-stage run's
``stage1/best.pt`` is the same thing and fills those rows too (`hilif.train.tables` matches runs to rows by their
settings, not by name).

Conflicts: an explicit option that contradicts the preset (``--ablation ld-k3s3n1 --lrc-n 8``, ``--lambda-d 0``
with a constraint-loss row, ``--stage 2`` with a stage-1 row) is an error, because the run would no longer be the
row it names.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from hilif.train.config import TrainConfig

if TYPE_CHECKING:
    from hilif.model import HiLIFConfig

#: Every HiLIFConfig field an ablation table varies. A preset starts from their defaults (the paper's model), so that
#: a row means the same model whatever the base config held.
SWITCHES = (
    "dftm",
    "self_attention",
    "dftm_attention",
    "lem_mode",
    "multi_patch",
    "patch_sizes",
    "single_patch_size",
    "ddafm",
    "msca",
    "dct_learnable_filter",
)
#: The constraint loss's settings; their HiLIFConfig defaults are the paper's (section V-B).
LRC_SETTINGS = ("lrc_k", "lrc_s", "lrc_n", "lrc_loss")


def field_defaults(cls: type, names: tuple[str, ...]) -> dict[str, Any]:
    """The defaults of a dataclass's fields `names`."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return {name: defaults[name] for name in names}


@functools.cache
def model_defaults(names: tuple[str, ...]) -> dict[str, Any]:
    """HiLIFConfig's defaults of the fields `names` (imported here: the model package loads torch)."""
    from hilif.model.config import HiLIFConfig

    return field_defaults(HiLIFConfig, names)


#: The paper's loss weight (eq. 29), TrainConfig's default; rows with the constraint loss are defined at it.
PAPER_LAMBDA_D: float = field_defaults(TrainConfig, ("lambda_d",))["lambda_d"]


class AblationError(ValueError):
    """Unknown preset, or options that contradict it."""


@dataclass(frozen=True)
class Ablation:
    """One trainable configuration and the paper rows it produces."""

    name: str
    rows: tuple[tuple[str, str], ...]  # (table, row label as printed in the paper)
    reason: str  # what the row tests, in one line
    switches: Mapping[str, Any] = field(default_factory=dict)  # HiLIFConfig fields, over the SWITCHES' defaults
    single_patch_div: int | None = None  # Table VIII: one patch size for all groups = cut-A side / div (28/14/7 at 224)
    constraint_loss: bool = False  # stage 2 with L_d (lambda 0.5); False = the best stage-1 model
    lrc: Mapping[str, Any] = field(default_factory=dict)  # LRC_SETTINGS over their defaults

    def model_overrides(self, base: "HiLIFConfig") -> dict[str, Any]:
        """The HiLIFConfig fields this row sets, for a base config (its backbone and input size)."""
        over = {**model_defaults(SWITCHES), **self.switches}
        if self.single_patch_div:
            from hilif.model.config import _closest_divisor

            side = base.cut_a_size
            over.update(multi_patch=False, single_patch_size=_closest_divisor(side, side / self.single_patch_div))
        if self.constraint_loss:
            over.update(self.lrc_settings)
        return over

    @property
    def lrc_settings(self) -> dict[str, Any]:
        return {**model_defaults(LRC_SETTINGS), **self.lrc} if self.constraint_loss else {}

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.switches.items()]
        if self.single_patch_div:
            parts.append(f"multi_patch=False, single_patch_size=side/{self.single_patch_div}")
        if self.constraint_loss:
            lrc = self.lrc_settings
            loss = (
                "Li et al. max pair"
                if lrc["lrc_loss"] == "li"
                else f"K={lrc['lrc_k']} S={lrc['lrc_s']} N={lrc['lrc_n']}"
            )
            parts.append(f"stage 2 with L_d ({loss}, lambda {PAPER_LAMBDA_D})")
        else:
            parts.append("stage 1 only")
        return ", ".join(parts) or "the paper's model"


def _ld(k: int, s: int, n: int) -> Ablation:
    label = f"Model + LRCL (Ours, K = {k}, S = {s}, N = {n})"
    return Ablation(
        f"ld-k{k}s{s}n{n}",
        (("X", label), ("XI", label)),
        f"the improved constraint loss with {k}x{k} blocks, stride {s}, top {n}",
        constraint_loss=True,
        lrc=dict(lrc_k=k, lrc_s=s, lrc_n=n),
    )


_PRESETS: list[Ablation] = [
    Ablation(
        "eff",
        (("VI", "Efficient Net"), ("VII", "Efficient Net")),
        "the two backbones and the head alone (no DFTM, no DDAFM, no constraint loss)",
        switches=dict(dftm=False, ddafm=False),
    ),
    Ablation(
        "eff+dftm", (("VI", "Eff + DFTM"),), "DFTM's frequency-guided attention alone", switches=dict(ddafm=False)
    ),
    Ablation("eff+ddafm", (("VI", "Eff + DDAFM"),), "the RGB/noise fusion alone", switches=dict(dftm=False)),
    Ablation(
        "eff+dftm+ddafm",
        (
            ("VI", "Eff + DFTM + DDAFM"),
            ("VII", "Efficient Net + FSFM + FEM"),
            ("VIII", "Local Enhance, Mutil-Size"),
            ("IX", "Mix Block + MSCA"),
            ("X", "Model"),
            ("XI", "Model"),
        ),
        "the whole model before the constraint loss (stage 1)",
    ),
    Ablation(
        "eff+dftm+ddafm+ld",
        (
            ("VI", "Eff + DFTM + DDAFM + Constraint Loss"),
            ("X", "Model + LRCL (Ours, K = 5, S = 2, N = 8)"),
            ("XI", "Model + LRCL (Ours, K = 5, S = 2, N = 8)"),
            ("I", "Ours"),
            ("II", "Ours"),
            ("III", "Ours"),
            ("IV", "Ours"),
            ("V", "Ours"),
        ),
        "the paper's model: stage 2 adds L_d (K 5, S 2, N 8)",
        constraint_loss=True,
    ),
    Ablation(
        "eff+sa",
        (("VII", "Efficient Net + Self-Attention"),),
        "a plain transformer self-attention block in DFTM's place: content attention dilutes artifacts",
        switches=dict(dftm=False, self_attention=True),
    ),
    Ablation(
        "eff+fsfm",
        (("VII", "Efficient Net + FSFM"),),
        "DFTM with the FSFM branch only (K, V from F)",
        switches=dict(dftm_attention="fsfm"),
    ),
    Ablation(
        "eff+fem",
        (("VII", "Efficient Net + FEM"),),
        "DFTM with the FEM branch only (Q, K from F_H)",
        switches=dict(dftm_attention="fem"),
    ),
    *[
        Ablation(
            f"local-{p}",
            (("VIII", f"Local Enhance, {p} x {p}"),),
            f"LEM with one patch size for all groups ({p} at 224)",
            single_patch_div=d,
        )
        for p, d in ((28, 2), (14, 4), (7, 8))
    ],
    *[
        Ablation(
            f"tokenmix-{p}",
            (("VIII", f"Token Mix, {p} x {p}"),),
            f"M2TR token mix (attention between patches), one patch size ({p} at 224)",
            switches=dict(lem_mode="token_mix"),
            single_patch_div=d,
        )
        for p, d in ((28, 2), (14, 4), (7, 8))
    ],
    Ablation(
        "tokenmix-multi",
        (("VIII", "Token Mix, Mutil-Size"),),
        "M2TR token mix with the four patch sizes",
        switches=dict(lem_mode="token_mix"),
    ),
    Ablation(
        "mixblock", (("IX", "Mix Block"),), "DDAFM without its multi-scale channel attention", switches=dict(msca=False)
    ),
    Ablation(
        "lrcl-li",
        (("X", "Model + LRCL"), ("XI", "Model + LRCL")),
        "Li et al.'s original constraint: the two most dissimilar blocks",
        constraint_loss=True,
        lrc=dict(lrc_loss="li"),
    ),
    *[_ld(3, 3, n) for n in (1, 4, 8, 16)],
    _ld(5, 2, 1),
    _ld(5, 2, 4),
    _ld(5, 2, 16),
    Ablation(
        "fixed-filter",
        (),
        "eq. 1 without the learnable f_w (the authors' released code); no paper row",
        switches=dict(dct_learnable_filter=False),
        constraint_loss=True,
    ),
]
ABLATIONS: dict[str, Ablation] = {a.name: a for a in _PRESETS}
#: Other names of a preset: K = 5, S = 2, N = 8 is the paper's model, named after its Table VI row.
ALIASES: dict[str, str] = {"ld-k5s2n8": "eff+dftm+ddafm+ld"}


def get_ablation(name: str) -> Ablation:
    name = ALIASES.get(name, name)
    if name not in ABLATIONS:
        raise AblationError(
            f"unknown --ablation {name!r}; `hilif-train --print-ablations` lists them: "
            f"{', '.join([*ABLATIONS, *ALIASES])}"
        )
    return ABLATIONS[name]


def apply_to_train_config(cfg: "TrainConfig") -> None:
    """Fill the TrainConfig fields a preset decides (L_d's K/S/N, stage 1 only for rows without L_d); raise
    AblationError when an explicit option contradicts the row."""
    ab = get_ablation(cfg.ablation)
    cfg.ablation = ab.name  # an alias is saved under the preset's name
    where = f"--ablation {ab.name}"
    if ab.constraint_loss:
        for key in ("lrc_k", "lrc_s", "lrc_n"):
            want, got = ab.lrc_settings[key], getattr(cfg, key)
            if got is not None and got != want:
                raise AblationError(
                    f"{where} trains {key}={want}; --{key.replace('_', '-')} {got} contradicts it (drop one of them)"
                )
            setattr(cfg, key, want)
        if cfg.lambda_d != PAPER_LAMBDA_D:
            raise AblationError(
                f"{where} is a row with the paper's lambda_d {PAPER_LAMBDA_D}; --lambda-d "
                f"{cfg.lambda_d} contradicts it (drop one of them)"
            )
    else:
        given = [f"--{k.replace('_', '-')}" for k in ("lrc_k", "lrc_s", "lrc_n") if getattr(cfg, k) is not None]
        if given:
            raise AblationError(f"{where} is a row without the constraint loss; {', '.join(given)} would not be used")
        if cfg.stage == "2":
            raise AblationError(f"{where} is the best stage-1 model (no constraint loss); --stage 2 contradicts it")
        cfg.stage = "1"


def model_config_for(ablation: str, base: "HiLIFConfig") -> "HiLIFConfig":
    """``base`` (a preset's model, with a run's input size etc.) turned into the row's model."""
    return dataclasses.replace(base, **get_ablation(ablation).model_overrides(base))


def listing() -> list[tuple[str, str, str]]:
    """(name, tables and rows, settings) for every preset, for --print-ablations."""
    out = []
    for ab in ABLATIONS.values():
        rows = "; ".join(f"{t}: {r}" for t, r in ab.rows) or "(no paper row)"
        names = ", ".join([ab.name, *[a for a, n in ALIASES.items() if n == ab.name]])
        out.append((names, rows, f"{ab.describe()} - {ab.reason}"))
    return out

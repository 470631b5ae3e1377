"""HiLIFConfig: presets, derived patch sizes, validation, JSON round trip."""

from __future__ import annotations

import json

import pytest

from hilif.model import HiLIFConfig
from hilif.model.config import derive_patch_sizes


@pytest.mark.parametrize(
    "img_size,expected", [(224, (28, 14, 7, 4)), (256, (32, 16, 8, 4)), (320, (40, 20, 10, 5)), (64, (8, 4, 2, 1))]
)
def test_patch_sizes_follow_the_input_size(img_size: int, expected: tuple[int, ...]) -> None:
    cfg = HiLIFConfig(img_size=img_size, pretrained=False)
    assert cfg.lem_patch_sizes == expected
    assert all((img_size // 4) % p == 0 for p in cfg.lem_patch_sizes)


def test_single_patch_size_switch() -> None:
    cfg = HiLIFConfig(multi_patch=False, pretrained=False)
    assert cfg.lem_patch_sizes == (7, 7, 7, 7)
    assert derive_patch_sizes(56) == (28, 14, 7, 4)


def test_bad_patch_size_fails_naming_the_constraint() -> None:
    with pytest.raises(ValueError, match="must divide the 56x56"):
        HiLIFConfig(patch_sizes=(28, 14, 7, 3))


def test_other_constraints_are_named() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        HiLIFConfig(img_size=200)
    with pytest.raises(ValueError, match="lrc_n=30 exceeds the 25 blocks"):
        HiLIFConfig(lrc_n=30)
    with pytest.raises(ValueError, match="dftm_attention"):
        HiLIFConfig(dftm_attention="spatial")  # type: ignore[arg-type]


def test_presets() -> None:
    paper = HiLIFConfig.preset("paper")
    assert (paper.backbone, paper.img_size, paper.pretrained) == ("efficientnet_b4", 224, True)
    for name in ("demo", "tiny"):
        cfg = HiLIFConfig.preset(name)
        assert cfg.pretrained is False and cfg.img_size < 224
    assert HiLIFConfig.preset("tiny", dropout=0.1).dropout == 0.1
    with pytest.raises(ValueError, match="unknown HiLIF preset"):
        HiLIFConfig.preset("huge")


def test_dict_round_trip_through_json_and_unknown_keys() -> None:
    cfg = HiLIFConfig(patch_sizes=(28, 14, 7, 7), lem_mode="token_mix", msca=False, pretrained=False)
    again = HiLIFConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    d = cfg.to_dict()
    d["lrc_lambda"] = 0.5
    with pytest.raises(ValueError, match=r"unknown keys \['lrc_lambda'\]"):
        HiLIFConfig.from_dict(d)

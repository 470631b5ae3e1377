"""The assembled HiLIF model: shapes at every cut, gradients, ablation switches, weights, autocast, compile."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
import torch.nn.functional as F

from hilif.model import BackboneWeightsError, HiLIFConfig, LocalRelationLoss, build_model
from hilif.model.ddafm import MixBlock, MultiScaleChannelAttention
from hilif.model.dftm import DFTM, FrequencyEnhance, FrequencySpatialFusion, LocalEnhance
from hilif.model.profile import profile_model

TINY = HiLIFConfig.preset("tiny")


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY)


def test_shapes_at_every_cut_tiny(tiny_model) -> None:
    x = torch.randn(2, 3, 64, 64)
    r, n, levels = tiny_model.forward_features(x)
    expected = {"a": (24, 16, 16), "b": (80, 4, 4), "c": (112, 4, 4)}  # efficientnet_b0 at 64
    for k, shape in expected.items():
        assert levels[k][0].shape == (2, *shape) and levels[k][1].shape == (2, *shape)
    assert r.shape == n.shape == (2, 1280, 2, 2)
    logits, f_all = tiny_model(x, return_lrc=True)
    assert logits.shape == (2, 2)
    assert f_all.shape == (2, 3 * TINY.lrc_channels, 14, 14)
    assert tiny_model(x).shape == (2, 2)


def test_paper_shapes_at_224_match_the_design_table() -> None:
    model = build_model(HiLIFConfig.preset("paper", pretrained=False)).eval()
    assert model.rgb.channels == {"a": 32, "b": 112, "c": 160, "d": 1792}
    assert model.dftm.fem.lem.patch_sizes == (28, 14, 7, 4)
    with torch.no_grad():
        r, n, levels = model.forward_features(torch.randn(1, 3, 224, 224))
    assert [tuple(levels[k][0].shape[1:]) for k in "abc"] == [(32, 56, 56), (112, 14, 14), (160, 14, 14)]
    assert tuple(r.shape[1:]) == tuple(n.shape[1:]) == (1792, 7, 7)
    assert model.dftm.coarse_sa.down(levels["a"][0]).shape[-2:] == (8, 8)
    # the two streams have separate weights
    assert model.rgb.net.conv_stem.weight.data_ptr() != model.noise.net.conv_stem.weight.data_ptr()


def _grad_step(model: torch.nn.Module) -> list[str]:
    """One CE + L_d backward; the names of the parameters that got no (or an all-zero) gradient."""
    model.zero_grad(set_to_none=True)
    x = torch.randn(4, 3, 64, 64)
    y = torch.tensor([0, 1, 0, 1])
    logits, f_all = model(x, return_lrc=True)
    loss = F.cross_entropy(logits, y) + 0.5 * LocalRelationLoss()(f_all, y)
    loss.backward()
    return [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]


def test_gradients_reach_every_trainable_parameter() -> None:
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(TINY, dropout=0.0)).train()
    # At init MixBlock's gate 2*sigmoid(gamma)-1 is 0 (identity), so only gamma itself can get a gradient through
    # the cross-stream branch: its queries, keys, depthwise convs and BN weights get exactly zero.
    missing = _grad_step(model)
    assert model.dftm.highpass.f_w.grad.abs().sum() > 0
    assert all(
        model.ddafm[k].mix.rgb_gamma.grad.abs() > 0 and model.ddafm[k].mix.noise_gamma.grad.abs() > 0
        for k in ("b", "c")
    )
    assert missing and all(".mix." in name and "gamma" not in name for name in missing)
    # once the gates have moved (one optimiser step does that), every parameter gets a gradient
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert _grad_step(model) == []


def test_lrc_parameters_are_exactly_the_projection_parameters(tiny_model) -> None:
    lrc = {id(p) for p in tiny_model.lrc_parameters()}
    # 3 levels x (rgb weight + bias, noise weight)
    assert lrc == {id(p) for p in tiny_model.lrc.parameters()} and len(lrc) == 9
    # stage 1: without return_lrc these parameters take no part in the forward
    for p in tiny_model.parameters():
        p.grad = None
    tiny_model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in tiny_model.lrc_parameters())


def _modules(model: torch.nn.Module, cls: type) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, cls)]


def test_each_ablation_switch_changes_the_module_graph_as_named() -> None:
    x = torch.randn(2, 3, 64, 64)
    full = build_model(TINY)
    assert len(_modules(full, DFTM)) == 1 and len(_modules(full, MixBlock)) == 2
    assert len(_modules(full, MultiScaleChannelAttention)) == 2

    no_dftm = build_model(dataclasses.replace(TINY, dftm=False))
    assert _modules(no_dftm, DFTM) == [] and "dftm" not in no_dftm.gradcam_layers()

    fem = build_model(dataclasses.replace(TINY, dftm_attention="fem"))
    assert fem.dftm.fsfm is None and _modules(fem, FrequencySpatialFusion) == []
    assert isinstance(fem.dftm.fem, FrequencyEnhance) and fem.dftm.fuse[0].in_channels == 24
    fsfm = build_model(dataclasses.replace(TINY, dftm_attention="fsfm"))
    assert fsfm.dftm.fem is None and isinstance(fsfm.dftm.fsfm, FrequencySpatialFusion)
    assert full.dftm.fuse[0].in_channels == 48

    mix = build_model(dataclasses.replace(TINY, lem_mode="token_mix"))
    assert {m.mode for m in _modules(mix, LocalEnhance)} == {"token_mix"}
    assert {m.mode for m in _modules(full, LocalEnhance)} == {"local"}

    single = build_model(dataclasses.replace(TINY, multi_patch=False))
    assert {m.patch_sizes for m in _modules(single, LocalEnhance)} == {(2, 2, 2, 2)}
    assert {m.patch_sizes for m in _modules(full, LocalEnhance)} == {(8, 4, 2, 1)}

    no_ddafm = build_model(dataclasses.replace(TINY, ddafm=False))
    assert _modules(no_ddafm, MixBlock) == [] and no_ddafm.ddafm is None
    no_msca = build_model(dataclasses.replace(TINY, msca=False))
    assert len(_modules(no_msca, MixBlock)) == 2 and _modules(no_msca, MultiScaleChannelAttention) == []

    for model in (no_dftm, fem, fsfm, mix, single, no_ddafm, no_msca):
        logits, f_all = model(x, return_lrc=True)
        assert logits.shape == (2, 2) and torch.isfinite(f_all).all()


def test_no_ddafm_streams_run_independently() -> None:
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(TINY, ddafm=False)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        r1, _, _ = model.forward_features(x)
        model.noise.net.conv_stem.weight.mul_(3.0)
        r2, _, _ = model.forward_features(x)
    assert torch.equal(r1, r2)


def test_gradcam_layers_output_feature_maps(tiny_model) -> None:
    layers = tiny_model.gradcam_layers()
    assert set(layers) == {"dftm", "rgb", "noise"}
    seen = {}
    handles = [m.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o.shape)) for k, m in layers.items()]
    tiny_model(torch.randn(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert seen["dftm"] == (1, 24, 16, 16) and seen["rgb"] == seen["noise"] == (1, 1280, 2, 2)


def test_wrong_input_size_is_rejected(tiny_model) -> None:
    with pytest.raises(ValueError, match="built for 64x64"):
        tiny_model(torch.randn(1, 3, 96, 96))


def test_bf16_autocast_and_channels_last_forward_backward() -> None:
    torch.manual_seed(0)
    model = build_model(TINY).train().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 64, 64).to(memory_format=torch.channels_last)
    y = torch.tensor([0, 1, 0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, f_all = model(x, return_lrc=True)
        loss = F.cross_entropy(logits.float(), y) + 0.5 * LocalRelationLoss()(f_all, y)
    assert logits.dtype == torch.bfloat16
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.dftm.highpass.f_w.grad.dtype == torch.float32


def test_dftm_and_model_trace_under_torch_compile_without_graph_breaks() -> None:
    torch._dynamo.reset()
    model = build_model(TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


def test_local_backbone_weights_file_is_loaded(tmp_path) -> None:
    torch.manual_seed(1)
    ref = timm.create_model("efficientnet_b0", pretrained=False)
    path = tmp_path / "b0.pth"
    torch.save(ref.state_dict(), path)
    model = build_model(dataclasses.replace(TINY, pretrained=True, backbone_weights=str(path)))
    for stream in (model.rgb, model.noise):
        assert torch.equal(stream.net.conv_stem.weight, ref.conv_stem.weight)
        assert torch.equal(stream.net.blocks[3][0].conv_pw.weight, ref.blocks[3][0].conv_pw.weight)


def test_missing_or_wrong_weights_file_names_the_file(tmp_path) -> None:
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        build_model(dataclasses.replace(TINY, pretrained=True, backbone_weights=str(tmp_path / "nope.pth")))
    bad = tmp_path / "b4.pth"
    torch.save({"conv_stem.weight": torch.zeros(48, 3, 3, 3)}, bad)
    with pytest.raises(BackboneWeightsError, match="b4.pth does not fit"):
        build_model(dataclasses.replace(TINY, pretrained=True, backbone_weights=str(bad)))


def test_offline_hub_error_names_the_ways_out(monkeypatch) -> None:
    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=pretrained, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(BackboneWeightsError) as err:
        build_model(dataclasses.replace(TINY, pretrained=True))
    msg = str(err.value)
    assert "--backbone-weights" in msg and "pretrained=False" in msg and "\n" not in msg


def test_profile_rows_add_up_and_match_the_model() -> None:
    prof = profile_model(TINY)
    names = [r.name for r in prof.rows]
    assert names == ["rgb backbone", "noise backbone", "srm", "dftm", "ddafm.b", "ddafm.c", "head", "lrc"]
    assert sum(r.flops for r in prof.rows) == prof.total_flops
    assert all(r.flops > 0 for r in prof.rows)
    model = build_model(TINY)
    assert prof.total_params == sum(p.numel() for p in model.parameters())
    assert sum(r.params for r in prof.rows) == prof.total_params
    assert prof.macs == prof.total_flops // 2 and prof.inference_flops < prof.total_flops
    # FLOPs grow with the input size
    assert profile_model(TINY, input_size=96).total_flops > prof.total_flops


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_every_cut_keeps_the_input_memory_format(fmt: torch.memory_format) -> None:
    # A layout flip inside DFTM or DDAFM silently drags the rest of both backbones into the other layout (seen:
    # contiguous input -> channels_last from the coarse SA on, with a 3-4x slower depthwise backward on CPU).
    model = build_model(TINY).to(memory_format=fmt)
    r, n, levels = model.forward_features(torch.randn(2, 3, 64, 64).contiguous(memory_format=fmt))
    for k, (a, b) in levels.items():
        assert a.is_contiguous(memory_format=fmt) and b.is_contiguous(memory_format=fmt), k
    assert r.is_contiguous(memory_format=fmt) and n.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("size", [96, 256, 320])
def test_other_input_sizes_build_and_run(size: int) -> None:
    cfg = dataclasses.replace(TINY, img_size=size)
    model = build_model(cfg).eval()
    with torch.no_grad():
        logits, f_all = model(torch.randn(1, 3, size, size), return_lrc=True)
    assert logits.shape == (1, 2) and f_all.shape[-2:] == (14, 14)
    assert model.dftm.fem.lem.patch_sizes == cfg.lem_patch_sizes


@pytest.mark.parametrize("name", ["mobilenetv2_050", "tf_efficientnetv2_b0"])
def test_other_efficientnet_class_backbones_are_cut_at_strides_4_16_16(name: str) -> None:
    cfg = dataclasses.replace(TINY, backbone=name)
    model = build_model(cfg).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _, _, levels = model.forward_features(x)
        logits = model(x)
    sides = {k: a.shape[-1] for k, (a, _) in levels.items()}
    assert sides["a"] == 64 // 4 and sides["b"] == sides["c"] == 64 // 16, sides
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_backbone_outside_the_efficientnet_class_is_named() -> None:
    with pytest.raises(ValueError, match="resnet18.*EfficientNet class"):
        build_model(dataclasses.replace(TINY, backbone="resnet18"))

"""Self-blended images (train/sbi.py): the blend, the mask, determinism, the five-point hull."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hilif.train import sbi


@pytest.fixture(scope="module")
def face() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(aligned 256x256 RGB face, its dlib 68 points, its five points), both in aligned pixels."""
    import cv2
    import insightface

    from hilif.pipeline.align import align_face, similarity_matrix, to_aligned
    from hilif.pipeline.detectors import DlibDetector

    img = cv2.imread(str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"))
    crop = cv2.resize(img[238:486, 390:639], (200, 200), interpolation=cv2.INTER_AREA)
    frame = cv2.copyMakeBorder(crop, 60, 60, 60, 60, cv2.BORDER_REPLICATE)[:, :, ::-1].copy()
    (d,) = DlibDetector().detect(frame)
    m = similarity_matrix(d.landmarks)
    return align_face(frame, d.landmarks), to_aligned(d.dense, m), to_aligned(d.landmarks, m)


@pytest.mark.parametrize("points", ["dense", "five"])
@pytest.mark.parametrize("seed", range(6))
def test_blend_is_the_source_where_m_is_1_and_the_target_where_m_is_0(face, points, seed):
    img, dense, five = face
    lm = dense if points == "dense" else five
    full = sbi.SBIConfig(blend_ratios=(1.0,), hull_types=("face",))  # a wide region: thousands of pixels at M = 1
    p = sbi.generate(img, lm, np.random.default_rng(seed), full)
    one, zero = p.mask == 1.0, p.mask == 0.0
    assert one.sum() > 1000 and zero.sum() > 1000
    assert np.array_equal(p.fake[one], p.source[one])
    assert np.array_equal(p.fake[zero], p.target[zero])
    # and in between the convex combination, rounded
    want = np.rint(p.mask[..., None] * p.source + (1 - p.mask[..., None]) * p.target.astype(np.float64))
    assert np.abs(p.fake.astype(np.float64) - want).max() <= 1
    # the source and the target differ (the frequency change is always applied), so the fake differs from the real
    assert (p.fake != img).any(axis=2)[p.mask > 0.5].mean() > 0.2


def test_blend_ratio_scales_the_mask(face):
    img, dense, _ = face
    for seed in range(8):
        p = sbi.generate(img, dense, np.random.default_rng(seed))
        assert p.ratio in (0.25, 0.5, 0.75, 1.0)
        assert p.mask.max() == pytest.approx(p.ratio, abs=1e-6) and p.mask.min() >= 0.0


@pytest.mark.parametrize("points", ["dense", "five"])
def test_mask_lies_inside_the_face_hull_before_blurring(face, points):
    img, dense, five = face
    lm = dense if points == "dense" else five
    hull = sbi.hull_mask(lm, img.shape[:2])
    for seed in range(10):
        p = sbi.generate(img, lm, np.random.default_rng(seed), sbi.SBIConfig(hull_types=("face",)))
        assert np.array_equal(p.hull, hull)
        assert not (p.hard & (1 - hull)).any(), "deformed mask leaves the hull"
        assert p.hard.sum() > 0.4 * hull.sum()  # deformed and eroded, not gone
        # after blurring it spreads at most about one kernel beyond the hull
        import cv2

        grown = cv2.dilate(hull, np.ones((27, 27), np.uint8))
        assert p.mask[grown == 0].max() == 0.0


def test_mask_regions_nest_and_the_mask_stays_inside_the_drawn_one(face):
    """components (the parts) lie inside the face hull, which lies inside the extended (forehead) hull; whatever region
    is drawn, the hard mask lies inside it and the blurred mask spreads at most a kernel beyond; the default mix
    draws all three; five points have only the face hull."""
    import cv2

    img, dense, five = face
    shape = img.shape[:2]
    regions = {k: sbi.region_mask(dense, shape, k) for k in sbi.HULL_TYPES}
    face_, ext, comp = (regions[k].astype(bool) for k in ("face", "extended", "components"))
    assert not (comp & ~face_).any() and not (face_ & ~ext).any()
    assert 0.5 * face_.sum() < comp.sum() < face_.sum() and ext.sum() > 1.1 * face_.sum()
    # the extension is the forehead: the added pixels lie above the eyes
    added_rows = np.nonzero(ext & ~face_)[0]
    assert np.median(added_rows) < dense[36:48, 1].mean()
    drawn = set()
    for seed in range(24):
        p = sbi.generate(img, dense, np.random.default_rng(seed))
        drawn.add(p.region)
        assert np.array_equal(p.hull, regions[p.region])
        assert not (p.hard & (1 - p.hull)).any(), f"{p.region}: deformed mask leaves the region"
        assert p.hard.any()
        assert p.mask[cv2.dilate(p.hull, np.ones((27, 27), np.uint8)) == 0].max() == 0.0
    assert drawn == set(sbi.HULL_TYPES)
    for seed in range(6):
        p = sbi.generate(img, five, np.random.default_rng(seed), sbi.SBIConfig(hull_types=("components",)))
        assert p.region == "face" and np.array_equal(p.hull, sbi.hull_mask(five, shape))
    with pytest.raises(ValueError, match="mask region"):
        sbi.region_mask(dense, shape, "ears")


def test_scaled_config_scales_pixel_ranges_only():
    base = sbi.SBIConfig()
    half = base.scaled(110 / 256)
    assert half.elastic_alpha == pytest.approx(50 * 110 / 256) and half.blur_sigma[1] == pytest.approx(45 * 110 / 256)
    assert all(k % 2 == 1 and k >= 3 for k in half.blur_kernel) and half.blur_kernel == (3, 11)
    same = ("blend_ratios", "hull_types", "downscale_factors", "shift_x", "scale", "p_rgb_shift", "size")
    assert all(getattr(half, f) == getattr(base, f) for f in same)
    assert base.scaled(1.0) == base


def _edge_energy(img: np.ndarray, where: np.ndarray) -> float:
    import cv2

    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F))[where].mean())


def test_input_size_blend_keeps_the_downscale_trace_that_a_crop_size_blend_loses(face):
    """A 2x down-scale made on the 256-px crop is erased when the face is shrunk to a small input; made at the input
    scale it survives: inside the mask the fake loses much more of the real's fine detail."""
    import cv2

    img, dense, _ = face
    side = 110  # face_resize(96): the demo's input crop is cut from this side
    cfg = dict(
        blend_ratios=(1.0,), hull_types=("face",), p_downscale=1.0, downscale_factors=(2,),
        p_rgb_shift=0.0, p_hsv_shift=0.0, p_brightness_contrast=0.0, scale=(1.0, 1.0), shift_x=0.0, shift_y=0.0,
    )  # fmt: skip
    real = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    inner = cv2.erode(sbi.hull_mask((dense + 0.5) * side / 256 - 0.5, (side, side)), np.ones((9, 9))) > 0
    loss = {}
    for size in sbi.SBI_SIZES:
        losses = []
        for seed in range(6):
            fake = sbi.self_blend_sized(img, dense, side, np.random.default_rng(seed), sbi.SBIConfig(size=size, **cfg))
            if fake.shape[0] != side:
                fake = cv2.resize(fake, (side, side), interpolation=cv2.INTER_AREA)
            # only the copy that got the change is blurred: the source or the target, each half of the time
            losses.append(abs(1 - _edge_energy(fake, inner) / _edge_energy(real, inner)))
        loss[size] = max(losses)
    assert loss["input"] > 0.25 and loss["crop"] < 0.6 * loss["input"], loss  # measured: 0.36 and 0.14


def test_frequency_probability_skips_the_change_and_keeps_the_default_stream(face):
    """p_frequency < 1 leaves some changed copies without a frequency change, about the asked share; at 1 (the
    default) it draws nothing more, so the default generator's fakes are what they were before the option existed."""
    img, _, _ = face
    for p, lo, hi in ((0.0, 40, 40), (0.5, 12, 28), (1.0, 0, 0)):
        cfg = sbi.SBIConfig(p_frequency=p)
        same = sum(np.array_equal(sbi.frequency_transform(img, cfg, np.random.default_rng(s)), img) for s in range(40))
        assert lo <= same <= hi, (p, same)
    cfg = sbi.SBIConfig()
    for seed in range(5):  # p = 1 takes exactly the draws of the generator before the option: the next draw agrees
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        sbi.frequency_transform(img, cfg, a)
        if b.random() < cfg.p_downscale:  # the pre-option draw order: down-scale factor, else sharpen's two ranges
            b.choice(cfg.downscale_factors)
        else:
            b.uniform(*cfg.sharpen_alpha), b.uniform(*cfg.sharpen_lightness)
        assert a.random() == b.random()


def test_same_seed_same_image_other_seed_other_image(face):
    img, dense, _ = face
    a = sbi.self_blend(img, dense, np.random.default_rng(7))
    b = sbi.self_blend(img, dense, np.random.default_rng(7))
    c = sbi.self_blend(img, dense, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.uint8 and a[0].shape == img.shape and a[1].shape == img.shape[:2]


def test_five_point_hull_covers_the_inner_face_of_the_dense_hull(face):
    """The five-point hull is coarser, but mostly the same region as dlib's 68-point hull."""
    img, dense, five = face
    h68 = sbi.hull_mask(dense, img.shape[:2]).astype(bool)
    h5 = sbi.hull_mask(five, img.shape[:2]).astype(bool)
    assert (h5 & h68).sum() / h5.sum() > 0.8  # mostly inside the face outline
    assert (h5 & h68).sum() / h68.sum() > 0.6  # and covers most of it
    # the bare hull of the five points would not: it stops at the eyes and the mouth
    import cv2

    bare = np.zeros(img.shape[:2], np.uint8)
    cv2.fillConvexPoly(bare, cv2.convexHull(np.round(five).astype(np.int32)), 1)
    assert bare.sum() < 0.5 * h5.sum()


def test_source_target_generator_changes_exactly_one_copy(face):
    img, _, _ = face
    no_shift = sbi.SBIConfig(scale=(1.0, 1.0), shift_x=0.0, shift_y=0.0)
    for seed in range(8):
        src, tgt = sbi.source_target(img, no_shift, np.random.default_rng(seed))
        changed = [not np.array_equal(x, img) for x in (src, tgt)]
        assert sum(changed) == 1, seed


def test_sample_landmarks_v2_dense_then_aligned_five_then_v1_frame_points(face):
    from hilif.pipeline.align import similarity_matrix, to_aligned

    _, dense, five = face
    frame_pts = [[100.0, 120.0], [160.0, 118.0], [130.0, 150.0], [108.0, 180.0], [155.0, 179.0]]
    v1 = dict(landmarks=frame_pts)
    want = to_aligned(np.array(frame_pts), similarity_matrix(np.array(frame_pts)))
    assert np.allclose(sbi.sample_landmarks(v1), want)
    assert np.allclose(sbi.sample_landmarks(dict(v1, aligned_landmarks=five.tolist())), five)
    both = dict(v1, aligned_landmarks=five.tolist(), dense_landmarks=dense.tolist())
    assert np.allclose(sbi.sample_landmarks(both), dense)


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(blend_ratios=(0.0, 1.0)), "blend ratios"),
        (dict(blend_ratios=()), "blend ratios"),
        (dict(blur_kernel=(4, 25)), "blur kernel"),
        (dict(p_rgb_shift=1.5), "p_rgb_shift"),
        (dict(blur_sigma=(0.0, 3.0)), "sigma"),
        (dict(hull_types=("face", "ears")), "mask regions"),
        (dict(hull_types=()), "mask regions"),
    ],
)
def test_bad_sbi_config_is_an_error(kw, msg):
    with pytest.raises(ValueError, match=msg):
        replace(sbi.SBIConfig(), **kw)


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--synth-fakes", "blend"], "--synth-fakes"),
        (["--synth-fakes", "sbi", "--synth-ratio", "0"], "--synth-ratio"),
        (["--synth-fakes", "sbi", "--synth-ratio", "1.5"], "--synth-ratio"),
        (["--train-methods", "none"], "--synth-fakes sbi"),
        (["--train-methods", "none", "--train-methods", "Deepfakes", "--synth-fakes", "sbi"], "--train-methods none"),
        (["--synth-fakes", "sbi", "--sbi-blend-ratios", "0.5,2"], "blend ratios"),
        (["--synth-fakes", "sbi", "--sbi-blend-ratios", "half"], "--sbi-blend-ratios"),
        (["--synth-fakes", "sbi", "--sbi-mask-blur", "4,25"], "blur kernel"),
        (["--synth-fakes", "sbi", "--sbi-mask-blur", "5"], "--sbi-mask-blur"),
        (["--synth-fakes", "sbi", "--sbi-regions", "face,ears"], "--sbi-regions"),
        (["--synth-fakes", "sbi", "--sbi-size", "half"], "--sbi-size"),
        (["--synth-fakes", "sbi", "--sbi-p-frequency", "1.5"], "--sbi-p-frequency"),
    ],
)
def test_bad_synth_options_are_one_line_errors_exit_2(tmp_path, args, msg):
    from typer.testing import CliRunner

    from hilif.train.cli import train_app

    res = CliRunner().invoke(
        train_app, ["--shards", str(tmp_path), "--preset", "tiny", "--out", str(tmp_path / "o"), *args]
    )
    assert res.exit_code == 2, res.output
    assert msg in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "o").exists()


def test_train_config_synth_defaults_and_sbi_config():
    from hilif.train.config import TrainConfig

    cfg = TrainConfig(preset="tiny")
    assert cfg.synth_fakes == "none" and cfg.dataset_fakes
    assert cfg.sbi_config() == sbi.SBIConfig()  # the options' defaults are the generator's (the SBI paper's)
    reals_only = TrainConfig(preset="tiny", train_methods=["none"], synth_fakes="sbi", sbi_mask_blur=[7, 15])
    assert not reals_only.dataset_fakes and reals_only.sbi_config().blur_kernel == (7, 15)
    assert TrainConfig(preset="tiny", sbi_regions=["components"]).sbi_config().hull_types == ("components",)


# --------------------------------------------------------------------------- in the training stream


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from shards_fixture import make_shards

    return make_shards(tmp_path_factory.mktemp("sbi_shards"))


def _stream(shards: Path, **kw):
    from hilif.train.data import BalancedTrainStream

    base = dict(steps=6, seed=3, synth="sbi")
    return BalancedTrainStream(shards, "train", 64, 8, **{**base, **kw})


def test_sbi_slots_are_fakes_made_from_the_paired_real(shards):
    """Every SBI slot holds a fake (label 1) of the real of its pair, the ratio of SBI slots is about R, seeded."""
    stream = _stream(shards, synth_ratio=0.5)
    batches = list(stream.batches())
    assert len(batches) == 6
    n_sbi = n_fake = 0
    for b in batches:
        for j in range(1, len(b["key"]), 2):  # slots real, fake, real, fake, ...
            assert b["label"][j] == 1 and b["label"][j - 1] == 0
            n_fake += 1
            if b["method"][j] == "SBI":
                n_sbi += 1
                assert b["key"][j] == b["key"][j - 1] + "_sbi"  # blended from the real it is paired with
                assert b["video"][j].endswith("/SBI")
    assert 0.2 < n_sbi / n_fake < 0.8
    again = list(_stream(shards, synth_ratio=0.5).batches())
    for a, b in zip(batches, again):
        assert torch.equal(a["image"], b["image"]) and a["key"] == b["key"]


def test_reals_only_stream_fills_every_fake_slot_with_sbi(shards):
    stream = _stream(shards, dataset_fakes=False, methods=())
    from hilif.train.data import natural_steps

    assert stream.counts[0] == stream.counts[1] == len(stream.index[0])
    assert natural_steps(*stream.counts, 8) == -(-stream.counts[0] // 4)  # the reals are the larger class
    for b in stream.batches():
        assert b["label"].tolist() == [0, 1] * 4
        assert set(b["method"][1::2]) == {"SBI"} and set(b["method"][0::2]) == {"real"}
        # the SBI is a changed copy of its paired real (differs somewhere), not a dataset fake
        assert all((b["image"][j] != b["image"][j - 1]).any() for j in range(1, 8, 2))


@pytest.mark.parametrize(
    "extra", [dict(synth_fakes="sbi", synth_ratio=0.5), dict(synth_fakes="sbi", train_methods=["none"])]
)
def test_synth_fakes_train_a_tiny_preset_for_a_step(shards, tmp_path, extra):
    from shards_fixture import tiny_train_config

    from hilif.train.trainer import train

    cfg = tiny_train_config(shards, tmp_path / "run", stage1_epochs=1, stage2_epochs=0, steps_per_epoch=1, **extra)
    results = train(cfg)
    assert results and results[0].stage == 1 and np.isfinite(results[0].best_auc)
    assert (tmp_path / "run" / "stage1" / "best.pt").is_file()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["synth_fakes"] == "sbi" and saved["train"]["train_methods"] == extra.get("train_methods", [])


def test_runs_saved_before_the_synth_options_stay_resumable():
    """A config.json written before --synth-fakes / --sbi-* existed matches a run with their defaults."""
    from hilif.train.checkpoint import identity_mismatch
    from hilif.train.config import TrainConfig

    cfg = TrainConfig(preset="tiny")
    old = {k: v for k, v in cfg.to_dict().items() if not k.startswith(("synth_", "sbi_"))}
    assert identity_mismatch(cfg.identity(), old) == []
    changed = TrainConfig(preset="tiny", synth_fakes="sbi", sbi_mask_blur=[7, 9])
    assert set(identity_mismatch(changed.identity(), old)) >= {"synth_fakes", "sbi_mask_blur"}
    # a self-blending run saved before --sbi-regions / --sbi-size drew every mask from the face hull, on the stored
    # crop: it resumes only with those
    sbi_run = TrainConfig(preset="tiny", synth_fakes="sbi")
    old_sbi = {k: v for k, v in sbi_run.to_dict().items() if k not in ("sbi_regions", "sbi_size")}
    assert identity_mismatch(sbi_run.identity(), old_sbi) == ["sbi_regions", "sbi_size"]
    face_only = TrainConfig(preset="tiny", synth_fakes="sbi", sbi_regions=["face"], sbi_size="crop")
    assert identity_mismatch(face_only.identity(), old_sbi) == []

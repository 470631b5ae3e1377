"""Shard format version 2: landmarks in aligned-face pixels, written by extract, read back (v1 and v2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hilif.pipeline import schema


def _meta(**kw) -> dict:
    d = dict(
        dataset="demo",
        split="train",
        label=0,
        method="real",
        quality="c23",
        video_id="000",
        frame_index=3,
        frame_count=10,
        fps=10.0,
        box=[1.0, 2.0, 50.0, 60.0],
        landmarks=[[10.0, 20.0], [30.0, 20.0], [20.0, 30.0], [12.0, 40.0], [28.0, 40.0]],
        detector="dlib",
        score=1.0,
    )
    d.update(kw)
    return d


def test_v2_landmarks_round_trip_and_v1_samples_still_read():
    rng = np.random.default_rng(0)
    dense = np.round(rng.uniform(0, 256, size=(68, 2)), 2).tolist()
    five = np.round(rng.uniform(0, 256, size=(5, 2)), 2).tolist()
    m = schema.SampleMeta(**_meta(aligned_landmarks=five, dense_landmarks=dense))
    back = schema.SampleMeta.from_json(m.to_json())
    assert back == m and back.schema == 2
    assert back.dense_landmarks == dense and back.aligned_landmarks == five
    v1 = _meta(schema=1)  # what a version-1 writer stored: no aligned / dense landmarks
    old = schema.SampleMeta.from_json(json.dumps(v1))
    assert old.schema == 1 and old.aligned_landmarks == [] and old.dense_landmarks == []
    assert old.landmarks == v1["landmarks"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("dense_landmarks", [[1.0, 2.0]] * 67),
        ("aligned_landmarks", [[1.0, 2.0]] * 4),
        ("dense_landmarks", [[1.0, 2.0, 3.0]] * 68),
    ],
)
def test_bad_landmark_fields_are_schema_errors(field, value):
    with pytest.raises(schema.SchemaError, match=field):
        schema.SampleMeta.from_json(json.dumps(_meta(**{field: value})))


def _face_image() -> np.ndarray:
    """One real face (RGB) from the photo insightface ships, on a plain border."""
    import cv2
    import insightface

    img = cv2.imread(str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"))
    face = cv2.resize(img[238:486, 390:639], (200, 200), interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(face, 60, 60, 60, 60, cv2.BORDER_REPLICATE)[:, :, ::-1].copy()


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> tuple[Path, list[tuple[schema.SampleMeta, np.ndarray]]]:
    """A one-video image-sequence dataset (wilddeepfake layout) extracted with dlib."""
    import cv2
    import webdataset as wds

    from hilif.pipeline.extract import ExtractConfig, run_extract

    tmp = tmp_path_factory.mktemp("lm")
    face = _face_image()
    root = tmp / "wdf"
    for i in range(3):
        p = root / "real_train" / "3" / "real" / "21" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), np.roll(face, 3 * i, axis=1)[:, :, ::-1])
    out = tmp / "out"
    res = run_extract(ExtractConfig(dataset="wilddeepfake", root=str(root), out=str(out), frames={"train": 3}))
    assert not res.failed
    got = []
    for s in wds.WebDataset(sorted(str(p) for p in out.rglob("*.tar")), shardshuffle=False, empty_check=False):
        img = cv2.imdecode(np.frombuffer(s["png"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
        got.append((schema.SampleMeta.from_json(s["json"]), img))
    assert len(got) == 3
    return out, got


def test_extract_stores_dense_landmarks_where_the_aligned_face_has_them(extracted):
    """dlib's 68 points re-detected on the stored aligned face land near the stored (aligned) ones."""
    from hilif.pipeline.align import template
    from hilif.pipeline.detectors import DlibDetector

    det = DlibDetector()
    for meta, img in extracted[1]:
        assert meta.schema == 2 and len(meta.dense_landmarks) == 68
        five = np.array(meta.aligned_landmarks)
        stored = np.array(meta.dense_landmarks)
        # both sets went through the same alignment: dlib's five points are made from its 68
        want = np.stack([stored[36:42].mean(0), stored[42:48].mean(0), stored[30], stored[48], stored[54]])
        assert np.abs(five - want).max() < 0.02
        assert np.abs(five - template(img.shape[0])).max() < 0.3 * np.linalg.norm(five[1] - five[0])
        found = det.detect(img)
        assert found, "no face found on the aligned crop"
        best = min(found, key=lambda d: np.abs(d.dense - stored).mean())
        err = np.linalg.norm(best.dense - stored, axis=1)
        eye_dist = np.linalg.norm(five[1] - five[0])
        # dlib's shape predictor on a re-sampled crop: within a few % of the eye distance
        assert np.median(err) < 0.06 * eye_dist, (np.median(err), eye_dist)
        assert np.percentile(err, 90) < 0.15 * eye_dist


def test_extract_into_a_version_1_folder_says_how_to_upgrade(extracted, tmp_path):
    import shutil

    out = tmp_path / "old"
    shutil.copytree(extracted[0], out)
    run = json.loads((out / "run.json").read_text())
    run["schema"] = 1
    (out / "run.json").write_text(json.dumps(run))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "hilif.pipeline.cli",
            "extract",
            "--dataset",
            "wilddeepfake",
            "--root",
            run["root"],
            "--out",
            str(out),
            "--frames",
            "train=3",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert "version 1" in err and "--overwrite" in err and "--out" in err and str(out) in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def _as_version_1(src: Path, dst: Path) -> None:
    """A copy of shard folder ``src`` whose samples look written by a version-1 extract (no aligned landmarks)."""
    import io
    import shutil
    import tarfile

    shutil.copytree(src, dst)
    for tar in dst.rglob("*.tar"):
        members = []
        with tarfile.open(tar) as tf:
            for m in tf:
                data = tf.extractfile(m).read()
                if m.name.endswith(".json"):
                    d = json.loads(data)
                    d.pop("aligned_landmarks"), d.pop("dense_landmarks")
                    d["schema"] = 1
                    data = json.dumps(d).encode()
                members.append((m, data))
        with tarfile.open(tar, "w") as tf:
            for m, data in members:
                m.size = len(data)
                tf.addfile(m, io.BytesIO(data))


@pytest.mark.parametrize("version", [2, 1])
def test_inspect_sbi_draws_real_sbi_mask_triplets(extracted, tmp_path, version):
    from PIL import Image
    from typer.testing import CliRunner

    from hilif.pipeline.cli import app

    folder = extracted[0]
    if version == 1:
        folder = tmp_path / "v1"
        _as_version_1(extracted[0], folder)
    sheet = tmp_path / "sbi.png"
    res = CliRunner().invoke(
        app, ["inspect", str(folder), "--sheet", str(tmp_path / "c.png"), "--sbi", "3", "--sbi-sheet", str(sheet)]
    )
    assert res.exit_code == 0, res.output
    assert "3 real / SBI / mask triplets" in res.output
    img = np.asarray(Image.open(sheet).convert("RGB"))
    thumb, cap = 160, 14
    assert img.shape == (thumb + cap, 3 * 3 * thumb + 2 * 8, 3)
    for t in range(3):  # each triplet: the SBI differs from the real, the mask column has a bright face region
        x0 = t * (3 * thumb + 8)
        real, fake, mask = (img[cap:, x0 + j * thumb : x0 + (j + 1) * thumb].astype(int) for j in range(3))
        assert np.abs(real - fake).mean() > 1
        assert mask.max() > 60 and mask[0, 0].max() == 0 and (mask > 0).mean() < 0.7
    res = CliRunner().invoke(app, ["inspect", str(folder), "--sbi", "-1"])
    assert res.exit_code == 2 and "--sbi" in res.output

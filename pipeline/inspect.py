"""`hilif-prep inspect DIR`: counts per split/label/method, sample checks, a contact sheet of faces."""

from __future__ import annotations

import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hilif.common.options import option

from . import schema


@dataclass
class InspectOptions:
    """Options of `hilif-prep inspect` (the shard folder is its argument); each field is the option of the same
    name."""

    sheet: str | None = option("Contact sheet PNG (default: <folder>/contact_sheet.png).", None, type=Path)
    faces: int = option("Faces on the contact sheet.", 48, min=1)
    check: int = option("Samples to check in depth.", 200, min=0)
    seed: int = option("Seed of the sample choice.", 0)
    sbi: int = option("Also draw N (real, self-blended fake, mask) triplets from train reals.", 0, min=0)
    sbi_sheet: str | None = option("SBI contact sheet PNG (default: <folder>/sbi_sheet.png).", None, type=Path)


@dataclass
class InspectReport:
    root: Path
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (split, label, method) -> samples
    shards: int = 0
    incomplete: list[str] = field(default_factory=list)  # tars without stats
    problems: list[str] = field(default_factory=list)  # sample checks that failed
    checked: int = 0
    sheet: Path | None = None
    info: schema.DatasetInfo | None = None


def _iter_shard(path: Path):
    """Samples of one tar as dicts (grouped by key, in order)."""
    cur: dict[str, Any] = {}
    with tarfile.open(path, "r") as tf:
        for m in tf:
            if not m.isfile():
                continue
            key, _, ext = m.name.partition(".")
            if cur and cur["__key__"] != key:
                yield cur
                cur = {}
            cur["__key__"] = key
            cur[ext] = tf.extractfile(m).read()
    if cur:
        yield cur


def check_sample(sample: dict[str, Any], split: str, label: int, face_size: int) -> list[str]:
    """Problems with one raw sample (empty list: fine)."""
    from PIL import Image

    key = sample["__key__"]
    out = []
    try:
        ext = schema.sample_image_ext(sample)
        meta = schema.SampleMeta.from_json(sample["json"])
    except (schema.SchemaError, KeyError, TypeError, ValueError) as exc:
        return [f"{key}: {exc}"]
    if meta.key != key:
        out.append(f"{key}: key does not match its metadata ({meta.key})")
    if sample.get("cls", b"").decode() != str(meta.label):
        out.append(f"{key}: .cls {sample.get('cls')!r} != label {meta.label}")
    if (meta.split, meta.label) != (split, label):
        out.append(f"{key}: {meta.split}/{meta.label} sample in a {split}/{label} shard")
    try:
        img = Image.open(io.BytesIO(sample[ext]))
        if img.size != (face_size, face_size) or img.mode != "RGB":
            out.append(f"{key}: image {img.size} {img.mode}, expected {face_size}x{face_size} RGB")
    except Exception as exc:
        out.append(f"{key}: unreadable image ({exc})")
    return out


def inspect_shards(
    root: str | Path, sheet: str | Path | None = None, n_faces: int = 48, check: int = 200, seed: int = 0
) -> InspectReport:
    root = Path(root)
    if not root.is_dir():
        raise schema.SchemaError(f"{root}: no such folder; give the folder extract wrote (e.g. shards/ffpp_c40)")
    rep = InspectReport(root)
    try:
        rep.info = schema.DatasetInfo.load(root)
    except schema.SchemaError:
        rep.info = None
    face_size = rep.info.face_size if rep.info else schema.FACE_SIZE
    rng = random.Random(seed)
    # one reservoir per label, so the sheet shows reals and fakes half and half
    pools: dict[int, list[tuple[dict[str, Any], str]]] = {schema.REAL: [], schema.FAKE: []}
    seen_label = {schema.REAL: 0, schema.FAKE: 0}
    per_label = {schema.REAL: n_faces // 2, schema.FAKE: n_faces - n_faces // 2}
    seen = 0
    for split in schema.SPLITS:
        for label in (schema.REAL, schema.FAKE):
            d = schema.shard_dir(root, split, label)
            if not d.is_dir():
                continue
            done = {p for p, _ in schema.complete_shards(root, split, label)}
            rep.incomplete += [str(p) for p in sorted(d.glob("*" + schema.TAR_SUFFIX)) if p not in done]
            for tar, st in schema.complete_shards(root, split, label):
                rep.shards += 1
                n = 0
                for s in _iter_shard(tar):
                    n += 1
                    meta = json.loads(s.get("json", b"{}") or b"{}")
                    k = (split, schema.LABEL_NAMES[label], str(meta.get("method", "?")))
                    rep.counts[k] = rep.counts.get(k, 0) + 1
                    seen += 1
                    if rep.checked < check or rng.random() < check / seen:
                        rep.problems += check_sample(s, split, label, face_size)
                        rep.checked += 1
                    seen_label[label] += 1
                    pool = pools[label]
                    if len(pool) < per_label[label]:
                        pool.append((s, split))
                    else:
                        j = rng.randrange(seen_label[label])
                        if j < per_label[label]:
                            pool[j] = (s, split)
                if n != st.samples:
                    rep.problems.append(f"{tar}: {n} samples, its stats say {st.samples}")
    chosen = pools[schema.REAL] + pools[schema.FAKE]
    if sheet is not None and chosen:
        rep.sheet = contact_sheet(chosen, Path(sheet))
    return rep


def contact_sheet(samples: list[tuple[dict[str, Any], str]], path: Path, cols: int = 8, thumb: int = 128) -> Path:
    """A PNG grid of faces, each captioned with split, label and method."""
    from PIL import Image, ImageDraw

    rows = (len(samples) + cols - 1) // cols
    cap = 14
    sheet = Image.new("RGB", (cols * thumb, rows * (thumb + cap)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (s, split) in enumerate(sorted(samples, key=lambda x: x[0]["__key__"])):
        ext = schema.sample_image_ext(s)
        img = Image.open(io.BytesIO(s[ext])).convert("RGB").resize((thumb, thumb))
        meta = json.loads(s["json"])
        x, y = (i % cols) * thumb, (i // cols) * (thumb + cap)
        sheet.paste(img, (x, y + cap))
        lab = schema.LABEL_NAMES.get(meta.get("label"), "?")
        colour = (0, 110, 0) if lab == "real" else (190, 0, 0)
        draw.text((x + 2, y + 1), f"{split} {lab} {meta.get('method', '')}"[:22], fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def sample_rgb(sample: dict[str, Any]) -> np.ndarray:
    """The face image of a raw sample as an RGB array."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(sample[schema.sample_image_ext(sample)])).convert("RGB"))


# --------------------------------------------------------------------------- SBI contact sheet


def _train_reals(root: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` random samples of the train reals (a reservoir over every complete shard, in name order)."""
    rng = random.Random(seed)
    pool: list[dict[str, Any]] = []
    seen = 0
    for tar, _ in schema.complete_shards(root, "train", schema.REAL):
        for s in _iter_shard(tar):
            seen += 1
            if len(pool) < n:
                pool.append(s)
            elif (j := rng.randrange(seen)) < n:
                pool[j] = s
    return sorted(pool, key=lambda s: s["__key__"])


def sbi_sheet(
    root: str | Path, path: str | Path, n: int = 12, seed: int = 0, cols: int = 3, thumb: int = 160
) -> tuple[Path, int]:
    """A PNG of ``n`` (real, self-blended fake, mask) triplets made from random train reals of ``root``.

    The real face shows the landmarks SBI used (green: dense, orange: the five points of a
    version-1 sample) and the outline of the mask region drawn for that fake; captions give the region type and
    the blend ratio. Each
    triplet's generator is seeded by (``seed``, its position), so a sheet repeats. Returns the
    path and the number of triplets drawn.
    """
    import cv2
    from PIL import Image, ImageDraw

    from hilif.train import sbi

    root = Path(root)
    if not root.is_dir():
        raise schema.SchemaError(f"{root}: no such folder; give the folder extract wrote (e.g. shards/ffpp_c40)")
    info = schema.DatasetInfo.load(root)
    margin = float(info.config.get("face", {}).get("margin", 1.3))
    samples = _train_reals(root, n, seed)
    if not samples:
        raise schema.SchemaError(f"{root}: no complete train/real shards to make self-blended images from")
    cap = 14
    rows = (len(samples) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * 3 * thumb + (cols - 1) * 8, rows * (thumb + cap)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, s in enumerate(samples):
        meta = schema.SampleMeta.from_json(s["json"])
        img = sample_rgb(s)
        lm = sbi.sample_landmarks(meta, img.shape[0], margin)
        parts = sbi.generate(img, lm, np.random.default_rng([seed, i]))
        real = img.copy()
        outline, _ = cv2.findContours(parts.hull, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.polylines(real, list(outline), True, (255, 255, 0), 1, cv2.LINE_AA)
        dot = (0, 255, 0) if len(lm) > 5 else (255, 140, 0)
        for x, y in lm:
            cv2.circle(real, (int(round(x)), int(round(y))), 2, dot, -1, cv2.LINE_AA)
        mask = np.repeat((parts.mask * 255).round().astype(np.uint8)[..., None], 3, axis=2)
        x0 = (i % cols) * (3 * thumb + 8)
        y0 = (i // cols) * (thumb + cap)
        for j, im in enumerate((real, parts.fake, mask)):
            sheet.paste(Image.fromarray(im).resize((thumb, thumb), Image.BILINEAR), (x0 + j * thumb, y0 + cap))
        pts = f"{len(lm)} pts" if len(lm) > 5 else "5 pts (v1)"
        draw.text((x0 + 2, y0 + 1), f"{meta.method} {meta.video_id}  {pts}", fill=(0, 110, 0))
        draw.text((x0 + thumb + 2, y0 + 1), f"SBI {parts.region} r={parts.ratio:g}", fill=(190, 0, 0))
        draw.text((x0 + 2 * thumb + 2, y0 + 1), "mask", fill=(60, 60, 60))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path, len(samples)

"""Pixels of the embedded demo dataset: face photographs, portraits, camera motion, face-swap fakes.

The faces are real photographs that ship inside installed packages (no download):
the six faces of insightface's ``t1.jpg``, ``Tom_Hanks_54745.png``, scikit-image's
astronaut and matplotlib's Grace Hopper; ``--faces`` adds the user's own photos.
Each becomes a *portrait*: a square crop around one face, other faces in the photo
blurred away (so a detector sees exactly one face), borders padded with a blurred
reflection, landmarks from dlib's 68-point predictor.

A video is a portrait filmed by a moving camera (smooth pan, zoom, small rotation)
under drifting light with sensor noise. A fake of target ``t`` and source ``s`` is made
as its FF++ method makes it: Deepfakes and FaceSwap swap identities (the source's face
warped onto the target's landmarks, LAB colour transfer); Face2Face and NeuralTextures
reenact (the target's own face re-rendered with a changed pose/expression, at a lower
rendering resolution and with a small colour error). Either is blended with an eroded,
feathered hull mask and then filmed by exactly the target's camera, light and noise. So
a fake differs from its real twin only inside the pasted face region: the label is
visible in the pixels and nowhere else.

Blend settings are drawn per clip and stay fixed for the whole clip: per-frame changes
make fakes flicker, and x264 then compresses fakes differently from reals (a codec
shortcut a detector would learn instead of the forgery).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from skimage import transform as sktf

from ..detectors import DetectorError
from ..detectors import dlib as dlib_faces
from ..track import box_iou

log = logging.getLogger(__name__)

METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")

# dlib 68-point landmark groups (0-16 are the jaw line)
BROWS = list(range(17, 27))
NOSE = list(range(27, 36))
EYES = list(range(36, 48))
MOUTH = list(range(48, 68))
INNER = BROWS + NOSE + EYES + MOUTH
LOWER = list(range(3, 14)) + list(range(31, 36)) + MOUTH

#: width of the face box in a portrait (px); larger photos are scaled down to it
PORTRAIT_FACE = 150


class FaceSourceError(RuntimeError):
    """A face photograph the demo needs is missing or unusable."""


# --------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class Identity:
    """One real person: a photo file (in an installed package, or the user's own) and which face in it."""

    name: str
    package: str  # the installed package that ships the photo ("" for a photo of the user's own)
    relpath: str  # path inside the package, or the photo's own path when package is ""
    near: tuple[float, float] | None  # approximate face centre (x, y) in the photo; None: the largest face
    grey: bool = False  # a greyscale photo (unlike every other face)

    def file(self) -> Path | None:
        """The photo on disk, or None when its package is not installed."""
        if not self.package:
            p = Path(self.relpath)
            return p if p.is_file() else None
        return package_file(self.package, self.relpath)

    @property
    def where(self) -> str:
        return f"{self.package}/{self.relpath}" if self.package else self.relpath


#: The identities and the split each one belongs to. Identities never cross splits, so the
#: test AUC measures generalisation to unseen faces. The greyscale, low-resolution Tom Hanks
#: is in train: held out, it would be unlike every face a model had seen, and its score would
#: measure that rather than the forgeries.
IDENTITIES: dict[str, tuple[Identity, ...]] = {
    "train": (
        Identity("t1-joey", "insightface", "data/images/t1.jpg", (934, 131)),
        Identity("t1-monica", "insightface", "data/images/t1.jpg", (320, 220)),
        Identity("hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", (273, 232)),
        Identity("astronaut", "skimage", "data/astronaut.png", (220, 121)),
        Identity("hanks", "insightface", "data/images/Tom_Hanks_54745.png", (51, 71), grey=True),
    ),
    "val": (
        Identity("t1-rachel", "insightface", "data/images/t1.jpg", (121, 336)),
        Identity("t1-chandler", "insightface", "data/images/t1.jpg", (778, 420)),
    ),
    "test": (
        Identity("t1-lisa", "insightface", "data/images/t1.jpg", (1172, 336)),
        Identity("t1-ross", "insightface", "data/images/t1.jpg", (503, 348)),
    ),
}


def package_file(package: str, relpath: str) -> Path | None:
    """Path of a data file inside an installed package (without importing the package)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / relpath
    return p if p.is_file() else None


#: photo files `--faces` reads
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SPLITS = ("train", "val", "test")


def folder_identities(root: Path) -> dict[str, list[Identity]]:
    """Identities from a folder of the user's own photos: ``root/{train,val,test}/*.jpg|png|...``.

    One person per photo (its largest face; other faces in it are blurred away), named ``own-<file stem>``;
    the subfolder is the person's split. A person photographed twice must be one file, or two files in the
    same split: the demo cannot tell that two photos show one person, and one person in two splits would let
    the test score measure recognition instead of forgery detection.
    """
    root = Path(root)
    if not root.is_dir():
        raise FaceSourceError(f"{root}: --faces must be a folder with train/, val/ and/or test/ subfolders of photos")
    stray = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in SPLITS)
    if stray:
        raise FaceSourceError(
            f"{root}: unknown subfolder(s) {stray}; put each photo in train/, val/ or test/ (the person's split)"
        )
    out: dict[str, list[Identity]] = {}
    names: dict[str, Path] = {}
    for split in SPLITS:
        d = root / split
        photos = sorted(p for p in d.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES) if d.is_dir() else []
        out[split] = []
        for p in photos:
            name = f"own-{p.stem}"
            if name in names:
                raise FaceSourceError(f"{p}: same file name as {names[name]}; give each person's photo its own name")
            names[name] = p
            out[split].append(Identity(name, "", str(p.resolve()), None))
    if not names:
        raise FaceSourceError(f"{root}: no photos ({'/'.join(PHOTO_SUFFIXES)}) in train/, val/ or test/")
    return out


def available_identities(extra: dict[str, list[Identity]] | None = None) -> dict[str, list[Identity]]:
    """The identities whose photo is installed, per split (optional packages may be absent), plus ``extra``."""
    out: dict[str, list[Identity]] = {}
    for split, ids in IDENTITIES.items():
        out[split] = [i for i in ids if i.file() is not None]
        for i in ids:
            if i.file() is None:
                log.warning("demo face %s skipped: %s not installed", i.name, i.where)
        out[split] += (extra or {}).get(split, [])
    for split in ("val", "test"):
        if len(out[split]) < 2:
            raise FaceSourceError(
                "insightface's data/images/t1.jpg not found: install it with `pip install --no-deps insightface`"
            )
    if not out["train"]:
        raise FaceSourceError("no training faces found: install insightface (pip install --no-deps insightface)")
    return out


# --------------------------------------------------------------------------- dlib


def detect_faces(rgb: np.ndarray, upsample: int = 1, threshold: float = -0.5) -> list[tuple[np.ndarray, float]]:
    """dlib HOG detections as (box x0 y0 x1 y1, score), best first."""
    return sorted(dlib_faces.hog_boxes(rgb, upsample, threshold), key=lambda t: -t[1])


def landmarks68(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """dlib's 68 points of the face in ``box`` (a missing model file is a FaceSourceError: the demo cannot start)."""
    try:
        return dlib_faces.shape68(rgb, box)
    except DetectorError as exc:
        raise FaceSourceError(str(exc)) from None


# --------------------------------------------------------------------------- portraits


@dataclass
class Portrait:
    """A square crop around one face, ready to be filmed."""

    identity: str
    flipped: bool
    image: np.ndarray  # HxWx3 uint8 RGB
    box: np.ndarray  # face box x0 y0 x1 y1 (dlib, in portrait pixels)
    lm68: np.ndarray  # 68x2 landmarks in portrait pixels

    @property
    def face_width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def face_centre(self) -> np.ndarray:
        # centre of the landmarks: steadier than the box for framing
        return self.lm68.mean(axis=0)


def _big_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """A wide Gaussian blur, computed at reduced resolution (same look, a fraction of the cost)."""
    h, w = img.shape[:2]
    f = max(1, min(int(sigma / 3), h // 8, w // 8))
    if f == 1:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _feather_pad(img: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Pad with a heavily blurred mirror image: no hard edge, and no mirrored face a detector could find."""
    if max(top, bottom, left, right) <= 0:
        return img
    padded = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    blurred = _big_blur(padded, max(6.0, max(top, bottom, left, right) / 4))
    h, w = img.shape[:2]
    inside = np.zeros(padded.shape[:2], np.float32)
    inside[top : top + h, left : left + w] = 1.0
    inside = cv2.GaussianBlur(inside, (0, 0), 3.0)
    inside[top + 6 : top + h - 6, left + 6 : left + w - 6] = 1.0
    inside = inside[..., None]
    return (padded * inside + blurred * (1 - inside)).round().astype(np.uint8)


def _blur_faces(img: np.ndarray, boxes: list[np.ndarray]) -> np.ndarray:
    """Blur other people's faces away (elliptical, feathered) so each video holds one face."""
    out = img.copy()
    H, W = img.shape[:2]
    for b in boxes:
        w, h = b[2] - b[0], b[3] - b[1]
        # only the neighbourhood of the face: ellipse plus three feather sigmas
        m = int(1.5 * w)
        x0, y0 = max(0, int(b[0]) - m), max(0, int(b[1]) - m)
        x1, y1 = min(W, int(b[2]) + m), min(H, int(b[3]) + m)
        if x1 <= x0 or y1 <= y0:
            continue
        roi = out[y0:y1, x0:x1]
        mask = np.zeros(roi.shape[:2], np.float32)
        centre = (int((b[0] + b[2]) / 2) - x0, int((b[1] + b[3]) / 2 - 0.1 * h) - y0)
        cv2.ellipse(mask, centre, (int(0.8 * w), int(0.95 * h)), 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), 0.15 * w)[..., None]
        blurred = _big_blur(roi, 0.3 * w).astype(np.float32)
        out[y0:y1, x0:x1] = (roi * (1 - mask) + blurred * mask).round().clip(0, 255).astype(np.uint8)
    return out


@lru_cache(maxsize=8)
def _load_photo(path: str) -> tuple[np.ndarray, tuple[tuple[tuple[float, ...], float], ...]]:
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"))
    dets = detect_faces(rgb, upsample=1, threshold=-0.5)
    return rgb, tuple((tuple(b.tolist()), s) for b, s in dets)


def make_portrait(identity: Identity, flipped: bool = False) -> Portrait:
    """Crop, clean and landmark one identity's face (deterministic)."""
    path = identity.file()
    if path is None:
        raise FaceSourceError(f"{identity.where}: {'not installed' if identity.package else 'not found'}")
    try:
        rgb, dets = _load_photo(str(path))
    except OSError as exc:
        raise FaceSourceError(f"{path}: cannot read the photo ({exc}); replace or remove it") from None
    if not dets:
        raise FaceSourceError(f"{path}: dlib finds no face; use a photo with a frontal face of at least 80 px")
    boxes = [np.array(b) for b, _ in dets]
    if identity.near is None:
        face = max(boxes, key=lambda b: float((b[2] - b[0]) * (b[3] - b[1])))
    else:
        near = np.array(identity.near)
        face = min(boxes, key=lambda b: float(np.linalg.norm((b[:2] + b[2:]) / 2 - near)))
    others = [b for b in boxes if box_iou(b, face) < 0.3]
    fw = face[2] - face[0]
    lm = landmarks68(rgb, face)
    # roll: level the eyes, so every portrait is upright (the frontal detector's comfort zone)
    eyes = lm[42:48].mean(0) - lm[36:42].mean(0)
    roll = math.degrees(math.atan2(eyes[1], eyes[0]))
    # work on a crop big enough for the rotated square; beyond the photo, a blurred mirror
    half = int(round(2.2 * fw))
    big = int(math.ceil(half * 1.5))
    cx, cy = int(round((face[0] + face[2]) / 2)), int(round((face[1] + face[3]) / 2))
    x0, y0, x1, y1 = cx - big, cy - big, cx + big, cy + big
    h, w = rgb.shape[:2]
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    img = rgb[sy0:sy1, sx0:sx1]
    shift = np.array([sx0, sy0, sx0, sy0], float)
    if others:
        img = _blur_faces(img, [o - shift for o in others])
    img = _feather_pad(img, sy0 - y0, y1 - sy1, sx0 - x0, x1 - sx1)
    # rotate about the face centre, scale big faces down to PORTRAIT_FACE, crop 2*half square
    scale = min(1.0, PORTRAIT_FACE / fw)
    size = int(round(2 * half * scale))
    m = cv2.getRotationMatrix2D((float(cx - x0), float(cy - y0)), roll, scale)
    m[:, 2] += np.array([size / 2 - (cx - x0), size / 2 - (cy - y0)])
    img = cv2.warpAffine(
        img, m, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if flipped:
        img = img[:, ::-1]
    img = np.ascontiguousarray(img)
    # re-detect on the upright portrait (the face nearest the centre); fall back to the mapped box
    found = detect_faces(img, upsample=1, threshold=-0.5)
    if found:
        box = min((bx for bx, _ in found), key=lambda bx: float(np.linalg.norm((bx[:2] + bx[2:]) / 2 - size / 2)))
    else:
        c = size / 2
        box = np.array([c - fw * scale / 2, c - fw * scale / 2, c + fw * scale / 2, c + fw * scale / 2])
    return Portrait(identity.name, flipped, img, box, landmarks68(img, box))


# --------------------------------------------------------------------------- fakes


@dataclass(frozen=True)
class BlendParams:
    """How one fake clip is made: fixed for the whole clip."""

    method: str
    warp: str  # "similarity" or "affine" landmark alignment (face swaps); "pose" for reenactment
    region: str  # "face" (hull of all 68 points), "inner" (brows, eyes, nose, mouth) or "lower"
    resolution: float  # the pasted face is rendered at this fraction of full resolution
    sigma: float  # feathering of the mask, as a fraction of the face width
    erode: float  # mask erosion, as a fraction of the face width
    colour: float  # strength of the LAB colour transfer (0 none, 1 full)
    # reenactment only (Face2Face, NeuralTextures): the target's own face re-rendered with a changed pose/expression
    # (scale, rotation in degrees, shift x / y as fractions of the face width) and a rendering tint (LAB offsets)
    pose: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def reenact(self) -> bool:
        return self.warp == "pose"


#: FF++'s Deepfakes and FaceSwap swap identities: the source's face is warped onto the target. Face2Face and
#: NeuralTextures are *reenactment*: the target keeps its own identity and only its expression follows the source,
#: so the fake is the target's own face re-rendered (pose/expression change, rendering resolution, a small colour
#: error of the renderer) and blended back. Keeping the identity there matters for what a detector learns: with
#: only identity swaps in a handful of training identities, a model memorises "this face on that head" for
#: those people instead of the blending traces that carry over to unseen faces.
#: per method: warp, region, and ranges (low, high) of resolution, sigma, erode, colour
_METHOD_RANGES = {
    "Deepfakes": ("affine", "face", (0.40, 0.60), (0.05, 0.09), (0.05, 0.08), (0.85, 1.0)),
    "FaceSwap": ("similarity", "face", (0.85, 1.00), (0.012, 0.025), (0.02, 0.04), (0.5, 0.8)),
    "Face2Face": ("pose", "inner", (0.65, 0.90), (0.025, 0.05), (0.01, 0.03), (0.0, 0.0)),
    "NeuralTextures": ("pose", "lower", (0.40, 0.55), (0.025, 0.045), (0.0, 0.02), (0.0, 0.0)),
}
#: reenactment: |scale - 1|, |rotation| (degrees), |shift| (fraction of the face width), |LAB tint| (L, a and b)
_POSE_RANGES = ((0.015, 0.04), (0.5, 2.5), (0.01, 0.03))
_TINT_RANGES = ((2.0, 6.0), (1.0, 4.0), (1.0, 4.0))


def draw_blend(method: str, rng: np.random.Generator) -> BlendParams:
    if method not in _METHOD_RANGES:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    warp, region, *ranges = _METHOD_RANGES[method]
    res, sig, ero, col = (float(rng.uniform(lo, hi)) for lo, hi in ranges)
    if warp != "pose":
        return BlendParams(method, warp, region, res, sig, ero, col)

    def signed(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi) * rng.choice((-1.0, 1.0)))

    (s, r, d) = _POSE_RANGES
    pose = (1.0 + signed(*s), signed(*r), signed(*d), signed(*d))
    tint = tuple(signed(*t) for t in _TINT_RANGES)
    return BlendParams(method, warp, region, res, sig, ero, col, pose, tint)  # type: ignore[arg-type]


_REGION_POINTS = {"face": list(range(68)), "inner": INNER, "lower": LOWER}
_ALIGN_POINTS = {"face": list(range(68)), "inner": INNER, "lower": list(range(27, 68))}


def _estimate(kind: str, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    cls = sktf.SimilarityTransform if kind == "similarity" else sktf.AffineTransform
    if hasattr(cls, "from_estimate"):
        tf = cls.from_estimate(src, dst)
        if not tf:
            raise FaceSourceError("landmark alignment failed")
        return np.asarray(tf.params)
    tf = cls()
    if not tf.estimate(src, dst):
        raise FaceSourceError("landmark alignment failed")
    return np.asarray(tf.params)


def _colour_transfer(src: np.ndarray, ref: np.ndarray, mask: np.ndarray, strength: float) -> np.ndarray:
    """Match src's LAB mean/std inside ``mask`` to ref's (Reinhard et al.), blended by strength."""
    s = cv2.cvtColor(src, cv2.COLOR_RGB2LAB).astype(np.float32)
    r = cv2.cvtColor(ref, cv2.COLOR_RGB2LAB).astype(np.float32)
    m = mask > 0.5
    ms, ss = s[m].mean(0), s[m].std(0) + 1e-3
    mr, sr = r[m].mean(0), r[m].std(0) + 1e-3
    t = (s - ms) / ss * sr + mr
    out = s * (1 - strength) + t * strength
    return cv2.cvtColor(out.clip(0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _lab_shift(img: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    """Offset an RGB image's LAB channels (OpenCV's 8-bit LAB units): a renderer's small colour error."""
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32) + np.array(tint, np.float32)
    return cv2.cvtColor(lab.clip(0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def pose_matrix(target: Portrait, pose: tuple[float, float, float, float]) -> np.ndarray:
    """3x3 similarity about the face centre: scale, rotation (degrees), shift (fractions of the face width)."""
    scale, rot, dx, dy = pose
    cx, cy = target.face_centre
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D((float(cx), float(cy)), rot, scale)
    m[:2, 2] += np.array([dx, dy]) * target.face_width
    return m


def blend_mask(target: Portrait, p: BlendParams) -> np.ndarray:
    """The feathered, eroded hull mask of the pasted region (float32 in [0, 1])."""
    h, w = target.image.shape[:2]
    hull = cv2.convexHull(target.lm68[_REGION_POINTS[p.region]].astype(np.float32)).astype(np.int32)
    fw = target.face_width
    k = int(round(p.erode * fw))
    sigma = max(0.5, p.sigma * fw)
    # draw, erode and feather inside the hull's box plus the blur's reach only (the rest is zero)
    m = int(math.ceil(4 * sigma)) + 2
    x0, y0 = max(0, int(hull[..., 0].min()) - m), max(0, int(hull[..., 1].min()) - m)
    x1, y1 = min(w, int(hull[..., 0].max()) + m + 1), min(h, int(hull[..., 1].max()) + m + 1)
    box = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(box, hull - np.array([x0, y0], np.int32), 255)
    if k > 0:
        box = cv2.erode(box, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    soft = np.zeros((h, w), np.float32)
    soft[y0:y1, x0:x1] = cv2.GaussianBlur(box.astype(np.float32) / 255.0, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    return soft


def fake_portrait(target: Portrait, source: Portrait, p: BlendParams) -> np.ndarray:
    """The target portrait with the source's face pasted on by landmark alignment and blending."""
    h, w = target.image.shape[:2]
    mask = blend_mask(target, p)
    # work only inside the mask's bounding box (plus a margin): the rest of the portrait is unchanged
    ys, xs = np.nonzero(mask > 1e-3)
    m = int(0.1 * target.face_width) + 4
    x0, y0 = max(0, xs.min() - m), max(0, ys.min() - m)
    x1, y1 = min(w, xs.max() + m + 1), min(h, ys.max() + m + 1)
    if p.reenact:  # the target's own face, moved by the new pose/expression (the source's face is not used)
        tf, image = pose_matrix(target, p.pose), target.image
    else:
        idx = _ALIGN_POINTS[p.region]
        tf, image = _estimate(p.warp, source.lm68[idx], target.lm68[idx]), source.image
    tf = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ tf  # into box coordinates
    bw, bh = x1 - x0, y1 - y0
    warped = cv2.warpAffine(image, tf[:2], (bw, bh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if p.resolution < 0.999:
        small = cv2.resize(
            warped, (max(8, round(bw * p.resolution)), max(8, round(bh * p.resolution))), interpolation=cv2.INTER_AREA
        )
        warped = cv2.resize(small, (bw, bh), interpolation=cv2.INTER_LINEAR)
    box_mask = mask[y0:y1, x0:x1]
    base = target.image[y0:y1, x0:x1]
    warped = _lab_shift(warped, p.tint) if p.reenact else _colour_transfer(warped, base, box_mask, p.colour)
    a = box_mask[..., None]
    out = target.image.copy()
    out[y0:y1, x0:x1] = (warped.astype(np.float32) * a + base.astype(np.float32) * (1 - a)).round().astype(np.uint8)
    return out


# --------------------------------------------------------------------------- camera and light


@dataclass(frozen=True)
class Camera:
    """A smooth camera path and lighting drift for one clip (drawn once per source video)."""

    face_frac: float  # face width / frame height
    offset: tuple[float, float]  # face centre offset from frame centre, fraction of width/height
    pan: tuple[float, float, float, float, float, float]  # amp_x, amp_y (fractions), freq_x, freq_y, phase_x, phase_y
    zoom: tuple[float, float, float]  # amplitude, frequency, phase
    rot: tuple[float, float, float]  # amplitude (degrees), frequency, phase
    gain: tuple[float, float, float, float]  # base, amplitude, frequency, phase
    tint: tuple[float, float, float]  # per-channel multipliers
    gradient: tuple[float, float, float]  # amplitude, frequency, phase of a left-right light gradient
    noise: float  # sensor noise std (grey levels)
    noise_seed: int


def draw_camera(rng: np.random.Generator) -> Camera:
    u = rng.uniform
    tau = 2 * math.pi
    return Camera(
        face_frac=float(u(0.38, 0.46)),
        offset=(float(u(-0.06, 0.06)), float(u(-0.05, 0.03))),
        pan=(
            float(u(0.02, 0.05)),
            float(u(0.015, 0.035)),
            float(u(0.10, 0.30)),
            float(u(0.10, 0.30)),
            float(u(0, tau)),
            float(u(0, tau)),
        ),
        zoom=(float(u(0.03, 0.07)), float(u(0.08, 0.25)), float(u(0, tau))),
        rot=(float(u(1.5, 4.0)), float(u(0.10, 0.30)), float(u(0, tau))),
        gain=(float(u(0.9, 1.05)), float(u(0.04, 0.10)), float(u(0.08, 0.25)), float(u(0, tau))),
        tint=tuple(float(v) for v in u(0.95, 1.05, 3)),  # type: ignore[arg-type]
        gradient=(float(u(0.03, 0.10)), float(u(0.05, 0.2)), float(u(0, tau))),
        noise=float(u(0.8, 1.8)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def camera_matrix(cam: Camera, portrait: Portrait, t: float, width: int, height: int) -> np.ndarray:
    """2x3 affine map from portrait pixels to frame pixels at time ``t`` (seconds)."""
    tau = 2 * math.pi
    ax, ay, fx, fy, px, py = cam.pan
    za, zf, zp = cam.zoom
    ra, rf, rp = cam.rot
    s = cam.face_frac * height / portrait.face_width * (1 + za * math.sin(tau * zf * t + zp))
    theta = math.radians(ra * math.sin(tau * rf * t + rp))
    cx = width * (0.5 + cam.offset[0] + ax * math.sin(tau * fx * t + px))
    cy = height * (0.5 + cam.offset[1] + ay * math.sin(tau * fy * t + py))
    c, si = s * math.cos(theta), s * math.sin(theta)
    fcx, fcy = portrait.face_centre
    return np.array([[c, -si, cx - (c * fcx - si * fcy)], [si, c, cy - (si * fcx + c * fcy)]], np.float64)


def film(
    image: np.ndarray, portrait: Portrait, cam: Camera, frames: int, fps: float, width: int, height: int
) -> list[np.ndarray]:
    """Render ``frames`` RGB frames of ``image`` (the portrait or its fake) through the camera.

    The motion is computed from ``portrait`` (the target), so a real and its fakes are filmed identically.
    """
    noise_rng = np.random.default_rng(cam.noise_seed)
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :, None]
    tint = np.array(cam.tint, np.float32)[None, None, :]
    tau = 2 * math.pi
    out = []
    for k in range(frames):
        t = k / fps
        m = camera_matrix(cam, portrait, t, width, height)
        f = cv2.warpAffine(image, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        base, amp, freq, ph = cam.gain
        gain = base + amp * math.sin(tau * freq * t + ph)
        ga, gf, gp = cam.gradient
        grad = 1 + ga * math.sin(tau * gf * t + gp) * 2 * xs
        lit = f.astype(np.float32) * (np.float32(gain) * tint * grad)
        # sensor noise in luminance (one plane for the three channels: a third of the cost)
        lit += noise_rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(cam.noise)
        out.append(lit.round().clip(0, 255).astype(np.uint8))
    return out

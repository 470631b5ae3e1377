"""Self-blended images (SBI, Shiohara & Yamasaki, CVPR 2022): a fake made from one real face.

Two copies of an aligned real face become a source and a target. One of them (chosen at
random) passes the source-target generator: colour changes (RGB shift, HSV shift,
brightness/contrast, each with its probability) and one frequency change (down-scale then
up-scale, or sharpen); the source is then slightly resized and shifted. A mask from the
convex hull of the face's landmarks is deformed (an elastic warp), eroded and blurred with
random Gaussian kernels and multiplied by a blend ratio. The fake is
``mask * source + (1 - mask) * target`` in uint8 image space; its label is fake.

Everything random comes from the ``np.random.Generator`` passed in, so the same generator
state gives the same image. Pure numpy / OpenCV: this runs in the data-loader workers,
before augmentation and normalisation (augment the fake and its mask together after).

Landmarks are in the aligned crop's pixels. Dense landmarks (dlib's 68 or insightface's 106
points) give the real face outline (brows to chin); with only the five alignment points
(eyes, nose tip, mouth corners: version-1 shards) the hull is built from points placed around
them in the face's own frame (see :func:`five_point_hull`), a coarser inner-face region.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

#: the five-point convention of :mod:`hilif.pipeline.detectors`: left eye, right eye, nose tip, left / right mouth
#: corner
_EYE_L, _EYE_R, _NOSE, _MOUTH_L, _MOUTH_R = range(5)

#: Mask region types (:func:`region_mask`). "face": the convex hull of every landmark; "extended": the same with the
#: brows lifted towards the hairline, so the forehead joins; "components": the union of the convex hulls of the
#: face's parts (each eye with its brow, the nose, the mouth, each cheek, the chin), a non-convex region whose
#: boundary also runs inside the face.
HULL_TYPES = ("face", "extended", "components")

#: Where the blend happens (SBIConfig.size): on the face at the network's input scale, or on the stored crop.
SBI_SIZES = ("input", "crop")

#: The parts of "components" as dlib 68-point indices (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67).
_PARTS_68 = (
    (*range(17, 22), *range(36, 42)),  # one brow and its eye
    (*range(22, 27), *range(42, 48)),  # the other brow and eye
    tuple(range(27, 36)),  # nose bridge and base
    tuple(range(48, 60)),  # outer lips
    (1, 2, 3, 4, 5, 31, 48, 40, 41),  # cheek: jaw, nose base, mouth corner, lower eyelid
    (11, 12, 13, 14, 15, 35, 54, 46, 47),  # the other cheek
    (*range(5, 12), 48, 54, *range(55, 60)),  # chin below the lips
)


@dataclass(frozen=True)
class SBIConfig:
    """Every range of the SBI generator. Defaults: the SBI paper / public code where they give one.

    (code) marks a value from the public implementation, (alb) a library default where
    neither gives a usable value; see docs/training.md.
    """

    # source-target generator: colour (each applied with its probability)
    p_rgb_shift: float = 0.3  # (code)
    rgb_shift: int = 20  # +- levels per channel (code)
    p_hsv_shift: float = 0.3  # (code)
    hue_shift: int = 20  # +- OpenCV hue units (2 degrees each) (alb)
    sat_shift: int = 30  # +- saturation levels (alb)
    val_shift: int = 20  # +- value levels (alb)
    p_brightness_contrast: float = 0.3  # (code)
    brightness: float = 0.1  # +- fraction of the full range (code)
    contrast: float = 0.1  # +- contrast gain around 1 (code)
    # frequency: one of the two (down-scale then up-scale, or sharpen), with probability p_frequency (code: always)
    p_frequency: float = 1.0  # (code)
    p_downscale: float = 0.5  # else sharpen (code: one of the two, equally likely)
    downscale_factors: tuple[int, ...] = (2, 4)  # (code)
    sharpen_alpha: tuple[float, float] = (0.2, 0.5)  # (code)
    sharpen_lightness: tuple[float, float] = (0.5, 1.0)  # (code)
    # source resize and shift (imitates landmark mismatch)
    scale: tuple[float, float] = (0.95, 1 / 0.95)  # (code)
    shift_x: float = 0.03  # +- fraction of the width (code)
    shift_y: float = 0.015  # +- fraction of the height (code)
    # mask: elastic deformation, erosion blur, boundary blur, blend ratio
    elastic_alpha: float = 50.0  # displacement scale in pixels (code)
    elastic_sigma: float = 7.0  # smoothness of the displacement field (code)
    blur_kernel: tuple[int, int] = (5, 25)  # odd Gaussian kernel sizes for both blurs, inclusive (code)
    blur_sigma: tuple[float, float] = (5.0, 45.0)  # sigma of the second (boundary) blur (code)
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # paper
    # mask region, one drawn per fake (repeats weight the draw). The public SBI code draws one of four region types
    # of Face X-ray's blending generator, equally likely: two whole-face hulls, one with the forehead, one made of
    # the face's parts (code); here the two whole-face ones are the same hull.
    hull_types: tuple[str, ...] = ("face", "face", "extended", "components")  # (code)
    forehead: float = 0.4  # "extended": the brows lifted by this many eye distances (ours: about to the hairline)
    # where the blend happens: "input" = on the face resized to the side the training crop is cut from, so every
    # trace is at the scale the network sees (a 2x down-scale made on a 256-px face and then shrunk to a 96-px input
    # would vanish); "crop" = on the stored face as it is. The pixel ranges above are for a 256-px face and scale
    # with the side (`scaled`). (ours: the SBI code blends on the face crop at about its input size)
    size: str = "input"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.startswith("p_") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise ValueError(f"SBI {f.name} must be a probability in [0, 1], got {getattr(self, f.name)}")
        if not self.blend_ratios or any(not 0.0 < r <= 1.0 for r in self.blend_ratios):
            raise ValueError(f"SBI blend ratios must be in (0, 1], got {list(self.blend_ratios)}")
        lo, hi = self.blur_kernel
        if not (3 <= lo <= hi and lo % 2 == 1 and hi % 2 == 1):
            raise ValueError(f"SBI mask blur kernel must be two odd sizes lo <= hi, both >= 3, got {lo} {hi}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"SBI mask blur sigma must be 0 < lo <= hi, got {list(self.blur_sigma)}")
        if not self.downscale_factors or any(f < 1 for f in self.downscale_factors):
            raise ValueError(f"SBI down-scale factors must be >= 1, got {list(self.downscale_factors)}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"SBI source scale must be 0 < lo <= hi, got {list(self.scale)}")
        bad = [t for t in self.hull_types if t not in HULL_TYPES]
        if not self.hull_types or bad:
            raise ValueError(f"SBI mask regions must be among {', '.join(HULL_TYPES)}, got {list(self.hull_types)}")
        if self.size not in SBI_SIZES:
            raise ValueError(f"SBI size must be one of {', '.join(SBI_SIZES)}, got {self.size!r}")
        if self.forehead < 0:
            raise ValueError(f"SBI forehead lift must be >= 0 eye distances, got {self.forehead}")

    def scaled(self, factor: float) -> "SBIConfig":
        """The same generator for a face ``factor`` times the side the pixel ranges were set for: the elastic warp
        and both mask blurs scale (kernels stay odd and >= 3); fractions, probabilities and ratios stay."""

        def odd(k: int) -> int:
            return max(3, int(round(k * factor)) | 1)

        return replace(
            self,
            elastic_alpha=self.elastic_alpha * factor,
            elastic_sigma=max(self.elastic_sigma * factor, 1.0),
            blur_kernel=(odd(self.blur_kernel[0]), odd(self.blur_kernel[1])),
            blur_sigma=(self.blur_sigma[0] * factor, self.blur_sigma[1] * factor),
        )


@dataclass
class SBIParts:
    """One self-blended image and what made it (for tests and the contact sheet)."""

    fake: np.ndarray  # HxWx3 uint8
    mask: np.ndarray  # HxW float32 in [0, 1]: the blend weight of the source
    source: np.ndarray  # HxWx3 uint8, after the generator and the resize / shift
    target: np.ndarray  # HxWx3 uint8
    hull: np.ndarray  # HxW uint8 {0, 1}: the landmark region the mask came from (see ``region``)
    hard: np.ndarray  # HxW uint8 {0, 1}: the deformed, eroded mask before the boundary blur
    ratio: float
    region: str  # the region type drawn (HULL_TYPES); "face" where the landmarks allow no other


# --------------------------------------------------------------------------- landmarks -> hull


def five_point_hull(points: np.ndarray) -> np.ndarray:
    """Points around the inner face from the five alignment points, for a convex hull.

    In the face's own frame (x: from the left to the right eye, y: down, unit d = the eye
    distance) the hull takes: the eyes moved 0.35 d outwards and 0.45 d up (the brows),
    the eyes moved 0.45 d outwards (the temples), the mouth corners moved 0.3 d outwards and
    0.35 d down, and the point 0.8 d below the mouth centre (the chin). On dlib's 68 points
    this region covers most of the 68-point hull (brows to chin, cheeks inside the jaw),
    without the outer jaw; it is coarser than a dense hull because it cannot follow a face's shape.
    """
    p = np.asarray(points, dtype=np.float64).reshape(5, 2)
    ex = p[_EYE_R] - p[_EYE_L]
    d = float(np.hypot(*ex))
    if d < 1e-6:
        return p
    u = ex / d
    v = np.array([-u[1], u[0]])  # image y grows downwards: v points from the eyes to the mouth
    el, er, ml, mr = p[_EYE_L], p[_EYE_R], p[_MOUTH_L], p[_MOUTH_R]
    mc = (ml + mr) / 2
    out = [
        el - 0.35 * d * u - 0.45 * d * v,
        er + 0.35 * d * u - 0.45 * d * v,  # brows
        el - 0.45 * d * u,
        er + 0.45 * d * u,  # temples
        ml - 0.3 * d * u + 0.35 * d * v,
        mr + 0.3 * d * u + 0.35 * d * v,  # lower cheeks
        mc + 0.8 * d * v,  # chin
        p[_NOSE],
    ]
    return np.stack(out)


def hull_points(landmarks: np.ndarray) -> np.ndarray:
    """The points whose convex hull is the face region: dense landmarks as they are, 5 points expanded."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if len(lm) < 5:
        raise ValueError(f"SBI needs at least five landmarks, got {len(lm)}")
    return five_point_hull(lm) if len(lm) == 5 else lm


def hull_polygon(landmarks: np.ndarray) -> np.ndarray:
    """The integer convex-hull polygon of :func:`hull_points` (what :func:`hull_mask` fills)."""
    import cv2

    return cv2.convexHull(np.round(hull_points(landmarks)).astype(np.int32))


def hull_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """HxW uint8 {0, 1}: the filled convex hull of :func:`hull_points`."""
    import cv2

    hull = hull_polygon(landmarks)
    mask = np.zeros(shape[:2], dtype=np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask


def extended_points(landmarks: np.ndarray, forehead: float) -> np.ndarray:
    """Dense 68 points with the brows (17-26) lifted by ``forehead`` eye distances, away from the mouth."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2).copy()
    eye_l, eye_r = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    d = float(np.hypot(*(eye_r - eye_l)))
    up = (eye_l + eye_r) / 2 - lm[48:60].mean(axis=0)
    n = float(np.hypot(*up))
    if d < 1e-6 or n < 1e-6:
        return lm
    lm[17:27] += forehead * d * up / n
    return lm


def usable_region(kind: str, n_points: int) -> str:
    """``kind`` where the landmarks allow it: "extended" and "components" need dlib's 68 points, else "face"."""
    return kind if n_points == 68 else "face"


def region_mask(landmarks: np.ndarray, shape: tuple[int, int], kind: str, forehead: float = 0.4) -> np.ndarray:
    """HxW uint8 {0, 1}: the mask region ``kind`` (one of :data:`HULL_TYPES`) of the landmarks.

    "extended" and "components" need dlib's 68 points; with any other count (five points, insightface's 106) every
    kind is the "face" hull, :func:`hull_mask`.
    """
    import cv2

    if kind not in HULL_TYPES:
        raise ValueError(f"unknown SBI mask region {kind!r}; use one of {', '.join(HULL_TYPES)}")
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    kind = usable_region(kind, len(lm))
    if kind == "face":
        return hull_mask(lm, shape)
    if kind == "extended":
        return hull_mask(extended_points(lm, forehead), shape)
    mask = np.zeros(shape[:2], dtype=np.uint8)
    for part in _PARTS_68:
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(lm[list(part)]).astype(np.int32)), 1)
    return mask


# --------------------------------------------------------------------------- source-target generator


def _odd(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.choice(np.arange(lo, hi + 1, 2)))


def colour_transform(img: np.ndarray, cfg: SBIConfig, rng: np.random.Generator) -> np.ndarray:
    """RGB shift, HSV shift, brightness / contrast: each with its probability (uint8 in and out)."""
    import cv2

    out = img.astype(np.float32)
    if rng.random() < cfg.p_rgb_shift:
        out = out + rng.integers(-cfg.rgb_shift, cfg.rgb_shift + 1, size=3).astype(np.float32)
    if rng.random() < cfg.p_hsv_shift:
        dh, ds, dv = (int(rng.integers(-m, m + 1)) for m in (cfg.hue_shift, cfg.sat_shift, cfg.val_shift))
        hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.int32)
        hsv[..., 0] = (hsv[..., 0] + dh) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + ds, 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] + dv, 0, 255)
        out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if rng.random() < cfg.p_brightness_contrast:
        gain = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
        bias = 255.0 * rng.uniform(-cfg.brightness, cfg.brightness)
        out = out * gain + bias
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def frequency_transform(img: np.ndarray, cfg: SBIConfig, rng: np.random.Generator) -> np.ndarray:
    """Down-scale then up-scale (blur with block artefacts), or sharpen, with probability ``p_frequency``; else the
    image unchanged."""
    import cv2

    # no draw at p = 1 (the SBI code's setting): the generator's stream, and every fake, stay as they were
    if cfg.p_frequency < 1.0 and rng.random() >= cfg.p_frequency:
        return img
    h, w = img.shape[:2]
    if rng.random() < cfg.p_downscale:
        f = int(rng.choice(cfg.downscale_factors))
        small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    alpha = rng.uniform(*cfg.sharpen_alpha)
    light = rng.uniform(*cfg.sharpen_lightness)
    effect = -np.ones((3, 3), dtype=np.float32)
    effect[1, 1] = 8.0 + light
    identity = np.zeros((3, 3), dtype=np.float32)
    identity[1, 1] = 1.0
    kernel = (1 - alpha) * identity + alpha * effect
    return np.clip(cv2.filter2D(img.astype(np.float32), -1, kernel), 0, 255).round().astype(np.uint8)


def resize_shift(img: np.ndarray, cfg: SBIConfig, rng: np.random.Generator) -> np.ndarray:
    """The image scaled about its centre by a factor in ``cfg.scale`` and shifted by up to ``shift_x/y``."""
    import cv2

    h, w = img.shape[:2]
    s = rng.uniform(*cfg.scale)
    tx = rng.uniform(-cfg.shift_x, cfg.shift_x) * w
    ty = rng.uniform(-cfg.shift_y, cfg.shift_y) * h
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), 0.0, s)
    m[:, 2] += (tx, ty)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def source_target(img: np.ndarray, cfg: SBIConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(source, target): one copy (chosen at random) gets the colour and frequency changes; the source is resized and
    shifted."""
    a, b = img.copy(), img.copy()
    changed = frequency_transform(colour_transform(img, cfg, rng), cfg, rng)
    if rng.random() < 0.5:
        a = changed
    else:
        b = changed
    return resize_shift(a, cfg, rng), b


# --------------------------------------------------------------------------- mask generator


def elastic_deform(mask: np.ndarray, cfg: SBIConfig, rng: np.random.Generator) -> np.ndarray:
    """``mask`` warped by a smooth random displacement field (scale ``elastic_alpha``, smoothness ``elastic_sigma``)."""
    import cv2

    h, w = mask.shape
    k = 2 * int(round(3 * cfg.elastic_sigma)) + 1
    disp = []
    for _ in range(2):
        field = rng.uniform(-1, 1, size=(h, w)).astype(np.float32)
        disp.append(cv2.GaussianBlur(field, (k, k), cfg.elastic_sigma) * cfg.elastic_alpha)
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    return cv2.remap(
        mask, xs + disp[0], ys + disp[1], interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def blend_mask(
    landmarks: np.ndarray, shape: tuple[int, int], cfg: SBIConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, str]:
    """(hull, hard, mask, ratio, region): the landmark region (a type drawn from ``cfg.hull_types``), the deformed
    and eroded mask (inside the region), the blurred blend mask times the ratio, and the region type.

    The elastically warped region is cut to the hull and eroded by the first blur (a Gaussian of
    random odd size; only pixels whose whole neighbourhood is in the mask stay), so the hard mask
    lies inside the hull; the second blur (random size and sigma) makes the boundary soft.
    """
    import cv2

    # drawn whatever the landmarks, so the generator's stream does not depend on how many there are
    region = usable_region(str(rng.choice(cfg.hull_types)), len(np.asarray(landmarks).reshape(-1, 2)))
    hull = region_mask(landmarks, shape, region, cfg.forehead)
    hard = elastic_deform(hull, cfg, rng) & hull
    k1 = _odd(rng, *cfg.blur_kernel)
    first = cv2.GaussianBlur(hard.astype(np.float32), (k1, k1), 0)
    hard = (first >= first.max() - 1e-6).astype(np.uint8) if first.max() > 0 else hard
    k2 = _odd(rng, *cfg.blur_kernel)
    sigma = rng.uniform(*cfg.blur_sigma)
    soft = cv2.GaussianBlur(hard.astype(np.float32), (k2, k2), sigma)
    top = float(soft.max())
    soft = np.clip(soft / top, 0.0, 1.0) if top > 0 else soft
    ratio = float(rng.choice(cfg.blend_ratios))
    return hull, hard, (soft * ratio).astype(np.float32), ratio, region


def blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask * source + (1 - mask) * target`` rounded to uint8: the source where mask = 1, the target where 0."""
    m = mask[..., None].astype(np.float32)
    out = m * source.astype(np.float32) + (1.0 - m) * target.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def generate(
    img: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, cfg: SBIConfig | None = None
) -> SBIParts:
    """A self-blended fake of the aligned RGB face ``img`` (uint8) with ``landmarks`` in its pixels."""
    cfg = cfg or SBIConfig()
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"SBI needs an HxWx3 uint8 image, got {img.dtype} {img.shape}")
    source, target = source_target(img, cfg, rng)
    hull, hard, mask, ratio, region = blend_mask(landmarks, img.shape[:2], cfg, rng)
    return SBIParts(blend(source, target, mask), mask, source, target, hull, hard, ratio, region)


def self_blend(
    img: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, cfg: SBIConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(fake image, mask) of :func:`generate`."""
    parts = generate(img, landmarks, rng, cfg)
    return parts.fake, parts.mask


def self_blend_sized(
    img: np.ndarray, landmarks: np.ndarray, side: int, rng: np.random.Generator, cfg: SBIConfig | None = None
) -> np.ndarray:
    """The fake of :func:`self_blend` for a network whose input crop is cut from a ``side``-px face.

    With ``cfg.size == "input"`` the face and its landmarks are resized to ``side`` first and the pixel ranges
    scaled (:meth:`SBIConfig.scaled`), so the traces are made at the scale the network sees; with ``"crop"`` the
    blend happens on ``img`` as it is. Returns the fake at the side it was made at.
    """
    import cv2

    cfg = cfg or SBIConfig()
    points = np.asarray(landmarks, dtype=np.float64)
    if cfg.size == "input" and img.shape[:2] != (side, side):
        factor = side / img.shape[0]
        interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (side, side), interpolation=interp)
        points, cfg = (points + 0.5) * factor - 0.5, cfg.scaled(factor)
    return self_blend(img, points, rng, cfg)[0]


def sample_landmarks(meta, size: int = 256, margin: float = 1.3) -> np.ndarray:
    """The landmarks SBI uses for a shard sample, in aligned-face pixels.

    ``meta`` is a :class:`hilif.pipeline.schema.SampleMeta` (or its JSON dict). Version 2: the
    dense landmarks, or its aligned five points where the detector gave no dense ones. Version 1:
    the five frame-pixel points mapped by the alignment (``size`` / ``margin`` of the extract run,
    in its dataset JSON) - the coarser five-point hull.
    """
    get = meta.get if isinstance(meta, dict) else lambda k, d=None: getattr(meta, k, d)
    dense = get("dense_landmarks") or []
    if len(dense) >= 5:
        return np.asarray(dense, dtype=np.float64)
    five = get("aligned_landmarks") or []
    if len(five) == 5:
        return np.asarray(five, dtype=np.float64)
    from hilif.pipeline.align import similarity_matrix, to_aligned

    frame_points = np.asarray(get("landmarks"), dtype=np.float64)
    return to_aligned(frame_points, similarity_matrix(frame_points, size, margin))

"""Face detectors with five landmarks: dlib (HOG, offline; :mod:`.dlib`) and insightface SCRFD
(onnxruntime; :mod:`.scrfd`).

Both return :class:`Detection` objects with the same five-point convention as
insightface: image-left eye centre, image-right eye centre, nose tip, image-left and
image-right mouth corners, in source-frame pixels.
"""

from __future__ import annotations

from .base import Detection, DetectorError, FaceDetector, resolve_device
from .dlib import DlibConfig, DlibDetector
from .scrfd import (
    DEFAULT_INSIGHTFACE_DIR,
    LANDMARK106_NAME,
    SCRFD_NAMES,
    InsightFaceConfig,
    InsightFaceDetector,
    find_scrfd_model,
    onnx_providers,
)

__all__ = [
    "DEFAULT_INSIGHTFACE_DIR",
    "LANDMARK106_NAME",
    "SCRFD_NAMES",
    "Detection",
    "DetectorError",
    "DlibConfig",
    "DlibDetector",
    "FaceDetector",
    "InsightFaceConfig",
    "InsightFaceDetector",
    "find_scrfd_model",
    "make_detector",
    "onnx_providers",
    "resolve_device",
]


def make_detector(
    name: str, *, upsample: str | int = "auto", model_dir: str | None = None, device: str = "auto", batch: int = 16
) -> FaceDetector:
    """The detector ``name`` ("dlib" or "insightface") with the CLI's options."""
    if name == "dlib":
        return DlibDetector(DlibConfig(upsample=upsample))
    if name == "insightface":
        return InsightFaceDetector(InsightFaceConfig(model_dir=model_dir, device=device, batch=batch))
    raise DetectorError(f"unknown detector {name!r}: use dlib or insightface")

"""Face detectors with five landmarks: dlib (HOG, offline) and insightface SCRFD (onnxruntime).

Both return :class:`Detection` objects with the same five-point convention as
insightface: image-left eye centre, image-right eye centre, nose tip, image-left and
image-right mouth corners, in source-frame pixels.
"""

from .base import (
    DEFAULT_INSIGHTFACE_DIR,
    LANDMARK106_NAME,
    SCRFD_NAMES,
    Detection,
    DetectorError,
    DlibConfig,
    DlibDetector,
    FaceDetector,
    InsightFaceConfig,
    InsightFaceDetector,
    dlib_model_dir,
    find_scrfd_model,
    make_detector,
    onnx_providers,
    resolve_device,
)

__all__ = [
    "DEFAULT_INSIGHTFACE_DIR", "LANDMARK106_NAME", "SCRFD_NAMES", "Detection", "DetectorError", "DlibConfig",
    "DlibDetector", "FaceDetector", "InsightFaceConfig", "InsightFaceDetector", "dlib_model_dir", "find_scrfd_model",
    "make_detector", "onnx_providers", "resolve_device",
]

"""Align a face by its five landmarks to a square template (similarity transform)."""

from __future__ import annotations

import numpy as np

#: insightface's ArcFace five-point template for a 112x112 crop (eyes, nose tip, mouth corners)
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def template(size: int = 256, margin: float = 1.3) -> np.ndarray:
    """The five target points in a ``size`` x ``size`` crop.

    ``margin`` 1.0 is the ArcFace crop (tight: forehead and chin cut); 1.3 shrinks the
    template towards the crop centre so the crop shows 1.3x as much around the face.
    """
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    c = 56.0
    return ((ARCFACE_112 - c) / margin + c) * (size / 112.0)


def similarity_matrix(landmarks: np.ndarray, size: int = 256, margin: float = 1.3) -> np.ndarray:
    """2x3 matrix mapping frame pixels to crop pixels (least-squares similarity, via scikit-image)."""
    from skimage.transform import SimilarityTransform

    src = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    dst = template(size, margin)
    tf = SimilarityTransform.from_estimate(src, dst)
    if not tf:
        raise ValueError(f"degenerate landmarks, no similarity transform: {src.tolist()}")
    return np.asarray(tf.params[:2], dtype=np.float64)


def to_aligned(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Frame-pixel points (N, 2) mapped into the aligned crop by the 2x3 ``matrix`` of :func:`similarity_matrix`."""
    return np.asarray(points, dtype=np.float64).reshape(-1, 2) @ matrix[:, :2].T + matrix[:, 2]


def align_face(frame: np.ndarray, landmarks: np.ndarray, size: int = 256, margin: float = 1.3) -> np.ndarray:
    """The aligned ``size`` x ``size`` RGB face (outside the frame: black)."""
    import cv2

    m = similarity_matrix(landmarks, size, margin)
    return cv2.warpAffine(
        np.ascontiguousarray(frame),
        m,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )

"""What every face detector shares: the :class:`Detection` it returns, the :class:`FaceDetector`
protocol, its error type and the device choice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class DetectorError(RuntimeError):
    """A detector cannot be set up (missing model files, unusable device)."""


@dataclass
class Detection:
    box: np.ndarray  # (4,) float: x0 y0 x1 y1 in frame pixels
    landmarks: np.ndarray  # (5, 2) float
    score: float
    #: dense landmarks in frame pixels where the detector gives them: dlib's 68 points, insightface's
    #: 106 (when its pack has the 2d106det model); None otherwise
    dense: np.ndarray | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


class FaceDetector(Protocol):
    name: str

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """All faces in an RGB frame."""

    def detect_near(self, frame: np.ndarray, box: np.ndarray) -> list[Detection]:
        """Faces in the neighbourhood of ``box`` (a cheaper search used while tracking)."""

    def detect_cheap(self, frame: np.ndarray) -> list[Detection]:
        """A cheaper whole-frame search (no fallbacks) for frames where :meth:`detect` is likely to find nothing."""

    def detect_all(self, frame: np.ndarray) -> list[Detection]:
        """Every face of the frame (:meth:`detect` may stop at the first search step that finds any)."""


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; "cuda" without a GPU is an error.

    The provider list of onnxruntime-gpu is not used for this: it lists CUDA on machines
    where the CUDA provider cannot start.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise DetectorError(f"device must be auto, cpu or cuda, got {device!r}")
    try:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken: no GPU path
        has_cuda = False
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise DetectorError("--device cuda asked, but torch sees no CUDA GPU; use --device cpu")
    return device

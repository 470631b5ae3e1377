"""hilif-eval detect: the extract pipeline's face finding and alignment on one video or image, then
per-frame and per-video fake probability (per-video = mean of the frame probabilities, as in evaluation)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hilif.pipeline import schema
from hilif.pipeline.extract import FaceConfig, VideoFaces, faces_from_image, faces_from_video
from hilif.train.data import center_crop, normalize, to_chw_tensor
from hilif.train.evaluate import load_model

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class FrameScore:
    frame_index: int
    target_index: int
    replaced: bool
    fake_prob: float


@dataclass
class DetectResult:
    path: str
    kind: str  # video | image
    frames: list[FrameScore] = field(default_factory=list)
    asked: int = 0
    missing: int = 0

    @property
    def fake_prob(self) -> float | None:
        """Mean frame probability; None when no face was found."""
        return float(np.mean([f.fake_prob for f in self.frames])) if self.frames else None

    def to_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "asked": self.asked, "missing": self.missing,
                "fake_prob": self.fake_prob, "frames": [f.__dict__ for f in self.frames]}


@torch.no_grad()
def score_faces(model: torch.nn.Module, faces: list[np.ndarray], img_size: int, device: torch.device | str = "cpu",
                batch_size: int = 32) -> list[float]:
    """Fake probability of aligned 256x256 RGB faces (centre crop, as in evaluation)."""
    probs: list[float] = []
    model.eval()
    for i in range(0, len(faces), batch_size):
        x = torch.stack([to_chw_tensor(center_crop(f, img_size)) for f in faces[i:i + batch_size]])
        logits = model(normalize(x, device))
        probs += torch.softmax(logits.float(), dim=1)[:, schema.FAKE].cpu().tolist()
    return probs


def detect(path: str | Path, checkpoint: str | Path, num_frames: int = 32, face_cfg: FaceConfig | None = None,
           device: str = "auto") -> DetectResult:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give a video or an image")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    model, mcfg, _ = load_model(checkpoint, dev)
    kind = "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"
    vf: VideoFaces = faces_from_image(path, face_cfg) if kind == "image" else faces_from_video(path, num_frames, face_cfg)
    probs = score_faces(model, vf.faces, mcfg.img_size, dev)
    frames = [FrameScore(int(fi), int(ti), bool(r), float(p))
              for fi, ti, r, p in zip(vf.frame_indices, vf.target_indices, vf.replaced, probs)]
    if not frames:
        log.warning("%s: no face found", path)
    return DetectResult(str(path), kind, frames, asked=vf.asked or (1 if kind == "image" else num_frames), missing=vf.missing)

"""Grad-CAM (Selvaraju et al.) of the fake logit at the model's DFTM output, RGB stream and noise stream (Fig. 8).

The layers come from ``model.gradcam_layers()``; the map is ReLU(sum_c mean_hw(dS/dA_c) * A_c), upsampled to
the input and scaled to [0, 1] per image, overlaid on the face with a jet colour map.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from hilif.pipeline import schema
from hilif.train.data import EvalStream, normalize

log = logging.getLogger(__name__)

#: Column titles, in the order of the grid.
LAYER_TITLES = {"dftm": "DFTM output", "rgb": "RGB stream", "noise": "noise stream"}
FACES_PER_GRID = 8


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    raise TypeError(f"Grad-CAM layer returned {type(out).__name__}, not a tensor")


class GradCAM:
    """Hooks the named layers; calling it on a batch returns name -> (N, H, W) maps in [0, 1]."""

    def __init__(self, model: torch.nn.Module, layers: dict[str, torch.nn.Module]) -> None:
        self.model, self.layers = model, layers
        self.acts: dict[str, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, target: int = schema.FAKE) -> tuple[dict[str, np.ndarray], torch.Tensor]:
        handles = []

        def keep(name: str):
            def hook(_m: torch.nn.Module, _i: Any, out: Any) -> None:
                t = _first_tensor(out)
                t.retain_grad()
                self.acts[name] = t

            return hook

        for name, layer in self.layers.items():
            handles.append(layer.register_forward_hook(keep(name)))
        try:
            was = self.model.training
            self.model.eval()
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)  # so stream activations carry gradients even if frozen
                logits = self.model(x)
                self.model.zero_grad(set_to_none=True)
                logits[:, target].sum().backward()
            self.model.train(was)
        finally:
            for h in handles:
                h.remove()
        maps = {}
        for name, a in self.acts.items():
            if a.grad is None:
                raise RuntimeError(f"Grad-CAM layer {name!r} got no gradient from the fake logit")
            w = a.grad.float().mean(dim=(2, 3), keepdim=True)
            cam = F.relu((w * a.detach().float()).sum(dim=1, keepdim=True))
            cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            lo = cam.amin(dim=(1, 2), keepdim=True)
            hi = cam.amax(dim=(1, 2), keepdim=True)
            maps[name] = ((cam - lo) / (hi - lo).clamp_min(1e-8)).cpu().numpy()
        self.acts.clear()
        probs = torch.softmax(logits.detach().float(), dim=1)[:, schema.FAKE].cpu()
        return maps, probs


def overlay(face: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 face with a jet heat map (cam in [0, 1]) blended on top."""
    heat = cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return np.uint8(np.clip((1 - alpha) * face.astype(np.float32) + alpha * heat.astype(np.float32), 0, 255))


def pick_faces(shards: str | Path, split: str, img_size: int, n: int) -> dict[str, Any]:
    """The first n faces of the split, half real and half fake where the split has both."""
    want = {schema.REAL: n // 2, schema.FAKE: n - n // 2}
    got: dict[int, list[tuple[torch.Tensor, str, str]]] = {schema.REAL: [], schema.FAKE: []}
    for batch in EvalStream(shards, split, img_size, batch_size=32):
        for img, y, key, method in zip(batch["image"], batch["label"].tolist(), batch["key"], batch["method"]):
            if len(got[y]) < want[y]:
                got[y].append((img, key, method))
        if all(len(got[k]) >= want[k] for k in got):
            break
    items = got[schema.REAL] + got[schema.FAKE]
    if len(items) < n:  # one class short: fill from what there is
        log.info("Grad-CAM: %d faces available of %d asked", len(items), n)
    empty = torch.zeros(0, 3, img_size, img_size, dtype=torch.uint8)
    return {
        "image": torch.stack([i[0] for i in items]) if items else empty,
        "label": [schema.REAL] * len(got[schema.REAL]) + [schema.FAKE] * len(got[schema.FAKE]),
        "key": [i[1] for i in items],
        "method": [i[2] for i in items],
    }


def overlay_grids(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: list[str],
    out: str | Path,
    device: torch.device | str = "cpu",
    stem: str = "gradcam",
) -> list[Path]:
    """PNG grids ``OUT/STEM-NN.png`` (rows: faces; columns: face, DFTM, RGB stream, noise stream) of uint8
    (N, 3, H, W) faces, FACES_PER_GRID rows each; each row label gets the model's p(fake) appended."""
    layers = model.gradcam_layers()
    names = [k for k in LAYER_TITLES if k in layers]
    cam = GradCAM(model, {k: layers[k] for k in names})
    from hilif.train.plots import save_grid

    paths: list[Path] = []
    for start in range(0, len(labels), FACES_PER_GRID):
        imgs = images[start : start + FACES_PER_GRID]
        maps, probs = cam(normalize(imgs, device).contiguous())
        rows, row_labels = [], []
        for i in range(len(imgs)):
            face = imgs[i].permute(1, 2, 0).numpy()
            rows.append([face] + [overlay(face, maps[k][i]) for k in names])
            row_labels.append(f"{labels[start + i]}\np(fake)={float(probs[i]):.2f}")
        p = Path(out) / f"{stem}-{start // FACES_PER_GRID:02d}.png"
        save_grid(rows, ["face"] + [LAYER_TITLES[k] for k in names], row_labels, p)
        paths.append(p)
    return paths


def gradcam_grids(
    model: torch.nn.Module,
    shards: str | Path,
    split: str,
    img_size: int,
    n: int,
    out: str | Path,
    device: torch.device | str = "cpu",
) -> list[Path]:
    """Write PNG grids (rows: faces; columns: face, DFTM, RGB stream, noise stream) of n faces; return their paths."""
    faces = pick_faces(shards, split, img_size, n)
    labels = [f"{m} ({schema.LABEL_NAMES[y]})" for m, y in zip(faces["method"], faces["label"])]
    return overlay_grids(model, faces["image"], labels, out, device)

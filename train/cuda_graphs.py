"""The training step as one CUDA graph: normalisation, forward, losses, backward and the fused AdamW update
recorded once and replayed for every later batch of the same shape.

At the paper's batch of 12 an H200 runs HiLIF's step faster than the host can launch its few thousand small
kernels: the GPU sits mostly idle while Python dispatches (docs/performance.md). A replayed graph launches them
all with one call. What the graph needs, and how this module gives it:

- **Static memory.** Every replay reads the same input buffers and writes the same outputs: each batch is copied
  into ``images`` / ``labels`` before the replay, and the losses come back in the same tensors each time (read
  them before the next step, or clone them).
- **No host work inside.** The step has no host syncs or data-dependent shapes (L_d uses masked sums), the
  ImageNet constants are cached on the device (hilif.train.data.normalize), autocast runs without its weight
  cache (a cached cast would be a tensor made during capture and freed after it).
- **The learning rate as device memory.** The scheduler stays on the host and writes a float into each param
  group; the fused AdamW kernel of the graph reads the lr from a one-element device tensor instead, filled from
  the group before each replay. The groups hold floats again after the capture, so checkpoints, the progress bar
  and an eager step look as they do without graphs.
- **Warm-up before capture.** The first ``warmup`` steps run eagerly on a side stream (cuDNN/cuBLAS choose their
  algorithms and workspaces, the optimiser creates its state); they are real training steps. The capture step
  records the next batch's step and then replays it, so every batch is trained on exactly once.

A batch of another shape (a short batch after unreadable samples) runs eagerly; the graph stays for the next one.
"""

from __future__ import annotations

import logging
import time

import torch

from hilif.train.step import StepOutput, train_step

log = logging.getLogger(__name__)


class GraphedTrainStep:
    """`train_step` for one model and optimiser on CUDA: eager for the first `warmup` calls, then captured once and
    replayed. Call it with a batch (uint8 images and int labels, on the host or the device); it returns the step's
    StepOutput, whose tensors the next call overwrites. ``capture_s`` is the time the capture took (warm-up not
    included)."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lrc: torch.nn.Module | None,
        lambda_d: float,
        amp: torch.dtype | None,
        channels_last: bool,
        warmup: int = 3,
    ) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA graphs need a CUDA device")
        self.model, self.optimizer, self.lrc = model, optimizer, lrc
        self.lambda_d, self.amp, self.channels_last = lambda_d, amp, channels_last
        self.warmup = warmup
        self.calls = 0
        self.eager_calls = 0  # steps run eagerly: the warm-up and any batch of another shape
        self.capture_s: float | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.images: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.out: StepOutput | None = None
        self.lrs: list[torch.Tensor] = []
        self.side = torch.cuda.Stream()

    def _eager(self, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        self.eager_calls += 1
        return train_step(
            self.model, self.optimizer, images, labels, self.lrc, self.lambda_d, self.amp, self.channels_last
        )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        self.calls += 1
        device = next(self.model.parameters()).device
        if self.graph is None and self.calls <= self.warmup:
            # on a side stream, as PyTorch asks of the iterations before a capture
            self.side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(self.side):
                out = self._eager(images.to(device, non_blocking=True), labels.to(device, non_blocking=True))
            torch.cuda.current_stream(device).wait_stream(self.side)
            return out
        if self.graph is None:
            self._capture(images.to(device, non_blocking=True), labels.to(device, non_blocking=True))
        elif images.shape != self.images.shape or labels.shape != self.labels.shape:
            return self._eager(images.to(device, non_blocking=True), labels.to(device, non_blocking=True))
        else:
            self.images.copy_(images, non_blocking=True)
            self.labels.copy_(labels, non_blocking=True)
        for lr, group in zip(self.lrs, self.optimizer.param_groups):
            lr.fill_(group["lr"])  # the host schedule's value, read by the graph's AdamW kernel
        self.graph.replay()
        return self.out

    def _capture(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Record the step on static copies of this batch (nothing runs during capture; the caller replays)."""
        t0 = time.perf_counter()
        self.images, self.labels = images.clone(), labels.clone()
        groups = self.optimizer.param_groups
        self.lrs = [torch.tensor(float(g["lr"]), device=images.device, dtype=torch.float32) for g in groups]
        saved = [(g["lr"], g.get("capturable", False)) for g in groups]
        for g, lr in zip(groups, self.lrs):
            g["lr"], g["capturable"] = lr, True  # the graph's kernel reads the lr from device memory
        torch.cuda.synchronize(images.device)
        self.graph = torch.cuda.CUDAGraph()
        try:
            self.optimizer.zero_grad(set_to_none=True)  # gradients are allocated (and later rewritten) by the graph
            # thread_local: the loader's pin-memory thread may allocate pinned memory while this thread captures
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.out = train_step(
                    self.model,
                    self.optimizer,
                    self.images,
                    self.labels,
                    self.lrc,
                    self.lambda_d,
                    self.amp,
                    self.channels_last,
                    autocast_cache=False,
                )
        except Exception:
            self.graph = None
            raise
        finally:
            for g, (lr, capturable) in zip(groups, saved):
                g["lr"], g["capturable"] = lr, capturable
        torch.cuda.synchronize(images.device)
        self.capture_s = time.perf_counter() - t0
        log.info("training step captured as a CUDA graph in %.1f s (batch %d)", self.capture_s, len(labels))


def graphs_supported(device: torch.device, distributed: bool, compiled: bool) -> str | None:
    """Why the training step cannot be graphed here (None: it can): CUDA only, one process, eager modules."""
    if device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if distributed:
        return "CUDA graphs are not used under DDP (several ranks): its gradient all-reduce is not captured here"
    if compiled:
        return "CUDA graphs and --compile exclude each other (torch.compile has its own graphs: mode reduce-overhead)"
    return None

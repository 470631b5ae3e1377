"""Training throughput of a stage-2 step fed from shards (prints figures; asserts nothing).

For each mode (fp32 eager, bf16 autocast + channels_last, optionally + torch.compile) it times the same step
hilif-train runs in stage 2 (hilif.train.trainer.forward_loss: CE + lambda * L_d, backward, AdamW, one host read
of the loss per step):

  - "GPU alone": the step on one batch that stays on the device: what the model can do;
  - "from shards": the real loader (BalancedTrainStream, --workers processes, pinned memory) feeding it.

and prints images/s of both, the share of wall time the step sat waiting for the next batch, and the GPU
utilisation NVML reported (sampled every 50 ms) while the loader fed it. The loader keeps the GPU busy when
"from shards" is close to "GPU alone" and the data wait is small.

    python bench/bench_train.py --device cuda                   # synthetic shards, paper preset (2 x b4, 224)
    python bench/bench_train.py --device cuda --shards shards/ffpp_c40 --workers 8
    python bench/bench_train.py --preset demo --batch 8 --steps 6 --modes fp32 --workers 1   # CPU smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import write_synthetic  # noqa: E402
from bench_model import MODES, _sync, parse_modes, prepare_model  # noqa: E402

from hilif.model import HiLIFConfig, LocalRelationLoss, build_model  # noqa: E402
from hilif.train.data import BalancedTrainStream, make_loader, normalize  # noqa: E402
from hilif.train.precision import autocast
from hilif.train.trainer import forward_loss, make_optimizer  # noqa: E402


class UtilSampler:
    """GPU utilisation (%) read from NVML every ``period`` seconds in a thread; empty where NVML is missing."""

    def __init__(self, device: torch.device, period: float = 0.05) -> None:
        self.period, self.values, self._stop = period, [], threading.Event()
        self._read = None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
                self._read = lambda: pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            except Exception:  # nvidia-ml-py not installed
                self._read = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.values.append(float(self._read()))
            time.sleep(self.period)

    def __enter__(self) -> "UtilSampler":
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._read is not None:
            self._thread.join()

    def summary(self) -> str:
        if not self.values:
            return "n/a"
        return f"{statistics.mean(self.values):.0f}% (median {statistics.median(self.values):.0f}%)"


def build_step(args: argparse.Namespace, device: torch.device, mode: str):
    amp, channels_last, _ = MODES[mode]
    cfg = dataclasses.replace(
        HiLIFConfig.preset(args.preset), pretrained=False, **({"img_size": args.img_size} if args.img_size else {})
    )
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    fwd = prepare_model(model, mode)
    opt = make_optimizer(list(model.parameters()), 2e-4, 1e-2, device)  # hilif-train's optimizer
    lrc = LocalRelationLoss(cfg.lrc_k, cfg.lrc_s, cfg.lrc_n)

    def step(images_uint8: torch.Tensor, labels: torch.Tensor) -> float:
        x = normalize(images_uint8, device, channels_last)
        y = labels.to(device, non_blocking=True)
        with autocast(device, amp):
            loss, _, _ = forward_loss(fwd, x, y, lrc, 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())  # one host read per step (hilif-train reads three: loss, CE and L_d)

    return step, cfg.img_size


def run_mode(args: argparse.Namespace, device: torch.device, mode: str, shards: Path) -> dict[str, object]:
    step, img_size = build_step(args, device, mode)
    stream = BalancedTrainStream(shards, "train", img_size, args.batch, args.warmup + args.steps, rank=0, world_size=1)
    # GPU alone: one loader batch, kept and reused
    first = next(iter(make_loader(stream, 0)))
    imgs, labels = first["image"].to(device), first["label"].to(device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step(imgs, labels)
    _sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(imgs, labels)
    _sync(device)
    alone = args.steps * args.batch / (time.perf_counter() - t0)

    # from shards: the real loader; the first --warmup batches start the workers and fill the pipeline
    loader = make_loader(stream, args.workers, pin_memory=device.type == "cuda")
    it = iter(loader)
    for _ in range(args.warmup):
        b = next(it)
        step(b["image"], b["label"])
    _sync(device)
    waits = []
    with UtilSampler(device) as util:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            tw = time.perf_counter()
            b = next(it)
            waits.append(time.perf_counter() - tw)
            step(b["image"], b["label"])
        _sync(device)
        wall = time.perf_counter() - t0
    del it, loader
    return {
        "mode": mode,
        "alone": alone,
        "shards": args.steps * args.batch / wall,
        "wait": sum(waits) / wall,
        "util": util.summary(),
        "warm_s": warm_s,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, default=None, help="a shard folder with a train split; default: synthetic")
    ap.add_argument("--preset", default="paper", help="model preset (paper: 2 x efficientnet_b4 at 224)")
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--batch", type=int, default=12, help="the paper's batch is 12")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--samples", type=int, default=1600, help="synthetic faces to write when --shards is not given")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--modes", default="fp32,bf16-cl", help=f"comma list: {', '.join(MODES)}")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    modes = parse_modes(ap, args.modes)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"# stage-2 training step from shards: preset {args.preset}, batch {args.batch}, {args.steps} timed steps "
        f"after {args.warmup}, {args.workers} loader workers, {name}, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or write_synthetic(Path(tmp) / "shards", args.samples)
        rows = [run_mode(args, device, m, shards) for m in modes]
    print(f"\n{'mode':<18}{'GPU alone img/s':>16}{'from shards img/s':>19}{'data wait':>11}   GPU utilisation (NVML)")
    for r in rows:
        print(f"{r['mode']:<18}{r['alone']:16.1f}{r['shards']:19.1f}{r['wait']:10.0%}    {r['util']}")
    warm = ", ".join(f"{r['mode']} {r['warm_s']:.0f} s" for r in rows)
    print(f"(warm-up of each mode, compile included: {warm})")


if __name__ == "__main__":
    main()

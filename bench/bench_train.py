"""Training throughput of a stage-2 step fed from shards (prints figures; asserts nothing).

For each batch size and mode (fp32 eager, bf16 autocast + channels_last, optionally + torch.compile, and the step
replayed as a CUDA graph: fp32-graph, bf16-cl-graph) it times the step hilif-train runs in stage 2
(hilif.train.step.train_step: CE + lambda * L_d, backward, fused AdamW; the loss is read once at the end):

  - "GPU alone": the step on one batch that stays on the device: what the model can do;
  - "from shards": the real loader (BalancedTrainStream, --workers processes, pinned memory) feeding it.

and prints images/s of both, the share of wall time the step sat waiting for the next batch, and the GPU
utilisation NVML reported (sampled every 50 ms) while the loader fed it. The loader keeps the GPU busy when
"from shards" is close to "GPU alone" and the data wait is small.

    python bench/bench_train.py --device cuda                   # synthetic shards, paper preset (2 x b4, 224)
    python bench/bench_train.py --device cuda --shards shards/ffpp_c40 --workers 8
    python bench/bench_train.py --device cuda --batch 12,48 --modes fp32,bf16-cl,fp32-graph,bf16-cl-graph
    python bench/bench_train.py --preset demo --batch 8 --steps 6 --modes fp32 --workers 1   # CPU smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import write_synthetic  # noqa: E402
from bench_model import MODES, _sync, prepare_model  # noqa: E402

from hilif.model import HiLIFConfig, LocalRelationLoss, build_model  # noqa: E402
from hilif.train.cuda_graphs import GraphedTrainStep  # noqa: E402
from hilif.train.data import BalancedTrainStream, make_loader  # noqa: E402
from hilif.train.step import train_step  # noqa: E402
from hilif.train.trainer import make_optimizer  # noqa: E402


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


#: The trainer's modes here: bench_model's (precision, memory format, torch.compile), and the step replayed as a
#: CUDA graph (hilif.train.cuda_graphs, hilif-train's --cuda-graphs) in fp32 and in bf16 + channels_last.
GRAPH_MODES = {"fp32-graph": "fp32", "bf16-cl-graph": "bf16-cl"}
TRAIN_MODES = [*MODES, *GRAPH_MODES]


def build_step(args: argparse.Namespace, device: torch.device, mode: str, batch: int):
    """hilif-train's stage-2 step in `mode` (no host read of the loss: the trainer reads it every few steps), and
    the GraphedTrainStep for graph modes (None otherwise)."""
    base = GRAPH_MODES.get(mode, mode)
    amp, channels_last, _ = MODES[base]
    cfg = dataclasses.replace(
        HiLIFConfig.preset(args.preset), pretrained=False, **({"img_size": args.img_size} if args.img_size else {})
    )
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    fwd = prepare_model(model, base)
    opt = make_optimizer(list(model.parameters()), 2e-4, 1e-2, device)  # hilif-train's optimizer
    lrc = LocalRelationLoss(cfg.lrc_k, cfg.lrc_s, cfg.lrc_n)
    if mode in GRAPH_MODES:
        graphed = GraphedTrainStep(model, opt, lrc, 0.5, amp, channels_last)
        return (lambda images, labels: graphed(images, labels).loss), cfg.img_size, graphed

    def step(images_uint8: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images_uint8.to(device, non_blocking=True)
        out = train_step(fwd, opt, images, labels.to(device, non_blocking=True), lrc, 0.5, amp, channels_last)
        return out.loss

    return step, cfg.img_size, None


def run_mode(args: argparse.Namespace, device: torch.device, mode: str, batch: int, shards: Path) -> dict[str, object]:
    step, img_size, graphed = build_step(args, device, mode, batch)
    stream = BalancedTrainStream(shards, "train", img_size, batch, args.warmup + args.steps, rank=0, world_size=1)
    # GPU alone: one loader batch, kept and reused
    first = next(iter(make_loader(stream, 0)))
    imgs, labels = first["image"].to(device), first["label"].to(device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step(imgs, labels)
    _sync(device)
    warm_s = time.perf_counter() - t0
    with UtilSampler(device) as util_alone:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step(imgs, labels)
        _sync(device)
        alone = args.steps * batch / (time.perf_counter() - t0)
    finite = bool(torch.isfinite(loss))

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
            loss = step(b["image"], b["label"])
        _sync(device)
        wall = time.perf_counter() - t0
    del it, loader
    return {
        "mode": mode,
        "batch": batch,
        "alone": alone,
        "util_alone": util_alone.summary(),
        "shards": args.steps * batch / wall,
        "wait": sum(waits) / wall,
        "util": util.summary(),
        "warm_s": warm_s,
        "capture_s": graphed.capture_s if graphed is not None else None,
        "finite": finite and bool(torch.isfinite(loss)),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, default=None, help="a shard folder with a train split; default: synthetic")
    ap.add_argument("--preset", default="paper", help="model preset (paper: 2 x efficientnet_b4 at 224)")
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--batch", default="12", help="comma list of batch sizes (the paper's batch is 12)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps first (graph modes: 3 eager + capture)")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--samples", type=int, default=1600, help="synthetic faces to write when --shards is not given")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--modes", default="fp32,bf16-cl", help=f"comma list: {', '.join(TRAIN_MODES)}")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in TRAIN_MODES]
    if bad:
        ap.error(f"unknown --modes {bad}: choose from {', '.join(TRAIN_MODES)}")
    if device.type != "cuda" and any(m in GRAPH_MODES for m in modes):
        ap.error("graph modes need --device cuda")
    batches = [int(b) for b in args.batch.split(",") if b]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"# stage-2 training step from shards: preset {args.preset}, batch {args.batch}, {args.steps} timed steps "
        f"after {args.warmup}, {args.workers} loader workers, {name}, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or write_synthetic(Path(tmp) / "shards", args.samples)
        rows = []
        for batch in batches:
            for m in modes:
                try:  # one failing mode (out of memory, a capture error) must not lose the others' figures
                    rows.append(run_mode(args, device, m, batch, shards))
                except Exception as exc:
                    print(f"  batch {batch} {m}: FAILED {type(exc).__name__}: {exc}", flush=True)
                    continue
                finally:
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                r = rows[-1]
                print(f"  batch {batch} {m}: {r['alone']:.1f} img/s alone, {r['shards']:.1f} from shards", flush=True)
    print(
        f"\n{'batch':>5}  {'mode':<15}{'GPU alone img/s':>16}  {'GPU busy (alone)':<22}{'from shards img/s':>18}"
        f"{'data wait':>11}   GPU busy (from shards)   vs first mode"
    )
    for r in rows:
        ref = next(x for x in rows if x["batch"] == r["batch"])
        print(
            f"{r['batch']:>5}  {r['mode']:<15}{r['alone']:16.1f}  {r['util_alone']:<22}{r['shards']:18.1f}"
            f"{r['wait']:10.0%}   {r['util']:<25}{r['alone'] / ref['alone']:.2f}x alone"
            + ("" if r["finite"] else "   NON-FINITE LOSS")
        )
    warm = ", ".join(f"b{r['batch']} {r['mode']} {r['warm_s']:.0f} s" for r in rows)
    print(f"(warm-up of each mode, compile / capture included: {warm})")
    caps = ", ".join(f"b{r['batch']} {r['mode']} {r['capture_s']:.2f} s" for r in rows if r["capture_s"] is not None)
    if caps:
        print(f"(CUDA graph capture: {caps})")


if __name__ == "__main__":
    main()

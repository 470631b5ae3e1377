"""Benchmark of hilif.model (prints figures; asserts nothing).

1. CPU training step (forward, CE + 0.5 * L_d, backward, AdamW) of HiLIF, side by side with two plain timm
   backbone training steps (the cost of the two streams alone); ratio HiLIF / (2 x backbone), target <= 1.1.
   Then where HiLIF's extra time goes: forward + backward of each part it adds to the two backbones (SRM, DFTM and
   its sub-modules, DDAFM, head, L_d projections + loss, AdamW on the added parameters), timed alone on maps of the
   shapes the model feeds it, as a share of the two-backbone step, with its FLOPs and achieved GFLOP/s next to a
   plain matmul of the head's shape (what this device's GEMM reaches).
   On CPU, the step with and without each CPU path hilif-train takes (depthwise convs on maps smaller than their
   kernel as matrix products; fused AdamW), side by side.
2. Block-DCT high-pass: the separable (default) and conv formulations against the unfold one, forward + backward.
3. Parameters and FLOPs per module (torch.utils.flop_counter).
4. Memory of the training step: activations saved for backward (counted with autograd's saved-tensor hooks, so
   independent of the allocator) and parameters + gradients + AdamW state; on CUDA also max_memory_allocated.

Medians over --repeats timed steps after --warmup untimed ones. Quick run:
    python bench/bench_model.py --batch 2 --size 128 --backbone efficientnet_b0 --repeats 2
The paper's setting: python bench/bench_model.py   (batch 12, 224, efficientnet_b4; slow on a laptop CPU)
On a GPU: python bench/bench_model.py --device cuda --repeats 20 --warmup 5 --modes fp32,bf16-cl,bf16-cl-compile
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from typing import Callable

import timm
import torch
import torch.nn.functional as F

from hilif.model import HiLIFConfig, LocalRelationLoss, build_model
from hilif.model.dct import BlockDCTHighPass
from hilif.model.depthwise import use_small_map_depthwise
from hilif.model.profile import flop_counter, profile_model
from hilif.train.precision import autocast
from hilif.train.step import forward_loss
from hilif.train.trainer import make_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(
    fn: Callable[[], None], repeats: int, warmup: int, device: torch.device, cpu_times: list[float] | None = None
) -> float:
    """Median wall time; the process CPU time of each run is appended to ``cpu_times`` (on a shared, loaded CPU the
    CPU time is the steadier figure)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - c)
    return statistics.median(times)


#: execution modes of the training step: (autocast dtype or None, channels_last, torch.compile)
MODES: dict[str, tuple[torch.dtype | None, bool, bool]] = {
    "fp32": (None, False, False),  # eager fp32, NCHW: the plain baseline
    "fp32-cl": (None, True, False),
    "bf16-cl": (torch.bfloat16, True, False),  # hilif-train's default on CUDA
    "bf16-cl-compile": (torch.bfloat16, True, True),
    "fp32-cl-compile": (None, True, True),  # CPU: inductor (minutes to compile)
}


def prepare_model(net: torch.nn.Module, mode: str) -> Callable[..., torch.Tensor]:
    """``net`` in ``mode``'s memory format (in place), compiled when the mode says so: what to call forward on."""
    _, cl, comp = MODES[mode]
    if cl:
        net.to(memory_format=torch.channels_last)
    return torch.compile(net) if comp else net


def _prepare(net: torch.nn.Module, x: torch.Tensor, mode: str) -> tuple[Callable[..., torch.Tensor], torch.Tensor]:
    """`prepare_model`, and the input ``x`` in the same memory format."""
    fwd = prepare_model(net, mode)
    return fwd, (x.contiguous(memory_format=torch.channels_last) if MODES[mode][1] else x)


def _autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    return autocast(device, MODES[mode][0])  # hilif-train's own autocast switch


def parse_modes(ap: argparse.ArgumentParser, text: str) -> list[str]:
    """The comma list of --modes, each checked against MODES (an argparse error otherwise)."""
    modes = [m for m in text.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown --modes {bad}: choose from {', '.join(MODES)}")
    return modes


def hilif_step_fn(
    args: argparse.Namespace,
    device: torch.device,
    mode: str = "fp32",
    small_map_depthwise: bool = True,
    fused_adamw: bool = True,
) -> Callable[[], None]:
    """HiLIF's training step as hilif-train runs it; the two switches give the CPU paths it replaced (PyTorch's
    convolution for depthwise convs on maps smaller than their kernel; AdamW's per-tensor loop)."""
    cfg = HiLIFConfig(
        backbone=args.backbone, img_size=args.size, pretrained=False, small_map_depthwise=small_map_depthwise
    )
    model = build_model(cfg).to(device).train()
    params = list(model.parameters())
    if fused_adamw:
        opt = make_optimizer(params, 2e-4, 1e-2, device)  # hilif-train's optimizer
    else:
        opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=1e-2, fused=False, foreach=False)
    crit = LocalRelationLoss(cfg.lrc_k, cfg.lrc_s, cfg.lrc_n)
    fwd, x = _prepare(model, torch.randn(args.batch, 3, args.size, args.size, device=device), mode)
    y = torch.arange(args.batch, device=device) % 2

    def step() -> None:
        with _autocast(device, mode):
            loss, _, _ = forward_loss(fwd, x, y, crit, 0.5)  # hilif-train's stage-2 loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def backbones_step_fn(args: argparse.Namespace, device: torch.device, mode: str = "fp32") -> Callable[[], None]:
    nets = [timm.create_model(args.backbone, pretrained=False, num_classes=2).to(device).train() for _ in range(2)]
    for n in nets:
        use_small_map_depthwise(n)  # the streams' own CPU path, so the ratio compares like with like
    opts = [make_optimizer(list(n.parameters()), 2e-4, 1e-2, device) for n in nets]
    x0 = torch.randn(args.batch, 3, args.size, args.size, device=device)
    fwds = [_prepare(n, x0, mode) for n in nets]
    y = torch.arange(args.batch, device=device) % 2

    def step() -> None:
        for (fwd, x), opt in zip(fwds, opts):
            with _autocast(device, mode):
                loss = F.cross_entropy(fwd(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return step


def saved_activations_mib(model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> float:
    """MiB of the tensors autograd keeps for the backward of ``forward()`` (parameters excluded, each storage once):
    the activation part of a training step's peak memory, independent of the allocator."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(seen.values()) / 2**20


def memory_report(args: argparse.Namespace, device: torch.device) -> list[tuple[str, float, float]]:
    """(name, activations saved for backward in MiB, parameters + gradients + AdamW state in MiB)."""
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.arange(args.batch, device=device) % 2
    cfg = HiLIFConfig(backbone=args.backbone, img_size=args.size, pretrained=False)
    model = build_model(cfg).to(device).train()
    crit = LocalRelationLoss(cfg.lrc_k, cfg.lrc_s, cfg.lrc_n)

    def hilif_forward() -> torch.Tensor:
        return forward_loss(model, x, y, crit, 0.5)[0]

    net = timm.create_model(args.backbone, pretrained=False, num_classes=2).to(device).train()
    rows = []
    for name, m, fwd in (
        ("HiLIF", model, hilif_forward),
        (f"one timm {args.backbone}", net, lambda: F.cross_entropy(net(x), y)),
    ):
        state = 4 * sum(p.numel() * p.element_size() for p in m.parameters()) / 2**20  # weights, grads, 2 moments
        rows.append((name, saved_activations_mib(m, fwd), state))
    return rows


def cuda_peak_mib(kind: str, args: argparse.Namespace, device: torch.device) -> float:
    fn = (hilif_step_fn if kind == "hilif" else backbones_step_fn)(args, device)
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def bench_dct(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    side = args.size // 4
    x = torch.randn(args.batch, args.dct_channels, side, side, device=device, requires_grad=True)
    results: dict[str, float] = {}
    for form in ("unfold", "conv", "separable"):
        mod = BlockDCTHighPass(formulation=form, size=side).to(device)

        def fb() -> None:
            mod(x).square().mean().backward()

        results[form] = median_time(fb, max(args.repeats, 5), 2, device)
    return results


def extras_breakdown(args: argparse.Namespace, device: torch.device) -> tuple[list[tuple[str, float, float]], float]:
    """(part, median seconds of forward + backward, FLOPs of forward + backward) for every part HiLIF adds to its two
    backbones, each run alone on random maps of the shapes the model gives it, at the bench's batch, fp32 eager.
    Inputs the model's gradient reaches require grad (SRM's input, the image, does not: forward only).
    Also returns the FLOP/s of a plain matmul of the head's shape on ``device`` (the GEMM reference)."""
    parts, head_shape = added_parts(args, device)
    rows = []
    for name, fn in parts:
        fn()  # untimed first call
        counter = flop_counter()
        with counter:
            fn()
        rows.append((name, median_time(fn, max(args.repeats, 5), 1, device), float(counter.get_total_flops())))
    m, k = args.batch * head_shape[-2] * head_shape[-1], 2 * head_shape[1]
    lhs, rhs = torch.randn(m, k, device=device), torch.randn(k, k // 2, device=device)
    t = median_time(lambda: torch.mm(lhs, rhs), max(args.repeats, 5), 2, device)
    return rows, 2 * m * k * (k // 2) / t


def added_parts(
    args: argparse.Namespace, device: torch.device
) -> tuple[list[tuple[str, Callable[[], None]]], torch.Size]:
    """(name, forward + backward closure) of each part HiLIF adds to its backbones, and the head's input shape."""
    cfg = HiLIFConfig(backbone=args.backbone, img_size=args.size, pretrained=False)
    model = build_model(cfg).to(device).train()
    crit = LocalRelationLoss(cfg.lrc_k, cfg.lrc_s, cfg.lrc_n)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.arange(args.batch, device=device) % 2
    with torch.no_grad():
        r_d, _, levels = model.forward_features(x)

    def maps(*shapes: torch.Size) -> list[torch.Tensor]:
        return [torch.randn(s, device=device, requires_grad=True) for s in shapes]

    def fb(fn: Callable[..., object], *inputs: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            out = fn(*inputs)
            outs = out if isinstance(out, tuple) else (out,)
            sum(o.float().square().mean() for o in outs).backward()

        return run

    a, b, c = (levels[k][0].shape for k in ("a", "b", "c"))
    parts: list[tuple[str, Callable[[], None]]] = []

    def srm_forward() -> None:
        with torch.no_grad():
            model.srm(x)

    parts.append(("srm (forward only)", srm_forward))
    if model.dftm is not None:
        dftm = model.dftm
        parts.append(("dftm", fb(dftm, *maps(a))))
        parts.append(("  block-DCT high-pass", fb(dftm.highpass, *maps(a))))
        for name, mod in (("fem", dftm.fem), ("fsfm", dftm.fsfm)):
            if mod is not None:
                parts.append((f"  {name}", fb(mod, *maps(a, a))))
                parts.append((f"    {name} LEM attention", fb(mod.lem, *maps(a, a, a))))
        parts.append(("  fuse", fb(dftm.fuse, *maps(torch.Size([a[0], dftm.fuse[0].in_channels, *a[2:]])))))
        parts.append(("  coarse SA", fb(dftm.coarse_sa, *maps(a))))
    if model.ddafm is not None:
        parts.append(("ddafm.b", fb(model.ddafm["b"], *maps(b, b))))
        parts.append(("ddafm.c", fb(model.ddafm["c"], *maps(c, c))))
    parts.append(("head", fb(model.head, *maps(r_d.shape, r_d.shape))))
    lv = {k: tuple(maps(s, s)) for k, s in (("a", a), ("b", b), ("c", c))}
    parts.append(("lrc projections + L_d", lambda: crit(model.lrc(lv), y).backward()))
    backbone_ids = {id(p) for p in (*model.rgb.parameters(), *model.noise.parameters())}
    added = [p for p in model.parameters() if id(p) not in backbone_ids]
    for p in added:
        p.grad = torch.randn_like(p)
    opt = make_optimizer(added, 2e-4, 1e-2, device)
    parts.append((f"AdamW on the added {sum(p.numel() for p in added) / 1e6:.1f}M params", opt.step))
    return parts, r_d.shape


def print_breakdown(args: argparse.Namespace, device: torch.device, baseline: float | None) -> None:
    rows, gemm = extras_breakdown(args, device)
    if baseline is None:
        baseline = median_time(backbones_step_fn(args, device), args.repeats, args.warmup, device)
    print(f"\n## Where HiLIF's extra time goes: forward + backward of each added part alone, batch {args.batch}, fp32")
    print(f"{'part':<36}{'ms':>9}{'% of 2 x backbone':>19}{'GFLOP':>9}{'GFLOP/s':>9}")
    top = 0.0
    for name, t, flops in rows:
        if not name.startswith(" "):
            top += t
        rate = f"{flops / t / 1e9:9.1f}" if flops else f"{'-':>9}"
        print(f"{name:<36}{t * 1e3:9.1f}{100 * t / baseline:18.1f}%{flops / 1e9:9.2f}{rate}")
    print(f"{'sum of the top-level parts':<36}{top * 1e3:9.1f}{100 * top / baseline:18.1f}%")
    print(
        f"(two backbones' step: {baseline * 1e3:.0f} ms; a plain fp32 matmul of the head's shape runs at "
        f"{gemm / 1e9:.1f} GFLOP/s on this device; indented rows are inside the row above them)"
    )


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The options and the training-step modes (checked before any work: a typo fails at once)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--backbone", default="efficientnet_b4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--dct-channels", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: step,paths,parts,dct,flops,memory")
    ap.add_argument("--modes", default="fp32", help=f"comma list of training-step modes: {', '.join(MODES)}")
    args = ap.parse_args(argv)
    return args, parse_modes(ap, args.modes)


def print_flops(args: argparse.Namespace) -> None:
    prof = profile_model(HiLIFConfig(backbone=args.backbone, img_size=args.size, pretrained=False))
    print(f"\n## Parameters and forward FLOPs per image ({args.size}x{args.size})")
    print(f"{'module':<16}{'params':>14}{'GFLOPs':>10}{'GMACs':>9}")
    for r in prof.rows:
        print(f"{r.name:<16}{r.params:>14,}{r.flops / 1e9:>10.3f}{r.flops / 2e9:>9.3f}")
    print(f"{'total':<16}{prof.total_params:>14,}{prof.total_flops / 1e9:>10.3f}{prof.macs / 1e9:>9.3f}")
    print(f"{'inference':<16}{'':>14}{prof.inference_flops / 1e9:>10.3f}{prof.inference_flops / 2e9:>9.3f}")


def print_dct(args: argparse.Namespace, device: torch.device) -> None:
    d = bench_dct(args, device)
    side = args.size // 4
    print(f"\n## Block-DCT high-pass, forward + backward, [{args.batch}, {args.dct_channels}, {side}, {side}]")
    for form, t in d.items():
        print(f"{form:<10}{t * 1e3:>10.2f} ms   speed-up vs unfold {d['unfold'] / t:5.2f}x")


def time_mode(args: argparse.Namespace, device: torch.device, mode: str) -> tuple[list[float], ...]:
    """Wall and CPU times of HiLIF's and the two backbones' training steps in `mode`, interleaved so that
    machine-load drifts hit both sides alike: (HiLIF wall, backbones wall, HiLIF CPU, backbones CPU, warm-up s)."""
    step_h = hilif_step_fn(args, device, mode)
    step_b = backbones_step_fn(args, device, mode)
    th, tb, ch, cb = [], [], [], []
    t_warm = time.perf_counter()
    for _ in range(args.warmup):
        step_h()
        step_b()
    _sync(device)
    t_warm = time.perf_counter() - t_warm
    for _ in range(args.repeats):
        th.append(median_time(step_h, 1, 0, device, ch))
        tb.append(median_time(step_b, 1, 0, device, cb))
    return th, tb, ch, cb, [t_warm]


def print_step(args: argparse.Namespace, mode: str, times: tuple[list[float], ...]) -> None:
    th, tb, ch, cb, (t_warm,) = times
    mh, mb = statistics.median(th), statistics.median(tb)
    print(
        f"\n## Training step (forward, CE + 0.5 L_d, backward, AdamW), batch {args.batch}, mode {mode} "
        f"(warm-up {args.warmup} steps of each: {t_warm:.1f} s)"
    )
    print(f"{'':<26}{'wall s':>8}{'img/s':>8}{'CPU s':>8}   all wall times")
    for name, t, c in (("HiLIF", th, ch), (f"2 x timm {args.backbone}", tb, cb)):
        m = statistics.median(t)
        print(
            f"{name:<26}{m:8.3f}{args.batch / m:8.1f}{statistics.median(c):8.3f}   " + " ".join(f"{x:.3f}" for x in t)
        )
    print(
        f"ratio HiLIF / two backbones: wall {mh / mb:.3f}x, CPU time "
        f"{statistics.median(ch) / statistics.median(cb):.3f}x (medians; target <= 1.10x)"
    )
    print(
        f"ratio of the fastest runs (least disturbed on a shared machine): wall {min(th) / min(tb):.3f}x, "
        f"CPU time {min(ch) / min(cb):.3f}x"
    )


def print_steps(args: argparse.Namespace, device: torch.device, modes: list[str]) -> float | None:
    """The training-step section; returns the two backbones' fp32 step time (the breakdown's baseline), if timed."""
    baseline, summary = None, []
    for mode in modes:
        times = time_mode(args, device, mode)
        mh, mb = statistics.median(times[0]), statistics.median(times[1])
        if mode == "fp32":
            baseline = mb
        summary.append((mode, args.batch / mh, args.batch / mb, mh / mb))
        print_step(args, mode, times)
    if len(summary) > 1:
        print(f"\n## Modes side by side (training images/s, batch {args.batch}, {device})")
        print(f"{'mode':<18}{'HiLIF':>10}{'2 x backbone':>14}{'ratio':>8}{'HiLIF vs ' + summary[0][0]:>18}")
        for mode, ih, ib, r in summary:
            print(f"{mode:<18}{ih:10.1f}{ib:14.1f}{r:8.3f}{ih / summary[0][1]:17.2f}x")
    return baseline


#: the CPU paths of the training step, old and new, timed side by side: (small_map_depthwise, fused AdamW)
CPU_PATHS = {
    "before (PyTorch convs, AdamW loop)": (False, False),
    "small-map depthwise only": (True, False),
    "fused AdamW only": (False, True),
    "both (hilif-train's path)": (True, True),
}


def print_cpu_paths(args: argparse.Namespace, device: torch.device) -> None:
    """HiLIF's training step (mode fp32-cl, hilif-train's on CPU) with and without each CPU path, interleaved so
    that load drifts hit every variant alike."""
    steps = {name: hilif_step_fn(args, device, "fp32-cl", *sw) for name, sw in CPU_PATHS.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for fn in steps.values():
        median_time(fn, 1, args.warmup, device)
    for _ in range(args.repeats):
        for name, fn in steps.items():
            times[name].append(median_time(fn, 1, 0, device))
    base = statistics.median(times[next(iter(times))])
    print(f"\n## CPU paths of the training step (mode fp32-cl), batch {args.batch}, {args.size} px")
    print(f"{'':<38}{'wall s':>8}{'speed-up':>10}   all wall times")
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:<38}{m:8.3f}{base / m:9.2f}x   " + " ".join(f"{x:.3f}" for x in t))


def print_memory(args: argparse.Namespace, device: torch.device) -> None:
    print(f"\n## Memory of the training step, batch {args.batch}")
    print(f"{'':<30}{'activations MiB':>16}{'params+grads+AdamW MiB':>24}")
    for name, act, state in memory_report(args, device):
        print(f"{name:<30}{act:16.0f}{state:24.0f}")
    print(
        "(activations: tensors saved for backward, counted once per storage; the two plain backbones hold "
        "twice the one-backbone figures when run together)"
    )
    if device.type == "cuda":
        print(
            f"peak max_memory_allocated: HiLIF {cuda_peak_mib('hilif', args, device):.0f} MiB, "
            f"two backbones (one after the other) {cuda_peak_mib('backbones', args, device):.0f} MiB"
        )


def main(argv: list[str] | None = None) -> None:
    args, modes = parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"# hilif.model benchmark: {args.backbone} at {args.size}, batch {args.batch}, device {device}, "
        f"{args.threads} threads, torch {torch.__version__}, medians of {args.repeats}"
    )
    if "flops" not in skip:
        print_flops(args)
    if "dct" not in skip:
        print_dct(args, device)
    baseline = print_steps(args, device, modes) if "step" not in skip else None
    if "paths" not in skip and device.type == "cpu":
        print_cpu_paths(args, device)
    if "parts" not in skip:
        print_breakdown(args, device, baseline)
    if "memory" not in skip:
        print_memory(args, device)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""The demo bench's scheduler: runs share the cores without oversubscribing them, in order."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_demo_seeds.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_demo_seeds", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_run_all_never_puts_more_threads_than_cores_beside_each_other() -> None:
    bench = load_bench()
    threads = [1, 1, 2, 1, 3, 1, 1]
    runs = [bench.Run(f"r{i}", i, t) for i, t in enumerate(threads)]
    lock = threading.Lock()
    running: dict[str, int] = {}
    seen: list[tuple[int, int]] = []  # (runs, threads) running, each time one starts
    started: list[str] = []
    pair = threading.Barrier(2, timeout=10)  # the first two 1-thread runs must run side by side

    def work(run):
        with lock:
            running[run.name] = run.threads
            started.append(run.name)
            seen.append((len(running), sum(running.values())))
        if run.name in ("r0", "r1"):
            pair.wait()
        time.sleep(0.02)
        with lock:
            del running[run.name]
        return {"name": run.name}

    results = bench.run_all(runs, work, parallel=2, cores=2)
    assert [r["name"] for r in results] == [r.name for r in runs]  # results in the runs' order
    assert started == [r.name for r in runs]  # started in order: a 1-thread run does not overtake a waiting 2
    for n_runs, n_threads in seen:
        assert n_runs <= 2
        assert n_runs == 1 or n_threads <= 2  # a 2- or 3-thread run only alone
    assert (2, 2) in seen  # the 1-thread runs did share the cores


def test_run_all_alone_and_empty() -> None:
    bench = load_bench()
    assert bench.run_all([], lambda r: {}, parallel=2, cores=2) == []
    runs = [bench.Run("big", 0, 8), bench.Run("small", 1, 1)]
    assert [r["n"] for r in bench.run_all(runs, lambda r: {"n": r.name}, parallel=4, cores=2)] == ["big", "small"]


def test_float_path_of_an_out_folder_is_kept(tmp_path: Path) -> None:
    bench = load_bench()
    bench.check_float_path(tmp_path, "avx2")
    bench.check_float_path(tmp_path, "avx2")  # the same path again: a resume
    with pytest.raises(SystemExit, match="--float-path avx2, not native"):
        bench.check_float_path(tmp_path, "native")
    old = tmp_path / "old"
    (old / "runs" / "seed0").mkdir(parents=True)  # runs from before the marker ran natively
    with pytest.raises(SystemExit, match="--float-path native, not avx2"):
        bench.check_float_path(old, "avx2")
    bench.check_float_path(old, "native")


PROBE = """
import io, contextlib, cv2, numpy as np, torch
print("aten", torch.backends.cpu.get_cpu_capability())
torch.nn.Conv2d(8, 8, 3)(torch.randn(2, 8, 16, 16)).sum().backward()  # a oneDNN convolution
torch.randn(64, 64) @ torch.randn(64, 64)  # an MKL sgemm
print("opencv", cv2.getCPUFeaturesLine())
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    np.show_runtime()
print("numpy", "X86_V4" in buf.getvalue().split("not_found")[-1].split("]")[0])
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="AVX2 float path is x86's")
def test_avx2_float_path_caps_each_library_below_avx512() -> None:
    """Each switch is read by its library (a misspelt variable is silently ignored): torch's dispatch reports
    AVX2, oneDNN's and MKL's verbose logs name AVX2, numpy lists X86_V4 as not used and OpenCV marks AVX-512
    as disabled."""
    bench = load_bench()
    env = {**os.environ, **bench.FLOAT_PATHS["avx2"], "ONEDNN_VERBOSE": "1", "MKL_VERBOSE": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    assert "aten AVX2" in out
    isa = [line for line in out.splitlines() if "isa:" in line or line.startswith("MKL_VERBOSE oneMKL")]
    assert len(isa) == 2 and not any("512" in line for line in isa), isa
    assert "AVX2" in isa[0] and "AVX2" in isa[1]
    native = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    if "aten AVX512" in native:  # on an AVX-512 machine numpy and OpenCV must have lost it too
        assert "numpy True" in out
        opencv = next(line for line in out.splitlines() if line.startswith("opencv"))
        assert "AVX512-SKX?" in opencv or "AVX512" not in opencv, opencv  # '?': found, but disabled

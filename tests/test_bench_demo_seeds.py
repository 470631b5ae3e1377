"""The demo bench's scheduler: runs share the cores without oversubscribing them, in order."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path

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

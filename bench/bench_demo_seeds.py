"""How robust is the quick start's demo result? Runs the demo recipe for several seeds and thread counts.

Makes the demo data and its shards once (exactly as ``.ci/demo.sh`` does), then for every run trains the
``demo`` preset with ``hilif-train`` and evaluates the best stage-2 checkpoint on the test split with
``hilif-eval``, and prints one table: test frame / video AUC per run and min / median / max over the seed runs.
``--reals-only`` adds the SBI protocol run (``--train-methods none --synth-fakes sbi``: demo reals only),
whose AUC is printed per fake method, none of which it has seen. ``--per-person`` scores the test split again
and prints, per test person, the AUC of the fakes made on that person's videos against that person's reals and
the two mean fake probabilities: it tells a model that ranks within each person but puts one person's reals above
another's fakes (a pooled-AUC loss only) from one that separates fakes poorly within a person.

    python bench/bench_demo_seeds.py --out /tmp/demo_seeds                      # seeds 0-4 + threads 1, 2
    python bench/bench_demo_seeds.py --out /tmp/demo_seeds --parallel 2 --reals-only
    python bench/bench_demo_seeds.py --out /tmp/demo_seeds --seeds --threads --reals-only --reals-only-seeds 0 1 2 3 4
    python bench/bench_demo_seeds.py --out /tmp/demo_seeds --seeds 0 --threads --train-args "--stage2-epochs 4"
    python bench/bench_demo_seeds.py --out /tmp/demo_faces --demo-args "--faces my_faces --sources 24"
    python bench/bench_demo_seeds.py --out /tmp/demo_avx2 --float-path avx2 --parallel 2   # an AVX2-only CPU's kernels

Runs that share the machine (``--parallel 2``) give the same figures as runs alone on the same machine, only
slower: every figure here depends on floats, hence on the machine and thread count, never on timing. A run
waits while its threads would not fit beside the running ones in ``--cores`` (oversubscribed cores stall).
A finished run (its ``eval/report.json`` exists) is not run again and a killed one continues from its last checkpoint
(``hilif-train --resume``, which refuses it if ``--train-args`` changed since; its ``train s`` is then nan), so a
killed bench resumes.

``--float-path avx2`` trains and evaluates with the kernels an x86 CPU without AVX-512 would run (torch's own,
oneDNN's convolutions, MKL's matmuls, and OpenCV's and numpy's in the SBI and augmentation code), each library
capped by its own documented switch: another kind of machine's float behaviour on this one, a stronger stand-in
than another thread count, for an AVX-512 machine (on one without AVX-512 it is the native path). It does not copy
another vendor's MKL code path or cache sizes, so it is not any one machine. The demo data and shards are made
natively: decoding, dlib and alignment gave the same bytes on the two machines measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    name: str
    seed: int
    threads: int
    extra: list[str] = field(default_factory=list)
    kind: str = "seed"  # seed | threads | reals-only


# The environment each float path adds to hilif-train / hilif-eval. "avx2": every library that picks its kernels
# by the CPU's features is capped below AVX-512 through its own switch.
FLOAT_PATHS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",  # torch's own CPU kernels
        "ONEDNN_MAX_CPU_ISA": "AVX2",  # convolutions, batch norm
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # matmuls (linear layers, attention)
        "OPENCV_CPU_DISABLE": "AVX512-SKX",  # SBI's warps, blurs and resizes
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "OPENBLAS_CORETYPE": "Haswell",  # numpy's own BLAS
    },
}
FLOAT_PATH_FILE = "float_path.txt"


def check_float_path(out: Path, name: str) -> None:
    """Runs of one --out share one float path: a resumed or skipped run from another would mix machines."""
    marker = out / FLOAT_PATH_FILE
    # runs made before the bench had float paths ran natively
    had = marker.read_text().strip() if marker.exists() else ("native" if any(out.glob("runs/*")) else name)
    if had != name:
        raise SystemExit(
            f"error: {out} holds runs made with --float-path {had}, not {name}: give another --out "
            "(its data and shards can be symlinked in)"
        )
    marker.write_text(name + "\n")


def sh(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with open(log, "a") as fh:
        fh.write("".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items()) + "$ " + shlex.join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed with exit code {proc.returncode}; see {log}")


def prepare(out: Path, quality: str, workers: int, demo_args: list[str]) -> Path:
    """Demo data + shards, made once (the quick start's defaults, plus ``demo_args``)."""
    data, shards = out / "data", out / "shards"
    log = out / "prepare.log"
    if not (data / "demo.json").exists():
        sh(["hilif-prep", "demo", "--out", str(data), "--quality", quality, "--overwrite", *demo_args], log)
    if not (shards / "dataset.json").exists():
        sh(
            [
                "hilif-prep",
                "extract",
                "--dataset",
                "demo",
                "--root",
                str(data),
                "--quality",
                quality,
                "--out",
                str(shards),
                "--workers",
                str(workers),
                "--overwrite",
            ],
            log,
        )
    return shards


def run_one(run: Run, shards: Path, out: Path, train_args: list[str], env: dict[str, str] | None = None) -> dict:
    folder = out / "runs" / run.name
    report = folder / "eval" / "report.json"
    if not report.exists():
        # a killed run continues from its last checkpoint (hilif-train refuses it if the options changed since);
        # one killed before its first checkpoint starts again
        resume = any((folder / "run").glob("stage*/last.pt"))
        if folder.exists() and not resume:
            subprocess.run(["rm", "-rf", str(folder)], check=True)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        sh(
            [
                "hilif-train",
                "--shards",
                str(shards),
                "--preset",
                "demo",
                "--out",
                str(folder / "run"),
                "--seed",
                str(run.seed),
                "--threads",
                str(run.threads),
                *train_args,
                *run.extra,
                *(["--resume"] if resume else []),
            ],
            folder / "log.txt",
            env,
        )
        t1 = time.perf_counter()
        sh(
            [
                "hilif-eval",
                "--checkpoint",
                str(folder / "run" / "stage2" / "best.pt"),
                "--shards",
                str(shards),
                "--split",
                "test",
                "--out",
                str(folder / "eval"),
            ],
            folder / "log.txt",
            env,
        )
        # a resumed run's training time is only its last part: not a figure
        train_s = float("nan") if resume else t1 - t0
        (folder / "time.json").write_text(json.dumps({"train_s": train_s, "eval_s": time.perf_counter() - t1}))
    rep = json.loads(report.read_text())
    rows = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines() if line]
    s1 = [r for r in rows if r["stage"] == 1]
    times = json.loads((folder / "time.json").read_text()) if (folder / "time.json").exists() else {}
    return {
        "run": run,
        "frame_auc": rep["frame"]["auc"],
        "video_auc": rep["video"]["auc"],
        "acc": rep["frame"]["acc"],
        "methods": {m: v["auc"] for m, v in rep.get("methods", {}).items()},
        "best_val_auc_s1": max((r["val_auc"] or 0.0) for r in s1) if s1 else float("nan"),
        "train_s": times.get("train_s", float("nan")),
    }


def per_person(folder: Path, shards: Path, data: Path) -> dict[str, tuple[float, float, float]]:
    """{test person: (AUC of fakes on their videos vs their reals, mean fake prob. of reals, of fakes)}."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from hilif.pipeline.schema import FAKE
    from hilif.train.config import EvalOptions
    from hilif.train.evaluate import SCORES_CSV, _Session, read_scores_csv

    person = {s["vid"]: s["identity"] for s in json.loads((data / "demo.json").read_text())["sources"]}
    if (folder / "eval" / SCORES_CSV).is_file():  # the scores hilif-eval's report was computed from
        pred = read_scores_csv(folder / "eval" / SCORES_CSV)
    else:  # a run evaluated before hilif-eval wrote them: score again in its own session (threads, memory format)
        checkpoint = folder / "run" / "stage2" / "best.pt"
        pred = _Session(EvalOptions(checkpoint=str(checkpoint), shards=str(shards), split="test")).predict(None)
    labels, scores = np.asarray(pred.labels), np.asarray(pred.scores)
    # a demo video is "TTT" (real) or "TTT_SSS" (fake made on target TTT's video): the person filmed is TTT's
    target = np.array([person[Path(v).name.split("_")[0]] for v in pred.videos])
    out = {}
    for name in sorted(set(target)):
        m = target == name
        fake = labels[m] == FAKE
        out[name] = (roc_auc_score(fake, scores[m]), scores[m][~fake].mean(), scores[m][fake].mean())
    return out


def run_all(runs: list[Run], work: Callable[[Run], dict], parallel: int, cores: int) -> list[dict]:
    """``work(run)`` for every run, in order: at most ``parallel`` at a time, and a run starts only when its torch
    threads fit beside the running ones in ``cores`` (a run alone always starts). Runs that ask for more threads
    than the cores stall each other far more than they share them: OpenMP threads spin-wait on their barriers, and
    one 2-thread run beside a 1-thread run on 2 cores fell from 30 to about 1 image per second."""
    ready = threading.Condition()
    state = {"next": 0, "runs": 0, "threads": 0}

    def fits(i: int) -> bool:
        if state["next"] != i:  # in order: a later, smaller run does not overtake a waiting one
            return False
        return state["runs"] == 0 or (state["runs"] < parallel and state["threads"] + runs[i].threads <= cores)

    def one(i: int) -> dict:
        with ready:
            ready.wait_for(lambda: fits(i))
            state["next"] += 1
            state["runs"] += 1
            state["threads"] += runs[i].threads
            ready.notify_all()
        try:
            return work(runs[i])
        finally:
            with ready:
                state["runs"] -= 1
                state["threads"] -= runs[i].threads
                ready.notify_all()

    with ThreadPoolExecutor(max(1, len(runs))) as pool:
        return list(pool.map(one, range(len(runs))))


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="work folder (data, shards, one folder per run)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4], help="training seeds (1 thread each)")
    ap.add_argument(
        "--threads",
        type=int,
        nargs="*",
        default=[2],
        help="extra runs of --shipped-seed with these torch thread counts (1 is already a seed run)",
    )
    ap.add_argument("--shipped-seed", type=int, default=0)
    ap.add_argument("--reals-only", action="store_true", help="add the SBI protocol run (demo reals only)")
    ap.add_argument(
        "--reals-only-seeds",
        type=int,
        nargs="+",
        default=None,
        help="with --reals-only: one SBI protocol run per seed (default: --shipped-seed only)",
    )
    ap.add_argument(
        "--reals-only-threads",
        type=int,
        nargs="+",
        default=None,
        help="with --reals-only: extra SBI protocol runs of --shipped-seed with these torch thread counts",
    )
    ap.add_argument("--per-person", action="store_true", help="print each run's AUC within each test person")
    ap.add_argument("--train-args", default="", help="extra hilif-train options for every run")
    ap.add_argument("--quality", default="c23")
    ap.add_argument("--parallel", type=int, default=1, help="runs at the same time (each with its thread count)")
    ap.add_argument(
        "--cores",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads the runs may use at once (default: this process's cores); a run alone may use more",
    )
    ap.add_argument(
        "--float-path",
        choices=sorted(FLOAT_PATHS),
        default="native",
        help="the CPU kernels training and evaluation run: this machine's, or an AVX2-only CPU's (see above)",
    )
    ap.add_argument("--extract-workers", type=int, default=2)
    ap.add_argument(
        "--demo-args",
        default="",
        help='extra hilif-prep demo options for the data, e.g. "--faces my_faces --sources 24" (a new --out)',
    )
    args = ap.parse_args()
    if args.parallel < 1:
        ap.error("--parallel must be >= 1")
    if args.cores < 1:
        ap.error("--cores must be >= 1")
    if (args.reals_only_seeds or args.reals_only_threads) and not args.reals_only:
        ap.error("--reals-only-seeds / --reals-only-threads need --reals-only")

    args.out.mkdir(parents=True, exist_ok=True)
    check_float_path(args.out, args.float_path)
    t0 = time.perf_counter()
    shards = prepare(args.out, args.quality, args.extract_workers, shlex.split(args.demo_args))
    runs = [Run(f"seed{s}", s, 1) for s in args.seeds]
    runs += [
        Run(f"seed{args.shipped_seed}_threads{t}", args.shipped_seed, t, kind="threads")
        for t in args.threads
        if not (t == 1 and args.shipped_seed in args.seeds)
    ]
    if args.reals_only:
        reals_only = ["--train-methods", "none", "--synth-fakes", "sbi"]
        reals_seeds = args.reals_only_seeds or [args.shipped_seed]
        runs += [Run(f"realsonly_seed{s}", s, 1, reals_only, kind="reals-only") for s in reals_seeds]
        runs += [
            Run(f"realsonly_seed{args.shipped_seed}_threads{t}", args.shipped_seed, t, reals_only, kind="reals-only")
            for t in args.reals_only_threads or []
            if not (t == 1 and args.shipped_seed in reals_seeds)
        ]
    train_args = shlex.split(args.train_args)
    env = FLOAT_PATHS[args.float_path]
    results = run_all(runs, lambda r: run_one(r, shards, args.out, train_args, env), args.parallel, args.cores)

    print(f"# demo robustness: {args.quality}, hilif-train --preset demo {args.train_args}".rstrip())
    if args.demo_args:
        print(f"# data: hilif-prep demo {args.demo_args}")
    print(
        f"# machine: {os.cpu_count()} cores; up to {args.parallel} run(s) at a time, at most {args.cores} torch "
        f"threads at once; wall {time.perf_counter() - t0:.0f} s"
    )
    if env:
        print(f"# float path {args.float_path}: " + " ".join(f"{k}={v}" for k, v in env.items()))
    print("| run | seed | threads | stage-1 max val AUC | test frame AUC | test video AUC | Acc@0.5 | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if r["run"].kind == "reals-only":
            continue
        print(
            f"| {r['run'].name} | {r['run'].seed} | {r['run'].threads} | {r['best_val_auc_s1']:.3f} | "
            f"{r['frame_auc']:.3f} | {r['video_auc']:.3f} | {r['acc']:.3f} | {r['train_s']:.0f} |"
        )
    seed_runs = [r for r in results if r["run"].kind == "seed"]
    all_runs = [r for r in results if r["run"].kind != "reals-only"]
    if seed_runs:
        print(
            f"\nseeds {args.seeds}: test frame AUC min / median / max {spread([r['frame_auc'] for r in seed_runs])}; "
            f"video AUC {spread([r['video_auc'] for r in seed_runs])}"
        )
    if all_runs:
        print(
            f"all {len(all_runs)} runs (seeds and thread counts): frame AUC "
            f"{spread([r['frame_auc'] for r in all_runs])}; runs below 0.85: "
            f"{sum(r['frame_auc'] < 0.85 for r in all_runs)}"
        )
    if args.per_person:
        print("\nper test person: AUC of the fakes on their videos vs their reals (mean fake prob. real / fake)")
        for r in results:
            folder = args.out / "runs" / r["run"].name
            people = per_person(folder, shards, args.out / "data")
            print(
                f"{r['run'].name}: "
                + "; ".join(f"{k} {a:.3f} ({p0:.2f} / {p1:.2f})" for k, (a, p0, p1) in people.items())
            )
    reals_only = [r for r in results if r["run"].kind == "reals-only"]
    for r in reals_only:
        per = ", ".join(f"{m} {v:.3f}" for m, v in sorted(r["methods"].items()))
        every = "yes" if min(r["methods"].values(), default=0.0) >= 0.80 else "no"
        print(
            f"\nreals only + SBI (seed {r['run'].seed}, {r['run'].threads} thread(s)): test frame AUC "
            f"{r['frame_auc']:.3f}, video AUC {r['video_auc']:.3f}; per method (its fakes vs all reals): {per}; "
            f"every method >= 0.80: {every}"
        )
    # the seed runs (not the thread-count runs of the shipped seed): the spread is over seeds
    reals_only = [r for r in reals_only if r["run"].name == f"realsonly_seed{r['run'].seed}"]
    if len(reals_only) > 1:
        methods = sorted({m for r in reals_only for m in r["methods"]})
        print(
            f"\nreals only + SBI, seeds {[r['run'].seed for r in reals_only]}: test frame AUC min / median / max "
            f"{spread([r['frame_auc'] for r in reals_only])}; per method "
            + "; ".join(f"{m} {spread([r['methods'][m] for r in reals_only if m in r['methods']])}" for m in methods)
            + f"; runs with every method >= 0.80: {sum(min(r['methods'].values()) >= 0.80 for r in reals_only)}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

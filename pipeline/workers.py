"""Worker processes for extraction, with deadlines enforced from the parent.

Each worker handles one video at a time over its own pipe and loads the detector once.
The parent kills a worker whose video passes its deadline (decord can hang inside native
code, where no Python-level timeout reaches), records the video as failed and starts a
fresh worker; workers are also replaced after ``recycle`` videos so memory stays flat.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

log = logging.getLogger(__name__)

# task = (task_id, payload); the worker calls handler(payload, report_phase) -> result


def _worker_main(conn: Connection, handler: Callable[..., Any], init: Callable[[], None] | None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        if init is not None:
            init()
    except Exception as exc:  # e.g. a detector that cannot load: tell the parent, stop
        conn.send(("fatal", None, f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # parent gone
        if msg is None:
            return
        task_id, payload = msg
        try:
            result = handler(payload, lambda phase: conn.send(("phase", task_id, phase)))
            conn.send(("done", task_id, result))
        except (BrokenPipeError, OSError):
            return
        except Exception as exc:
            conn.send(("error", task_id, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]))
            log.debug("task %s failed:\n%s", task_id, traceback.format_exc())


class FatalWorkerError(RuntimeError):
    pass


@dataclass
class _Slot:
    proc: Any = None
    conn: Connection | None = None
    task: Any = None  # (task_id, payload) in flight
    started: float = 0.0
    deadline: float = 0.0
    handled: int = 0
    phase: str = ""


@dataclass
class PoolConfig:
    workers: int = 1
    first_timeout: float = 120.0  # seconds until the worker reports its first phase (decode)
    total_timeout: float = 900.0  # seconds for the whole task
    recycle: int = 100  # videos per worker process before it is replaced
    start_method: str = "spawn"


@dataclass
class Outcome:
    task_id: Any
    ok: bool
    result: Any = None
    error: str = ""
    seconds: float = 0.0


@dataclass
class WorkerPool:
    cfg: PoolConfig
    handler: Callable[..., Any]
    init: Callable[[], None] | None = None
    slots: list[_Slot] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ctx = mp.get_context(self.cfg.start_method)
        self.slots = [_Slot() for _ in range(max(1, self.cfg.workers))]

    def _start(self, slot: _Slot) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, self.handler, self.init), daemon=True)
        proc.start()
        child.close()
        slot.proc, slot.conn, slot.handled = proc, parent, 0

    def _stop(self, slot: _Slot, kill: bool = False) -> None:
        if slot.proc is None:
            return
        if kill:
            slot.proc.kill()
        else:
            try:
                slot.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        slot.proc.join(timeout=10)
        if slot.proc.is_alive():
            slot.proc.kill()
            slot.proc.join()
        slot.conn.close()
        slot.proc, slot.conn, slot.task = None, None, None

    def close(self) -> None:
        for s in self.slots:
            self._stop(s, kill=s.task is not None)

    def run(self, tasks: list[tuple[Any, Any]], on_outcome: Callable[[Outcome], None]) -> None:
        """Run ``tasks`` (in order of submission), calling ``on_outcome`` as each finishes."""
        todo = list(reversed(tasks))
        try:
            while todo or any(s.task is not None for s in self.slots):
                for s in self.slots:
                    if s.task is None and todo:
                        if s.proc is not None and s.handled >= self.cfg.recycle:
                            self._stop(s)
                        if s.proc is None:
                            self._start(s)
                        s.task = todo.pop()
                        s.started = time.monotonic()
                        s.deadline = s.started + self.cfg.first_timeout
                        s.phase = "decode"
                        s.conn.send(s.task)
                busy = [s for s in self.slots if s.task is not None]
                if not busy:
                    continue
                now = time.monotonic()
                wait_for = max(0.01, min(s.deadline for s in busy) - now)
                ready = set(wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=min(wait_for, 1.0)))
                for s in busy:
                    self._poll(s, ready, on_outcome)
        finally:
            self.close()

    def _finish(self, s: _Slot, out: Outcome, on_outcome: Callable[[Outcome], None]) -> None:
        out.seconds = time.monotonic() - s.started
        s.task = None
        s.handled += 1
        on_outcome(out)

    def _poll(self, s: _Slot, ready: set, on_outcome: Callable[[Outcome], None]) -> None:
        task_id = s.task[0]
        try:
            while s.task is not None and s.conn.poll():
                kind, tid, data = s.conn.recv()
                if kind == "fatal":
                    raise FatalWorkerError(data)
                if tid != task_id:
                    continue
                if kind == "phase":
                    s.phase = data
                    s.deadline = s.started + self.cfg.total_timeout
                elif kind == "done":
                    self._finish(s, Outcome(tid, True, result=data), on_outcome)
                elif kind == "error":
                    self._finish(s, Outcome(tid, False, error=data), on_outcome)
        except (EOFError, OSError):
            pass
        if s.task is None:
            return
        if not s.proc.is_alive():
            code = s.proc.exitcode
            self._stop(s, kill=True)
            s.task = (task_id, None)
            error = f"worker process died (exit code {code}) during {s.phase}"
            self._finish(s, Outcome(task_id, False, error=error), on_outcome)
        elif time.monotonic() > s.deadline:
            limit = self.cfg.first_timeout if s.phase == "decode" else self.cfg.total_timeout
            phase = s.phase
            self._stop(s, kill=True)
            s.task = (task_id, None)
            error = f"timeout: {phase} took longer than {limit:g} s (worker killed)"
            self._finish(s, Outcome(task_id, False, error=error), on_outcome)

"""Distributed setup in one place: reads torchrun's (or SLURM's) environment; the rest asks a `DistInfo`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_dist_info() -> DistInfo:
    """Rank / world size / local rank from torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or SLURM (SLURM_PROCID, ...)."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env and int(env["SLURM_NTASKS"]) > 1:
        return DistInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistInfo()


def local_world_size() -> int:
    """Processes of this job on this machine (torchrun's LOCAL_WORLD_SIZE, SLURM's tasks per node), 1 if alone."""
    env = os.environ
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        if env.get(name, "").isdigit():
            return max(1, int(env[name]))
    return 1


def set_cpu_threads(loader_workers: int, threads: int | None = None) -> int:
    """Torch threads for a CPU process: ``threads`` if given, else this rank's share of the cores minus its loader
    workers (at least 1). OpenMP threads beyond the free cores spin against each other and slow a training step
    down several times over."""
    per_rank = (os.cpu_count() or 1) // local_world_size()
    n = threads or max(1, per_rank - loader_workers)
    torch.set_num_threads(n)
    return n


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun / srun; pick this process's device.

    With SLURM, MASTER_ADDR and MASTER_PORT must be exported by the job script (as for torchrun).
    """
    info = env_dist_info()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(info.local_rank)
        dev = torch.device("cuda", info.local_rank)
    else:
        dev = torch.device(device)
    if dev.type == "cpu":
        # denormal floats (tiny weights/activations after a few steps) slow CPU maths down many times over
        torch.set_flush_denormal(True)
    if info.distributed and not dist.is_initialized():
        if "RANK" not in os.environ:  # SLURM: init_process_group's env:// reads these names
            os.environ.update(RANK=str(info.rank), WORLD_SIZE=str(info.world_size))
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        log.info("process group: rank %d of %d (%s)", info.rank, info.world_size, backend)
    return info, dev


def current() -> DistInfo:
    """This process's rank and world size (from the live process group, else 0 of 1)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), env_dist_info().local_rank)
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's `obj`, in rank order (just [obj] when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, src: int = 0) -> object:
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks in place (a no-op when not distributed); returns `t`. Keep `t` on the rank's device."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def restart_count() -> int:
    """How often torchrun (``--max-restarts``) has restarted this job: TORCHELASTIC_RESTART_COUNT, 0 if unset."""
    value = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return int(value) if value.isdigit() else 0


def broadcast_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Copy `src`'s buffers (BatchNorm running statistics) to every rank."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for b in model.buffers():
            dist.broadcast(b.data, src=src)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

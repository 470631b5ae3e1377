"""Helpers for tests that spawn gloo ranks on this machine (torch.multiprocessing.spawn)."""

from __future__ import annotations

import os
import socket

import torch


def free_port() -> int:
    """A TCP port nobody listens on now, for MASTER_PORT."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def become_rank(rank: int, world: int, port: int) -> None:
    """Set the environment torchrun would give rank ``rank`` of ``world`` on this host, one thread each (two ranks
    on a small CPU would otherwise oversubscribe it)."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)

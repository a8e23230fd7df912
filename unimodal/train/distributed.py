"""The process group: rendezvous variables, initialisation and the few collectives the trainer needs.

One code path for every world size: a plain `python` run is a world of one
(the rendezvous variables are set here, on a free local port), `torchrun
--nproc_per_node N` or the `deepspeed` launcher set them for N processes.
Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import atexit
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

_RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_rendezvous_env() -> None:
    """Fill in the rendezvous variables a single process lacks (a launcher sets them all for N processes).

    Without them DeepSpeed would go looking for MPI.
    """
    env = os.environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    env.setdefault("LOCAL_RANK", env.get("RANK", "0"))
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in env:
        if env["WORLD_SIZE"] != "1":
            raise RuntimeError("MASTER_PORT is not set for a multi-process run: launch with torchrun or deepspeed")
        env["MASTER_PORT"] = str(free_port())


def init_distributed() -> DistInfo:
    """Join (or create) the default process group; it outlives the call so several runs in one process share it."""
    set_rendezvous_env()
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(shutdown_distributed)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def shutdown_distributed() -> None:
    """Leave and destroy the default process group, if any (`init_distributed` registers this to run at exit).

    A gloo group left alive until interpreter teardown, or torn down while a peer still
    has collectives in flight, can abort the process from a C++ destructor ("terminate
    called without an active exception"), turning a finished run's exit status into -6.
    So on gloo the ranks first meet at a barrier bounded by 30 s (a peer that died is
    waited for only that long), then destroy the group. `train` also ends a finished run
    with a barrier. The group is kept until exit (not destroyed when a run ends) because
    DeepSpeed caches it for further runs in the same process.
    """
    if not dist.is_initialized():
        return
    try:
        if dist.get_world_size() > 1 and dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=30))
    except Exception:  # noqa: BLE001 - a peer already gone: nothing left to wait for
        pass
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - teardown is best effort; the run's result is already written
        pass


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (returns x)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(t).item() > 0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s object on every rank (picklable Python objects only: paths, ints, strings)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]

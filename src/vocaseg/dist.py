"""Process-group queries and reductions that work with or without ``torch.distributed``.

The one place that asks whether a process group is running: metrics, losses, the evaluator and
the trainer all read :func:`dist_info` and reduce through these helpers, which are no-ops on a
single process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank, world size and local rank (GPU index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def dist_info() -> DistInfo:
    """Rank and world size of the running process group (0 and 1 without one)."""
    if not is_distributed():
        return DistInfo()
    return DistInfo(torch_dist.get_rank(), torch_dist.get_world_size())


def reduction_device() -> torch.device:
    """Where collective tensors must live: the current GPU under NCCL, else the CPU."""
    if is_distributed() and torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum ``value`` over processes (in place when distributed); returns it."""
    if is_distributed():
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.SUM)
    return value


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if is_distributed():
        torch_dist.barrier()

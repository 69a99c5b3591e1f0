"""Multi-process training helpers: torchrun set-up, deterministic sharding, the target normaliser.

The same command runs on one process or under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
in the environment): gloo on the CPU, NCCL on GPUs. :class:`ShardedSampler` shards a per-epoch
permutation like ``DistributedSampler`` and can start mid-epoch, which exact resumption needs.
:func:`global_target_count` turns per-micro-batch target counts into the normaliser that makes a
sum-over-targets loss independent of how the global batch is split (TagCLIP's N_m; GKC's
"number of GT masks, averaged over devices", as DETR and Mask2Former normalise). Rank queries and
reductions live in :mod:`vocaseg.dist`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist

from vocaseg.device import resolve_device
from vocaseg.dist import DistInfo, all_reduce_sum


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if the environment names one; pick this process's device.

    ``device``: ``auto`` (CUDA if available), ``cpu`` or ``cuda``. Returns (info, device).
    """
    if device != "auto":
        resolve_device(device)  # one clear line for a device that does not exist
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    torch_device = torch.device("cuda", info.local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(torch_device)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info, torch_device


def shutdown_distributed() -> None:
    """Leave the process group once every process is done with its collectives."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def global_target_count(
    counts: Sequence[float], info: DistInfo, device: torch.device
) -> torch.Tensor:
    """Normaliser for one optimiser step from this process's per-micro-batch ``counts``.

    Returns ``max(total over all micro-batches and processes, 1) / (world_size × micro-batches)``.
    A loss ``sum over targets / normaliser``, averaged over micro-batches by the trainer and over
    processes by DDP, then equals ``sum over the global batch / global count``: the same gradient
    as one process holding the whole global batch.
    """
    total = torch.tensor(float(sum(counts)), dtype=torch.float64, device=device)
    total = all_reduce_sum(total)
    return (total.clamp(min=1.0) / (info.world_size * len(counts))).float()


class ShardedSampler(torch.utils.data.Sampler[int]):
    """Indices of this process's shard of a seeded per-epoch permutation.

    The permutation depends only on ``(seed, epoch)``; process ``rank`` takes every
    ``world_size``-th index of it. With ``drop_last`` the tail that does not fill every shard is
    dropped; otherwise the head is repeated (as ``DistributedSampler``). :meth:`set_position`
    starts the epoch at a given index of the shard (to resume).
    """

    def __init__(
        self,
        num_samples: int,
        info: DistInfo,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        self.num_samples, self.info, self.seed = num_samples, info, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        world = info.world_size
        self.shard_size = num_samples // world if drop_last else -(-num_samples // world)
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def shard(self) -> list[int]:
        """This process's indices for the current epoch (the whole shard, from index 0)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        needed = self.shard_size * self.info.world_size
        order = (order * (needed // max(1, len(order)) + 1))[:needed]
        return order[self.info.rank :: self.info.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.start :])

    def __len__(self) -> int:
        return self.shard_size - self.start

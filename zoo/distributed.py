"""Data-parallel training under `torchrun`, with the loss of the whole global batch on every rank.

The three losses compare every sample of a batch with every other, so each rank computes its
shard's hash values, all-gathers the others' (detached) values, and evaluates the SAME full-batch
loss. Only its own rows carry gradient, so DistributedDataParallel's gradient average is the
full-batch gradient divided by the world size; `backward_scale()` undoes that division. A run with
N processes therefore follows a single-process run with the same global batch (up to float
rounding), as CLIP-style training does with `local_loss`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from cmhash.errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """This rank's contiguous part of a global batch, and the largest part's length (for padding)."""
        parts = np.array_split(rows, self.size)
        return parts[self.rank], len(parts[0])

    def gather(self, local: torch.Tensor, sizes: list[int], width: int) -> torch.Tensor:
        """The global batch's rows in rank order; only this rank's rows keep their gradient."""
        if not self.distributed:
            return local
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=local.device)
        padded[: len(local)] = local.detach()
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        parts = [p[:n] for p, n in zip(parts, sizes)]
        parts[self.rank] = local
        return torch.cat(parts)

    def backward_scale(self) -> float:
        return float(self.size)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_world(device: str) -> World:
    """Join the process group torchrun describes (WORLD_SIZE > 1), else a one-process world."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    world = World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but torch sees no CUDA device")
        torch.cuda.set_device(world.local_rank)
    return world


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()

"""Data-parallel training under ``torchrun``: ranks, barriers, sums and gathers over
``torch.distributed`` (gloo on the CPU, nccl on GPUs), and nothing at all in a single process."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 outside one), and the collective
    operations training needs."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: str) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, *values: float) -> list[float]:
        if self.world == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        # nccl reduces tensors on the GPU only
        device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def gather_rows(self, shard: Any, indices: list[int], total: int) -> Any:
        """Reassemble a feature matrix computed in shards (rows ``indices`` on this rank)."""
        import torch

        if self.world == 1:
            return shard
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, (indices, shard.cpu()))
        out = torch.empty((total, shard.shape[1]), dtype=shard.dtype)
        for idx, rows in parts:
            out[idx] = rows
        return out

    def epoch_order(self, count: int, seed: int, epoch: int) -> list[int]:
        """This rank's share of the epoch's shuffle of ``count`` examples: the order comes from
        ``(seed, epoch)`` alone (so a resumed run draws it again), padded from its start so that
        every rank runs as many batches."""
        import torch

        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(count, generator=generator).tolist()
        per_rank = math.ceil(len(order) / self.world)
        return (order * 2)[: per_rank * self.world][self.rank::self.world]

    def average_gradients(self, parameters: Any) -> None:
        """What DistributedDataParallel does after ``backward``: every rank's gradients averaged."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for param in parameters:
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world

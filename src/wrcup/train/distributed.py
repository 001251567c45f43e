"""A training process's place in a ``torchrun`` job, and what the run loop needs from the other ranks.

``batch_size`` is the global batch of one optimiser step; each rank takes an equal share (and splits it further
into ``grad_accum`` micro-batches). On CUDA BatchNorm is synchronised across ranks; on CPU (gloo) SyncBatchNorm
does not exist, so batch statistics are per micro-batch — the same as one process accumulating gradients over
the same micro-batches.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Distributed:
    """Rank and world size from torchrun's environment (one process without it); joins the process group."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder (checkpoints, log, summary)."""
        return self.rank == 0

    @staticmethod
    def device(name: str) -> torch.device:
        """``"cuda"`` → this process's GPU (``LOCAL_RANK``); any other device as named."""
        return torch.device(name if name != "cuda" else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")

    def micro_batch(self, batch_size: int, grad_accum: int) -> int:
        """Images per micro-batch: the global ``batch_size`` split over the ranks and ``grad_accum``."""
        micro = batch_size // (self.world * grad_accum)
        if micro * self.world * grad_accum != batch_size:
            raise ValueError(f"batch_size={batch_size} must be divisible by world size ({self.world}) × "
                             f"grad_accum ({grad_accum})")
        return micro

    def share(self, indices: list[int], micro: int, grad_accum: int) -> tuple[int, list[int]]:
        """This rank's part of a step's global batch ``indices``: (position of its first image, its images)."""
        first = self.rank * micro * grad_accum
        return first, indices[first:first + micro * grad_accum]

    def convert_batchnorm(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """SyncBatchNorm across the ranks on CUDA (before the optimiser is built); unchanged otherwise."""
        if self.enabled and device.type == "cuda":
            return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the steps run: DistributedDataParallel over ``model`` (gradients averaged in backward)."""
        return torch.nn.parallel.DistributedDataParallel(model) if self.enabled else model

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world
        return values

    def first_signal(self, signum: int | None, device) -> int | None:
        """A stop signal any rank received (every rank must leave the loop after the same step)."""
        if not self.enabled:
            return signum
        flag = torch.tensor([signum or 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag) or None

"""Data-parallel training under torchrun: which process this is, its device and its shard of the data.

`torchrun --nproc-per-node N -m zoo.train NAME` starts N copies of the training command with RANK,
LOCAL_RANK and WORLD_SIZE in their environment. Each copy trains a DistributedDataParallel replica
on its own shard of the in-memory dataset; DDP averages the gradients of every step over the
replicas, so they stay identical. Without those variables nothing here changes a run: one process.

The recipe keeps its meaning: `--batch-size` is the global batch (each process takes an equal share)
and the learning rate belongs to that global batch, so N processes take the same optimiser steps,
with the same gradients in expectation, as one process does.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from zoo.data import DigitSplit

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


class DistributedSetupError(RuntimeError):
    """The torchrun environment or the devices cannot give every process what it needs."""


@dataclass(frozen=True)
class Topology:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0  # index among the processes of this machine: picks its GPU
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone evaluates and writes the run's files."""
        return self.rank == 0


def topology_from_env(environ: Mapping[str, str] | None = None) -> Topology:
    """The Topology torchrun describes in the environment; one process when it set nothing."""
    environ = os.environ if environ is None else environ
    present = [name for name in TORCHRUN_VARIABLES if name in environ]
    if not present:
        return Topology()
    if len(present) != len(TORCHRUN_VARIABLES):
        missing = [name for name in TORCHRUN_VARIABLES if name not in environ]
        raise DistributedSetupError(
            f"{', '.join(present)} set but {', '.join(missing)} missing: start distributed training with "
            "`torchrun --nproc-per-node N -m zoo.train NAME`, which sets all three"
        )
    try:
        rank, local_rank, world_size = (int(environ[name]) for name in TORCHRUN_VARIABLES)
    except ValueError:
        values = ", ".join(f"{name}={environ[name]!r}" for name in TORCHRUN_VARIABLES)
        raise DistributedSetupError(f"torchrun's variables must be integers, got {values}") from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise DistributedSetupError(
            f"inconsistent torchrun variables RANK={rank}, LOCAL_RANK={local_rank}, WORLD_SIZE={world_size}"
        )
    return Topology(rank, local_rank, world_size)


def backend_for(device_type: str) -> str:
    """NCCL between GPUs, gloo between CPU processes (the backends torch recommends for each)."""
    return "nccl" if device_type == "cuda" else "gloo"


def device_for(device: str, topology: Topology, cuda_devices: int) -> torch.device:
    """The device of this process: with CUDA, the GPU numbered by its local rank."""
    if device != "cuda":
        return torch.device(device)
    if not topology.distributed:
        return torch.device("cuda")
    if topology.local_rank >= cuda_devices:
        raise DistributedSetupError(
            f"process {topology.local_rank} of this machine has no GPU of its own ({cuda_devices} visible): "
            f"start at most {cuda_devices} processes per machine (torchrun --nproc-per-node {cuda_devices})"
        )
    return torch.device("cuda", topology.local_rank)


def per_process_batch_size(global_batch_size: int, topology: Topology) -> int:
    """Each process's share of the global batch; the share must be whole and at least one image."""
    if global_batch_size % topology.world_size:
        raise ValueError(
            f"--batch-size {global_batch_size} is the global batch and must split evenly over "
            f"{topology.world_size} processes: use a multiple of {topology.world_size}"
        )
    return global_batch_size // topology.world_size


def shard(split: DigitSplit, topology: Topology) -> DigitSplit:
    """This rank's training images: every world_size-th one from its rank, the same count on every rank.

    Equal shards give every rank the same number of steps an epoch (a rank with one step more would
    wait forever for the others' gradients); the at most world_size - 1 images left over sit out.
    """
    if not topology.distributed:
        return split
    per_rank = len(split) // topology.world_size
    if per_rank < 1:
        raise ValueError(f"{len(split)} training images cannot be shared out over {topology.world_size} processes")
    images = split.images[topology.rank :: topology.world_size][:per_rank].contiguous()
    labels = split.labels[topology.rank :: topology.world_size][:per_rank].contiguous()
    return DigitSplit(images, labels, split.dataset, split.classes)


@contextlib.contextmanager
def process_group(topology: Topology, device: torch.device) -> Iterator[None]:
    """Join the other processes for the run (a no-op for one process); leave together at the end."""
    if not topology.distributed:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device.type), rank=topology.rank, world_size=topology.world_size)
    try:
        yield
        # Rank 0 still plots after the last step; the others wait for it instead of tearing down under it.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def data_parallel(model: nn.Module, device: torch.device, topology: Topology) -> nn.Module:
    """The module to train: `model` itself for one process, else a DDP replica that shares its parameters."""
    if not topology.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sum_over_processes(values: torch.Tensor, topology: Topology) -> torch.Tensor:
    """`values` summed element-wise over every process (unchanged for one process)."""
    if topology.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def replicas_identical(model: nn.Module, topology: Topology) -> bool:
    """Whether every process holds bit-identical parameters: the elementwise max and min over ranks agree."""
    if not topology.distributed:
        return True
    flat = torch.cat([parameter.detach().reshape(-1) for parameter in model.parameters()])
    highest, lowest = flat.clone(), flat.clone()
    dist.all_reduce(highest, op=dist.ReduceOp.MAX)
    dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
    return bool(torch.equal(highest, lowest))

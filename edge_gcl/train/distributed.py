"""Devices and processes for training: one `init_distributed_device`, as open_clip's trainer has.

    edge-gcl train --device cuda ...                                      one process, one GPU
    torchrun --nproc-per-node 8 -m edge_gcl.cli train --device cuda ...   one node, 8 GPUs
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29400 -m edge_gcl.cli train ...         two nodes (run on each)
    torchrun --nproc-per-node 2 -m edge_gcl.cli train --device cpu ...    two CPU processes (gloo)

The world (rank, local rank, size) comes from torchrun's environment (RANK, LOCAL_RANK,
WORLD_SIZE), or from SLURM's (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS) under `srun` when
MASTER_ADDR and MASTER_PORT are set. Processes join one group over `env://`: NCCL on CUDA, gloo on
the CPU. Each process of a multi-GPU node takes `cuda:LOCAL_RANK`.

Nothing here decides what a rank computes: `edge_gcl.train.loop` wraps the model in PyTorch's
`DistributedDataParallel` and the loss gathers every rank's features (`edge_gcl.loss`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..device import DeviceError, resolve_device


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_master(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class DistEnv:
    world: World
    device: torch.device
    backend: str | None = None  # "nccl" or "gloo" when the process group is up, else None

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def size(self) -> int:
        return self.world.size

    @property
    def is_master(self) -> bool:
        return self.world.is_master

    @property
    def distributed(self) -> bool:
        return self.world.size > 1


def world_from_env(env: Mapping[str, str] = os.environ) -> World:
    """torchrun's RANK / LOCAL_RANK / WORLD_SIZE, else SLURM's under `srun` (with MASTER_ADDR set), else
    one process."""
    if "WORLD_SIZE" in env:
        return World(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), int(env["WORLD_SIZE"]))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "MASTER_ADDR" in env:
        return World(int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0")), int(env["SLURM_NTASKS"]))
    return World()


def init_distributed_device(spec: str = "auto", env: Mapping[str, str] = os.environ) -> DistEnv:
    """Pick this process's device and, under torchrun (or srun), join the process group.

    One GPU per process: with several processes on a node, `--device cuda` gives each
    `cuda:LOCAL_RANK`, and naming one GPU (`cuda:1`) is refused, since NCCL cannot share a GPU
    between ranks.
    """
    world = world_from_env(env)
    if world.size > 1 and re.fullmatch(r"\s*cuda:\d+\s*", str(spec).lower()):
        raise DeviceError(f"--device {spec}: names one GPU for {world.size} processes; give --device cuda "
                          "(each process takes cuda:LOCAL_RANK) or CUDA_VISIBLE_DEVICES")
    device = resolve_device(spec, local_rank=world.local_rank if world.size > 1 else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world.size == 1:
        return DistEnv(world, device)
    if device.type == "mps":
        raise DeviceError(f"--device {spec}: PyTorch has no process group for MPS; train on one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        options: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        if "MASTER_ADDR" in env and "RANK" not in env:  # srun without torchrun: env:// reads these names
            os.environ.update(RANK=str(world.rank), WORLD_SIZE=str(world.size), LOCAL_RANK=str(world.local_rank))
        dist.init_process_group(backend, **options)
    return DistEnv(World(dist.get_rank(), world.local_rank, dist.get_world_size()), device, backend)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_gather_objects(value: Any, env: DistEnv) -> list[Any]:
    """Every rank's `value`, in rank order ([value] on one process)."""
    if not env.distributed:
        return [value]
    out: list[Any] = [None] * env.size
    dist.all_gather_object(out, value)
    return out


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()

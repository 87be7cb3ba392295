"""Native CLIP: a ViT image tower and a causal text transformer, and loaders for real checkpoints.

Both towers are written for static-shape ONNX export to Snapdragon NPUs:
- attention is spelled out (Linear -> MatMul -> Softmax -> MatMul), no `nn.MultiheadAttention`;
- masks are additive and finite (`MASK_VALUE`), never -inf, so fp16/int8 graphs cannot make NaNs;
- the text tower pools at the end-of-text token found from the attention mask with arithmetic
  (a one-hot of the last real position, then a MatMul), with no argmax over token ids.

Parameter names follow open_clip (`ln_1`, `attn`, `ln_2`, `mlp`, `ln_final`, ...), with the
q/k/v projections fused in one `qkv` Linear like open_clip's `in_proj_weight`.

Checkpoints: `load_hf_clip(folder)` reads a Hugging Face `CLIPModel` folder (config.json +
model.safetensors or pytorch_model.bin); `load_open_clip_pt(path)` reads an open_clip /
original TinyCLIP `.pt` (plain, `{"state_dict": ...}`, `module.`-prefixed, or TinyCLIP's
`_image_encoder.` / `_text_encoder.` / `_logit_scale.` layout).
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import (
    ImagePreprocess,
    ModelConfig,
    TextPreprocess,
    TextTransformerConfig,
    VisionTransformerConfig,
    load_preset,
)
from .base import DualEncoder

# Added to the attention score of a key a query may not see. exp(-1e4) is exactly 0 in fp32 and
# fp16, and -1e4 stays representable in fp16 (max 65504), unlike -inf or finfo.min.
MASK_VALUE = -1e4


# ----------------------------------------------------------------------------------------------
# Building blocks


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def _activation(name: str) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()  # exact (erf) GELU, as open_clip's nn.GELU and Hugging Face's "gelu"
    raise ValueError(f"unknown activation {name!r}; expected 'quick_gelu' or 'gelu'")


class Attention(nn.Module):
    """Multi-head self-attention with an optional additive bias on the scores."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)  # rows: q, k, v (open_clip's in_proj)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        H = self.heads
        q, k, v = self.qkv(x).split(C, dim=-1)  # (B, T, C) each
        q = q.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, hd)
        v = v.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, hd)
        if torch.onnx.is_in_onnx_export():  # the exported graph: plain MatMul / Add / Softmax, as the HTP compiles it
            att = (q * (C // H) ** -0.5) @ k.transpose(-2, -1)  # (B, H, T, T)
            if bias is not None:
                att = att + bias  # (B, 1, T, T) broadcast over heads
            y = att.softmax(dim=-1) @ v  # (B, H, T, hd)
        else:  # the same math in one fused kernel (FlashAttention / memory-efficient on GPUs): training speed
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype))
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.out(y)


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.act = _activation(act)
        self.proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    """Pre-LN residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: str, eps: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, round(width * mlp_ratio), act)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), bias)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


def _init_blocks(blocks: nn.ModuleList, width: int) -> None:
    """open_clip's initialisation for a stack of residual blocks (used for random models only)."""
    proj_std = width**-0.5 * (2 * len(blocks)) ** -0.5
    for block in blocks:
        nn.init.normal_(block.attn.qkv.weight, std=width**-0.5)
        nn.init.normal_(block.attn.out.weight, std=proj_std)
        nn.init.normal_(block.mlp.fc.weight, std=(2 * width) ** -0.5)
        nn.init.normal_(block.mlp.proj.weight, std=proj_std)
        for linear in (block.attn.qkv, block.attn.out, block.mlp.fc, block.mlp.proj):
            nn.init.zeros_(linear.bias)


# ----------------------------------------------------------------------------------------------
# Towers


class VisionTransformer(nn.Module):
    """(B, 3, S, S) float32 pixels -> (B, embed_dim) L2-normalised embeddings."""

    def __init__(self, cfg: VisionTransformerConfig, embed_dim: int):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        self.image_size = cfg.image_size
        width, grid = cfg.width, cfg.image_size // cfg.patch_size
        self.patch_embed = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(width**-0.5 * torch.randn(width))
        self.positional_embedding = nn.Parameter(width**-0.5 * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.blocks = nn.ModuleList(
            Block(width, cfg.heads, cfg.mlp_ratio, cfg.act, cfg.layer_norm_eps) for _ in range(cfg.layers)
        )
        self.ln_post = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.proj = nn.Linear(width, embed_dim, bias=False)
        _init_blocks(self.blocks, width)
        nn.init.normal_(self.proj.weight, std=width**-0.5)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        B, _, H, W = pixels.shape
        if (H, W) != (self.image_size, self.image_size):
            raise ValueError(
                f"expected (B, 3, {self.image_size}, {self.image_size}) pixels, got {tuple(pixels.shape)}"
            )
        x = self.patch_embed(pixels)  # (B, C, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C), N = g*g
        cls = self.class_embedding.expand(B, 1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding  # (B, N+1, C)
        x = self.ln_pre(x)
        for block in self.blocks:
            x = block(x)  # (B, N+1, C)
        x = self.ln_post(x[:, 0])  # (B, C) the class token
        x = self.proj(x)  # (B, D)
        return F.normalize(x, dim=-1)


class TextTransformer(nn.Module):
    """(B, L) token ids + (B, L) 0/1 mask -> (B, embed_dim) L2-normalised embeddings.

    The mask must be right-padded (ones, then zeros), as `edge_gcl.tokenizer.Tokenizer` makes
    it; the last real token is the end-of-text token, where the text is pooled. L may be shorter
    than the context length.
    """

    def __init__(self, cfg: TextTransformerConfig, embed_dim: int):
        super().__init__()
        width = cfg.width
        self.context_length = cfg.context_length
        self.token_embedding = nn.Embedding(cfg.vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, width))
        self.blocks = nn.ModuleList(
            Block(width, cfg.heads, cfg.mlp_ratio, cfg.act, cfg.layer_norm_eps) for _ in range(cfg.layers)
        )
        self.ln_final = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.proj = nn.Linear(width, embed_dim, bias=False)
        # 1 where query i may attend key j (j <= i). A constant, so it is not in the state dict.
        causal = torch.ones(cfg.context_length, cfg.context_length).tril()  # (L, L)
        self.register_buffer("causal", causal, persistent=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        _init_blocks(self.blocks, width)
        nn.init.normal_(self.proj.weight, std=width**-0.5)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        if T > self.context_length:
            raise ValueError(f"sequence length {T} exceeds the context length {self.context_length}")
        x = self.token_embedding(input_ids.to(torch.int32))  # (B, T, C); int32 gather indices
        x = x + self.positional_embedding[:T]  # (B, T, C)
        mask = attention_mask.to(x.dtype)  # (B, T) 1 = real token
        visible = self.causal[:T, :T] * mask[:, None, None, :]  # (B, 1, T, T) causal AND key not padding
        bias = (1.0 - visible) * MASK_VALUE  # (B, 1, T, T) 0 or -1e4
        for block in self.blocks:
            x = block(x, bias)  # (B, T, C)
        # One-hot of the last real position: mask[t] - mask[t+1], clipped at 0 (also right for left padding).
        next_mask = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)  # (B, T) mask[t+1]
        eot = F.relu(mask - next_mask)  # (B, T)
        x = (eot.unsqueeze(1) @ x).squeeze(1)  # (B, C) the end-of-text token's features
        x = self.ln_final(x)  # per-token LayerNorm, so pooling first is the same
        x = self.proj(x)  # (B, D)
        return F.normalize(x, dim=-1)


def build_tinyclip(config: ModelConfig) -> DualEncoder:
    """A randomly initialised CLIP for a `family == "tinyclip"` config."""
    if config.family != "tinyclip" or config.vision is None or config.text_tower is None:
        raise ValueError(
            f"{config.name}: build_tinyclip needs family 'tinyclip' with 'vision' and 'text_tower' set"
        )
    if config.image.size != config.vision.image_size:
        raise ValueError(
            f"{config.name}: image.size {config.image.size} != vision.image_size {config.vision.image_size}"
        )
    if config.text.context_length > config.text_tower.context_length:
        raise ValueError(
            f"{config.name}: text.context_length {config.text.context_length} exceeds "
            f"text_tower.context_length {config.text_tower.context_length}"
        )
    visual = VisionTransformer(config.vision, config.embed_dim)
    text = TextTransformer(config.text_tower, config.embed_dim)
    return DualEncoder(config, visual, text)


# ----------------------------------------------------------------------------------------------
# Checkpoint plumbing shared by both loaders


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message starts with its path."""


def _block_keys(prefix: str) -> dict[str, str]:
    """Native names of one block's tensors (relative to `prefix`) -> open_clip names."""
    return {
        f"{prefix}.ln_1.weight": "ln_1.weight",
        f"{prefix}.ln_1.bias": "ln_1.bias",
        f"{prefix}.attn.qkv.weight": "attn.in_proj_weight",
        f"{prefix}.attn.qkv.bias": "attn.in_proj_bias",
        f"{prefix}.attn.out.weight": "attn.out_proj.weight",
        f"{prefix}.attn.out.bias": "attn.out_proj.bias",
        f"{prefix}.ln_2.weight": "ln_2.weight",
        f"{prefix}.ln_2.bias": "ln_2.bias",
        f"{prefix}.mlp.fc.weight": "mlp.c_fc.weight",
        f"{prefix}.mlp.fc.bias": "mlp.c_fc.bias",
        f"{prefix}.mlp.proj.weight": "mlp.c_proj.weight",
        f"{prefix}.mlp.proj.bias": "mlp.c_proj.bias",
    }


class _Keys:
    """Takes tensors out of a foreign state dict by name, remembering which were missing."""

    def __init__(self, state: Mapping[str, torch.Tensor], source: Path):
        self.state = dict(state)
        self.source = source
        self.missing: list[str] = []

    def take(self, key: str) -> torch.Tensor:
        if key not in self.state:
            self.missing.append(key)
            return torch.empty(0)
        return self.state.pop(key)

    def check(self, *, ignore: re.Pattern[str] | None = None) -> None:
        unexpected = sorted(k for k in self.state if not (ignore and ignore.fullmatch(k)))
        if self.missing or unexpected:
            raise CheckpointError(
                f"{self.source}: weights do not match the CLIP architecture; "
                f"missing keys: {_short(self.missing)}; unexpected keys: {_short(unexpected)}"
            )


def _short(keys: list[str], n: int = 8) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _load_native(model: DualEncoder, state: dict[str, torch.Tensor], source: Path) -> DualEncoder:
    """Strict load of a native-named state dict, with shape errors that name the file."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: missing keys: {_short(missing)}; unexpected keys: {_short(unexpected)}"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(
            f"{source}: tensor shapes do not match the model config (file vs model): {_short(wrong)}"
        )
    model.load_state_dict(state, strict=True)  # casts fp16/bf16 checkpoints to the model's float32
    return model.eval()


def _count_layers(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


# ----------------------------------------------------------------------------------------------
# Hugging Face CLIPModel folders

_HF_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Buffers some transformers versions saved; they carry no weights.
_HF_IGNORED = re.compile(r"(text|vision)_model\.embeddings\.position_ids")


def load_hf_clip(folder: str | Path) -> DualEncoder:
    """A Hugging Face `CLIPModel` folder (config.json + safetensors or .bin weights) -> DualEncoder.

    The folder's `tokenizer.json`, if present, becomes the model's tokenizer; `preprocessor_config.json`,
    if present, supplies the image mean/std/interpolation.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: not a folder (expected a Hugging Face CLIPModel checkpoint folder)"
        )
    config = _hf_model_config(folder)
    state, weights_path = _read_hf_weights(folder)
    native = _from_hf_state(state, config, weights_path)
    model = build_tinyclip(config)
    _load_native(model, native, weights_path)
    model.source = folder
    return model


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _square(value: object, what: str, path: Path) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise CheckpointError(f"{path}: only square {what} is supported, got {value}")
        value = value[0]
    return int(value)  # type: ignore[arg-type]


def _hf_act(name: str, path: Path) -> str:
    if name not in ("quick_gelu", "gelu"):
        raise CheckpointError(f"{path}: hidden_act {name!r} is not supported (quick_gelu or gelu)")
    return name


def _hf_model_config(folder: Path) -> ModelConfig:
    """ModelConfig from a CLIPModel config.json; absent keys take transformers' CLIP defaults."""
    path = folder / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (a Hugging Face CLIPModel folder needs config.json)")
    hf = _read_json(path)
    if hf.get("model_type") != "clip":
        raise CheckpointError(
            f"{path}: model_type is {hf.get('model_type')!r}, expected 'clip' (a CLIPModel with both towers)"
        )
    # Old configs may also carry `*_config_dict`, which transformers lets override `*_config`.
    t = {**(hf.get("text_config") or {}), **(hf.get("text_config_dict") or {})}
    v = {**(hf.get("vision_config") or {}), **(hf.get("vision_config_dict") or {})}
    if v.get("num_channels", 3) != 3:
        raise CheckpointError(f"{path}: num_channels {v['num_channels']} is not supported (RGB only)")

    t_width, v_width = t.get("hidden_size", 512), v.get("hidden_size", 768)
    vocab_size = t.get("vocab_size", 49408)
    eos = t.get("eos_token_id", 49407)
    if isinstance(eos, list):
        eos = eos[0]
    if eos == 2:  # pre-2023 configs: transformers then pooled at the highest id, CLIP's <|endoftext|>
        eos = vocab_size - 1
    text_tower = TextTransformerConfig(
        vocab_size=vocab_size,
        context_length=t.get("max_position_embeddings", 77),
        width=t_width,
        layers=t.get("num_hidden_layers", 12),
        heads=t.get("num_attention_heads", 8),
        mlp_ratio=t.get("intermediate_size", 2048) / t_width,
        act=_hf_act(t.get("hidden_act", "quick_gelu"), path),  # type: ignore[arg-type]
        layer_norm_eps=t.get("layer_norm_eps", 1e-5),
        eos_token_id=eos,
    )
    image_size = _square(v.get("image_size", 224), "image_size", path)
    vision = VisionTransformerConfig(
        image_size=image_size,
        patch_size=_square(v.get("patch_size", 32), "patch_size", path),
        width=v_width,
        layers=v.get("num_hidden_layers", 12),
        heads=v.get("num_attention_heads", 12),
        mlp_ratio=v.get("intermediate_size", 3072) / v_width,
        act=_hf_act(v.get("hidden_act", "quick_gelu"), path),  # type: ignore[arg-type]
        layer_norm_eps=v.get("layer_norm_eps", 1e-5),
    )
    tokenizer_file = "tokenizer.json" if (folder / "tokenizer.json").exists() else None
    return ModelConfig(
        name=folder.resolve().name,
        family="tinyclip",
        embed_dim=hf.get("projection_dim", 512),
        image=_hf_image_preprocess(folder, image_size),
        text=TextPreprocess(
            tokenizer="clip-bpe", context_length=text_tower.context_length, tokenizer_file=tokenizer_file
        ),
        vision=vision,
        text_tower=text_tower,
        init_logit_scale=math.exp(hf.get("logit_scale_init_value", 2.6592)),
    )


def _hf_image_preprocess(folder: Path, size: int) -> ImagePreprocess:
    path = folder / "preprocessor_config.json"
    if not path.exists():
        return ImagePreprocess(size=size)
    pp = _read_json(path)
    default = ImagePreprocess()
    return ImagePreprocess(
        size=size,
        mean=tuple(pp.get("image_mean", default.mean)),  # type: ignore[arg-type]
        std=tuple(pp.get("image_std", default.std)),  # type: ignore[arg-type]
        resize="crop",
        interpolation="bilinear" if pp.get("resample", 3) == 2 else "bicubic",  # PIL: 2 bilinear, 3 bicubic
    )


def _read_hf_weights(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The folder's weights (single file or sharded index) and the path to name in errors."""
    for name in _HF_WEIGHTS:
        path = folder / name
        if path.exists():
            break
    else:
        raise FileNotFoundError(f"{folder}: no weights found (looked for {', '.join(_HF_WEIGHTS)})")
    if name.endswith(".index.json"):
        weight_map = _read_json(path).get("weight_map", {})
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(_read_weight_file(folder / shard))
        return state, path
    return _read_weight_file(path), path


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: weight file is missing")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    return _torch_load(path)


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0]  # torch's own explanation runs to a dozen lines
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {first})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (optionally under 'state_dict')")
    return dict(obj)


def _from_hf_state(
    state: dict[str, torch.Tensor], config: ModelConfig, source: Path
) -> dict[str, torch.Tensor]:
    """Hugging Face CLIPModel names -> native names (q/k/v fused, projections as Linear weights)."""
    assert config.vision is not None and config.text_tower is not None
    keys = _Keys(state, source)
    out: dict[str, torch.Tensor] = {}

    def blocks(hf_prefix: str, prefix: str, layers: int) -> None:
        for i in range(layers):
            hf, ours = f"{hf_prefix}.encoder.layers.{i}", f"{prefix}.blocks.{i}"
            attn = f"{hf}.self_attn"
            for p in ("weight", "bias"):
                out[f"{ours}.attn.qkv.{p}"] = torch.cat([keys.take(f"{attn}.{n}_proj.{p}") for n in "qkv"])
                out[f"{ours}.attn.out.{p}"] = keys.take(f"{attn}.out_proj.{p}")
                out[f"{ours}.ln_1.{p}"] = keys.take(f"{hf}.layer_norm1.{p}")
                out[f"{ours}.ln_2.{p}"] = keys.take(f"{hf}.layer_norm2.{p}")
                out[f"{ours}.mlp.fc.{p}"] = keys.take(f"{hf}.mlp.fc1.{p}")
                out[f"{ours}.mlp.proj.{p}"] = keys.take(f"{hf}.mlp.fc2.{p}")

    out["visual.patch_embed.weight"] = keys.take("vision_model.embeddings.patch_embedding.weight")
    out["visual.class_embedding"] = keys.take("vision_model.embeddings.class_embedding")
    out["visual.positional_embedding"] = keys.take("vision_model.embeddings.position_embedding.weight")
    for p in ("weight", "bias"):
        out[f"visual.ln_pre.{p}"] = keys.take(f"vision_model.pre_layrnorm.{p}")  # sic
        out[f"visual.ln_post.{p}"] = keys.take(f"vision_model.post_layernorm.{p}")
        out[f"text.ln_final.{p}"] = keys.take(f"text_model.final_layer_norm.{p}")
    blocks("vision_model", "visual", config.vision.layers)
    out["visual.proj.weight"] = keys.take("visual_projection.weight")  # (D, C)

    out["text.token_embedding.weight"] = keys.take("text_model.embeddings.token_embedding.weight")
    out["text.positional_embedding"] = keys.take("text_model.embeddings.position_embedding.weight")
    blocks("text_model", "text", config.text_tower.layers)
    out["text.proj.weight"] = keys.take("text_projection.weight")  # (D, C)
    out["logit_scale"] = keys.take("logit_scale")
    keys.check(ignore=_HF_IGNORED)
    return out


# ----------------------------------------------------------------------------------------------
# open_clip / original TinyCLIP .pt files

# Non-weight entries that open_clip / OpenAI state dicts may carry.
_OPEN_CLIP_IGNORED = re.compile(r"(visual\.)?attn_mask|input_resolution|context_length|vocab_size")


def load_open_clip_pt(path: str | Path, *, config: ModelConfig | str | None = None) -> DualEncoder:
    """An open_clip-layout CLIP ViT `.pt` (e.g. TinyCLIP-ViT-8M-16-Text-3M-YFCC15M.pt) -> DualEncoder.

    `config`: a ModelConfig or preset name; None infers the architecture from tensor shapes with
    open_clip's conventions: heads = width // 64 and exact GELU (what TinyCLIP and open_clip use
    unless a "-quickgelu" config was chosen; for OpenAI's QuickGELU weights pass a config).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    state = _open_clip_keys(_torch_load(path))
    if config is None:
        config = _infer_open_clip_config(state, path)
    elif isinstance(config, str):
        config = load_preset(config)
    model = build_tinyclip(config)
    assert config.vision is not None and config.text_tower is not None
    native = _from_open_clip_state(state, config.vision.layers, config.text_tower.layers, path)
    return _load_native(model, native, path)


def _open_clip_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo the wrappers around open_clip names: DDP `module.`, TinyCLIP's `_image_encoder.` /
    `_text_encoder.` / `_logit_scale.` (each possibly followed by `module.`), open_clip's `text.`."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        for wrapper in ("_image_encoder.", "_text_encoder.", "_logit_scale."):
            if key.startswith(wrapper):
                key = key[len(wrapper) :].removeprefix("module.")
        if key.startswith("text."):  # open_clip CustomTextCLIP keeps the text tower under `text.`
            key = key[len("text.") :]
        out[key] = value
    return out


def _infer_open_clip_config(state: Mapping[str, torch.Tensor], path: Path) -> ModelConfig:
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"{path}: not an open_clip CLIP ViT checkpoint (no {key!r})")
        return tuple(state[key].shape)

    width, _, patch, _ = shape("visual.conv1.weight")  # (C, 3, P, P)
    n_pos = shape("visual.positional_embedding")[0]  # N + 1
    grid = math.isqrt(n_pos - 1)
    if grid * grid + 1 != n_pos:
        raise CheckpointError(f"{path}: visual.positional_embedding has {n_pos} rows, not a square grid + 1")
    embed_dim = shape("text_projection")[1]  # (C_text, D)
    if shape("visual.proj")[1] != embed_dim:
        raise CheckpointError(f"{path}: visual.proj and text_projection disagree on the embedding size")
    vocab_size, t_width = shape("token_embedding.weight")
    context_length = shape("positional_embedding")[0]
    v_mlp = shape("visual.transformer.resblocks.0.mlp.c_fc.weight")[0]
    t_mlp = shape("transformer.resblocks.0.mlp.c_fc.weight")[0]
    vision = VisionTransformerConfig(
        image_size=patch * grid,
        patch_size=patch,
        width=width,
        layers=_count_layers(state, "visual.transformer.resblocks."),
        heads=max(1, width // 64),
        mlp_ratio=v_mlp / width,
        act="gelu",
    )
    text_tower = TextTransformerConfig(
        vocab_size=vocab_size,
        context_length=context_length,
        width=t_width,
        layers=_count_layers(state, "transformer.resblocks."),
        heads=max(1, t_width // 64),
        mlp_ratio=t_mlp / t_width,
        act="gelu",
        eos_token_id=vocab_size - 1,  # CLIP's <|endoftext|> is the last id
    )
    return ModelConfig(
        name=path.stem,
        family="tinyclip",
        embed_dim=embed_dim,
        image=ImagePreprocess(size=vision.image_size),
        text=TextPreprocess(tokenizer="clip-bpe", context_length=context_length),
        vision=vision,
        text_tower=text_tower,
    )


def _from_open_clip_state(
    state: dict[str, torch.Tensor], vision_layers: int, text_layers: int, source: Path
) -> dict[str, torch.Tensor]:
    """open_clip names -> native names (projection matrices transposed into Linear weights)."""
    keys = _Keys(state, source)
    out: dict[str, torch.Tensor] = {
        "visual.patch_embed.weight": keys.take("visual.conv1.weight"),
        "visual.class_embedding": keys.take("visual.class_embedding"),
        "visual.positional_embedding": keys.take("visual.positional_embedding"),
        "visual.proj.weight": keys.take("visual.proj").t(),  # (C, D) -> (D, C)
        "text.token_embedding.weight": keys.take("token_embedding.weight"),
        "text.positional_embedding": keys.take("positional_embedding"),
        "text.proj.weight": keys.take("text_projection").t(),  # (C, D) -> (D, C)
        "logit_scale": keys.take("logit_scale"),
    }
    for ours, theirs in (
        ("visual.ln_pre", "visual.ln_pre"),
        ("visual.ln_post", "visual.ln_post"),
        ("text.ln_final", "ln_final"),
    ):
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = keys.take(f"{theirs}.{p}")
    for tower, prefix, layers in (
        ("visual", "visual.transformer", vision_layers),
        ("text", "transformer", text_layers),
    ):
        for i in range(layers):
            for ours, theirs in _block_keys(f"{tower}.blocks.{i}").items():
                out[ours] = keys.take(f"{prefix}.resblocks.{i}.{theirs}")
    keys.check(ignore=_OPEN_CLIP_IGNORED)
    return out

"""The interface every model family implements, and its numpy-facing embedder."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..embedding import ImageInput
from ..tokenizer import Tokenizer, check_text
from ..transform import preprocess


class DualEncoder(nn.Module):
    """Two towers into one space; both return L2-normalised (B, D) embeddings.

    `visual(pixels)`: (B, 3, S, S) float32 preprocessed as `config.image` says -> (B, D).
    `text(input_ids, attention_mask)`: (B, L) integer ids and 0/1 mask -> (B, D).
    Each tower is a self-contained `nn.Module`, so export traces them one at a time.
    """

    def __init__(self, config: ModelConfig, visual: nn.Module, text: nn.Module):
        super().__init__()
        self.config = config
        self.visual = visual
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.init_logit_scale)))  # log(1/tau)
        self.source: Path | None = None  # the folder weights were loaded from, if any

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids, attention_mask)

    def forward(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> image (B, D), text (B, D), logit_scale = 1/tau (scalar)."""
        return self.encode_image(pixels), self.encode_text(input_ids, attention_mask), self.logit_scale.exp()

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_config(self.config.text, self.source)


def weights_id(model: DualEncoder) -> str:
    """`"<config name>-<12 hex>"`: the name plus a SHA-256 of every weight, so two models agree on
    an id exactly when their weights do (the id an index records and the manifest of the exported
    artifacts carries; see `export.compile`).

    Hashed: the full `state_dict` in sorted key order, each entry as its key's UTF-8 bytes then the
    tensor as contiguous float32 bytes (integer buffers included, cast to float32).
    """
    digest = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().to(device="cpu", dtype=torch.float32).contiguous().numpy().tobytes())
    return f"{model.config.name}-{digest.hexdigest()[:12]}"


class TorchEmbedder:
    """`Embedder` over a PyTorch `DualEncoder` (float32, no grad) on `device` (default: the CPU; a
    `torch.device` or a `--device` spelling, `edge_gcl.device.resolve_device`).

    `model_id` defaults to `weights_id(model)`, the id of artifacts exported from the same weights;
    `name` (what it was loaded by: `default`, a checkpoint folder's name) to the config's name.
    `tokenizer` is public: the index sizes note chunks with its `count_tokens`.
    """

    def __init__(self, model: DualEncoder, *, model_id: str | None = None, device: torch.device | str = "cpu",
                 name: str | None = None):
        from ..device import resolve_device

        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model_id = model_id or weights_id(model)
        self.model_name = name or model.config.name  # for people (`edge_gcl.embedding.model_name`)
        self.model = model.eval().to(self.device)
        self.embed_dim = model.config.embed_dim
        self.tokenizer = model.tokenizer()

    @torch.no_grad()
    def embed_images(
        self, images: Sequence[ImageInput], *, batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        out = np.zeros((len(images), self.embed_dim), np.float32)
        for start in tqdm(range(0, len(images), batch_size), desc="images", disable=not progress):
            batch = images[start : start + batch_size]
            pixels = torch.from_numpy(np.stack([preprocess(x, self.model.config.image) for x in batch]))  # (B, 3, S, S)
            out[start : start + len(batch)] = self.model.encode_image(pixels.to(self.device)).float().cpu().numpy()
        return out

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        texts = [check_text(t, name=f"text[{i}]") for i, t in enumerate(texts)]
        out = np.zeros((len(texts), self.embed_dim), np.float32)
        for start in tqdm(range(0, len(texts), batch_size), desc="texts", disable=not progress):
            ids, mask = self.tokenizer(texts[start : start + batch_size])  # (B, L) each
            emb = self.model.encode_text(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))
            out[start : start + len(ids)] = emb.float().cpu().numpy()
        return out

"""What every embedder gives the rest of the SDK: L2-normalised float32 rows in one space.

Torch-free on purpose: the on-device runtime, the index and the evaluation harness import
this module, and the PyTorch embedder (`edge_gcl.models.TorchEmbedder`) and the ONNX Runtime
embedder (`edge_gcl.runtime`) both implement `Embedder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Union, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

ImageInput = Union[str, Path, "Image.Image"]


@runtime_checkable
class Embedder(Protocol):
    model_id: str  # names the weights: embeddings of different model ids never mix
    embed_dim: int

    def embed_images(
        self, images: Sequence[ImageInput], *, batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """(N, D) float32, rows L2-normalised. Raises ImageDecodeError naming a bad input."""
        ...

    def embed_texts(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(N, D) float32, rows L2-normalised. Raises ValueError naming an empty text."""
        ...


def model_name(embedder: Embedder) -> str:
    """A model's one name for people, everywhere (CLI, index, app, /api/stats): the model an
    artifacts folder was built from (`default`; the manifest's `extra["source_model"]`), else the name
    it was loaded by (a PyTorch model), else its config name, else its id. `model_id` names the
    weights; `model_label` shows both."""
    manifest = getattr(embedder, "manifest", None)
    extra = getattr(manifest, "extra", None) or {}
    name = extra.get("source_model") or getattr(embedder, "model_name", None) or getattr(manifest, "model_name", None)
    return str(name or embedder.model_id)


def model_label(name: str, model_id: str) -> str:
    """`default (lite-12038ff96c01)`: the name and, when it says more, the id of the weights."""
    return name if name == model_id else f"{name} ({model_id})"


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def fuse(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Score-fusion embedding of a photo with its note (CLIP-SF): normalize(e_i + e_t)."""
    return l2_normalize(np.asarray(image_emb, np.float32) + np.asarray(text_emb, np.float32))


# What a modality is made of, in the index's names and in M-BEIR's.
_PARTS: dict[str, frozenset[str]] = {
    "photo": frozenset({"image"}), "image": frozenset({"image"}),
    "note": frozenset({"text"}), "text": frozenset({"text"}),
    "photo+note": frozenset({"image", "text"}), "image,text": frozenset({"image", "text"}),
}


def modality_offset(query: str, candidate: str, offset: float) -> float:
    """What ranking adds to the cosine of a `candidate` of another modality than the `query`'s:
    `offset` times the share of their parts (image, text) they do not have in common. A photo
    against a note (or a note against a photo) gets `offset`; either against a photo+note
    `offset / 2`; the same modality 0. Names: "photo"/"image", "note"/"text", "photo+note"/"image,text".

    Why: on photos it never saw, a GCL model still scores a text a little lower against its photo
    than against notes about the same kind of scene (the modality gap it leaves on new data), so
    in a pool mixing photos and notes a text finds notes first. The offset each model needs is
    calibrated on its dev benchmark (`python -m benchmarks.calibrate`) and shipped beside it."""
    q, c = _PARTS[query], _PARTS[candidate]
    return float(offset) * (1.0 - len(q & c) / len(q | c))


def modality_offsets(query: str, candidates: Sequence[str], offset: float) -> np.ndarray:
    """(len(candidates),) float32: `modality_offset` of each candidate modality for one query modality."""
    return np.array([modality_offset(query, c, offset) for c in candidates], np.float32)

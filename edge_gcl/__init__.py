"""edge-gcl: on-device multimodal retrieval with Generalized Contrastive Learning.

Torch-free on import: the on-device parts (`edge_gcl.runtime`, `edge_gcl.index`) never load
torch; the training-side names below are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "GCLLoss": "edge_gcl.loss",
    "CLLoss": "edge_gcl.loss",
    "PairwiseLoss": "edge_gcl.loss",
    "LOSSES": "edge_gcl.loss",
    "create_loss": "edge_gcl.loss",
    "gather_features": "edge_gcl.loss",
    "DualEncoder": "edge_gcl.models",
    "TorchEmbedder": "edge_gcl.models",
    "create_model": "edge_gcl.models",
    "load_model": "edge_gcl.models",
    "ModelConfig": "edge_gcl.config",
    "Embedder": "edge_gcl.embedding",
    "fuse": "edge_gcl.embedding",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_gcl' has no attribute {name!r}")

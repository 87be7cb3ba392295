"""PyTorch towers -> ONNX graphs that honour the I/O contract in `edge_gcl.manifest`.

Each tower is its own graph: `image_tower.onnx` (pixels -> embedding) and `text_tower.onnx`
(input_ids, attention_mask -> embedding), L2-normalised output inside the graph, int32 token ids,
finite attention masks, end-of-text pooling from the mask (no argmax). The float export keeps a
dynamic batch axis (CPU runtime, reference); `fix_batch` pins it for the NPU, which needs static shapes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edge_gcl.manifest import TowerSpec, tower_specs
from edge_gcl.models import DualEncoder

OPSET = 17


class _TextTower(nn.Module):
    """The text tower as exported: int32 ids and mask, as the contract says."""

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.tower(input_ids, attention_mask)


def example_inputs(spec: TowerSpec, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs of the right names' shapes and dtypes: random pixels; ids with some padding."""
    g = torch.Generator().manual_seed(0)
    out = []
    for t in spec.inputs:
        shape = [batch if isinstance(d, str) else d for d in t.shape]
        if t.dtype == "float32":
            out.append(torch.randn(*shape, generator=g))
        elif t.name == "attention_mask":
            mask = torch.ones(*shape, dtype=torch.int32)
            mask[:, shape[1] // 2 :] = 0
            out.append(mask)
        else:
            out.append(torch.randint(1000, 2000, shape, generator=g, dtype=torch.int32))
    return tuple(out)


def export_tower(model: DualEncoder, tower: str, path: str | Path, *, batch: int | None = None) -> Path:
    """Export `model.visual` or `model.text` to `path` (dynamic batch unless `batch` is given)."""
    spec = tower_specs(model.config, batch=batch if batch else "batch")[tower]
    module = model.visual if tower == "image" else _TextTower(model.text)
    names_in = [t.name for t in spec.inputs]
    names_out = [t.name for t in spec.outputs]
    dynamic = None if batch else {n: {0: "batch"} for n in names_in + names_out}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), example_inputs(spec, batch or 2), str(path), input_names=names_in,
            output_names=names_out, dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return path


def fix_batch(src: str | Path, dst: str | Path, batch: int = 1) -> Path:
    """A copy of `src` with the dynamic batch axis pinned to `batch` (the NPU needs static shapes)."""
    model = onnx.load(str(src))
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if dim.dim_param:
            dim.Clear()
            dim.dim_value = batch
    model = onnx.shape_inference.infer_shapes(model)
    onnx.save(model, str(dst))
    return Path(dst)


def torch_reference(model: DualEncoder, tower: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The PyTorch tower's output on the same feeds (the reference for parity checks)."""
    with torch.no_grad():
        if tower == "image":
            return model.encode_image(torch.from_numpy(feeds["pixels"])).numpy()
        ids, mask = torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
        return model.encode_text(ids, mask).numpy()

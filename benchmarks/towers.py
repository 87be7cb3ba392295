"""`python -m benchmarks.towers`: the image tower of each `lite` preset: MACs, parameters, CPU latency.

    python -m benchmarks.towers                       # lite (EfficientNet-Lite0), lite1, lite2
    python -m benchmarks.towers --presets lite,lite2 --threads 2 --runs 50

Per preset, the image tower as shipped (pretrained backbone from its wheel, a fresh 256-d projection):
- `MMACs`: multiply-accumulates of one photo, counted over every Conv2d and Linear (a forward hook
  each: output elements x input channels per group x kernel area; BatchNorm, activations and the
  pooling are left out, as MAC counts usually do);
- `params M`: all parameters of the tower, and `trained M`: those fine-tuned (top blocks, head conv,
  projection);
- latency at batch 1 on `--threads` CPU threads: ONNX Runtime CPU EP on the exported float32 graph
  (`export.onnx_export.export_tower`, batch fixed at 1) and PyTorch eager; median and p90 of `--runs`
  calls after `--warmup`.
The input size is each preset's own (`image.size`: 224, 240, 260), the size its exported graph takes.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    Col,
    default_out,
    format_table,
    header_line,
    machine_info,
    make_document,
    parse_list,
    save_json,
    time_call,
)

RESULTS = default_out("towers.json")  # benchmarks/results/towers.json: the committed one


def count_macs(module: Any, x: Any) -> int:
    """Multiply-accumulates of `module(x)` over its Conv2d and Linear layers."""
    import torch
    from torch import nn

    total = 0

    def hook(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += output.numel() * (layer.in_channels // layer.groups) * k
        else:  # Linear
            total += output.numel() * layer.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return total


def measure_tower(preset: str, *, threads: int = 2, warmup: int = 5, runs: int = 30) -> dict[str, Any]:
    """One table row: the image tower of `preset` (a `lite` config name)."""
    import onnxruntime as ort
    import torch

    from edge_gcl.models import create_model
    from export.onnx_export import export_tower

    model = create_model(preset).eval()
    s = model.config.image.size
    tower = model.visual
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, s, s)).astype(np.float32))  # (1, 3, S, S)
    row: dict[str, Any] = {
        "preset": preset, "backbone": model.config.lite.image_backbone, "input": f"{s}x{s}",
        "mmacs": count_macs(tower, x) / 1e6,
        "params_m": sum(p.numel() for p in tower.parameters()) / 1e6,
        "trained_m": sum(p.numel() for p in tower.top.parameters()) / 1e6,
        "trained_blocks": len(tower.top.blocks),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = export_tower(model, "image", Path(tmp) / "image.onnx", batch=1)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        onnx = time_call(lambda: session.run(None, feed), warmup=warmup, runs=runs)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            eager = time_call(lambda: tower(x), warmup=warmup, runs=runs)
    finally:
        torch.set_num_threads(before)
    row |= {"ort_ms": onnx.median_ms, "ort_p90_ms": onnx.p90_ms, "torch_ms": eager.median_ms, "torch_p90_ms": eager.p90_ms}
    return row


COLUMNS = [Col("preset"), Col("backbone"), Col("input"), Col("mmacs", "MMACs", ".0f"), Col("params_m", "params M", ".2f"),
           Col("trained_m", "trained M", ".2f"), Col("ort_ms", "ORT ms", ".1f"), Col("ort_p90_ms", "ORT p90", ".1f"),
           Col("torch_ms", "torch ms", ".1f"), Col("torch_p90_ms", "torch p90", ".1f")]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.towers", description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="lite,lite1,lite2", help="comma-separated lite presets")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json", default=RESULTS, help="where to save the results (benchmarks/results/towers.json: "
                   "the committed ones)")
    args = p.parse_args(argv)
    machine = machine_info()
    rows = [measure_tower(name, threads=args.threads, warmup=args.warmup, runs=args.runs)
            for name in parse_list(args.presets)]
    print(header_line(machine))
    print(format_table(rows, COLUMNS, title=f"image towers, batch 1, {args.threads} threads"))
    config = {"presets": parse_list(args.presets), "threads": args.threads, "warmup": args.warmup, "runs": args.runs}
    print(f"saved {save_json(args.json, make_document('towers', rows, config=config, machine=machine))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

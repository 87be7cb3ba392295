"""CUDA-only checks of training and PyTorch embedding. Not part of the default suite (the CI machine has
no GPU): `benchmarks/gpu_check.sh` runs them with EDGE_GCL_GPU_TESTS=1; without a GPU they skip."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import free_port, make_squares, read_log, tiny_tinyclip

from edge_gcl.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_squares(tmp_path_factory.mktemp("squares"), n=32, bad_rows=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_tinyclip(tmp_path_factory.mktemp("tiny") / "start")


def _args(tiny, data, out, *extra):
    return ["train", "--model", str(tiny), "--data", str(data / "captions.txt"), "--batch-size", "16", "--steps", "4",
            "--warmup", "1", "--lr", "1e-3", "--out", str(out), *extra]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_trains_on_the_gpu_like_on_the_cpu(precision, data, tiny, tmp_path):
    """Decoded in 2 workers into pinned memory, trained on cuda:0; the first loss (before any update) is the
    CPU's up to TF32 / half-precision rounding."""
    assert main(_args(tiny, data, tmp_path / "cpu", "--device", "cpu", "--workers", "0")) == 0
    assert main(_args(tiny, data, tmp_path / "gpu", "--device", "cuda", "--workers", "2", "--precision", precision)) == 0
    cpu, gpu = read_log(tmp_path / "cpu"), read_log(tmp_path / "gpu")
    assert sorted(gpu) == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in gpu.values())
    assert abs(gpu[1]["loss"] - cpu[1]["loss"]) < (2e-3 if precision == "fp32" else 2e-2) * cpu[1]["loss"]
    weights = load_file(str(tmp_path / "gpu" / "model.safetensors"))
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in weights.values())


def test_the_lite_stem_cache_is_built_on_the_gpu(data, tmp_path):
    """The stem cache computed by PyTorch on the GPU holds what ONNX Runtime computes on the CPU (fp16)."""
    common = ["train", "--data", str(data / "captions.txt"), "--batch-size", "16", "--steps", "2", "--warmup", "1",
              "--image-views", "2", "--workers", "2"]
    assert main([*common, "--device", "cpu", "--cache-dir", str(tmp_path / "c-cpu"), "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--device", "cuda", "--cache-dir", str(tmp_path / "c-gpu"), "--out", str(tmp_path / "b")]) == 0
    (a,), (b,) = list((tmp_path / "c-cpu").glob("*/images.npy")), list((tmp_path / "c-gpu").glob("*/images.npy"))
    assert a.parent.name == b.parent.name  # one cache key, whichever device built it
    x, y = np.load(a).astype(np.float32), np.load(b).astype(np.float32)
    assert x.shape == y.shape and np.abs(x - y).max() < 2e-2 * max(1.0, np.abs(x).max())
    h1, h2 = (np.load(p.parent / "hidden.npy").astype(np.float32) for p in (a, b))
    assert np.abs(h1 - h2).max() < 2e-2 * max(1.0, np.abs(h1).max())


def test_pytorch_embedding_on_the_gpu_matches_the_cpu(tiny):
    from edge_gcl.models import TorchEmbedder, load_model

    cpu, gpu = TorchEmbedder(load_model(str(tiny))), TorchEmbedder(load_model(str(tiny)), device="cuda")
    texts = ["a red square", "something blue", "two yellow squares"]
    np.testing.assert_allclose(gpu.embed_texts(texts), cpu.embed_texts(texts), atol=2e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpus_train_like_one(data, tiny, tmp_path):
    assert main(_args(tiny, data, tmp_path / "one", "--device", "cuda", "--workers", "0")) == 0
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                           "127.0.0.1", "--master-port", free_port(), "-m", "edge_gcl.cli",
                           *_args(tiny, data, tmp_path / "two", "--device", "cuda", "--workers", "1")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 processes (nccl)" in done.stdout
    one, two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    for s in one:  # TF32 products: a looser tolerance than the CPU's 1e-4
        assert abs(one[s]["loss"] - two[s]["loss"]) <= 2e-3 * one[s]["loss"], (s, one[s], two[s])

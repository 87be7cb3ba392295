"""Training end to end on a tiny synthetic data set: bad rows, checkpoints, exact resume."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from edge_gcl.cli import main
from edge_gcl.models import load_model
from edge_gcl.train import batch_indices

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    (root / "images").mkdir()
    rows = ["image,caption"]
    rng = np.random.default_rng(0)
    for i in range(24):
        name, rgb = list(COLOURS.items())[i % 4]
        a = np.clip(np.array(rgb) + rng.integers(-20, 20, (40, 56, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(root / "images" / f"{i}.jpg")
        rows += [f"{i}.jpg,a {name} square number {i}", f"{i}.jpg,something {name}"]
    (root / "images" / "corrupt.jpg").write_bytes(b"not a jpeg")
    rows += ["corrupt.jpg,a broken photo", "missing.jpg,no file", "3.jpg,"]
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    return root


def _train(data, out, cache, *extra):
    return main(["train", "--data", str(data / "captions.txt"), "--batch-size", "8", "--lr", "1e-3", "--warmup", "2",
                 "--out", str(out), "--cache-dir", str(cache), "--image-views", "2", *extra])


def test_train_skips_bad_rows_and_resumes_exactly(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _train(data, tmp_path / "a", cache, "--steps", "6", "--checkpoint-every", "3") == 0
    out = capsys.readouterr().out
    assert "1 corrupt image" in out and "1 missing image file" in out and "1 empty caption" in out
    assert (tmp_path / "a" / "checkpoints" / "step_3" / "train_state.pt").exists()

    # A run killed after its step-3 checkpoint, then resumed: the same weights as the uninterrupted run.
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_3", tmp_path / "b" / "checkpoints" / "step_3")
    assert _train(data, tmp_path / "b", cache, "--steps", "6", "--checkpoint-every", "3", "--resume") == 0
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)

    # A checkpoint from before the logit scale had its own optimizer group: a clear error, the checkpoint kept.
    old = tmp_path / "old" / "checkpoints" / "step_3"
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_3", old)
    state = torch.load(old / "train_state.pt", weights_only=True)
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:2]
    torch.save(state, old / "train_state.pt")
    with pytest.raises(ValueError, match="step_3: optimizer state with 2 parameter groups"):
        _train(data, tmp_path / "old", cache, "--steps", "6", "--resume")
    assert (old / "train_state.pt").exists() and (old / "model.safetensors").exists()

    model = load_model(tmp_path / "a")  # the trained folder is a model spec everywhere
    assert model.config.name == "lite"
    fresh = load_model("lite")
    w = model.visual.top.proj.weight
    assert not torch.allclose(w, fresh.visual.top.proj.weight)  # training changed the heads


def test_stem_cache_is_found_whatever_the_path_spelling(data, tmp_path, monkeypatch, capsys):
    """`~` in --cache-dir expands, and the same photos named by a relative path reuse the cache."""
    monkeypatch.setenv("HOME", str(tmp_path))
    common = ["train", "--batch-size", "8", "--steps", "1", "--image-views", "1", "--cache-dir", "~/cache"]
    assert main([*common, "--data", str(data / "captions.txt"), "--out", str(tmp_path / "a")]) == 0
    monkeypatch.chdir(data.parent)
    capsys.readouterr()
    assert main([*common, "--data", f"{data.name}/captions.txt", "--out", str(tmp_path / "b")]) == 0
    assert "stem cache: " in capsys.readouterr().out  # reused, not rebuilt
    assert len(list((tmp_path / "cache").iterdir())) == 1 and not (data.parent / "~").exists()


def test_batches_hold_distinct_photos_and_cover_an_epoch():
    seen = np.concatenate([batch_indices(50, 8, seed=1, step=s) for s in range(6)])
    assert len(set(seen.tolist())) == len(seen) == 48
    assert not np.array_equal(batch_indices(50, 8, 1, 6), batch_indices(50, 8, 2, 6))


def test_torchrun_two_processes_train_like_one(data, tmp_path):
    """2 ranks (gloo, CPU), each half of every batch, gathered negatives: the same weights as 1 process."""
    import subprocess
    import sys

    from edge_gcl.checkpoint import save_checkpoint
    from edge_gcl.config import (
        ImagePreprocess,
        ModelConfig,
        TextPreprocess,
        TextTransformerConfig,
        VisionTransformerConfig,
    )
    from edge_gcl.models import create_model

    torch.manual_seed(0)
    tiny = ModelConfig(
        name="tiny-ddp", family="tinyclip", embed_dim=16, image=ImagePreprocess(size=32),
        text=TextPreprocess(context_length=16),
        vision=VisionTransformerConfig(image_size=32, patch_size=8, width=32, layers=1, heads=2),
        text_tower=TextTransformerConfig(context_length=16, width=32, layers=1, heads=2))
    start = save_checkpoint(tmp_path / "start", create_model(tiny))
    args = ["train", "--model", str(start), "--data", str(data / "captions.txt"), "--batch-size", "8",
            "--steps", "3", "--lr", "1e-3", "--warmup", "1", "--workers", "0"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", port, "-m", "edge_gcl.cli", *args, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    assert not torch.equal(one["text.proj.weight"], load_file(str(start / "model.safetensors"))["text.proj.weight"])
    for k in one:
        # float32 reduction order differs across ranks; Adam turns that into < 0.1 of one lr step
        torch.testing.assert_close(two[k], one[k], atol=1e-4, rtol=1e-4)


def test_temperature_flag_sets_the_starting_temperature(data, tmp_path):
    """`--temperature` starts the learnable temperature there; without it the model's own (lite: 0.07) is kept."""
    cache = tmp_path / "cache"
    assert _train(data, tmp_path / "t", cache, "--steps", "1", "--temperature", "0.02") == 0
    assert _train(data, tmp_path / "d", cache, "--steps", "1") == 0
    for out, tau in ((tmp_path / "t", 0.02), (tmp_path / "d", 0.07)):
        scale = load_file(str(out / "model.safetensors"))["logit_scale"]
        assert abs(1 / scale.exp().item() - tau) < tau * 0.01  # one step at lr 1e-3 moves log(1/tau) by ~1e-3
    with pytest.raises(ValueError, match="--temperature 0.001"):
        _train(data, tmp_path / "bad", cache, "--steps", "1", "--temperature", "0.001")


def test_temperature_lr_mult_sets_how_fast_the_temperature_learns(data, tmp_path):
    """The logit scale has a param group of its own at lr x `--temperature-lr-mult`: 0 keeps it, 50 moves it
    about 50 times as far as the default 1 (Adam's early steps move a parameter by about its lr)."""
    cache = tmp_path / "cache"
    start = np.log(1 / 0.07)
    moved = {}
    for mult in ("0", "1", "50"):
        assert _train(data, tmp_path / mult, cache, "--steps", "2", "--temperature-lr-mult", mult) == 0
        moved[mult] = abs(load_file(str(tmp_path / mult / "model.safetensors"))["logit_scale"].item() - start)
    assert moved["0"] < 1e-6
    assert 1e-4 < moved["1"] < 3e-3  # two steps at lr 5e-4 and 1e-3
    assert 20 * moved["1"] < moved["50"] < 80 * moved["1"]
    with pytest.raises(ValueError, match="--temperature-lr-mult -1"):
        _train(data, tmp_path / "bad", cache, "--steps", "1", "--temperature-lr-mult", "-1")

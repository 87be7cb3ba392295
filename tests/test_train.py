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

    model = load_model(tmp_path / "a")  # the trained folder is a model spec everywhere
    assert model.config.name == "lite"
    fresh = load_model("lite")
    w = model.visual.top.proj.weight
    assert not torch.allclose(w, fresh.visual.top.proj.weight)  # training changed the heads


def test_batches_hold_distinct_photos_and_cover_an_epoch():
    seen = np.concatenate([batch_indices(50, 8, seed=1, step=s) for s in range(6)])
    assert len(set(seen.tolist())) == len(seen) == 48
    assert not np.array_equal(batch_indices(50, 8, 1, 6), batch_indices(50, 8, 2, 6))

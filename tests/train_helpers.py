"""Small training set-ups the training tests share: a colour-squares data set and a tiny TinyCLIP."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import torch
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def make_squares(root: Path, n: int = 24, *, bad_rows: bool = True) -> Path:
    """`root/captions.txt` and `root/images/`: n noisy colour squares with two captions each; with
    `bad_rows`, one corrupt photo, one missing photo and one empty caption too."""
    (root / "images").mkdir(parents=True)
    rows = ["image,caption"]
    rng = np.random.default_rng(0)
    for i in range(n):
        name, rgb = list(COLOURS.items())[i % 4]
        a = np.clip(np.array(rgb) + rng.integers(-20, 20, (40, 56, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(root / "images" / f"{i}.jpg")
        rows += [f"{i}.jpg,a {name} square number {i}", f"{i}.jpg,something {name}"]
    if bad_rows:
        (root / "images" / "corrupt.jpg").write_bytes(b"not a jpeg")
        rows += ["corrupt.jpg,a broken photo", "missing.jpg,no file", "3.jpg,"]
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    return root


def tiny_tinyclip(folder: Path) -> Path:
    """A checkpoint of a 1-layer TinyCLIP (width 32, 32 px photos): trains in milliseconds per step."""
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
        name="tiny", family="tinyclip", embed_dim=16, image=ImagePreprocess(size=32), text=TextPreprocess(context_length=16),
        vision=VisionTransformerConfig(image_size=32, patch_size=8, width=32, layers=1, heads=2),
        text_tower=TextTransformerConfig(context_length=16, width=32, layers=1, heads=2))
    return save_checkpoint(folder, create_model(tiny))


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def read_log(out: Path) -> dict[int, dict]:
    """train_log.jsonl as {step: row}."""
    return {r["step"]: r for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())}

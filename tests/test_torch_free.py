"""The on-device runtime never imports torch (nor the export tooling): importing any of its modules,
or running `edge-gcl --help`, leaves torch out of `sys.modules`.

Each check runs in a fresh interpreter where importing torch, transformers or onnx raises, so a
runtime module that pulls one in, even indirectly, fails here by name.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import edge_gcl

pytestmark = pytest.mark.runtime

# Training-side modules: they need torch by design (the [train] extra).
TRAINING = {
    "edge_gcl.train",
    "edge_gcl.loss",
    "edge_gcl.checkpoint",
    "edge_gcl.models",
    "edge_gcl.models.base",
    "edge_gcl.models.clip",
    "edge_gcl.models.factory",
    "edge_gcl.models.lite",
    "edge_gcl.assets.make_clip_bpe",
    "edge_gcl.device",  # --device for PyTorch models
}
TRAINING_PACKAGES = ("edge_gcl.train.",)  # every module of the training package
FORBIDDEN = ("torch", "transformers", "onnx", "onnxscript", "qai_hub", "safetensors", "matplotlib")

BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {FORBIDDEN!r}:
            raise ImportError(f"the runtime imported {{name}}")
sys.meta_path.insert(0, Block())
"""


def runtime_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(edge_gcl.__path__, "edge_gcl.")]
    return sorted(n for n in names if n not in TRAINING and not n.startswith(TRAINING_PACKAGES)
                  and not n.endswith("__main__"))


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )


def test_the_runtime_modules_are_the_on_device_ones() -> None:
    names = runtime_modules()
    for needed in ("edge_gcl.runtime", "edge_gcl.index.index", "edge_gcl.app.server", "edge_gcl.cli", "edge_gcl.qnn_ep"):
        assert needed in names


@pytest.mark.parametrize("module", runtime_modules())
def test_importing_a_runtime_module_imports_no_torch(module: str) -> None:
    done = run(f"import {module}; import sys; bad = [m for m in {FORBIDDEN!r} if m in sys.modules]; "
               "assert not bad, bad")
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_cli_parser_imports_no_torch() -> None:
    done = run("import sys; from edge_gcl.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
               f"assert not [m for m in {FORBIDDEN!r} if m in sys.modules]")
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_blocker_catches_a_module_that_imports_torch() -> None:
    """The check above can fail: a training module imported under the blocker does."""
    done = run("import edge_gcl.loss")
    assert done.returncode != 0 and "the runtime imported torch" in done.stderr

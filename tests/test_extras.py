"""A command whose optional install (extra) is absent says which one in one line, never a traceback.

Each check runs in a fresh interpreter where the extra's modules cannot be imported (a finder that
refuses them, as an absent package would); tests/test_runtime_install.py runs the same commands in
the real torch-free install, where they are absent for real.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_gcl.extras import EXTRA_OF, MissingExtraError, missing_extra, require

ROOT = Path(__file__).resolve().parents[1]
ABSENT = ("torch", "safetensors", "onnx", "onnxscript", "qai_hub", "matplotlib", "faiss", "transformers")
BLOCKER = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Absent())
"""


def run_without_extras(module: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    code = BLOCKER + f"import runpy; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one error line (progress lines such as `loading default...` may come before it)."""
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and done.stderr.strip().endswith(lines[0]), done.stderr[-3000:]
    return lines[0]


@pytest.mark.runtime
def test_edge_gcl_train_names_the_train_extra(tmp_path: Path) -> None:
    line = one_line(run_without_extras("edge_gcl.cli", "train", "--recipe", "default", "--out", str(tmp_path / "run"),
                                       cwd=tmp_path))
    assert line == "edge-gcl: error: edge-gcl train needs torch, from the [train] extra: pip install 'edge-gcl[train]'"
    assert not (tmp_path / "run").exists()


@pytest.mark.runtime
def test_a_pytorch_model_names_the_train_extra(tmp_path: Path) -> None:
    line = one_line(run_without_extras("edge_gcl.cli", "index", "add", str(tmp_path), "--model", "default",
                                       "--index", str(tmp_path / "ix"), cwd=tmp_path))
    assert "pip install 'edge-gcl[train]'" in line  # torch absent for real: "default: not an artifacts folder ..."


def test_export_compile_names_the_export_extra() -> None:
    line = one_line(run_without_extras("export.compile", "--target", "snapdragon", "--out", "runs/never"))
    assert line == ("error: python -m export.compile needs torch, safetensors, onnx, onnxscript, qai_hub, from the "
                    "[export] extra: pip install -e '.[export]' in the clone")
    assert not (ROOT / "runs" / "never").exists()
    listed = run_without_extras("export.compile", "--list-chipsets")  # needs nothing beyond the runtime
    assert listed.returncode == 0 and "Snapdragon 8 Gen 3" in listed.stdout


@pytest.mark.parametrize("module", ["benchmarks.recall", "benchmarks.report", "benchmarks.index"])
def test_the_benchmarks_name_the_dev_extra(module: str) -> None:
    line = one_line(run_without_extras(module, "--help"))
    assert line == ("error: the benchmarks need torch, onnx, matplotlib, faiss, from the [dev] extra: "
                    "pip install -e '.[dev]' in the clone")


@pytest.mark.runtime
def test_require_and_missing_extra() -> None:
    require("train", what="x", modules=["json"])  # present: nothing happens
    with pytest.raises(MissingExtraError, match=r"^x needs no_such_module_here, from the \[video\] extra"):
        require("video", what="x", modules=["no_such_module_here"])
    assert missing_extra(ModuleNotFoundError("No module named 'av'", name="av"), what="edge-gcl eval covr") == (
        "edge-gcl eval covr needs av, from the [video] extra: pip install 'edge-gcl[video]'")
    assert missing_extra(ModuleNotFoundError("x", name="not_an_extra"), what="w") is None
    assert missing_extra(ValueError("torch"), what="w") is None
    assert set(EXTRA_OF.values()) == {"train", "export", "video", "mmeb", "dev"}

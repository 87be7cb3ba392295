"""What `pip install .` puts into site-packages: `edge_gcl` alone.

`export/` and `benchmarks/` are tools run from a clone (`python -m export.compile`, `python -m
benchmarks.report`): installed as top-level packages they would collide with any other project's
`export` or `benchmarks` module. The wheel is built for real (pip, offline: the build backend comes
from the package index this machine is configured with) from a copy of the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "runs",
                                     "artifacts", "results", "*.png")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src") / "edge-gcl"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    out = src.parent / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (path,) = out.glob("edge_gcl-*.whl")
    return zipfile.ZipFile(path)


@pytest.mark.slow
def test_the_wheel_installs_edge_gcl_alone(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/")[0] for name in wheel.namelist()}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"edge_gcl"}, sorted(top)
    (info,) = dist_info
    names = set(wheel.namelist())
    if f"{info}/top_level.txt" in names:  # what pip reports as the distribution's top-level names
        assert wheel.read(f"{info}/top_level.txt").decode().split() == ["edge_gcl"]
    for needed in ("edge_gcl/py.typed", "edge_gcl/configs/lite.json", "edge_gcl/recipes/default.json",
                   "edge_gcl/weights/default/model.safetensors", "edge_gcl/app/static/index.html",
                   "edge_gcl/assets/clip-bpe.tokenizer.json.gz"):
        assert needed in names, needed  # the runtime's data files travel with it
    assert "edge-gcl = edge_gcl.cli:main" in wheel.read(f"{info}/entry_points.txt").decode()


@pytest.mark.parametrize("module", ["export.compile", "benchmarks.report", "benchmarks.recall", "benchmarks.ingest"])
def test_the_clone_tools_run_from_the_clone(module: str) -> None:
    """The dev install runs them from the clone's root, where `python -m` finds them."""
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m "), done.stderr[-2000:]

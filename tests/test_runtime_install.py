"""The on-device install, for real: `pip install .` into a fresh Python 3.13 venv (no torch, no onnx,
no export tooling), then the runtime tests and the CLI end to end inside it.

The venv is built once per pyproject.toml (in ~/.cache/edge-gcl/test-venvs/) and the project is
reinstalled into it from this checkout on every run, so it tests the code as it is. Python 3.13
comes from pyenv (or `python3.13` on the PATH); without it the test skips, except under CI, where
it fails: the check must not vanish silently.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENVS = Path.home() / ".cache" / "edge-gcl" / "test-venvs"
# Test modules that need only the runtime install (marked `runtime`); copied out of the checkout
# so the venv imports edge_gcl from what pip installed, not from the source tree.
RUNTIME_TESTS = ["conftest.py", "test_locations.py", "test_torch_free.py", "test_app.py", "test_transform.py",
                 "test_extras.py", "test_status.py"]

pytestmark = pytest.mark.slow


def find_python313() -> Path | None:
    candidates = sorted((Path.home() / ".pyenv" / "versions").glob("3.13*/bin/python3.13"))
    found = shutil.which("python3.13")
    for path in [*candidates, *([Path(found)] if found else [])]:
        if path.is_file():
            return path
    return None


def sh(*args: str | Path, cwd: Path | None = None, env: dict | None = None, timeout: float = 900):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project as it is now, copied like a clone (export/ and benchmarks/ included)."""
    build = tmp_path_factory.mktemp("src") / "edge-gcl"
    shutil.copytree(ROOT, build, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                                "runs", "artifacts", "results"))
    return build


@pytest.fixture(scope="module")
def venv(source: Path) -> Path:
    python = find_python313()
    if python is None:
        message = "Python 3.13 not found (pyenv install 3.13.0): the torch-free runtime install is not checked"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # one venv per checkout and pyproject.toml: two checkouts testing at once never share one
    key = hashlib.sha256(str(ROOT).encode() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    venv = VENVS / f"py313-runtime-{key}"
    if not (venv / "ok").exists():
        shutil.rmtree(venv, ignore_errors=True)
        sh(python, "-m", "venv", venv)
        sh(venv / "bin" / "python", "-m", "pip", "install", "-q", "--upgrade", "pip")
        (venv / "ok").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    # the project as it is now; plain `pip install .`, what a device does (pytest only to run tests)
    sh(venv / "bin" / "python", "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", source)
    sh(venv / "bin" / "python", "-m", "pip", "install", "-q", source, "pytest")
    return venv


def in_venv_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PYENV"))}
    env["EDGE_GCL_HOME"] = str(home)
    return env


def test_the_install_has_no_torch_and_runs_on_python_313(venv: Path, tmp_path: Path) -> None:
    py = venv / "bin" / "python"
    done = sh(py, "-c", "import sys, importlib.util as u, edge_gcl.runtime, edge_gcl.index, edge_gcl.app; "
              "print(sys.version_info[:2], [m for m in ('torch', 'transformers', 'onnx', 'qai_hub', "
              "'safetensors', 'export', 'benchmarks') if u.find_spec(m)], edge_gcl.__file__)", cwd=tmp_path)
    assert done.stdout.startswith("(3, 13) []"), done.stdout  # nor export/ and benchmarks/ (clone tools)
    assert str(venv) in done.stdout  # the installed package, not the checkout
    if sys.platform == "linux" and os.uname().machine == "x86_64":  # onnxruntime-qnn has a wheel here
        done = sh(py, "-c", "from edge_gcl.qnn_ep import qnn_available; print(qnn_available())", cwd=tmp_path)
        assert done.stdout.strip().splitlines()[-1] == "True", done.stdout


def test_the_runtime_tests_pass_in_it(venv: Path, tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    for name in RUNTIME_TESTS:
        shutil.copy(ROOT / "tests" / name, tests / name)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n    runtime: runtime\n    browser: browser\n")
    done = subprocess.run(
        [venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "runtime", "tests"],
        capture_output=True, text=True, cwd=tmp_path, env=in_venv_env(tmp_path / "home"), timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    counts = done.stdout.strip().splitlines()[-1]
    assert " failed" not in counts and int(counts.split(" passed")[0].split()[-1]) >= 40, counts


def test_the_cli_indexes_and_searches_compiled_artifacts_in_it(venv: Path, tmp_path: Path) -> None:
    """Artifacts built here (with onnx) are what a device receives; the venv's CLI indexes photos
    and answers a search exactly as this interpreter's CLI does, on the CPU and on the NPU form."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_cli_runtime import make_photos
    from test_runtime import make_artifacts

    from edge_gcl.locations import record_artifacts

    artifacts = make_artifacts(tmp_path / "artifacts")
    photos = make_photos(tmp_path / "photos", 5)
    home = tmp_path / "home"
    env = in_venv_env(home)
    prefix = sh(venv / "bin" / "python", "-c", "import sys; print(sys.prefix)").stdout.strip()
    os.environ["EDGE_GCL_HOME"], saved = str(home), os.environ.get("EDGE_GCL_HOME")
    try:  # as export.compile leaves it in each environment: no --model below
        record_artifacts(artifacts, env=str(Path(prefix).resolve()))  # the device's venv
        record_artifacts(artifacts)  # this interpreter's, which reads the same index below
    finally:
        os.environ["EDGE_GCL_HOME"] = saved or ""
    cli = venv / "bin" / "edge-gcl"
    done = sh(cli, "index", "add", tmp_path / "photos", env=env, cwd=tmp_path)
    assert "added 5" in done.stdout and "float32 towers on ONNX Runtime CPU" in done.stderr
    found = json.loads(sh(cli, "search", "--image", photos[3], "--json", "--k", "3", env=env, cwd=tmp_path).stdout)
    assert found[0]["path"] == str(photos[3])
    # the same index read by this interpreter's CLI (torch installed, same artifacts): same ranking
    from edge_gcl.cli import main

    here = subprocess.run(
        [sys.executable, "-c", "import sys; from edge_gcl.cli import main; sys.exit(main(sys.argv[1:]))",
         "search", "--image", str(photos[3]), "--json", "--k", "3"],
        capture_output=True, text=True, env={**os.environ, "EDGE_GCL_HOME": str(home)}, cwd=ROOT, timeout=300,
    )
    assert here.returncode == 0, here.stderr
    assert [h["id"] for h in json.loads(here.stdout)] == [h["id"] for h in found]
    del main
    # no model anywhere: one line saying how to get one
    elsewhere = tmp_path / "elsewhere"  # no ./artifacts there
    elsewhere.mkdir()
    bare = subprocess.run([cli, "index", "add", tmp_path / "photos"], capture_output=True, text=True, timeout=300,
                          env=in_venv_env(tmp_path / "empty-home"), cwd=elsewhere)
    assert bare.returncode == 1 and "python -m export.compile --target snapdragon" in bare.stderr
    assert len(bare.stderr.strip().splitlines()) == 1


def test_the_runtime_reads_the_words_in_photos_with_no_ocr_package(venv: Path, tmp_path: Path) -> None:
    """OCR is on by default on the device: the runtime install (no rapidocr, OpenCV, Shapely or onnx)
    reads the words in a photo with the OCR graphs an artifacts folder ships, and finds it by them."""
    if importlib.util.find_spec("rapidocr") is None:
        pytest.skip("the OCR graphs come from the [export] extra's rapidocr wheel")
    sys.path.insert(0, str(Path(__file__).parent))
    from test_ocr import screenshot
    from test_runtime import make_artifacts

    from export.ocr import add_float_graphs

    artifacts = add_float_graphs(make_artifacts(tmp_path / "artifacts"))
    (tmp_path / "photos").mkdir()
    screenshot().save(tmp_path / "photos" / "boarding.png")
    env = in_venv_env(tmp_path / "home")
    cli, common = venv / "bin" / "edge-gcl", ["--model", artifacts, "--index", tmp_path / "idx"]
    done = sh(venv / "bin" / "python", "-c", "import importlib.util as u; print([m for m in ('rapidocr', 'cv2', "
              "'shapely', 'pyclipper', 'onnx', 'torch') if u.find_spec(m)])", cwd=tmp_path)
    assert done.stdout.strip() == "[]"
    done = sh(cli, "index", "add", tmp_path / "photos", *common, env=env, cwd=tmp_path)
    assert "added 1" in done.stdout and "OCR: PP-OCR float32 graphs" in done.stderr
    (hit,) = json.loads(sh(cli, "search", "re16", "--json", "-k", "1", *common, env=env, cwd=tmp_path).stdout)
    assert hit["matched"] is True and hit["ocr"].splitlines()[-1] == "RE16 TGK"


def test_a_missing_extra_is_one_line_in_it(venv: Path, source: Path, tmp_path: Path) -> None:
    """torch, onnx and the dev tools are absent for real here: every command that needs them says which
    extra to install, in one line, exit status 1 (issues 33 and 34: no traceback on a newcomer's path)."""
    env = in_venv_env(tmp_path / "home")
    py, cli = venv / "bin" / "python", venv / "bin" / "edge-gcl"
    (tmp_path / "root").mkdir()
    runs = {  # command, where it runs (the clone tools from the clone's root), what the line must say
        "train": ([cli, "train", "--recipe", "default", "--out", tmp_path / "run"], tmp_path,
                  "edge-gcl: error: edge-gcl train needs torch, from the [train] extra: pip install 'edge-gcl[train]'"),
        "eval": ([cli, "eval", "mbeir", "--root", tmp_path / "root", "--model", "default"], tmp_path,
                 "pip install 'edge-gcl[train]'"),
        "compile": ([py, "-m", "export.compile", "--target", "snapdragon"], source,
                    "error: python -m export.compile needs torch, safetensors, "),
        "benchmarks": ([py, "-m", "benchmarks.report", "--smoke"], source,
                       "error: the benchmarks need torch, onnx, matplotlib, faiss, from the [dev] extra: "
                       "pip install -e '.[dev]' in the clone"),
    }
    for name, (command, cwd, says) in runs.items():
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and "Traceback" not in done.stderr and len(lines) == 1, (name, done.stderr[-3000:])
        assert says in lines[0], (name, lines[0])
    assert not (tmp_path / "run").exists() and not (source / "artifacts").exists()

"""Every Python example in the READMEs runs as written.

Each ```python block runs in a fresh interpreter from a folder laid out like a clone: the shared
data at ../shared/data (a link to the real one) and ./artifacts, here the tiny artifacts of
test_runtime.py standing in for what `python -m export.compile` builds. Not from the repository
root, so an example that only works there fails.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SHARED_DATA  # noqa: E402
from test_runtime import make_artifacts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "examples/photo_search/README.md"]


def python_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 2, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    ]


EXAMPLES = [(doc, line, code) for doc in DOCS for line, code in python_blocks(ROOT / doc)]


def test_the_readmes_have_python_examples() -> None:
    assert len([e for e in EXAMPLES if e[0] == "README.md"]) >= 2


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SHARED_DATA / "flickr8k" / "images").is_dir():
        pytest.skip(f"{SHARED_DATA} not present (the shared research data set)")
    root = tmp_path_factory.mktemp("clone")
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(SHARED_DATA)
    make_artifacts(root / "main" / "artifacts")
    return root / "main"


@pytest.mark.slow
@pytest.mark.parametrize(("doc", "line", "code"), EXAMPLES, ids=[f"{d}:{n}" for d, n, _ in EXAMPLES])
def test_example_runs_as_written(doc: str, line: int, code: str, clone: Path) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=clone, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{doc}:{line}\n{code}\n{done.stderr[-3000:]}"

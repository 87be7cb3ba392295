"""Every example in the README, docs/ and the example's README works as written.

- Each ```python block runs in a fresh interpreter from a folder laid out like a clone: the shared
  data at ../shared/data (a link to the real one) and ./artifacts, here the tiny artifacts of
  test_runtime.py standing in for what `python -m export.compile` builds. Not from the repository
  root, so an example that only works there fails.
- Each `edge-gcl ...` line of a ```bash block parses with the CLI's own parser: a renamed flag or
  command, or a bad choice, fails here.
- Each relative link leads to a file (the anchor is not checked).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SHARED_DATA  # noqa: E402
from test_runtime import make_artifacts  # noqa: E402

from edge_gcl.cli import build_parser  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "examples/photo_search/README.md", "edge_gcl/weights/default/MODEL_CARD.md",
        "benchmarks/EXPERIMENTS.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]


def blocks(path: Path, language: str) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 2, m.group(1))
        for m in re.finditer(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)
    ]


EXAMPLES = [(doc, line, code) for doc in DOCS for line, code in blocks(ROOT / doc, "python")]


def commands(doc: str) -> list[tuple[int, list[str]]]:
    """(line, argv) of every `edge-gcl` command in the doc's bash blocks, continuation lines joined."""
    found = []
    for first, code in blocks(ROOT / doc, "bash"):
        for offset, line in enumerate(code.replace("\\\n", " ").splitlines()):
            argv = shlex.split(line, comments=True)
            if argv[:1] == ["edge-gcl"]:
                found.append((first + offset, argv[1:]))
    return found


COMMANDS = [(doc, line, argv) for doc in DOCS for line, argv in commands(doc)]


def test_the_docs_have_examples() -> None:
    pages = {doc for doc, _, _ in EXAMPLES}
    assert {"docs/design.md", "docs/index-and-app.md"} <= pages and len(EXAMPLES) >= 3
    assert len([c for c in COMMANDS if c[0] == "README.md"]) >= 8  # the tour
    assert {"docs/training.md", "docs/evaluation.md", "docs/index-and-app.md"} <= {doc for doc, _, _ in COMMANDS}


@pytest.mark.parametrize(("doc", "line", "argv"), COMMANDS, ids=[f"{d}:{n}" for d, n, _ in COMMANDS])
def test_edge_gcl_command_parses(doc: str, line: int, argv: list[str], capsys) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{doc}:{line}: edge-gcl {shlex.join(argv)}\n{capsys.readouterr().err}")


def test_relative_links_lead_to_files() -> None:
    broken = []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (ROOT / doc).parent / target.split("#")[0]
            if not path.exists():
                broken.append(f"{doc}: {target}")
    assert not broken, broken


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

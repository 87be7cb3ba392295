"""`edge-gcl eval mbeir` on bad input (issue 14, item 3): one line `edge-gcl: error: FILE[:LINE]: ...`, exit 1.

Each case starts from a small valid M-BEIR root and breaks one thing. The embedder is a stand-in (no weights).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import types
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_gcl.cli import main


class HashEmbedder:
    """A fixed random unit vector per image path / text: no model, no learning, deterministic."""

    model_id = "hash"
    embed_dim = 16

    @staticmethod
    def _vec(key: str) -> np.ndarray:
        v = np.random.default_rng(zlib.crc32(key.encode())).normal(size=16)
        return v / np.linalg.norm(v)

    def embed_images(self, images, *, batch_size=32, progress=False):
        return np.array([self._vec("i" + Path(p).name) for p in images], np.float32)

    def embed_texts(self, texts, *, batch_size=32, progress=False):
        return np.array([self._vec("t" + t) for t in texts], np.float32)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


T0 = "query/test/mbeir_x_task0_test.jsonl"
T3 = "query/test/mbeir_x_task3_test.jsonl"
POOL0 = "cand_pool/local/mbeir_x_task0_cand_pool.jsonl"
POOL3 = "cand_pool/local/mbeir_x_task3_cand_pool.jsonl"
UNION = "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
QRELS0 = "qrels/test/mbeir_x_task0_test_qrels.txt"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Task 0 (text -> image, qrels file) and task 3 (image -> text, pos_cand_list) over two photos."""
    root = tmp_path / "bench"
    (root / "images").mkdir(parents=True)
    for name, rgb in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        Image.new("RGB", (4, 4), rgb).save(root / "images" / f"{name}.png")
    images = [{"did": f"1:{i}", "txt": None, "img_path": f"images/{n}.png", "modality": "image"}
              for i, n in ((1, "a"), (2, "b"))]
    texts = [{"did": f"1:{i}", "txt": t, "img_path": None, "modality": "text"}
             for i, t in ((3, "a red square"), (4, "a blue square"))]
    _jsonl(root / T0, [{"qid": f"1:{i}", "query_txt": t, "query_img_path": None, "query_modality": "text",
                        "pos_cand_list": [], "task_id": 0} for i, t in ((1, "red"), (2, "blue"))])
    _jsonl(root / T3, [{"qid": f"1:{i}", "query_txt": None, "query_img_path": f"images/{n}.png",
                        "query_modality": "image", "pos_cand_list": [d], "task_id": 3}
                       for i, n, d in ((3, "a", "1:3"), (4, "b", "1:4"))])
    _jsonl(root / POOL0, images)
    _jsonl(root / POOL3, texts)
    _jsonl(root / UNION, images + texts)
    (root / QRELS0).parent.mkdir(parents=True)
    (root / QRELS0).write_text("1:1 0 1:1 1 0\n1:2 0 1:2 1 0\n")
    return root


@pytest.fixture(autouse=True)
def fake_runtime(monkeypatch):
    monkeypatch.setitem(sys.modules, "edge_gcl.runtime",
                        types.SimpleNamespace(load_embedder=lambda model, provider="cpu", device=None: HashEmbedder()))


def _run(root: Path, *extra: str) -> int:
    return main(["eval", "mbeir", "--root", str(root), "--model", "hash", *extra])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("edge-gcl: error: "), err
    return lines[0][len("edge-gcl: error: "):]


def test_a_valid_root_evaluates(root: Path, capsys):
    assert _run(root) == 0
    assert "M-BEIR global" in capsys.readouterr().out


def _append(rel: str, data: bytes) -> Callable[[Path], None]:
    def go(root: Path) -> None:
        with open(root / rel, "ab") as f:
            f.write(data)
    return go


def _write(rel: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / rel).write_bytes(data)


def _remove(rel: str) -> Callable[[Path], None]:
    def go(root: Path) -> None:
        path = root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return go


CASES = {
    "malformed query line": (_append(T0, b'{"qid": "1:9", \n'), rf"{T0}:3: not valid JSON"),
    "malformed pool line": (_append(POOL0, b"{nope}\n"), rf"{POOL0}:3: not valid JSON"),
    "malformed qrels line": (_append(QRELS0, b"1:1 0\n"), rf"{QRELS0}:3: expected 'qid 0 did relevance"),
    "qrels relevance not a number": (_append(QRELS0, b"1:1 0 1:2 yes\n"), rf"{QRELS0}:3: relevance 'yes'"),
    "pool line not an object": (_append(UNION, b"[1, 2]\n"), rf"{UNION}:5: expected a JSON object, got list"),
    "pool line a string": (_append(POOL3, b'"1:3"\n'), rf"{POOL3}:3: expected a JSON object, got str"),
    "empty pool": (_write(POOL0, b""), rf"{POOL0}: empty candidate pool"),
    "pool of blank lines": (_write(POOL0, b"\n  \n\n"), rf"{POOL0}: empty candidate pool"),
    "missing global pool": (_remove(UNION), rf"{UNION}: no such file"),
    "missing local pool": (_remove(POOL3), r"cand_pool/local: no local pool for query file mbeir_x_task3_test"),
    "missing image": (_remove("images/b.png"), rf"{POOL0}:2: image not found: .*images/b\.png"),
    "empty query file": (_write(T0, b""), rf"{T0}: no queries"),
    "query file of blank lines": (_write(T0, b"\n\n"), rf"{T0}: no queries"),
    "no query folder": (_remove("query"), r"bench/query/test: no query files mbeir_\*_test\.jsonl"),
    "non-UTF-8 query file": (_append(T0, b'{"qid": "1:9", "query_txt": "caf\xe9"}\n'), rf"{T0}:3: not UTF-8"),
    "non-UTF-8 pool": (_append(UNION, b"\xff\xfe\n"), rf"{UNION}:5: not UTF-8"),
    "non-UTF-8 qrels": (_append(QRELS0, b"1:1 0 1:\xe9 1 0\n"), rf"{QRELS0}:3: not UTF-8"),
    "query without a qrels line": (_write(QRELS0, b"1:1 0 1:1 1 0\n"), rf"{T0}:2: query 1:2 has no positive in .*"
                                                                       rf"{QRELS0}"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_the_file(root: Path, case: str, capsys):
    breaks, pattern = CASES[case]
    breaks(root)
    assert _run(root) == 1
    line = _error_line(capsys)
    assert re.search(pattern, line), line
    assert line.startswith(str(root)), line  # FILE first, as given


def test_missing_root(tmp_path: Path, capsys):
    assert _run(tmp_path / "nowhere") == 1
    assert _error_line(capsys) == f"{tmp_path / 'nowhere'}: no such folder"


def test_root_is_a_file(tmp_path: Path, capsys):
    (tmp_path / "f").write_text("x")
    assert _run(tmp_path / "f") == 1
    assert _error_line(capsys) == f"{tmp_path / 'f'}: not a folder"


def _drop_from_union(root: Path, did: str) -> None:
    union = root / UNION
    union.write_text("".join(line + "\n" for line in union.read_text().splitlines() if f'"{did}"' not in line))


def test_a_query_whose_positive_is_not_in_the_pool_is_an_error(root: Path, capsys):
    _drop_from_union(root, "1:4")  # the positive of query 1:4 (task 3, line 2) in the global setting
    assert _run(root) == 1
    line = _error_line(capsys)
    assert line == f"{root / T3}:2: query 1:4 has no positive in {root / UNION} (positives: 1:4)"


def test_all_positives_absent_is_an_error_not_zero_recall(root: Path, capsys):
    _jsonl(root / POOL3, [{"did": "1:9", "txt": "something else", "img_path": None, "modality": "text"}])
    assert _run(root, "--setting", "local") == 1
    assert re.fullmatch(rf"{re.escape(str(root / T3))}:1: query 1:3 has no positive in .*{POOL3} .*",
                        _error_line(capsys))


def test_allow_missing_positives_counts_them_as_misses(root: Path, tmp_path: Path, capsys):
    _drop_from_union(root, "1:4")
    out = tmp_path / "r.json"
    assert _run(root, "--allow-missing-positives", "--setting", "global", "--k", "10", "--json", str(out)) == 0
    captured = capsys.readouterr()
    assert "1 of 2 queries have no positive in" in captured.err and "counted as misses" in captured.err
    results = json.loads(out.read_text())
    assert results["mbeir_x_task3_test"]["global"]["recall@10"] == 50.0  # the other query is a hit at k = pool
    assert results["missing_positives"] == {"mbeir_x_task3_test": {"global": 1}}
    assert "global pool: 1 query with no positive in the pool, counted as a miss" in captured.out

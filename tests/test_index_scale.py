"""Search at scale, tested small (issue 17): the vectors file (`index.vectors`, a derived cache of
SQLite), exact vs approximate agreement on clustered synthetic vectors, the size threshold and the switch that
forces either path. The 1M figures are `python -m benchmarks.index --million`, never a test."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import edge_gcl.index.search as search_module
from benchmarks.index import synthetic
from edge_gcl.index import Index, note_id
from edge_gcl.index.vectors import VectorCache, remove_stale_temps

DIM = 48


class TableEmbedder:
    """Note "v:i" embeds to base[i], "q:j" to queries[j] (seeded, clustered like real embeddings)."""

    def __init__(self, n: int = 2000, n_queries: int = 30, dim: int = DIM, seed: int = 0) -> None:
        self.model_id, self.embed_dim, self.tokenizer = f"table@{seed}", dim, None
        self.base, self.queries = synthetic(n, n_queries, dim, seed=seed)

    def embed_images(self, images: Sequence, *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        raise NotImplementedError

    def embed_texts(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        rows = [(self.base if t[0] == "v" else self.queries)[int(t[2:])] for t in texts]
        return np.asarray(rows, np.float32).reshape(len(rows), self.embed_dim)


@pytest.fixture(scope="module")
def table() -> TableEmbedder:
    return TableEmbedder()


def build(path: Path, table: TableEmbedder, dtype: str, notes: range) -> Index:
    index = Index.open(path, model=table, dtype=dtype)  # type: ignore[arg-type]
    index.add_notes([f"v:{i}" for i in notes], batch_size=500)
    return index


def results(index: Index, table: TableEmbedder, **kw) -> list[list[tuple[str, float]]]:
    return [[(h.id, h.score) for h in index.search(vector=q, k=10, **kw)] for q in table.queries]


def brute_force(table: TableEmbedder, alive: Sequence[int], query: np.ndarray, k: int = 10) -> set[str]:
    alive = np.asarray(alive)
    return {note_id(f"v:{i}") for i in alive[np.argsort(-(table.base[alive] @ query))[:k]]}


@pytest.mark.parametrize("dtype", ["float16", "int8", "float32"])
def test_vectors_file_is_written_on_close_and_read_on_open(tmp_path: Path, table: TableEmbedder, dtype: str):
    path = tmp_path / "idx"
    index = build(path, table, dtype, range(600))
    from_sqlite = results(index, table, approximate=False)
    assert index._vectors.from_cache == 0 and not (path / "index.vectors").exists()
    index.close()
    size = (path / "index.vectors").stat().st_size
    assert size == VectorCache.HEADER_BYTES + 600 * (24 + DIM * np.dtype(dtype).itemsize)
    with Index.open(path) as again:  # no model: vector queries only
        assert results(again, table, approximate=False) == from_sqlite  # same ids, same scores
        vectors = again._vectors
        assert vectors.from_cache == 600
        assert vectors.matrix.base is None  # read into memory: never a map a truncation could turn into SIGBUS
        assert str(vectors.matrix.dtype) == dtype == again.stats().search_dtype  # scanned as stored, no copy
        assert np.array_equal(vectors.vids, np.sort(vectors.vids))
    assert (path / "index.vectors").stat().st_size == size  # unchanged: not rewritten


def test_a_stale_vectors_file_catches_up_from_sqlite(tmp_path: Path, table: TableEmbedder):
    path = tmp_path / "idx"
    build(path, table, "int8", range(500)).close()  # no search: nothing to save
    assert not (path / "index.vectors").exists()
    with Index.open(path) as index:
        index.search(vector=table.queries[0], k=3)
    written = (path / "index.vectors").stat().st_mtime_ns
    with Index.open(path, model=table) as writer:  # type: ignore[arg-type]  # never searches: never saves
        writer.add_notes([f"v:{i}" for i in range(500, 700)])
        assert writer.remove([note_id(f"v:{i}") for i in range(0, 100)]) == 100
    assert (path / "index.vectors").stat().st_mtime_ns == written  # stale now
    alive = list(range(100, 700))
    with Index.open(path) as index:
        for q in table.queries[:10]:
            assert {h.id for h in index.search(vector=q, k=10, approximate=False)} == brute_force(table, alive, q)
        assert index._vectors.from_cache == 500 and len(index._vectors) == 600
    with Index.open(path) as index:  # the close above rewrote it
        index.search(vector=table.queries[0], k=3)
        assert index._vectors.from_cache == 600


def test_an_open_index_sees_writes_made_after_it_mapped_the_file(tmp_path: Path, table: TableEmbedder):
    path = tmp_path / "idx"
    with build(path, table, "float16", range(300)) as index:
        index.search(vector=table.queries[0], k=3)
    reader = Index.open(path)
    reader.search(vector=table.queries[0], k=3)
    assert reader._vectors.from_cache == 300
    with Index.open(path, model=table) as writer:  # type: ignore[arg-type]
        writer.add_notes([f"v:{i}" for i in range(300, 400)])
        writer.remove([note_id("v:0")])
    for q in table.queries[:5]:
        assert {h.id for h in reader.search(vector=q, k=10)} == brute_force(table, range(1, 400), q)
    reader.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "other database", "other dtype", "header only"])
def test_a_foreign_or_broken_vectors_file_is_ignored_and_rewritten(tmp_path: Path, table: TableEmbedder, damage: str):
    path = tmp_path / "idx"
    with build(path, table, "int8", range(400)) as index:
        expected = results(index, table, approximate=False)
    file = path / "index.vectors"
    data = file.read_bytes()
    head = json.loads(data[: VectorCache.HEADER_BYTES])
    if damage == "garbage":
        file.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        file.write_bytes(data[:-100])
    elif damage == "empty":
        file.write_bytes(b"")
    elif damage == "header only":
        file.write_bytes(data[: VectorCache.HEADER_BYTES])
    else:
        head.update({"db_uuid": "0" * 32} if damage == "other database" else {"dtype": "float16"})
        file.write_bytes(json.dumps(head).encode().ljust(VectorCache.HEADER_BYTES) + data[VectorCache.HEADER_BYTES :])
    with Index.open(path) as index:
        assert results(index, table, approximate=False) == expected
        assert index._vectors.from_cache == 0
    assert file.read_bytes() == data  # rebuilt from SQLite: the same bytes again


def test_a_reindexed_database_does_not_use_the_old_file(tmp_path: Path, table: TableEmbedder):
    path = tmp_path / "idx"
    with build(path, table, "float16", range(200)) as index:
        index.search(vector=table.queries[0], k=3)
    other = TableEmbedder(n=200, seed=1)
    with Index.open(path) as index:
        index.search(vector=table.queries[0], k=3)
        index.reindex(other, progress=False)
        hits = index.search(vector=other.queries[0], k=10)
        assert {h.id for h in hits} == {note_id(f"v:{i}") for i in np.argsort(-(other.base @ other.queries[0]))[:10]}
    with Index.open(path) as index:
        index.search(vector=other.queries[0], k=3)
        assert index._vectors.from_cache == 200
        assert np.allclose(index._vectors.decoded(np.arange(200)), other.base, atol=2e-3)


def test_a_crash_while_writing_the_vectors_file_keeps_the_old_one(tmp_path: Path, table: TableEmbedder, monkeypatch):
    path = tmp_path / "idx"
    with build(path, table, "float16", range(300)) as index:
        index.search(vector=table.queries[0], k=3)
    before = (path / "index.vectors").read_bytes()
    index = Index.open(path, model=table)  # type: ignore[arg-type]
    index.add_notes([f"v:{i}" for i in range(300, 350)])
    index.search(vector=table.queries[0], k=3)

    def power_cut(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", power_cut)
    index.close()  # best-effort: the cache is not saved, the index closes
    monkeypatch.undo()
    assert (path / "index.vectors").read_bytes() == before
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(".")) == []  # no temp file left
    with Index.open(path) as again:  # the old file is stale, not wrong
        q = table.queries[1]
        assert {h.id for h in again.search(vector=q, k=10)} == brute_force(table, range(350), q)
        assert again._vectors.from_cache == 300


def test_exact_and_approximate_agree_and_the_switch_forces_either(tmp_path: Path, table: TableEmbedder,
                                                                  monkeypatch):
    with build(tmp_path / "idx", table, "int8", range(2000)) as index:
        exact = results(index, table, approximate=False)
        assert index._approximate._index is None  # 2000 < APPROXIMATE_MIN_VECTORS: exact by default
        assert results(index, table) == exact
        approx = results(index, table, approximate=True)
        assert index._approximate._index is not None
        recall = np.mean([len({i for i, _ in a} & {i for i, _ in e}) / 10 for a, e in zip(approx, exact, strict=True)])
        print(f"approximate recall@10 vs exact: {recall:.3f}")
        assert recall >= 0.95
        for a, e in zip(approx, exact, strict=True):  # the approximate path re-scores exactly: the same scores
            scores = dict(e)
            assert all(s == pytest.approx(scores[i], abs=1e-6) for i, s in a if i in scores)
        monkeypatch.setattr(search_module, "APPROXIMATE_MIN_VECTORS", 1000)
        calls = []
        real = index._searcher.search_approximate
        monkeypatch.setattr(index._searcher, "search_approximate", lambda *a, **kw: calls.append(1) or real(*a, **kw))
        index.search(vector=table.queries[0], k=10)
        assert calls == [1]  # above the threshold: approximate by default
        index.search(vector=table.queries[0], k=10, approximate=False)
        assert calls == [1]  # ... unless told otherwise


def test_temp_files_of_writers_that_died_are_removed_by_the_next_write(tmp_path: Path, table: TableEmbedder):
    import subprocess
    import sys

    path = tmp_path / "idx"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    (path).mkdir()
    stale = [path / f".index.vectors.{pid}.77.tmp", path / f".index.usearch.{pid}.tmp"]
    alive = path / f".index.vectors.{os.getppid()}.1.tmp"  # a running process: maybe writing now
    other = path / ".notes.txt.123.tmp"
    for f in [*stale, alive, other]:
        f.write_bytes(b"half a file")
    with build(path, table, "int8", range(300)) as index:
        index.search(vector=table.queries[0], k=3, approximate=True)  # both files are written on close
    assert not any(f.exists() for f in stale) and alive.exists() and other.exists()
    assert remove_stale_temps(path / "index.vectors") == 0

"""Reliability of the index: bad inputs, SIGKILL mid-ingest, concurrent readers and writers,
and search exactness (exact vs brute force, usearch recall, float16 / int8 storage error).

Every test here can fail: each checks a property against an independent reference (file lists,
an fsync'd log written by the killed process, numpy brute force), not just that code ran.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_index import FakeEmbedder, make_photo  # noqa: E402

from edge_gcl.embedding import l2_normalize  # noqa: E402
from edge_gcl.index import Index, note_id, photo_id  # noqa: E402
from edge_gcl.index.vectors import top_rows  # noqa: E402
from edge_gcl.tokenizer import check_text  # noqa: E402

TESTS = Path(__file__).parent
ROOT = TESTS.parent


# --- bad inputs -------------------------------------------------------------------------------


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height RGB pixels and holds none."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def png_bomb(side: int = 10_001) -> bytes:
    """A valid, complete 1-bit PNG of side x side (> 100 MP) pixels in a few kB."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    data = zlib.compress(row * side, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def halves(width: int = 16, height: int = 12) -> np.ndarray:
    """Left half white, right half dark: orientation matters to a 4x4 thumbnail."""
    a = np.full((height, width, 3), 30, np.uint8)
    a[:, : width // 2] = 230
    a[: height // 3, :, 0] = 120  # and top differs from bottom
    return a


def test_bad_inputs_never_stop_an_ingest_or_lose_data(tmp_path: Path) -> None:
    emb = FakeEmbedder()
    folder = tmp_path / "photos"
    folder.mkdir()
    good: dict[str, Path] = {}

    def put(name: str, image: Image.Image, **save: object) -> None:
        image.save(folder / name, **save)
        good[name] = folder / name

    put("rgb.jpg", Image.fromarray(halves()), quality=95)
    put("cmyk.jpg", Image.new("CMYK", (16, 12), (0, 128, 255, 10)))
    put("gray16.png", Image.fromarray(np.arange(192, dtype=np.uint16).reshape(12, 16) * 300))
    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.arange(16, dtype=np.uint8)[None, :] * 16
    put("alpha.png", Image.fromarray(rgba, "RGBA"))
    put("palette.gif", Image.fromarray(halves()).convert("P"), transparency=0)
    put("gray.jpg", Image.fromarray(halves()[..., 0], "L"))
    put("one_pixel.png", Image.new("RGB", (1, 1), (9, 9, 9)))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned, display rotated 90 degrees clockwise
    put("rotated.jpg", Image.fromarray(halves()), exif=exif.tobytes(), quality=95)

    bad: dict[str, str] = {}
    valid = (folder / "rgb.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(valid[:20] + bytes(range(256)) * 4)
    bad["corrupt.jpg"] = "not a supported image"
    (folder / "truncated.jpg").write_bytes(valid[: len(valid) // 2])
    bad["truncated.jpg"] = "truncated"
    (folder / "zero.png").write_bytes(b"")
    bad["zero.png"] = "empty file"
    (folder / "notes.jpg").write_text("this is a text file with an image name")
    bad["notes.jpg"] = "not a supported image"
    (folder / "claims_30000x30000.png").write_bytes(png_header_only(30_000, 30_000))
    bad["claims_30000x30000.png"] = "decompression bomb"
    (folder / "bomb.png").write_bytes(png_bomb())
    bad["bomb.png"] = "decompression bomb"
    (folder / "iphone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    bad["iphone.heic"] = "not a supported image"
    os.mkfifo(folder / "pipe.jpg")  # opening it would block forever
    bad["pipe.jpg"] = "not a regular file"
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    bad["dangling.jpg"] = "no such file"
    Image.fromarray(halves()).save(os.fsdecode(bytes(folder) + b"/latin1_\xe9t\xe9.png"))
    bad["latin1_\\xe9t\\xe9.png"] = "file name is not valid UTF-8"
    locked = folder / "locked.jpg"
    Image.fromarray(halves()[::-1]).save(locked)
    locked.chmod(0)
    as_root = os.geteuid() == 0  # root reads chmod-000 files: then it is simply a good photo
    if as_root:
        good["locked.jpg"] = locked
    else:
        bad["locked.jpg"] = "permission denied"
    assert (folder / "bomb.png").stat().st_size < 50_000

    alarm = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("ingest hung (opened a FIFO?)"))
    signal.alarm(60)
    try:
        with Index.open(tmp_path / "idx", model=emb) as index:
            # one good photo is already there; it will be overwritten with garbage below
            keep = make_photo(folder / "keep.png", seed=7)
            original = Image.open(keep).copy()
            assert index.add_photos(keep, progress=False).added == [photo_id(keep)]
            keep.write_bytes(b"\x89PNG\r\n\x1a\n broken now")
            report = index.add_photos(
                [folder, tmp_path / "no_such_dir", folder / "sub.jpg"], batch_size=3, progress=False
            )
            reasons = {Path(s.input).name: s.reason for s in report.skipped}
            assert sorted(report.added) == sorted(photo_id(p) for p in good.values())
            for name, why in bad.items():
                assert why in reasons.get(name, ""), (name, reasons.get(name))
            assert "no such file or folder" in reasons["no_such_dir"]
            assert "not a supported image" in reasons["keep.png"]  # changed into garbage: reported...
            assert len(report.skipped) == len(bad) + 3
            # ... and the item it was is still there, searchable as the photo it used to be
            hit = index.search(image=original, k=1)[0]
            assert hit.id == photo_id(keep) and hit.score > 0.999
            # the EXIF-rotated photo was stored upright
            upright = Image.fromarray(np.rot90(halves(), k=-1).copy())
            top = index.search(image=upright, k=2)
            assert top[0].id == photo_id(good["rotated.jpg"]) and top[0].score > 0.98 > top[1].score
            assert len(index) == len(good) + 1
            # notes: bad ones are reported, the rest added
            notes = index.add_notes(["fine", "", b"\xff\xfe not utf-8", "   ", b"ok too", 42])  # type: ignore[list-item]
            assert notes.added == [note_id("fine"), note_id("ok too")]
            why = {s.input: s.reason for s in notes.skipped}
            assert why == {
                "note[1]": "empty text",
                "note[2]": why["note[2]"],
                "note[3]": "empty text",
                "note[5]": "expected str, got int",
            }
            assert why["note[2]"].startswith("not valid UTF-8")
            assert len(index) == len(good) + 3
            assert index.store.integrity_check() == "ok"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, alarm)
        locked.chmod(stat.S_IRUSR | stat.S_IWUSR)


# --- SIGKILL in the middle of a large ingest --------------------------------------------------

CHILD = """
import json, os, sys
sys.path.insert(0, {tests!r})
from test_index import FakeEmbedder
from edge_gcl.index import Index
index_dir, folder, log, mode, batch, delay = sys.argv[1:7]
batch = int(batch)
with Index.open(index_dir, model=FakeEmbedder(delay_s=float(delay), log=log + ".embedded")) as index:
    print("ready", flush=True)
    if mode == "whole":  # one call; the index commits every `batch` photos on its own
        r = index.add_photos(folder, batch_size=batch, progress=False)
    else:  # one call per batch, each logged (fsync'd) once add_photos has returned
        files = sorted(os.path.join(folder, n) for n in os.listdir(folder))
        with open(log, "a") as f:
            for i in range(0, len(files), batch):
                r = index.add_photos(files[i:i + batch], batch_size=batch, progress=False)
                f.write(json.dumps(r.added + r.updated + r.unchanged) + "\\n")
                f.flush()
                os.fsync(f.fileno())
print("done", flush=True)
"""


def _child(tmp_path: Path, index_dir: Path, folder: Path, log: Path, mode: str, batch: int, delay_s: float):
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD.format(tests=str(TESTS)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(index_dir), str(folder), str(log), mode, str(batch), str(delay_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _check_consistent(index_dir: Path) -> set[str]:
    """The database passes SQLite's checks and every item has its vectors; returns the ids."""
    db = index_dir / "index.sqlite"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        (bare,) = conn.execute(
            "SELECT count(*) FROM items WHERE key NOT IN (SELECT item FROM embeddings)"
        ).fetchone()
        assert bare == 0  # an item and its vectors are committed together
        ids = [r[0] for r in conn.execute("SELECT id FROM items")]
        paths = [r[0] for r in conn.execute("SELECT path FROM items")]
        assert len(ids) == len(set(ids)) and len(paths) == len(set(paths))
        return set(ids)
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_during_ingest_loses_at_most_the_current_batch(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    files = sorted(make_photo(folder / f"img_{i:04d}.png", seed=i, size=(12, 12)) for i in range(240))
    order = [photo_id(p) for p in files]  # the ingest order (sorted walk)
    rng = random.Random(20240521)
    batch, groups, rounds = 16, 5, 3
    kills = mid_ingest = 0
    started = time.monotonic()
    for g in range(groups):
        index_dir, log = tmp_path / f"idx{g}", tmp_path / f"log{g}.jsonl"
        for r in range(rounds):
            mode = "whole" if r == 0 else "batches"
            proc = _child(tmp_path, index_dir, folder, log, mode, batch, delay_s=0.004)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.8))  # the whole ingest takes ~1.5 s
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
            assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read()  # type: ignore[union-attr]
            ids = _check_consistent(index_dir)
            if 0 < len(ids) < len(files):
                mid_ingest += 1
            if r == 0:  # fresh index, one add_photos call: whole batches, in order, all but the current one
                n = len(ids)
                assert ids == set(order[:n]) and (n % batch == 0 or n == len(files)), n
                embedded = len(Path(f"{log}.embedded").read_text().splitlines())
                assert n >= (embedded - 1) // batch * batch, f"{embedded} photos embedded, only {n} committed"
            logged = set()
            if log.exists():
                for line in log.read_text().splitlines():
                    logged |= set(json.loads(line))
            assert logged <= ids, f"{len(logged - ids)} logged (committed) items lost"
            with Index.open(index_dir, model=FakeEmbedder(), create=False) as index:  # opens and searches
                assert len(index) == len(ids)
                if ids:
                    assert index.search(image=files[0], k=1)
        # re-running the ingest completes it, without duplicates
        with Index.open(index_dir, model=FakeEmbedder()) as index:
            report = index.add_photos(folder, progress=False)
            assert not report.skipped and len(report.added) + len(report.unchanged) == len(files)
            assert len(index) == len(files) and index.stats().vectors == len(files)
            hit = index.search(image=files[123], k=1)[0]
            assert hit.id == order[123] and hit.score > 0.999
        assert _check_consistent(index_dir) == set(order)
    elapsed = time.monotonic() - started
    print(f"{kills} SIGKILLs ({mid_ingest} mid-ingest) in {elapsed:.1f}s")
    assert kills >= 10 and mid_ingest >= 8, (kills, mid_ingest)


# --- readers while writers ingest -------------------------------------------------------------


@pytest.mark.slow
def test_readers_search_while_two_writer_processes_ingest(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    files = [make_photo(folder / f"img_{i:04d}.png", seed=i, size=(12, 12)) for i in range(160)]
    emb = FakeEmbedder()
    with Index.open(tmp_path / "idx", model=emb) as index:
        index.add_note("created before the writers start")
    writers = [
        _child(tmp_path, tmp_path / "idx", folder, tmp_path / "a.jsonl", "batches", 8, delay_s=0.003),
        _child(tmp_path, tmp_path / "idx", folder, tmp_path / "b.jsonl", "whole", 5, delay_s=0.003),
    ]
    errors: list[BaseException] = []
    seen: list[list[int]] = [[], []]
    stop = threading.Event()

    def reader(slot: int) -> None:
        try:
            with Index.open(tmp_path / "idx", model=emb, create=False) as ix:
                while not stop.is_set():
                    hits = ix.search(image=files[slot * 50], k=5) if slot else ix.search(text="writers", k=5)
                    assert hits and all(h.score >= hits[-1].score for h in hits)
                    seen[slot].append(len(ix))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        for w in writers:
            w.wait(timeout=120)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    for w in writers:
        err = w.stderr.read()  # type: ignore[union-attr]
        assert w.returncode == 0, err
        assert "locked" not in err
    assert not errors, errors
    for counts in seen:
        assert counts == sorted(counts), "a reader saw items disappear"
        assert len(counts) > 10 and any(1 < c < 161 for c in counts), "readers did not overlap the writers"
    assert _check_consistent(tmp_path / "idx") == {photo_id(p) for p in files} | {
        note_id("created before the writers start")
    }


# --- search exactness -------------------------------------------------------------------------


class VectorEmbedder:
    """Notes "v:i" embed to base[i] and "q:j" to queries[j]: an index of known random vectors."""

    def __init__(self, n: int = 3000, dim: int = 64, n_queries: int = 50, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.model_id, self.embed_dim = f"vectors@{seed}", dim
        self.base = l2_normalize(rng.standard_normal((n, dim)))
        # queries near some base vectors, as real queries are near their answers
        near = self.base[rng.integers(0, n, n_queries)]
        self.queries = l2_normalize(near + 0.9 * l2_normalize(rng.standard_normal((n_queries, dim))))

    def embed_images(self, images: Sequence, *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        raise NotImplementedError

    def embed_texts(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        rows = []
        for i, t in enumerate(texts):
            kind, _, n = check_text(t, name=f"text[{i}]").partition(":")
            rows.append((self.base if kind == "v" else self.queries)[int(n)])
        return np.asarray(rows, np.float32).reshape(len(rows), self.embed_dim)


@pytest.fixture(scope="module")
def vectors() -> VectorEmbedder:
    return VectorEmbedder()


def _build(path: Path, emb: VectorEmbedder, dtype: str, n: int | None = None) -> Index:
    index = Index.open(path, model=emb, dtype=dtype)  # type: ignore[arg-type]
    n = len(emb.base) if n is None else n
    report = index.add_notes([f"v:{i}" for i in range(n)], batch_size=1000)
    assert len(report.added) == n
    return index


def _brute_force(matrix: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = matrix @ query
    return [int(i) for i in np.lexsort((np.arange(len(scores)), -scores))[:k]]


@pytest.fixture(scope="module")
def float16_index(tmp_path_factory: pytest.TempPathFactory, vectors: VectorEmbedder):
    index = _build(tmp_path_factory.mktemp("f16") / "idx", vectors, "float16")
    yield index
    index.close()


def test_exact_search_equals_numpy_brute_force(tmp_path: Path, vectors: VectorEmbedder) -> None:
    """A float32 index's exact search is numpy's brute force, order and scores. (float16 / int8 scans
    round the query and, on some CPUs, accumulate in float16: their tolerance is the next test's.)"""
    ids = [note_id(f"v:{i}") for i in range(len(vectors.base))]
    index = _build(tmp_path / "idx", vectors, "float32")
    for j in range(len(vectors.queries)):
        hits = index.search(text=f"q:{j}", k=10, approximate=False)
        want = _brute_force(vectors.base, vectors.queries[j], 10)
        assert [h.id for h in hits] == [ids[i] for i in want]
        np.testing.assert_allclose([h.score for h in hits], vectors.base[want] @ vectors.queries[j], atol=1e-6)
    index.close()


@pytest.mark.parametrize(
    ("dtype", "atol", "min_recall"), [("float32", 1e-6, 1.0), ("float16", 5e-4, 0.98), ("int8", 5e-3, 0.95)]
)
def test_storage_dtype_scores_within_tolerance_of_float32(
    tmp_path: Path, vectors: VectorEmbedder, dtype: str, atol: float, min_recall: float
) -> None:
    """Stated tolerance of stored scores vs float32 (unit vectors, 64 dims): float16 5e-4, int8 5e-3."""
    n = 1000
    index = _build(tmp_path / dtype, vectors, dtype, n)
    position = {note_id(f"v:{i}"): i for i in range(n)}
    worst, recall = 0.0, []
    for j in range(len(vectors.queries)):
        q = vectors.queries[j]
        hits = index.search(text=f"q:{j}", k=10)
        exact = vectors.base[[position[h.id] for h in hits]] @ q
        worst = max(worst, float(np.abs(np.array([h.score for h in hits]) - exact).max()))
        recall.append(len({position[h.id] for h in hits} & set(_brute_force(vectors.base[:n], q, 10))) / 10)
    index.close()
    print(f"{dtype}: max |score - float32| = {worst:.2e}, recall@10 vs float32 = {np.mean(recall):.3f}")
    assert worst <= atol and np.mean(recall) >= min_recall


def test_approximate_recall_and_stale_usearch_files(
    float16_index: Index, vectors: VectorEmbedder, tmp_path: Path
) -> None:
    recall = []
    for j in range(len(vectors.queries)):
        exact = {h.id for h in float16_index.search(text=f"q:{j}", k=10, approximate=False)}
        approx = float16_index.search(text=f"q:{j}", k=10, approximate=True)
        recall.append(len(exact & {h.id for h in approx}) / 10)
    print(f"usearch recall@10 vs exact = {np.mean(recall):.3f}")
    assert np.mean(recall) >= 0.95
    # filters work on the approximate path too (and fall back to exact when selective)
    some = [note_id(f"v:{i}") for i in range(5)]
    float16_index.set_meta(some[0], {"album": "x"})
    assert [h.id for h in float16_index.search(text="q:0", k=3, approximate=True, where={"album": "x"})] == [
        some[0]
    ]


def test_usearch_file_is_never_the_source_of_truth(tmp_path: Path) -> None:
    emb = VectorEmbedder(n=1200, dim=32, seed=3)
    path = tmp_path / "idx"
    index = _build(path, emb, "float16", n=1000)
    index.search(text="q:0", k=5, approximate=True)
    index.close()  # saves index.usearch
    usearch_file = path / "index.usearch"
    assert usearch_file.exists()

    def check(ix: Index) -> None:
        """The HNSW holds exactly SQLite's vectors and finds them (HNSW is approximate: a rate, not each one)."""
        probes = [*range(10, 60), *range(1050, 1100)]
        found = sum(ix.search(text=f"v:{j}", k=1, approximate=True)[0].id == note_id(f"v:{j}") for j in probes)
        assert found >= 0.95 * len(probes)
        keys = np.sort(np.asarray(ix._approximate._index.keys, np.int64))
        assert np.array_equal(keys, ix._vectors.vids)

    # stale: another writer added and removed items after the file was saved -> patched, not rebuilt
    with Index.open(path, model=emb) as writer:  # type: ignore[arg-type]
        writer.add_notes([f"v:{i}" for i in range(1000, 1100)])
        writer.remove([note_id(f"v:{i}") for i in range(10)])
    with Index.open(path, model=emb) as ix:  # type: ignore[arg-type]
        check(ix)
        assert all(h.id != note_id("v:3") for h in ix.search(text="v:3", k=20, approximate=True))
        assert ix._approximate.rebuilt == 0
    # broken, missing, or from another database -> rebuilt from SQLite
    for damage in ("garbage", "truncate", "delete", "foreign"):
        if damage == "garbage":
            usearch_file.write_bytes(os.urandom(4096))
        elif damage == "truncate":
            usearch_file.write_bytes(usearch_file.read_bytes()[:1000])
        elif damage == "delete":
            usearch_file.unlink()
        else:
            sidecar = path / "index.usearch.json"
            sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "db_uuid": "someone-else"}))
        with Index.open(path, model=emb) as ix:  # type: ignore[arg-type]
            check(ix)
            assert ix._approximate.rebuilt == 1, damage
            ix._approximate.dirty = True  # write a good file for the next round


@pytest.mark.parametrize("layout", ["random", "ascending", "descending", "ties", "on_sample", "small"])
def test_top_rows_holds_every_row_as_high_as_the_top_th(layout: str) -> None:
    """The exact search ranks only `top_rows`: at least `top` rows, every row scoring above the top-th
    largest score among them, whatever the order (a strided sample can mislead) or the ties."""
    rng = np.random.default_rng(1)
    n = 300 if layout == "small" else 100_000
    scores = rng.standard_normal(n).astype(np.float32)
    if layout == "ascending":
        scores.sort()
    elif layout == "descending":
        scores[::-1].sort()
    elif layout == "ties":
        scores = np.round(scores, 1)  # ~60 distinct values: thousands of rows tie at the threshold
    elif layout == "on_sample":
        scores[:: n // 4096] += 10.0  # the highest scores sit exactly where the strided sample looks
    for top in (1, 40, 256, 5000):
        rows = top_rows(scores, top)
        kth = np.sort(scores)[::-1][min(top, n) - 1]
        assert len(rows) >= min(top, n) and len(np.unique(rows)) == len(rows)
        assert set(np.flatnonzero(scores > kth)) <= set(rows.tolist())
        assert np.sum(scores[rows] >= kth) >= min(top, n)

"""The photo and notes index: ingest, filters, chunking, sync, model checks, reindex, CLI.

`FakeEmbedder` (deterministic, fast, torch-free) stands in for a model: a photo is its 4x4
thumbnail projected to D dims (decoded with the SDK's own `load_image`, so bad files fail the
same way), a note is the sum of random rows of its token ids, truncated at the text context
like a real tower (so a phrase past the context is invisible without chunking).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_gcl.config import TextPreprocess
from edge_gcl.embedding import Embedder, fuse, l2_normalize
from edge_gcl.index import (
    Index,
    IngestReport,
    ModelMismatchError,
    UnreadablePhotosError,
    chunk_note,
    note_id,
    photo_id,
)
from edge_gcl.tokenizer import Tokenizer, check_text
from edge_gcl.transform import ImageDecodeError, load_image

CONTEXT = 16


class FakeEmbedder:
    def __init__(
        self,
        model_id: str = "fake@1",
        dim: int = 32,
        *,
        seed: int = 0,
        delay_s: float = 0.0,
        fail_after: int = -1,
        log: str | None = None,
    ) -> None:
        self.model_id, self.embed_dim = model_id, dim
        self.tokenizer = Tokenizer.from_config(
            TextPreprocess(tokenizer="minilm-wordpiece", context_length=CONTEXT)
        )
        rng = np.random.default_rng(seed)
        self._image_proj = rng.standard_normal((48, dim)).astype(np.float32)
        self._table = rng.standard_normal((self.tokenizer._tok.get_vocab_size(), dim)).astype(np.float32)
        self.delay_s = delay_s  # per photo: makes a bulk ingest slow enough to be killed in the middle
        self.fail_after = fail_after  # raise after embedding this many photos (a crashing model)
        self.images_embedded = 0
        self._log = open(log, "a") if log else None  # noqa: SIM115  # one line per photo embedded

    def embed_images(self, images: Sequence, *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(images), self.embed_dim), np.float32)
        for i, x in enumerate(images):
            if self.fail_after >= 0 and self.images_embedded >= self.fail_after:
                raise RuntimeError("model crashed")
            thumb = load_image(x, draft_size=8).resize((4, 4), Image.Resampling.BILINEAR)
            out[i] = (np.asarray(thumb, np.float32).reshape(-1) / 255.0 - 0.5) @ self._image_proj
            self.images_embedded += 1
            if self._log:
                self._log.write(f"{x}\n")
                self._log.flush()  # in the kernel: survives SIGKILL
            if self.delay_s:
                time.sleep(self.delay_s)
        return l2_normalize(out)

    def embed_texts(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        texts = [check_text(t, name=f"text[{i}]") for i, t in enumerate(texts)]
        if not texts:
            return np.zeros((0, self.embed_dim), np.float32)
        ids, mask = self.tokenizer(texts)  # (B, L), truncated at the context
        return l2_normalize((self._table[ids] * mask[..., None]).sum(1))


def make_photo(path: Path, seed: int, *, size: tuple[int, int] = (16, 12), fmt: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def make_photos(folder: Path, n: int, *, start: int = 0) -> list[Path]:
    return [make_photo(folder / f"img_{i:04d}.png", seed=i) for i in range(start, start + n)]


@pytest.fixture(scope="module")
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def index(tmp_path: Path, embedder: FakeEmbedder):
    with Index.open(tmp_path / "idx", model=embedder) as ix:
        yield ix


# --- basics ------------------------------------------------------------------------------------


def test_add_photos_search_and_container_protocol(
    index: Index, tmp_path: Path, embedder: FakeEmbedder
) -> None:
    assert isinstance(embedder, Embedder)
    photos = make_photos(tmp_path / "photos", 12)
    report = index.add_photos(tmp_path / "photos", progress=False, batch_size=5)
    assert sorted(report.added) == sorted(photo_id(p) for p in photos)
    assert not report.skipped and len(index) == 12
    pid = photo_id(photos[3])
    assert pid in index and "p_nope" not in index and set(index) == set(report.added)
    item = index[pid]
    assert item.modality == "photo" and item.path == str(photos[3]) and item.text is None
    assert item.size_bytes == photos[3].stat().st_size and len(item.sha256 or "") == 64
    hits = index.search(image=photos[3], k=3)
    assert [h.id for h in hits][0] == pid and hits[0].score == pytest.approx(1.0, abs=2e-3)
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    again = index.add_photos(photos, progress=False)
    assert len(again.unchanged) == 12 and not again.added and not again.updated
    del index[pid]
    assert pid not in index and len(index) == 11
    with pytest.raises(KeyError):
        del index[pid]
    assert index.remove([photo_id(photos[0]), "p_missing"]) == 1
    stats = index.stats()
    assert (stats.items, stats.photos, stats.vectors, stats.model_id) == (10, 10, 10, "fake@1")
    assert all(h.id != pid for h in index.search(image=photos[3], k=20))


def test_ids_are_stable_and_documented(tmp_path: Path) -> None:
    assert photo_id(tmp_path / "a.jpg") == photo_id(str(tmp_path / "sub" / ".." / "a.jpg"))
    assert photo_id(tmp_path / "a.jpg").startswith("p_") and len(photo_id("x")) == 18
    assert note_id("hello") == note_id("  hello \n") != note_id("hello!")


def test_notes_photo_notes_and_modality_filters(index: Index, tmp_path: Path, embedder: FakeEmbedder) -> None:
    photos = make_photos(tmp_path / "p", 3)
    index.add_photos(photos, progress=False)
    nid = index.add_note("grocery list: milk eggs bread")
    assert nid == note_id("grocery list: milk eggs bread")
    assert index.add_note("grocery list: milk eggs bread ") == nid and len(index) == 4  # idempotent
    pid = index.add_note("our hotel in lisbon", photo=photos[1], meta={"album": "Trip"})
    assert pid == photo_id(photos[1]) and len(index) == 4
    item = index[pid]
    assert (
        item.modality == "photo+note"
        and item.text == "our hotel in lisbon"
        and item.meta == {"album": "Trip"}
    )
    # the stored vector is normalize(e_image + e_text)
    want = fuse(embedder.embed_images([photos[1]]), embedder.embed_texts(["our hotel in lisbon"]))[0]
    hit = index.search(text="our hotel in lisbon", image=photos[1], k=1)[0]
    assert hit.id == pid and hit.score == pytest.approx(1.0, abs=2e-3)
    assert float(want @ want) == pytest.approx(1.0, abs=1e-5)
    # re-adding the (unchanged) photo keeps its note; modality filters
    assert index.add_photos(photos, progress=False).unchanged == [photo_id(p) for p in photos]
    assert index[pid].modality == "photo+note"
    kinds = {h.modality for h in index.search(text="lisbon", k=10, modalities=["note"])}
    assert kinds == {"note"}
    assert [h.id for h in index.search(text="lisbon", k=10, modalities=["photo+note"])] == [pid]
    assert len(index.search(text="lisbon", k=10, modalities=["photo", "note"])) == 3


def test_metadata_filters(index: Index, tmp_path: Path) -> None:
    trip = make_photos(tmp_path / "trip", 3)
    home = make_photos(tmp_path / "home", 2, start=10)
    index.add_photos(trip, meta={"album": "Trip", "year": 2024}, progress=False)
    index.add_photos(home, meta={"album": "Home", "year": 2023}, progress=False)
    report = index.add_notes(
        ["beach day with friends", "tax receipts", "dinner at the beach bar"],
        metas=[{"tags": ["beach", "friends"]}, {"tags": ["admin"]}, {"tags": "beach", "album": "Trip"}],
    )
    assert len(report.added) == 3
    ids = lambda hits: {h.id for h in hits}  # noqa: E731
    trip_ids = {photo_id(p) for p in trip}
    assert ids(index.search(image=home[0], k=10, where={"album": "Trip"})) == trip_ids | {
        note_id("dinner at the beach bar")
    }
    assert ids(index.search(image=home[0], k=10, where={"album": "Trip"}, modalities=["photo"])) == trip_ids
    assert ids(index.search(text="beach", k=10, where={"tags": "beach"})) == {
        note_id("beach day with friends"),
        note_id("dinner at the beach bar"),
    }
    assert ids(index.search(text="x", k=10, where={"tags": ["admin", "friends"]})) == {
        note_id("tax receipts"),
        note_id("beach day with friends"),
    }
    assert ids(index.search(text="x", k=10, where={"year": 2023})) == {photo_id(p) for p in home}
    assert index.search(text="x", k=10, where={"album": "Nope"}) == []
    # metadata can be changed afterwards, and a photo's meta survives re-adding it unchanged
    index.set_meta(photo_id(home[0]), {"album": "Trip"})
    assert photo_id(home[0]) in ids(index.search(text="x", k=10, where={"album": "Trip"}))
    index.add_photos(home, progress=False)
    assert index[photo_id(home[0])].meta == {"album": "Trip"}
    with pytest.raises(ValueError, match=r"where\['album'\]: None"):
        index.search(text="x", where={"album": None})
    with pytest.raises(ValueError, match="meta: not JSON-serialisable"):
        index.add_note("x", meta={"when": object()})


def test_long_note_chunking_finds_a_phrase_at_the_end(index: Index, embedder: FakeEmbedder) -> None:
    filler = " ".join(f"word{i % 37} lorem ipsum dolor" for i in range(60))
    phrase = "zebra crossing near the harbour"
    long_note = f"{filler} {phrase}"
    chunks = chunk_note(long_note, embedder.tokenizer)
    assert len(chunks) > 5 and phrase in chunks[-1]
    assert all(embedder.tokenizer.count_tokens(c) <= CONTEXT for c in chunks)
    assert " ".join(long_note.split()).endswith(chunks[-1]) and chunks[0] == " ".join(
        long_note.split()[: len(chunks[0].split())]
    )
    # the tower alone truncates the note: its phrase is invisible in a single vector
    q = embedder.embed_texts([phrase])[0]
    assert float(embedder.embed_texts([long_note])[0] @ q) < 0.5
    for i in range(20):
        index.add_note(f"note {i} about {'harbour' if i % 2 else 'crossing'} things")
    nid = index.add_note(long_note)
    hits = index.search(text=phrase, k=5)
    assert hits[0].id == nid and hits[0].score > 0.8 and hits[0].chunk == len(chunks) - 1
    assert sum(h.id == nid for h in hits) == 1  # many chunks, one item
    assert index.stats().vectors == 20 + len(chunks)
    assert chunk_note("short note", embedder.tokenizer) == ["short note"]
    assert len(chunk_note(" ".join(["w"] * 50), None)) > 2  # no tokenizer: word windows


def test_sync_adds_changes_and_drops(index: Index, tmp_path: Path, embedder: FakeEmbedder) -> None:
    folder = tmp_path / "dcim"
    photos = make_photos(folder, 5) + [make_photo(folder / "sub" / "deep.jpg", 99)]
    outside = make_photo(tmp_path / "elsewhere" / "keep.png", 50)
    index.add_photos(outside, progress=False)
    (folder / "notes.txt").write_text("not a photo")  # ignored by folder walks
    first = index.sync(folder, progress=False)
    assert len(first.added) == 6 and not first.skipped
    index.add_note("the note survives its photo", photo=photos[4])
    # change one, touch one (same bytes, new mtime), delete two, add one
    make_photo(photos[0], seed=1000)
    os.utime(photos[1], ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    photos[2].unlink()
    photos[4].unlink()
    new = make_photo(folder / "new.png", 77)
    before = embedder.images_embedded
    report = index.sync(folder, progress=False)
    assert report.added == [photo_id(new)]
    assert set(report.updated) == {photo_id(photos[0]), photo_id(photos[4])}
    assert report.removed == [photo_id(photos[2])]
    assert photo_id(photos[1]) in report.unchanged and not report.skipped
    assert embedder.images_embedded - before == 2  # the changed photo and the new one, not the touched one
    assert index[photo_id(photos[1])].mtime_ns == photos[1].stat().st_mtime_ns
    kept = index[photo_id(photos[4])]
    assert kept.modality == "note" and kept.path is None and kept.text == "the note survives its photo"
    assert index.search(text="the note survives its photo", k=1)[0].id == kept.id
    assert photo_id(outside) in index  # outside the synced folder: untouched
    assert index.search(image=photos[0], k=1)[0].id == photo_id(photos[0])  # re-embedded
    with pytest.raises(NotADirectoryError, match="missing"):
        index.sync(tmp_path / "missing", progress=False)
    assert len(index) == 7


def test_model_mismatch_and_reindex(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    photos = make_photos(folder, 6)
    old = FakeEmbedder("fake@1", 32)
    with Index.open(tmp_path / "idx", model=old) as index:
        index.add_photos(folder, progress=False)
        index.add_note("sunset over the bay", photo=photos[0])
        index.add_note("call the plumber", meta={"tags": ["home"]})
    new = FakeEmbedder("fake@2", 24, seed=5)
    with pytest.raises(
        ModelMismatchError, match=r"built with model 'fake@1' \(32 dims\), not 'fake@2' \(24 dims\)"
    ):
        Index.open(tmp_path / "idx", model=new)
    with pytest.raises(FileNotFoundError, match="no index here"):
        Index.open(tmp_path / "nothing", model=old, create=False)
    reader = Index.open(tmp_path / "idx", model=old)  # another app still on the old model
    assert len(reader.search(text="plumber", k=3)) == 3
    photos[1].unlink()  # a source that is gone by migration time
    photos[0].unlink()  # ... and one that carried a note
    # a model that crashes half-way leaves the index as it was
    with Index.open(tmp_path / "idx") as index:
        with pytest.raises(RuntimeError, match="model crashed"):
            index.reindex(FakeEmbedder("fake@2", 24, seed=5, fail_after=2), batch_size=2, progress=False,
                          drop_unreadable=True)
    assert reader.search(text="plumber", k=1)[0].text == "call the plumber"
    with sqlite3.connect(tmp_path / "idx" / "index.sqlite") as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'reindex_staging'").fetchone()
    with Index.open(tmp_path / "idx") as index:
        with pytest.raises(UnreadablePhotosError, match="2 photos cannot be read"):  # nothing dropped unasked
            index.reindex(new, batch_size=2, progress=False)
        assert index.model_id == "fake@1" and len(index) == 7
        report = index.reindex(new, batch_size=2, progress=False, drop_unreadable=True)
        assert index.model_id == "fake@2" and index.embed_dim == 24
    assert report.removed == [photo_id(photos[1])]
    assert {s.input for s in report.skipped} == {str(photos[0]), str(photos[1])}
    with Index.open(tmp_path / "idx", model=new) as index:
        assert len(index) == 6 and index.stats().vectors == 6
        assert index[photo_id(photos[0])].modality == "note"
        assert index.search(image=photos[3], k=1)[0].id == photo_id(photos[3])
        hit = index.search(text="call the plumber", k=1)[0]
        assert hit.id == note_id("call the plumber") and hit.score == pytest.approx(1.0, abs=2e-3)
        assert hit.meta == {"tags": ["home"]}
    with pytest.raises(ModelMismatchError, match="reindex"):
        reader.search(text="plumber")  # the reader notices the migration instead of mixing spaces
    reader.close()


def test_bad_queries_name_the_input(index: Index, tmp_path: Path) -> None:
    index.add_note("something")
    with pytest.raises(ValueError, match="give text=, image= or both, or vector="):
        index.search()
    with pytest.raises(ValueError, match="query text: empty text"):
        index.search(text="  ")
    with pytest.raises(ValueError, match="query text: not valid UTF-8"):
        index.search(text=b"\xff\xfe")  # type: ignore[arg-type]
    with pytest.raises(ImageDecodeError, match="nope.jpg: no such file"):
        index.search(image=tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(ImageDecodeError, match="bad.jpg: not a supported image"):
        index.search(text="x", image=bad)
    with pytest.raises(ValueError, match="k 0"):
        index.search(text="x", k=0)
    with pytest.raises(ValueError, match=r"modalities \['video'\]"):
        index.search(text="x", modalities=["video"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="note: empty text"):
        index.add_note("")
    with pytest.raises(ImageDecodeError, match="missing.png"):
        index.add_note("x", photo=tmp_path / "missing.png")
    assert len(index) == 1


# --- searching by vector; what the exact scan reads ---------------------------------------------


def test_vector_search_equals_text_search_with_the_same_embedding(
    index: Index, tmp_path: Path, embedder: FakeEmbedder
) -> None:
    photos = make_photos(tmp_path / "p", 6)
    index.add_photos(photos, meta={"album": "Trip"}, progress=False)
    notes = ["milk eggs bread", "hotel in lisbon", "passport renewal receipt", "lisbon tram 28 " * 12]
    index.add_notes(notes, metas=[None, {"album": "Trip"}, None, None])
    index.add_note("our hotel room", photo=photos[2])
    query = embedder.embed_texts(["hotel in lisbon"])[0]  # (D,) unit norm
    for options in ({}, {"approximate": True}, {"modalities": ["note"]}, {"where": {"album": "Trip"}}):
        by_text = index.search(text="hotel in lisbon", k=5, **options)
        # a text query also puts the items holding its words first: the vector query names them
        assert len(by_text) >= 2 and index.search(vector=query, words="hotel in lisbon", k=5, **options) == by_text, options
    fused = fuse(embedder.embed_images([photos[2]]), embedder.embed_texts(["our hotel room"]))[0]
    assert index.search(vector=fused, k=3) == index.search(text="our hotel room", image=photos[2], k=3)
    # normalised on the way in: a scaled float64 list finds the same items with the same cosines
    scaled = index.search(vector=(7.5 * query).astype(np.float64).tolist(), k=5)
    by_text = index.search(text="hotel in lisbon", k=5)
    assert [h.id for h in scaled] == [h.id for h in by_text]
    np.testing.assert_allclose([h.score for h in scaled], [h.score for h in by_text], atol=1e-6)


def test_vector_queries_are_checked_and_named(index: Index, embedder: FakeEmbedder) -> None:
    index.add_note("something")
    good = embedder.embed_texts(["something"])[0]
    with pytest.raises(ValueError, match=r"query vector of shape \(16,\): this index holds 32-d vectors"):
        index.search(vector=good[:16])
    with pytest.raises(ValueError, match=r"query vector of shape \(1, 32\)"):
        index.search(vector=good[None, :])
    with pytest.raises(ValueError, match="query vector: has non-finite values"):
        index.search(vector=np.where(np.arange(32) == 3, np.nan, good))
    with pytest.raises(ValueError, match="query vector: has non-finite values"):
        index.search(vector=np.full(32, 1e39))  # overflows float32
    with pytest.raises(ValueError, match="query vector: all zeros"):
        index.search(vector=np.zeros(32))
    with pytest.raises(TypeError, match=r"query vector: expected a \(32,\) array of numbers, got str"):
        index.search(vector="something")
    with pytest.raises(ValueError, match="give vector= alone"):
        index.search(text="something", vector=good)
    assert index.search(vector=1e-30 * good, k=1)[0].id == note_id("something")  # tiny but fine


@pytest.mark.parametrize("dtype", ["float16", "int8", "float32"])
def test_stats_say_what_the_exact_scan_reads(tmp_path: Path, embedder: FakeEmbedder, dtype: str) -> None:
    itemsize = {"float16": 2, "int8": 1, "float32": 4}[dtype]
    with Index.open(tmp_path / "idx", model=embedder, dtype=dtype) as index:  # type: ignore[arg-type]
        assert (index.stats().search_dtype, index.stats().search_memory_bytes) == (dtype, 0)
        index.add_notes(["milk eggs bread", "hotel in lisbon", "a long note " * 20])
        index.search(text="lisbon", k=1)  # loads the scan matrix
        stats = index.stats()
        assert stats.dtype == dtype and stats.vectors > 3  # the long note has several chunks
        assert stats.search_memory_bytes == stats.vectors * 32 * itemsize == index._vectors.matrix.nbytes
        assert str(index._vectors.matrix.dtype) == stats.search_dtype
        assert stats.to_dict()["search_memory_bytes"] == stats.search_memory_bytes


@pytest.mark.parametrize(("dtype", "atol"), [("float16", 2e-3), ("int8", 2e-2), ("float32", 1e-6)])
def test_scan_in_the_stored_dtype_matches_float_scores(tmp_path: Path, dtype: str, atol: float) -> None:
    """The exact scan reads float16 / int8 as stored (SimSIMD): its scores are the float32 products with
    the stored values up to the query's own rounding (float16; int8 with one scale), and it ranks the
    items as those float32 scores do; a filtered scan (`rows`) agrees with the full one."""
    rng = np.random.default_rng(1)
    words = ["milk", "eggs", "hotel", "lisbon", "beach", "dog", "train", "ticket", "birthday", "cake"]
    notes = [" ".join(rng.choice(words, 4)) + f" {i}" for i in range(200)]
    with Index.open(tmp_path / "idx", model=FakeEmbedder(dim=64), dtype=dtype) as index:  # type: ignore[arg-type]
        index.add_notes(notes)
        index.search(text="dog", k=1)  # loads the scan matrix
        vectors = index._vectors
        warnings.simplefilter("error")  # the SimSIMD scan itself, not the float32 fallback (pytest restores)
        assert vectors.matrix.dtype == np.dtype(dtype) and len(vectors) == 200
        every = np.arange(len(vectors))
        for query in rng.standard_normal((5, 64)).astype(np.float32):
            query /= np.linalg.norm(query)
            got, want = vectors.scores(query), vectors.decoded(every) @ query
            assert got.dtype == np.float32 and got.shape == (200,)
            np.testing.assert_allclose(got, want, atol=atol)
            assert len(set(np.argsort(-got)[:10]) & set(np.argsort(-want)[:10])) >= 9
            rows = every[::7]
            np.testing.assert_allclose(vectors.scores(query, rows), got[rows], rtol=1e-6, atol=1e-7)


def test_scan_survives_usearch_imported_first(tmp_path: Path) -> None:
    """usearch carries SimSIMD's symbols: a SimSIMD loaded after it rejects arrays. The scan then warns
    and decodes to float32, with the same scores (a fresh interpreter, usearch imported first)."""
    import subprocess
    import sys

    script = """
import warnings, numpy as np, usearch.index
from edge_gcl.index.vectors import VectorMatrix
vm = VectorMatrix.__new__(VectorMatrix)
rng = np.random.default_rng(0)
vm.matrix = rng.integers(-127, 128, (50, 16)).astype(np.int8)
vm.scales = rng.random(50).astype(np.float32) / 127
q = rng.standard_normal(16).astype(np.float32)
q /= np.linalg.norm(q)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    got = vm.scores(q)
want = (vm.matrix.astype(np.float32) * vm.scales[:, None]) @ q
print(len(w), w[0].category.__name__ if w else "", float(np.abs(got - want).max()))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["1", "RuntimeWarning"] and float(out[2]) < 1e-5


def test_vector_query_after_another_process_reindexed(tmp_path: Path, embedder: FakeEmbedder) -> None:
    with Index.open(tmp_path / "idx", model=embedder) as index:
        index.add_note("hello")
    with Index.open(tmp_path / "idx") as reader:  # no model: only vector queries
        assert reader.search(vector=embedder.embed_texts(["hello"])[0], k=1)[0].id == note_id("hello")
        with Index.open(tmp_path / "idx") as writer:
            writer.reindex(FakeEmbedder("fake@2", dim=16), progress=False)
        with pytest.raises(ModelMismatchError, match="query vector has 32 dims, the index now holds 16-d"):
            reader.search(vector=np.ones(32))
        assert reader.search(vector=np.ones(16), k=1)[0].id == note_id("hello")


def test_open_without_model(tmp_path: Path, embedder: FakeEmbedder) -> None:
    with pytest.raises(ValueError, match="creating an index needs a model"):
        Index.open(tmp_path / "new")
    with Index.open(tmp_path / "idx", model=embedder, dtype="int8") as index:
        index.add_note("hello")
    with Index.open(tmp_path / "idx") as index:
        assert len(index) == 1 and index.stats().dtype == "int8"
        with pytest.raises(RuntimeError, match="opened without a model"):
            index.search(text="hello")
        hit = index.search(vector=embedder.embed_texts(["hello"])[0], k=1)[0]
        assert hit.id == note_id("hello") and hit.score == pytest.approx(1.0, abs=1e-2)  # int8
        assert index.remove(note_id("hello")) == 1


def test_cli_end_to_end_with_onnx_artifacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_runtime import make_artifacts

    from edge_gcl.cli import main

    artifacts = make_artifacts(tmp_path / "artifacts")
    photos = make_photos(tmp_path / "photos", 4)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\x00" * 10)
    idx = str(tmp_path / "idx")
    common = ["--index", idx, "--model", str(artifacts)]
    assert main(["index", "add", str(tmp_path / "photos"), *common]) == 0
    out = capsys.readouterr()
    assert "added 4" in out.out and "broken.jpg: not a supported image" in out.err
    assert main(["index", "note", "a receipt from the bakery", "--meta", 'tags=["food"]', *common]) == 0
    nid = capsys.readouterr().out.strip()
    assert nid == note_id("a receipt from the bakery")
    assert (
        main(["index", "note", "sunny day", "--photo", str(photos[2]), "--meta", "album=Trip", *common]) == 0
    )
    capsys.readouterr()
    assert main(["search", "receipt from the bakery", "--json", "--k", "3", *common]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert (
        hits[0]["id"] == nid
        and hits[0]["text"] == "a receipt from the bakery"
        and hits[0]["modality"] == "note"
    )
    assert len(hits) == 3 and all({"id", "score", "modality"} <= set(h) for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(("path" in h) == (h["modality"] != "note") for h in hits)
    assert main(["search", "--image", str(photos[1]), "--json", "--modality", "photo", *common]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["path"] == str(photos[1]) and {h["modality"] for h in hits} == {"photo"}
    assert main(["search", "sunny", "--where", "album=Trip", "--json", *common]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in hits] == [photo_id(photos[2])] and hits[0]["modality"] == "photo+note"
    assert main(["search", "sunny", *common]) == 0
    assert "photo+note" in capsys.readouterr().out
    assert main(["index", "stats", "--index", idx]) == 0  # no model needed
    stats = json.loads(capsys.readouterr().out)
    assert stats["items"] == 5 and stats["model_id"] == "tiny-onnx@seed0"
    assert main(["index", "remove", nid, "--index", idx]) == 0
    assert "removed 1" in capsys.readouterr().out
    # errors: one line, status 1
    assert main(["search", *common]) == 1
    assert "give a query text" in capsys.readouterr().err
    assert main(["search", "x", "--index", str(tmp_path / "none"), "--model", str(artifacts)]) == 1
    assert "no index here" in capsys.readouterr().err
    other = make_artifacts(tmp_path / "other", seed=1)
    assert main(["search", "x", "--index", idx, "--model", str(other)]) == 1
    err = capsys.readouterr().err
    assert "built with model 'tiny-onnx' (tiny-onnx@seed0, " in err
    assert f"`edge-gcl index reindex --index {idx} --model {other}`" in err
    assert main(["index", "sync", str(tmp_path / "photos"), *common]) == 0
    assert "unchanged 4" in capsys.readouterr().out


def test_report_str() -> None:
    assert (
        str(IngestReport(added=["a"], removed=["b", "c"]))
        == "added 1, updated 0, unchanged 0, removed 2, skipped 0"
    )


class _GivenText:
    """Stands for an `OcrEngine`: every photo reads as `text`."""

    def __init__(self, text: str) -> None:
        self.text = text

    def read_many(self, photos: Sequence) -> list:
        from edge_gcl.ocr import OcrLine, OcrResult

        out = []
        for _ in photos:
            result = OcrResult()
            result.lines = [OcrLine(self.text, 1.0, ((0, 0), (1, 0), (1, 1), (0, 1)))]
            out.append(result)
        return out


@pytest.mark.parametrize("mode", ["fused", "text", "both"])
def test_ocr_vectors_say_how_a_photos_text_joins_its_vectors(tmp_path: Path, embedder: FakeEmbedder, mode: str) -> None:
    photo = make_photo(tmp_path / "receipt.png", seed=3)
    with Index.open(tmp_path / "idx", model=embedder, dtype="float32", ocr=_GivenText("boulangerie croissant"),
                    ocr_vectors=mode) as index:  # type: ignore[arg-type]
        assert index.ocr_vectors == mode
        index.add_photos(photo, progress=False)
        index._vectors.refresh()
        rows = index._vectors.decoded(np.flatnonzero(index._vectors.items == index[photo_id(photo)].key))
    e_photo, e_text = embedder.embed_images([photo])[0], embedder.embed_texts(["boulangerie croissant"])[0]
    want = {"fused": [fuse(e_photo, e_text)], "text": [e_text], "both": [fuse(e_photo, e_text), e_text]}[mode]
    assert np.allclose(rows, [e_photo, *want], atol=1e-5)  # the photo's own row, then its text's


def test_an_unknown_ocr_vectors_is_refused_by_name(tmp_path: Path, embedder: FakeEmbedder) -> None:
    with pytest.raises(ValueError, match="ocr_vectors 'fusion': expected one of 'fused', 'text', 'both'"):
        Index.open(tmp_path / "idx", model=embedder, ocr_vectors="fusion")  # type: ignore[arg-type]
    assert not (tmp_path / "idx").exists()  # refused before anything is created

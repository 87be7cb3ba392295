"""`Index`: the on-device photo and notes index (open, describe, add, sync, search, reindex).

`Index` keeps the state of one open index (its SQLite store, its model, OCR engine and sentence
encoder, the search caches) and each verb delegates to the module of its concern: `ingest.py`
(photos, notes and the text read in photos: what is stored, when a photo is embedded again, how
OCR text joins its vectors), `search.py` (how a query ranks items: chunks, the cross-modal offset,
exact and approximate scans, word matches, the meaning lift, dates), `reindex.py` (migrating to
another model), over `store.py` (the file), `vectors.py` (the in-memory matrix and usearch graph),
`sources.py` (ids, note chunks, photo files), `words.py` and `meaning.py`.

Several processes may open the same index; one writes at a time (SQLite WAL), readers never wait
for it, and one ingest runs at a time (`ingest.ingest_lock`).
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..embedding import Embedder, model_name
from .ingest import (
    MAX_OCR_CHUNKS,
    Ingester,
    IngestReport,
    OcrVectors,
    Skip,
    check_ocr_vectors,
    ingest_lock,
    need_model,
)
from .reindex import UnreadablePhotosError, check_readable, migrate
from .search import (
    APPROXIMATE_MIN_VECTORS,
    CALIBRATION_FILE,
    MAX_CROSS_MODAL_OFFSET,
    Hit,
    Searcher,
    calibration,
    check_modalities,
    check_search_options,
    default_cross_modal_offset,
    default_min_score,
    modality_of,
    parse_date,
)
from .sources import chunk_note, note_id, photo_id
from .store import Item, Modality, ModelMismatchError, Store, StoreInfo, VectorDType, dump_meta
from .vectors import ApproximateIndex, VectorMatrix, scan_bytes

if TYPE_CHECKING:
    from ..ocr import OcrEngine
    from ..ocr.meaning import MeaningEncoder

__all__ = [  # the names this module has always offered, wherever they are defined now
    "APPROXIMATE_FILE", "APPROXIMATE_MIN_VECTORS", "CALIBRATION_FILE", "INDEX_FILE", "MAX_CROSS_MODAL_OFFSET",
    "MAX_OCR_CHUNKS", "VECTORS_FILE", "Hit", "Index", "IndexStats", "IngestReport", "Skip", "UnreadablePhotosError",
    "calibration", "check_search_options", "chunk_note", "default_cross_modal_offset", "default_min_score",
    "modality_of", "note_id", "parse_date", "photo_id",
]

INDEX_FILE = "index.sqlite"
APPROXIMATE_FILE = "index.usearch"
VECTORS_FILE = "index.vectors"  # the stored vectors packed for a memory-mapped scan (vectors.VectorCache)


@dataclass(frozen=True)
class IndexStats:
    """What `Index.stats()` reports; `dtype` is how vectors are stored, `search_dtype` what the exact
    scan reads (the stored dtype: see `vectors.py`)."""

    path: str
    items: int
    photos: int
    notes: int
    photo_notes: int
    vectors: int
    model_name: str  # for people (`edge_gcl.embedding.model_name`); model_id names the weights
    model_id: str
    embed_dim: int
    dtype: str
    format_version: int
    created: str
    size_bytes: int  # database + WAL
    search_dtype: str
    search_memory_bytes: int  # an unfiltered exact search reads per query: vectors x embed_dim x itemsize

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



class Index:
    """Photos and notes of one device, searchable by text, photo or both.

    Open with `Index.open(folder, model=...)`; the folder holds `index.sqlite` (the truth) and
    `index.usearch` (an approximate index, rebuilt when missing or stale). Several processes may
    open the same index; one writes at a time (SQLite WAL), readers never wait for it.
    """

    def __init__(
        self, store: Store, embedder: Embedder | None, folder: Path, ocr: OcrEngine | None = None,
        meaning: MeaningEncoder | None = None, *, ocr_vectors: OcrVectors = "fused",
    ) -> None:
        self.store = store
        self.folder = folder
        self._embedder = embedder
        self.ocr = ocr  # reads the text in photos at ingest (None: off)
        self.meaning = meaning  # embeds the meaning of that text and of queries (None: not used)
        self.ocr_vectors = check_ocr_vectors(ocr_vectors)  # how a photo's OCR text joins its vectors
        self._vectors = VectorMatrix(store, cache=folder / VECTORS_FILE)
        self._approximate = ApproximateIndex(folder / APPROXIMATE_FILE)
        self._searcher = Searcher(store, self._vectors, self._approximate)
        self._lock = store.lock

    # --- opening, closing, describing -------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        model: Embedder | str | Path | None = None,
        create: bool = True,
        dtype: VectorDType = "float16",
        provider: str = "cpu",
        form: str | None = None,
        timeout_s: float = 30.0,
        ocr: OcrEngine | bool | Literal["auto"] | None = "auto",
        meaning: MeaningEncoder | bool | Literal["auto"] | None = "auto",
        ocr_vectors: OcrVectors = "fused",
    ) -> Index:
        """Open the index at `path` (a folder holding index.sqlite, or a `.sqlite` file).

        `model` is an `Embedder` or a spec for `edge_gcl.runtime.load_embedder` (artifacts
        folder, model name, checkpoint folder). It must be the model the index was built with
        (`ModelMismatchError` otherwise; migrate with `reindex`). `model=None` opens without one:
        len / in / [] / remove / stats / reindex and `search(vector=...)` work, ingest and text or
        image search do not. `provider` and `form` choose how an artifacts folder runs
        (`edge_gcl.runtime.OnnxEmbedder`). `dtype` ("float16", "int8" with a per-vector scale, or
        "float32") applies when creating. `ocr` reads the words in photos at ingest: "auto" when the
        model's artifacts folder ships the OCR graphs (`edge_gcl.ocr.load_ocr`), True to require it
        (a PyTorch model takes the rapidocr wheel's graphs), False never, or an `OcrEngine`. `meaning`
        compares a query with the meaning of the text read in photos: "auto" when the artifacts ship
        the sentence encoder (`edge_gcl.ocr.meaning.load_meaning`), False never, or an encoder.
        `ocr_vectors` says how a photo's text joins its vectors at ingest (`ingest.OcrVectors`): "fused"
        (normalize(e_photo + e_chunk) per chunk, the default), "text" (e_chunk) or "both".
        """
        check_ocr_vectors(ocr_vectors)  # before any model loads
        path = Path(path)
        file = path if path.suffix in (".sqlite", ".db") or path.is_file() else path / INDEX_FILE
        if not create and not file.exists():
            raise FileNotFoundError(
                f"{file}: no index here (create one with `edge-gcl index add` or create=True)"
            )
        embedder = None
        engine = ocr if not isinstance(ocr, (bool, str)) else None
        encoder = meaning if not isinstance(meaning, (bool, str)) else None
        if model is not None:
            from ..ocr import load_ocr
            from ..ocr.meaning import load_meaning
            from ..runtime import load_embedder

            embedder = load_embedder(model, provider=provider, form=form)  # type: ignore[arg-type]
            engine = load_ocr(embedder, ocr, provider=provider, form=form)
            encoder = load_meaning(embedder, meaning, provider=provider, form=form)
        store = Store.open(
            file,
            create=create,
            model_id=embedder.model_id if embedder else None,
            embed_dim=embedder.embed_dim if embedder else None,
            model_name=model_name(embedder) if embedder else None,
            dtype=dtype,
            timeout_s=timeout_s,
        )
        index = cls(store, embedder, file.parent, engine, encoder, ocr_vectors=ocr_vectors)
        try:
            if embedder is not None:
                index._check_model(embedder)
        except BaseException:
            store.close()
            raise
        return index

    def close(self) -> None:
        """Save the search caches (best-effort: a full disk or a read-only folder costs the next open a rebuild
        from index.sqlite, never an answer) and close the database."""
        with self._lock:
            try:
                for cache, path in ((self._approximate, self.folder / APPROXIMATE_FILE),
                                    (self._vectors, self.folder / VECTORS_FILE)):
                    try:
                        cache.save()
                    except (OSError, RuntimeError) as e:  # usearch reports a failed write as a RuntimeError
                        if not (isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM)):
                            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                            print(f"edge-gcl: {path}: search cache not saved ({why}); the next open rebuilds it",
                                  file=sys.stderr)
            finally:
                self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        info = self.store.info
        return (
            f"Index({str(self.store.path)!r}, model_id={info.model_id!r}, items={len(self)})"
            if info
            else "Index()"
        )

    @property
    def model_id(self) -> str:
        return self._info().model_id

    @property
    def embed_dim(self) -> int:
        return self._info().embed_dim

    @property
    def embedder(self) -> Embedder:
        return need_model(self.store, self._embedder)

    def _info(self) -> StoreInfo:
        assert self.store.info is not None
        return self.store.info

    @property
    def model_name(self) -> str:
        """The name of the model the index was built with (`default`, `lite`, an artifacts folder's
        model_name), as recorded at creation or reindex; the model id when none was."""
        return self.store.model_name() or self.model_id

    def _check_model(self, embedder: Embedder) -> None:
        info = self._info()
        if embedder.model_id != info.model_id or embedder.embed_dim != info.embed_dim:
            def named(name: str | None, model_id: str, dim: int) -> str:
                return f"{name!r} ({model_id}, {dim} dims)" if name and name != model_id else f"{model_id!r} ({dim} dims)"

            raise ModelMismatchError(
                f"{self.store.path}: built with model {named(self.store.model_name(), info.model_id, info.embed_dim)}, "
                f"not {named(model_name(embedder), embedder.model_id, embedder.embed_dim)}; "
                f"open it with that model, or re-embed it with this one "
                f"(notes kept): `edge-gcl index reindex --index {self.folder}` (CLI), "
                f"Index.open(path).reindex(new_model) (Python)"
            )

    def __len__(self) -> int:
        with self._lock:
            return self.store.conn.execute("SELECT count(*) FROM items").fetchone()[0]

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self.store.get(item_id) is not None

    def __getitem__(self, item_id: str) -> Item:
        item = self.store.get(item_id)
        if item is None:
            raise KeyError(item_id)
        return item

    def __delitem__(self, item_id: str) -> None:
        if not self.remove([item_id]):
            raise KeyError(item_id)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            ids = [r[0] for r in self.store.conn.execute("SELECT id FROM items ORDER BY key")]
        return iter(ids)

    def stats(self) -> IndexStats:
        info = self._info()
        with self.store.snapshot() as conn:
            counts = dict(conn.execute("SELECT modality, count(*) FROM items GROUP BY modality").fetchall())
            (vectors,) = conn.execute("SELECT count(*) FROM embeddings").fetchone()
        size = sum(
            os.path.getsize(p) for p in (self.store.path, Path(f"{self.store.path}-wal")) if os.path.exists(p)
        )
        return IndexStats(
            path=str(self.store.path),
            items=sum(counts.values()),
            photos=counts.get("photo", 0),
            notes=counts.get("note", 0),
            photo_notes=counts.get("photo+note", 0),
            vectors=vectors,
            model_name=self.model_name,
            model_id=info.model_id,
            embed_dim=info.embed_dim,
            dtype=info.dtype,
            format_version=info.format_version,
            created=info.created,
            size_bytes=size,
            search_dtype=info.dtype,
            search_memory_bytes=scan_bytes(vectors, info.embed_dim, info.dtype),
        )

    # --- adding (ingest.py) ---------------------------------------------------------------

    def _ingester(self, embedder: Embedder | None = None) -> Ingester:
        """What adds to this index now: its store, model (or `embedder`), OCR engine and sentence encoder."""
        return Ingester(self.store, embedder if embedder is not None else self._embedder, ocr=self.ocr,
                        meaning=self.meaning, ocr_vectors=self.ocr_vectors)

    def add_photos(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        recursive: bool = True,
        meta: Mapping[str, Any] | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> IngestReport:
        """Add photo files and folders (folders: image extensions, hidden entries skipped).

        New photos are added, changed ones (size/mtime, then SHA-256) re-embedded, the rest left
        alone. `meta` is stored on every photo added or updated. Inputs that cannot be used are
        listed in `report.skipped`; commits every `batch_size` photos.
        """
        return self._ingester().add_photos(paths, recursive=recursive, meta=meta, batch_size=batch_size,
                                           progress=progress)

    def sync(self, folder: str | Path, *, batch_size: int = 32, progress: bool = True) -> IngestReport:
        """Mirror a folder: add new photos, re-embed changed ones, drop those whose file is gone.

        A photo with a note whose file is gone keeps its note (it becomes a "note" item).
        Items outside `folder` are never touched; a missing `folder` is an error (not "delete all").
        """
        return self._ingester().sync(folder, batch_size=batch_size, progress=progress)

    def read_text(self, *, batch_size: int = 32, progress: bool = True) -> IngestReport:
        """Read the text in every photo not read yet (indexed before OCR, or with it off) and add it
        to its vectors and the words table; the photos read are `report.updated`. Needs an OCR engine
        (`Index.open(..., ocr=...)`)."""
        return self._ingester().read_text(batch_size=batch_size, progress=progress)

    def add_note(
        self, text: str | bytes, *, photo: str | Path | None = None, meta: Mapping[str, Any] | None = None
    ) -> str:
        """Add a note (or attach it to `photo`, replacing that photo's note); returns the item id.

        Raises ValueError naming an empty or non-UTF-8 note, ImageDecodeError naming a bad photo.
        Adding a note that is already there keeps it (and updates `meta` if given).
        """
        return self._ingester().add_note(text, photo=photo, meta=meta)

    def add_notes(
        self,
        texts: Iterable[str | bytes],
        *,
        metas: Sequence[Mapping[str, Any] | None] | None = None,
        batch_size: int = 64,
        progress: bool = False,
    ) -> IngestReport:
        """Bulk-add notes (e.g. an import); bad ones (empty, not valid Unicode, over MAX_NOTE_CHARS)
        are skipped with a reason, the others kept.

        `metas[i]` is note i's metadata. A note already in the index is left alone (its
        metadata replaced if `metas[i]` is given).
        """
        return self._ingester().add_notes(texts, metas=metas, batch_size=batch_size, progress=progress)

    def set_meta(self, item_id: str, meta: Mapping[str, Any]) -> None:
        """Replace an item's user metadata (what `where=` filters on)."""
        meta_json = dump_meta(meta)
        with self.store.write() as conn:
            cur = conn.execute("UPDATE items SET meta = ? WHERE id = ?", (meta_json, item_id))
            if cur.rowcount == 0:
                raise KeyError(item_id)

    def remove(self, ids: str | Iterable[str]) -> int:
        """Remove items by id (with their vectors); returns how many were there.

        A removed photo stays out: later syncs and folder adds skip its file (the photo is still in
        the folder, but it was taken out by hand) until it is added again by name
        (`add_photos(path)`). The file itself is never touched."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        now = time.time()
        with self.store.write() as conn:
            removed = 0
            for i in ids:
                row = conn.execute("DELETE FROM items WHERE id = ? RETURNING path", (i,)).fetchone()
                if row is None:
                    continue
                removed += 1
                if row[0] is not None:
                    conn.execute("INSERT OR REPLACE INTO excluded VALUES (?, ?)", (row[0], now))
            return removed

    def _fill_meaning(self, keys: Sequence[int] | None = None) -> int:
        """Store the meaning vectors of the photos whose text has none yet: those of `keys`, or all."""
        return self._ingester().fill_meaning(keys)

    # --- searching (search.py) -------------------------------------------------------------

    def search(
        self,
        text: str | None = None,
        image: Any = None,
        *,
        vector: Any = None,
        k: int = 10,
        modalities: Iterable[Modality] | None = None,
        where: Mapping[str, Any] | None = None,
        approximate: bool | None = None,
        min_score: float | None = None,
        after: str | date | None = None,
        before: str | date | None = None,
        sort: Literal["score", "date"] = "score",
        query_modality: Modality | None = None,
        cross_modal_offset: float | None = None,
        words: str | None = None,
    ) -> list[Hit]:
        """The `k` best items for a text, a photo (path or PIL image), or both (fused), best first.

        `vector` instead: a precomputed query embedding (D,) of this index's model (say from
        `embed_texts`); it must be finite and nonzero, and is L2-normalised here. It needs no model.
        `modalities` keeps only those kinds of item. `where={"album": "Trip", "tags": "beach"}`
        keeps items whose metadata value equals each given value, or (for a list) contains it; a
        list of values means any of them. `approximate` uses the usearch index (default: only
        above APPROXIMATE_MIN_VECTORS vectors); scores are always exact, never the graph's estimates.

        A hit's score is its cosine plus the model's cross-modal offset when it is of another
        modality than the query (`edge_gcl.embedding.modality_offset`: a note found by a photo, a
        photo by a text, ...); `cross_modal_offset=0` ranks by plain cosine, None takes the model's
        calibrated one (`default_cross_modal_offset`). A text query is a "note", a photo a "photo",
        both a "photo+note"; a `vector` query says which with `query_modality` (else no offset).

        `min_score` drops hits scoring below it (the relevance cut-off; `default_min_score(embedder)`
        is the model's calibrated one). `after` <= taken < `before` keeps photos by when they were
        taken (`parse_date`: "2024", "2024-07", "2024-07-31", datetimes; notes have no date and
        drop out). `sort="date"`: the `k` newest of the items above `min_score`, newest first.

        `words`: items whose note or OCR text contains every word of it (substrings, case and accents
        ignored) come first, whatever `min_score` (`Hit.matched`; the rule is in `words.py`). By
        default the query text when the query is words alone; "" turns it off.

        The meaning of the text read in photos (a query of words alone, or a "note" `vector` with its
        `words`, as the CLI and the app search; with a sentence encoder, `meaning=` of `Index.open`): a photo whose text's sentence vector has cosine c > THRESHOLD
        (0.1) with the query's gains WEIGHT x (c - THRESHOLD) on its score (`edge_gcl.ocr.meaning.boost`,
        `Hit.meaning` says how much), so "bakery bill" lifts a receipt reading "BOULANGERIE ...
        Croissant"; every other item keeps its score. It applies before the word matches are put
        first and before `min_score`.
        """
        return self._searcher.search(
            text, image, vector=vector, k=k, modalities=modalities, where=where, approximate=approximate,
            min_score=min_score, after=after, before=before, sort=sort, query_modality=query_modality,
            cross_modal_offset=cross_modal_offset, words=words, embedder=self._embedder, meaning=self.meaning,
            refresh=self._refresh,
        )

    def items(
        self,
        *,
        modalities: Iterable[Modality] | None = None,
        after: str | date | None = None,
        before: str | date | None = None,
        limit: int | None = None,
    ) -> list[Item]:
        """The items, newest first (photos by when taken, then notes by when added), filtered like
        `search`; `limit` keeps the first that many."""
        modalities = check_modalities(modalities)
        after, before = check_search_options(after=after, before=before)
        return self.store.list_items(modalities, after=after, before=before, limit=limit)  # type: ignore[arg-type]

    def query_vector(self, text: str | None = None, image: Any = None) -> np.ndarray:
        """The (D,) unit query vector `search(text, image)` would use: embed once, then
        `search(vector=...)` as often as needed (other filters, with and without a cut-off)."""
        return self._searcher.query(text, image, None, embedder=self._embedder)

    def _refresh(self) -> None:
        before = self._vectors.db_uuid
        self._vectors.refresh()
        if self._vectors.db_uuid != before and before is not None and self._embedder is not None:
            self._check_model(self._embedder)  # another process reindexed under us

    # --- migrating (reindex.py) ------------------------------------------------------------

    def reindex(
        self,
        model: Embedder | str | Path,
        *,
        provider: str = "cpu",
        form: str | None = None,
        batch_size: int = 32,
        progress: bool = True,
        ocr: OcrEngine | bool | Literal["auto"] | None = "auto",
        drop_unreadable: bool = False,
    ) -> IngestReport:
        """Re-embed every item with another model, atomically.

        `ocr` (as in `Index.open`, for the new model) reads the text in the photos not read yet;
        text already read is kept and embedded with the new model.

        Vectors are computed from the stored sources (photo files, note texts) into a staging
        table, committed in batches (readers keep searching the old model meanwhile), then
        swapped in with the new model id in one transaction. Every photo is re-read from its file:
        when one is gone (an unmounted card, a moved folder) or no longer decodes, the reindex fails
        before anything changes (`UnreadablePhotosError`, naming them), unless `drop_unreadable`:
        then such a photo is removed (photo+note: keeps its note as a "note"); see `report.skipped`.
        """
        with ingest_lock(self.store, progress):
            return self._reindex(
                model, provider=provider, form=form, batch_size=batch_size, progress=progress, ocr=ocr,
                drop_unreadable=drop_unreadable,
            )

    def _reindex(
        self,
        model: Embedder | str | Path,
        *,
        provider: str,
        form: str | None,
        batch_size: int,
        progress: bool,
        ocr: OcrEngine | bool | str,
        drop_unreadable: bool,
    ) -> IngestReport:
        from ..ocr import load_ocr
        from ..ocr.meaning import load_meaning
        from ..runtime import load_embedder

        if not drop_unreadable:  # before the model loads: an unplugged card fails at once
            check_readable(self.store)
        new = load_embedder(model, provider=provider, form=form)  # type: ignore[arg-type]
        engine = load_ocr(new, ocr, provider=provider, form=form)  # type: ignore[arg-type]
        if engine is not None or not ocr:
            self.ocr = engine
        report = migrate(self._ingester(new), new, batch_size=batch_size, progress=progress,
                         drop_unreadable=drop_unreadable)
        self._embedder = new
        self.meaning = load_meaning(new, "auto", provider=provider, form=form) or self.meaning
        self._fill_meaning()
        return report

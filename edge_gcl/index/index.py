"""`Index`: the on-device photo and notes index (ingest, sync, search, reindex).

An item is a photo, a note, or a photo with its note (ids and note chunking: `sources.py`).
A photo with a note is the photo's item with modality "photo+note" and vectors
normalize(e_i + e_t); `add_note(text, photo=p)` attaches (or replaces) the note of photo `p`.
A long note is stored as one vector per chunk; an item's score is the max over its chunks
(for photo+note: over normalize(e_i + e_chunk)), plus the model's cross-modal offset when the
item's modality differs from the query's (`search`).

Words in photos: with an OCR engine (`ocr=`, on by default where the model's artifacts ship the
PP-OCR graphs; `edge_gcl.ocr`), each photo's text is read at ingest and stored with it
(`Item.ocr`); it adds chunks to the photo's vectors (`OCR_VECTORS`) and is searchable word for
word with the notes (`words.py`, which states how word matches merge into the ranking). Where the
artifacts ship the sentence encoder (`meaning=`, `edge_gcl.ocr.meaning`), the text's meaning is
stored too (`meaning.py`) and lifts a photo whose text means what a query says (`search`).

Photos are re-embedded only when their content changed: size and mtime first, then SHA-256.
Ingest commits every `batch_size` photos, so a killed process loses at most the current batch;
an input that cannot be used is listed in the report with a reason and never stops the ingest.
Each photo keeps when it was taken (`Item.taken`: EXIF DateTimeOriginal, else the file's mtime),
which `search(after=, before=, sort="date")` and `items()` use.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import filelock
import numpy as np
from tqdm.auto import tqdm

from ..embedding import Embedder, fuse, modality_offset, modality_offsets, model_name
from ..tokenizer import check_text
from ..transform import ImageDecodeError
from . import meaning as meaning_rows
from .sources import (
    MAX_NOTE_CHARS,
    abspath,
    capture_time,
    check_note,
    chunk_note,
    list_photos,
    mtime_ns,
    note_id,
    photo_id,
    printable,
    reason,
    sha256_file,
    stat_photo,
    taken_text,
)
from .store import (
    MODALITIES,
    Item,
    Modality,
    ModelMismatchError,
    Store,
    StoreInfo,
    VectorDType,
    dump_meta,
)
from .vectors import ApproximateIndex, VectorMatrix, scan_bytes, top_rows
from .words import matching_keys

if TYPE_CHECKING:
    from ..ocr import OcrEngine
    from ..ocr.meaning import MeaningEncoder

INDEX_FILE = "index.sqlite"
APPROXIMATE_FILE = "index.usearch"
VECTORS_FILE = "index.vectors"  # the stored vectors packed for a memory-mapped scan (vectors.VectorCache)
# Above this many stored vectors, search() uses the usearch HNSW unless told otherwise (approximate=True
# or False forces either); below it exact search is one scan of the memory-mapped (V, D) matrix in the
# stored dtype (V x D x 1, 2 or 4 bytes: 25-100 MB and a few ms per query at 100k x 256; see vectors.py).
APPROXIMATE_MIN_VECTORS = 100_000
# How a photo's OCR text joins its vectors: "fused", one chunk normalize(e_photo + e_text) per chunk of
# the text (a photo+note, as GCL trains); "text", the text's own vectors e_text; "both". Chosen on the
# dev half of `python -m benchmarks.ocr` (docs/ocr.md).
OCR_VECTORS: Literal["fused", "text", "both"] = "fused"
MAX_OCR_CHUNKS = 8  # a document photo's text beyond this many chunks is stored and word-searchable only


_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?)?)?")


def parse_date(value: str | date, *, name: str = "date") -> str:
    """A date bound -> 'YYYY-MM-DDTHH:MM:SS', the start of the period it names: "2024" (2024-01-01),
    "2024-07", "2024-07-31", "2024-07-31T18:30[:00]" (or a space for the T), a date or a datetime.
    Times are local wall-clock time, like the stored capture times."""
    if isinstance(value, datetime):
        return taken_text(value)
    if isinstance(value, date):
        return taken_text(datetime(value.year, value.month, value.day))
    m = _DATE.fullmatch(value.strip()) if isinstance(value, str) else None
    try:
        if m is None:
            raise ValueError
        y, mo, d, h, mi, sec = (int(g) if g else None for g in m.groups())
        when = datetime(y, mo or 1, d or 1, h or 0, mi or 0, sec or 0)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(
            f"{name} {value!r}: expected a date like 2024-07-31, 2024-07 or 2024 (or 2024-07-31T18:30)"
        ) from None
    return taken_text(when)


MAX_CROSS_MODAL_OFFSET = 2.0  # a cosine lies in [-1, 1]: a larger offset ranks nothing by similarity any more


def check_search_options(
    *,
    k: Any = 10,
    min_score: Any = None,
    after: str | date | None = None,
    before: str | date | None = None,
    cross_modal_offset: Any = None,
    names: Mapping[str, str] | None = None,
) -> tuple[str | None, str | None]:
    """Check what `search` takes besides the query, before any model runs; returns (after, before) as
    'YYYY-MM-DDTHH:MM:SS'. `names` maps an option to what the caller calls it (the CLI: {"k": "-k", ...})."""
    name = {"k": "k", "min_score": "min_score", "after": "after", "before": "before",
            "cross_modal_offset": "cross_modal_offset", **(names or {})}
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{name['k']} {k!r}: must be a positive int")
    if min_score is not None and not (isinstance(min_score, (int, float)) and np.isfinite(min_score)):
        raise ValueError(f"{name['min_score']} {min_score!r}: expected a finite number (a cosine, -1 to 1)")
    if cross_modal_offset is not None and not (
        isinstance(cross_modal_offset, (int, float)) and abs(cross_modal_offset) <= MAX_CROSS_MODAL_OFFSET
    ):
        raise ValueError(f"{name['cross_modal_offset']} {cross_modal_offset!r}: expected a number from "
                         f"-{MAX_CROSS_MODAL_OFFSET:g} to {MAX_CROSS_MODAL_OFFSET:g} (it is added to a cosine)")
    lower = parse_date(after, name=name["after"]) if after is not None else None
    upper = parse_date(before, name=name["before"]) if before is not None else None
    if lower is not None and upper is not None and upper <= lower:
        raise ValueError(f"{name['before']} {before} is not after {name['after']} {after}: no date can match")
    return lower, upper


def default_min_score(embedder: Embedder | None) -> float | None:
    """The model's relevance cut-off: the score calibrated on its dev benchmark (benchmarks/calibrate.py),
    as `export.compile` records it in the manifest (`extra["min_score"]`); for a PyTorch model, its
    folder's calibration.json (`calibration`). None when the model has none."""
    return _calibrated(embedder, "min_score")


def default_cross_modal_offset(embedder: Embedder | None) -> float:
    """The model's cross-modal offset (`edge_gcl.embedding.modality_offset`), calibrated on its dev
    benchmark and recorded like the cut-off (`extra["cross_modal_offset"]`, calibration.json). 0 when
    the model has none: then search ranks by plain cosine."""
    return _calibrated(embedder, "cross_modal_offset") or 0.0


def _calibrated(embedder: Embedder | None, key: str) -> float | None:
    if embedder is None:
        return None
    manifest = getattr(embedder, "manifest", None)
    value = (getattr(manifest, "extra", None) or {}).get(key, getattr(embedder, key, None))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return calibration(embedder.model_id).get(key) if manifest is None else None


CALIBRATION_FILE = "calibration.json"  # beside a model's weights: {"model_id", "min_score", "cross_modal_offset", how}


def calibration(model_id: str, model_spec: str | Path = "default") -> dict[str, float]:
    """{"min_score", "cross_modal_offset"} (those it holds) of the calibration.json in the model's
    folder (`model_spec`: a checkpoint folder or a model shipped in edge_gcl/weights/), if it was
    calibrated for `model_id` (the same weights); else {}."""
    shipped = Path(__file__).resolve().parents[1] / "weights"
    folder = Path(model_spec) if Path(model_spec).is_dir() else shipped / str(model_spec)
    try:
        record = json.loads((folder / CALIBRATION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("model_id") != model_id:
        return {}
    return {
        key: float(record[key])
        for key in ("min_score", "cross_modal_offset")
        if isinstance(record.get(key), (int, float)) and not isinstance(record.get(key), bool)
    }


def modality_of(text: Any, image: Any) -> Modality:
    """What a query of this text and/or image is, in the index's terms: a text is a "note", a
    photo a "photo", both a "photo+note" (what `search(vector=..., query_modality=...)` takes)."""
    if text is not None and image is not None:
        return "photo+note"
    return "note" if text is not None else "photo"


@dataclass(frozen=True)
class Hit:
    """A search result. `score` ranks: the cosine plus the model's cross-modal offset when the item is
    of another modality than the query (the relevance cut-off applies to it too); `cosine` is the
    similarity alone, in [-1, 1], what a person is shown."""

    id: str
    score: float  # cosine similarity (max over the item's chunks) + the cross-modal offset, if any
    modality: Modality
    path: str | None
    text: str | None
    meta: dict[str, Any]
    chunk: int = 0  # which chunk of a long note matched best
    taken: str | None = None  # photos: 'YYYY-MM-DDTHH:MM:SS', when it was taken (local time)
    ocr: str | None = None  # photos: the text read in it
    matched: bool = False  # the query's words are in its note or OCR text (words.py's merge rule)
    cosine: float | None = None  # the score without the offset and the lift, in [-1, 1] (None: the score's)
    meaning: float = 0.0  # what the meaning of its text added to the score (`Index.search`)

    def __post_init__(self) -> None:  # float16 / int8 vectors can put a photo's own cosine at 1.0001
        cosine = self.score if self.cosine is None else self.cosine
        object.__setattr__(self, "cosine", min(1.0, max(-1.0, float(cosine))))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "cosine": round(float(self.cosine), 6), "score": round(self.score, 6),
                             "modality": self.modality}
        if self.path is not None:
            d["path"] = self.path
        if self.taken is not None:
            d["taken"] = self.taken
        if self.text is not None:
            d["text"] = self.text
        if self.ocr:
            d["ocr"] = self.ocr
        if self.matched:
            d["matched"] = True
        if self.meaning:
            d["meaning"] = round(self.meaning, 6)
        if self.meta:
            d["meta"] = self.meta
        return d


@dataclass(frozen=True)
class Skip:
    input: str  # as given (a path, or "note[i]")
    reason: str

    def __post_init__(self) -> None:  # file names that are not UTF-8 stay printable
        object.__setattr__(self, "input", printable(self.input))


@dataclass
class IngestReport:
    """What an ingest, sync or reindex did, by item id (skips by input)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"added {len(self.added)}, updated {len(self.updated)}, unchanged {len(self.unchanged)}, "
            f"removed {len(self.removed)}, skipped {len(self.skipped)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UnreadablePhotosError(ValueError):
    """A reindex that would drop photos it cannot read (their files are gone or no longer decode)."""

    def __init__(self, index_file: Path, unreadable: Sequence[tuple[str, str]]) -> None:
        self.unreadable = list(unreadable)
        folders = sorted({os.path.dirname(p) for p, _ in self.unreadable if not os.path.isdir(os.path.dirname(p))})
        if folders:
            where = f"the folder {printable(folders[0])} is missing" + (
                f", and {len(folders) - 1} more" if len(folders) > 1 else "")
        else:
            where = f"{printable(self.unreadable[0][0])}: {self.unreadable[0][1]}"
        n = len(self.unreadable)
        super().__init__(
            f"{index_file}: {n} photo{'s' if n > 1 else ''} cannot be read ({where}); reindex re-embeds every "
            "photo from its file and would drop them, so nothing was changed. Reconnect the card or folder they "
            "are on, or take them out first (`edge-gcl index remove PATH`, or `edge-gcl index sync FOLDER` for a "
            "folder that lost them), then reindex"
        )


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


def _lifted(ranked: list[tuple[int, float, int]], boosts: Mapping[int, float], k: int) -> list[tuple[int, float, int]]:
    """(key, score, chunk) rows with each key's boost added, best first, the first `k`."""
    if not boosts:
        return ranked[:k]
    out = [(key, score + boosts.get(key, 0.0), chunk) for key, score, chunk in ranked]
    return sorted(out, key=lambda r: (-r[1], r[0]))[:k]


class Index:
    """Photos and notes of one device, searchable by text, photo or both.

    Open with `Index.open(folder, model=...)`; the folder holds `index.sqlite` (the truth) and
    `index.usearch` (an approximate index, rebuilt when missing or stale). Several processes may
    open the same index; one writes at a time (SQLite WAL), readers never wait for it.
    """

    def __init__(
        self, store: Store, embedder: Embedder | None, folder: Path, ocr: OcrEngine | None = None,
        meaning: MeaningEncoder | None = None,
    ) -> None:
        self.store = store
        self.folder = folder
        self._embedder = embedder
        self.ocr = ocr  # reads the text in photos at ingest (None: off)
        self.meaning = meaning  # embeds the meaning of that text and of queries (None: not used)
        self._meaning_rows: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None  # (change token, keys, vectors)
        self._meaning_last: tuple[str, np.ndarray] | None = None  # (query words, their sentence vector)
        self._vectors = VectorMatrix(store, cache=folder / VECTORS_FILE)
        # (vectors.version, row -> modality code, {(query modality, offset): (V,) offsets})
        self._offset_rows: tuple[int, np.ndarray, dict[tuple[str, float], np.ndarray]] | None = None
        self._approximate = ApproximateIndex(folder / APPROXIMATE_FILE)
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
        """
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
        index = cls(store, embedder, file.parent, engine, encoder)
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
        if self._embedder is None:
            raise RuntimeError(f"{self.store.path}: opened without a model; pass model=... to Index.open")
        return self._embedder

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

    # --- adding ----------------------------------------------------------------------------

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
        if meta is not None:
            dump_meta(meta)  # fail before any work
        named = [paths] if isinstance(paths, (str, Path)) else list(paths)
        files, problems = list_photos(named, recursive=recursive)
        files = self._not_excluded(files, named)
        report = IngestReport(skipped=[Skip(*p) for p in problems])
        with self._ingest_lock(progress):
            self._ingest(files, report, meta=meta, batch_size=batch_size, progress=progress)
        return report

    @contextlib.contextmanager
    def _ingest_lock(self, progress: bool) -> Iterator[None]:
        """One ingest (add, sync, reindex) at a time per index, across processes: a second one waits,
        then finds the photos the first embedded unchanged, so no photo is embedded twice and each
        run's report says what that run did. An advisory lock file beside index.sqlite."""
        self.store.check_writable()  # a read-only index: one line, not the lock file's PermissionError
        lock = filelock.FileLock(f"{self.store.path}.ingest-lock")
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if progress:
                print(f"waiting for another ingest into {self.store.path} to finish...", file=sys.stderr, flush=True)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def sync(self, folder: str | Path, *, batch_size: int = 32, progress: bool = True) -> IngestReport:
        """Mirror a folder: add new photos, re-embed changed ones, drop those whose file is gone.

        A photo with a note whose file is gone keeps its note (it becomes a "note" item).
        Items outside `folder` are never touched; a missing `folder` is an error (not "delete all").
        """
        root = Path(abspath(folder))
        if not root.is_dir():
            raise NotADirectoryError(f"{folder}: not a folder")
        with self._ingest_lock(progress):
            return self._sync(root, batch_size=batch_size, progress=progress)

    def read_text(self, *, batch_size: int = 32, progress: bool = True) -> IngestReport:
        """Read the text in every photo not read yet (indexed before OCR, or with it off) and add it
        to its vectors and the words table; the photos read are `report.updated`. Needs an OCR engine
        (`Index.open(..., ocr=...)`)."""
        if self.ocr is None:
            raise RuntimeError(f"{self.store.path}: no OCR engine (open the index with a model that ships one, or ocr=True)")
        with self._ingest_lock(progress):
            unread = [it.path for it in self.store.all_items(where_sql="WHERE path IS NOT NULL AND ocr IS NULL")]
            report = IngestReport()
            self._ingest([p for p in unread if p is not None], report, meta=None, batch_size=batch_size, progress=progress)
        return report

    def _sync(self, root: Path, *, batch_size: int, progress: bool) -> IngestReport:
        files, problems = list_photos(root)
        files = self._not_excluded(files)
        report = IngestReport(skipped=[Skip(*p) for p in problems])
        self._ingest(files, report, meta=None, batch_size=batch_size, progress=progress)
        prefix = os.path.join(str(root), "")
        with self._lock:
            rows = self.store.conn.execute(
                "SELECT id FROM items WHERE path IS NOT NULL AND substr(path, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()
        gone = [self.store.get(r[0]) for r in rows]
        gone = [it for it in gone if it is not None and it.path and not os.path.exists(it.path)]
        converted = [it for it in gone if it.text is not None]
        vectors = self._embed_sources(
            [(None, it.text) for it in converted], self.embedder, batch_size=batch_size
        )
        with self.store.write() as conn:
            for it in gone:
                if it.text is None:
                    conn.execute("DELETE FROM items WHERE id = ?", (it.id,))
                    report.removed.append(it.id)
            for it, v in zip(converted, vectors, strict=True):
                key = self.store.upsert(
                    conn, item_id=it.id, modality="note", path=None, text=it.text, meta=None
                )
                self.store.set_vectors(conn, key, v)  # type: ignore[arg-type]
                report.updated.append(it.id)
        return report

    def add_note(
        self, text: str | bytes, *, photo: str | Path | None = None, meta: Mapping[str, Any] | None = None
    ) -> str:
        """Add a note (or attach it to `photo`, replacing that photo's note); returns the item id.

        Raises ValueError naming an empty or non-UTF-8 note, ImageDecodeError naming a bad photo.
        Adding a note that is already there keeps it (and updates `meta` if given).
        """
        text = check_note(text, name="note")
        if meta is not None:
            dump_meta(meta)
        if photo is None:
            report = self.add_notes([text], metas=[meta] if meta is not None else None, progress=False)
            return (report.added or report.updated or report.unchanged)[0]
        path = abspath(photo)
        st = stat_photo(path)
        if isinstance(st, str):
            raise ImageDecodeError(f"{photo}: {st}")
        sha = sha256_file(path)
        item_id = photo_id(path)
        existing = self.store.get(item_id)
        ocr = existing.ocr if existing is not None and existing.sha256 == sha and existing.ocr is not None else None
        if ocr is None:
            (ocr,) = self._read_texts([path])
        (vectors,) = self._embed_sources([(path, text)], self.embedder, ocr=[ocr])
        if isinstance(vectors, str):
            raise ImageDecodeError(f"{photo}: {vectors}")
        with self.store.write() as conn:
            conn.execute("DELETE FROM excluded WHERE path = ?", (path,))  # named: taken back if removed
            key = self.store.upsert(
                conn, item_id=item_id, modality="photo+note", path=path, text=text, meta=meta,
                size_bytes=st.st_size, mtime_ns=mtime_ns(st), sha256=sha, taken=capture_time(path, st.st_mtime_ns),
                ocr=ocr,
            )  # fmt: skip
            self.store.set_vectors(conn, key, vectors)
        self._fill_meaning()
        return item_id

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
        texts = list(texts)
        if metas is not None and len(metas) != len(texts):
            raise ValueError(f"metas: {len(metas)} entries for {len(texts)} notes")
        report = IngestReport()
        todo: list[tuple[str, str, Mapping[str, Any] | None]] = []
        seen: set[str] = set()
        for i, raw in enumerate(texts):
            meta = metas[i] if metas is not None else None
            try:
                text = check_note(raw, name=f"note[{i}]")
                if meta is not None:
                    dump_meta(meta)
            except (TypeError, ValueError) as e:
                report.skipped.append(Skip(f"note[{i}]", reason(e, f"note[{i}]")))
                continue
            item_id = note_id(text)
            if item_id in seen:
                report.unchanged.append(item_id)
                continue
            seen.add(item_id)
            existing = self.store.get(item_id)
            if existing is not None:
                if meta is not None and dict(meta) != existing.meta:
                    with self.store.write() as conn:
                        self.store.upsert(conn, item_id=item_id, modality=existing.modality, path=existing.path,
                                          text=existing.text, meta=meta)  # fmt: skip
                    report.updated.append(item_id)
                else:
                    report.unchanged.append(item_id)
                continue
            todo.append((item_id, text, meta))
        bar = tqdm(total=len(todo), unit="note", desc="notes", disable=not progress)
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            vectors = self._embed_sources(
                [(None, t) for _, t, _ in batch], self.embedder, batch_size=batch_size
            )
            with self.store.write() as conn:
                for (item_id, text, meta), v in zip(batch, vectors, strict=True):
                    key = self.store.upsert(
                        conn, item_id=item_id, modality="note", path=None, text=text, meta=meta
                    )
                    self.store.set_vectors(conn, key, v)  # type: ignore[arg-type]
            report.added += [item_id for item_id, _, _ in batch]
            bar.update(len(batch))
        bar.close()
        return report

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

    def _not_excluded(self, files: list[str], named: Iterable[str | Path] = ()) -> list[str]:
        """`files` without the photos removed by hand, except those `named` (given by file name,
        which takes them back: their exclusion is dropped)."""
        excluded = self.store.excluded(files)
        if not excluded:
            return files
        back = excluded & {abspath(p) for p in named if not os.path.isdir(p)}
        if back:
            with self.store.write() as conn:
                conn.executemany("DELETE FROM excluded WHERE path = ?", [(p,) for p in back])
        return [f for f in files if f not in excluded or f in back]

    def _ingest(
        self,
        files: list[str],
        report: IngestReport,
        *,
        meta: Mapping[str, Any] | None,
        batch_size: int,
        progress: bool,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: must be >= 1")
        embedder = self.embedder
        bar = tqdm(total=len(files), unit="photo", desc="photos", disable=not progress)
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            embed: list[tuple[str, os.stat_result, str, Item | None]] = []
            touch: list[tuple[str, os.stat_result, Item, bool]] = []  # (path, stat, item, meta changed)
            for path in batch:
                st = stat_photo(path)
                if isinstance(st, str):
                    report.skipped.append(Skip(path, st))
                    continue
                existing = self.store.get(photo_id(path))
                has_photo = existing is not None and existing.modality != "note"
                meta_changed = meta is not None and existing is not None and dict(meta) != existing.meta
                unread = has_photo and self.ocr is not None and existing.ocr is None  # indexed without OCR
                if has_photo and not unread and (existing.size_bytes, existing.mtime_ns) == (st.st_size, mtime_ns(st)):
                    if meta_changed or existing.taken is None:  # no date yet: indexed by an older edge-gcl
                        touch.append((path, st, existing, meta_changed))
                    else:
                        report.unchanged.append(existing.id)
                    continue
                try:
                    sha = sha256_file(path)
                except OSError as e:
                    report.skipped.append(Skip(path, reason(e, path)))
                    continue
                if has_photo and not unread and existing.sha256 == sha:
                    touch.append((path, st, existing, meta_changed))
                else:
                    embed.append((path, st, sha, existing))
            texts = self._read_texts([p for p, _, _, _ in embed])
            vectors = self._embed_sources(
                [(p, e.text if e is not None else None) for p, _, _, e in embed],
                embedder,
                batch_size=batch_size,
                ocr=texts,
            )
            done: list[tuple[list[str], str]] = []
            read: list[int] = []  # keys of the photos stored with text read now
            with self.store.write() as conn:
                for (path, st, sha, existing), v, ocr in zip(embed, vectors, texts, strict=True):
                    if isinstance(v, str):
                        report.skipped.append(Skip(path, v))  # the stored item (if any) is kept as it was
                        continue
                    text = existing.text if existing is not None else None
                    key = self.store.upsert(
                        conn, item_id=photo_id(path), modality="photo+note" if text else "photo", path=path,
                        text=text, meta=meta, size_bytes=st.st_size, mtime_ns=mtime_ns(st), sha256=sha,
                        taken=capture_time(path, st.st_mtime_ns), ocr=ocr,
                    )  # fmt: skip
                    self.store.set_vectors(conn, key, v)
                    if ocr:
                        read.append(key)
                    done.append((report.updated if existing is not None else report.added, photo_id(path)))
                for path, st, existing, meta_changed in touch:
                    taken, taken_from = capture_time(path, st.st_mtime_ns)  # the content changed, or no date yet
                    conn.execute(
                        "UPDATE items SET size_bytes = ?, mtime_ns = ?, meta = coalesce(?, meta), taken = ?, "
                        "taken_from = ? WHERE key = ?",
                        (
                            st.st_size,
                            mtime_ns(st),
                            dump_meta(meta) if meta_changed and meta is not None else None,
                            taken,
                            taken_from,
                            existing.key,
                        ),
                    )
                    done.append((report.updated if meta_changed else report.unchanged, existing.id))
            for bucket, item_id in done:  # reported only once committed
                bucket.append(item_id)
            if read:
                self._fill_meaning(read)
            bar.update(len(batch))
        bar.close()
        self._fill_meaning()  # photos read before the encoder was at hand (read-text fills them too)

    def _fill_meaning(self, keys: Sequence[int] | None = None) -> int:
        """Store the meaning vectors of the photos whose text has none yet (`meaning.py`): those of
        `keys`, or all (one scan of the items)."""
        return meaning_rows.fill(self.store, self.meaning, keys=keys) if self.meaning is not None else 0

    def _read_texts(self, paths: Sequence[str]) -> list[str | None]:
        """The text read in each photo ("" none), or None: OCR is off, or the photo cannot be decoded
        (embedding it says why)."""
        if self.ocr is None or not paths:
            return [None] * len(paths)
        return [r.text if not isinstance(r, str) else None for r in self.ocr.read_many(paths)]

    def _embed_sources(
        self,
        sources: Sequence[tuple[str | None, str | None]],
        embedder: Embedder,
        *,
        batch_size: int = 32,
        ocr: Sequence[str | None] | None = None,
    ) -> list[np.ndarray | str]:
        """Per (photo path | None, note | None): its (C, D) search vectors, or a reason string when
        the photo cannot be used. Photos are embedded in one batch, falling back to one at a time
        to isolate bad files; notes are chunked and all chunks embedded together. `ocr[i]`, the text
        read in photo i, adds up to MAX_OCR_CHUNKS rows after its own (`OCR_VECTORS` says how)."""
        paths = list(dict.fromkeys(p for p, _ in sources if p is not None))
        images: dict[str, np.ndarray | str] = {}
        if paths:
            try:
                images = dict(zip(paths, embedder.embed_images(paths, batch_size=batch_size), strict=True))
            except (ImageDecodeError, OSError, ValueError, MemoryError):
                for p in paths:
                    try:
                        images[p] = embedder.embed_images([p])[0]
                    except MemoryError:  # one photo too large for this device: the others still go in
                        images[p] = "out of memory while embedding it"
                    except (ImageDecodeError, OSError, ValueError) as e:
                        images[p] = reason(e, p)
        tokenizer = getattr(embedder, "tokenizer", None)
        chunks = [chunk_note(t, tokenizer) if t is not None else [] for _, t in sources]
        read = [
            chunk_note(t[:MAX_NOTE_CHARS], tokenizer)[:MAX_OCR_CHUNKS] if t and p is not None else []
            for (p, _), t in zip(sources, ocr or [None] * len(sources), strict=True)
        ]
        flat = [c for cs in chunks for c in cs] + [c for rs in read for c in rs]
        text_vectors = (
            embedder.embed_texts(flat, batch_size=64) if flat else np.zeros((0, embedder.embed_dim))
        )
        out: list[np.ndarray | str] = []
        offset = 0
        ocr_offset = sum(len(cs) for cs in chunks)
        for (p, _), cs, rs in zip(sources, chunks, read, strict=True):
            t = np.asarray(text_vectors[offset : offset + len(cs)], np.float32)  # (C, D)
            offset += len(cs)
            r = np.asarray(text_vectors[ocr_offset : ocr_offset + len(rs)], np.float32)  # (R, D)
            ocr_offset += len(rs)
            image = images.get(p) if p is not None else None
            if isinstance(image, str):
                out.append(image)
            elif image is None:
                out.append(t)
            else:
                rows = fuse(image[None, :], t) if len(cs) else np.asarray(image, np.float32)[None, :]
                if len(rs):
                    extra = {"fused": [fuse(image[None, :], r)], "text": [r], "both": [fuse(image[None, :], r), r]}
                    rows = np.concatenate([rows, *extra[OCR_VECTORS]])
                out.append(rows)
        return out

    # --- searching -------------------------------------------------------------------------

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
        after, before = check_search_options(k=k, min_score=min_score, after=after, before=before,
                                             cross_modal_offset=cross_modal_offset)
        if sort not in ("score", "date"):
            raise ValueError(f"sort {sort!r}: expected 'score' or 'date'")
        if modalities is not None:
            modalities = list(modalities)
            bad = [m for m in modalities if m not in MODALITIES]
            if bad:
                raise ValueError(f"modalities {bad}: expected any of {list(MODALITIES)}")
        if query_modality is not None and query_modality not in MODALITIES:
            raise ValueError(f"query_modality {query_modality!r}: expected one of {list(MODALITIES)}")
        if vector is None:
            query_modality = modality_of(text, image)
            if words is None and image is None:
                words = text
        if cross_modal_offset is None:
            cross_modal_offset = default_cross_modal_offset(self._embedder)
        query = self._query(text, image, vector)  # (D,) float32, unit norm
        said = text if vector is None and image is None else words if vector is not None and query_modality == "note" else None
        meaning_query = self._meaning_query(said) if said and said.strip() else None  # (d,): a query of words alone
        with self._lock:
            self._refresh()
            vectors = self._vectors
            if len(query) != vectors.matrix.shape[1]:  # a vector query, and another process reindexed
                raise ModelMismatchError(
                    f"{self.store.path}: query vector has {len(query)} dims, the index now holds "
                    f"{vectors.matrix.shape[1]}-d vectors of {self.model_id!r}"
                )
            if not len(vectors):
                return []
            mask = None
            keys = None
            if modalities is not None or where or after is not None or before is not None:
                keys = self.store.filter_keys(modalities, where, after=after, before=before)
                mask = np.isin(vectors.items, keys)
            use_approximate = len(vectors) >= APPROXIMATE_MIN_VECTORS if approximate is None else approximate
            wanted = k if sort == "score" else len(self)  # by date: every item above the cut-off, then k
            offsets = self._row_offsets(query_modality, float(cross_modal_offset)) if query_modality else None
            boosts = self._meaning_boosts(meaning_query, keys) if meaning_query is not None else {}
            matched: list[tuple[int, float, int]] = []
            if words and words.strip():  # words.py's merge rule: the items holding the words first
                with self.store.lock:
                    found = matching_keys(self.store.conn, words, within=keys)
                if len(found):
                    in_found = np.isin(vectors.items, found)
                    found_k = len(found) if boosts else min(wanted, len(found))  # a lift may reorder them all
                    matched = _lifted(self._search_exact(query, found_k, in_found, offsets), boosts, wanted)
                    mask = ~in_found if mask is None else mask & ~in_found
            lifted: list[tuple[int, float, int]] = []
            if boosts:  # the photos whose text means what the query says, scored exactly, then lifted
                in_boosted = np.isin(vectors.items, np.fromiter(boosts, np.int64, len(boosts)))
                scope = in_boosted if mask is None else mask & in_boosted
                lifted = self._search_exact(query, len(boosts), scope, offsets) if scope.any() else []
                mask = ~in_boosted if mask is None else mask & ~in_boosted
            if use_approximate:
                ranked = self._search_approximate(query, wanted, mask, offsets)
            else:
                ranked = self._search_exact(query, wanted, mask, offsets)
            if lifted:
                ranked = _lifted(ranked + lifted, boosts, wanted)
            if min_score is not None:
                ranked = [r for r in ranked if r[1] >= min_score]
            ranked = (matched + ranked)[:wanted]
            items = self.store.items_by_key([key for key, _, _ in ranked])
        first = {key for key, _, _ in matched}
        offset = float(cross_modal_offset) if query_modality else 0.0
        hits = [
            Hit(it.id, score, it.modality, it.path, it.text, it.meta, chunk, it.taken, it.ocr, key in first,
                cosine=score - boosts.get(key, 0.0) - (modality_offset(query_modality, it.modality, offset) if offset else 0.0),
                meaning=boosts.get(key, 0.0))
            for key, score, chunk in ranked
            if (it := items.get(key)) is not None
        ]
        if sort == "date":  # newest first, undated (notes) last, ties by score
            hits.sort(key=lambda h: h.score, reverse=True)
            hits.sort(key=lambda h: h.taken or "", reverse=True)
        return hits[:k]

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
        if modalities is not None:
            modalities = list(modalities)
            bad = [m for m in modalities if m not in MODALITIES]
            if bad:
                raise ValueError(f"modalities {bad}: expected any of {list(MODALITIES)}")
        after, before = check_search_options(after=after, before=before)
        return self.store.list_items(modalities, after=after, before=before, limit=limit)  # type: ignore[arg-type]

    def _meaning_query(self, text: str) -> np.ndarray | None:
        """The sentence vector (d,) of a query's words (the last one kept: a search is often run twice)."""
        if self.meaning is None:
            return None
        if self._meaning_last is None or self._meaning_last[0] != text:
            self._meaning_last = (text, self.meaning.embed([text])[0])
        return self._meaning_last[1]

    def _meaning_boosts(self, query: np.ndarray, keys: np.ndarray | None) -> dict[int, float]:
        """{item key: what its score gains} for the photos whose text means what the query says
        (`query`, its sentence vector: `edge_gcl.ocr.meaning.boost` > 0), among `keys` if given."""
        assert self.meaning is not None
        from ..ocr.meaning import boost

        token = self.store.change_token()
        if self._meaning_rows is None or self._meaning_rows[0] != token:
            with self.store.snapshot() as conn:
                self._meaning_rows = (token, *meaning_rows.load(conn, self.meaning.model_id))
        _, row_keys, rows = self._meaning_rows
        if not len(row_keys):
            return {}
        items, cosines = meaning_rows.item_cosines(row_keys, rows, query, within=keys)
        gain = boost(cosines)
        return {int(k): float(g) for k, g in zip(items, gain, strict=True) if g > 0}

    def query_vector(self, text: str | None = None, image: Any = None) -> np.ndarray:
        """The (D,) unit query vector `search(text, image)` would use: embed once, then
        `search(vector=...)` as often as needed (other filters, with and without a cut-off)."""
        return self._query(text, image, None)

    def _query(self, text: str | None, image: Any, vector: Any) -> np.ndarray:
        """The query as a unit (D,) float32 vector: every kind of query is checked and normalised here."""
        if vector is not None:
            if text is not None or image is not None:
                raise ValueError("search: give vector= alone, not with text= or image=")
        elif text is None and image is None:
            raise ValueError("search: give text=, image= or both, or vector=")
        else:
            embedder = self.embedder
            parts = []
            if text is not None:
                parts.append(embedder.embed_texts([check_text(text, name="query text")])[0])
            if image is not None:
                if isinstance(image, (bytes, bytearray)):
                    raise TypeError("query image: pass a path or a PIL image, not bytes")
                parts.append(embedder.embed_images([image])[0])  # ImageDecodeError names it
            vector = fuse(parts[0], parts[1]) if len(parts) == 2 else parts[0]
        dim = self.embed_dim
        try:
            with np.errstate(over="ignore"):  # too large for float32 -> inf, refused below
                v = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError):
            raise TypeError(
                f"query vector: expected a ({dim},) array of numbers, got {type(vector).__name__}"
            ) from None
        if v.shape != (dim,):
            raise ValueError(
                f"query vector of shape {v.shape}: this index holds {dim}-d vectors, expected ({dim},)"
            )
        if not np.isfinite(v).all():
            raise ValueError("query vector: has non-finite values (nan or inf)")
        norm = float(np.linalg.norm(v.astype(np.float64)))  # float64: no overflow for large values
        if norm == 0.0:
            raise ValueError("query vector: all zeros, has no direction")
        return (v / norm).astype(np.float32)

    def _refresh(self) -> None:
        before = self._vectors.db_uuid
        self._vectors.refresh()
        if self._vectors.db_uuid != before and before is not None and self._embedder is not None:
            self._check_model(self._embedder)  # another process reindexed under us

    def _rank(self, rows: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float, int]]:
        """Rows with scores -> the k best items as (item key, max score, best chunk's row order)."""
        if not len(rows):
            return []
        keys = self._vectors.items[rows]
        order = np.lexsort((-scores, keys))  # by item, best row first
        first = order[np.r_[True, keys[order][1:] != keys[order][:-1]]]  # best row of each item
        best = first[np.lexsort((keys[first], -scores[first]))][:k]
        chunks = self._vectors.chunks[rows[best]]
        return [(int(keys[i]), float(scores[i]), int(c)) for i, c in zip(best, chunks, strict=True)]

    def _row_offsets(self, query_modality: Modality, offset: float) -> np.ndarray | None:
        """(V,) float32: each row's cross-modal offset for a query of `query_modality`; None if all 0."""
        if offset == 0.0:
            return None
        vectors = self._vectors
        if self._offset_rows is None or self._offset_rows[0] != vectors.version:
            codes = np.zeros(len(vectors), np.int8)  # row -> index in MODALITIES
            for code, modality in enumerate(MODALITIES):
                codes[np.isin(vectors.items, self.store.filter_keys([modality], None))] = code
            self._offset_rows = (vectors.version, codes, {})
        _, codes, made = self._offset_rows
        if (query_modality, offset) not in made:  # one per query modality, unless callers vary the offset
            if len(made) >= 6:
                made.clear()
            made[(query_modality, offset)] = modality_offsets(query_modality, MODALITIES, offset)[codes]
        return made[(query_modality, offset)]

    def _search_exact(
        self, query: np.ndarray, k: int, mask: np.ndarray | None, offsets: np.ndarray | None = None
    ) -> list[tuple[int, float, int]]:
        rows = np.flatnonzero(mask) if mask is not None else None  # None: every row
        n = len(rows) if rows is not None else len(self._vectors)
        if not n:
            return []
        scores = self._vectors.scores(query, rows)  # (n,)
        if offsets is not None:
            scores = scores + (offsets if rows is None else offsets[rows])
        # the best few hundred rows hold the k best items unless items have very many chunks
        top = min(n, max(4 * k, 256))
        while True:
            part = top_rows(scores, top)
            ranked = self._rank(rows[part] if rows is not None else part, scores[part], k)
            if len(ranked) >= k or top >= n:
                return ranked
            top = min(n, top * 8)

    def _search_approximate(
        self, query: np.ndarray, k: int, mask: np.ndarray | None, offsets: np.ndarray | None = None
    ) -> list[tuple[int, float, int]]:
        vectors = self._vectors
        self._approximate.sync(vectors)
        # candidates re-scored exactly; HNSW's own beam (usearch's expansion_search, 64) stays the cost.
        # With offsets the graph ranks by cosine alone: 4x the candidates, so an offset item just
        # below the cosine top-k still makes it
        count = min(len(vectors), max(4 * k, 40) * (1 if offsets is None else 4))
        while True:
            rows = vectors.rows_of(self._approximate.search(query, count))
            if mask is not None:
                rows = rows[mask[rows]]
            scores = vectors.scores(query, rows)
            if offsets is not None:
                scores = scores + offsets[rows]
            ranked = self._rank(rows, scores, k)
            if len(ranked) >= k or count >= len(vectors):
                return ranked
            if count * 8 >= len(vectors) // 2:  # a selective filter: exact over the few that pass
                return self._search_exact(query, k, mask, offsets)
            count *= 8

    # --- migrating -------------------------------------------------------------------------

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
        with self._ingest_lock(progress):
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
        from ..runtime import load_embedder

        if not drop_unreadable:  # before the model loads: an unplugged card fails at once
            missing = [(it.path, st) for it in self.store.all_items(where_sql="WHERE path IS NOT NULL")
                       if isinstance(st := stat_photo(it.path), str)]  # fmt: skip
            if missing:
                raise UnreadablePhotosError(self.store.path, missing)
        new = load_embedder(model, provider=provider, form=form)  # type: ignore[arg-type]
        engine = load_ocr(new, ocr, provider=provider, form=form)  # type: ignore[arg-type]
        if engine is not None or not ocr:
            self.ocr = engine
        read: dict[int, str] = {}  # key -> text read now (stored with the swap)
        report = IngestReport()
        with self.store.write() as conn:
            conn.execute("DROP TABLE IF EXISTS reindex_staging")
            conn.execute(
                "CREATE TABLE reindex_staging (item INTEGER NOT NULL, chunk INTEGER NOT NULL, vector BLOB NOT NULL, "
                "scale REAL, updated REAL, PRIMARY KEY (item, chunk))"
            )
        try:
            items = self.store.all_items()
            fate: dict[int, str] = {}  # key -> "remove" | "note"
            bar = tqdm(total=len(items), unit="item", desc="reindex", disable=not progress)
            for start in range(0, len(items), batch_size):
                self._stage(items[start : start + batch_size], new, fate, report, batch_size, read)
                if fate and not drop_unreadable:  # a photo that no longer decodes
                    raise UnreadablePhotosError(self.store.path, [(s.input, s.reason) for s in report.skipped])
                bar.update(min(batch_size, len(items) - start))
            bar.close()
            with self.store.write() as conn:
                staged = dict(conn.execute("SELECT item, max(updated) FROM reindex_staging GROUP BY item"))
                late = [
                    it
                    for it in self.store.all_items()
                    if staged.get(it.key) != it.updated and it.key not in fate
                ]
                self._stage(late, new, fate, report, batch_size, read)  # changed while we worked
                if fate and not drop_unreadable:
                    raise UnreadablePhotosError(self.store.path, [(s.input, s.reason) for s in report.skipped])
                for key, what in fate.items():
                    if what == "remove":
                        conn.execute("DELETE FROM items WHERE key = ?", (key,))
                    else:
                        conn.execute(
                            "UPDATE items SET modality = 'note', path = NULL, size_bytes = NULL, mtime_ns = NULL, "
                            "sha256 = NULL, taken = NULL, taken_from = NULL WHERE key = ?",
                            (key,),
                        )
                conn.executemany(
                    "UPDATE items SET ocr = ? WHERE key = ? AND path IS NOT NULL", [(t, k) for k, t in read.items()]
                )
                conn.execute("DELETE FROM embeddings")
                conn.execute(
                    "INSERT INTO embeddings (item, chunk, vector, scale) SELECT s.item, s.chunk, s.vector, s.scale "
                    "FROM reindex_staging AS s JOIN items ON items.key = s.item ORDER BY s.item, s.chunk"
                )
                conn.executemany(
                    "UPDATE meta SET value = ? WHERE key = ?",
                    [
                        (new.model_id, "model_id"),
                        (str(new.embed_dim), "embed_dim"),
                        (uuid.uuid4().hex, "db_uuid"),
                    ],
                )
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('model_name', ?)", (model_name(new),)
                )
                conn.execute("DROP TABLE reindex_staging")
                report.updated = [r[0] for r in conn.execute("SELECT id FROM items ORDER BY key")]
        except BaseException:
            try:  # the old model stays in charge
                with self.store.write() as conn:
                    conn.execute("DROP TABLE IF EXISTS reindex_staging")
            except sqlite3.Error:
                pass
            raise
        self.store.info = self.store.read_info()
        self._embedder = new
        from ..ocr.meaning import load_meaning

        self.meaning = load_meaning(new, "auto", provider=provider, form=form) or self.meaning
        self._fill_meaning()
        return report

    def _stage(
        self,
        items: list[Item],
        embedder: Embedder,
        fate: dict[int, str],
        report: IngestReport,
        batch_size: int,
        read: dict[int, str],
    ) -> None:
        if not items:
            return
        unread = [it for it in items if it.path is not None and it.ocr is None and it.key not in read]
        read.update(
            (it.key, text) for it, text in zip(unread, self._read_texts([it.path for it in unread]), strict=True)
            if text is not None
        )  # fmt: skip
        texts = [it.ocr if it.ocr is not None else read.get(it.key) for it in items]
        vectors = self._embed_sources(
            [(it.path, it.text) for it in items], embedder, batch_size=batch_size, ocr=texts
        )
        notes = [
            (it, v)
            for it, v in zip(items, vectors, strict=True)
            if isinstance(v, str) and it.text is not None
        ]
        kept = self._embed_sources([(None, it.text) for it, _ in notes], embedder, batch_size=batch_size)
        kept_by_key = {it.key: v for (it, _), v in zip(notes, kept, strict=True)}
        with self.store.write() as conn:
            for it, v in zip(items, vectors, strict=True):
                if isinstance(v, str):
                    report.skipped.append(Skip(it.path or it.id, v))
                    if it.text is None:
                        fate[it.key] = "remove"
                        report.removed.append(it.id)
                        continue
                    fate[it.key] = "note"
                    v = kept_by_key[it.key]
                self.store.set_vectors(conn, it.key, v, table="reindex_staging", embed_dim=embedder.embed_dim)
                conn.execute("UPDATE reindex_staging SET updated = ? WHERE item = ?", (it.updated, it.key))

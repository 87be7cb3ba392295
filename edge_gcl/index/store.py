"""The index's single SQLite file: schema, connection settings, transactions, vector codec.

SQLite is the source of truth; everything else (the in-memory matrix, the usearch file) is
rebuilt from it. Schema, format 2::

    meta        key TEXT PRIMARY KEY, value TEXT
                format_version, model_id, embed_dim, dtype ("float16" | "int8" | "float32"),
                created (ISO 8601 UTC), db_uuid (new on creation and on every reindex),
                model_name (optional: the model's name for messages, e.g. "default")
    items       key INTEGER PRIMARY KEY          internal; embeddings point here
                id TEXT UNIQUE                   public, stable ("p_..." photos, "n_..." notes)
                modality TEXT                    'photo' | 'note' | 'photo+note'
                path TEXT UNIQUE                 absolute photo path (NULL for notes)
                text TEXT                        the note (NULL for photos)
                meta TEXT                        user metadata, a JSON object ({} if none)
                size_bytes, mtime_ns, sha256     the photo file when it was embedded
                taken TEXT                       photos: when it was taken, local wall-clock time
                                                 'YYYY-MM-DDTHH:MM:SS' (NULL for notes)
                taken_from TEXT                  'exif' (DateTimeOriginal) | 'mtime' (the file's)
                ocr TEXT                         photos: the text read in it ('' none; NULL not read)
                created, updated REAL            unix seconds
    embeddings  vid INTEGER PRIMARY KEY AUTOINCREMENT   never reused: a vid's vector never changes
                item INTEGER -> items(key) ON DELETE CASCADE
                chunk INTEGER                    0.. (long notes have several)
                vector BLOB                      embed_dim little-endian float16 / int8 / float32
                scale REAL                       int8 only: value = int8 * scale (NULL otherwise)
    excluded    path TEXT PRIMARY KEY, removed REAL   photos removed by hand: folder adds and syncs
                                                 skip them until the file is added by name
    item_words  FTS5 (trigram) over each item's folded note + OCR text, rowid = items.key, kept
                in step by triggers (`words.py`)
    ocr_meaning the sentence vectors of each photo's OCR text (`meaning.py`; derived, created when
                missing)

Connections use WAL (readers never block the writer), `synchronous=FULL` (a committed batch
survives power loss), `foreign_keys=ON` and a busy timeout; every write is one
`BEGIN IMMEDIATE` transaction.

Older formats are migrated in place on open, without re-embedding anything. Format 1 (before
capture dates): the two columns are added empty and the next `add_photos` / `sync` fills them.
Format 2 (before OCR): the `ocr` column is added empty and the words table built from the notes;
`edge-gcl index read-text` (or a reindex) reads the photos.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from . import meaning, words

FORMAT_VERSION = 3

VectorDType = Literal["float16", "int8", "float32"]
Modality = Literal["photo", "note", "photo+note"]
MODALITIES: tuple[str, ...] = get_args(Modality)
_NUMPY = {"float16": np.dtype("<f2"), "int8": np.dtype("i1"), "float32": np.dtype("<f4")}

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS items (
        key INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        modality TEXT NOT NULL CHECK (modality IN ('photo', 'note', 'photo+note')),
        path TEXT UNIQUE,
        text TEXT,
        meta TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta) AND json_type(meta) = 'object'),
        size_bytes INTEGER,
        mtime_ns INTEGER,
        sha256 TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        taken TEXT,
        taken_from TEXT,
        ocr TEXT,
        CHECK ((modality = 'note') = (path IS NULL)),
        CHECK ((modality = 'photo') = (text IS NULL))
    )""",
    """CREATE TABLE IF NOT EXISTS embeddings (
        vid INTEGER PRIMARY KEY AUTOINCREMENT,
        item INTEGER NOT NULL REFERENCES items(key) ON DELETE CASCADE,
        chunk INTEGER NOT NULL,
        vector BLOB NOT NULL,
        scale REAL,
        UNIQUE (item, chunk)
    )""",
    "CREATE INDEX IF NOT EXISTS items_taken ON items (taken)",
    *words.SCHEMA,
]
# created on every open when missing (added within format 2: no version change needed)
_EXCLUDED = "CREATE TABLE IF NOT EXISTS excluded (path TEXT PRIMARY KEY, removed REAL NOT NULL) WITHOUT ROWID"
# format_version -> the statements that bring it to the next version
_MIGRATIONS = {
    1: [
        "ALTER TABLE items ADD COLUMN taken TEXT",
        "ALTER TABLE items ADD COLUMN taken_from TEXT",
        "CREATE INDEX IF NOT EXISTS items_taken ON items (taken)",
    ],
    2: [words.migrate],  # a statement, or a function of the connection
}


class ModelMismatchError(ValueError):
    """The index was built with another model (its vectors live in another space)."""


@dataclass(frozen=True)
class StoreInfo:
    format_version: int
    model_id: str
    embed_dim: int
    dtype: VectorDType
    created: str
    db_uuid: str


@dataclass(frozen=True)
class Item:
    """One stored item, as `index[id]` returns it."""

    id: str
    modality: Modality
    path: str | None
    text: str | None
    meta: dict[str, Any]
    created: float  # unix seconds
    updated: float
    size_bytes: int | None = None  # photos: the file when it was embedded
    mtime_ns: int | None = None
    sha256: str | None = None
    taken: str | None = None  # photos: 'YYYY-MM-DDTHH:MM:SS', local time it was taken
    taken_from: str | None = None  # 'exif' (DateTimeOriginal) or 'mtime' (the file's)
    ocr: str | None = None  # photos: the text read in it ("" none found; None not read)
    key: int = -1  # internal row key


_ITEM_COLUMNS = (
    "id, modality, path, text, meta, created, updated, size_bytes, mtime_ns, sha256, taken, taken_from, ocr, key"
)


def _item(row: Sequence[Any]) -> Item:
    return Item(row[0], row[1], row[2], row[3], json.loads(row[4]), *row[5:])


def _journal_mode_wal(conn: sqlite3.Connection, timeout_s: float) -> str:
    """Switch to WAL, retrying while another connection holds the file. Two connections switching
    a new file at once can deadlock inside SQLite, which then returns "database is locked" to one
    of them at once, without waiting on busy_timeout; retrying after the other is done succeeds."""
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


class Store:
    """One connection to the index file. Thread-safe (one lock); open one Store per process/thread
    that needs its own snapshot, SQLite coordinates them."""

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self.writes = 0  # commits through this connection (PRAGMA data_version only sees others')
        self._depth = 0
        self.conn = sqlite3.connect(
            str(self.path), timeout=timeout_s, isolation_level=None, check_same_thread=False
        )
        self.conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        mode = _journal_mode_wal(self.conn, timeout_s)
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"{self.path}: cannot switch to WAL journal mode (got {mode})")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        words.register(self.conn)  # the words table's triggers fold text with it
        self.info: StoreInfo | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = True,
        model_id: str | None = None,
        embed_dim: int | None = None,
        model_name: str | None = None,
        dtype: VectorDType = "float16",
        timeout_s: float = 30.0,
    ) -> Store:
        """Open (or create, recording model_id / embed_dim / dtype) the index file at `path`."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise FileNotFoundError(
                    f"{path}: no index here (create one with create=True or `edge-gcl index add`)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        if dtype not in _NUMPY:
            raise ValueError(f"dtype {dtype!r}: expected one of {sorted(_NUMPY)}")
        store = cls(path, timeout_s=timeout_s)
        try:
            with store.write() as conn:
                has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
                if not has_meta or not conn.execute("SELECT 1 FROM meta").fetchone():
                    if not create:
                        raise FileNotFoundError(f"{path}: not an initialised index")
                    if model_id is None or embed_dim is None:
                        raise ValueError(f"{path}: creating an index needs a model (pass model=...)")
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    created = datetime.now(UTC).isoformat(timespec="seconds")
                    rows = {
                        "format_version": str(FORMAT_VERSION),
                        "model_id": model_id,
                        "embed_dim": str(int(embed_dim)),
                        "dtype": dtype,
                        "created": created,
                        "db_uuid": uuid.uuid4().hex,
                    }
                    if model_name:
                        rows["model_name"] = model_name
                    conn.executemany("INSERT INTO meta VALUES (?, ?)", rows.items())
                else:
                    _migrate(conn, path)
                conn.execute(_EXCLUDED)
                meaning.create(conn)  # the text-meaning vectors (derived; created when missing)
            store.info = store.read_info()
        except BaseException:
            store.close()
            raise
        return store

    def read_info(self) -> StoreInfo:
        with self.lock:
            try:
                meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.DatabaseError as e:
                raise sqlite3.DatabaseError(f"{self.path}: not an edge-gcl index ({e})") from None
        version = int(meta.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{self.path}: index format_version {version}, this edge-gcl reads {FORMAT_VERSION}"
            )
        return StoreInfo(
            version, meta["model_id"], int(meta["embed_dim"]), meta["dtype"], meta["created"], meta["db_uuid"]
        )

    def model_name(self) -> str | None:
        """The model name recorded at creation or reindex (None for indexes that predate it)."""
        with self.lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'model_name'").fetchone()
        return row[0] if row else None

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # --- transactions ----------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction (waits for other writers up to the busy timeout);
        nested calls join the outer transaction."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.conn
                self.conn.execute("COMMIT")
                self.writes += 1
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every SELECT inside sees the same committed state."""
        with self.lock:
            if self.conn.in_transaction:
                yield self.conn
                return
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")

    def change_token(self) -> tuple[int, int]:
        """Changes whenever anyone commits (another connection or this one)."""
        with self.lock:
            return self.conn.execute("PRAGMA data_version").fetchone()[0], self.writes

    # --- vectors ---------------------------------------------------------------------------

    def encode(
        self, vectors: np.ndarray, *, embed_dim: int | None = None
    ) -> list[tuple[bytes, float | None]]:
        """(C, D) float32 -> blobs in the index's dtype (+ a per-vector scale for int8).
        `embed_dim` overrides the index's (reindex stages another model's vectors)."""
        assert self.info is not None
        d = embed_dim or self.info.embed_dim
        x = np.asarray(vectors, np.float32)
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"vectors of shape {x.shape}, this index stores (n, {d})")
        if not np.isfinite(x).all():
            raise ValueError("embedder returned non-finite values")
        if self.info.dtype == "int8":
            scale = np.maximum(np.abs(x).max(axis=1), 1e-12) / 127.0  # (C,)
            q = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
            return [(row.tobytes(), float(s)) for row, s in zip(q, scale, strict=True)]
        data = x.astype(_NUMPY[self.info.dtype])
        return [(row.tobytes(), None) for row in data]

    def set_vectors(
        self,
        conn: sqlite3.Connection,
        key: int,
        vectors: np.ndarray,
        *,
        table: str = "embeddings",
        embed_dim: int | None = None,
    ) -> None:
        """Replace an item's vectors (new vids: readers' caches see a delete and an add)."""
        rows = self.encode(vectors, embed_dim=embed_dim)
        conn.execute(f"DELETE FROM {table} WHERE item = ?", (key,))
        conn.executemany(
            f"INSERT INTO {table} (item, chunk, vector, scale) VALUES (?, ?, ?, ?)",
            [(key, c, blob, scale) for c, (blob, scale) in enumerate(rows)],
        )

    # --- items -----------------------------------------------------------------------------

    def get(self, item_id: str) -> Item | None:
        with self.lock:
            row = self.conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return _item(row) if row else None

    def items_by_key(self, keys: Sequence[int]) -> dict[int, Item]:
        out: dict[int, Item] = {}
        with self.lock:
            for start in range(0, len(keys), 500):
                part = [int(k) for k in keys[start : start + 500]]
                marks = ",".join("?" * len(part))
                for row in self.conn.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE key IN ({marks})", part
                ):
                    out[row[-1]] = _item(row)
        return out

    def all_items(self, *, where_sql: str = "", params: Sequence[Any] = ()) -> list[Item]:
        with self.lock:
            rows = self.conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items {where_sql} ORDER BY key", params
            ).fetchall()
        return [_item(r) for r in rows]

    def upsert(
        self,
        conn: sqlite3.Connection,
        *,
        item_id: str,
        modality: Modality,
        path: str | None,
        text: str | None,
        meta: Mapping[str, Any] | None,
        size_bytes: int | None = None,
        mtime_ns: int | None = None,
        sha256: str | None = None,
        taken: tuple[str, str] | None = None,
        ocr: str | None = None,
    ) -> int:
        """Insert or update an item by id; `meta=None` keeps the stored metadata; `taken` is a photo's
        (time, 'exif' | 'mtime') from `sources.capture_time`; `ocr` the text read in it ("" none,
        None not read). Returns its key."""
        now = time.time()
        meta_json = dump_meta(meta) if meta is not None else None
        when, source = taken if taken is not None else (None, None)
        row = conn.execute(
            """INSERT INTO items (id, modality, path, text, meta, size_bytes, mtime_ns, sha256, taken, taken_from,
                                 ocr, created, updated)
               VALUES (?, ?, ?, ?, coalesce(?, '{}'), ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET
                   modality = excluded.modality, path = excluded.path, text = excluded.text,
                   meta = coalesce(?, items.meta), size_bytes = excluded.size_bytes,
                   mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, taken = excluded.taken,
                   taken_from = excluded.taken_from, ocr = excluded.ocr, updated = excluded.updated
               RETURNING key""",
            (item_id, modality, path, text, meta_json, size_bytes, mtime_ns, sha256, when, source, ocr, now, now,
             meta_json),
        ).fetchone()
        return int(row[0])

    # --- reading the vectors for the in-memory matrix ---------------------------------------

    def vectors_after(
        self, conn: sqlite3.Connection, vid: int, *, limit: int = -1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """vids > vid, in vid order, at most `limit` (-1: all): (vids (n,), item keys (n,), chunk numbers (n,),
        vectors (n, D) as stored (float16 / int8 / float32), scales (n,) float32: value = stored * scale, 1
        unless int8)."""
        assert self.info is not None
        rows = conn.execute(
            "SELECT vid, item, chunk, vector, scale FROM embeddings WHERE vid > ? ORDER BY vid LIMIT ?", (vid, limit)
        ).fetchall()
        n, d = len(rows), self.info.embed_dim
        vids = np.fromiter((r[0] for r in rows), np.int64, n)
        items = np.fromiter((r[1] for r in rows), np.int64, n)
        chunks = np.fromiter((r[2] for r in rows), np.int32, n)
        stored = np.frombuffer(b"".join(r[3] for r in rows), _NUMPY[self.info.dtype]).reshape(n, d)
        scales = np.fromiter((1.0 if r[4] is None else r[4] for r in rows), np.float32, n)
        return vids, items, chunks, stored, scales

    def filter_keys(
        self,
        modalities: Sequence[str] | None,
        where: Mapping[str, Any] | None,
        *,
        after: str | None = None,
        before: str | None = None,
    ) -> np.ndarray:
        """Item keys that pass a modality, metadata and date filter (see `Index.search`)."""
        sql, params = self._filter(modalities, where, after=after, before=before)
        with self.lock:
            rows = self.conn.execute("SELECT key FROM items" + sql, params).fetchall()
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def excluded(self, paths: Sequence[str]) -> set[str]:
        """Those of `paths` that were removed by hand (see `Index.remove`)."""
        paths = [p for p in paths if _storable(p)]  # a name that is not UTF-8 was never stored
        out: set[str] = set()
        with self.lock:
            for start in range(0, len(paths), 500):
                part = list(paths[start : start + 500])
                marks = ",".join("?" * len(part))
                out.update(r[0] for r in self.conn.execute(f"SELECT path FROM excluded WHERE path IN ({marks})", part))
        return out

    def list_items(
        self,
        modalities: Sequence[str] | None = None,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> list[Item]:
        """Items that pass the filters, newest first: by when taken (photos), then by when added."""
        sql, params = self._filter(modalities, None, after=after, before=before)
        sql += " ORDER BY taken IS NULL, taken DESC, created DESC, key DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self.lock:
            rows = self.conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items" + sql, params).fetchall()
        return [_item(r) for r in rows]

    def _filter(
        self,
        modalities: Sequence[str] | None,
        where: Mapping[str, Any] | None,
        *,
        after: str | None = None,
        before: str | None = None,
    ) -> tuple[str, list[Any]]:
        """(" WHERE ..." or "", params): `modalities`, `where` as in `Index.search`; `after` <= taken <
        `before`, as 'YYYY-MM-DDTHH:MM:SS' strings (items with no date never pass either)."""
        clauses: list[str] = []
        params: list[Any] = []
        if after is not None:
            clauses.append("taken >= ?")
            params.append(after)
        if before is not None:
            clauses.append("taken < ?")
            params.append(before)
        if modalities is not None:
            clauses.append(f"modality IN ({','.join('?' * len(modalities))})")
            params += list(modalities)
        for name, value in (where or {}).items():
            path = json_path(name)
            values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
            for v in values:
                if not isinstance(v, (str, int, float, bool)):
                    raise ValueError(f"where[{name!r}]: {v!r} is not a str, number or bool")
            marks = ",".join("?" * len(values))
            # a scalar equal to one of the values, or an array holding one of them
            clauses.append(
                f"json_type(meta, ?) IN ('text', 'integer', 'real', 'true', 'false', 'array') "
                f"AND EXISTS (SELECT 1 FROM json_each(meta, ?) AS j WHERE j.value IN ({marks}))"
            )
            params += [path, path, *values]
        return (" WHERE " + " AND ".join(f"({c})" for c in clauses) if clauses else ""), params

    def integrity_check(self) -> str:
        with self.lock:
            return "; ".join(r[0] for r in self.conn.execute("PRAGMA integrity_check").fetchall())


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring an index written by an older edge-gcl to FORMAT_VERSION, in the open transaction."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    try:
        version = int(row[0]) if row else -1
    except ValueError:
        version = -1
    while version in _MIGRATIONS:
        for statement in _MIGRATIONS[version]:
            statement(conn) if callable(statement) else conn.execute(statement)
        version += 1
        conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(version),))


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_path(name: str) -> str:
    if not isinstance(name, str) or not name or '"' in name:
        raise ValueError(f"where key {name!r}: expected a non-empty str without '\"'")
    return f'$."{name}"'


def dump_meta(meta: Mapping[str, Any]) -> str:
    """User metadata -> JSON object text; raises ValueError naming what cannot be stored."""
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta: expected a dict, got {type(meta).__name__}")
    for k in meta:
        if not isinstance(k, str):
            raise ValueError(f"meta: key {k!r} is not a str")
    try:
        return json.dumps(dict(meta), ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta: not JSON-serialisable ({e})") from None

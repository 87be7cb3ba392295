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

A file is identified before anything is written to it (`identify`): an empty file becomes an index,
an edge-gcl index is opened, anything else (another program's database, not SQLite at all) is
refused as it is (`NotAnIndexError`). A file or folder that cannot be written opens read-only (list
and search work). Every SQLite error names the file (`named`); a damaged file (SQLite's "malformed")
says how to repair it, and a connection runs `PRAGMA quick_check` before its first write, so nothing
is written into a damaged file (0.14-0.23 s for 100k x 512 float16, 155 MB, on 2 loaded cores).
`salvage` reads what a damaged file still holds, for `edge_gcl.index.repair`.

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


class NotAnIndexError(ValueError):
    """A file that is not an edge-gcl index (another program's database, not SQLite at all). Nothing in it
    was changed."""


class IndexDamagedError(sqlite3.DatabaseError):
    """The index file is damaged (SQLite found it malformed); the message names it and how to repair it."""


# SQLite's result codes for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB)
_DAMAGE_CODES = (11, 26)


def repair_hint(path: Path) -> str:
    return (f"the index file is damaged: `edge-gcl index repair --index {path.parent}` rebuilds it from what can "
            "still be read (the damaged file is kept beside it)")


def named(error: sqlite3.Error, path: Path) -> sqlite3.Error:
    """`error` with the index file's name in front (and, for a damaged file, how to repair it): SQLite's own
    messages name no file."""
    message = str(error)
    if message.startswith(f"{path}:"):
        return error
    damaged = getattr(error, "sqlite_errorcode", None) in _DAMAGE_CODES or "malformed" in message
    if damaged:
        out: sqlite3.Error = IndexDamagedError(f"{path}: {message}; {repair_hint(path)}")
    else:
        out = type(error)(f"{path}: {message}")
    out.sqlite_errorcode = getattr(error, "sqlite_errorcode", None)  # type: ignore[attr-defined]
    return out


class _Cursor(sqlite3.Cursor):
    """A cursor whose errors name the index file (`named`)."""

    def _path(self) -> Path:
        return self.connection.path  # type: ignore[attr-defined]

    def execute(self, *args: Any) -> _Cursor:  # type: ignore[override]
        try:
            return super().execute(*args)
        except sqlite3.Error as e:
            raise named(e, self._path()) from None

    def executemany(self, *args: Any) -> _Cursor:  # type: ignore[override]
        try:
            return super().executemany(*args)
        except sqlite3.Error as e:
            raise named(e, self._path()) from None

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.Error as e:
            raise named(e, self._path()) from None

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.Error as e:
            raise named(e, self._path()) from None

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.Error as e:
            raise named(e, self._path()) from None


class _Connection(sqlite3.Connection):
    """A connection whose errors name the index file."""

    path: Path

    def cursor(self, factory: Any = _Cursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, *args: Any) -> _Cursor:  # type: ignore[override]
        return self.cursor().execute(*args)

    def executemany(self, *args: Any) -> _Cursor:  # type: ignore[override]
        return self.cursor().executemany(*args)


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


_INDEX_TABLES = {"meta", "items", "embeddings"}


def identify(conn: sqlite3.Connection, path: Path) -> tuple[str, set[str]]:
    """("empty" | "index", the tables): what the SQLite file at `path` is, read without writing anything.
    Raises NotAnIndexError for a file that is not SQLite or another program's database."""
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        if getattr(e, "sqlite_errorcode", None) == 26 or "not a database" in str(e):
            raise NotAnIndexError(f"{path}: not an edge-gcl index (not a SQLite database); nothing was changed") from None
        raise
    if not tables:
        return "empty", tables
    if _INDEX_TABLES <= tables and conn.execute("SELECT 1 FROM meta WHERE key = 'format_version'").fetchone():
        return "index", tables
    shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise NotAnIndexError(
        f"{path}: a SQLite database that is not an edge-gcl index (its tables: {shown}); nothing was changed. "
        "Give --index a folder of its own"
    )


def _read_only_error(error: sqlite3.Error) -> bool:
    """SQLite's ways of saying it cannot write the file or the folder beside it (for the -wal and -shm files)."""
    message = str(error).lower()
    return any(text in message for text in ("readonly", "read-only", "unable to open database file",
                                            "disk i/o error", "attempt to write"))


class Store:
    """One connection to the index file. Thread-safe (one lock); open one Store per process/thread
    that needs its own snapshot, SQLite coordinates them. `read_only` when the file or its folder
    cannot be written: listing and searching work, writes fail naming the file."""

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0, read_only: bool = False) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self.writes = 0  # commits through this connection (PRAGMA data_version only sees others')
        self._depth = 0
        self._checked = False  # quick_check passed before this connection's first write
        self.timeout_s = timeout_s
        self.read_only = read_only
        words.check_sqlite()  # before a file is made or opened
        self.conn = self._connect(read_only)
        self.info: StoreInfo | None = None

    def _connect(self, read_only: bool, immutable: bool = False) -> sqlite3.Connection:
        if read_only:
            from urllib.parse import quote

            uri = f"file:{quote(str(self.path.absolute()))}?{'immutable=1' if immutable else 'mode=ro'}"
            conn = sqlite3.connect(uri, uri=True, timeout=self.timeout_s, isolation_level=None,
                                   check_same_thread=False, factory=_Connection)
        else:
            conn = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None,
                                   check_same_thread=False, factory=_Connection)
        conn.path = self.path  # type: ignore[attr-defined]
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
        words.register(conn)  # the words table's triggers fold text with it
        return conn

    def _reopen_read_only(self) -> None:
        """Read the file without writing it or its folder: mode=ro, else (a WAL file whose -shm cannot be made
        in a read-only folder) immutable, which is right because nothing can write there either."""
        self.conn.close()
        for immutable in (False, True):
            self.conn = self._connect(True, immutable=immutable)
            try:
                self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                break
            except sqlite3.OperationalError:
                self.conn.close()
                if immutable:
                    raise
        self.read_only = True

    def _settings(self) -> None:
        """WAL, FULL sync and foreign keys: set only on a file known to be an index (or empty)."""
        mode = _journal_mode_wal(self.conn, self.timeout_s)
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"{self.path}: cannot switch to WAL journal mode (got {mode})")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA foreign_keys = ON")

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
        """Open (or create, recording model_id / embed_dim / dtype) the index file at `path`.

        The file is identified first (`identify`), before anything is written: another program's database
        or a file that is not SQLite is refused (NotAnIndexError) as it is. A file or folder that cannot be
        written opens read-only."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise FileNotFoundError(
                    f"{path}: no index here (create one with create=True or `edge-gcl index add`)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise NotAnIndexError(f"{path}: not a file (an index is a SQLite file, index.sqlite in its folder)")
        if dtype not in _NUMPY:
            raise ValueError(f"dtype {dtype!r}: expected one of {sorted(_NUMPY)}")
        store = cls(path, timeout_s=timeout_s)
        try:
            try:
                kind, tables = identify(store.conn, path)
                if kind == "empty" and not create:
                    raise FileNotFoundError(f"{path}: not an initialised index")
                store._settings()
            except sqlite3.OperationalError as e:
                if not _read_only_error(e) or not path.stat().st_size:
                    raise
                store._reopen_read_only()  # a read-only file or folder: list and search still work
                kind, tables = identify(store.conn, path)
                if kind == "empty":
                    raise FileNotFoundError(f"{path}: not an initialised index") from None
            version = int(store.conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0]) \
                if kind == "index" else FORMAT_VERSION
            missing = "excluded" not in tables or "ocr_meaning" not in tables  # added within format 3
            if (kind == "empty" or version in _MIGRATIONS or missing) and not store.read_only:
                store._initialise(model_id=model_id, embed_dim=embed_dim, model_name=model_name, dtype=dtype,
                                  create=create)
            store.info = store.read_info()
        except BaseException:
            store.close()
            raise
        return store

    def _initialise(self, *, model_id: str | None, embed_dim: int | None, model_name: str | None, dtype: str,
                    create: bool) -> None:
        """Create the schema in an empty file, or migrate an older one, in one transaction (another process may
        be doing the same: what it finds inside the transaction decides)."""
        path = self.path
        with self.write(check=False) as conn:
            kind, _ = identify(conn, path)
            if kind == "empty":
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
    def write(self, *, check: bool = True) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction (waits for other writers up to the busy timeout);
        nested calls join the outer transaction. Before this connection's first write, `check` runs
        SQLite's quick_check: nothing is written into a damaged file (IndexDamagedError says how to repair)."""
        with self.lock:
            self.check_writable()
            if check and not self._checked and not self._depth:
                self.check_integrity()
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

    def get_by_key(self, key: int) -> Item | None:
        with self.lock:
            row = self.conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE key = ?", (key,)).fetchone()
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

    def check_writable(self) -> None:
        """Raise sqlite3.OperationalError naming the file when it was opened read-only."""
        if self.read_only:
            raise sqlite3.OperationalError(
                f"{self.path}: read-only (the file or its folder cannot be written): list and search work, "
                "changing the index needs write access"
            )

    def check_integrity(self) -> None:
        """Raise IndexDamagedError unless SQLite's quick_check (every page's structure, O(file size)) passes."""
        with self.lock:
            try:
                problems = [r[0] for r in self.conn.execute("PRAGMA quick_check(3)").fetchall()]
            except IndexDamagedError:
                raise
            except sqlite3.DatabaseError as e:
                problems = [str(e)]
            if problems != ["ok"]:
                raise IndexDamagedError(f"{self.path}: {'; '.join(problems)[:300]}; {repair_hint(self.path)}")
            self._checked = True


# --- salvaging a damaged file ------------------------------------------------------------------

ITEM_COLUMNS = ("key", "id", "modality", "path", "text", "meta", "size_bytes", "mtime_ns", "sha256", "created",
                "updated", "taken", "taken_from", "ocr")
EMBEDDING_COLUMNS = ("vid", "item", "chunk", "vector", "scale")


@dataclass
class Salvaged:
    """What could still be read from a damaged index file (`salvage`)."""

    meta: dict[str, str]
    items: list[tuple[Any, ...]]  # ITEM_COLUMNS
    embeddings: list[tuple[Any, ...]]  # EMBEDDING_COLUMNS
    excluded: list[tuple[Any, ...]]  # (path, removed)
    unreadable: list[str]  # tables (or parts of them) that could not be read


def salvage(path: Path, *, timeout_s: float = 30.0) -> Salvaged:
    """Read every row of the index at `path` that SQLite can still read, without writing to it: tables are
    walked in key order and a damaged page is stepped over (the rows it held are lost)."""
    store = Store(path, timeout_s=timeout_s, read_only=True)
    try:
        try:
            store.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            store._reopen_read_only()  # a WAL file whose -shm cannot be made: read it as it is
        conn, unreadable = store.conn, []

        def table(name: str, columns: Sequence[str], *, rowid: bool) -> list[tuple[Any, ...]]:
            try:  # an older format lacks some columns (format 2 has no ocr): read those it has, None for the rest
                present = {r[1] for r in conn.execute(f"PRAGMA table_info({name})").fetchall()}
            except sqlite3.DatabaseError:
                present = set(columns)
            have = [c for c in columns if c in present]
            if columns[0] not in have:
                unreadable.append(name)
                return []
            rows, complete = _walk(conn, name, have, rowid=rowid)
            if not complete:
                unreadable.append(name)
            if len(have) < len(columns):
                rows = [tuple(dict(zip(have, row, strict=True)).get(c) for c in columns) for row in rows]
            return rows

        meta = dict(table("meta", ("key", "value"), rowid=False))
        items = table("items", ITEM_COLUMNS, rowid=True)
        embeddings = table("embeddings", EMBEDDING_COLUMNS, rowid=True)
        excluded = table("excluded", ("path", "removed"), rowid=False)
    finally:
        store.close()
    return Salvaged(meta, items, embeddings, excluded, unreadable)


def _walk(conn: sqlite3.Connection, table: str, columns: Sequence[str], *, rowid: bool
          ) -> tuple[list[tuple[Any, ...]], bool]:
    """(the rows of `table` that can be read, in key order; whether that is all of them). The key is the first
    column: an integer rowid (a damaged page is stepped over by seeking past it) or a text (WITHOUT ROWID
    tables: reading stops at the first damaged page)."""
    key, cols = columns[0], ", ".join(columns)
    query = f"SELECT {cols} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?"
    rows: list[tuple[Any, ...]] = []
    last: Any = -(2**63) if rowid else ""
    batch, complete = 256, True

    def readable(after: int) -> bool:  # can the walk go on from `after` (the same query, the same seek)?
        try:
            conn.execute(query, (after, 1)).fetchall()
            return True
        except sqlite3.DatabaseError:
            return False

    while True:
        try:
            part = conn.execute(query, (last, batch)).fetchall()
        except sqlite3.DatabaseError:
            if batch > 1:  # up to the damaged page one row at a time
                batch = 1
                continue
            complete = False
            if not rowid:
                break
            jump = 1  # a key past the damage: far enough, then back to the first such
            while last + jump < 2**62 and not readable(last + jump):
                jump *= 2
            if last + jump >= 2**62:
                break
            low, high = last + 1, last + jump
            while low < high:
                middle = (low + high) // 2
                low, high = (low, middle) if readable(middle) else (middle + 1, high)
            last, batch = low, 256
            continue
        if not part:
            break
        rows += part
        last, batch = part[-1][0], 256
    return rows, complete


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


MAX_META_DEPTH = 32  # nesting of a metadata value (SQLite's JSON functions stop at 1000; nobody needs 32)


def dump_meta(meta: Mapping[str, Any]) -> str:
    """User metadata -> JSON object text; raises ValueError naming what cannot be stored."""
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta: expected a dict, got {type(meta).__name__}")
    for k in meta:
        if not isinstance(k, str):
            raise ValueError(f"meta: key {k!r} is not a str")
        if not k or '"' in k:  # the JSON path of a `where` filter cannot name it (json_path)
            raise ValueError(f"meta: key {k!r}: expected a non-empty str without '\"' (where= could not filter on it)")
    if _depth(meta) > MAX_META_DEPTH:
        raise ValueError(f"meta: nested deeper than {MAX_META_DEPTH} levels")
    try:
        return json.dumps(dict(meta), ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"meta: not JSON-serialisable ({e})") from None


def _depth(value: Any, limit: int = MAX_META_DEPTH + 1) -> int:
    """How deep lists and dicts nest in `value`, counted up to `limit` (no recursion: any depth is safe)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (dict, list, tuple)):
            deepest = max(deepest, level)
            if level <= limit:
                todo += [(v, level + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest

"""The text-meaning vectors of the photos whose text was read: stored beside the items, derived
from their OCR text by the sentence encoder (`edge_gcl.ocr.meaning`), and how they lift a photo in
a search.

    ocr_meaning  vid INTEGER PRIMARY KEY AUTOINCREMENT
                 item INTEGER -> items(key) ON DELETE CASCADE
                 chunk INTEGER                      0.. (a chunk of the cleaned text)
                 vector BLOB                        the encoder's dims, little-endian float16
    meta         meaning_model                      the encoder's model id (`MeaningEncoder.model_id`)

Derived data, like the usearch file: a photo whose OCR text changes loses its rows (a trigger),
and `fill` embeds every photo with text and no rows (after each ingest batch, a read-text, a
reindex), so an index built before this table existed, or by a runtime without the encoder, gains
them the next time one with it ingests. A photo whose cleaned text is empty (a plate, a code) gets
one zero row, so it is not looked at again. The table is created on every open when missing (an
older reader ignores it; no format change).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS ocr_meaning (
        vid INTEGER PRIMARY KEY AUTOINCREMENT,
        item INTEGER NOT NULL REFERENCES items(key) ON DELETE CASCADE,
        chunk INTEGER NOT NULL,
        vector BLOB NOT NULL,
        UNIQUE (item, chunk)
    )""",
    """CREATE TRIGGER IF NOT EXISTS items_meaning_update AFTER UPDATE OF ocr ON items
        WHEN old.ocr IS NOT new.ocr BEGIN
        DELETE FROM ocr_meaning WHERE item = old.key;
    END""",
]
MODEL_KEY = "meaning_model"
_DTYPE = np.dtype("<f2")


def create(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def missing(conn: sqlite3.Connection, *, after: int = -1, limit: int = -1, keys: Sequence[int] | None = None
            ) -> list[tuple[int, str]]:
    """(item key, OCR text) of the photos with text read and no meaning rows (keys over `after`; among
    `keys` if given)."""
    among = f"AND key IN ({','.join(str(int(k)) for k in keys)}) " if keys is not None else ""
    return conn.execute(
        f"SELECT key, ocr FROM items WHERE key > ? {among}AND ocr IS NOT NULL AND ocr != '' AND path IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM ocr_meaning WHERE item = items.key) ORDER BY key LIMIT ?",
        (after, limit),
    ).fetchall()


def fill(store: Any, encoder: Any, *, batch: int = 256, keys: Sequence[int] | None = None) -> int:
    """Embed the photos `missing` rows (of `keys`, else all: one scan of the items) with `encoder`
    (`embed`, `tokenizer`, `model_id`, `dim`) and store them, `batch` photos per transaction
    (embedded outside it); rows of another encoder are dropped first. A row is kept only if its
    photo's text is still what was embedded. Returns how many photos were embedded."""
    from ..ocr.meaning import MAX_CHUNKS, clean
    from .sources import chunk_note

    with store.lock:
        row = store.conn.execute("SELECT value FROM meta WHERE key = ?", (MODEL_KEY,)).fetchone()
    if row is None or row[0] != encoder.model_id:  # none yet, or another encoder's
        with store.write() as conn:
            conn.execute("DELETE FROM ocr_meaning")
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (MODEL_KEY, encoder.model_id))
    done, after = 0, -1
    while True:
        with store.lock:
            todo = missing(store.conn, after=after, limit=batch, keys=keys)
        if not todo:
            return done
        chunks = [chunk_note(clean(text), encoder.tokenizer)[:MAX_CHUNKS] if clean(text) else [] for _, text in todo]
        flat = [c for cs in chunks for c in cs]
        vectors = encoder.embed(flat) if flat else np.zeros((0, encoder.dim), np.float32)  # (R, d)
        rows, at = [], 0
        for (key, text), cs in zip(todo, chunks, strict=True):
            v = vectors[at : at + len(cs)] if cs else np.zeros((1, encoder.dim), np.float32)  # no words: a zero row
            at += len(cs)
            rows += [(key, c, np.asarray(r, _DTYPE).tobytes(), key, text) for c, r in enumerate(v)]
        with store.write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO ocr_meaning (item, chunk, vector) SELECT ?, ?, ? "
                "WHERE (SELECT ocr FROM items WHERE key = ?) = ?",
                rows,
            )
        done += len(todo)
        after = todo[-1][0]


def load(conn: sqlite3.Connection, model_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(item keys (R,), vectors (R, d) float32) of the rows `model_id` made, grouped by item (none in an
    index opened read-only before the table existed)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'ocr_meaning'").fetchone():
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (MODEL_KEY,)).fetchone()
    if row is None or row[0] != model_id:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    rows = conn.execute("SELECT item, vector FROM ocr_meaning ORDER BY item, chunk").fetchall()
    keys = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    if not rows:
        return keys, np.zeros((0, 0), np.float32)
    vectors = np.frombuffer(b"".join(r[1] for r in rows), _DTYPE).reshape(len(rows), -1).astype(np.float32)
    return keys, vectors


def item_cosines(keys: np.ndarray, vectors: np.ndarray, query: np.ndarray, within: Sequence[int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(item keys (I,), the best cosine of each item's rows with `query` (I,)); `within` keeps only those items."""
    if not len(keys):
        return keys, np.zeros(0, np.float32)
    cos = vectors @ np.asarray(query, np.float32)  # (R,)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    items, best = keys[starts], np.maximum.reduceat(cos, starts)
    if within is not None:
        keep = np.isin(items, np.asarray(within, np.int64))
        items, best = items[keep], best[keep]
    return items, best

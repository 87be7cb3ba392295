"""`edge-gcl index repair`: rebuild a damaged index file from what can still be read.

A damaged `index.sqlite` (a bad sector, a copy cut short: SQLite's "database disk image is
malformed") is never written to (`Store.check_integrity` runs before a connection's first write).
`repair` makes a new file instead, step by step:

1. Read every row SQLite can still read (`store.salvage`: tables walked in key order, a damaged
   page stepped over; the rows it held are lost).
2. Copy them into a new file beside the old one: the model record (a new db_uuid), the items, the
   vectors of every item whose chunks are all there, the photos removed by hand.
3. Embed again the items whose vectors were lost, with the index's own model: a note from its text,
   a photo from its file; a photo+note whose file is gone keeps its note, a photo whose file is gone
   is dropped (a later `index add` or `sync` brings it back).
4. Check the new file (`PRAGMA integrity_check`), keep the damaged one as
   `index.sqlite.damaged-<time>` (with its -wal and -shm), put the new one in its place and delete
   the search caches derived from the old one.

Nothing is deleted: a repair that fails leaves the damaged file as it was. Run it with no other
edge-gcl process on the index (the app stopped).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import numpy as np
from tqdm.auto import tqdm

from ..embedding import Embedder
from .index import APPROXIMATE_FILE, INDEX_FILE, VECTORS_FILE, Index
from .ingest import embed_sources
from .store import _NUMPY, EMBEDDING_COLUMNS, ITEM_COLUMNS, Item, ModelMismatchError, Store, salvage

BATCH = 32  # items embedded again at a time


@dataclass
class RepairReport:
    """What `repair` did: items kept whole, embedded again, lost (ids, or paths of photos not found), where
    the damaged file now is, and which tables had unreadable parts."""

    damaged: str
    kept: int = 0
    reembedded: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"kept {self.kept}, embedded again {len(self.reembedded)}, lost {len(self.lost)}; "
                f"the damaged file is kept as {self.damaged}")


def repair(
    path: str | Path,
    *,
    model: Embedder | str | Path | None = None,
    provider: str = "cpu",
    form: str | None = None,
    progress: bool = True,
) -> RepairReport:
    """Rebuild the index at `path` (a folder holding index.sqlite, or the file) from what can still be read
    (the module docstring's steps). `model` (an Embedder or a spec for `runtime.load_embedder`) must be the
    index's own; it is loaded only when some items lost their vectors."""
    path = Path(path)
    file = path if path.suffix in (".sqlite", ".db") or path.is_file() else path / INDEX_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no index here")
    with filelock.FileLock(f"{file}.ingest-lock"):  # no ingest meanwhile
        return _repair(file, model=model, provider=provider, form=form, progress=progress)


def _repair(file: Path, *, model: Any, provider: str, form: str | None, progress: bool) -> RepairReport:
    # 1. what can still be read
    got = salvage(file)
    meta = got.meta
    if not {"model_id", "embed_dim", "dtype"} <= set(meta) or meta["dtype"] not in _NUMPY:
        raise ValueError(f"{file}: its record of the model (the meta table) cannot be read, so nothing can be "
                         "repaired; build a new index (`edge-gcl index add FOLDER`); the file was left as it was")
    blob_bytes = int(meta["embed_dim"]) * _NUMPY[meta["dtype"]].itemsize
    items = {row[0]: row for row in got.items}
    chunks: dict[int, list[tuple[Any, ...]]] = {}
    for row in got.embeddings:
        if row[1] in items and isinstance(row[3], bytes) and len(row[3]) == blob_bytes:
            chunks.setdefault(row[1], []).append(row)
    whole = {key for key, rows in chunks.items() if sorted(r[2] for r in rows) == list(range(len(rows)))}
    report = RepairReport(damaged=str(file), unreadable=list(got.unreadable))
    report.lost += [f"item #{key} (its record was on a damaged page)"
                    for key in sorted({row[1] for row in got.embeddings} - set(items))]
    # 2. a new file with what was read
    staged = file.with_name(f".{file.name}.repair-{os.getpid()}")
    staged.unlink(missing_ok=True)
    store = Store.open(staged, model_id=meta["model_id"], embed_dim=int(meta["embed_dim"]),
                       model_name=meta.get("model_name"), dtype=meta["dtype"])  # type: ignore[arg-type]
    try:
        with store.write() as conn:
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             [(k, v) for k, v in meta.items() if k not in ("db_uuid", "format_version")])
            marks = ", ".join("?" * len(ITEM_COLUMNS))
            for row in items.values():
                try:
                    conn.execute(f"INSERT INTO items ({', '.join(ITEM_COLUMNS)}) VALUES ({marks})", row)
                except sqlite3.Error:  # a row whose own fields are damaged (a broken meta, ...)
                    report.lost.append(str(row[1]))
                    whole.discard(row[0])
            conn.executemany(f"INSERT INTO embeddings ({', '.join(EMBEDDING_COLUMNS)}) VALUES (?, ?, ?, ?, ?)",
                             [r for key in sorted(whole) for r in chunks[key]])
            conn.executemany("INSERT OR IGNORE INTO excluded VALUES (?, ?)", got.excluded)
        report.kept = len(whole)
        # 3. vectors for the items that lost theirs
        bare = [it for key in items if key not in whole and (it := store.get_by_key(key)) is not None]
        if bare:
            _embed_again(Index(store, None, staged.parent), bare, model, provider=provider, form=form,
                         report=report, progress=progress)
        problems = store.integrity_check()
        if problems != "ok":
            raise sqlite3.DatabaseError(f"{staged}: the rebuilt file is not sound ({problems})")
    except BaseException:
        store.close()
        staged.unlink(missing_ok=True)
        raise
    store.close()
    # 4. the damaged file kept, the new one in its place
    report.damaged = str(file.with_name(f"{file.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"))
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{file}{suffix}"):
            os.replace(f"{file}{suffix}", f"{report.damaged}{suffix}")
    os.replace(staged, file)
    for cache in (VECTORS_FILE, APPROXIMATE_FILE, APPROXIMATE_FILE + ".json"):
        (file.parent / cache).unlink(missing_ok=True)
    return report


def _embed_again(index: Index, items: list[Item], model: Any, *, provider: str, form: str | None,
                 report: RepairReport, progress: bool) -> None:
    """Vectors for the items a repair found without them: notes from their text, photos from their files."""
    from ..runtime import load_embedder

    store = index.store
    if model is None:
        raise ValueError(f"{store.path}: {len(items)} items lost their vectors; repairing them needs the index's "
                         "model (--model)")
    embedder = load_embedder(model, provider=provider, form=form)  # type: ignore[arg-type]
    if embedder.model_id != index.model_id:
        raise ModelMismatchError(
            f"{store.path}: {len(items)} items lost their vectors and must be embedded again with the index's "
            f"model {index.model_name!r} ({index.model_id}), not {embedder.model_id!r}: give that model with "
            "--model (reindex afterwards to change models)"
        )
    bar = tqdm(total=len(items), unit="item", desc="repair", disable=not progress)
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        vectors = embed_sources([(it.path, it.text) for it in batch], embedder,
                                ocr=[it.ocr for it in batch], ocr_vectors=index.ocr_vectors)  # its OCR rows too
        with store.write() as conn:
            for it, v in zip(batch, vectors, strict=True):
                if isinstance(v, str) and it.text is not None:  # the photo is gone: its note stays, as a note
                    conn.execute("UPDATE items SET modality = 'note', path = NULL, size_bytes = NULL, mtime_ns = NULL, "
                                 "sha256 = NULL, taken = NULL, taken_from = NULL WHERE key = ?", (it.key,))
                    v = embed_sources([(None, it.text)], embedder)[0]
                if isinstance(v, str):  # a photo whose file is gone: a later add or sync brings it back
                    conn.execute("DELETE FROM items WHERE key = ?", (it.key,))
                    report.lost.append(it.path or it.id)
                    continue
                store.set_vectors(conn, it.key, np.asarray(v))
                report.reembedded.append(it.id)
        bar.update(len(batch))
    bar.close()

"""Re-embedding an index with another model (`Index.reindex`), atomically.

Vectors are computed from the stored sources (photo files, note texts, the text read in photos)
into a staging table, committed in batches (readers keep searching the old model meanwhile), then
swapped in with the new model id in one transaction; a failure drops the staging table and leaves
the old model in charge. Every photo is re-read from its file: one that is gone or no longer
decodes fails the reindex before anything changes (`UnreadablePhotosError`), unless the caller
drops such photos (a photo+note keeps its note as a "note").
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from ..embedding import Embedder, model_name
from .ingest import Ingester, IngestReport, Skip
from .sources import printable, stat_photo
from .store import Item, Store


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


def check_readable(store: Store) -> None:
    """An `UnreadablePhotosError` naming the photos of `store` whose files are gone (a quick stat, before
    any model loads: an unplugged card fails at once)."""
    missing = [(it.path, st) for it in store.all_items(where_sql="WHERE path IS NOT NULL")
               if isinstance(st := stat_photo(it.path), str)]  # fmt: skip
    if missing:
        raise UnreadablePhotosError(store.path, missing)


def migrate(ingester: Ingester, new: Embedder, *, batch_size: int, progress: bool, drop_unreadable: bool) -> IngestReport:
    """Re-embed every item of `ingester.store` with `new` (reading the photos not read yet with
    `ingester.ocr`) and swap the vectors and the model record in; the caller holds the ingest lock.
    `drop_unreadable`: a photo that no longer decodes is removed (photo+note: kept as its note), else
    `UnreadablePhotosError`."""
    store = ingester.store
    read: dict[int, str] = {}  # key -> text read now (stored with the swap)
    report = IngestReport()
    with store.write() as conn:
        conn.execute("DROP TABLE IF EXISTS reindex_staging")
        conn.execute(
            "CREATE TABLE reindex_staging (item INTEGER NOT NULL, chunk INTEGER NOT NULL, vector BLOB NOT NULL, "
            "scale REAL, updated REAL, PRIMARY KEY (item, chunk))"
        )
    try:
        items = store.all_items()
        fate: dict[int, str] = {}  # key -> "remove" | "note"
        bar = tqdm(total=len(items), unit="item", desc="reindex", disable=not progress)
        for start in range(0, len(items), batch_size):
            _stage(ingester, items[start : start + batch_size], new, fate, report, batch_size, read)
            if fate and not drop_unreadable:  # a photo that no longer decodes
                raise UnreadablePhotosError(store.path, [(s.input, s.reason) for s in report.skipped])
            bar.update(min(batch_size, len(items) - start))
        bar.close()
        with store.write() as conn:
            staged = dict(conn.execute("SELECT item, max(updated) FROM reindex_staging GROUP BY item"))
            late = [
                it
                for it in store.all_items()
                if staged.get(it.key) != it.updated and it.key not in fate
            ]
            _stage(ingester, late, new, fate, report, batch_size, read)  # changed while we worked
            if fate and not drop_unreadable:
                raise UnreadablePhotosError(store.path, [(s.input, s.reason) for s in report.skipped])
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
            with store.write() as conn:
                conn.execute("DROP TABLE IF EXISTS reindex_staging")
        except sqlite3.Error:
            pass
        raise
    store.info = store.read_info()
    return report


def _stage(
    ingester: Ingester,
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
        (it.key, text) for it, text in zip(unread, ingester.read_texts([it.path for it in unread]), strict=True)
        if text is not None
    )  # fmt: skip
    texts = [it.ocr if it.ocr is not None else read.get(it.key) for it in items]
    vectors = ingester.embed(
        [(it.path, it.text) for it in items], embedder, batch_size=batch_size, ocr=texts
    )
    notes = [
        (it, v)
        for it, v in zip(items, vectors, strict=True)
        if isinstance(v, str) and it.text is not None
    ]
    kept = ingester.embed([(None, it.text) for it, _ in notes], embedder, batch_size=batch_size)
    kept_by_key = {it.key: v for (it, _), v in zip(notes, kept, strict=True)}
    with ingester.store.write() as conn:
        for it, v in zip(items, vectors, strict=True):
            if isinstance(v, str):
                report.skipped.append(Skip(it.path or it.id, v))
                if it.text is None:
                    fate[it.key] = "remove"
                    report.removed.append(it.id)
                    continue
                fate[it.key] = "note"
                v = kept_by_key[it.key]
            ingester.store.set_vectors(conn, it.key, v, table="reindex_staging", embed_dim=embedder.embed_dim)
            conn.execute("UPDATE reindex_staging SET updated = ? WHERE item = ?", (it.updated, it.key))

"""The on-device photo and notes index: `Index.open(folder, model=...)`, then add, sync, search.

    from edge_gcl.index import Index

    with Index.open("edge-gcl-index", model="artifacts/") as index:
        index.add_photos("~/DCIM")                       # -> IngestReport
        index.add_note("passport renewal receipt", meta={"tags": ["admin"]})
        hits = index.search("beach at sunset", k=5, where={"album": "Trip"})
        hits = index.search("beach", after="2024-07", before="2024-08", min_score=0.38, sort="date")
        recent = index.items(modalities=["photo"], limit=20)  # newest first, by when taken

Files: `store.py` (the SQLite file: schema, transactions, vector codec), `vectors.py` (exact
in-memory matrix and the usearch approximate index), `index.py` (the `Index` API), `ingest.py`
(adding photos, notes and the text read in photos), `search.py` (ranking, search options, `Hit`),
`reindex.py` (re-embedding with another model), `sources.py` (ids, note chunks, photo files),
`words.py` and `meaning.py` (the text read in photos, word for word and by meaning), `repair.py`
(rebuilding a damaged file), `cli.py` (the `edge-gcl index ...` and `edge-gcl search` handlers).
"""

from __future__ import annotations

from .index import Index, IndexStats
from .ingest import IngestReport, Skip
from .reindex import UnreadablePhotosError
from .repair import RepairReport, repair
from .search import (
    APPROXIMATE_MIN_VECTORS,
    Hit,
    check_search_options,
    default_cross_modal_offset,
    default_min_score,
    modality_of,
    parse_date,
)
from .sources import chunk_note, note_id, photo_id
from .store import FORMAT_VERSION, IndexDamagedError, Item, ModelMismatchError, NotAnIndexError

__all__ = [
    "APPROXIMATE_MIN_VECTORS",
    "FORMAT_VERSION",
    "Hit",
    "Index",
    "IndexStats",
    "IngestReport",
    "Item",
    "IndexDamagedError",
    "ModelMismatchError",
    "NotAnIndexError",
    "RepairReport",
    "Skip",
    "UnreadablePhotosError",
    "check_search_options",
    "chunk_note",
    "default_cross_modal_offset",
    "default_min_score",
    "modality_of",
    "note_id",
    "parse_date",
    "photo_id",
    "repair",
]

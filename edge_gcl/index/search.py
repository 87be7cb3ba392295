"""Searching an index: how `Index.search` ranks, the options it takes and the hits it gives.

An item's score is the max over its vectors: one per chunk of a long note (for a photo+note, over
normalize(e_i + e_chunk)) and a photo's OCR rows (`ingest.py`), plus the model's cross-modal offset
when the item's modality differs from the query's (`edge_gcl.embedding.modality_offset`, calibrated
per model: `default_cross_modal_offset`); `default_min_score` is the model's relevance cut-off.

Below APPROXIMATE_MIN_VECTORS stored vectors a search is one exact scan of the in-memory matrix
(`vectors.VectorMatrix`, in the stored dtype); above it the usearch HNSW (`vectors.ApproximateIndex`)
proposes candidates and they are re-scored exactly, so a score is never the graph's estimate.
Filters (modalities, metadata, `after`/`before` on when a photo was taken: `parse_date`) restrict
the rows scanned. Items whose note or OCR text holds the query's words come first (`words.py` states
the merge rule); where the index has a sentence encoder, the meaning of the text read in photos
lifts a photo whose text means what a query of words says (`meaning.py`, `Searcher.search`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..embedding import Embedder, fuse, modality_offset, modality_offsets
from ..tokenizer import check_text
from . import meaning as meaning_rows
from .ingest import need_model
from .sources import taken_text
from .store import MODALITIES, Modality, ModelMismatchError, Store, StoreInfo
from .vectors import ApproximateIndex, VectorMatrix, top_rows
from .words import matching_keys

if TYPE_CHECKING:
    from ..ocr.meaning import MeaningEncoder

# Above this many stored vectors, search() uses the usearch HNSW unless told otherwise (approximate=True
# or False forces either); below it exact search is one scan of the memory-mapped (V, D) matrix in the
# stored dtype (V x D x 1, 2 or 4 bytes: 25-100 MB and a few ms per query at 100k x 256; see vectors.py).
APPROXIMATE_MIN_VECTORS = 100_000

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



Ranked = list[tuple[int, float, int]]  # (item key, score, chunk's row order), best first


def check_modalities(modalities: Iterable[Modality] | None) -> list[Modality] | None:
    """`modalities` as a list (None: all), or a ValueError naming those that are not in MODALITIES."""
    if modalities is None:
        return None
    modalities = list(modalities)
    bad = [m for m in modalities if m not in MODALITIES]
    if bad:
        raise ValueError(f"modalities {bad}: expected any of {list(MODALITIES)}")
    return modalities


def lifted(ranked: Ranked, boosts: Mapping[int, float], k: int) -> Ranked:
    """(key, score, chunk) rows with each key's boost added, best first, the first `k`."""
    if not boosts:
        return ranked[:k]
    out = [(key, score + boosts.get(key, 0.0), chunk) for key, score, chunk in ranked]
    return sorted(out, key=lambda r: (-r[1], r[0]))[:k]


class Searcher:
    """Ranks an index's items for a query: over the stored vectors in memory (`vectors`) and the usearch
    graph over them (`graph`), both kept and saved by `Index`, with the caches derived from them (each
    row's cross-modal offset, the meaning rows, the last query's sentence vector)."""

    def __init__(self, store: Store, vectors: VectorMatrix, graph: ApproximateIndex) -> None:
        self.store = store
        self.vectors = vectors
        self.graph = graph
        # (vectors.version, row -> modality code, {(query modality, offset): (V,) offsets})
        self._offset_rows: tuple[int, np.ndarray, dict[tuple[str, float], np.ndarray]] | None = None
        self._meaning_rows: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None  # (change token, keys, vectors)
        self._meaning_last: tuple[str, np.ndarray] | None = None  # (query words, their sentence vector)

    def search(
        self,
        text: str | None,
        image: Any,
        *,
        vector: Any,
        k: int,
        modalities: Iterable[Modality] | None,
        where: Mapping[str, Any] | None,
        approximate: bool | None,
        min_score: float | None,
        after: str | date | None,
        before: str | date | None,
        sort: Literal["score", "date"],
        query_modality: Modality | None,
        cross_modal_offset: float | None,
        words: str | None,
        embedder: Embedder | None,
        meaning: MeaningEncoder | None,
        refresh: Callable[[], None],
    ) -> list[Hit]:
        """`Index.search` (whose docstring says what each option does) with the index's model (`embedder`;
        None: opened without one, a `vector` query only), its sentence encoder (`meaning`), and `refresh`,
        run under the store's lock before the vectors are read (it catches up with other writers)."""
        after, before = check_search_options(k=k, min_score=min_score, after=after, before=before,
                                             cross_modal_offset=cross_modal_offset)
        if sort not in ("score", "date"):
            raise ValueError(f"sort {sort!r}: expected 'score' or 'date'")
        modalities = check_modalities(modalities)
        if query_modality is not None and query_modality not in MODALITIES:
            raise ValueError(f"query_modality {query_modality!r}: expected one of {list(MODALITIES)}")
        if vector is None:
            query_modality = modality_of(text, image)
            if words is None and image is None:
                words = text
        if cross_modal_offset is None:
            cross_modal_offset = default_cross_modal_offset(embedder)
        query = self.query(text, image, vector, embedder=embedder)  # (D,) float32, unit norm
        said = text if vector is None and image is None else words if vector is not None and query_modality == "note" else None
        meaning_query = self.meaning_query(said, meaning) if said and said.strip() else None  # (d,): words alone
        with self.store.lock:
            refresh()
            vectors = self.vectors
            if len(query) != vectors.matrix.shape[1]:  # a vector query, and another process reindexed
                raise ModelMismatchError(
                    f"{self.store.path}: query vector has {len(query)} dims, the index now holds "
                    f"{vectors.matrix.shape[1]}-d vectors of {self._info().model_id!r}"
                )
            if not len(vectors):
                return []
            mask = None
            keys = None
            if modalities is not None or where or after is not None or before is not None:
                keys = self.store.filter_keys(modalities, where, after=after, before=before)
                mask = np.isin(vectors.items, keys)
            use_approximate = len(vectors) >= APPROXIMATE_MIN_VECTORS if approximate is None else approximate
            # by date: every item above the cut-off, then k
            wanted = k if sort == "score" else self.store.conn.execute("SELECT count(*) FROM items").fetchone()[0]
            offsets = self.row_offsets(query_modality, float(cross_modal_offset)) if query_modality else None
            boosts = self.meaning_boosts(meaning_query, keys, meaning) if meaning_query is not None else {}
            matched: Ranked = []
            if words and words.strip():  # words.py's merge rule: the items holding the words first
                found = matching_keys(self.store.conn, words, within=keys)
                if len(found):
                    in_found = np.isin(vectors.items, found)
                    found_k = len(found) if boosts else min(wanted, len(found))  # a lift may reorder them all
                    matched = lifted(self.search_exact(query, found_k, in_found, offsets), boosts, wanted)
                    mask = ~in_found if mask is None else mask & ~in_found
            lifts: Ranked = []
            if boosts:  # the photos whose text means what the query says, scored exactly, then lifted
                in_boosted = np.isin(vectors.items, np.fromiter(boosts, np.int64, len(boosts)))
                scope = in_boosted if mask is None else mask & in_boosted
                lifts = self.search_exact(query, len(boosts), scope, offsets) if scope.any() else []
                mask = ~in_boosted if mask is None else mask & ~in_boosted
            if use_approximate:
                ranked = self.search_approximate(query, wanted, mask, offsets)
            else:
                ranked = self.search_exact(query, wanted, mask, offsets)
            if lifts:
                ranked = lifted(ranked + lifts, boosts, wanted)
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

    def _info(self) -> StoreInfo:
        assert self.store.info is not None
        return self.store.info

    def query(self, text: str | None, image: Any, vector: Any, *, embedder: Embedder | None) -> np.ndarray:
        """The query as a unit (D,) float32 vector: every kind of query is checked and normalised here."""
        if vector is not None:
            if text is not None or image is not None:
                raise ValueError("search: give vector= alone, not with text= or image=")
        elif text is None and image is None:
            raise ValueError("search: give text=, image= or both, or vector=")
        else:
            model = need_model(self.store, embedder)
            parts = []
            if text is not None:
                parts.append(model.embed_texts([check_text(text, name="query text")])[0])
            if image is not None:
                if isinstance(image, (bytes, bytearray)):
                    raise TypeError("query image: pass a path or a PIL image, not bytes")
                parts.append(model.embed_images([image])[0])  # ImageDecodeError names it
            vector = fuse(parts[0], parts[1]) if len(parts) == 2 else parts[0]
        dim = self._info().embed_dim
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

    def meaning_query(self, text: str, meaning: MeaningEncoder | None) -> np.ndarray | None:
        """The sentence vector (d,) of a query's words (the last one kept: a search is often run twice)."""
        if meaning is None:
            return None
        if self._meaning_last is None or self._meaning_last[0] != text:
            self._meaning_last = (text, meaning.embed([text])[0])
        return self._meaning_last[1]

    def meaning_boosts(self, query: np.ndarray, keys: np.ndarray | None, meaning: MeaningEncoder) -> dict[int, float]:
        """{item key: what its score gains} for the photos whose text means what the query says
        (`query`, its sentence vector: `edge_gcl.ocr.meaning.boost` > 0), among `keys` if given."""
        from ..ocr.meaning import boost

        token = self.store.change_token()
        if self._meaning_rows is None or self._meaning_rows[0] != token:
            with self.store.snapshot() as conn:
                self._meaning_rows = (token, *meaning_rows.load(conn, meaning.model_id))
        _, row_keys, rows = self._meaning_rows
        if not len(row_keys):
            return {}
        items, cosines = meaning_rows.item_cosines(row_keys, rows, query, within=keys)
        gain = boost(cosines)
        return {int(k): float(g) for k, g in zip(items, gain, strict=True) if g > 0}

    def rank(self, rows: np.ndarray, scores: np.ndarray, k: int) -> Ranked:
        """Rows with scores -> the k best items as (item key, max score, best chunk's row order)."""
        if not len(rows):
            return []
        keys = self.vectors.items[rows]
        order = np.lexsort((-scores, keys))  # by item, best row first
        first = order[np.r_[True, keys[order][1:] != keys[order][:-1]]]  # best row of each item
        best = first[np.lexsort((keys[first], -scores[first]))][:k]
        chunks = self.vectors.chunks[rows[best]]
        return [(int(keys[i]), float(scores[i]), int(c)) for i, c in zip(best, chunks, strict=True)]

    def row_offsets(self, query_modality: Modality, offset: float) -> np.ndarray | None:
        """(V,) float32: each row's cross-modal offset for a query of `query_modality`; None if all 0."""
        if offset == 0.0:
            return None
        vectors = self.vectors
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

    def search_exact(
        self, query: np.ndarray, k: int, mask: np.ndarray | None, offsets: np.ndarray | None = None
    ) -> Ranked:
        """The k best items among the rows `mask` keeps (None: all), one scan of the matrix."""
        rows = np.flatnonzero(mask) if mask is not None else None  # None: every row
        n = len(rows) if rows is not None else len(self.vectors)
        if not n:
            return []
        scores = self.vectors.scores(query, rows)  # (n,)
        if offsets is not None:
            scores = scores + (offsets if rows is None else offsets[rows])
        # the best few hundred rows hold the k best items unless items have very many chunks
        top = min(n, max(4 * k, 256))
        while True:
            part = top_rows(scores, top)
            ranked = self.rank(rows[part] if rows is not None else part, scores[part], k)
            if len(ranked) >= k or top >= n:
                return ranked
            top = min(n, top * 8)

    def search_approximate(
        self, query: np.ndarray, k: int, mask: np.ndarray | None, offsets: np.ndarray | None = None
    ) -> Ranked:
        """The k best items among the rows `mask` keeps: candidates from the HNSW, scored exactly."""
        vectors = self.vectors
        self.graph.sync(vectors)
        # candidates re-scored exactly; HNSW's own beam (usearch's expansion_search, 64) stays the cost.
        # With offsets the graph ranks by cosine alone: 4x the candidates, so an offset item just
        # below the cosine top-k still makes it
        count = min(len(vectors), max(4 * k, 40) * (1 if offsets is None else 4))
        while True:
            rows = vectors.rows_of(self.graph.search(query, count))
            if mask is not None:
                rows = rows[mask[rows]]
            scores = vectors.scores(query, rows)
            if offsets is not None:
                scores = scores + offsets[rows]
            ranked = self.rank(rows, scores, k)
            if len(ranked) >= k or count >= len(vectors):
                return ranked
            if count * 8 >= len(vectors) // 2:  # a selective filter: exact over the few that pass
                return self.search_exact(query, k, mask, offsets)
            count *= 8

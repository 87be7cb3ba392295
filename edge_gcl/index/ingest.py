"""Adding to an index: photos, notes, the text read in photos, and the vectors each is stored with.

An item is a photo, a note, or a photo with its note (ids and note chunking: `sources.py`). A
photo with a note is the photo's item with modality "photo+note" and vectors normalize(e_i + e_t);
`add_note(text, photo=p)` attaches (or replaces) the note of photo `p`. A long note is stored as one
vector per chunk (`embed_sources`).

Words in photos: with an OCR engine (`Index.open(..., ocr=)`, on by default where the model's
artifacts ship the PP-OCR graphs; `edge_gcl.ocr`), each photo's text is read at ingest and stored
with it (`Item.ocr`); it adds up to MAX_OCR_CHUNKS chunks to the photo's vectors (`ocr_vectors`
says how: `OcrVectors`) and is searchable word for word with the notes (`words.py`). Where the
artifacts ship the sentence encoder (`meaning=`, `edge_gcl.ocr.meaning`), the text's meaning is
stored too, after each batch (`meaning.py`).

Photos are re-embedded only when their content changed: size and mtime first, then SHA-256.
Ingest commits every `batch_size` photos, so a killed process loses at most the current batch;
an input that cannot be used is listed in the report with a reason and never stops the ingest.
Each photo keeps when it was taken (`Item.taken`: EXIF DateTimeOriginal, else the file's mtime).
One ingest (add, sync, read-text, reindex) runs at a time per index (`ingest_lock`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import filelock
import numpy as np
from tqdm.auto import tqdm

from ..embedding import Embedder, fuse
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
)
from .store import Item, Store, dump_meta

if TYPE_CHECKING:
    from ..ocr import OcrEngine
    from ..ocr.meaning import MeaningEncoder

# How a photo's OCR text joins its vectors: "fused", one chunk normalize(e_photo + e_text) per chunk of
# the text (a photo+note, as GCL trains); "text", the text's own vectors e_text; "both". "fused", the
# default, was chosen on the dev half of `python -m benchmarks.ocr` (docs/ocr.md).
OcrVectors = Literal["fused", "text", "both"]
OCR_VECTOR_MODES: tuple[OcrVectors, ...] = get_args(OcrVectors)
MAX_OCR_CHUNKS = 8  # a document photo's text beyond this many chunks is stored and word-searchable only


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


def check_ocr_vectors(ocr_vectors: Any) -> OcrVectors:
    """`ocr_vectors` if it is one of OCR_VECTOR_MODES, else a ValueError naming it."""
    if ocr_vectors not in OCR_VECTOR_MODES:
        raise ValueError(f"ocr_vectors {ocr_vectors!r}: expected one of {', '.join(map(repr, OCR_VECTOR_MODES))}")
    return ocr_vectors  # type: ignore[no-any-return]


def need_model(store: Store, embedder: Embedder | None) -> Embedder:
    """The index's model, or a RuntimeError naming the index opened without one."""
    if embedder is None:
        raise RuntimeError(f"{store.path}: opened without a model; pass model=... to Index.open")
    return embedder


@contextlib.contextmanager
def ingest_lock(store: Store, progress: bool) -> Iterator[None]:
    """One ingest (add, sync, reindex) at a time per index, across processes: a second one waits,
    then finds the photos the first embedded unchanged, so no photo is embedded twice and each
    run's report says what that run did. An advisory lock file beside index.sqlite."""
    store.check_writable()  # a read-only index: one line, not the lock file's PermissionError
    lock = filelock.FileLock(f"{store.path}.ingest-lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        if progress:
            print(f"waiting for another ingest into {store.path} to finish...", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def read_texts(ocr: OcrEngine | None, paths: Sequence[str]) -> list[str | None]:
    """The text `ocr` reads in each photo ("" none), or None: OCR is off, or the photo cannot be decoded
    (embedding it says why)."""
    if ocr is None or not paths:
        return [None] * len(paths)
    return [r.text if not isinstance(r, str) else None for r in ocr.read_many(paths)]


def embed_sources(
    sources: Sequence[tuple[str | None, str | None]],
    embedder: Embedder,
    *,
    batch_size: int = 32,
    ocr: Sequence[str | None] | None = None,
    ocr_vectors: OcrVectors = "fused",
) -> list[np.ndarray | str]:
    """Per (photo path | None, note | None): its (C, D) search vectors, or a reason string when
    the photo cannot be used. Photos are embedded in one batch, falling back to one at a time
    to isolate bad files; notes are chunked and all chunks embedded together. `ocr[i]`, the text
    read in photo i, adds up to MAX_OCR_CHUNKS rows after its own (`ocr_vectors` says how)."""
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
                rows = np.concatenate([rows, *extra[ocr_vectors]])
            out.append(rows)
    return out


@dataclass
class Ingester:
    """What adds to an index: its store, its model (`model`; None when opened without one, which only
    what needs no embedding allows), its OCR engine and sentence encoder (None: off), and how OCR text
    joins a photo's vectors. `Index` makes one per call from its own state."""

    store: Store
    model: Embedder | None
    ocr: OcrEngine | None = None
    meaning: MeaningEncoder | None = None
    ocr_vectors: OcrVectors = "fused"

    @property
    def embedder(self) -> Embedder:
        return need_model(self.store, self.model)

    def embed(
        self, sources: Sequence[tuple[str | None, str | None]], embedder: Embedder | None = None, *,
        batch_size: int = 32, ocr: Sequence[str | None] | None = None,
    ) -> list[np.ndarray | str]:
        """`embed_sources` with this index's `ocr_vectors` and model (or `embedder`)."""
        model = embedder if embedder is not None else self.embedder
        return embed_sources(sources, model, batch_size=batch_size, ocr=ocr, ocr_vectors=self.ocr_vectors)

    def read_texts(self, paths: Sequence[str]) -> list[str | None]:
        return read_texts(self.ocr, paths)

    def fill_meaning(self, keys: Sequence[int] | None = None) -> int:
        """Store the meaning vectors of the photos whose text has none yet (`meaning.py`): those of
        `keys`, or all (one scan of the items)."""
        return meaning_rows.fill(self.store, self.meaning, keys=keys) if self.meaning is not None else 0

    def add_photos(
        self, paths: str | Path | Iterable[str | Path], *, recursive: bool, meta: Mapping[str, Any] | None,
        batch_size: int, progress: bool,
    ) -> IngestReport:
        """`Index.add_photos`."""
        if meta is not None:
            dump_meta(meta)  # fail before any work
        named = [paths] if isinstance(paths, (str, Path)) else list(paths)
        files, problems = list_photos(named, recursive=recursive)
        files = self.not_excluded(files, named)
        report = IngestReport(skipped=[Skip(*p) for p in problems])
        with ingest_lock(self.store, progress):
            self.photos(files, report, meta=meta, batch_size=batch_size, progress=progress)
        return report

    def sync(self, folder: str | Path, *, batch_size: int, progress: bool) -> IngestReport:
        """`Index.sync`."""
        root = Path(abspath(folder))
        if not root.is_dir():
            raise NotADirectoryError(f"{folder}: not a folder")
        with ingest_lock(self.store, progress):
            return self._sync(root, batch_size=batch_size, progress=progress)

    def read_text(self, *, batch_size: int, progress: bool) -> IngestReport:
        """`Index.read_text`."""
        if self.ocr is None:
            raise RuntimeError(f"{self.store.path}: no OCR engine (open the index with a model that ships one, or ocr=True)")
        with ingest_lock(self.store, progress):
            unread = [it.path for it in self.store.all_items(where_sql="WHERE path IS NOT NULL AND ocr IS NULL")]
            report = IngestReport()
            self.photos([p for p in unread if p is not None], report, meta=None, batch_size=batch_size, progress=progress)
        return report

    def _sync(self, root: Path, *, batch_size: int, progress: bool) -> IngestReport:
        files, problems = list_photos(root)
        files = self.not_excluded(files)
        report = IngestReport(skipped=[Skip(*p) for p in problems])
        self.photos(files, report, meta=None, batch_size=batch_size, progress=progress)
        prefix = os.path.join(str(root), "")
        with self.store.lock:
            rows = self.store.conn.execute(
                "SELECT id FROM items WHERE path IS NOT NULL AND substr(path, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()
        gone = [self.store.get(r[0]) for r in rows]
        gone = [it for it in gone if it is not None and it.path and not os.path.exists(it.path)]
        converted = [it for it in gone if it.text is not None]
        vectors = self.embed([(None, it.text) for it in converted], batch_size=batch_size)
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

    def add_note(self, text: str | bytes, *, photo: str | Path | None, meta: Mapping[str, Any] | None) -> str:
        """`Index.add_note`."""
        text = check_note(text, name="note")
        if meta is not None:
            dump_meta(meta)
        if photo is None:
            report = self.add_notes([text], metas=[meta] if meta is not None else None, batch_size=64, progress=False)
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
            (ocr,) = self.read_texts([path])
        (vectors,) = self.embed([(path, text)], ocr=[ocr])
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
        self.fill_meaning()
        return item_id

    def add_notes(
        self, texts: Iterable[str | bytes], *, metas: Sequence[Mapping[str, Any] | None] | None, batch_size: int,
        progress: bool,
    ) -> IngestReport:
        """`Index.add_notes`."""
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
            vectors = self.embed([(None, t) for _, t, _ in batch], batch_size=batch_size)
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

    def not_excluded(self, files: list[str], named: Iterable[str | Path] = ()) -> list[str]:
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

    def photos(
        self, files: list[str], report: IngestReport, *, meta: Mapping[str, Any] | None, batch_size: int,
        progress: bool,
    ) -> None:
        """Add or update the photo `files` into `report`, committing every `batch_size` (the caller holds
        the ingest lock)."""
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
            texts = self.read_texts([p for p, _, _, _ in embed])
            vectors = self.embed(
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
                self.fill_meaning(read)
            bar.update(len(batch))
        bar.close()
        self.fill_meaning()  # photos read before the encoder was at hand (read-text fills them too)

"""Finding items by the words in them: an SQLite FTS5 trigram index over each item's note and the
text read in its photo (OCR), and the rule that merges its matches into the semantic ranking.

The words table (`item_words`, an FTS5 table with the trigram tokenizer, rowid = the item's key)
holds `fold(note + OCR text)`: NFKD-decomposed, combining marks dropped, case-folded, so "Café",
"CAFE" and "cafe" are the same word; and the same without white space (`squeezed`), because OCR
puts spaces where a wide font leaves gaps ("Lemoine -Guest" for "Lemoine-Guest"). Triggers on `items`
keep it in step with every write (the SQL functions `edge_gcl_fold` and `edge_gcl_squeeze`,
registered on each connection by the store).

A query matches an item when every term of `fold(query)` (split on white space) occurs in the
item's folded text, or in its squeezed text, as a substring: "RE16" finds "RE16 TGK", "crème" finds
"CREME BRULEE". Terms of 3 characters or more use the trigram index (`MATCH`). A shorter term ("a",
"on", "B2") must be a whole word of the text (`edge_gcl_word`): as a substring it would be in
nearly every note, and "on cake" would find "lemon cake" (the trigram index cannot look up fewer than
3 characters either). The trigram tokenizer needs SQLite 3.34 or later (`check_sqlite`).

The merge rule (`Index.search`, for a query of words alone):

1. Semantic: every item scored by its vectors as always (cosine + cross-modal offset, max over its
   chunks; a photo's OCR text adds chunks, see `Index`).
2. Lexical: the items whose note or OCR text contains every query term.
3. One list: the lexical matches first, in the order of their semantic scores, then the other
   items by semantic score. A lexical match is kept whatever the cut-off (`min_score`): the words
   are in it. Filters (modalities, metadata, dates) apply to both; `sort="date"` orders the same
   set by date. A hit says which it was (`Hit.matched`: the query's words are in it).
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

FOLD_FUNCTION = "edge_gcl_fold"
SQUEEZE_FUNCTION = "edge_gcl_squeeze"
WORD_FUNCTION = "edge_gcl_word"
MIN_TRIGRAM = 3  # FTS5's trigram tokenizer finds substrings of at least 3 characters
MIN_SQLITE = (3, 34, 0)  # the first SQLite with FTS5's trigram tokenizer

SCHEMA = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS item_words USING fts5(words, squeezed, tokenize = 'trigram')",
    f"""CREATE TRIGGER IF NOT EXISTS items_words_insert AFTER INSERT ON items
        WHEN new.text IS NOT NULL OR new.ocr IS NOT NULL BEGIN
        INSERT INTO item_words (rowid, words, squeezed)
            VALUES (new.key, {FOLD_FUNCTION}(new.text, new.ocr), {SQUEEZE_FUNCTION}(new.text, new.ocr));
    END""",
    """CREATE TRIGGER IF NOT EXISTS items_words_delete AFTER DELETE ON items BEGIN
        DELETE FROM item_words WHERE rowid = old.key;
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS items_words_update AFTER UPDATE OF text, ocr ON items BEGIN
        DELETE FROM item_words WHERE rowid = old.key;
        INSERT INTO item_words (rowid, words, squeezed)
            SELECT new.key, {FOLD_FUNCTION}(new.text, new.ocr), {SQUEEZE_FUNCTION}(new.text, new.ocr)
            WHERE new.text IS NOT NULL OR new.ocr IS NOT NULL;
    END""",
]


def fold(*texts: str | None) -> str:
    """The searchable form of texts: joined by a newline, NFKD, combining marks dropped, case-folded."""
    joined = "\n".join(t for t in texts if t)
    decomposed = unicodedata.normalize("NFKD", joined)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def squeeze(*texts: str | None) -> str:
    """`fold` without white space."""
    return "".join(fold(*texts).split())


@lru_cache(maxsize=256)
def _word_pattern(term: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)" + re.escape(term) + r"(?!\w)")


def has_word(text: str | None, term: str) -> bool:
    """Whether `term` is a whole word of `text` (both folded): not inside a longer word."""
    return bool(text) and _word_pattern(term).search(text) is not None


def check_sqlite(version: str = sqlite3.sqlite_version) -> None:
    """One line where this Python's SQLite has no FTS5 trigram tokenizer (older than 3.34)."""
    found = tuple(int(part) for part in version.split(".")[:3])
    if found < MIN_SQLITE:
        raise RuntimeError(
            f"SQLite {version} (in this Python's sqlite3 module) is older than 3.34, the first with FTS5's "
            f"trigram tokenizer, which an edge-gcl index uses to find words in notes and photos; use a "
            f"Python built with a newer SQLite (Python 3.11 or later from python.org or a current distribution)"
        )


def register(conn: sqlite3.Connection) -> None:
    """Make `edge_gcl_fold`, `edge_gcl_squeeze` (the triggers use them) and `edge_gcl_word` callable
    on this connection."""
    conn.create_function(FOLD_FUNCTION, -1, fold, deterministic=True)
    conn.create_function(SQUEEZE_FUNCTION, -1, squeeze, deterministic=True)
    conn.create_function(WORD_FUNCTION, 2, has_word, deterministic=True)


def migrate(conn: sqlite3.Connection) -> None:
    """Format 2 -> 3: the `ocr` column (NULL: the photo was not read yet), the words table and its
    triggers, filled from the notes already stored. Idempotent."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
    if "ocr" not in columns:
        conn.execute("ALTER TABLE items ADD COLUMN ocr TEXT")
    fresh = not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'item_words'").fetchone()
    for statement in SCHEMA:
        conn.execute(statement)
    if fresh:
        conn.execute(
            f"INSERT INTO item_words (rowid, words, squeezed) SELECT key, {FOLD_FUNCTION}(text, ocr), "
            f"{SQUEEZE_FUNCTION}(text, ocr) FROM items WHERE text IS NOT NULL OR ocr IS NOT NULL"
        )


def terms(query: str) -> list[str]:
    """The folded terms of a query, in order, each once."""
    return list(dict.fromkeys(fold(query).split()))


def matching_keys(conn: sqlite3.Connection, query: str, *, within: Sequence[int] | None = None) -> np.ndarray:
    """Keys of the items whose folded note + OCR text contains every term of `query` (sorted).
    `within`: only among these keys (a modality / metadata / date filter)."""
    found = terms(query)
    if not found:
        return np.zeros(0, np.int64)
    long = [t for t in found if len(t) >= MIN_TRIGRAM]
    short = [t for t in found if len(t) < MIN_TRIGRAM]
    clauses, params = [], []
    if long:
        clauses.append("item_words MATCH ?")
        params.append(" AND ".join('"' + t.replace('"', '""') + '"' for t in long))
    for t in short:  # a whole word: LIKE narrows the rows, the word test decides
        clauses.append(f"words LIKE ? ESCAPE '\\' AND {WORD_FUNCTION}(words, ?)")
        params += ["%" + t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%", t]
    rows = conn.execute(f"SELECT rowid FROM item_words WHERE {' AND '.join(clauses)}", params).fetchall()
    keys = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    if within is not None:
        keys = keys[np.isin(keys, np.asarray(within, np.int64))]
    return np.sort(keys)

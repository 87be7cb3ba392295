"""What items are made of: photo files, their ids, and notes split into chunks.

- a photo: id ``p_`` + 16 hex of SHA-256 of its absolute path (as given; symlinks are not
  resolved). Derived from the path so re-adding or syncing a folder finds the same item again
  with no lookup table, and a re-run of an interrupted ingest never duplicates anything.
- a note: id ``n_`` + 16 hex of SHA-256 of its text (NFC, stripped). A content hash rather than a
  uuid for the same reason: importing the same notes twice (or re-running an import after a
  crash) is idempotent. The same text is one item; notes are immutable (remove + add to edit).

Long notes are split into word windows that fit the text tower's context (measured with the
tokenizer's `count_tokens`), overlapping by a quarter so a phrase across a boundary is whole in
one of them.

A photo's capture time (`capture_time`) is its EXIF DateTimeOriginal, else the file's mtime, as
local wall-clock time 'YYYY-MM-DDTHH:MM:SS' (what the camera shows; EXIF has no time zone).
"""

from __future__ import annotations

import hashlib
import os
import stat
import unicodedata
import warnings
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from .. import transform  # noqa: F401  # registers the HEIC / HEIF opener with Pillow
from ..tokenizer import check_text

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)
FALLBACK_CHUNK_WORDS = 20  # chunk size when the embedder exposes no tokenizer
# A note's length limit. A note is stored as one vector per chunk of the text tower's context
# (~45 chunks per 10,000 characters with MiniLM's 128 tokens); 1 MB of text took 8,696 vectors and
# 5 minutes. Longer texts are refused with a message; split them into several notes.
MAX_NOTE_CHARS = 20_000
CHUNK_OVERLAP = 0.25


def photo_id(path: str | Path) -> str:
    return "p_" + hashlib.sha256(abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def note_id(text: str) -> str:
    key = unicodedata.normalize("NFC", text).strip()
    return "n_" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def abspath(path: str | Path) -> str:
    """Absolute and normalised, symlinks kept (a photo's identity is the path it was added by)."""
    return os.path.abspath(os.fspath(path))


def check_note(text: object, *, name: str = "note") -> str:
    """`tokenizer.check_text` plus the MAX_NOTE_CHARS limit; raises ValueError naming the note."""
    text = check_text(text, name=name)
    if len(text) > MAX_NOTE_CHARS:
        raise ValueError(
            f"{name}: {len(text):,} characters, over the {MAX_NOTE_CHARS:,}-character limit of a note "
            "(split it into several notes)"
        )
    return text


def chunk_note(text: str, tokenizer: Any | None = None, *, overlap: float = CHUNK_OVERLAP) -> list[str]:
    """Split a note into word windows that each fit the text tower's context.

    `tokenizer` is an `edge_gcl.tokenizer.Tokenizer` (`count_tokens`, `context_length`); without
    one, windows are FALLBACK_CHUNK_WORDS words. Consecutive windows overlap by `overlap` of a
    window, so a phrase across a boundary is whole in one of them. A note that fits is one chunk.
    """
    words = text.split()
    if tokenizer is None:
        costs, budget = [1] * len(words), FALLBACK_CHUNK_WORDS
    else:
        if tokenizer.count_tokens(text) <= tokenizer.context_length:
            return [text]
        specials = tokenizer.count_tokens("")
        budget = max(1, tokenizer.context_length - specials)
        costs = [max(1, tokenizer.count_tokens(w) - specials) for w in words]
    if sum(costs) <= budget:
        return [text]
    chunks, i = [], 0
    while i < len(words):
        j, used = i, 0
        while j < len(words) and used + costs[j] <= budget:
            used += costs[j]
            j += 1
        j = max(j, i + 1)  # one word longer than the context: its own (truncated) chunk
        chunks.append(" ".join(words[i:j]))
        if j >= len(words):
            break
        i = max(i + 1, j - int((j - i) * overlap))
    return chunks


# --- photo files -----------------------------------------------------------------------------------


def list_photos(
    paths: str | Path | Iterable[str | Path], *, recursive: bool = True
) -> tuple[list[str], list[tuple[str, str]]]:
    """(absolute photo paths in order without duplicates, [(input, why it was skipped)]).

    Files given by name are taken whatever their extension; folders contribute their files with
    an image extension (hidden files and folders skipped, unreadable folders reported)."""
    skipped: list[tuple[str, str]] = []
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[str] = []
    for given in paths:
        path = abspath(given)
        if os.path.isdir(path):
            if recursive:

                def unreadable(e: OSError) -> None:
                    skipped.append((e.filename, reason(e, e.filename)))

                for root, dirs, names in os.walk(path, onerror=unreadable):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    out += [os.path.join(root, n) for n in sorted(names) if is_image_name(n)]
            else:
                try:
                    names = sorted(os.listdir(path))
                except OSError as e:
                    skipped.append((str(given), reason(e, path)))
                    continue
                out += [
                    os.path.join(path, n)
                    for n in names
                    if is_image_name(n) and not os.path.isdir(os.path.join(path, n))
                ]
        elif os.path.lexists(path):
            out.append(path)
        else:
            skipped.append((str(given), "no such file or folder"))
    return list(dict.fromkeys(out)), skipped


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def stat_photo(path: str) -> os.stat_result | str:
    """The file's stat, or why it cannot be a photo (never opens it: a FIFO would block)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file (or a broken link)"
    except OSError as e:
        return reason(e, path)
    if stat.S_ISDIR(st.st_mode):
        return "is a folder"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return st


def mtime_ns(st: os.stat_result) -> int:
    """A file's mtime in ns as the index stores it: clamped to SQLite's signed 64-bit integers (1677 to 2262).
    ext4 keeps times up to 2446: a photo dated past 2262 must not fail the batch it is in."""
    return max(-(2**63), min(st.st_mtime_ns, 2**63 - 1))


EXIF_IFD = 0x8769
EXIF_DATETIME_ORIGINAL = 0x9003
TAKEN_FORMAT = "%Y-%m-%dT%H:%M:%S"  # written by `taken_text`: zero-padded, so the text sorts as the time does
EXIF_MIN_YEAR = 1800  # an EXIF date before photography is a broken clock or a forged tag: the file's date instead


def taken_text(when: datetime) -> str:
    """'YYYY-MM-DDTHH:MM:SS' with a four-digit year (strftime writes the year 999 as '999', which sorts
    after '2024')."""
    return when.replace(microsecond=0, tzinfo=None).isoformat(timespec="seconds")


def capture_time(path: str, mtime_ns: int) -> tuple[str, str]:
    """(when the photo was taken as 'YYYY-MM-DDTHH:MM:SS', 'exif' | 'mtime'): EXIF DateTimeOriginal
    when the file has a valid one (a year from EXIF_MIN_YEAR on), else `mtime_ns` in local time. Reads the
    header only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a large photo's DecompressionBombWarning: decoding is not ours
            with Image.open(path) as img:
                # a PNG's EXIF after its pixels is only found by decoding them all (Pillow's getexif does): not read
                exif = img.getexif() if img.format != "PNG" or "exif" in img.info else Image.Exif()
                value = exif.get_ifd(EXIF_IFD).get(EXIF_DATETIME_ORIGINAL)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, str):
            taken = datetime.strptime(value.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
            if taken.year >= EXIF_MIN_YEAR:
                return taken_text(taken), "exif"
    except Exception:  # noqa: BLE001 - no EXIF, a broken one, not an image Pillow opens: the file's date
        pass
    try:
        when = datetime.fromtimestamp(mtime_ns / 1e9)
    except (OverflowError, OSError, ValueError):  # past what a datetime holds (year 9999), or before year 1
        when = datetime.max if mtime_ns > 0 else datetime.min
    return taken_text(when), "mtime"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def reason(error: BaseException, name: str | None) -> str:
    """An exception's message without the leading 'name: ' the SDK's errors carry."""
    if isinstance(error, PermissionError):
        return "permission denied"
    message = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    prefix = f"{name}: "
    return message[len(prefix) :] if name and message.startswith(prefix) else message


def printable(name: str) -> str:
    """A file name with undecodable bytes (surrogate escapes) shown as \\x.. escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")

"""Handlers of `edge-gcl index add|sync|note|list|remove|reindex|repair|stats` and `edge-gcl search` (parsers: edge_gcl/cli.py).

`--index` is a folder holding `index.sqlite` (created by the first `index add` / `index note`),
`--model` what `edge_gcl.runtime.load_embedder` accepts; both default as `edge_gcl.locations`
says (the compiled model the main job built, an index in the user's data folder). Commands that
embed print the model and form they run on stderr. Files inside a folder that cannot be added
(corrupt, unreadable, ...) are listed on stderr and do not fail the command; a path named on the
command line that cannot be added does, after the others are added (a typo such as `~/Picturs`
must not look like success, and when no named path exists nothing is created). A bad query, a
missing index or model, a provider/form that cannot run, or a model mismatch fail too (exit
status 1, one line on stderr; a mismatch names both models and the `edge-gcl index reindex`
command that migrates the index).

`search` hides results below the model's relevance cut-off (`--min-score`, default
`default_min_score`: calibrated on the model's dev benchmark, recorded in its manifest) and says
so on stderr; `--all` shows everything. Words typed alone also find the items whose note or photo
text holds them, listed first (`edge_gcl/index/words.py`).

Commands that add photos read the words in them (OCR) with the graphs the artifacts folder ships,
or, for a PyTorch model, the rapidocr wheel's where it is installed; `--no-ocr` turns it off and
`index read-text` reads the photos indexed without it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..locations import default_index, default_model
from ..transform import ImageDecodeError
from .index import Index, IngestReport, check_search_options, default_min_score, modality_of
from .repair import repair
from .sources import MAX_NOTE_CHARS, photo_id, printable
from .store import Item, ModelMismatchError

_ERRORS = (
    OSError,  # a file or folder that cannot be read or written (BrokenPipeError excepted: edge_gcl.cli)
    ValueError,
    TypeError,
    RuntimeError,
    KeyError,
    sqlite3.Error,
)


FLAGS = {"k": "-k", "min_score": "--min-score", "after": "--after", "before": "--before",
         "cross_modal_offset": "--cross-modal-offset"}  # how check_search_options names the options


def _run(body: Callable[[], int | None]) -> int:
    try:
        return int(body() or 0)
    except BrokenPipeError:  # `edge-gcl index list | head`: edge_gcl.cli.main ends quietly
        raise
    except (ModelMismatchError, ImageDecodeError, *_ERRORS) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"edge-gcl: error: {message}", file=sys.stderr)
        return 1


def _open(args: argparse.Namespace, *, model: bool = True, create: bool = False) -> Index:
    folder = args.index or default_index()
    if not model or not create:  # a missing index fails before the model loads
        index = Index.open(folder, model=None, create=create)
        if not model:
            return index
        index.close()
    from ..runtime import describe, load_embedder

    choice = default_model(args.model)
    if create:
        print(f"index: {folder}", file=sys.stderr)
    print(f"loading {choice.spec} ({choice.source})...", file=sys.stderr, flush=True)
    embedder = load_embedder(choice.spec, provider=args.provider, form=args.form)
    print(describe(embedder), file=sys.stderr, flush=True)
    ocr = _ocr(args, embedder)
    try:
        return Index.open(folder, model=embedder, create=create, ocr=ocr)
    except ModelMismatchError as e:  # the exact command: this index, this model
        command = f"edge-gcl index reindex --index {Path(folder)}"  # as Index.open names it
        raise ModelMismatchError(str(e).replace(f"`{command}`", f"`{command} --model {choice.spec}`")) from None


def _ocr(args: argparse.Namespace, embedder: object) -> Any:
    """The OCR engine of a command that adds photos (`edge_gcl.ocr.ocr_for_command`); None for the
    others, and with --no-ocr."""
    if args.command == "search" or not getattr(args, "ocr", True):
        return None
    from ..ocr import ocr_for_command

    return ocr_for_command(embedder, provider=args.provider, form=args.form)


def parse_pairs(pairs: list[str], *, flag: str) -> dict[str, Any]:
    """["album=Trip", "tags=[\"a\",\"b\"]", "year=2024"] -> {"album": "Trip", "tags": [...], "year": 2024}.
    A value that parses as JSON is taken as JSON, anything else as a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _print_report(report: IngestReport) -> None:
    for skip in report.skipped:
        print(terminal_text(f"skipped {skip.input}: {skip.reason}"), file=sys.stderr)
    print(report)


def cli_add(args: argparse.Namespace) -> int:
    missing = [p for p in args.paths if not os.path.lexists(p)]
    if len(missing) == len(args.paths):  # nothing to add: no index created, no model loaded
        print(f"edge-gcl: error: {', '.join(map(printable, missing))}: no such file or folder", file=sys.stderr)
        return 1

    def body() -> int:
        with _open(args, create=True) as index:
            report = index.add_photos(args.paths, recursive=args.recursive, progress=True)
        _print_report(report)
        named = {printable(os.path.abspath(p)) for p in args.paths}  # Skip.input is printable
        return int(any(os.path.abspath(skip.input) in named for skip in report.skipped))

    return _run(body)


def cli_sync(args: argparse.Namespace) -> int:
    def body() -> None:
        with _open(args, create=True) as index:
            _print_report(index.sync(args.dir, progress=True))

    return _run(body)


def read_note(text: str | None, file: str | None) -> str | bytes:
    """The note of `index note`: the argument, standard input (`-`) or `--file` (bytes: UTF-8 is
    checked with the rest). Reads no more than a note may be."""
    if (text is None) == (file is None):
        raise ValueError("index note: give the note's text, - for standard input, or --file PATH (one of them)")
    limit = 4 * MAX_NOTE_CHARS  # bytes: UTF-8 takes at most 4 a character
    if file is None and text != "-":
        return text
    name = f"--file {file}" if file is not None else "standard input"
    if file is not None:
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{name}: not a regular file")
        with open(file, "rb") as f:
            data = f.read(limit + 1)
    else:
        data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{name}: over {limit:,} bytes, longer than a note may be ({MAX_NOTE_CHARS:,} characters)")
    return data


def cli_note(args: argparse.Namespace) -> int:
    def body() -> None:
        meta = parse_pairs(args.meta, flag="--meta") or None
        text = read_note(args.text, args.file)
        with _open(args, create=True) as index:
            print(index.add_note(text, photo=args.photo, meta=meta))

    return _run(body)


def cli_remove(args: argparse.Namespace) -> int:
    def body() -> int:
        with _open(args, model=False) as index:
            ids, missing = [], []
            for given in args.ids:  # an id, else a photo's path (the file may be gone already)
                item_id = given if given in index else photo_id(given)
                (ids if item_id in index else missing).append(item_id if item_id in index else given)
            removed = index.remove(ids)
        for i in missing:
            print(f"not in the index: {i}", file=sys.stderr)
        print(f"removed {removed}")
        return 1 if missing else 0

    return _run(body)


def cli_reindex(args: argparse.Namespace) -> int:
    def body() -> None:
        from ..runtime import describe, load_embedder

        folder = args.index or default_index()
        with Index.open(folder, model=None, create=False) as index:
            choice = default_model(args.model)
            print(f"index: {folder} (model {index.model_name}, {len(index)} items)", file=sys.stderr)
            print(f"loading {choice.spec} ({choice.source})...", file=sys.stderr, flush=True)
            embedder = load_embedder(choice.spec, provider=args.provider, form=args.form)
            print(describe(embedder), file=sys.stderr, flush=True)
            ocr = _ocr(args, embedder)
            _print_report(index.reindex(embedder, progress=True, ocr=ocr if ocr is not None else False))

    return _run(body)


def cli_read_text(args: argparse.Namespace) -> int:
    def body() -> None:
        if not args.ocr:
            raise ValueError("index read-text: reads the words in photos; --no-ocr leaves nothing to do")
        with _open(args) as index:
            if index.ocr is None:
                raise RuntimeError("index read-text: no OCR engine for this model (see above)")
            _print_report(index.read_text(progress=True))

    return _run(body)


def cli_repair(args: argparse.Namespace) -> int:
    def body() -> None:
        from ..locations import NoModelError

        folder = args.index or default_index()
        try:  # needed only for items whose vectors were lost
            model: str | None = default_model(args.model).spec
        except NoModelError:
            model = None
        report = repair(folder, model=model, provider=args.provider, form=args.form, progress=True)
        for lost in report.lost:
            print(f"lost {lost}", file=sys.stderr)
        if report.lost:
            print("photos among what was lost come back with `edge-gcl index add FOLDER`", file=sys.stderr)
        print(report)

    return _run(body)


def modalities(values: list[str] | None) -> list[str] | None:
    """--modality values -> Index filters: none given or "all" among them: no filter."""
    return None if not values or "all" in values else list(dict.fromkeys(values))


def item_to_dict(item: Item) -> dict[str, Any]:
    """An item as `index list --json` prints it (the fields a search hit has, without a score)."""
    d: dict[str, Any] = {"id": item.id, "modality": item.modality}
    if item.path is not None:
        d["path"] = item.path
    if item.taken is not None:
        d["taken"], d["taken_from"] = item.taken, item.taken_from
    if item.text is not None:
        d["text"] = item.text
    if item.ocr:
        d["ocr"] = item.ocr
    if item.meta:
        d["meta"] = item.meta
    return d


# C0 and C1 controls (ESC starts the sequences that recolour, retitle or clear a terminal; CR hides a line) and the
# bidirectional overrides that reorder what follows them
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_text(text: str) -> str:
    """`text` safe to print on a terminal: control characters written as escapes (`\\x1b`), never sent."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}",
                         text)


def _line(what_path: str | None, text: str | None, ocr: str | None = None) -> str:
    """A list or search line's path, note and read-text snippets, terminal-safe (a note's text is anyone's, and
    so are the words in a photo)."""
    what = what_path if what_path is not None else ""
    for part, label in ((text, ""), (ocr, "reads: ")):
        if part:
            snippet = " ".join(part.split())
            what = f"{what}  {label}{snippet[:80]}{'...' if len(snippet) > 80 else ''}".strip()
    return terminal_text(what)


def _when(taken: str | None) -> str:
    return taken[:16].replace("T", " ") if taken else "-"


def _nothing(total: int, args: argparse.Namespace) -> str:
    """Why a search or a listing shows nothing: an empty index, or the filters that left nothing."""
    if not total:
        return "nothing found: the index is empty (edge-gcl index add PHOTOS, edge-gcl index note TEXT)"
    filters = [f"-m {m}" for m in args.modality or [] if m != "all"]
    filters += [f"--{name} {getattr(args, name)}" for name in ("after", "before") if getattr(args, name, None)]
    filters += [f"--where {w}" for w in getattr(args, "where", None) or []]
    if filters:
        return f"nothing found: none of the {total} items matches {' '.join(filters)}"
    return f"nothing found among the {total} items"


def cli_list(args: argparse.Namespace) -> int:
    def body() -> None:
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit {args.limit}: expected a positive number")
        check_search_options(after=args.after, before=args.before, names=FLAGS)
        with _open(args, model=False) as index:
            items = index.items(modalities=modalities(args.modality), after=args.after, before=args.before,
                                limit=args.limit)  # fmt: skip
            total = len(index)
        if not items:  # on stderr: --json stays a clean []
            print(_nothing(total, args), file=sys.stderr)
        if args.json:
            print(json.dumps([item_to_dict(it) for it in items], ensure_ascii=False, indent=2))
            return
        if items:
            print(f"{'id':<18}  {'kind':<10}  {'taken':<16}  photo or note")
        for it in items:
            print(f"{it.id:<18}  {it.modality:<10}  {_when(it.taken):<16}  {_line(it.path, it.text, it.ocr)}")

    return _run(body)


def cli_stats(args: argparse.Namespace) -> int:
    def body() -> None:
        with _open(args, model=False) as index:
            print(json.dumps(index.stats().to_dict(), indent=2))

    return _run(body)


def cli_search(args: argparse.Namespace) -> int:
    def body() -> None:
        if args.query is None and args.image is None:
            raise ValueError("search: give a query text, --image, or both")
        if args.all and args.min_score is not None:
            raise ValueError("search: give --all or --min-score, not both")
        check_search_options(k=args.k, min_score=args.min_score, after=args.after, before=args.before,
                             cross_modal_offset=args.cross_modal_offset, names=FLAGS)  # before the model loads
        where = parse_pairs(args.where, flag="--where") or None
        with _open(args) as index:
            cutoff = None if args.all else args.min_score
            if cutoff is None and not args.all:
                cutoff = default_min_score(index.embedder)
            options: dict[str, Any] = dict(
                k=args.k, modalities=modalities(args.modality), where=where, after=args.after,
                before=args.before, sort=args.sort, approximate=args.approximate,
            )  # fmt: skip
            vector = index.query_vector(args.query, args.image)  # embedded once, searched twice at most
            options.update(query_modality=modality_of(args.query, args.image), cross_modal_offset=args.cross_modal_offset,
                           words=args.query if args.image is None else None)  # fmt: skip
            hits = index.search(vector=vector, min_score=cutoff, **options)
            hidden = 0
            if cutoff is not None and len(hits) < args.k:  # how many the cut-off hid, of the k shown without it
                hidden = len(index.search(vector=vector, **options)) - len(hits)
            total = len(index)
        if hidden:
            print(f"{hidden} result{'s' if hidden > 1 else ''} scoring below the cut-off {cutoff:.3f} hidden "
                  "(--all shows them, --min-score S sets another)", file=sys.stderr)  # fmt: skip
        if not hits and not hidden:  # on stderr: --json stays a clean []
            print(_nothing(total, args), file=sys.stderr)
        if args.json:
            print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
            return
        # cosine: the similarity, in [-1, 1]; score (only where some hit has one that differs): the cosine
        # plus the model's cross-modal offset, what ranks the results and what the cut-off applies to
        offset = any(h.score != h.cosine for h in hits)
        if hits:
            head = "   cosine    score" if offset else "   cosine"
            print(f"{head}  {'kind':<10}  {'taken':<16}  {'id':<18}  photo or note")
        for h in hits:
            score = f"  {h.score:7.4f}" if offset else ""
            mark = "=" if h.matched else "~" if h.meaning else " "  # "=": its note or photo text holds the query's
            # words; "~": the text read in the photo means what they say (lifted, `Index.search`)
            print(f"  {h.cosine:7.4f}{score}{mark} {h.modality:<10}  {_when(h.taken):<16}  {h.id:<18}  "
                  f"{_line(h.path, h.text, h.ocr)}")

    return _run(body)

"""Offline photo and notes search in the browser: index a folder, then serve a page on 127.0.0.1.

    edge-gcl app --photos ../shared/data/flickr8k/images
    edge-gcl app --photos ~/Pictures --provider qnn --port 0

Steps: (1) load the model and open the index, with the CLI's defaults (`edge_gcl.locations`: the
compiled model the main job built, the user's index, so `edge-gcl search` sees what the app
indexed and nothing is embedded twice), (2) mirror the folder into it (`Index.sync`: new photos
embedded, changed ones re-embedded, deleted ones dropped, unusable files skipped and listed),
(3) serve the page (`static/`) and its JSON API with the standard library's `ThreadingHTTPServer`
until Ctrl+C, (4) meanwhile look for changes in the folder every `--poll` seconds and sync them
(a cheap listing of names, sizes and times first; the model runs only when something changed). Nothing leaves the machine: the page loads nothing but its own files (its
Content-Security-Policy forbids anything else, inline code included) and the server only answers
on the loopback interface.

HTTP API (JSON in and out; errors are 4xx with {"error": "..."}):

    GET  /                  the page (static/index.html, app.js, app.css); reads ?q=, ?like=,
                            ?modality=, ?after=, ?before=, ?sort= on load and searches; else shows
                            the gallery of recent photos
    GET  /api/search?q=words[&like=<photo id>][&modality=all|photo|note|photo+note][&k=24]
                    [&after=DATE][&before=DATE][&sort=score|date][&min_score=S]
                            words, an indexed photo (like=: "similar photos", itself left out), or both; hits below
                            min_score (default: the model's calibrated cut-off) are left out and
                            counted in "hidden"; dates as `edge-gcl search --after/--before` takes them
    POST /api/search?...    the same, with a query photo as the raw request body (photo, or photo + q)
    GET  /api/items?[modality=...][&after=DATE][&before=DATE][&limit=60]
                            items newest first (by when taken): the gallery before any search
    DELETE /api/items/<id>  removes an item from the index (the photo file is not touched)
    POST /api/note          {"text": "...", "photo": "<photo id>" (optional), "meta": {...} (optional)}
                            -> 201 {"id", "modality"}; a photo's note replaces the one it had
    POST /api/sync          mirrors the photo folder now -> the `IngestReport` counts
    GET  /api/stats         what the index holds (`IndexStats`), the model's default_min_score, the
                            photo_folder and the last sync
    GET  /thumb/<id>        JPEG thumbnail of an indexed photo (only ids in the index are served)

`create_server(index, host, port)` returns the server without starting it (port 0: any free port),
so tests and other programs can run it in a thread.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..embedding import Embedder
from ..index import (
    Hit,
    Index,
    IngestReport,
    Item,
    ModelMismatchError,
    check_search_options,
    default_min_score,
    modality_of,
)
from ..index.sources import list_photos
from ..locations import default_index, default_model
from ..runtime import describe, load_embedder
from ..transform import ImageDecodeError, decoded

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MODALITY_FILTERS: dict[str, list[str] | None] = {
    "all": None,
    "photo": ["photo"],
    "note": ["note"],
    "photo+note": ["photo+note"],
}
DEFAULT_K = 24
MAX_K = 200
GALLERY_ITEMS = 60  # photos on the page before any search (/api/items's default limit)
MAX_ITEMS = 1000
POLL_S = 10.0  # how often the app looks for new, changed and deleted photos (edge-gcl app --poll)
MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # a query photo (camera JPEGs are a few MB)
MAX_JSON_BYTES = 1024 * 1024  # a note request (its text: at most MAX_NOTE_CHARS characters)
# A query photo's pixel limit, under ingest's 100 MP (transform.MAX_IMAGE_PIXELS): a 48 MP camera
# photo passes; an 81 MP PNG (no reduced-scale decoding) would cost ~630 MB per request. JPEGs decode
# at a reduced DCT scale that still covers QUERY_DRAFT_PX.
QUERY_MAX_PIXELS = 50_000_000
QUERY_DRAFT_PX = 512
THUMB_PX = 320  # longest side of a thumbnail
# decoded at a reduced scale covering this on each side: a 4:3 photo's 320 x 240 (the HEIC thumbnail
# phones embed, read instead of the 12 MP image: 60x faster) still fills a card
THUMB_DRAFT_PX = 240
THUMB_CACHE_ITEMS = 2000  # ~20 KB each: ~40 MB at most
STATIC = {  # route -> (file in static/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class HTTPError(Exception):
    """A request the app refuses; becomes a JSON {"error": message} response with `status`."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- indexing ------------------------------------------------------------------------------------


def static_file(name: str) -> bytes:
    """A file of the page (static/), read from the installed package."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


def build_index(
    photos: str | Path,
    index_dir: str | Path,
    *,
    model: Embedder | str | Path = "default",
    provider: str = "cpu",
    progress: bool = True,
    ocr: Any = "auto",
) -> tuple[Index, IngestReport]:
    """Open (or create) the index at `index_dir` and mirror the folder `photos` into it.

    Unusable files are listed in `report.skipped` and never stop the ingest; `ocr` reads the words
    in the photos (`Index.open`). The caller closes the returned index.
    """
    index = Index.open(Path(index_dir).expanduser(), model=model, provider=provider, ocr=ocr)
    try:
        report = index.sync(Path(photos).expanduser(), progress=progress)
    except BaseException:
        index.close()
        raise
    return index, report


# --- the app: what each endpoint does, independent of HTTP plumbing --------------------------------


class PhotoSearchApp:
    """The endpoints over one open `Index`. Search and note calls run one at a time (they embed
    with the model); thumbnails are served concurrently from an in-memory LRU cache."""

    def __init__(
        self, index: Index, *, photos: str | Path | None = None, thumb_cache_items: int = THUMB_CACHE_ITEMS
    ) -> None:
        self.index = index
        self.photos = Path(photos).expanduser() if photos is not None else None
        self.last_sync: dict[str, Any] | None = None  # {"at", "trigger", "report"} of the last sync
        self._signature: int | None = None  # of the folder as last synced (names, sizes, times)
        self._model_lock = threading.Lock()
        self._thumbs: OrderedDict[tuple[str, str | None], bytes] = OrderedDict()
        self._thumbs_lock = threading.Lock()
        self._thumb_cache_items = thumb_cache_items

    def search(self, params: Mapping[str, str], photo: bytes | None = None) -> dict[str, Any]:
        """`params`: q, like, modality, k (strings, as in a URL); `photo`: the query photo's bytes.

        The query is the words, the photo (uploaded, or the indexed photo `like` names), or both."""
        q = params.get("q", "").strip() or None
        like = params.get("like", "").strip() or None
        modality = _parse_modality(params)
        k = _parse_k(params.get("k", ""))
        filters = _parse_filters(params)
        sort = params.get("sort", "score").strip() or "score"
        if sort not in ("score", "date"):
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"sort {sort!r}: expected score or date")
        min_score = self.default_min_score()
        if params.get("min_score", "").strip():
            try:
                min_score = float(params["min_score"])
            except ValueError:
                min_score = float("nan")
            if not -1.0 <= min_score <= 1.0:
                raise HTTPError(
                    HTTPStatus.BAD_REQUEST, f"min_score {params['min_score']!r}: expected a number from -1 to 1"
                )
        if q is None and photo is None and like is None:
            raise HTTPError(
                HTTPStatus.BAD_REQUEST,
                "empty query: give words (q=...), a photo (POST body or like=), or both",
            )
        if photo is not None and like is not None:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "give one query photo: an upload or like=, not both")
        image: Any = self._photo(like).path if like is not None else None
        started = time.perf_counter()
        # "similar photos" (like=) never shows the photo itself: one more asked for, it left out
        options: dict[str, Any] = dict(k=k + (like is not None), modalities=MODALITY_FILTERS[modality], sort=sort,
                                       query_modality=modality_of(q, photo if photo is not None else image),
                                       words=q if image is None and photo is None else None, **filters)  # fmt: skip

        def found(**cut_off: Any) -> list[Hit]:
            return [h for h in self.index.search(vector=vector, **cut_off, **options) if h.id != like][:k]

        try:
            # the model first, then the upload's decoding memory (transform.decoded, held until it is embedded):
            # a sync holds the model while it decodes, so taking them the other way round could deadlock
            with self._model_lock, contextlib.ExitStack() as upload:
                if photo is not None:
                    image = upload.enter_context(_uploaded(photo))
                vector = self.index.query_vector(q, image)
            hits = found(min_score=min_score)
            hidden = 0
            if min_score is not None and len(hits) < k:  # what the cut-off left out of the k
                hidden = len(found()) - len(hits)
        except (ValueError, TypeError) as e:  # a text the tokenizer refuses, a like= photo now unreadable
            raise HTTPError(HTTPStatus.BAD_REQUEST, str(e)) from None
        query = {"q": q, "photo": photo is not None, "like": like, "modality": modality, "k": k}
        if like is not None:
            query["like_name"] = os.path.basename(image)
        if filters or sort != "score":
            query.update(sort=sort, **filters)
        return {
            "query": query,
            "hits": [hit_to_json(h) for h in hits],
            "min_score": min_score,
            "hidden": hidden,
            "took_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    def default_min_score(self) -> float | None:
        """The model's calibrated relevance cut-off (None: the model has none, nothing is hidden)."""
        return default_min_score(self.index._embedder)  # noqa: SLF001 - None when opened without a model

    def items(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The gallery: items newest first (photos by when taken), filtered like a search; `modality`
        may list several values with commas (the page's gallery: photo,photo+note)."""
        wanted = [_parse_modality({"modality": m}) for m in params.get("modality", "all").split(",")]
        modalities = None if "all" in wanted else list(dict.fromkeys(m for w in wanted for m in MODALITY_FILTERS[w] or []))
        limit_text = params.get("limit", "").strip()
        try:
            limit = int(limit_text) if limit_text else GALLERY_ITEMS
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_ITEMS:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"limit {limit_text!r}: expected a whole number from 1 to {MAX_ITEMS}")
        items = self.index.items(modalities=modalities, limit=limit, **_parse_filters(params))
        return {"items": [item_to_json(it) for it in items], "total": len(self.index)}

    def remove(self, item_id: str) -> dict[str, Any]:
        """Remove an item from the index (never the photo file); 404 when it is not there."""
        if not self.index.remove([item_id]):
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{item_id!r}: no such item in the index")
        with self._thumbs_lock:
            for key in [key for key in self._thumbs if key[0] == item_id]:
                del self._thumbs[key]
        return {"removed": item_id}

    def sync(self, *, trigger: str = "button", only_if_changed: bool = False) -> dict[str, Any] | None:
        """Mirror the photo folder into the index (`Index.sync`); with `only_if_changed`, first compare
        a listing of the folder (names, sizes, modification times) with the last one and do nothing
        when it is the same. Returns the report's counts, or None when nothing was done."""
        if self.photos is None:
            raise HTTPError(HTTPStatus.CONFLICT, "this app was started without a photo folder to sync")
        signature = folder_signature(self.photos)
        if only_if_changed and signature == self._signature:
            return None
        with self._model_lock:
            report = self.index.sync(self.photos, progress=False)
        self._signature = signature
        return self.synced(report, trigger=trigger)

    def synced(self, report: IngestReport, *, trigger: str) -> dict[str, Any]:
        """Record `report` as the last sync (`/api/stats`); also for the sync `edge-gcl app` runs before serving."""
        counts = {name: len(ids) for name, ids in report.to_dict().items()}
        self.last_sync = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "trigger": trigger, "report": counts,
                          "skipped": [{"input": s.input, "reason": s.reason} for s in report.skipped[:20]]}
        return self.last_sync

    def watch(self, poll_s: float, stop: threading.Event) -> None:
        """Until `stop` is set: every `poll_s` seconds, sync the folder if it changed (the thread
        `create_server(..., poll_s=...)` starts). A failure is printed and the watch goes on."""
        if self._signature is None and self.photos is not None:
            self._signature = folder_signature(self.photos)
        while not stop.wait(poll_s):
            try:
                done = self.sync(trigger="poll", only_if_changed=True)
            except Exception as e:  # noqa: BLE001 - the folder went away for a moment, a locked file...
                print(f"edge-gcl app: sync of {self.photos} failed: {e}", file=sys.stderr, flush=True)
                continue
            if done is not None:
                report = ", ".join(f"{k} {v}" for k, v in done["report"].items())
                print(f"{self.photos} changed: {report}", flush=True)

    def add_note(self, body: object) -> dict[str, Any]:
        """`body`: {"text": str, "photo": photo id | None, "meta": dict | None}."""
        if not isinstance(body, dict):
            raise HTTPError(HTTPStatus.BAD_REQUEST, 'expected a JSON object {"text": ..., "photo": ...}')
        unknown = sorted(set(body) - {"text", "photo", "meta"})
        if unknown:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"unknown fields {unknown}: expected text, photo, meta")
        text, photo_id, meta = body.get("text"), body.get("photo"), body.get("meta")
        if not isinstance(text, str) or not text.strip():
            raise HTTPError(HTTPStatus.BAD_REQUEST, "text: the note is empty")
        path = self._photo(photo_id).path if photo_id is not None else None
        try:
            with self._model_lock:
                item_id = self.index.add_note(text, photo=path, meta=meta)
        except (ValueError, TypeError) as e:  # bad meta; ImageDecodeError: the photo file is gone
            raise HTTPError(HTTPStatus.BAD_REQUEST, str(e)) from None
        return {"id": item_id, "modality": self.index[item_id].modality}

    def stats(self) -> dict[str, Any]:
        return {
            **self.index.stats().to_dict(),
            "model_name": self.index.model_name,
            "default_min_score": self.default_min_score(),
            "photo_folder": str(self.photos) if self.photos is not None else None,
            "last_sync": self.last_sync,
        }

    def thumbnail(self, item_id: str) -> bytes:
        """JPEG bytes, longest side THUMB_PX, of a photo in the index (cached by id and content hash).

        The file read is always the path the index stores for `item_id`; a URL never names a file."""
        item = self._photo(item_id)
        assert item.path is not None
        key = (item.id, item.sha256)
        with self._thumbs_lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        try:  # decoded within the process's decoding budget: cold thumbnails at once cannot add up
            with decoded(item.path, draft_size=THUMB_DRAFT_PX) as img:
                img.thumbnail((THUMB_PX, THUMB_PX))
        except ImageDecodeError as e:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{item_id}: photo cannot be read ({e})") from None
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=82)
        data = buf.getvalue()
        with self._thumbs_lock:
            self._thumbs[key] = data
            while len(self._thumbs) > self._thumb_cache_items:
                self._thumbs.popitem(last=False)
        return data

    def _photo(self, item_id: object) -> Item:
        if not isinstance(item_id, str) or item_id not in self.index:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{item_id!r}: no such item in the index")
        item = self.index[item_id]
        if item.path is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{item_id}: a note, not a photo")
        return item


@contextlib.contextmanager
def _uploaded(photo: bytes) -> Iterator[Any]:
    """A query photo's bytes decoded (`transform.decoded`), or a 400 naming what is wrong with it."""
    try:
        with decoded(photo, draft_size=QUERY_DRAFT_PX, max_pixels=QUERY_MAX_PIXELS) as image:
            yield image
            return
    except ImageDecodeError as e:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"uploaded photo: {str(e).removeprefix('<bytes>: ')}") from None


def folder_signature(folder: Path) -> int:
    """A hash of the photo files under `folder` (paths, sizes, modification times): changes when a
    photo is added, changed or deleted. Stats files only, never opens them."""
    files, _ = list_photos(folder)
    entries = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            continue
        entries.append((path, st.st_size, st.st_mtime_ns))
    return hash(tuple(entries))


def item_to_json(item: Item) -> dict[str, Any]:
    """An item as the gallery shows it: what a search hit has, without a score."""
    d: dict[str, Any] = {"id": item.id, "modality": item.modality}
    if item.path is not None:
        d.update(path=item.path, name=os.path.basename(item.path), thumb=f"/thumb/{item.id}")
    if item.taken is not None:
        d["taken"] = item.taken
    if item.text is not None:
        d["text"] = item.text
    if item.ocr:
        d["ocr"] = item.ocr
    return d


def _parse_modality(params: Mapping[str, str]) -> str:
    # a "+" typed in a URL decodes to a space: accept "photo note" for "photo+note"
    modality = params.get("modality", "all").strip().replace(" ", "+") or "all"
    if modality not in MODALITY_FILTERS:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"modality {modality!r}: expected one of {list(MODALITY_FILTERS)}")
    return modality


def _parse_filters(params: Mapping[str, str]) -> dict[str, str]:
    """after= and before= as `Index.search` takes them (checked here: a bad date, or a before= that is not
    after after=, is a 400)."""
    given = {name: params.get(name, "").strip() or None for name in ("after", "before")}
    try:
        after, before = check_search_options(**given)
    except ValueError as e:
        raise HTTPError(HTTPStatus.BAD_REQUEST, str(e)) from None
    return {name: value for name, value in (("after", after), ("before", before)) if value is not None}


def hit_to_json(hit: Hit) -> dict[str, Any]:
    """A search hit as the page uses it: `Hit.to_dict()` plus a display name and thumbnail URL."""
    d = hit.to_dict()
    if hit.path is not None:
        d["name"] = os.path.basename(hit.path)
        d["thumb"] = f"/thumb/{hit.id}"
    return d


def _parse_k(value: str) -> int:
    if not value:
        return DEFAULT_K
    try:
        k = int(value)
    except ValueError:
        k = 0
    if not 1 <= k <= MAX_K:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"k {value!r}: expected a whole number from 1 to {MAX_K}")
    return k


# --- HTTP -----------------------------------------------------------------------------------------


class PhotoSearchServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: PhotoSearchApp, address: tuple[str, int], *, poll_s: float = 0.0) -> None:
        self.app = app
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None
        if poll_s > 0 and app.photos is not None:
            app._signature = folder_signature(app.photos)  # noqa: SLF001 - the folder as synced before serving
            self._watcher = threading.Thread(
                target=app.watch, args=(poll_s, self._stop_watch), name="edge-gcl-watch", daemon=True
            )
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        port = self.server_address[1]
        # Host headers a request may carry: anything else is a DNS-rebinding page, refused
        self.allowed_hosts = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}

    def service_actions(self) -> None:  # serve_forever's loop: start watching once serving
        if self._watcher is not None and not self._watcher.is_alive() and not self._stop_watch.is_set():
            self._watcher.start()

    def server_close(self) -> None:
        self._stop_watch.set()
        if self._watcher is not None and self._watcher.is_alive():
            self._watcher.join(timeout=30)
        super().server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):  # a browser went away
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def create_server(
    index: Index,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    photos: str | Path | None = None,
    poll_s: float = 0.0,
) -> PhotoSearchServer:
    """The app's HTTP server bound to `host:port` (port 0: any free port), not yet serving.

    `photos`: the folder the index mirrors (POST /api/sync, the page's Sync button); with `poll_s`
    > 0 a thread syncs it whenever its listing changes, checking every `poll_s` seconds.

    Run it with `server.serve_forever()` (in a thread if need be), stop it with `server.shutdown()`
    and `server.server_close()`. `host` must be a loopback address: the app serves the photos of
    the index to whoever can reach it, with no authentication.
    """
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"host {host!r}: the app serves local photos without a login, bind it to 127.0.0.1")
    return PhotoSearchServer(PhotoSearchApp(index, photos=photos), (host, port), poll_s=poll_s)


class _Handler(BaseHTTPRequestHandler):
    server: PhotoSearchServer
    protocol_version = "HTTP/1.1"  # keep-alive: a results grid fetches many thumbnails

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        try:
            body = self._read_body() if method in ("POST", "DELETE") else b""
            self._check_origin(method)
            self._route(method, body)
        except HTTPError as e:
            self._send_json(e.status, {"error": e.message})
        except Exception:  # noqa: BLE001 - one bad request must not take the server down
            traceback.print_exc()
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (see the server's terminal)"}
            )

    def _route(self, method: str, body: bytes) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        route = url.path
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if method == "GET" and route in STATIC:
            name, content_type = STATIC[route]
            self._send(HTTPStatus.OK, static_file(name), content_type, {"Cache-Control": "no-cache"})
        elif route == "/api/search" and method in ("GET", "POST"):
            if method == "POST" and self.headers.get_content_type().startswith("multipart/"):
                raise HTTPError(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    "send the photo's bytes as the request body, not a form",
                )
            self._send_json(HTTPStatus.OK, app.search(params, photo=body or None))
        elif route == "/api/note" and method == "POST":
            if self.headers.get_content_type() != "application/json":
                raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the note as application/json")
            try:
                note = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise HTTPError(HTTPStatus.BAD_REQUEST, f"request body: not JSON ({e})") from None
            except RecursionError:  # [[[[...]]]] a hundred thousand deep: the parser's stack, not ours
                raise HTTPError(HTTPStatus.BAD_REQUEST, "request body: JSON nested too deeply") from None
            self._send_json(HTTPStatus.CREATED, app.add_note(note))
        elif route == "/api/stats" and method == "GET":
            self._send_json(HTTPStatus.OK, app.stats())
        elif route == "/api/items" and method == "GET":
            self._send_json(HTTPStatus.OK, app.items(params))
        elif route.startswith("/api/items/") and method == "DELETE":
            self._send_json(HTTPStatus.OK, app.remove(unquote(route.removeprefix("/api/items/"))))
        elif route == "/api/sync" and method == "POST":
            self._send_json(HTTPStatus.OK, app.sync(trigger="button"))
        elif route.startswith("/thumb/") and method == "GET":
            data = app.thumbnail(unquote(route.removeprefix("/thumb/")))
            self._send(HTTPStatus.OK, data, "image/jpeg", {"Cache-Control": "private, max-age=600"})
        elif route == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        elif route in (*STATIC, "/api/search", "/api/note", "/api/stats", "/api/items", "/api/sync") or (
            route.startswith(("/thumb/", "/api/items/"))
        ):
            raise HTTPError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} {route}: method not allowed")
        else:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{route}: not found")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise HTTPError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length (no chunked uploads)")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        limit = MAX_JSON_BYTES if urlsplit(self.path).path == "/api/note" else MAX_UPLOAD_BYTES
        if length < 0 or length > limit:
            self.close_connection = True  # the unread body must not be parsed as the next request
            raise HTTPError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {length} bytes: at most {limit} accepted",
            )
        return self.rfile.read(length)

    def _check_origin(self, method: str) -> None:
        host = (self.headers.get("Host") or "").lower()
        if host and host not in self.server.allowed_hosts:
            raise HTTPError(
                HTTPStatus.FORBIDDEN, f"Host {host!r}: this app only answers on {self.server.url}"
            )
        origin = self.headers.get("Origin")
        if (
            method in ("POST", "DELETE")
            and origin
            and origin.removeprefix("http://").lower() not in self.server.allowed_hosts
        ):
            raise HTTPError(HTTPStatus.FORBIDDEN, f"Origin {origin!r}: requests from other sites are refused")

    def _send_json(self, status: HTTPStatus, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self._send(status, data, "application/json; charset=utf-8", {"Cache-Control": "no-store"})

    def _send(
        self, status: HTTPStatus, data: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", CSP)
        # another site may not load our answers (a thumbnail's 200 or 404 would tell it a path is indexed: ids
        # are hashes of paths), keep a window on us, or learn our URLs from a Referer
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: the terminal shows progress
        pass


# --- command line (`edge-gcl app`; its options are in edge_gcl/cli.py) --------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edge_gcl.app ...`, the same as `edge-gcl app ...`."""
    from ..cli import build_parser

    return cli_app(build_parser().parse_args(["app", *(sys.argv[1:] if argv is None else argv)]))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cli_app(args: argparse.Namespace) -> int:
    photos = os.path.expanduser(args.photos)
    if not os.path.isdir(photos):
        print(f"edge-gcl app: error: --photos {args.photos}: not a folder", file=sys.stderr)
        return 1
    if not 0 <= args.port <= 65535:  # before indexing anything
        print(f"edge-gcl app: error: --port {args.port}: expected 0 to 65535 (0: any free port)", file=sys.stderr)
        return 1
    index_dir = Path(args.index).expanduser() if args.index else default_index()
    if threading.current_thread() is threading.main_thread():  # `kill PID` (SIGTERM) stops it like Ctrl+C:
        signal.signal(signal.SIGTERM, _interrupt)  # the index is closed, its caches saved
    try:
        choice = default_model(args.model)
        print(f"index: {index_dir}\nloading {choice.spec} ({choice.source})...", flush=True)
        embedder = load_embedder(choice.spec, provider=args.provider, form=args.form)
        print(describe(embedder), flush=True)
        from ..ocr import ocr_for_command

        ocr = ocr_for_command(embedder, provider=args.provider, form=args.form) if getattr(args, "ocr", True) else False
        try:
            index, report = build_index(photos, index_dir, model=embedder, ocr=ocr if ocr is not None else False)
        except ModelMismatchError:
            if not args.reindex:
                raise
            print(f"re-embedding the index with {embedder.model_id} (notes are kept)", flush=True)
            with Index.open(index_dir) as old:
                old.reindex(embedder, ocr=ocr if ocr is not None else False)
            index, report = build_index(photos, index_dir, model=embedder, ocr=ocr if ocr is not None else False)
    except ModelMismatchError as e:
        print(f"edge-gcl app: error: {e} (--reindex re-embeds it with this model)", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error, ValueError, RuntimeError) as e:
        print(f"edge-gcl app: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (photos indexed so far are kept)", file=sys.stderr)
        return 130
    with index:
        for skip in report.skipped:
            print(f"skipped {skip.input}: {skip.reason}", file=sys.stderr)
        print(f"{args.photos}: {report}; the index holds {len(index)} items")
        try:
            server = create_server(index, "127.0.0.1", args.port, photos=photos, poll_s=args.poll)
        except OSError as e:
            print(f"edge-gcl app: error: port {args.port}: {e.strerror} (try --port 0)", file=sys.stderr)
            return 1
        server.app.synced(report, trigger="start-up")
        try:  # the line inside: Ctrl+C or SIGTERM right after it still stops cleanly
            print(f"open {server.url} in a browser (Ctrl+C stops)", flush=True)
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped")
        finally:
            server.server_close()
    return 0

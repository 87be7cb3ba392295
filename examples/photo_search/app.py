"""Offline photo and notes search in the browser: index a folder, then serve a page on 127.0.0.1.

    python -m examples.photo_search.app --photos ../shared/data/flickr8k/images
    python examples/photo_search/app.py --photos ~/Pictures --model artifacts/ --port 0

Steps: (1) open the index (default: a cache folder per photo folder and model), (2) mirror the
folder into it (`Index.sync`: new photos embedded, changed ones re-embedded, deleted ones dropped,
unusable files skipped and listed), (3) serve the page and its JSON API with the standard library's
`ThreadingHTTPServer` until Ctrl+C. Nothing leaves the machine: the page loads no external resource
(its Content-Security-Policy forbids it) and the server only answers on the loopback interface.

HTTP API (JSON in and out; errors are 4xx with {"error": "..."}):

    GET  /                  the page; reads ?q=, ?like= and ?modality= on load and searches
    GET  /api/search?q=words[&like=<photo id>][&modality=all|photo|note|photo+note][&k=24]
                            words, an indexed photo (like=: "more like this"), or both
    POST /api/search?...    the same, with a query photo as the raw request body (photo, or photo + q)
    POST /api/note          {"text": "...", "photo": "<photo id>" (optional), "meta": {...} (optional)}
                            -> 201 {"id", "modality"}; a photo's note replaces the one it had
    GET  /api/stats         what the index holds (`IndexStats`)
    GET  /thumb/<id>        JPEG thumbnail of an indexed photo (only ids in the index are served)

`create_server(index, host, port)` returns the server without starting it (port 0: any free port),
so tests and other programs can run it in a thread.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import socket
import sqlite3
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

if __package__ in (None, ""):  # run as a script: python examples/photo_search/app.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_gcl.embedding import Embedder
from edge_gcl.index import Hit, Index, IngestReport, Item, ModelMismatchError
from edge_gcl.runtime import load_embedder
from edge_gcl.transform import ImageDecodeError, load_image

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MODALITY_FILTERS: dict[str, list[str] | None] = {
    "all": None,
    "photo": ["photo"],
    "note": ["note"],
    "photo+note": ["photo+note"],
}
DEFAULT_K = 24
MAX_K = 200
MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # a query photo (camera JPEGs are a few MB)
MAX_JSON_BYTES = 1024 * 1024  # a note request
THUMB_PX = 320  # longest side of a thumbnail
THUMB_CACHE_ITEMS = 2000  # ~20 KB each: ~40 MB at most
CACHE_DIR = Path.home() / ".cache" / "edge-gcl" / "photo-search"


class HTTPError(Exception):
    """A request the app refuses; becomes a JSON {"error": message} response with `status`."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- indexing ------------------------------------------------------------------------------------


def default_index_dir(photos: str | Path, model: str) -> Path:
    """A cache folder per (photo folder, model spec): switching either never mixes indexes."""
    folder = os.path.abspath(os.fspath(photos))
    digest = hashlib.sha256(f"{folder}\0{model}".encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return CACHE_DIR / f"{Path(folder).name or 'root'}-{digest}"


def build_index(
    photos: str | Path,
    index_dir: str | Path,
    *,
    model: Embedder | str | Path = "default",
    provider: str = "cpu",
    progress: bool = True,
) -> tuple[Index, IngestReport]:
    """Open (or create) the index at `index_dir` and mirror the folder `photos` into it.

    Unusable files are listed in `report.skipped` and never stop the ingest. The caller closes
    the returned index.
    """
    index = Index.open(Path(index_dir).expanduser(), model=model, provider=provider)
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

    def __init__(self, index: Index, *, thumb_cache_items: int = THUMB_CACHE_ITEMS) -> None:
        self.index = index
        self._model_lock = threading.Lock()
        self._thumbs: OrderedDict[tuple[str, str | None], bytes] = OrderedDict()
        self._thumbs_lock = threading.Lock()
        self._thumb_cache_items = thumb_cache_items

    def search(self, params: Mapping[str, str], photo: bytes | None = None) -> dict[str, Any]:
        """`params`: q, like, modality, k (strings, as in a URL); `photo`: the query photo's bytes.

        The query is the words, the photo (uploaded, or the indexed photo `like` names), or both."""
        q = params.get("q", "").strip() or None
        like = params.get("like", "").strip() or None
        # a "+" typed in a URL decodes to a space: accept "photo note" for "photo+note"
        modality = params.get("modality", "all").strip().replace(" ", "+") or "all"
        if modality not in MODALITY_FILTERS:
            raise HTTPError(
                HTTPStatus.BAD_REQUEST, f"modality {modality!r}: expected one of {list(MODALITY_FILTERS)}"
            )
        k = _parse_k(params.get("k", ""))
        if q is None and photo is None and like is None:
            raise HTTPError(
                HTTPStatus.BAD_REQUEST,
                "empty query: give words (q=...), a photo (POST body or like=), or both",
            )
        if photo is not None and like is not None:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "give one query photo: an upload or like=, not both")
        image: Any = self._photo(like).path if like is not None else None
        if photo is not None:
            try:
                image = load_image(photo)
            except ImageDecodeError as e:
                raise HTTPError(
                    HTTPStatus.BAD_REQUEST, f"uploaded photo: {str(e).removeprefix('<bytes>: ')}"
                ) from None
        started = time.perf_counter()
        try:
            with self._model_lock:
                hits = self.index.search(q, image, k=k, modalities=MODALITY_FILTERS[modality])
        except (ValueError, TypeError) as e:  # a text the tokenizer refuses, a like= photo now unreadable
            raise HTTPError(HTTPStatus.BAD_REQUEST, str(e)) from None
        return {
            "query": {"q": q, "photo": photo is not None, "like": like, "modality": modality, "k": k},
            "hits": [hit_to_json(h) for h in hits],
            "took_ms": round((time.perf_counter() - started) * 1000, 1),
        }

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
        return self.index.stats().to_dict()

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
        try:
            img = load_image(item.path, draft_size=THUMB_PX)
        except ImageDecodeError as e:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{item_id}: photo cannot be read ({e})") from None
        img.thumbnail((THUMB_PX, THUMB_PX))
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

    def __init__(self, app: PhotoSearchApp, address: tuple[str, int]) -> None:
        self.app = app
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        port = self.server_address[1]
        # Host headers a request may carry: anything else is a DNS-rebinding page, refused
        self.allowed_hosts = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):  # a browser went away
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def create_server(index: Index, host: str = "127.0.0.1", port: int = 8765) -> PhotoSearchServer:
    """The app's HTTP server bound to `host:port` (port 0: any free port), not yet serving.

    Run it with `server.serve_forever()` (in a thread if need be), stop it with `server.shutdown()`
    and `server.server_close()`. `host` must be a loopback address: the app serves the photos of
    the index to whoever can reach it, with no authentication.
    """
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"host {host!r}: the app serves local photos without a login, bind it to 127.0.0.1")
    return PhotoSearchServer(PhotoSearchApp(index), (host, port))


class _Handler(BaseHTTPRequestHandler):
    server: PhotoSearchServer
    protocol_version = "HTTP/1.1"  # keep-alive: a results grid fetches many thumbnails

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _handle(self, method: str) -> None:
        try:
            body = self._read_body() if method == "POST" else b""
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
        if method == "GET" and route == "/":
            self._send(
                HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8", {"Content-Security-Policy": CSP}
            )
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
            self._send_json(HTTPStatus.CREATED, app.add_note(note))
        elif route == "/api/stats" and method == "GET":
            self._send_json(HTTPStatus.OK, app.stats())
        elif route.startswith("/thumb/") and method == "GET":
            data = app.thumbnail(unquote(route.removeprefix("/thumb/")))
            self._send(HTTPStatus.OK, data, "image/jpeg", {"Cache-Control": "private, max-age=600"})
        elif route == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        elif route in ("/", "/api/search", "/api/note", "/api/stats") or route.startswith("/thumb/"):
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
            method == "POST"
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
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: the terminal shows progress
        pass


# --- the page: plain HTML + CSS + JS, no external resource ---------------------------------------

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' blob:; connect-src 'self'; form-action 'self'; base-uri 'none'"
)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Photo search · edge-gcl</title>
<style>
  :root { --fg: #1d2329; --muted: #68737d; --line: #dde2e6; --bg: #f5f6f7; --accent: #2457c5;
          --note: #fff7d6; --error: #b3261e; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  * { box-sizing: border-box; }
  body { margin: 0; color: var(--fg); background: var(--bg); font-size: 15px; }
  header { display: flex; align-items: baseline; gap: 16px; padding: 14px 24px; background: #fff;
           border-bottom: 1px solid var(--line); }
  header h1 { font-size: 18px; margin: 0; }
  header #stats { color: var(--muted); font-size: 13px; margin-left: auto; }
  .layout { display: grid; grid-template-columns: minmax(0, 1fr) 300px; gap: 20px; padding: 18px 24px; }
  @media (max-width: 820px) { .layout { grid-template-columns: 1fr; } #note-panel { position: static; } }
  form#search { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
  input[type=search], select, textarea { font: inherit; border: 1px solid var(--line); border-radius: 8px;
           padding: 8px 10px; background: #fff; color: inherit; }
  input[type=search] { flex: 1 1 260px; min-width: 0; }
  button, .button { font: inherit; border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px;
           background: #fff; color: inherit; cursor: pointer; }
  button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
  .chip { display: inline-flex; align-items: center; gap: 8px; padding: 4px 6px 4px 4px; border-radius: 8px;
          background: #fff; border: 1px solid var(--line); font-size: 13px; max-width: 100%; }
  .chip img { width: 36px; height: 36px; object-fit: cover; border-radius: 6px; }
  .chip button { border: 0; padding: 2px 6px; color: var(--muted); }
  #query-photo { margin-top: 8px; }
  #status { min-height: 20px; margin: 12px 0; color: var(--muted); font-size: 13px; }
  .error { color: var(--error) !important; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 14px; }
  .card { background: #fff; border: 1px solid var(--line); border-radius: 10px; overflow: hidden;
          display: flex; flex-direction: column; }
  .thumb { width: 100%; aspect-ratio: 4 / 3; object-fit: cover; display: block; background: #e9ecef; }
  .note-thumb { padding: 12px; background: var(--note); font-size: 14px; line-height: 1.35; overflow: hidden;
                display: -webkit-box; -webkit-line-clamp: 6; -webkit-box-orient: vertical; white-space: pre-wrap; }
  .body { padding: 8px 10px 10px; display: flex; flex-direction: column; gap: 4px; flex: 1; }
  .row { display: flex; align-items: center; justify-content: space-between; gap: 6px; }
  .badge { font-size: 11px; font-weight: 600; padding: 2px 7px; border-radius: 99px; background: #e8eefb;
           color: var(--accent); text-transform: uppercase; letter-spacing: .03em; white-space: nowrap; }
  .badge.note { background: #fbf0c4; color: #7a5c00; }
  .badge.photo-note { background: #e2f3e8; color: #1e6b3a; }
  .score { font-variant-numeric: tabular-nums; font-size: 13px; color: var(--muted); }
  .name { font-size: 13px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
  .note-text { margin: 0; font-size: 13px; background: var(--note); padding: 6px 8px; border-radius: 6px;
                white-space: pre-wrap; overflow-wrap: anywhere; }
  .actions { margin-top: auto; display: flex; gap: 12px; padding-top: 4px; }
  .link { border: 0; padding: 0; background: none; color: var(--accent); font-size: 13px; }
  .empty { color: var(--muted); grid-column: 1 / -1; padding: 30px 0; text-align: center; }
  #note-panel { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px;
                align-self: start; position: sticky; top: 18px; }
  #note-panel h2 { font-size: 15px; margin: 0 0 10px; }
  #note-panel form { display: flex; flex-direction: column; gap: 8px; }
  #note-panel textarea { min-height: 96px; resize: vertical; }
  #note-panel .hint, #note-status { color: var(--muted); font-size: 12px; margin: 0; }
</style>
</head>
<body>
<header><h1>Photo search</h1><span>offline · edge-gcl</span><span id="stats"></span></header>
<div class="layout">
  <main>
    <form id="search" autocomplete="off">
      <input id="q" type="search" name="q" placeholder="Describe a photo or a note, e.g. dog on the beach"
             aria-label="Search words" autofocus>
      <label class="button" title="Search with a photo (add words to refine)">Photo…
        <input id="photo" type="file" accept="image/*" hidden></label>
      <select id="modality" name="modality" aria-label="What to search">
        <option value="all">All</option>
        <option value="photo">Photos</option>
        <option value="note">Notes</option>
        <option value="photo+note">Photo + note</option>
      </select>
      <button class="primary" type="submit">Search</button>
    </form>
    <div id="query-photo" hidden><span class="chip"><img id="query-photo-img" alt="">
      <span id="query-photo-name"></span><button type="button" id="query-photo-clear"
      title="Search without this photo">✕</button></span></div>
    <div id="status"></div>
    <section id="results" aria-live="polite"></section>
  </main>
  <aside id="note-panel">
    <h2>Add a note</h2>
    <form id="note-form">
      <div id="attach" hidden><span class="chip"><img id="attach-img" alt="">
        <span id="attach-name"></span><button type="button" id="attach-clear" title="Save as a separate note">✕</button>
      </span></div>
      <textarea id="note-text" placeholder="e.g. passport renewal receipt, or what is in a photo"
                aria-label="Note text"></textarea>
      <p class="hint" id="attach-hint">A note on its own, or use “Add note” on a photo to attach it.</p>
      <button class="primary" type="submit">Save note</button>
      <p id="note-status"></p>
    </form>
  </aside>
</div>
<script>
"use strict";
const $ = (selector) => document.querySelector(selector);
const LABELS = {"photo": "photo", "note": "note", "photo+note": "photo + note"};
// the query photo is an upload (photo: File) or an indexed photo (like: {id, name}), never both
const state = {photo: null, photoUrl: null, like: null, attach: null, searched: false};

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

async function api(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

function setStatus(node, text, isError) {
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

async function loadStats() {
  try {
    const s = await api("/api/stats");
    $("#stats").textContent =
      `${s.photos + s.photo_notes} photos · ${s.notes + s.photo_notes} notes · model ${s.model_id}`;
  } catch (error) { $("#stats").textContent = error.message; }
}

async function search(event) {
  if (event) event.preventDefault();
  const q = $("#q").value.trim();
  const modality = $("#modality").value;
  if (!q && !state.photo && !state.like) {
    setStatus($("#status"), "Type a few words, add a photo, or both.", true);
    return;
  }
  const shown = new URLSearchParams();
  if (q) shown.set("q", q);
  if (state.like) shown.set("like", state.like.id);
  if (modality !== "all") shown.set("modality", modality);
  history.replaceState(null, "", shown.toString() ? "?" + shown : location.pathname);
  const params = new URLSearchParams(shown);
  params.set("modality", modality);
  setStatus($("#status"), "Searching…");
  try {
    const data = state.photo
      ? await api("/api/search?" + params, {method: "POST", body: state.photo,
                  headers: {"Content-Type": state.photo.type || "application/octet-stream"}})
      : await api("/api/search?" + params);
    state.searched = true;
    render(data.hits);
    const same = state.like && data.hits.find((hit) => hit.id === state.like.id);
    if (same) { state.like.name = same.name; showQueryPhoto(); }
    const what = [q && `“${q}”`, state.photo && "your photo", state.like && `photos like ${state.like.name}`]
      .filter(Boolean).join(" + ");
    const n = data.hits.length;
    setStatus($("#status"), `${n} result${n === 1 ? "" : "s"} for ${what} · ${data.took_ms} ms`);
  } catch (error) {
    render([]);
    setStatus($("#status"), error.message, true);
  }
}

function render(hits) {
  const grid = $("#results");
  if (!hits.length) { grid.replaceChildren(el("p", {className: "empty", textContent: "Nothing found."})); return; }
  grid.replaceChildren(...hits.map(card));
}

function card(hit) {
  const isPhoto = Boolean(hit.thumb);
  const visual = isPhoto
    ? el("img", {className: "thumb", src: hit.thumb, alt: hit.name, loading: "lazy"})
    : el("div", {className: "thumb note-thumb", textContent: hit.text});
  const badge = {"photo": "badge", "note": "badge note", "photo+note": "badge photo-note"}[hit.modality];
  return el("article", {className: "card", "data-id": hit.id, "data-modality": hit.modality},
    visual,
    el("div", {className: "body"},
      el("div", {className: "row"},
        el("span", {className: badge, textContent: LABELS[hit.modality] || hit.modality}),
        el("span", {className: "score", title: "cosine similarity", textContent: hit.score.toFixed(3)})),
      isPhoto && el("div", {className: "name", title: hit.path, textContent: hit.name}),
      isPhoto && hit.text && el("p", {className: "note-text", textContent: hit.text}),
      isPhoto && el("div", {className: "actions"},
        el("button", {type: "button", className: "link", textContent: hit.text ? "Edit note" : "Add note",
                      onclick: () => attachTo(hit)}),
        el("button", {type: "button", className: "link", textContent: "Similar",
                      onclick: () => searchLike(hit)}))));
}

function setQueryPhoto(file, like) {
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photo = file;
  state.photoUrl = file ? URL.createObjectURL(file) : null;
  state.like = like;
  if (!file) $("#photo").value = "";
  showQueryPhoto();
}

function showQueryPhoto() {
  const src = state.photoUrl || (state.like && "/thumb/" + encodeURIComponent(state.like.id));
  $("#query-photo").hidden = !src;
  if (!src) return;
  $("#query-photo-img").src = src;
  $("#query-photo-name").textContent = state.photo ? (state.photo.name || "your photo") : `like ${state.like.name}`;
}

function searchLike(hit) {
  setQueryPhoto(null, {id: hit.id, name: hit.name});
  $("#q").value = "";
  search();
}

function attachTo(hit) {
  state.attach = hit;
  $("#attach-img").src = hit.thumb;
  $("#attach-name").textContent = hit.name;
  $("#attach").hidden = false;
  $("#attach-hint").textContent = "Saving replaces this photo’s note.";
  $("#note-text").value = hit.text || "";
  $("#note-panel").scrollIntoView({block: "nearest"});
  $("#note-text").focus();
}

function detach() {
  state.attach = null;
  $("#attach").hidden = true;
  $("#attach-hint").textContent = "A note on its own, or use “Add note” on a photo to attach it.";
}

async function saveNote(event) {
  event.preventDefault();
  const body = {text: $("#note-text").value};
  if (state.attach) body.photo = state.attach.id;
  try {
    const saved = await api("/api/note", {method: "POST", headers: {"Content-Type": "application/json"},
                                          body: JSON.stringify(body)});
    $("#note-text").value = "";
    detach();
    setStatus($("#note-status"), `Saved (${LABELS[saved.modality]}).`);
    loadStats();
    if (state.searched) search();
  } catch (error) { setStatus($("#note-status"), error.message, true); }
}

$("#search").addEventListener("submit", search);
$("#search").addEventListener("dragover", (event) => event.preventDefault());
$("#search").addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) { setQueryPhoto(file, null); search(); }
});
$("#photo").addEventListener("change", () => {
  const file = $("#photo").files[0];
  if (file) { setQueryPhoto(file, null); search(); }
});
$("#query-photo-clear").addEventListener("click", () => setQueryPhoto(null, null));
$("#attach-clear").addEventListener("click", detach);
$("#note-form").addEventListener("submit", saveNote);

const initial = new URLSearchParams(location.search);
$("#q").value = initial.get("q") || "";
const wanted = initial.get("modality");
if (wanted && [...$("#modality").options].some((o) => o.value === wanted)) $("#modality").value = wanted;
if (initial.get("like")) setQueryPhoto(null, {id: initial.get("like"), name: "this photo"});
loadStats();
if ($("#q").value.trim() || state.like) search();
else setStatus($("#status"), "Search by words, by a photo, or both. Everything runs on this machine.");
</script>
</body>
</html>
"""


# --- command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m examples.photo_search.app",
        description="Index a photo folder, then search it (and your notes) offline in the browser.",
    )
    p.add_argument("--photos", required=True, metavar="DIR", help="folder of photos (searched recursively)")
    p.add_argument(
        "--index", metavar="DIR", help=f"index folder (default: one per photo folder in {CACHE_DIR})"
    )
    p.add_argument("--model", default="default", help="model name, checkpoint folder or artifacts folder")
    p.add_argument("--provider", choices=["cpu", "qnn"], default="cpu", help="for an artifacts folder")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    photos = os.path.expanduser(args.photos)
    if not os.path.isdir(photos):
        print(f"photo_search: error: --photos {args.photos}: not a folder", file=sys.stderr)
        return 1
    index_dir = Path(args.index) if args.index else default_index_dir(photos, args.model)
    print(f"index: {index_dir}\nmodel: {args.model} (loading...)", flush=True)
    try:
        embedder = load_embedder(args.model, provider=args.provider)
        try:
            index, report = build_index(photos, index_dir, model=embedder)
        except ModelMismatchError:
            if args.index:  # the user's own index: theirs to migrate
                raise
            # the app's cache, built with other weights (e.g. a retrained default): migrate, keeping notes
            print(
                f"the cached index is from other weights; re-embedding it with {embedder.model_id} (notes are kept)"
            )
            with Index.open(index_dir) as old:
                old.reindex(embedder)
            index, report = build_index(photos, index_dir, model=embedder)
    except (OSError, sqlite3.Error, ModelMismatchError, ValueError, RuntimeError) as e:
        print(f"photo_search: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (photos indexed so far are kept)", file=sys.stderr)
        return 130
    with index:
        for skip in report.skipped:
            print(f"skipped {skip.input}: {skip.reason}", file=sys.stderr)
        print(f"{args.photos}: {report}; the index holds {len(index)} items")
        try:
            server = create_server(index, "127.0.0.1", args.port)
        except OSError as e:
            print(f"photo_search: error: port {args.port}: {e.strerror} (try --port 0)", file=sys.stderr)
            return 1
        print(f"open {server.url} in a browser (Ctrl+C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped")
        finally:
            server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The photo app (edge_gcl/app, `edge-gcl app`): its HTTP API and its page in a real browser.

`ColorEmbedder` (deterministic, torch-free) stands in for a model so results can be predicted: a
photo is its mean colour, a text is the colours it names plus one hashed dimension per word. So
"red" finds the red photo, and a query photo finds the photo of the same colour with score 1.
The browser test drives Debian's `chromium` headless against the server on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edge_gcl.app.server import THUMB_PX, build_index, create_server
from edge_gcl.embedding import Embedder, l2_normalize
from edge_gcl.index import Index, note_id, photo_id
from edge_gcl.tokenizer import check_text
from edge_gcl.transform import load_image

pytestmark = pytest.mark.runtime  # runs in the torch-free install too (tests/test_runtime_install.py)

CHROMIUM = Path("/usr/bin/chromium")
# The browser tests skip without it, except under CI, where a skipped `browser` test fails (conftest.py)
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="needs /usr/bin/chromium (Debian: sudo apt-get install -y chromium)")
COLORS = {"red": (220, 40, 40), "green": (40, 160, 70), "blue": (40, 70, 220), "yellow": (240, 205, 40)}
PASSPORT = "passport renewal receipt"
PICNIC = "birthday picnic in the park"


class ColorEmbedder:
    model_id = "fake-color@1"
    embed_dim = 16

    def embed_images(self, images: Sequence, *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(images), self.embed_dim), np.float32)
        for i, x in enumerate(images):
            out[i, :3] = np.asarray(load_image(x), np.float32).reshape(-1, 3).mean(0) / 255.0 - 0.5
        return l2_normalize(out)

    def embed_texts(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.embed_dim), np.float32)
        for i, t in enumerate(texts):
            for word in check_text(t, name=f"text[{i}]").lower().split():
                if word in COLORS:
                    out[i, :3] += np.asarray(COLORS[word], np.float32) / 255.0 - 0.5
                out[i, 3 + zlib.crc32(word.encode()) % (self.embed_dim - 3)] += 1.0
        return l2_normalize(out)


def photo_bytes(color: str, fmt: str = "PNG") -> bytes:
    """A 160x120 photo: a field of `color` with a lighter disc (its mean colour stays close to `color`)."""
    img = Image.new("RGB", (160, 120), COLORS[color])
    lighter = tuple(min(255, c + 50) for c in COLORS[color])
    ImageDraw.Draw(img).ellipse((50, 25, 110, 85), fill=lighter)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def make_library(folder: Path) -> dict[str, Path]:
    """Four colour photos, a corrupt JPEG and an empty PNG (both must be skipped)."""
    folder.mkdir(parents=True)
    photos = {}
    for color, fmt in zip(COLORS, ["PNG", "PNG", "JPEG", "PNG"], strict=True):
        photos[color] = folder / f"{color}.{'jpg' if fmt == 'JPEG' else 'png'}"
        photos[color].write_bytes(photo_bytes(color, fmt))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    return photos


@contextlib.contextmanager
def serving(index: Index) -> Iterator:
    server = create_server(index, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory):
    """(server, index, photos by colour, ingest report): a served index of the colour photos and two notes."""
    root = tmp_path_factory.mktemp("app")
    photos = make_library(root / "photos")
    index, report = build_index(root / "photos", root / "index", model=ColorEmbedder(), progress=False)
    with index:
        index.add_note(PASSPORT)
        index.add_note(PICNIC, photo=photos["green"])
        with serving(index) as server:
            yield server, index, photos, report


@pytest.fixture
def fresh(tmp_path: Path):
    """(server, index, photos by colour): a served index of the colour photos only, for tests that change it."""
    photos = make_library(tmp_path / "photos")
    index, _ = build_index(tmp_path / "photos", tmp_path / "index", model=ColorEmbedder(), progress=False)
    with index, serving(index) as server:
        yield server, index, photos


def call(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, content type, body bytes); `path` is sent exactly as given (no normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def call_json(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    status, content_type, data = call(server, method, path, body, headers)
    assert content_type.startswith("application/json"), (status, content_type, data[:200])
    return status, json.loads(data)


# --- indexing ----------------------------------------------------------------------------------


def test_build_index_skips_bad_files(library) -> None:
    _, index, photos, report = library
    assert isinstance(ColorEmbedder(), Embedder)
    assert sorted(report.added) == sorted(photo_id(p) for p in photos.values())
    assert sorted(Path(s.input).name for s in report.skipped) == ["broken.jpg", "empty.png"]
    assert len(index) == 5  # 4 photos (one with a note) + 1 note


# --- the JSON API ------------------------------------------------------------------------------


def test_search_by_text_returns_json_hits(library) -> None:
    server, index, photos, _ = library
    status, data = call_json(server, "GET", "/api/search?q=red")
    assert status == 200 and data["query"] == {
        "q": "red",
        "photo": False,
        "like": None,
        "modality": "all",
        "k": 24,
    }
    hits = data["hits"]
    assert len(hits) == 5
    red = photo_id(photos["red"])
    assert hits[0] == {
        "id": red, "cosine": hits[0]["cosine"], "score": hits[0]["score"], "modality": "photo", "path": str(photos["red"]),
        "name": "red.png", "thumb": f"/thumb/{red}", "taken": index[red].taken,
    }  # fmt: skip
    assert index[red].taken_from == "mtime" and len(hits[0]["taken"]) == 19  # no EXIF: the file's date
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.5
    assert all(h["cosine"] == h["score"] for h in hits)  # this model has no cross-modal offset

    _, notes = call_json(server, "GET", "/api/search?q=passport&modality=note")
    assert [(h["id"], h["modality"], h["text"]) for h in notes["hits"]] == [
        (note_id(PASSPORT), "note", PASSPORT)
    ]
    for spelled in ("photo%2Bnote", "photo+note"):  # a raw "+" decodes to a space: both mean photo+note
        _, both = call_json(server, "GET", f"/api/search?q=picnic&modality={spelled}")
        assert [(h["id"], h["text"]) for h in both["hits"]] == [(photo_id(photos["green"]), PICNIC)]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/search?q=", 400, "empty query"),
        ("/api/search?q=%20%20", 400, "empty query"),
        ("/api/search", 400, "empty query"),
        ("/api/search?q=red&modality=video", 400, "modality 'video'"),
        ("/api/search?q=red&k=0", 400, "k '0'"),
        ("/api/search?q=red&k=ten", 400, "k 'ten'"),
        ("/api/nope", 404, "/api/nope: not found"),
        ("/api/note", 405, "method not allowed"),
    ],
)
def test_bad_requests_get_clear_4xx(library, path: str, status: int, message: str) -> None:
    got, data = call_json(library[0], "GET", path)
    assert got == status and message in data["error"]


def test_search_by_uploaded_photo(library) -> None:
    server, _, photos, _ = library
    blue = photo_id(photos["blue"])
    status, data = call_json(
        server, "POST", "/api/search?k=2", photo_bytes("blue", "JPEG"), {"Content-Type": "image/jpeg"}
    )
    assert status == 200 and data["query"]["photo"] is True and data["query"]["q"] is None
    assert data["hits"][0]["id"] == blue and data["hits"][0]["score"] == pytest.approx(1.0, abs=0.02)

    # photo + words: the query is the fusion of both, so the blue photo and the passport note lead
    status, data = call_json(server, "POST", "/api/search?q=passport&k=2", photo_bytes("blue"))
    assert status == 200 and data["query"] == {
        "q": "passport",
        "photo": True,
        "like": None,
        "modality": "all",
        "k": 2,
    }
    assert {h["id"] for h in data["hits"]} == {blue, note_id(PASSPORT)}


def test_search_like_an_indexed_photo(library) -> None:
    server, _, photos, _ = library
    yellow = photo_id(photos["yellow"])
    status, data = call_json(server, "GET", f"/api/search?like={yellow}&k=2&min_score=-1")
    assert status == 200 and data["query"]["like"] == yellow and data["query"]["photo"] is False
    assert data["query"]["like_name"] == "yellow.png"
    assert len(data["hits"]) == 2 and yellow not in {h["id"] for h in data["hits"]}  # similar photos: not itself
    assert data["hits"][0]["score"] < 0.99
    status, data = call_json(server, "GET", "/api/search?like=p_0000000000000000")
    assert status == 404 and "no such item" in data["error"]
    status, data = call_json(server, "GET", f"/api/search?like={note_id(PASSPORT)}")
    assert status == 404 and "a note, not a photo" in data["error"]
    status, data = call_json(server, "POST", f"/api/search?like={yellow}", photo_bytes("blue"))
    assert status == 400 and "not both" in data["error"]


def test_bad_upload_is_rejected(library) -> None:
    server = library[0]
    status, data = call_json(
        server, "POST", "/api/search?q=red", b"%PDF-1.7 not a photo", {"Content-Type": "image/png"}
    )
    assert status == 400 and data["error"] == "uploaded photo: not a supported image"
    status, data = call_json(server, "POST", "/api/search", photo_bytes("red")[:60])  # truncated
    assert status == 400 and data["error"].startswith("uploaded photo: ")
    form = b"--x\r\nContent-Disposition: form-data; name=photo\r\n\r\nabc\r\n--x--\r\n"
    status, data = call_json(
        server, "POST", "/api/search", form, {"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert status == 415 and "request body" in data["error"]
    status, data = call_json(server, "POST", "/api/search", b"", {"Content-Length": str(10**9)})
    assert status == 413


def test_thumbnails_only_for_indexed_photos(library) -> None:
    server, _, photos, _ = library
    red = photo_id(photos["red"])
    status, content_type, data = call(server, "GET", f"/thumb/{red}")
    assert status == 200 and content_type == "image/jpeg"
    thumb = Image.open(io.BytesIO(data))
    assert thumb.format == "JPEG" and max(thumb.size) <= THUMB_PX
    r, g, b = np.asarray(thumb.convert("RGB"), np.float32).reshape(-1, 3).mean(0)
    assert r > 150 and g < 110 and b < 110  # it is the red photo
    assert call(server, "GET", f"/thumb/{red}")[2] == data  # served from the cache
    assert server.app._thumbs  # noqa: SLF001

    secret = photos["red"].parent.parent / "secret.txt"
    secret.write_text("root:x:0:0")
    for path in [
        "/thumb/p_0000000000000000",  # unknown id
        f"/thumb/{note_id(PASSPORT)}",  # a note has no photo
        "/thumb/",
        "/thumb/../../../../etc/passwd",  # traversal, raw and encoded
        "/thumb/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/thumb/%2Fetc%2Fpasswd",
        f"/thumb/{secret}",  # an absolute path in place of an id
        f"/thumb/{photos['red']}",
        "/thumb/" + str(photos["red"].parent / "broken.jpg"),  # in the folder, not in the index
        "/../../../../etc/passwd",
        f"/{secret}",
    ]:
        status, content_type, body = call(server, "GET", path)
        assert status == 404, path
        assert b"root:" not in body and content_type.startswith("application/json"), path


def test_add_note_to_a_photo_and_on_its_own(fresh) -> None:
    server, index, photos = fresh
    json_type = {"Content-Type": "application/json"}
    blue = photo_id(photos["blue"])
    body = json.dumps({"text": "birthday cake", "photo": blue}).encode()
    status, data = call_json(server, "POST", "/api/note", body, json_type)
    assert status == 201 and data == {"id": blue, "modality": "photo+note"}
    _, found = call_json(server, "GET", "/api/search?q=cake&k=1")
    assert [(h["id"], h["modality"], h["text"]) for h in found["hits"]] == [
        (blue, "photo+note", "birthday cake")
    ]

    body = json.dumps({"text": PASSPORT, "meta": {"tags": ["admin"]}}).encode()
    status, data = call_json(server, "POST", "/api/note", body, json_type)
    assert status == 201 and data == {"id": note_id(PASSPORT), "modality": "note"}
    assert index[note_id(PASSPORT)].meta == {"tags": ["admin"]}
    _, stats = call_json(server, "GET", "/api/stats")
    assert (stats["items"], stats["photos"], stats["notes"], stats["photo_notes"]) == (5, 3, 1, 1)
    assert stats["model_id"] == "fake-color@1"

    for payload, headers, status, message in [
        (b'{"text": "   "}', json_type, 400, "text: the note is empty"),
        (b'{"photo": "x"}', json_type, 400, "text: the note is empty"),
        (b'{"text": "hi", "photo": "p_0000000000000000"}', json_type, 404, "no such item"),
        (
            json.dumps({"text": "hi", "photo": note_id(PASSPORT)}).encode(),
            json_type,
            404,
            "a note, not a photo",
        ),
        (b'{"text": "hi", "meta": [1]}', json_type, 400, "meta: expected a dict"),
        (b'{"text": "hi", "tags": []}', json_type, 400, "unknown fields ['tags']"),
        (b'["hi"]', json_type, 400, "expected a JSON object"),
        (b"{not json", json_type, 400, "not JSON"),
        (b'{"text": "hi"}', {"Content-Type": "text/plain"}, 415, "application/json"),
    ]:
        got, data = call_json(server, "POST", "/api/note", payload, headers)
        assert got == status and message in data["error"], (payload, data)
    assert len(index) == 5  # none of the bad requests changed anything


def test_foreign_hosts_and_origins_are_refused(library) -> None:
    server = library[0]
    port = server.server_address[1]
    status, data = call_json(server, "GET", "/api/stats", headers={"Host": f"evil.example:{port}"})
    assert status == 403 and "evil.example" in data["error"]  # a DNS-rebinding page
    status, data = call_json(
        server, "POST", "/api/note", b'{"text": "spam"}',
        {"Content-Type": "application/json", "Origin": "http://evil.example"},
    )  # fmt: skip
    assert status == 403 and "other sites" in data["error"]
    assert call(server, "GET", "/api/stats", headers={"Host": f"localhost:{port}"})[0] == 200
    with pytest.raises(ValueError, match="127.0.0.1"):
        create_server(library[1], "0.0.0.0", 0)


def test_page_is_self_contained(library) -> None:
    server = library[0]
    status, content_type, data = call(server, "GET", "/")
    assert status == 200 and content_type == "text/html; charset=utf-8"
    page = data.decode()
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("GET", "/")
    csp = conn.getresponse().getheader("Content-Security-Policy", "")
    conn.close()
    assert (
        "default-src 'none'" in csp and "connect-src 'self'" in csp
    )  # the browser itself forbids the network
    assert call(server, "GET", "/favicon.ico")[0] == 204  # browsers ask for it: no error, no 404 noise


def test_main_indexes_serves_and_shares_the_cli_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import edge_gcl.app.server as app

    photos = tmp_path / "photos"
    make_library(photos)
    models = {"colors": ColorEmbedder()}
    monkeypatch.setattr(app, "load_embedder", lambda spec, provider="cpu", form=None: models[spec])
    monkeypatch.setenv("EDGE_GCL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGE_GCL_INDEX", raising=False)

    served = {}

    def press_ctrl_c(self) -> None:
        served["stats"] = self.app.stats()  # what /api/stats answers once serving
        raise KeyboardInterrupt

    monkeypatch.setattr(app.PhotoSearchServer, "serve_forever", press_ctrl_c)
    argv = ["--photos", str(photos), "--model", "colors", "--port", "0"]
    assert app.main(argv) == 0
    out, err = capsys.readouterr()
    last_sync = served["stats"]["last_sync"]  # the start-up sync counts (issue 34: it said null)
    assert last_sync["trigger"] == "start-up" and last_sync["report"]["added"] == 4 and len(last_sync["skipped"]) == 2
    assert f"index: {tmp_path / 'home' / 'index'}" in out  # the CLI's default index
    assert "added 4, updated 0, unchanged 0, removed 0, skipped 2" in out
    assert "open http://127.0.0.1:" in out and out.rstrip().endswith("stopped")
    assert f"skipped {photos / 'broken.jpg'}: corrupt or truncated image" in err
    assert f"skipped {photos / 'empty.png'}: empty file (0 bytes)" in err
    shared = tmp_path / "home" / "index"
    with Index.open(shared, model=models["colors"]) as index:
        index.add_note(PASSPORT)

    # other weights under the same name: refused with a hint, nothing changed ...
    models["colors"] = ColorEmbedder()
    models["colors"].model_id = "fake-color@2"
    assert app.main(argv) == 1
    assert "built with model 'fake-color@1'" in capsys.readouterr().err
    with Index.open(shared) as index:
        assert index.model_id == "fake-color@1" and len(index) == 5
    # ... and migrated, notes kept, when asked
    assert app.main([*argv, "--reindex"]) == 0
    out, _ = capsys.readouterr()
    assert "re-embedding the index with fake-color@2 (notes are kept)" in out and "unchanged 4" in out
    with Index.open(shared) as index:
        assert index.model_id == "fake-color@2" and note_id(PASSPORT) in index and len(index) == 5


def test_main_refuses_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_gcl.app.server import main

    assert main(["--photos", str(tmp_path / "nope"), "--index", str(tmp_path / "idx")]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()


def test_main_without_a_model_says_how_to_build_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_gcl.app.server import main

    monkeypatch.setenv("EDGE_GCL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGE_GCL_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    assert main(["--photos", str(tmp_path / "photos")]) == 1
    err = capsys.readouterr().err
    assert "no compiled model found" in err and "python -m export.compile --target snapdragon" in err
    assert len(err.strip().splitlines()) == 1


# --- the page in a real browser ------------------------------------------------------------------


class _Cards(HTMLParser):
    """Result cards of a dumped DOM: [(data-id, data-modality, their text)] in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[list[str]] = []
        self._depth = 0  # inside a card: its element depth

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "article" and "card" in (a.get("class") or "").split():
            self.cards.append([a.get("data-id") or "", a.get("data-modality") or "", ""])
            self._depth = 1
        elif self._depth and tag not in ("img", "br", "input"):
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.cards[-1][2] += data


def run_chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-proxy-server", "--disable-extensions", "--disable-default-apps", "--hide-scrollbars",
        "--disable-client-side-phishing-detection", "--disable-domain-reliability",
        # chromium still looks up its update servers: make every name but 127.0.0.1 unresolvable
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}", "--virtual-time-budget=8000",  # lets the page's fetches finish
    ]  # fmt: skip
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_page_in_headless_chromium(library, tmp_path: Path) -> None:
    server, index, photos, _ = library
    url = f"{server.url}?q=red"
    started = time.monotonic()
    dom = run_chromium(tmp_path / "profile", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = _Cards()
    parser.feed(dom.stdout)
    expected = [(h.id, h.modality) for h in index.search("red", k=24)]
    assert [(c[0], c[1]) for c in parser.cards] == expected  # rendered client-side, in rank order
    assert expected[0] == (photo_id(photos["red"]), "photo")
    by_id = {c[0]: c[2] for c in parser.cards}
    assert "red.png" in by_id[photo_id(photos["red"])] and "Add note" in by_id[photo_id(photos["red"])]
    assert PASSPORT in by_id[note_id(PASSPORT)]
    assert PICNIC in by_id[photo_id(photos["green"])] and "Edit note" in by_id[photo_id(photos["green"])]
    assert f'src="/thumb/{photo_id(photos["red"])}"' in dom.stdout
    assert "5 results for “red”" in dom.stdout  # the status line

    shot = tmp_path / "page.png"
    result = run_chromium(tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,800", url)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    pixels = np.asarray(Image.open(shot).convert("RGB"), np.int16)  # (800, 1280, 3)
    assert pixels.shape == (800, 1280, 3)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    red_px = int(((r > 180) & (g < 110) & (b < 110)).sum())
    blue_px = int(((b > 180) & (r < 110) & (g < 130)).sum())
    assert red_px > 5_000 and blue_px > 5_000  # the thumbnails were loaded and drawn
    assert time.monotonic() - started < 45


# Appended to the page for the next test: works the page as a person would (note form, photo upload
# through the file input, "Similar"), noting what it saw in data-* attributes of <body>. Virtual time
# does not advance while fetches are pending, so the waits are deterministic.
DRIVER = """
window.addEventListener("load", async () => {
  const until = async (ok) => { for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 25)); };
  const card = (id) => document.querySelector(`.card[data-id="${id}"]`);
  const first = () => document.querySelector(".card").dataset.id;
  const status = () => document.querySelector("#status").textContent;
  await until(() => card("RED"));
  card("RED").querySelector(".actions button").click();  // Add note
  document.querySelector("#note-text").value = "grandma's front door";
  document.querySelector("#note-form").requestSubmit();
  await until(() => card("RED") && card("RED").dataset.modality === "photo+note");

  const blob = await (await fetch("/thumb/BLUE")).blob();  // a photo of the user's, chosen in the file picker
  const picked = new DataTransfer();
  picked.items.add(new File([blob], "query.jpg", {type: "image/jpeg"}));
  const input = document.querySelector("#photo");
  input.files = picked.files;
  input.dispatchEvent(new Event("change"));
  await until(() => status().includes("your photo"));
  document.body.dataset.upload = `${first()} ${status()}`;

  card("YELLOW").querySelector(".actions button:last-child").click();  // Similar
  await until(() => status().includes("photos like yellow.png"));
  document.body.dataset.like = `${first()} ${location.search}`;
  document.body.dataset.driver = "done";
});
"""


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_page_note_upload_and_similar_in_headless_chromium(
    fresh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_gcl.app.server as app

    server, index, photos = fresh
    red, blue, yellow = (photo_id(photos[c]) for c in ("red", "blue", "yellow"))
    driver = DRIVER.replace("RED", red).replace("BLUE", blue).replace("YELLOW", yellow).encode()
    page = app.static_file
    # the page's CSP runs only its own files: the driver rides at the end of app.js
    monkeypatch.setattr(app, "static_file", lambda name: page(name) + (driver if name == "app.js" else b""))
    dom = run_chromium(tmp_path / "profile", "--dump-dom", f"{server.url}?q=red")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-driver="done"' in dom.stdout, dom.stdout[-3000:]
    assert index[red].modality == "photo+note" and index[red].text == "grandma's front door"  # the note form
    assert "Saved (photo + note)." in dom.stdout
    # the upload, with the words still in the box: photo + words, its photo first
    assert f'data-upload="{blue} 4 results for “red” + your photo' in dom.stdout
    assert f' ?like={yellow}"' in dom.stdout and f'data-like="{yellow} ' not in dom.stdout  # kept in the URL
    parser = _Cards()
    parser.feed(dom.stdout)
    assert yellow not in [c[0] for c in parser.cards] and parser.cards  # "Similar": the others, not itself


# --- the photo library: dates, gallery, cut-off, delete, sync (issue 15) ------------------------------

DAYS = {"red": "2021-03-05", "green": "2022-06-01", "blue": "2023-01-15", "yellow": "2024-08-20"}


def heic_bytes(color: str, taken: str) -> bytes:
    """A real HEIC (pillow-heif) of `color` with EXIF DateTimeOriginal `taken` ('YYYY:MM:DD HH:MM:SS')."""
    pytest.importorskip("pillow_heif")
    exif = Image.Exif()
    exif[0x8769] = {0x9003: taken}
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo_bytes(color))).save(buf, format="HEIF", exif=exif.tobytes(), quality=90)
    return buf.getvalue()


@pytest.fixture
def dated_app(tmp_path: Path):
    """(server, index, photos by colour): the colour photos, each from another day (file times), one
    HEIC (purple, EXIF date 2024-12-24), a note; served with the folder to sync and no polling."""
    photos = make_library(tmp_path / "photos")
    for color, day in DAYS.items():
        when = time.mktime(time.strptime(day + " 12:00:00", "%Y-%m-%d %H:%M:%S"))
        os.utime(photos[color], (when, when))
    photos["purple"] = tmp_path / "photos" / "IMG_0042.HEIC"
    photos["purple"].write_bytes(heic_bytes("blue", "2024:12:24 18:00:00"))
    index, _ = build_index(tmp_path / "photos", tmp_path / "index", model=ColorEmbedder(), progress=False)
    index.add_note(PASSPORT)
    server = create_server(index, "127.0.0.1", 0, photos=tmp_path / "photos")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, index, photos
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        index.close()


def test_heic_photos_are_indexed_and_served(dated_app) -> None:
    server, index, photos = dated_app
    heic = photo_id(photos["purple"])
    assert index[heic].taken == "2024-12-24T18:00:00" and index[heic].taken_from == "exif"
    status, content_type, data = call(server, "GET", f"/thumb/{heic}")
    assert status == 200 and content_type == "image/jpeg" and Image.open(io.BytesIO(data)).format == "JPEG"
    _, found = call_json(server, "GET", f"/api/search?like={heic}&k=1")
    assert [h["id"] for h in found["hits"]] == [photo_id(photos["blue"])]  # the same colour (itself left out)
    assert found["hits"][0]["cosine"] == pytest.approx(1.0, abs=0.02)


def test_heic_thumbnails_come_from_the_embedded_thumbnail(dated_app, monkeypatch: pytest.MonkeyPatch) -> None:
    from pillow_heif.as_plugin import HeifImageFile

    server, index, photos = dated_app
    path = photos["red"].parent / "IMG_0043.HEIC"  # a phone's: 12 MP... here 1280 x 960, with a 320 x 240 thumbnail
    Image.new("RGB", (1280, 960), COLORS["green"]).save(path, quality=80, thumbnails=[320])
    index.add_photos(path, progress=False)
    drafts = []
    draft = HeifImageFile.draft
    monkeypatch.setattr(HeifImageFile, "draft", lambda self, mode, size: drafts.append(draft(self, mode, size)) or drafts[-1])
    status, _, data = call(server, "GET", f"/thumb/{photo_id(path)}")
    assert status == 200 and Image.open(io.BytesIO(data)).size == (320, 240)
    assert drafts == [("RGB", (0, 0, 320, 240))]  # the embedded thumbnail, not the full image


def test_gallery_lists_recent_photos_and_filters_by_date(dated_app) -> None:
    server, index, photos = dated_app
    status, data = call_json(server, "GET", "/api/items?modality=photo,photo%2Bnote")
    assert status == 200 and data["total"] == 6
    order = ["purple", "yellow", "blue", "green", "red"]
    assert [it["id"] for it in data["items"]] == [photo_id(photos[c]) for c in order]
    first = data["items"][0]
    assert first == {"id": photo_id(photos["purple"]), "modality": "photo", "path": str(photos["purple"]),
                     "name": "IMG_0042.HEIC", "thumb": f"/thumb/{photo_id(photos['purple'])}",
                     "taken": "2024-12-24T18:00:00"}  # fmt: skip
    _, everything = call_json(server, "GET", "/api/items")
    assert everything["items"][-1]["id"] == note_id(PASSPORT)  # notes (no date) last
    _, in_2022 = call_json(server, "GET", "/api/items?after=2022&before=2023")
    assert [it["id"] for it in in_2022["items"]] == [photo_id(photos["green"])]
    _, two = call_json(server, "GET", "/api/items?limit=2")
    assert len(two["items"]) == 2
    for path, message in [
        ("/api/items?limit=0", "limit '0'"),
        ("/api/items?modality=video", "modality 'video'"),
        ("/api/items?after=yesterday", "after 'yesterday': expected a date"),
    ]:
        status, data = call_json(server, "GET", path)
        assert status == 400 and message in data["error"], path


def test_search_filters_by_date_sorts_by_date_and_applies_the_cut_off(dated_app, monkeypatch) -> None:
    import edge_gcl.app.server as app

    server, index, photos = dated_app
    _, data = call_json(server, "GET", "/api/search?q=red&after=2023-01-01&before=2024-01-01")
    assert [h["id"] for h in data["hits"]] == [photo_id(photos["blue"])]
    assert data["query"]["after"] == "2023-01-01T00:00:00" and data["query"]["before"] == "2024-01-01T00:00:00"
    _, data = call_json(server, "GET", "/api/search?q=red&sort=date&modality=photo")
    assert [h["id"] for h in data["hits"]] == [photo_id(photos[c]) for c in ("purple", "yellow", "blue", "green", "red")]
    assert data["hidden"] == 0 and data["min_score"] is None  # the colour model has no cut-off
    _, data = call_json(server, "GET", "/api/search?q=red&min_score=0.5")
    assert [h["id"] for h in data["hits"]] == [photo_id(photos["red"])] and data["hidden"] == 5
    monkeypatch.setattr(app, "default_min_score", lambda embedder: 0.5)  # a model with a calibrated cut-off
    _, data = call_json(server, "GET", "/api/search?q=red")
    assert len(data["hits"]) == 1 and data["min_score"] == 0.5 and data["hidden"] == 5
    _, data = call_json(server, "GET", "/api/search?q=red&min_score=-1")
    assert len(data["hits"]) == 6 and data["hidden"] == 0
    _, stats = call_json(server, "GET", "/api/stats")
    assert stats["default_min_score"] == 0.5 and stats["model_name"] == "fake-color@1"
    for path, message in [
        ("/api/search?q=red&min_score=2", "min_score '2'"),
        ("/api/search?q=red&min_score=high", "min_score 'high'"),
        ("/api/search?q=red&sort=size", "sort 'size'"),
        ("/api/search?q=red&before=2024-13", "before '2024-13'"),
    ]:
        status, data = call_json(server, "GET", path)
        assert status == 400 and message in data["error"], path


def test_delete_removes_from_the_index_not_the_file(dated_app) -> None:
    server, index, photos = dated_app
    red = photo_id(photos["red"])
    assert call(server, "GET", f"/thumb/{red}")[0] == 200  # cached
    status, data = call_json(server, "DELETE", f"/api/items/{red}")
    assert status == 200 and data == {"removed": red}
    assert red not in index and photos["red"].exists()
    assert call(server, "GET", f"/thumb/{red}")[0] == 404
    status, data = call_json(server, "DELETE", f"/api/items/{red}")
    assert status == 404 and "no such item" in data["error"]
    status, data = call_json(server, "DELETE", f"/api/items/{note_id(PASSPORT)}",
                             headers={"Origin": "http://evil.example"})  # fmt: skip
    assert status == 403 and note_id(PASSPORT) in index
    assert call_json(server, "DELETE", f"/api/items/{note_id(PASSPORT)}")[0] == 200
    assert call_json(server, "DELETE", "/api/stats")[0] == 405


def test_sync_on_demand(dated_app) -> None:
    server, index, photos = dated_app
    new = photos["red"].parent / "new.png"
    new.write_bytes(photo_bytes("yellow"))
    photos["green"].unlink()
    status, data = call_json(server, "POST", "/api/sync")
    assert status == 200 and data["trigger"] == "button"
    assert {k: data["report"][k] for k in ("added", "removed", "skipped")} == {"added": 1, "removed": 1, "skipped": 2}
    assert photo_id(new) in index and photo_id(photos["green"]) not in index
    _, stats = call_json(server, "GET", "/api/stats")
    assert stats["last_sync"]["report"]["added"] == 1 and stats["photo_folder"] == str(new.parent)


def test_the_folder_is_watched(tmp_path: Path) -> None:
    photos = make_library(tmp_path / "photos")
    index, _ = build_index(tmp_path / "photos", tmp_path / "index", model=ColorEmbedder(), progress=False)
    server = create_server(index, "127.0.0.1", 0, photos=tmp_path / "photos", poll_s=0.1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        assert server.app.last_sync is None  # nothing changed: nothing done
        new = tmp_path / "photos" / "sub" / "new.png"
        new.parent.mkdir()
        new.write_bytes(photo_bytes("red"))
        photos["blue"].unlink()
        deadline = time.monotonic() + 10
        def synced() -> bool:  # last_sync is set once a sync is done (one, or two if it saw half the changes)
            sync = server.app.last_sync
            return sync is not None and photo_id(new) in index and photo_id(photos["blue"]) not in index

        while not synced() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert photo_id(new) in index and photo_id(photos["blue"]) not in index
        assert server.app.last_sync["trigger"] == "poll"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        index.close()


# Appended to app.js for the next test: the gallery before any search (its dates), "Similar photos",
# Remove (two clicks), the date filter and Sync, noting what it saw in data-* attributes of <body>.
GALLERY_DRIVER = """
window.addEventListener("load", async () => {
  const until = async (ok) => { for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 25)); };
  const ids = () => [...document.querySelectorAll(".card")].map((c) => c.dataset.id).join(" ");
  const card = (id) => document.querySelector(`.card[data-id="${id}"]`);
  await until(() => document.querySelectorAll(".card").length);
  document.body.dataset.gallery = `${document.querySelector("#view-title").textContent}|${ids()}|` +
    document.querySelector(".card .date").textContent;
  card("YELLOW").querySelector(".remove").click();
  card("YELLOW").querySelector(".remove").click();
  await until(() => !card("YELLOW"));
  document.body.dataset.removed = document.querySelector("#status").textContent;
  document.querySelector("#from").value = "2022-01-01";
  document.querySelector("#to").value = "2022-12-31";
  document.querySelector("#from").dispatchEvent(new Event("change"));
  await until(() => ids() === "GREEN");
  document.body.dataset.dated = `${ids()} ${location.search}`;
  document.querySelector("#from").value = "";
  document.querySelector("#to").value = "";
  document.querySelector("#sync").click();
  await until(() => document.querySelector("#status").textContent.startsWith("Synced"));
  document.body.dataset.synced = `${document.querySelector("#status").textContent}|${ids()}`;
  card("GREEN").querySelector(".actions button:last-child").click();  // Similar photos (green: no other photo shares its colour)
  await until(() => document.querySelector("#view-title").textContent.startsWith("Similar"));
  document.body.dataset.similar = `${document.querySelector("#view-title").textContent}|${ids().split(" ")[0]}`;
  document.body.dataset.driver = "done";
});
"""


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_page_gallery_remove_dates_sync_and_similar_in_headless_chromium(
    dated_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_gcl.app.server as app

    server, index, photos = dated_app
    ids = {c: photo_id(p) for c, p in photos.items()}
    driver = GALLERY_DRIVER
    for color in ("YELLOW", "GREEN"):
        driver = driver.replace(color, ids[color.lower()])
    page = app.static_file
    monkeypatch.setattr(app, "static_file", lambda name: page(name) + (driver.encode() if name == "app.js" else b""))
    new = photos["red"].parent / "new.png"  # appears in the folder while the app runs: Sync finds it
    new.write_bytes(photo_bytes("red"))
    dom = run_chromium(tmp_path / "profile", "--dump-dom", server.url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-driver="done"' in dom.stdout, dom.stdout[-3000:]
    newest = " ".join(ids[c] for c in ("purple", "yellow", "blue", "green", "red"))
    assert f'data-gallery="Recent photos|{newest}|2024-12-24 18:00"' in dom.stdout  # before any search
    assert ids["yellow"] not in index and photos["yellow"].exists()
    assert 'data-removed="Removed yellow.png from the index (the file is kept)."' in dom.stdout
    assert f'data-dated="{ids["green"]} ?from=2022-01-01&amp;to=2022-12-31"' in dom.stdout
    assert 'data-synced="Synced: 1 added, 0 updated, 0 removed, 2 skipped.|' in dom.stdout
    assert photo_id(new) in index
    # green: no other photo shares its colour, and "Similar photos" leaves the photo itself out
    assert 'data-similar="Similar photos: green.png|' in dom.stdout
    assert f'data-similar="Similar photos: green.png|{ids["green"]}"' not in dom.stdout


def test_main_on_the_npu_runs_the_compiled_form_or_says_what_to_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--provider qnn reaches the runtime as the ctx form: artifacts without ctx towers are refused
    with the command that builds them, never run on the CPU instead."""
    from edge_gcl.app.server import main

    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "manifest.json").write_text(json.dumps({"format_version": 1}))
    seen = {}

    def fake_load(spec, provider="cpu", form=None):
        seen.update(spec=spec, provider=provider, form=form)
        raise ValueError(f"{spec}: no 'ctx' image tower; rebuild with `python -m export.compile --target snapdragon`")

    monkeypatch.setattr("edge_gcl.app.server.load_embedder", fake_load)
    monkeypatch.setenv("EDGE_GCL_HOME", str(tmp_path / "home"))
    (tmp_path / "photos").mkdir()
    argv = ["--photos", str(tmp_path / "photos"), "--model", str(tmp_path / "artifacts"), "--provider", "qnn"]
    assert main(argv) == 1
    assert seen == {"spec": str(tmp_path / "artifacts"), "provider": "qnn", "form": None}
    assert "rebuild with `python -m export.compile" in capsys.readouterr().err
    assert main([*argv, "--form", "qdq"]) == 1 and seen["form"] == "qdq"

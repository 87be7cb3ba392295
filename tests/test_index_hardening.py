"""Issue 14's careless-user and attacker inputs on the on-device side: pipes, undecodable and huge
notes, notes from files and stdin, two ingests at once, the app's upload limit and framing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_index import FakeEmbedder, make_photos  # noqa: E402
from test_runtime import make_artifacts  # noqa: E402

from edge_gcl.index import Index, note_id  # noqa: E402
from edge_gcl.index.sources import MAX_NOTE_CHARS  # noqa: E402
from edge_gcl.transform import ImageDecodeError, load_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from edge_gcl.cli import main; sys.exit(main(sys.argv[1:]))"]


def cli(*args: str | Path, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *map(str, args)], input=stdin, capture_output=True, timeout=timeout, cwd=ROOT)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "query.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageDecodeError, match="query.jpg: not a regular file"):
        load_image(fifo)
    artifacts = make_artifacts(tmp_path / "artifacts")
    make_photos(tmp_path / "photos", 2)
    common = ["--index", tmp_path / "idx", "--model", artifacts]
    assert cli("index", "add", tmp_path / "photos", *common).returncode == 0
    done = cli("search", "--image", fifo, *common, timeout=60)  # used to block forever on open()
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines()[-1].endswith("query.jpg: not a regular file (a pipe, socket or device)")


def test_a_note_that_is_not_valid_unicode_is_skipped_and_the_others_kept(tmp_path: Path) -> None:
    with Index.open(tmp_path / "idx", model=FakeEmbedder()) as index:
        report = index.add_notes(["a good note", "bad \udcff bytes from a file name", "another good one"])
        assert sorted(report.added) == sorted([note_id("a good note"), note_id("another good one")])
        assert [(s.input, "not valid Unicode" in s.reason) for s in report.skipped] == [("note[1]", True)]
        assert len(index) == 2
        with pytest.raises(ValueError, match="note: holds characters that are not valid Unicode"):
            index.add_note("x\ud800y")


def test_notes_over_the_limit_are_refused_with_the_limit(tmp_path: Path) -> None:
    huge = "word " * (MAX_NOTE_CHARS // 5 + 1)
    with Index.open(tmp_path / "idx", model=FakeEmbedder()) as index:
        report = index.add_notes(["short", huge])
        assert report.added == [note_id("short")]
        assert f"over the {MAX_NOTE_CHARS:,}-character limit" in report.skipped[0].reason
        with pytest.raises(ValueError, match="split it into several notes"):
            index.add_note(huge)
        index.add_note("x" * MAX_NOTE_CHARS)  # the limit itself is allowed


def test_cli_notes_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    artifacts = make_artifacts(tmp_path / "artifacts")
    common = ["--index", tmp_path / "idx", "--model", artifacts]
    note = tmp_path / "note.txt"
    note.write_text("Receipt: two coffees at the harbour café, 7.40 €\n", encoding="utf-8")
    done = cli("index", "note", "--file", note, *common)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == note_id(note.read_text(encoding="utf-8"))
    done = cli("index", "note", "-", *common, stdin=b"passport renewal, from stdin")
    assert done.returncode == 0 and done.stdout.decode().strip() == note_id("passport renewal, from stdin")
    long = tmp_path / "long.txt"
    long.write_bytes(b"a" * (4 * MAX_NOTE_CHARS + 10))  # past what the OS takes as an argument, too
    for args, stdin in ((["--file", long], None), (["-"], long.read_bytes())):
        done = cli("index", "note", *args, *common, stdin=stdin)
        err = done.stderr.decode().strip().splitlines()
        assert done.returncode == 1 and len(err) == 1 and "longer than a note may be" in err[0], err
    done = cli("index", "note", "--file", tmp_path / "missing.txt", *common)
    assert done.returncode == 1 and "missing.txt: not a regular file" in done.stderr.decode()
    done = cli("index", "note", "text", "--file", note, *common)
    assert done.returncode == 1 and "one of them" in done.stderr.decode()
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    done = cli("index", "note", "--file", bad, *common)
    assert done.returncode == 1 and "not valid UTF-8" in done.stderr.decode()
    with Index.open(tmp_path / "idx") as index:
        assert len(index) == 2  # nothing else stored, nothing lost


def test_two_ingests_at_once_embed_each_photo_once(tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "photos", 12)
    log = tmp_path / "embedded.log"
    reports = {}

    def ingest(name: str) -> None:
        embedder = FakeEmbedder(delay_s=0.02, log=str(log))
        with Index.open(tmp_path / "idx", model=embedder) as index:
            reports[name] = index.add_photos([tmp_path / "photos"], batch_size=4, progress=False)

    threads = [threading.Thread(target=ingest, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    embedded = log.read_text().splitlines()
    assert sorted(embedded) == sorted(str(p) for p in photos)  # each photo once, by one of the runs
    added = {n: len(r.added) for n, r in reports.items()}
    unchanged = {n: len(r.unchanged) for n, r in reports.items()}
    assert sorted(added.values()) == [0, 12] and sorted(unchanged.values()) == [0, 12]  # each says what it did


def test_stores_opening_a_new_file_at_once_all_open(tmp_path: Path) -> None:
    # SQLite can deadlock two connections switching a new file to WAL together and tells one of
    # them "database is locked" at once, whatever the busy timeout: CI saw an ingest die so
    from edge_gcl.index.store import Store

    for trial in range(30):
        path, errors = tmp_path / f"{trial}.sqlite", []
        barrier = threading.Barrier(4)

        def open_store(path: Path = path, barrier: threading.Barrier = barrier, errors: list = errors) -> None:
            barrier.wait()
            try:
                Store.open(path, model_id="m", embed_dim=4).close()
            except Exception as e:  # noqa: BLE001 - the test reports every failure
                errors.append(repr(e))

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, (trial, errors)
        store = Store.open(path, create=False)
        assert store.info.model_id == "m"
        store.close()


def test_app_refuses_uploads_over_its_pixel_limit_and_frames(tmp_path: Path, monkeypatch) -> None:
    import io

    from test_app import ColorEmbedder, call_json, make_library, serving

    import edge_gcl.app.server as app

    make_library(tmp_path / "photos")
    index, _ = app.build_index(tmp_path / "photos", tmp_path / "idx", model=ColorEmbedder(), progress=False)
    monkeypatch.setattr(app, "QUERY_MAX_PIXELS", 1_000)
    big = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(big, "PNG")
    with index, serving(index) as server:
        status, body = call_json(server, "POST", "/api/search", big.getvalue(), {"Content-Type": "image/png"})
        assert status == 400 and "40x40 is over 1,000 pixels" in body["error"]
        status, body = call_json(server, "POST", "/api/note", json.dumps({"text": "y" * (MAX_NOTE_CHARS + 1)}).encode(),
                                 {"Content-Type": "application/json"})
        assert status == 400 and "character limit" in body["error"]
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", server.server_port)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.getheader("X-Frame-Options") == "DENY"
        assert "frame-ancestors 'none'" in response.getheader("Content-Security-Policy", "")
        assert "'unsafe-inline'" not in response.getheader("Content-Security-Policy", "")
        conn.close()

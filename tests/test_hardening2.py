"""Issue 33's attack battery, at small sizes: each test re-runs one attack that used to destroy data, answer
wrongly, print a traceback or blow up memory, and checks it no longer does.

Memory is measured as the peak resident set of a fresh child process (VmHWM: the high-water mark of its own
memory since exec; ru_maxrss would include the pytest process it was forked from), so no other test's
allocations count; the tiny ONNX towers of `test_runtime.make_artifacts` take ~100 MB of it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_index import FakeEmbedder, make_photos  # noqa: E402
from test_index_reliability import png_header_only  # noqa: E402
from test_runtime import make_artifacts  # noqa: E402

from edge_gcl import transform  # noqa: E402
from edge_gcl.config import ImagePreprocess  # noqa: E402
from edge_gcl.index import Index, parse_date  # noqa: E402
from edge_gcl.index.sources import capture_time  # noqa: E402
from edge_gcl.transform import ImageDecodeError, load_image, resize_and_crop  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# a child's peak resident memory in MB (Linux)
PEAK = "int(next(line for line in open('/proc/self/status') if line.startswith('VmHWM')).split()[1]) // 1024"
# the CLI in a child that reports its own peak memory on its last stderr line
CLI_PEAK = textwrap.dedent(f"""
    import sys
    from edge_gcl.cli import main
    try:
        rc = main(sys.argv[1:])
    finally:
        print(f"peak_mb={{{PEAK}}}", file=sys.stderr)
    sys.exit(rc)
""")
MB = 2**20


def cli(*args: str | Path, timeout: float = 120, limit_mb: int | None = None, setup=None,
        **kwargs) -> subprocess.CompletedProcess[str]:
    """`edge-gcl ARGS` in a child process (text output); `limit_mb` caps its address space, `setup` runs in
    the child before it starts."""

    def cap() -> None:
        if limit_mb:
            resource.setrlimit(resource.RLIMIT_AS, (limit_mb * MB, limit_mb * MB))
        if setup is not None:
            setup()

    return subprocess.run([sys.executable, "-c", CLI_PEAK, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, preexec_fn=cap, **kwargs)


def peak_mb(done: subprocess.CompletedProcess[str]) -> int:
    return int(done.stderr.strip().splitlines()[-1].removeprefix("peak_mb="))


def last_error(done: subprocess.CompletedProcess[str]) -> str:
    """The last line the command printed on stderr (before the peak the child adds)."""
    return [line for line in done.stderr.strip().splitlines() if not line.startswith("peak_mb=")][-1]


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))


# --- 2. thin images: decoding and resizing bounded by the output size ------------------------------


def thin_png(path: Path, width: int, height: int) -> Path:
    Image.new("RGB", (width, height), "red").save(path)  # a few hundred bytes
    return path


def test_a_thin_photo_query_stays_small_in_memory(tmp_path: Path, artifacts: Path) -> None:
    # 400000 x 2: its short side to the tiny model's 32 px made a 6.4M x 32 image first (820 MB; at 224 px,
    # a 40000 x 2 PNG took `search --image` to 4.3 GB)
    make_photos(tmp_path / "photos", 3)
    common = ["--index", tmp_path / "idx", "--model", artifacts]
    assert cli("index", "add", tmp_path / "photos", *common).returncode == 0
    done = cli("search", "--image", thin_png(tmp_path / "thin.png", 400_000, 2), "--all", "--json", *common)
    no_traceback(done)
    assert done.returncode == 0 and len(json.loads(done.stdout)) == 3
    assert peak_mb(done) < 350, done.stderr


def test_under_a_memory_limit_a_folder_add_adds_the_other_photos(tmp_path: Path, artifacts: Path) -> None:
    make_photos(tmp_path / "photos", 3)
    thin_png(tmp_path / "photos" / "thin.png", 400_000, 2)
    done = cli("index", "add", tmp_path / "photos", "--index", tmp_path / "idx", "--model", artifacts, limit_mb=1500)
    no_traceback(done)  # was a MemoryError traceback, and none of the 4 added
    assert done.returncode == 0 and "added 4," in done.stdout


def test_a_thin_upload_to_the_app_stays_small_in_memory(tmp_path: Path, artifacts: Path) -> None:
    make_photos(tmp_path / "photos", 2)
    thin_png(tmp_path / "thin.png", 200_000, 2)
    script = textwrap.dedent(f"""
        from edge_gcl.app.server import PhotoSearchApp
        from edge_gcl.index import Index
        with Index.open({str(tmp_path / "idx")!r}, model={str(artifacts)!r}) as index:
            index.add_photos({str(tmp_path / "photos")!r}, progress=False)
            hits = PhotoSearchApp(index).search({{"min_score": "-1"}}, photo=open({str(tmp_path / "thin.png")!r}, "rb").read())
            print(len(hits["hits"]), {PEAK})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    hits, peak = map(int, done.stdout.split())
    assert hits == 2 and peak < 350, done.stdout  # 200000 x 2 made a 3.2M x 32 image: 410 MB more


def test_large_photos_decoded_at_once_share_one_memory_budget(tmp_path: Path, artifacts: Path) -> None:
    """Ingest decodes photos in 4 threads and the app's thumbnails in one thread per request: three 25 MP PNGs
    (100 MB each decoded) decoded at once; within the budget (128 MiB) one decodes at a time."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (5000, 5000), "green").save(folder / "a.png")
    for name in ("b.png", "c.png"):
        os.link(folder / "a.png", folder / name)  # three items, one file on disk
    script = textwrap.dedent(f"""
        import threading
        from edge_gcl.app.server import PhotoSearchApp
        from edge_gcl.index import Index
        with Index.open({str(tmp_path / "idx")!r}, model={str(artifacts)!r}) as index:
            report = index.add_photos({str(folder)!r}, progress=False)
            app = PhotoSearchApp(index)
            ids = [it.id for it in index.items()]
            threads = [threading.Thread(target=app.thumbnail, args=(i,)) for i in ids]
            [t.start() for t in threads]
            [t.join() for t in threads]
            print(len(report.added), len(app._thumbs), {PEAK})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    added, thumbs, peak = map(int, done.stdout.split())
    assert (added, thumbs) == (3, 3)
    assert peak < 320, done.stdout  # one decode at a time: 272 MB measured; with no budget, 366 MB


def test_a_photo_over_the_decode_budget_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    bomb = tmp_path / "big.png"
    bomb.write_bytes(png_header_only(9000, 9000))  # 81 MP, under the pixel limit; 324 MB to decode
    with pytest.raises(ImageDecodeError, match=r"big.png: 9000x9000 \(RGB\) would take 309 MB to decode, over the 128 MB"):
        load_image(bomb)


@pytest.mark.parametrize("size", [(224, 8 * 224 // 2), (3000, 2), (2, 3000), (50000, 3)])
def test_thin_photos_resize_like_the_centre_of_the_plain_path(size: tuple[int, int]) -> None:
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    wave = np.stack([np.sin(x / 7 + y / 5), np.cos(x / 3 - y / 11), np.sin((x + y) / 13)], axis=-1)  # smooth
    img = Image.fromarray(((wave + 1) * 127.5).astype(np.uint8))
    cfg = ImagePreprocess(size=32, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic")
    got = np.asarray(resize_and_crop(img, cfg), np.int16)
    s = cfg.size
    scale = s / min(img.size)
    nw, nh = max(s, round(img.width * scale)), max(s, round(img.height * scale))
    left, top = (nw - s) // 2, (nh - s) // 2
    plain = np.asarray(img.resize((nw, nh), Image.Resampling.BICUBIC).crop((left, top, left + s, top + s)), np.int16)
    assert got.shape == (s, s, 3)
    assert np.abs(got - plain).max() <= 2  # the same pixels up to the rounding of the crop box


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "PA", "L", "1", "CMYK", "I;16", "I", "F"])
def test_conversion_to_rgb_in_strips_equals_the_whole_image(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    rgba = Image.fromarray(rng.integers(0, 256, (37, 53, 4), dtype=np.uint8), "RGBA")
    if mode in ("I;16", "I", "F"):
        img = Image.fromarray(rng.integers(0, 4000, (37, 53), dtype=np.uint16)).convert(mode)
    elif mode == "P":
        img = rgba.convert("RGB").quantize(16)
        img.info["transparency"] = 3
    else:
        img = rgba.convert(mode)
    whole = np.asarray(transform._to_rgb(img))
    monkeypatch.setattr(transform, "STRIP_PIXELS", 200)  # 3 rows at a time
    assert np.array_equal(np.asarray(transform._to_rgb(img)), whole)


# --- 3. a photo dated past 2262 --------------------------------------------------------------------


def far_future(path: Path, year: int = 2300) -> Path:
    ns = int((year - 1970) * 365.2425 * 86400) * 10**9  # past SQLite's 64-bit ns (2262)
    os.utime(path, ns=(ns, ns))
    if os.stat(path).st_mtime_ns != ns:
        pytest.skip(f"this file system cannot date a file in {year}")
    return path


def test_a_photo_dated_past_2262_is_added_with_the_others(tmp_path: Path, artifacts: Path) -> None:
    photos = make_photos(tmp_path / "photos", 3)
    far_future(photos[1])
    common = ["--index", tmp_path / "idx", "--model", artifacts]
    done = cli("index", "add", tmp_path / "photos", *common)
    no_traceback(done)  # was an OverflowError traceback, and none of the three added
    assert done.returncode == 0 and "added 3," in done.stdout
    assert "unchanged 3," in cli("index", "sync", tmp_path / "photos", *common).stdout  # the app's sync, too
    listed = json.loads(cli("index", "list", "--json", "--index", tmp_path / "idx").stdout)
    assert listed[0]["taken"].startswith("2300-01-01")  # what the file says, newest first


# --- 9. EXIF years before 1000 ---------------------------------------------------------------------


def exif_photo(path: Path, taken: str) -> Path:
    exif = Image.Exif()
    exif[0x8769] = {0x9003: taken}  # DateTimeOriginal
    Image.new("RGB", (16, 12), "blue").save(path, exif=exif)
    return path


def test_an_exif_year_before_photography_falls_back_to_the_file_date(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    forged = exif_photo(tmp_path / "photos" / "forged.jpg", "0999:01:01 00:00:00")
    old = exif_photo(tmp_path / "photos" / "old.jpg", "1999:07:31 18:30:00")
    os.utime(forged, (946_684_800, 946_684_800))  # 2000-01-01 UTC
    when, source = capture_time(str(forged), os.stat(forged).st_mtime_ns)
    assert source == "mtime" and when.startswith(("1999-12-31", "2000-01-01"))  # was "999-01-01T00:00:00", exif
    assert capture_time(str(old), 0) == ("1999-07-31T18:30:00", "exif")
    with Index.open(tmp_path / "idx", model=FakeEmbedder()) as index:
        index.add_photos(tmp_path / "photos", progress=False)
        assert [it.path for it in index.items(after="2024")] == []  # "999-..." sorted after "2024"
        assert [os.path.basename(it.path) for it in index.items()] == ["forged.jpg", "old.jpg"]
    assert parse_date("0999") == "0999-01-01T00:00:00"  # zero-padded, as stored dates are


# --- 4. a damaged index.vectors is detected and rebuilt -----------------------------------------------


def _damage(file: Path, how: str) -> None:
    from edge_gcl.index.vectors import VectorCache

    data = bytearray(file.read_bytes())
    head = json.loads(data[: VectorCache.HEADER_BYTES])
    count, dim = head["count"], head["dim"]
    matrix = VectorCache.HEADER_BYTES + 24 * count  # after vids, items, chunks, scales
    row = dim * np.dtype(head["dtype"]).itemsize
    if how == "random bytes in the matrix":
        data[matrix + row : matrix + 40 * row] = np.random.default_rng(0).bytes(39 * row)
    elif how == "one changed row":
        data[matrix + 7 * row : matrix + 8 * row] = data[matrix + 3 * row : matrix + 4 * row]
    elif how == "ids shifted by one":
        vids = VectorCache.HEADER_BYTES
        data[vids : vids + 8 * count] = data[vids + 8 : vids + 8 * count] + data[vids + 8 * count - 8 : vids + 8 * count]
    file.write_bytes(bytes(data))


def _true_scores(index: Index, table) -> list[dict[str, float]]:
    """Each query's exact score for every item (from SQLite's vectors when the cache was refused)."""
    return [{h.id: h.score for h in index.search(vector=q, k=len(index), approximate=False)} for q in table.queries]


def _all_scores_true(hits: list[list[tuple[str, float]]], truth: list[dict[str, float]]) -> bool:
    """The HNSW only picks candidates (a rebuilt graph may pick others): every score shown must be the item's."""
    return all(truth[q][i] == pytest.approx(score, abs=1e-6) for q, found in enumerate(hits) for i, score in found)


@pytest.mark.parametrize("how", ["random bytes in the matrix", "one changed row", "ids shifted by one"])
def test_a_damaged_vectors_file_is_rebuilt_from_sqlite(tmp_path: Path, how: str) -> None:
    from test_index_scale import TableEmbedder, build, results

    table = TableEmbedder(n=300, n_queries=10)
    path = tmp_path / "idx"
    with build(path, table, "float16", range(300)) as index:
        expected = results(index, table, approximate=False)
    _damage(path / "index.vectors", how)
    with Index.open(path) as index:
        assert results(index, table, approximate=False) == expected  # wrong scores against wrong photos before
        truth = _true_scores(index, table)
        assert _all_scores_true(results(index, table, approximate=True), truth)  # damaged ids: an IndexError
        assert index._vectors.from_cache == 0
    _damage(path / "index.vectors", how)
    with Index.open(path, model=table) as writer:  # a later add used to keep the damage
        writer.add_notes(["v:0"])
        writer.search(vector=table.queries[0], k=1)
    with Index.open(path) as index:
        assert results(index, table, approximate=False) == expected
        assert index._vectors.from_cache == 300  # the file written at that close is whole again


def test_a_damaged_usearch_file_is_rebuilt(tmp_path: Path) -> None:
    from test_index_scale import TableEmbedder, build, results

    table = TableEmbedder(n=300, n_queries=10)
    path = tmp_path / "idx"
    with build(path, table, "float16", range(300)) as index:
        results(index, table, approximate=True)  # builds the HNSW, saved at close
    data = bytearray((path / "index.usearch").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)
    (path / "index.usearch").write_bytes(bytes(data))
    with Index.open(path) as index:
        assert _all_scores_true(results(index, table, approximate=True), _true_scores(index, table))
        assert index._approximate.rebuilt == 1  # the damaged graph was refused, not loaded


def test_truncating_the_vectors_file_under_a_running_reader_is_harmless(tmp_path: Path) -> None:
    from test_index_scale import TableEmbedder, build

    table = TableEmbedder(n=300, n_queries=2)
    path = tmp_path / "idx"
    with build(path, table, "float16", range(300)) as index:
        index.search(vector=table.queries[0], k=3)
    query = tmp_path / "query.npy"
    np.save(query, table.queries[0])
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from edge_gcl.index import Index
        q = np.load({str(query)!r})
        with Index.open({str(path)!r}) as index:
            first = [h.id for h in index.search(vector=q, k=5)]
            print("ready", flush=True)
            sys.stdin.readline()  # the file is truncated meanwhile
            print("same" if [h.id for h in index.search(vector=q, k=5)] == first else "different", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout.readline().strip() == "ready"
    with open(path / "index.vectors", "r+b") as f:
        f.truncate(4096)
    out, err = child.communicate("go\n", timeout=60)
    assert child.returncode == 0, f"killed by signal {-child.returncode}" if child.returncode < 0 else err
    assert out.strip() == "same"


# --- 6. search on a full disk ----------------------------------------------------------------------


def test_search_answers_when_the_cache_cannot_be_written(tmp_path: Path, artifacts: Path) -> None:
    with Index.open(tmp_path / "idx", model=artifacts) as index:
        index.add_notes([f"note number {i}" for i in range(2000)], batch_size=500)  # index.vectors: ~116 KB

    def small_files() -> None:  # writes past 100 KB fail (EFBIG), as on a full disk: SQLite needs less
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    done = cli("search", "note number 7", "-k", "3", "--all", "--json", "--index", tmp_path / "idx", "--model",
               artifacts, setup=small_files)
    no_traceback(done)  # was an ENOSPC traceback and no results
    assert done.returncode == 0 and len(json.loads(done.stdout)) == 3
    assert "index.vectors: search cache not saved (File too large); the next open rebuilds it" in done.stderr
    assert not (tmp_path / "idx" / "index.vectors").exists()
    assert [p.name for p in (tmp_path / "idx").iterdir() if p.name.endswith(".tmp")] == []


# --- 7. reindex with the photos unreachable ----------------------------------------------------------


def test_reindex_with_the_photo_folder_gone_changes_nothing(tmp_path: Path, artifacts: Path) -> None:
    photos = make_photos(tmp_path / "card" / "DCIM", 3)
    common = ["--index", tmp_path / "idx"]
    assert cli("index", "add", tmp_path / "card", *common, "--model", artifacts).returncode == 0
    assert cli("index", "note", "beach day", "--photo", photos[0], *common, "--model", artifacts).returncode == 0
    before = cli("index", "list", "--json", *common).stdout
    (tmp_path / "card").rename(tmp_path / "unmounted")  # the card is out
    other = make_artifacts(tmp_path / "other", seed=1)
    done = cli("index", "reindex", *common, "--model", other)
    no_traceback(done)  # was "removed 3, updated 1", exit 0, and the photo+note became a note
    assert done.returncode == 1
    line = last_error(done)
    assert f"3 photos cannot be read (the folder {tmp_path / 'card' / 'DCIM'} is missing)" in line
    assert "nothing was changed" in line
    assert cli("index", "list", "--json", *common).stdout == before
    (tmp_path / "unmounted").rename(tmp_path / "card")  # back in: the reindex goes through
    done = cli("index", "reindex", *common, "--model", other)
    assert done.returncode == 0 and "updated 3" in done.stdout
    assert '"modality": "photo+note"' in cli("index", "list", "--json", *common).stdout


# --- 5. artifacts checked against their manifest at run time ------------------------------------------


def test_a_tower_with_altered_weights_is_refused_naming_the_file(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    folder = make_artifacts(tmp_path / "artifacts")
    make_photos(tmp_path / "photos", 2)
    common = ["--index", tmp_path / "idx", "--model", folder]
    assert cli("index", "add", tmp_path / "photos", *common).returncode == 0
    model = onnx.load(folder / "image_tower.onnx")
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[0, 0] += 1.0  # one weight: a photo no longer finds itself, silently
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, model.graph.initializer[0].name))
    onnx.save(model, folder / "image_tower.onnx")
    done = cli("search", "--image", tmp_path / "photos" / "img_0000.png", *common)
    no_traceback(done)
    assert done.returncode == 1 and done.stdout == ""
    assert last_error(done).startswith(f"edge-gcl: error: {folder / 'image_tower.onnx'}: SHA-256 ")
    assert "differs from the manifest's" in last_error(done) and "rebuild with `python -m export.compile" in last_error(done)


def test_verified_files_are_hashed_once_until_they_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_gcl import manifest
    from edge_gcl.runtime import OnnxEmbedder

    folder = make_artifacts(tmp_path / "artifacts")
    hashed: list[str] = []
    real = manifest.file_digest
    monkeypatch.setattr(manifest, "file_digest", lambda path: hashed.append(Path(path).name) or real(path))
    monkeypatch.setenv("EDGE_GCL_HOME", str(tmp_path / "home"))
    OnnxEmbedder(folder)
    assert sorted(hashed) == ["image_tower.onnx", "text_tower.onnx", "tokenizer.json"]
    OnnxEmbedder(folder)  # a second start: a stat per file
    assert len(hashed) == 3
    os.utime(folder / "text_tower.onnx")  # touched: hashed again (and still whole)
    OnnxEmbedder(folder)
    assert hashed[3:] == ["text_tower.onnx"]


def test_a_tower_that_is_not_a_model_is_one_line(tmp_path: Path) -> None:
    from edge_gcl.manifest import Manifest

    folder = make_artifacts(tmp_path / "artifacts")
    (folder / "text_tower.onnx").write_bytes(b"not an ONNX model " * 100)
    Manifest.load(folder).save(folder)  # even a manifest that vouches for it
    done = cli("index", "note", "words", "--index", tmp_path / "idx", "--model", folder)
    no_traceback(done)
    assert done.returncode == 1
    assert last_error(done).startswith(f"edge-gcl: error: {folder / 'text_tower.onnx'}: ONNX Runtime cannot load it")


def test_a_manifest_with_a_wrong_typed_chipset_is_one_line(tmp_path: Path) -> None:
    folder = make_artifacts(tmp_path / "artifacts")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["chipset"] = "Snapdragon 8 Gen 3"  # hand-edited: a name where an object belongs
    (folder / "manifest.json").write_text(json.dumps(manifest))
    done = cli("index", "note", "words", "--index", tmp_path / "idx", "--model", folder, "--provider", "qnn",
               "--form", "qdq")
    no_traceback(done)
    assert done.returncode == 1
    assert "manifest.json: not a valid edge-gcl manifest (chipset: expected an object, got str)" in last_error(done)


# --- 10. --index: only an edge-gcl index is opened, a damaged one is repaired, a read-only one is read ------


def test_a_foreign_database_is_refused_and_left_as_it_was(tmp_path: Path, artifacts: Path) -> None:
    import sqlite3

    foreign = tmp_path / "contacts.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE contacts (name TEXT)")
        conn.execute("INSERT INTO contacts VALUES ('Ann')")
    conn.close()
    before = foreign.read_bytes()
    text = tmp_path / "notes.txt"
    text.write_text("my notes\n")
    make_photos(tmp_path / "photos", 1)
    for args in (["index", "list", "--index", foreign],
                 ["index", "add", tmp_path / "photos", "--index", foreign, "--model", artifacts],
                 ["index", "add", tmp_path / "photos", "--index", text, "--model", artifacts]):
        done = cli(*args)
        no_traceback(done)  # --index naming a regular file was a FileExistsError traceback
        assert done.returncode == 1
        assert "not an edge-gcl index" in last_error(done) and "nothing was changed" in last_error(done)
    assert foreign.read_bytes() == before  # list switched it to WAL, add created edge-gcl tables in it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contacts.db", "notes.txt", "photos"]
    assert text.read_text() == "my notes\n"


def _damage_page(index_file: Path, table: str) -> None:
    """Random bytes over one leaf page of `table` (the middle one), as a bad sector would leave it."""
    import sqlite3

    with sqlite3.connect(index_file) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [r[0] for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno", (table,))]
    conn.close()
    with open(index_file, "r+b") as f:
        f.seek((leaves[len(leaves) // 2] - 1) * size)
        f.write(np.random.default_rng(0).bytes(size))


@pytest.mark.parametrize("table", ["items", "embeddings"])
def test_a_malformed_index_is_named_refuses_writes_and_is_repaired(tmp_path: Path, artifacts: Path,
                                                                    table: str) -> None:
    idx = tmp_path / "idx"
    notes = [f"note number {i} about the garden" for i in range(600)]
    with Index.open(idx, model=artifacts) as index:
        index.add_notes(notes)
    _damage_page(idx / "index.sqlite", table)
    listed = cli("index", "list", "--index", idx)
    no_traceback(listed)
    repair = f"`edge-gcl index repair --index {idx}`"
    if table == "items":  # reading the damaged table fails, naming the file and the way out
        assert listed.returncode == 1 and last_error(listed).startswith(f"edge-gcl: error: {idx / 'index.sqlite'}: ")
        assert "malformed" in last_error(listed) and repair in last_error(listed)
    added = cli("index", "note", "a new note", "--index", idx, "--model", artifacts)
    no_traceback(added)  # was written into the damaged file, "success"
    assert added.returncode == 1 and repair in last_error(added)
    fixed = cli("index", "repair", "--index", idx, "--model", artifacts)
    no_traceback(fixed)
    assert fixed.returncode == 0, fixed.stderr
    kept = [p for p in idx.iterdir() if p.name.startswith("index.sqlite.damaged-")]
    assert kept and "the damaged file is kept as" in fixed.stdout
    listed = cli("index", "list", "--json", "--index", idx)
    survivors = {it["text"] for it in json.loads(listed.stdout)}
    if table == "embeddings":  # the vectors of one page were lost: their notes are embedded again
        assert survivors == set(notes) and "embedded again 0," not in fixed.stdout
    else:  # the records of one page were lost, and said so
        lost = len(notes) - len(survivors)
        assert 0 < lost < 100 and f"lost {lost};" in fixed.stdout and survivors < set(notes)
    assert cli("index", "note", "a new note", "--index", idx, "--model", artifacts).returncode == 0
    hits = cli("search", notes[7], "-k", "1", "--all", "--index", idx, "--model", artifacts)
    assert hits.returncode == 0 and notes[7] in hits.stdout or notes[7] not in survivors


def _make_read_only(folder: Path) -> list[list[str]]:
    """Make `folder` and its files unwritable, even to root (chattr +i); the commands that undo it."""
    files = [str(p) for p in [folder, *folder.iterdir()]]
    if os.geteuid() != 0:
        for p in files:
            os.chmod(p, 0o555 if os.path.isdir(p) else 0o444)
        return [["chmod", "u+w", p] for p in files]
    if subprocess.run(["chattr", "+i", *files], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (no chattr +i)")
    return [["chattr", "-i", *files]]


def test_a_read_only_index_can_be_listed_and_searched(tmp_path: Path, artifacts: Path) -> None:
    idx = tmp_path / "idx"
    make_photos(tmp_path / "photos", 2)
    common = ["--index", idx, "--model", artifacts]
    assert cli("index", "add", tmp_path / "photos", *common).returncode == 0
    assert cli("index", "note", "the tickets are in the drawer", *common).returncode == 0
    undo = _make_read_only(idx)
    try:
        listed = cli("index", "list", "--json", "--index", idx)
        assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 3, listed.stderr
        found = cli("search", "tickets drawer", "-k", "1", "--all", *common)
        assert found.returncode == 0 and "the tickets are in the drawer" in found.stdout, found.stderr
        assert cli("index", "stats", "--index", idx).returncode == 0
        added = cli("index", "note", "another", *common)
        no_traceback(added)
        assert added.returncode == 1 and "read-only" in last_error(added)
    finally:
        for command in undo:
            subprocess.run(command, check=True)


# --- 1. export.compile --out replaces only a folder it built -------------------------------------------


def compile_main(*args: str | Path) -> int:
    from export.compile import main

    return main([*map(str, args)])


USERS_FILES = ["thesis.txt", "images/photo.jpg", "textbook.pdf", ".notes", "ocr_notes.docx"]


@pytest.mark.parametrize("what", ["a folder of other files", "a file", "the working folder", "the project's parent",
                                  *(f"a build with {name} added" for name in USERS_FILES)])
def test_compile_out_never_replaces_what_it_did_not_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str], what: str) -> None:
    import export.compile
    from edge_gcl.manifest import Manifest

    def never(stage: Path, out: Path) -> None:  # should the check ever let one through, nothing is replaced
        raise AssertionError(f"the build got as far as replacing {out}")

    monkeypatch.setattr(export.compile, "_replace_folder", never)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    if what == "a folder of other files":
        out.mkdir()
        (out / "thesis.txt").write_text("four years of work")
    elif what == "a file":
        out.write_text("four years of work")
    elif what == "the working folder":
        out = Path(".")
    elif what == "the project's parent":
        out = ROOT.parent
    else:  # a folder export.compile built, and a file the user put in it since (names alike a build's too)
        make_artifacts(out)
        manifest = Manifest.load(out)
        manifest.made_by = "export.compile"
        manifest.save(out)
        users = out / what.removeprefix("a build with ").removesuffix(" added")
        users.parent.mkdir(exist_ok=True)
        users.write_text("four years of work")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert compile_main("--out", out, "--skip-compile") == 1  # was exit 0 after deleting it (or, for ., a traceback)
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: --out {out}: ") and len(line.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing built, moved or deleted
    if what == "a folder of other files":
        assert (out / "thesis.txt").read_text() == "four years of work"
    elif what.startswith("a build with"):
        assert users.read_text() == "four years of work"
    elif what == "a file":
        assert out.read_text() == "four years of work"


def test_compile_with_an_unknown_chipset_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compile_main("--chipset", "Snapdragon 9999", "--out", tmp_path / "out") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown chipset 'Snapdragon 9999'; choose one of:") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --- 11. one line instead of a traceback -------------------------------------------------------------


@pytest.fixture(scope="module")
def many_notes(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Path:
    idx = tmp_path_factory.mktemp("many") / "idx"
    with Index.open(idx, model=artifacts) as index:
        index.add_notes([f"note number {i} about the garden and the weather" for i in range(2000)], batch_size=500)
    return idx


@pytest.mark.parametrize(("command", "lines"), [(["index", "list"], 1), (["index", "list", "--json"], 1),
                                                (["index", "stats"], 0)])
def test_output_cut_short_by_head_is_not_a_traceback(many_notes: Path, command: list[str], lines: int) -> None:
    child = subprocess.Popen([sys.executable, "-m", "edge_gcl.cli", *command, "--index", str(many_notes)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    for _ in range(lines):  # `| head -1`: a line, then the pipe is gone (stats: gone before it prints)
        assert child.stdout.readline()
    child.stdout.close()
    err = child.stderr.read().decode()
    child.wait(timeout=60)
    assert err == "" and child.returncode in (0, 141)  # 141: stopped by the closed pipe, like any Unix tool


def test_app_with_a_port_out_of_range_is_one_line_before_indexing(tmp_path: Path, artifacts: Path) -> None:
    make_photos(tmp_path / "photos", 2)
    done = cli("app", "--photos", tmp_path / "photos", "--index", tmp_path / "idx", "--model", artifacts,
               "--port", "99999")
    no_traceback(done)  # was an OverflowError traceback, after indexing the whole folder
    assert done.returncode == 1 and last_error(done) == "edge-gcl app: error: --port 99999: expected 0 to 65535 (0: any free port)"
    assert not (tmp_path / "idx").exists()


def test_deeply_nested_json_to_the_app_is_a_400(tmp_path: Path) -> None:
    from test_app import ColorEmbedder, call_json, make_library, serving

    from edge_gcl.app.server import build_index

    make_library(tmp_path / "photos")
    index, _ = build_index(tmp_path / "photos", tmp_path / "idx", model=ColorEmbedder(), progress=False)
    json_body = {"Content-Type": "application/json"}
    with index, serving(index) as server:
        status, body = call_json(server, "POST", "/api/note", b"[" * 200_000 + b"]" * 200_000, json_body)
        assert (status, body["error"]) == (400, "request body: JSON nested too deeply")  # was a 500
        deep: object = "x"
        for _ in range(900):  # parses, but SQLite's JSON functions stop at 1000 levels
            deep = [deep]
        status, body = call_json(server, "POST", "/api/note", json.dumps({"text": "a note", "meta": {"k": deep}}).encode(),
                                 json_body)
        assert (status, body["error"]) == (400, "meta: nested deeper than 32 levels")
        assert len(index) == 4  # the library's photos; nothing added


def test_a_lone_onnx_file_as_the_model_is_one_line(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a model " * 10)
    done = cli("index", "note", "hello", "--index", tmp_path / "idx", "--model", model)
    no_traceback(done)
    assert done.returncode == 1 and len([line for line in done.stderr.splitlines() if "error" in line]) == 1
    assert last_error(done).startswith(f"edge-gcl: error: {model}: one .onnx file is not a model edge-gcl runs")


# --- 12. smaller items -------------------------------------------------------------------------------


def test_an_index_built_with_lite_opens_again_in_another_process(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    common = ["--index", tmp_path / "idx", "--model", "lite"]
    assert cli("index", "note", "a walk by the river", *common).returncode == 0
    done = cli("search", "river", "--all", *common)  # another process: the same fresh weights, the same model id
    assert done.returncode == 0 and "a walk by the river" in done.stdout, done.stderr


def test_note_text_cannot_drive_the_terminal(tmp_path: Path, artifacts: Path) -> None:
    common = ["--index", tmp_path / "idx", "--model", artifacts]
    hostile = "groceries \x1b]0;pwned\x07\x1b[2J\x1b[31mred \u202eevil\r"
    assert cli("index", "note", hostile, *common).returncode == 0
    for done in (cli("index", "list", "--index", tmp_path / "idx"), cli("search", "groceries", "--all", *common)):
        assert done.returncode == 0
        assert not any(c in done.stdout for c in "\x1b\x07\r\u202e")  # printed raw, they retitled and cleared it
        assert "groceries \\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred \\u202eevil" in done.stdout
    as_json = json.loads(cli("index", "list", "--json", "--index", tmp_path / "idx").stdout)
    assert as_json[0]["text"] == hostile  # the note itself is kept as written


def test_a_meta_key_with_a_quote_is_refused(tmp_path: Path, artifacts: Path) -> None:
    done = cli("index", "note", "x", "--meta", 'a"b=1', "--index", tmp_path / "idx", "--model", artifacts)
    no_traceback(done)  # was stored, and no --where could ever find it
    assert done.returncode == 1 and "meta: key 'a\"b'" in last_error(done)


@pytest.mark.parametrize(("args", "message"), [
    (["--cross-modal-offset", "1e308"], "--cross-modal-offset 1e+308: expected a number from -2 to 2"),
    (["--after", "2024", "--before", "2023"], "--before 2023 is not after --after 2024: no date can match"),
    (["--after", "last tuesday"], "--after 'last tuesday': expected a date like 2024-07-31"),
    (["-k", "0"], "-k 0: must be a positive int"),
])
def test_bad_search_options_are_refused_before_the_model_loads(tmp_path: Path, artifacts: Path, args: list[str],
                                                               message: str) -> None:
    make_photos(tmp_path / "photos", 1)
    assert cli("index", "add", tmp_path / "photos", "--index", tmp_path / "idx", "--model", artifacts).returncode == 0
    done = cli("search", "dog", *args, "--index", tmp_path / "idx", "--model", artifacts)
    no_traceback(done)  # 1e308 printed inf scores; --before before --after returned nothing, silently
    assert done.returncode == 1 and done.stdout == ""
    assert message in last_error(done)
    assert "loading" not in done.stderr  # refused before the model loaded
    if "--before" in args:
        listed = cli("index", "list", *args, "--index", tmp_path / "idx")
        assert listed.returncode == 1 and message in last_error(listed)


def test_covr_frame_weights_stay_finite_for_huge_scores() -> None:
    from edge_gcl.eval.covr import frame_weights

    assert frame_weights([1e308, 0.2, 0.3]).tolist() == [1.0, 0.0, 0.0]  # NaN weights before, and other figures
    assert frame_weights([-1e308, 1e308]).tolist() == [0.0, 1.0]
    scores = [0.21, 0.25, 0.19]
    z = np.asarray(scores) / 0.1
    assert np.allclose(frame_weights(scores), np.exp(z - z.max()) / np.exp(z - z.max()).sum())  # unchanged


def test_app_answers_carry_cross_origin_and_referrer_policies(tmp_path: Path) -> None:
    from test_app import ColorEmbedder, call, make_library, serving

    from edge_gcl.app.server import build_index

    make_library(tmp_path / "photos")
    index, _ = build_index(tmp_path / "photos", tmp_path / "idx", model=ColorEmbedder(), progress=False)
    with index, serving(index) as server:
        photo = index.items(modalities=["photo"])[0].id
        for path in (f"/thumb/{photo}", "/thumb/p_0000000000000000", "/api/stats", "/"):
            conn = __import__("http.client").client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.getheader("Cross-Origin-Resource-Policy") == "same-origin", path  # a page elsewhere
            assert response.getheader("Cross-Origin-Opener-Policy") == "same-origin"  # could probe for ids
            assert response.getheader("Referrer-Policy") == "no-referrer"
            conn.close()
        assert call(server, "GET", f"/thumb/{photo}")[0] == 200


def test_sigterm_stops_the_app_cleanly(tmp_path: Path, artifacts: Path) -> None:
    make_photos(tmp_path / "photos", 2)
    child = subprocess.Popen(
        [sys.executable, "-m", "edge_gcl.cli", "app", "--photos", str(tmp_path / "photos"), "--index",
         str(tmp_path / "idx"), "--model", str(artifacts), "--port", "0", "--poll", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        for line in child.stdout:
            if line.startswith("open http://"):
                break
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, (child.returncode, err)  # was killed by the signal (-15), the index not closed
    assert out.strip().endswith("stopped") and "Traceback" not in err


def test_the_decode_memory_benchmark_runs_and_meets_its_goal(tmp_path: Path, artifacts: Path) -> None:
    out = tmp_path / "decode_memory.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.decode_memory", "--model", str(artifacts), "--cases",
                           "upload-photo", "upload-thin", "--json", str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == ["upload-photo", "upload-thin"] and all(r["met"] and r["ok"] for r in rows)

"""Words in photos: the OCR engine (PP-OCR graphs of the rapidocr wheel on edge-gcl's own ONNX
Runtime sessions), the words table and its merge into search, the CLI, the app, an old index
gaining text, and the OCR graphs compiled for the HTP (emulated; slow, one test).

The photos are drawn here (matplotlib's DejaVu font, always installed with the dev extra); the
embedder is test_runtime's tiny ONNX model, so rankings by vectors mean little and the tests check
what the words do.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).parent))
from test_runtime import make_artifacts  # noqa: E402

from edge_gcl.index import FORMAT_VERSION, Index, chunk_note, photo_id  # noqa: E402
from edge_gcl.index.words import fold, matching_keys, terms  # noqa: E402
from edge_gcl.ocr.boxes import find_boxes, min_area_rect, side_lengths  # noqa: E402

pytestmark = pytest.mark.skipif(importlib.util.find_spec("rapidocr") is None, reason="the [export] extra (rapidocr's models)")

LINES = ["Boarding pass", "Gate B22  Seat 14C", "Café crème 3,50", "RE16 TGK"]


def font(size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def screenshot(lines: list[str] = LINES, size: tuple[int, int] = (720, 400)) -> Image.Image:
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        d.text((30, 30 + 80 * i), line, fill=(20, 20, 20), font=font(44))
    return img


def save_sideways_with_exif(img: Image.Image, path: Path) -> Path:
    """Stored turned by 90 degrees counter-clockwise, with EXIF orientation 6 (the viewer turns it back)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    img.rotate(90, expand=True).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


@pytest.fixture(scope="module")
def engine():
    from edge_gcl.ocr import OcrEngine

    return OcrEngine.from_package()


@pytest.fixture(scope="module")
def library(tmp_path_factory, engine):
    """A folder: the screenshot upright, turned 90 degrees in its pixels, stored sideways with EXIF,
    and two text-free photos; an index of it with OCR on."""
    root = tmp_path_factory.mktemp("ocr")
    photos = root / "photos"
    photos.mkdir()
    screenshot().save(photos / "upright.png")
    screenshot(["Lease agreement", "RE16 TGK"]).rotate(90, expand=True).save(photos / "turned.png")
    save_sideways_with_exif(screenshot(["Croissant 1,20", "Zürich"]), photos / "exif.jpg")
    for i in range(2):  # text-free: smooth colour ramps
        ramp = np.linspace(0, 255, 320, dtype=np.float32)[None, :, None] * np.array([1.0, 0.5 + 0.4 * i, 0.2])
        Image.fromarray(np.repeat(ramp, 240, axis=0).astype(np.uint8)).save(photos / f"noise{i}.jpg")
    artifacts = make_artifacts(root / "artifacts")
    index = Index.open(root / "idx", model=str(artifacts), ocr=engine)
    report = index.add_photos(photos, progress=False)
    assert len(report.added) == 5 and not report.skipped
    yield index, photos, artifacts
    index.close()


# --- the engine --------------------------------------------------------------------------------


def test_a_screenshot_is_read_upright_turned_in_its_pixels_and_turned_by_exif(engine, tmp_path) -> None:
    upright = engine.read_image(screenshot()).text
    assert upright.splitlines() == ["Boarding pass", "Gate B22 Seat 14C", "Café crème 3,50", "RE16 TGK"]
    for degrees in (90, 180, 270):  # turned in the pixels: tall boxes turned back, 180 by the classifier
        assert engine.read_image(screenshot().rotate(degrees, expand=True)).text == upright, degrees
    assert engine.read(save_sideways_with_exif(screenshot(), tmp_path / "sideways.jpg")).text == upright


def test_a_photo_is_read_while_its_decoding_counts_against_the_budget(engine, tmp_path, monkeypatch) -> None:
    """Photos read in several threads stay under the decoding budget together: each decoded image is
    read inside its reservation, one reservation at a time."""
    from edge_gcl.transform import DECODING

    path = tmp_path / "shot.png"
    screenshot().save(path)
    held: dict[str, int] = {}
    detect, recognize = engine.detect, engine.recognize

    def spy_detect(image, **kw):  # noqa: ANN001, ANN202
        held.setdefault(kw["graph"], DECODING.used_bytes)
        return detect(image, **kw)

    def spy_recognize(crops):  # noqa: ANN001, ANN202
        held.setdefault("rec", DECODING.used_bytes)
        return recognize(crops)

    monkeypatch.setattr(engine, "detect", spy_detect)
    monkeypatch.setattr(engine, "recognize", spy_recognize)
    assert engine.read(path).text.splitlines()[0] == "Boarding pass"
    assert held["gate"] > 0 and held["det"] > 0 and held["rec"] > 0, held
    assert DECODING.used_bytes == 0


def test_a_photo_without_text_stops_after_the_gate(engine) -> None:
    plain = Image.new("RGB", (640, 480), (90, 140, 200))
    result = engine.read_image(plain)
    assert result.text == "" and "gate" in result.timings_ms and "det" not in result.timings_ms and "rec" not in result.timings_ms


def test_long_lines_are_cut_between_words_into_the_recognisers_fixed_width(engine) -> None:
    line = "The quick brown fox jumps over the lazy dog"
    img = screenshot([line], size=(1100, 120))
    assert engine.config.rec_width < 48 * img.width / 60  # the line is several pieces long
    assert engine.read_image(img).text == line


def test_the_detector_looks_only_where_the_gate_saw_text(engine) -> None:
    """A long screenshot with text in its top third: of its three tiles only the first is detected
    at full size, and on a graph that takes any size only around the text (the blank rest costs nothing)."""
    tall = Image.new("RGB", (500, 1500), "white")
    tall.paste(screenshot(["Gate B22", "RE16 TGK"], size=(500, 260)), (0, 40))
    runs: list[tuple[str, tuple[int, ...]]] = []
    run = engine._run

    def spy(graph: str, x: np.ndarray) -> np.ndarray:
        runs.append((graph, x.shape))
        return run(graph, x)

    engine._run = spy
    try:
        text = engine.read_image(tall).text
    finally:
        del engine._run
    assert text.splitlines() == ["Gate B22", "RE16 TGK"]
    det = [shape for graph, shape in runs if graph == "det"]
    assert [g for g, _ in runs].count("gate") == 3 and len(det) == 1  # three tiles gated, one detected
    assert det[0][2] * det[0][3] < 0.6 * engine.config.det_size**2  # just the text's part of that tile


def test_lines_are_read_at_their_own_width_on_the_cpu_and_at_the_fixed_one_alike(engine) -> None:
    from edge_gcl.ocr.engine import rec_inputs

    cfg = engine.config
    short = screenshot(["RE16"], size=(200, 90))
    (piece, _), = rec_inputs(short, cfg.rec_height, cfg.rec_width, pad=False)
    assert piece.shape[0] == 3 and piece.shape[1] == cfg.rec_height and piece.shape[2] < cfg.rec_width
    line = screenshot(["The quick brown fox jumps over the lazy dog"], size=(1100, 120))
    pieces = rec_inputs(line, cfg.rec_height, cfg.rec_width, pad=False)
    assert len(pieces) > 1 and all(p.shape[2] <= cfg.rec_width for p, _ in pieces)
    assert [j for _, j in pieces] == [j for _, j in rec_inputs(line, cfg.rec_height, cfg.rec_width)]  # cut alike
    grouped = engine.read_image(screenshot()).text
    engine._any_size["rec"] = False  # the NPU's way: every piece padded to rec_width
    try:
        assert engine.read_image(screenshot()).text == grouped
    finally:
        engine._any_size["rec"] = True


def test_read_many_reads_photos_at_once_in_their_order(tmp_path) -> None:
    from edge_gcl.ocr import OcrEngine

    paths = []
    for i, words in enumerate([["Gate B22"], ["RE16 TGK"], ["Croissant"], ["Zürich"]]):
        screenshot(words, size=(400, 120)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a photo")
    paths.insert(2, tmp_path / "broken.jpg")
    two = OcrEngine.from_package(workers=2)
    assert two.workers == 2
    got = two.read_many(paths)
    assert [r.text for r in got if not isinstance(r, str)] == ["Gate B22", "RE16 TGK", "Croissant", "Zürich"]
    assert isinstance(got[2], str) and "broken.jpg" in got[2]


def test_components_join_runs_that_touch_only_through_others() -> None:
    from edge_gcl.ocr.boxes import components

    mask = np.zeros((9, 12), np.float32)
    mask[1:8, 1] = mask[7, 1:10] = mask[1:8, 9] = 0.8  # a U: its arms meet only at the bottom row
    mask[1, 3:6] = 0.8  # a bar apart from it
    mask[2, 6] = 0.8  # touching the bar diagonally only
    mask[5, 11] = 0.4  # a faint speck: under min_score
    found = sorted((c.pixels, round(c.score, 3)) for c in components(mask, 0.3, min_score=0.5))
    assert found == [(4, 0.8), (21, 0.8)]
    assert len(components(mask, 0.3)) == 3


def test_db_boxes_from_a_probability_map() -> None:
    prob = np.zeros((60, 120), np.float32)
    prob[10:20, 10:70] = 0.9  # a line
    prob[40:50, 30:40] = 0.4  # too faint for the box threshold
    boxes = find_boxes(prob, threshold=0.3, box_threshold=0.5, unclip_ratio=1.6)
    assert len(boxes) == 1
    (box, score), = boxes
    w, h = side_lengths(box)
    assert score == pytest.approx(0.9) and w > 60 and h > 10  # grown by DB's unclip offset
    points = np.array([[0, 0], [10, 10], [0, 20], [-10, 10]], np.float32)  # a square turned by 45 degrees
    rect = min_area_rect(points)
    assert np.prod(side_lengths(rect)) == pytest.approx(200, rel=1e-4)


# --- words: folding and the FTS table ----------------------------------------------------------


def test_fold_ignores_case_and_accents() -> None:
    assert fold("Café CRÈME", None, "Zürich") == "cafe creme\nzurich"
    assert terms("  RE16   re16 tgk ") == ["re16", "tgk"]


def test_quotes_and_percent_signs_in_a_query_are_words(tmp_path) -> None:
    from edge_gcl.index.store import Store

    store = Store.open(tmp_path / "i.sqlite", model_id="m", embed_dim=4)
    with store.write() as conn:
        conn.execute("INSERT INTO items (id, modality, text, created, updated) VALUES ('n1', 'note', ?, 0, 0)",
                     ('he said "50% off" at 5_6',))
    conn = store.conn
    assert len(matching_keys(conn, '"50% off"')) == 1 and len(matching_keys(conn, "5_6")) == 1
    assert len(matching_keys(conn, "60%")) == 0 and len(matching_keys(conn, "5x6")) == 0
    store.close()


def test_a_short_term_is_a_whole_word_a_longer_one_a_substring(tmp_path) -> None:
    from edge_gcl.index.store import Store

    store = Store.open(tmp_path / "i.sqlite", model_id="m", embed_dim=4)
    notes = {"n1": "lemon cake", "n2": "cake on the table", "n3": "gate B2, seat 14A", "n4": "gate B22"}
    with store.write() as conn:
        for key, text in notes.items():
            conn.execute("INSERT INTO items (id, modality, text, created, updated) VALUES (?, 'note', ?, 0, 0)",
                         (key, text))
    ids = dict(store.conn.execute("SELECT key, id FROM items"))

    def found(query: str) -> set[str]:
        return {ids[int(k)] for k in matching_keys(store.conn, query)}

    assert found("on cake") == {"n2"}  # "on" inside "lemon" is no word of it
    assert found("b2") == {"n3"} and found("b22") == {"n4"}  # "B22" holds "B2", not as a word
    assert found("mon cake") == {"n1"}  # 3 characters: a substring, as "RE16" in "RE16 TGK"
    assert found("14a") == {"n3"} and found("a") == set()
    store.close()


def test_an_sqlite_without_the_trigram_tokenizer_is_one_line(tmp_path) -> None:
    from edge_gcl.index.words import check_sqlite

    check_sqlite("3.34.0")
    with pytest.raises(RuntimeError, match=r"SQLite 3\.31\.1 .* older than 3\.34"):
        check_sqlite("3.31.1")


# --- the index ---------------------------------------------------------------------------------


def test_the_text_is_stored_and_a_substring_finds_a_plate(library) -> None:
    index, photos, _ = library
    assert index[photo_id(photos / "upright.png")].ocr.splitlines()[-1] == "RE16 TGK"
    assert index[photo_id(photos / "noise0.jpg")].ocr == ""  # read, nothing found
    hits = index.search("RE16", k=5)
    assert {h.path for h in hits if h.matched} == {str(photos / "upright.png"), str(photos / "turned.png")}
    assert all(h.matched for h in hits[:2]) and not any(h.matched for h in hits[2:])
    assert [h.path for h in index.search("gate b22", k=1)] == [str(photos / "upright.png")]
    assert index.search("b22seat", k=1)[0].matched  # OCR's spaces do not matter: "Lemoine -Guest" is "Lemoine-Guest"
    assert index.search("14", k=1)[0].path == str(photos / "upright.png")  # a term under 3 characters


def test_accents_and_case_do_not_matter(library) -> None:
    index, photos, _ = library
    for query in ("CAFE CREME", "café crème", "Creme"):
        assert index.search(query, k=1)[0].path == str(photos / "upright.png"), query
    assert index.search("zurich croissant", k=1)[0].path == str(photos / "exif.jpg")  # read through its EXIF turn
    assert index.search("LEASE", k=1)[0].path == str(photos / "turned.png")  # read turned by 90 in its pixels


def test_word_matches_come_first_whatever_the_cut_off_and_respect_the_filters(library) -> None:
    index, photos, _ = library
    hits = index.search("lease agreement", k=5, min_score=0.9999)  # a cut-off nothing else passes
    assert [h.path for h in hits] == [str(photos / "turned.png")] and hits[0].matched
    assert index.search("lease agreement", k=5, modalities=["note"]) == []
    assert index.search("lease agreement", k=5, after="2999") == []
    assert not index.search("lease agreement", k=5, words="")[0].matched  # words="" turns the rule off
    assert [h.id for h in index.search("lease agreement", k=5, sort="date", min_score=0.9999)] == [hits[0].id]


def test_the_ocr_text_adds_vectors_to_the_photo(library) -> None:
    index, photos, _ = library
    rows = index.store.conn.execute(
        "SELECT count(*) FROM embeddings WHERE item = (SELECT key FROM items WHERE id = ?)", (photo_id(photos / "upright.png"),)
    ).fetchone()[0]
    chunks = chunk_note(index[photo_id(photos / "upright.png")].ocr, index.embedder.tokenizer)
    assert rows == 1 + len(chunks) >= 2  # the photo, then the photo fused with each chunk of its text
    assert index.search(image=photos / "noise1.jpg", k=1)[0].path == str(photos / "noise1.jpg")  # still found by what it shows


def test_no_ocr_reads_nothing_and_read_text_adds_it_later(tmp_path, engine) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    screenshot().save(photos / "s.png")
    artifacts = make_artifacts(tmp_path / "artifacts")
    with Index.open(tmp_path / "idx", model=str(artifacts), ocr=False) as index:
        index.add_photos(photos, progress=False)
        assert index[photo_id(photos / "s.png")].ocr is None and not index.search("RE16", k=1)[0].matched
    with Index.open(tmp_path / "idx", model=str(artifacts), ocr=engine) as index:
        report = index.read_text(progress=False)
        assert report.updated == [photo_id(photos / "s.png")]
        assert index.search("RE16", k=1)[0].matched
        assert index.read_text(progress=False).updated == []  # nothing left to read


def test_a_format_2_index_is_migrated_and_reindex_reads_its_photos(tmp_path, engine) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    screenshot().save(photos / "s.png")
    artifacts = make_artifacts(tmp_path / "artifacts")
    with Index.open(tmp_path / "idx", model=str(artifacts), ocr=False) as index:
        index.add_photos(photos, progress=False)
        index.add_note("Gate change: now B24")
    with sqlite3.connect(tmp_path / "idx" / "index.sqlite") as conn:  # what edge-gcl wrote before OCR
        for trigger in ("items_words_insert", "items_words_delete", "items_words_update", "items_meaning_update"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("DROP TABLE item_words")
        conn.execute("DROP TABLE ocr_meaning")
        conn.execute("ALTER TABLE items DROP COLUMN ocr")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    with Index.open(tmp_path / "idx") as index:
        assert index.stats().format_version == FORMAT_VERSION == 3 and len(index) == 2
        assert [h.text for h in index.search(vector=np.ones(16), words="b24", k=1)] == ["Gate change: now B24"]
        report = index.reindex(str(artifacts), ocr=engine, progress=False)
        assert sorted(report.updated) == sorted(index)
        assert index[photo_id(photos / "s.png")].ocr.endswith("RE16 TGK")
    with Index.open(tmp_path / "idx", model=str(artifacts), ocr=False) as index:
        assert index.search("re16", k=1)[0].path == str(photos / "s.png")


def test_the_cli_reads_lists_and_finds_the_words(library, tmp_path, capsys, monkeypatch) -> None:
    from edge_gcl.cli import main
    from edge_gcl.ocr import OcrEngine

    _, photos, artifacts = library
    engine = OcrEngine.from_package()  # the tiny artifacts ship no OCR graphs: as if they did
    monkeypatch.setattr("edge_gcl.ocr.load_ocr", lambda _, ocr="auto", **k: engine if ocr in ("auto", True) else ocr or None)
    common = ["--index", str(tmp_path / "idx"), "--model", str(artifacts)]
    assert main(["index", "add", str(photos / "upright.png"), *common]) == 0
    assert "PP-OCR" in capsys.readouterr().err
    assert main(["index", "list", "--json", "--index", str(tmp_path / "idx")]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["ocr"].endswith("RE16 TGK")
    assert main(["search", "re16", "--json", "-k", "1", *common]) == 0
    (hit,) = json.loads(capsys.readouterr().out)
    assert hit["matched"] is True and hit["ocr"].endswith("RE16 TGK")
    assert main(["index", "add", str(photos / "exif.jpg"), "--no-ocr", *common]) == 0
    assert "PP-OCR" not in capsys.readouterr().err
    assert main(["index", "list", "--index", str(tmp_path / "idx")]) == 0
    assert "reads: Boarding pass" in capsys.readouterr().out
    assert main(["index", "read-text", *common]) == 0
    assert "updated 1" in capsys.readouterr().out


def test_the_app_shows_the_text(library) -> None:
    from edge_gcl.app.server import PhotoSearchApp, static_file

    index, photos, _ = library
    app = PhotoSearchApp(index)
    found = app.search({"q": "re16 tgk", "k": "3"})
    assert found["hits"][0]["ocr"].endswith("RE16 TGK") and found["hits"][0]["matched"] is True
    items = {it["name"]: it for it in app.items({})["items"]}
    assert items["upright.png"]["ocr"].startswith("Boarding pass") and "ocr" not in items["noise0.jpg"]
    assert b"hit.ocr" in static_file("app.js") and b".ocr-text" in static_file("app.css")


# --- the NPU -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_ocr_graphs_compile_fully_for_the_htp_and_read_in_emulation(tmp_path) -> None:
    """export.ocr at a small detector size: every node of every graph on the NPU, the gate's
    character accuracy measured in HTP emulation, and `--provider qnn` reading a small crop."""
    pytest.importorskip("onnx")
    from edge_gcl.manifest import file_digest
    from edge_gcl.ocr import OcrConfig
    from edge_gcl.ocr.artifacts import from_artifacts
    from edge_gcl.qnn_ep import qnn_available
    from export.chipsets import get_chipset
    from export.ocr import build_ocr

    if not qnn_available():
        pytest.skip("onnxruntime-qnn is not installed here")
    photos = []
    for i in range(2):
        photos.append(tmp_path / f"p{i}.jpg")
        Image.new("RGB", (160, 120), (40 * i, 120, 200)).save(photos[-1])
    config = OcrConfig(det_size=128, gate_size=96)
    built = build_ocr(tmp_path, precision="w8a16", chip=get_chipset("8 Gen 3"), photos=photos, config=config,
                      n_calibration=4, n_heldout=1, n_heldout_lines=2, say=lambda s: None)
    for name, tower in built.towers.items():
        assert tower.npu_node_share == 1.0, name
    fidelity = built.extra["fidelity"]
    assert fidelity["checked"] and fidelity["form"] == "ctx" and fidelity["rec_char_accuracy"] >= 0.95

    class Manifest:  # what from_artifacts reads of a manifest
        towers = built.towers
        files = {f: file_digest(tmp_path / f) for t in built.towers.values() for f in t.files.values()}  # as saved
        extra = {"ocr": built.extra}
        chipset = {"soc_model": 57, "htp_arch": "v75"}
        precision = "w8a16"

    engine = from_artifacts(tmp_path, Manifest, provider="qnn")
    assert "Hexagon NPU" in engine.description
    img = Image.new("RGB", (128, 64), "white")
    ImageDraw.Draw(img).text((8, 16), "RE16", fill="black", font=font(28))
    assert engine.read_image(img).text == "RE16"


def test_character_accuracy_is_one_minus_the_edit_distance_share() -> None:
    from edge_gcl.metrics import char_accuracy, edit_distance

    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3 and edit_distance("flaw", "lawn") == 2
    assert edit_distance("gate B22 seat".split(), "gate seat".split()) == 1
    assert char_accuracy(["RE16 TGK", "B22"], ["RE16 TCK", "B22"]) == pytest.approx(1 - 1 / 11)
    assert char_accuracy(["ab"], ["xyzxyz"]) == 0.0


def test_repair_embeds_a_photo_again_with_its_text_read(tmp_path, engine) -> None:
    """`index repair` re-embeds an item whose vectors were lost: a photo with text gets its OCR rows back,
    from the text already stored (not read again)."""
    from edge_gcl.index.repair import repair

    photos = tmp_path / "photos"
    photos.mkdir()
    screenshot().save(photos / "s.png")
    artifacts = make_artifacts(tmp_path / "artifacts")
    key_of = "SELECT key FROM items WHERE id = ?"
    with Index.open(tmp_path / "idx", model=str(artifacts), ocr=engine) as index:
        index.add_photos(photos, progress=False)
        pid = photo_id(photos / "s.png")
        before = index.store.conn.execute(f"SELECT count(*) FROM embeddings WHERE item = ({key_of})", (pid,)).fetchone()[0]
        with index.store.write() as conn:  # as a damaged page would leave it: the item, no vectors
            conn.execute(f"DELETE FROM embeddings WHERE item = ({key_of})", (pid,))
    assert before >= 2
    report = repair(tmp_path / "idx", model=str(artifacts), progress=False)
    assert report.reembedded == [pid]
    with Index.open(tmp_path / "idx", model=str(artifacts), ocr=False) as index:
        after = index.store.conn.execute(f"SELECT count(*) FROM embeddings WHERE item = ({key_of})", (pid,)).fetchone()[0]
        assert after == before and index.search("gate B22", k=1)[0].path == str(photos / "s.png")

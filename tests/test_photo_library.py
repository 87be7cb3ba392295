"""What a phone library needs (issue 15): HEIC photos, capture dates, a relevance cut-off, listing
and removing, from the Python API and the CLI.

HEIC files are real ones, written by pillow-heif (libheif), with EXIF orientation and dates.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_index import FakeEmbedder  # noqa: E402

from edge_gcl.index import FORMAT_VERSION, Index, note_id, photo_id  # noqa: E402
from edge_gcl.index.search import calibration, default_min_score, parse_date  # noqa: E402
from edge_gcl.index.sources import capture_time  # noqa: E402
from edge_gcl.transform import load_image  # noqa: E402

pillow_heif = pytest.importorskip("pillow_heif")

EXIF_IFD, DATETIME_ORIGINAL, ORIENTATION = 0x8769, 0x9003, 0x0112


def two_tone(width: int = 64, height: int = 32) -> Image.Image:
    """Red left half, blue right half: its orientation is visible."""
    img = Image.new("RGB", (width, height), (230, 20, 20))
    img.paste((20, 20, 230), (width // 2, 0, width, height))
    return img


def write_photo(path: Path, *, taken: str | None = None, orientation: int | None = None, seed: int = 0) -> Path:
    """A photo (format from the suffix: .heic through pillow-heif) with EXIF DateTimeOriginal
    ('YYYY:MM:DD HH:MM:SS') and orientation when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = two_tone() if orientation else Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    exif = Image.Exif()
    if orientation:
        exif[ORIENTATION] = orientation
    if taken:
        exif[EXIF_IFD] = {DATETIME_ORIGINAL: taken}
    kw = {"exif": exif.tobytes()} if (taken or orientation) else {}
    img.save(path, quality=95, **kw)
    return path


# --- 1. HEIC / HEIF ------------------------------------------------------------------------------


@pytest.mark.runtime
def test_heic_decodes_upright_like_the_same_jpeg(tmp_path: Path) -> None:
    heic = write_photo(tmp_path / "IMG_0001.HEIC", orientation=6)  # "rotate 90 clockwise to show"
    jpeg = write_photo(tmp_path / "IMG_0001.jpg", orientation=6)
    assert Image.open(heic).format == "HEIF"  # a real HEIC, written by libheif
    for path in (heic, jpeg):
        img = load_image(path)
        assert img.size == (32, 64), path  # portrait, as the phone showed it
        top, bottom = np.asarray(img, np.float32)[:16].mean((0, 1)), np.asarray(img, np.float32)[-16:].mean((0, 1))
        assert top[0] > 150 and top[2] < 100 and bottom[2] > 150 and bottom[0] < 100, path  # red on top


def test_a_folder_of_heic_and_jpeg_is_indexed(tmp_path: Path) -> None:
    folder = tmp_path / "DCIM"
    photos = [
        write_photo(folder / "a.heic", seed=1, taken="2023:05:01 09:00:00"),
        write_photo(folder / "b.HEIF", seed=2),
        write_photo(folder / "c.jpg", seed=3, taken="2024:08:15 18:30:00"),
    ]
    with Index.open(tmp_path / "idx", model=FakeEmbedder()) as index:
        report = index.add_photos(folder, progress=False)
        assert report.skipped == [] and sorted(report.added) == sorted(photo_id(p) for p in photos)
        assert index.search(image=photos[0], k=1)[0].id == photo_id(photos[0])


# --- 2. capture dates ----------------------------------------------------------------------------


@pytest.fixture
def dated(tmp_path: Path):
    """(index, {name: path}): photos taken 2022-12-31, 2023-07-04 (HEIC), 2024-02-29 and one without
    EXIF whose file dates from 2021-03-05 12:00 local time, plus a note."""
    folder = tmp_path / "photos"
    photos = {
        "newyear": write_photo(folder / "newyear.jpg", taken="2022:12:31 23:59:59", seed=1),
        "july": write_photo(folder / "july.heic", taken="2023:07:04 18:30:00", seed=2),
        "leap": write_photo(folder / "leap.jpg", taken="2024:02:29 08:00:00", seed=3),
        "scan": write_photo(folder / "scan.png", seed=4),
    }
    old = datetime(2021, 3, 5, 12, 0, 0).timestamp()
    os.utime(photos["scan"], (old, old))
    with Index.open(tmp_path / "idx", model=FakeEmbedder()) as index:
        index.add_photos(folder, progress=False)
        index.add_note("call the plumber")
        yield index, photos


def test_capture_time_is_exif_else_mtime(dated) -> None:
    index, photos = dated
    taken = {name: (index[photo_id(p)].taken, index[photo_id(p)].taken_from) for name, p in photos.items()}
    assert taken == {
        "newyear": ("2022-12-31T23:59:59", "exif"),
        "july": ("2023-07-04T18:30:00", "exif"),
        "leap": ("2024-02-29T08:00:00", "exif"),
        "scan": ("2021-03-05T12:00:00", "mtime"),
    }
    assert index[note_id("call the plumber")].taken is None
    # a broken date falls back to the file's time
    bad = write_photo(photos["scan"].parent / "bad.jpg", taken="0000:00:00 00:00:00")
    assert capture_time(str(bad), os.stat(bad).st_mtime_ns)[1] == "mtime"


def test_items_newest_first_and_date_filters(dated) -> None:
    index, photos = dated
    order = [it.id for it in index.items()]
    expected = [photo_id(photos[n]) for n in ("leap", "july", "newyear", "scan")] + [note_id("call the plumber")]
    assert order == expected
    assert [it.id for it in index.items(modalities=["note"])] == [note_id("call the plumber")]
    assert [it.id for it in index.items(limit=2)] == expected[:2]
    in_2023 = index.items(after="2023", before="2024")
    assert [it.id for it in in_2023] == [photo_id(photos["july"])]
    assert [it.id for it in index.items(after=date(2022, 12, 31), before="2023-01")] == [photo_id(photos["newyear"])]


def test_search_by_date_and_sorted_by_date(dated) -> None:
    index, photos = dated
    hits = index.search(image=photos["july"], k=10, after="2023-07-04", before="2023-07-05")
    assert [h.id for h in hits] == [photo_id(photos["july"])]
    assert hits[0].taken == "2023-07-04T18:30:00" and hits[0].to_dict()["taken"] == "2023-07-04T18:30:00"
    everything = index.search(image=photos["july"], k=10, sort="date")
    assert [h.id for h in everything][:4] == [photo_id(photos[n]) for n in ("leap", "july", "newyear", "scan")]
    assert everything[-1].taken is None  # the note: no date, last
    newest_two = index.search(image=photos["july"], k=2, sort="date")
    assert [h.id for h in newest_two] == [photo_id(photos["leap"]), photo_id(photos["july"])]
    assert index.search(text="plumber", after="2030") == []  # notes have no date
    for bad in ("2023-13", "July 2023", "23-07-04", ""):
        with pytest.raises(ValueError, match="expected a date like 2024-07-31"):
            index.search(text="x", after=bad)
    with pytest.raises(ValueError, match="sort 'size'"):
        index.search(text="x", sort="size")  # type: ignore[arg-type]


def test_parse_date_is_the_start_of_the_period() -> None:
    assert parse_date("2024") == "2024-01-01T00:00:00"
    assert parse_date("2024-07") == "2024-07-01T00:00:00"
    assert parse_date("2024-07-31 18:30") == "2024-07-31T18:30:00"
    assert parse_date(datetime(2024, 7, 31, 18, 30, 5)) == "2024-07-31T18:30:05"


def test_a_format_1_index_is_migrated_and_sync_fills_the_dates(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    photo = write_photo(folder / "a.jpg", taken="2020:01:02 03:04:05")
    embedder = FakeEmbedder()
    with Index.open(tmp_path / "idx", model=embedder) as index:
        index.add_photos(folder, progress=False)
    with sqlite3.connect(tmp_path / "idx" / "index.sqlite") as conn:  # what edge-gcl wrote before dates
        for trigger in ("items_words_insert", "items_words_delete", "items_words_update", "items_meaning_update"):  # ... and OCR
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("DROP TABLE item_words")
        conn.execute("DROP TABLE ocr_meaning")
        conn.execute("ALTER TABLE items DROP COLUMN ocr")
        conn.execute("DROP INDEX items_taken")
        conn.execute("ALTER TABLE items DROP COLUMN taken")
        conn.execute("ALTER TABLE items DROP COLUMN taken_from")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    with Index.open(tmp_path / "idx", model=embedder) as index:
        assert index.stats().format_version == FORMAT_VERSION and index[photo_id(photo)].taken is None
        report = index.sync(folder, progress=False)
        assert report.unchanged == [photo_id(photo)] and embedder.images_embedded == 1  # not re-embedded
        assert index[photo_id(photo)].taken == "2020-01-02T03:04:05"


# --- 3. the relevance cut-off --------------------------------------------------------------------


def test_min_score_hides_weak_matches(dated) -> None:
    index, photos = dated
    everything = index.search(image=photos["july"], k=10)
    assert len(everything) == 5
    cut = (everything[0].score + everything[1].score) / 2
    assert [h.id for h in index.search(image=photos["july"], k=10, min_score=cut)] == [photo_id(photos["july"])]
    by_date = index.search(image=photos["july"], k=10, min_score=cut, sort="date")
    assert [h.id for h in by_date] == [photo_id(photos["july"])]
    with pytest.raises(ValueError, match="min_score"):
        index.search(text="x", min_score=float("nan"))


def test_the_default_cut_off_comes_from_the_model() -> None:
    class WithManifest:
        model_id = "m@1"
        manifest = type("M", (), {"extra": {"min_score": 0.31}})()

    assert default_min_score(WithManifest()) == 0.31  # type: ignore[arg-type]
    assert default_min_score(FakeEmbedder()) is None  # no manifest, no calibration.json: no cut-off
    shipped = json.loads((Path(__file__).parents[1] / "edge_gcl/weights/default/calibration.json").read_text())
    assert 0.2 < shipped["min_score"] < 0.6 and shipped["keep"] == 0.95
    assert 0.0 <= shipped["cross_modal_offset"] <= 0.2
    assert calibration(shipped["model_id"]) == {"min_score": shipped["min_score"],
                                                "cross_modal_offset": shipped["cross_modal_offset"]}
    assert calibration("other-weights") == {}  # calibrated for other weights: not used


def test_export_records_the_calibration_in_the_manifest() -> None:
    pytest.importorskip("torch")
    from export.compile import _calibration

    shipped = json.loads((Path(__file__).parents[1] / "edge_gcl/weights/default/calibration.json").read_text())
    assert _calibration("default", shipped["model_id"]) == {"min_score": shipped["min_score"],
                                                            "cross_modal_offset": shipped["cross_modal_offset"]}
    assert _calibration("default", "lite-000000000000") == {}


def test_calibration_keeps_the_share_of_every_task() -> None:
    from benchmarks.calibrate import calibrate

    rng = np.random.default_rng(0)
    scores = {
        "mbeir_x_task0_test": {"positives": rng.normal(0.6, 0.1, 1000), "negatives": rng.normal(0.1, 0.1, 5000)},
        "mbeir_x_task3_test": {"positives": rng.normal(0.8, 0.05, 200), "negatives": rng.normal(0.2, 0.1, 5000)},
    }
    result = calibrate(scores, keep=0.95)
    assert all(t["positives_kept"] >= 0.95 for t in result["per_task"].values())
    assert result["min_score"] <= result["pooled_quantile"]  # the lower-scoring task decides
    assert result["min_score"] == pytest.approx(0.6 - 1.645 * 0.1, abs=0.02)


# --- 4. the command line -------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """(run, photos, artifacts): run(*argv) -> (status, stdout, stderr) against an index of dated
    photos (JPEG, HEIC, PNG) built with tiny ONNX artifacts whose manifest records a cut-off."""
    onnx = pytest.importorskip("onnx")  # noqa: F841
    from test_runtime import make_artifacts

    from edge_gcl.cli import main
    from edge_gcl.manifest import Manifest

    artifacts = make_artifacts(tmp_path / "artifacts")
    folder = tmp_path / "photos"
    photos = {
        "newyear": write_photo(folder / "newyear.jpg", taken="2022:12:31 23:59:59", seed=1),
        "july": write_photo(folder / "july.heic", taken="2023:07:04 18:30:00", seed=2),
        "leap": write_photo(folder / "leap.jpg", taken="2024:02:29 08:00:00", seed=3),
    }

    def run(*argv: str, model: bool = True) -> tuple[int, str, str]:
        common = ["--index", str(tmp_path / "idx")] + (["--model", str(artifacts)] if model else [])
        status = main([*argv, *common])
        out, err = capsys.readouterr()
        return status, out, err

    assert run("index", "add", str(folder))[0] == 0
    assert run("index", "note", "call the plumber about the leak")[0] == 0
    manifest = Manifest.load(artifacts)
    manifest.extra["min_score"] = 0.5
    manifest.save(artifacts)
    return run, photos, artifacts


def test_cli_add_says_where_the_index_is(tmp_path: Path, cli) -> None:
    run, photos, _ = cli
    status, out, err = run("index", "add", str(photos["july"]))
    assert status == 0 and f"index: {tmp_path / 'idx'}" in err and "unchanged 1" in out


def test_cli_list_text_and_json(cli) -> None:
    run, photos, _ = cli
    status, out, _ = run("index", "list", model=False)
    header, *lines = out.splitlines()
    assert status == 0 and len(lines) == 4 and header.split() == ["id", "kind", "taken", "photo", "or", "note"]
    assert lines[0].startswith(photo_id(photos["leap"])) and "2024-02-29 08:00" in lines[0]
    assert "photo" in lines[1] and "2023-07-04 18:30" in lines[1] and str(photos["july"]) in lines[1]
    assert lines[3].startswith(note_id("call the plumber about the leak")) and "call the plumber" in lines[3]
    status, out, _ = run("index", "list", "--json", "-m", "photo", "--after", "2023", model=False)
    items = json.loads(out)
    assert [it["id"] for it in items] == [photo_id(photos["leap"]), photo_id(photos["july"])]
    assert items[1] == {"id": photo_id(photos["july"]), "modality": "photo", "path": str(photos["july"]),
                        "taken": "2023-07-04T18:30:00", "taken_from": "exif"}
    status, out, _ = run("index", "list", "--json", "--modality", "all", "-n", "1", model=False)
    assert [it["id"] for it in json.loads(out)] == [photo_id(photos["leap"])]


def test_cli_says_when_nothing_is_found_on_stderr(cli) -> None:
    """An empty result is said on stderr (issue 34: `--after 2027` printed nothing and exited 0), so a
    --json output stays a clean []."""
    run, photos, _ = cli
    status, out, err = run("search", "a dog", "--after", "2027", "--json")
    assert status == 0 and json.loads(out) == [] and "nothing found: none of the 4 items matches --after 2027" in err
    status, out, err = run("search", "a dog", "-m", "photo+note", "--all")
    assert status == 0 and out == "" and "nothing found: none of the 4 items matches -m photo+note" in err
    status, out, err = run("index", "list", "-m", "photo", "--after", "2024-03", "--before", "2025", model=False)
    assert status == 0 and out == "" and "matches -m photo --after 2024-03 --before 2025" in err
    status, out, err = run("index", "list", "--json", "-m", "photo+note", model=False)
    assert status == 0 and json.loads(out) == [] and "nothing found" in err
    ids = [it["id"] for it in json.loads(run("index", "list", "--json", model=False)[1])]
    assert run("index", "remove", *ids, model=False)[0] == 0
    status, out, err = run("search", "a dog")
    assert status == 0 and out == "" and "nothing found: the index is empty (edge-gcl index add PHOTOS" in err
    status, out, err = run("search", "a dog", "--json")
    assert json.loads(out) == [] and "the index is empty" in err


def test_cli_remove_by_id_and_path(cli) -> None:
    run, photos, _ = cli
    photos["newyear"].unlink()  # a deleted file's photo is removed by its old path
    status, out, err = run("index", "remove", str(photos["newyear"]), note_id("call the plumber about the leak"),
                           model=False)  # fmt: skip
    assert status == 0 and out.strip() == "removed 2"
    status, out, err = run("index", "remove", str(photos["newyear"]), "n_nothing", model=False)
    assert status == 1 and "removed 0" in out
    assert f"not in the index: {photos['newyear']}" in err and "not in the index: n_nothing" in err
    status, out, _ = run("index", "list", "--json", model=False)
    assert {it["id"] for it in json.loads(out)} == {photo_id(photos["leap"]), photo_id(photos["july"])}


def test_cli_search_dates_sort_and_the_cut_off(cli) -> None:
    run, photos, _ = cli
    status, out, err = run("search", "-i", str(photos["july"]), "-k", "5", "--all", "--json")
    everything = json.loads(out)
    assert status == 0 and len(everything) == 4 and everything[0]["id"] == photo_id(photos["july"])
    assert everything[0]["taken"] == "2023-07-04T18:30:00"
    assert all(("taken" in h) == (h["modality"] != "note") for h in everything)  # notes have no date
    below = [h for h in everything if h["score"] < 0.5]
    assert below, "the fixture needs results under the manifest's cut-off"
    status, out, err = run("search", "-i", str(photos["july"]), "-k", "5", "--json")  # the model's cut-off
    shown = json.loads(out)
    assert [h["id"] for h in shown] == [h["id"] for h in everything if h["score"] >= 0.5]
    assert f"{len(below)} result{'s' if len(below) > 1 else ''} scoring below the cut-off 0.500 hidden" in err
    status, out, err = run("search", "-i", str(photos["july"]), "-k", "5", "--min-score", "-1", "--json")
    assert len(json.loads(out)) == 4 and "hidden" not in err
    status, out, _ = run("search", "-i", str(photos["july"]), "--all", "--sort", "date", "-m", "photo", "--json")
    assert [h["id"] for h in json.loads(out)] == [photo_id(photos[n]) for n in ("leap", "july", "newyear")]
    status, out, _ = run("search", "-i", str(photos["july"]), "--all", "--after", "2023-01", "--before", "2024")
    header, *lines = out.splitlines()
    assert status == 0 and len(lines) == 1 and "2023-07-04 18:30" in lines[0] and header.split()[0] == "cosine"
    status, _, err = run("search", "x", "--after", "last week")
    assert status == 1 and "after 'last week': expected a date like 2024-07-31" in err
    status, _, err = run("search", "x", "--all", "--min-score", "0.2")
    assert status == 1 and "--all or --min-score" in err


def test_cli_reindex_and_the_mismatch_message(tmp_path: Path, cli, capsys: pytest.CaptureFixture[str]) -> None:
    from test_runtime import make_artifacts

    run, photos, artifacts = cli
    other = make_artifacts(tmp_path / "other", seed=1)
    status, _, err = run("search", "x", "--model", str(other), model=False)
    assert status == 1 and len(err.strip().splitlines()) == 3  # loading..., the model line, the error
    message = err.strip().splitlines()[-1]
    assert "built with model 'tiny-onnx' (tiny-onnx@seed0, " in message and "not 'tiny-onnx' (tiny-onnx@seed1" in message
    command = f"edge-gcl index reindex --index {tmp_path / 'idx'} --model {other}"
    assert f"`{command}`" in message
    from edge_gcl.cli import main

    assert main(["search", "x", "--index", f"{tmp_path / 'idx'}/", "--model", str(other)]) == 1  # a trailing /
    assert f"`{command}`" in capsys.readouterr().err
    status, out, err = run("index", "reindex", "--model", str(other), model=False)
    assert status == 0 and "updated 4" in out
    assert run("search", "x", "--all", "--model", str(other), model=False)[0] == 0
    status, out, _ = run("index", "list", "--json", model=False)
    assert {it.get("taken") for it in json.loads(out)} >= {"2023-07-04T18:30:00"}  # dates kept


def test_cli_version_short_flags_and_help() -> None:
    import argparse

    from edge_gcl.cli import MODALITY_CHOICES, build_parser

    parser = build_parser()
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--version"])
    assert done.value.code == 0
    args = parser.parse_args(["search", "q", "-k", "3", "-m", "all", "-m", "photo", "-i", "x.jpg", "-a"])
    assert (args.k, args.modality, args.image, args.all) == (3, ["all", "photo"], "x.jpg", True)
    assert MODALITY_CHOICES == ["all", "photo", "note", "photo+note"]
    top = parser.format_help()
    assert "Search your photos and notes" in top and "edge-gcl index add ~/Pictures" in top
    # every option of the user-facing commands has a help line and says its default
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    index_sub = next(a for a in sub.choices["index"]._actions if isinstance(a, argparse._SubParsersAction))
    commands = {"search": sub.choices["search"], "app": sub.choices["app"], **{
        f"index {n}": p for n, p in index_sub.choices.items()}}
    assert {"index list", "index remove", "index reindex"} <= set(commands)
    for name, p in commands.items():
        for action in p._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.option_strings)
            assert action.required or "default" in action.help, (name, action.option_strings)


def test_a_removed_photo_stays_out_of_syncs_until_added_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    photos = [write_photo(folder / f"{i}.jpg", seed=i) for i in range(3)]
    with Index.open(tmp_path / "idx", model=FakeEmbedder()) as index:
        index.add_photos(folder, progress=False)
        assert index.remove([photo_id(photos[0])]) == 1 and photos[0].exists()  # the file is kept
        report = index.sync(folder, progress=False)
        assert photo_id(photos[0]) not in index and report.added == [] and report.skipped == []
        assert index.add_photos(folder, progress=False).added == []  # a folder add skips it too
        assert index.add_photos(photos[0], progress=False).added == [photo_id(photos[0])]  # by name: back
        assert index.sync(folder, progress=False).unchanged == [photo_id(p) for p in photos]


@pytest.mark.runtime
def test_a_heic_with_a_thumbnail_decodes_it_when_it_covers_the_model_input(tmp_path: Path) -> None:
    """libheif has no reduced-scale decoding; a phone's HEIC carries a thumbnail, used like JPEG's draft."""
    from edge_gcl.config import ImagePreprocess
    from edge_gcl.transform import preprocess

    img = two_tone(2048, 1536)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    path = tmp_path / "IMG_0002.HEIC"
    img.save(path, quality=90, thumbnails=[512], exif=exif.tobytes())
    full, small = load_image(path), load_image(path, draft_size=224)
    assert full.size == (1536, 2048) and small.size == (384, 512)  # the thumbnail, upright like the image
    assert load_image(path, draft_size=400).size == (1536, 2048)  # a thumbnail too small: the image
    top = np.asarray(small, np.float32)[:100].mean((0, 1))
    assert top[0] > 150 and top[2] < 100  # red on top, as in the full decode
    cfg = ImagePreprocess(size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = preprocess(path, cfg)  # (3, 64, 64) from the thumbnail, close to the same from the full image
    y = preprocess(full, cfg)
    assert np.abs(x - y).mean() < 0.05


@pytest.mark.runtime
def test_a_heic_over_the_decode_budget_is_read_from_its_largest_thumbnail(tmp_path: Path, monkeypatch) -> None:
    """A 48 MP phone HEIC takes about 400 MB to decode whole, over the budget: its embedded thumbnail is read
    instead of refusing the photo. Scaled down here: a 2048 x 1536 HEIC under a 4 MB budget."""
    import edge_gcl.transform as transform
    from edge_gcl.transform import ImageDecodeError

    img = two_tone(2048, 1536)
    path = tmp_path / "IMG_0048.HEIC"
    img.save(path, quality=90, thumbnails=[256, 512])
    monkeypatch.setattr(transform.DECODING, "limit_bytes", 4 * 2**20)
    assert load_image(path, draft_size=800).size == (512, 384)  # no thumbnail covers 800: the largest that fits
    img.save(tmp_path / "bare.heic", quality=90, thumbnails=[])
    with pytest.raises(ImageDecodeError, match="over the 4 MB limit"):
        load_image(tmp_path / "bare.heic")  # no thumbnail: refused by name, as before

"""`edge-gcl eval covr` (edge_gcl.eval.covr): CoVR's test layout, frame sampling, recall by hand, bad input.

CoVR cannot be downloaded here: the fixture is a small root in its layout (annotation/webvid-covr/
webvid8m-covr_test.csv; datasets/WebVid/8M/train/<pth>.mp4, lucas-ventura/CoVR configs/test/webvid-covr.yaml),
with solid-colour clips the tests write with PyAV through benchmarks.eval_fixtures' writers (one video as a
folder of frames instead). The CSV carries the columns CoVR's loader reads (pth1, pth2, edit, and scores, a
list literal of per-frame weights, src/data/webvid_covr.py) and the caption columns txt1, txt2; one row per
target video. A colour embedder makes every ranking computable by hand.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.eval_fixtures import (
    COVR_HEADER,
    covr_rows,
    placeholder_scores,
    write_covr_csv,
    write_frames,
    write_video,
)
from edge_gcl.cli import main
from edge_gcl.eval.covr import (
    ANNOTATION,
    VIDEOS,
    CoVRFormatError,
    Triplet,
    Video,
    evaluate_covr,
    frame_indices,
    frame_weights,
    read_annotation,
    read_frames,
    target_frames,
)

pytest.importorskip("av")

N_FRAMES = 10
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
YELLOW, CYAN, ORANGE = (255, 255, 0), (0, 255, 255), (255, 64, 0)


def _mean_rgb(image) -> np.ndarray:
    img = image if isinstance(image, Image.Image) else Image.open(image)
    return np.asarray(img.convert("RGB"), np.float32).reshape(-1, 3).mean(axis=0)


class ColourEmbedder:
    """An image -> its mean RGB, normalised; a text -> the colour it names. Records the frames it was given."""

    model_id = "colour"
    embed_dim = 3
    TEXTS = {"add green": (0, 1, 0), "add blue": (0, 0, 1), "add red": (1, 0, 0), "keep it": (1, 1, 0)}

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def embed_images(self, images, *, batch_size=32, progress=False):
        rgb = [_mean_rgb(im) for im in images]
        self.seen += rgb
        return np.stack([v / np.linalg.norm(v) for v in rgb]).astype(np.float32)

    def embed_texts(self, texts, *, batch_size=32, progress=False):
        v = np.array([self.TEXTS[t] for t in texts], np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


# Hand-worked (cosines of unit colour vectors; orange = (1, .25, 0) normalised):
# row 2: red + "add green" = yellow (1,1,0)/√2 -> yellow 1.00, orange .86, cyan .50, green .71: hit
# row 3: green + "add blue" = cyan             -> cyan 1.00 first: hit
# row 4: blue + "add red" = magenta (1,0,1)/√2 -> orange .69, yellow .50, cyan .50, green 0: 4th
# row 5: yellow + "keep it" = yellow           -> yellow is the query's own video, removed; orange .86: hit
# R@1 = 3/4, R@5 = R@10 = R@50 = 4/4. Without the self-removal row 5 misses; without fusion rows 2-4 do.
ROWS = [("001/1", "add green", "101/1"), ("001/2", "add blue", "101/2"), ("001/3", "add red", "101/3"),
        ("101/1", "keep it", "101/4")]
SOLID = {"001/1": RED, "001/2": GREEN, "001/3": BLUE, "101/1": YELLOW, "101/3": GREEN, "101/4": ORANGE}
# One score per frame CoVR sampled (rounded to 4 places, as tools/embs/get_scores.py writes them): the
# fixture's clips have 10 frames, so all 10. On solid-colour clips the weights change nothing.
SCORES_10 = placeholder_scores(N_FRAMES)


_csv = write_covr_csv  # (path, rows, header=COVR_HEADER) -> path


def _rows(triplets=ROWS, scores: str = SCORES_10) -> list[list[str]]:
    return covr_rows(triplets, scores)


@pytest.fixture(scope="module")
def covr_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("covr") / "CoVR"
    for pth, rgb in SOLID.items():
        write_video(root / VIDEOS / f"{pth}.mp4", [rgb] * N_FRAMES)
    write_frames(root / VIDEOS / "101" / "2", [CYAN] * N_FRAMES)  # a video given as extracted frames
    write_video(root / VIDEOS / "200" / "split.mp4", [RED] * 5 + [BLUE] * 5)
    _csv(root / ANNOTATION, _rows())
    return root


def test_recall_matches_the_hand_worked_ranks(covr_root: Path):
    result = evaluate_covr(ColourEmbedder(), covr_root, progress=False)
    assert (result["queries"], result["pool"], result["frames"], result["frame_pool"]) == (4, 4, 15, "query")
    assert result["recall@1"] == 75.0
    assert [result[f"recall@{k}"] for k in (5, 10, 50)] == [100.0, 100.0, 100.0]


def test_a_query_never_retrieves_its_own_video(covr_root: Path, tmp_path: Path):
    """Only row 5 (yellow + "keep it" -> orange), whose own yellow video is in the pool: a hit."""
    ann = _csv(tmp_path / "one.csv", _rows([ROWS[0], ROWS[3]]))
    result = evaluate_covr(ColourEmbedder(), covr_root, annotation=ann, ks=(1,), progress=False)
    assert result["recall@1"] == 100.0  # row 2 hits yellow; row 5 skips yellow (its own) and hits orange


def test_frame_indices_follow_covr_sample_frames():
    assert frame_indices(10, 4) == [0, 3, 5, 8]
    assert frame_indices(9, 3) == [1, 4, 7]
    assert frame_indices(3, 8) == [0, 1, 2]  # fewer frames than asked: every frame once
    assert frame_indices(10, 1) == [4]
    with pytest.raises(ValueError):
        frame_indices(0, 1)


def test_decoded_frames_are_the_ones_asked_for(tmp_path: Path):
    grey = [(v, v, v) for v in range(0, 250, 25)]  # frame i has level 25 i
    video = Video("x", write_video(tmp_path / "grey.mp4", grey))
    frames = read_frames(video, [0, 5, 9])
    assert [round(float(_mean_rgb(f)[0]) / 25) for f in frames] == [0, 5, 9]


def test_query_is_the_middle_frame_and_targets_average_spread_frames(covr_root: Path, tmp_path: Path):
    """The split clip (frames 0-4 red, 5-9 blue) is row 1's query and row 2's target. Its frames are decoded
    first, each once, in order: the query's middle frame 5 (blue) and, with frames=2, frames 2 (red) and 7
    (blue): red, blue, blue; with frames=1, frame 4 (red) and the query's 5: red, blue."""
    ann = _csv(tmp_path / "split.csv", _rows([("200/split", "add red", "101/1"), ("001/1", "add blue", "200/split")],
                                             scores="[]"))  # no scores: `frames` frames, evenly
    for frames, expected in ((2, [RED, BLUE, BLUE]), (1, [RED, BLUE])):
        emb = ColourEmbedder()
        evaluate_covr(emb, covr_root, annotation=ann, frames=frames, progress=False)
        got = [tuple(int(round(c / 255)) * 255 for c in rgb) for rgb in emb.seen]
        assert got == [*expected, RED, *[YELLOW] * frames], got  # then 001/1's middle frame, 101/1's frames


def test_frames_folder_needs_no_decoder(covr_root: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    root = tmp_path / "r"
    write_frames(root / VIDEOS / "001" / "1", [RED] * 3)
    write_frames(root / VIDEOS / "101" / "1", [YELLOW] * 3)
    write_frames(root / VIDEOS / "101" / "2", [CYAN] * 3)
    _csv(root / ANNOTATION, _rows([("001/1", "add green", "101/1"), ("101/1", "add blue", "101/2")], scores="[]"))
    result = evaluate_covr(ColourEmbedder(), root, progress=False)
    # row 1: red + green = yellow -> yellow 1.0, cyan .5: hit. row 2: yellow + blue = (.5, .5, .71): yellow is
    # its own video, so cyan (.85) is first: hit.
    assert result["recall@1"] == 100.0


# --- target frames weighted by the CSV's scores (CoVR's emb_pool: query) ---------------------------

# Row 1: red + "add red" = red. Its target, the split clip, scored [1.0, 0.0]: frames 2 (red) and 7 (blue)
# weighted softmax([10, 0]) = [.99995, .00005], so the target is red (cos 1.00) and beats orange (.97). Evenly
# averaged (CoVR's emb_pool: mean, or the old unweighted mean) it is magenta (.71): orange wins, a miss.
# Row 2: green + "add blue" = cyan; its target orange (.17) beats the red-weighted split clip (.00): a hit;
# against the evenly averaged clip (.50) a miss.
WEIGHTED = [["", "", "add red", "[1.0, 0.0]", "001/1", "200/split"], ["", "", "add blue", "[]", "001/2", "101/4"]]


def test_target_frames_are_weighted_by_the_scores(covr_root: Path, tmp_path: Path):
    ann = _csv(tmp_path / "weighted.csv", WEIGHTED)
    emb = ColourEmbedder()
    weighted = evaluate_covr(emb, covr_root, annotation=ann, frames=2, ks=(1,), progress=False)
    assert weighted["recall@1"] == 100.0
    got = [tuple(int(round(c / 255)) * 255 for c in rgb) for rgb in emb.seen]
    assert got[2:4] == [RED, BLUE]  # the split clip's frames 2 and 7: one per score, as CoVR sampled them
    even = evaluate_covr(ColourEmbedder(), covr_root, annotation=ann, frames=2, frame_pool="mean", ks=(1,),
                         progress=False)
    assert (even["recall@1"], even["frame_pool"]) == (0.0, "mean")


def test_frame_weights_are_covr_softmax_over_scores_at_temperature_0_1():
    np.testing.assert_allclose(frame_weights([1.0, 0.0]), [1 / (1 + np.exp(-10)), np.exp(-10) / (1 + np.exp(-10))])
    np.testing.assert_allclose(frame_weights([0.3, 0.3, 0.3]), [1 / 3] * 3)
    np.testing.assert_allclose(frame_weights([0.2, 0.3]).sum(), 1.0)


def test_scored_frames_are_covr_sample_frames_positions():
    """15 scores over a 300-frame clip: the middles of 15 segments of 20 frames (CoVR's sample_frames(300, 15))."""
    t = Triplet("1/1", "e", "2/2", 2, scores=(0.2,) * 15)
    idx, w = target_frames(t, 300, frames=8, frame_pool="query", annotation="a.csv")
    assert idx == [9 + 20 * i for i in range(15)]
    np.testing.assert_allclose(w, [1 / 15] * 15)
    idx, _ = target_frames(Triplet("1/1", "e", "2/2", 2, scores=()), 300, frames=8, frame_pool="query",
                           annotation="a.csv")
    assert idx == frame_indices(300, 8)  # `[]`: `frames` frames, evenly
    with pytest.raises(CoVRFormatError, match=r"^a\.csv:2: scores has 15 entries, one per sampled frame, but 2/2 "
                                              r"has 10 frames$"):
        target_frames(t, 10, frames=8, frame_pool="query", annotation="a.csv")


def test_scores_are_read_as_covr_writes_them(tmp_path: Path):
    path = _csv(tmp_path / "a.csv", [["", "", "e", "[0.2113, 0.2087]", "1/1", "2/2"], ["", "", "e", "[]", "1/2", "2/3"]])
    assert [t.scores for t in read_annotation(path)] == [(0.2113, 0.2087), ()]
    assert [t.scores for t in read_annotation(path, scores=False)] == [None, None]


# --- the command line and bad input ------------------------------------------------------------


@pytest.fixture
def fake_runtime(monkeypatch):
    monkeypatch.setitem(sys.modules, "edge_gcl.runtime",
                        types.SimpleNamespace(load_embedder=lambda model, provider="cpu", device=None: ColourEmbedder()))


def _run(root: Path, *extra: str) -> int:
    return main(["eval", "covr", "--root", str(root), "--model", "fake", *extra])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("edge-gcl: error: "), err
    return lines[0][len("edge-gcl: error: "):]


def test_command_line_prints_and_saves(covr_root: Path, fake_runtime, tmp_path: Path, capsys):
    out = tmp_path / "covr.json"
    assert _run(covr_root, "--json", str(out)) == 0
    assert re.search(r"75\.00\s+100\.00\s+100\.00\s+100\.00", capsys.readouterr().out)
    assert '"recall@1": 75.0' in out.read_text()


def test_command_line_pool_option_reaches_the_pooling(covr_root: Path, fake_runtime, tmp_path: Path):
    """--pool query (the default) weights the target's frames by the csv's scores; --pool mean averages them."""
    ann = _csv(tmp_path / "weighted.csv", WEIGHTED)
    for pool, r1 in (("query", 100.0), ("mean", 0.0)):
        out = tmp_path / f"{pool}.json"
        extra = ["--pool", pool] if pool == "mean" else []
        assert _run(covr_root, "--annotation", str(ann), "--frames", "2", "--k", "1", "--json", str(out), *extra) == 0
        saved = json.loads(out.read_text())
        assert (saved["frame_pool"], saved["recall@1"]) == (pool, r1)


def _copy_root(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


CSV_CASES = {
    "missing column": (lambda p: _csv(p, [r[:2] + r[3:] for r in _rows()], [h for h in COVR_HEADER if h != "edit"]),
                       r"ANN:1: no column edit \(header: txt1,txt2,scores,pth1,pth2\)"),
    "empty edit": (lambda p: _csv(p, _rows()[:2] + [_rows()[2][:2] + [" "] + _rows()[2][3:]]), r"ANN:4: empty edit"),
    "short row": (lambda p: _csv(p, _rows()[:1] + [_rows()[1][:5]]), r"ANN:3: 5 fields, the header has 6"),
    "missing video": (lambda p: _csv(p, _rows() + _rows([("001/9", "add red", "200/split")])),
                      r"ANN:6: video not found: .*001/9\.mp4 \(nor a frames folder .*001/9\)"),
    "same video": (lambda p: _csv(p, _rows([("001/1", "add red", "001/1")])),
                   r"ANN:2: pth1 and pth2 are the same video \(001/1\)"),
    "not UTF-8": (lambda p: p.write_bytes(p.read_bytes() + b"a,b,caf\xe9,[],001/1,101/1\n"), r"ANN:6: not UTF-8 \(byte 0xe9\)"),
    "header only": (lambda p: _csv(p, []), r"ANN: no triplets"),
    "empty file": (lambda p: p.write_bytes(b""),
                   r"ANN: empty file \(expected a header line with pth1, edit, pth2, scores\)"),
    "no scores column": (lambda p: _csv(p, [r[:3] + r[4:] for r in _rows()], [h for h in COVR_HEADER if h != "scores"]),
                         r"ANN:1: no column scores \(header: txt1,txt2,edit,pth1,pth2\)"),
    "scores not a list": (lambda p: _csv(p, _rows()[:1] + _rows(ROWS[1:2], scores="[0.1, oops]")),
                          r"ANN:3: scores is not a list of numbers \('\[0\.1, oops\]'\)"),
    "empty scores": (lambda p: _csv(p, _rows()[:1] + _rows(ROWS[1:2], scores=" ")), r"ANN:3: empty scores"),
    "target repeated": (lambda p: _csv(p, _rows() + _rows([("001/2", "add red", "101/1")])),
                        r"ANN:6: pth2 101/1 is already the target of line 2 \(CoVR's test set has one row per "
                        r"target video\)"),
    "scores longer than the video": (lambda p: _csv(p, _rows(ROWS[:1], scores=str([0.2] * (N_FRAMES + 1)))),
                                     r"ANN:2: scores has 11 entries, one per sampled frame, but 101/1 has 10 frames"),
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_bad_csv_is_one_line_naming_file_and_line(covr_root: Path, tmp_path: Path, fake_runtime, case, capsys):
    root = _copy_root(covr_root, tmp_path / "r")
    breaks, pattern = CSV_CASES[case]
    breaks(root / ANNOTATION)
    assert _run(root) == 1
    line = _error_line(capsys)
    assert re.fullmatch(pattern.replace("ANN", re.escape(str(root / ANNOTATION))), line), line


def test_undecodable_video_names_the_file(covr_root: Path, tmp_path: Path, fake_runtime, capsys):
    root = _copy_root(covr_root, tmp_path / "r")
    (root / VIDEOS / "101" / "3.mp4").write_bytes(b"\x00" * 100)
    assert _run(root) == 1
    assert _error_line(capsys).startswith(f"{root / VIDEOS / '101' / '3.mp4'}: not a decodable video")


def test_empty_frames_folder(covr_root: Path, tmp_path: Path, fake_runtime, capsys):
    root = _copy_root(covr_root, tmp_path / "r")
    for f in (root / VIDEOS / "101" / "2").iterdir():
        f.unlink()
    assert _run(root) == 1
    assert re.fullmatch(rf"{re.escape(str(root / ANNOTATION))}:3: .*101/2: a frames folder with no \*\.jpg.*",
                        _error_line(capsys))


def test_missing_pyav_names_the_extra(covr_root: Path, fake_runtime, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)
    assert _run(covr_root) == 1
    assert _error_line(capsys) == ("decoding videos needs PyAV, the optional extra [video]: "
                                   "pip install 'edge-gcl[video]'")


@pytest.mark.parametrize("what", ["root", "annotation", "videos"])
def test_missing_paths(covr_root: Path, tmp_path: Path, fake_runtime, what: str, capsys):
    extra = {"root": (), "annotation": ("--annotation", str(tmp_path / "no.csv")),
             "videos": ("--videos", str(tmp_path / "novids"))}[what]
    root = tmp_path / "nowhere" if what == "root" else covr_root
    assert _run(root, *extra) == 1
    expected = {"root": f"{tmp_path / 'nowhere'}: no such folder", "annotation": f"{tmp_path / 'no.csv'}: no such file",
                "videos": f"{tmp_path / 'novids'}: no such folder"}[what]
    assert _error_line(capsys) == expected


def test_read_annotation_keeps_line_numbers_of_quoted_multiline_fields(tmp_path: Path):
    path = tmp_path / "a.csv"
    path.write_text('pth1,edit,pth2\n1/1,"two\nlines",2/2\n1/2,one,2/3\n')
    assert [(t.query, t.edit, t.line) for t in read_annotation(path, scores=False)] == [("1/1", "two\nlines", 2),
                                                                                        ("1/2", "one", 4)]


# --- benchmarks.report: a section when --covr-root is given ------------------------------------


def test_report_runs_covr_only_when_its_root_is_given(covr_root: Path, tmp_path: Path, monkeypatch):
    pytest.importorskip("onnx")
    from benchmarks.report import main as report
    from benchmarks.report import render
    from tests.test_runtime import make_artifacts

    artifacts = make_artifacts(tmp_path / "art")  # reused as is (it holds a manifest); the towers are stood in for
    monkeypatch.setitem(sys.modules, "edge_gcl.runtime",
                        types.SimpleNamespace(load_embedder=lambda model, provider="cpu", device=None: ColourEmbedder()))
    out = tmp_path / "results"
    assert report(["--only", "covr", "--covr-root", str(covr_root), "--artifacts", str(artifacts),
                   "--out", str(out), "--no-doc"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["covr.json"]
    md = render(out, doc_dir=tmp_path)
    assert "### CoVR composed video retrieval" in md
    assert "| webvid8m-covr_test.csv | 4 | 4 | 75.0 | 100.0 | 100.0 | 100.0 |" in md


@pytest.mark.parametrize("extra, message", [(("--frames", "0"), "--frames: must be >= 1, got 0"),
                                            (("--k", "1", "0"), "--k: must be positive integers, got 1 0")])
def test_bad_options_fail_before_anything_loads(covr_root: Path, monkeypatch, extra, message, capsys):
    monkeypatch.setitem(sys.modules, "edge_gcl.runtime", types.SimpleNamespace(load_embedder=None))  # never called
    assert _run(covr_root, *extra) == 1
    assert _error_line(capsys) == message

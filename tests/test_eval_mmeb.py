"""`edge-gcl eval mmeb` (edge_gcl.eval.mmeb): MMEB-eval's file layout, hit@1 as VLM2Vec scores it, bad input.

MMEB cannot be downloaded here: the fixtures are small roots in the published layout (TIGER-Lab/MMEB-eval:
<Task>/test-00000-of-00001.parquet with qry_text, qry_img_path, tgt_text, tgt_img_path, positive first, as
TIGER-AI-Lab/VLM2Vec eval.py reads them; images under eval_images/, where VLM2Vec's README unzips images.zip),
written by the tests with benchmarks.eval_fixtures' writers (the ones `python -m benchmarks.eval_fixtures`
uses), one of them from the shared Flickr8k photos and captions. The embedders are stand-ins whose rankings
can be worked out by hand.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from benchmarks.eval_fixtures import (
    INSTRUCTION_IMG,
    flickr_photos,
    mmeb_row,
    write_mmeb_flickr,
    write_mmeb_task,
    write_placeholder_images,
)
from edge_gcl.cli import main
from edge_gcl.eval.mmeb import RETRIEVAL_TASKS, evaluate_mmeb, read_task, score_rows, task_files

FLICKR = Path("/work/shared/data/flickr8k")


def _write_task(root: Path, task: str, rows: list[dict], fmt: str = "parquet") -> Path:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    return write_mmeb_task(root, task, rows, fmt)


class AngleEmbedder:
    """2-D unit vectors at given angles (degrees): images by file name, texts by their text. cos = cos(angle gap)."""

    model_id = "angles"
    embed_dim = 2

    def __init__(self, angles: dict[str, float]):
        self.angles = angles

    def _vec(self, key: str) -> np.ndarray:
        a = np.radians(self.angles[key])
        return np.array([np.cos(a), np.sin(a)], np.float32)

    def embed_images(self, images, *, batch_size=32, progress=False):
        return np.stack([self._vec(Path(p).name) for p in images])

    def embed_texts(self, texts, *, batch_size=32, progress=False):
        return np.stack([self._vec(t) for t in texts])


# Hand-worked task: query angle; candidates (positive first) with their gaps to the query.
# row 1: q 0;   cands 20 (pos), 10, 90, 180          -> positive ranks 2nd: miss at 1, hit at 5
# row 2: q 100; cands 95 (pos), 150, 300             -> 1st: hit
# row 3: q 200; cands 20 (pos, gap 180), 190, 210, 250, 150, 120, 260  -> 7th: miss at 5, hit at 10
ANGLES = {"t0": 0, "t1": 100, "t2": 200, "p20.png": 20, "p10.png": 10, "p90.png": 90, "p180.png": 180,
          "p95.png": 95, "p150.png": 150, "p300.png": 300, "p190.png": 190, "p210.png": 210, "p250.png": 250,
          "p120.png": 120, "p260.png": 260}
WORKED = [("t0", [20, 10, 90, 180]), ("t1", [95, 150, 300]), ("t2", [20, 190, 210, 250, 150, 120, 260])]


@pytest.fixture
def worked_root(tmp_path: Path) -> Path:
    root = tmp_path / "MMEB-eval"
    write_placeholder_images(root, [n for n in ANGLES if n.endswith(".png")])
    rows = [mmeb_row(q, "", [("", f"imgs/p{a}.png") for a in cands]) for q, cands in WORKED]
    _write_task(root, "MSCOCO_t2i", rows)
    return root


def test_hit_at_1_and_recall_match_the_hand_worked_ranks(worked_root: Path):
    results = evaluate_mmeb(AngleEmbedder(ANGLES), worked_root, ks=(1, 5, 10), progress=False)
    r = results["MSCOCO_t2i"]
    assert r["hit@1"] == pytest.approx(100 / 3)
    assert r["recall@1"] == r["hit@1"]
    assert r["recall@5"] == pytest.approx(200 / 3)
    assert r["recall@10"] == 100.0
    assert (r["queries"], r["candidates"]) == (3, 14)
    assert results["average"]["hit@1"] == pytest.approx(100 / 3)
    assert results["tasks_missing"] == [t for t in RETRIEVAL_TASKS if t != "MSCOCO_t2i"]


def test_a_positive_tied_with_a_negative_is_a_hit(tmp_path: Path):
    """VLM2Vec takes np.argmax over the candidates: the first of equal scores, the positive."""
    root = tmp_path / "r"
    write_placeholder_images(root, ["pos.png", "neg.png"])
    _write_task(root, "NIGHTS", [mmeb_row("q", "", [("", "imgs/pos.png"), ("", "imgs/neg.png")]),
                                 mmeb_row("q", "", [("", "imgs/neg.png"), ("", "imgs/pos.png")])])
    emb = AngleEmbedder({"q": 0, "pos.png": 30, "neg.png": -30})
    assert evaluate_mmeb(emb, root, progress=False)["NIGHTS"]["hit@1"] == 100.0


def test_image_text_items_are_fused_and_the_image_token_dropped(tmp_path: Path):
    """A CIRR-style query: image at 0 plus text at 90 -> fused at 45. Unfused (image only), the candidate
    at 0 would win; fused, the positive at 40 does. The `<|image_1|>` placeholder is not part of the text."""
    root = tmp_path / "r"
    write_placeholder_images(root, ["ref.png", "p40.png", "p0.png", "p100.png"])
    _write_task(root, "CIRR", [mmeb_row("<|image_1|>\nmake it so", "imgs/ref.png",
                                        [("", "imgs/p40.png"), ("", "imgs/p0.png"), ("", "imgs/p100.png")])], "jsonl")
    emb = AngleEmbedder({"make it so": 90, "ref.png": 0, "p40.png": 40, "p0.png": 0, "p100.png": 100})
    assert evaluate_mmeb(emb, root, progress=False)["CIRR"]["hit@1"] == 100.0
    (row,) = read_task(task_files(root, "CIRR")[0], root / "eval_images")
    assert (row.query.modality, row.query.txt) == ("image,text", "make it so")


def test_instructions_are_kept_verbatim(tmp_path: Path):
    """An image candidate whose only text is an instruction is image+text; the query keeps its instruction."""
    root = tmp_path / "r"
    write_placeholder_images(root, ["a.png"])
    _write_task(root, "MSCOCO_t2i", [mmeb_row("Find me an everyday image that matches the given caption: a dog.",
                                              "", [(INSTRUCTION_IMG + "\n", "imgs/a.png"), ("a caption", "")])], "jsonl")
    (row,) = read_task(task_files(root, "MSCOCO_t2i")[0], root / "eval_images")
    assert row.query.txt == "Find me an everyday image that matches the given caption: a dog."
    assert (row.candidates[0].modality, row.candidates[0].txt) == ("image,text", "Represent the given image.")
    assert (row.candidates[1].modality, row.candidates[1].img_path) == ("text", None)


def test_tgt_text_given_as_one_empty_string_is_an_empty_text_per_candidate(tmp_path: Path):
    """VLM2Vec's EvalDataset.get_paired_data (src/dataset.py) and evaluation/eval_clip.py read a tgt_text of ""
    (a string, not a list) as "" for every candidate image; so does this reader, in parquet and JSON lines."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "r"
    write_placeholder_images(root, ["p20.png", "p90.png", "p180.png"])
    row = {"qry_text": "t0", "qry_img_path": "", "tgt_text": "", "tgt_img_path": ["imgs/p20.png", "imgs/p90.png",
                                                                                  "imgs/p180.png"]}
    (root / "VisualNews_t2i").mkdir()
    pq.write_table(pa.Table.from_pylist([row]), root / "VisualNews_t2i" / "test-00000-of-00001.parquet")
    _write_task(root, "EDIS", [row], "jsonl")
    for task in ("VisualNews_t2i", "EDIS"):
        (read,) = read_task(task_files(root, task)[0], root / "eval_images")
        assert [(c.modality, c.txt, c.img_path.name) for c in read.candidates] == [
            ("image", None, "p20.png"), ("image", None, "p90.png"), ("image", None, "p180.png")]
    results = evaluate_mmeb(AngleEmbedder(ANGLES), root, progress=False)
    assert results["VisualNews_t2i"]["hit@1"] == results["EDIS"]["hit@1"] == 100.0


def test_score_rows_by_hand():
    q = np.array([[1, 0], [0, 1]], np.float32)  # (2, 2)
    c = np.array([[0, 1], [1, 0]], np.float32)  # distinct candidates
    rows = [np.array([0, 1]), np.array([0, 1, 0])]  # row 1: [0, 1] then [1, 0]; row 2: [0, 1], [1, 0], [0, 1]
    out = score_rows(q, c, rows, ks=(2,))
    assert out == {"hit@1": 50.0, "recall@2": 100.0}  # row 1's positive ranks 2nd; row 2's ties first: a hit


def test_distinct_candidates_are_embedded_once(worked_root: Path):
    class Counting(AngleEmbedder):
        calls: list[int] = []

        def embed_images(self, images, **kw):
            self.calls.append(len(images))
            return super().embed_images(images, **kw)

    emb = Counting(ANGLES)
    evaluate_mmeb(emb, worked_root, progress=False)
    assert emb.calls == [12]  # 14 candidates, p20.png and p150.png twice each


# --- the shared photos, in the published layout ------------------------------------------------

needs_flickr = pytest.mark.skipif(not (FLICKR / "captions.txt").is_file(), reason=f"{FLICKR} is absent")


class OracleEmbedder:
    """Photo j and its caption -> one-hot j; any other text (an instruction) -> the last axis."""

    model_id = "oracle"

    def __init__(self, photos: list[tuple[str, str]]):
        self.index = {name: i for i, (name, _) in enumerate(photos)}
        self.caption = {cap: i for i, (_, cap) in enumerate(photos)}
        self.embed_dim = len(photos) + 1

    def _onehot(self, i: int) -> np.ndarray:
        return np.eye(self.embed_dim, dtype=np.float32)[i]

    def embed_images(self, images, *, batch_size=32, progress=False):
        return np.stack([self._onehot(self.index[Path(p).name]) for p in images])

    def embed_texts(self, texts, *, batch_size=32, progress=False):
        return np.stack([self._onehot(next((i for c, i in self.caption.items() if c in t), self.embed_dim - 1))
                         for t in texts])


@pytest.fixture(scope="module")
def flickr_root(tmp_path_factory) -> tuple[Path, list[tuple[str, str]]]:
    """MSCOCO_t2i and MSCOCO_i2t in MMEB's wording over 6 shared photos, each row listing all 6 (positive
    first). In t2i rows 5 and 6 the "positive" is the next photo and the true one comes second: hit@1 is 4/6
    there (recall@5 6/6), and 6/6 in i2t."""
    if not (FLICKR / "captions.txt").is_file():
        pytest.skip(f"{FLICKR} is absent")
    pytest.importorskip("pyarrow")
    photos = flickr_photos(FLICKR, 6)
    root = tmp_path_factory.mktemp("mmeb") / "MMEB-eval"
    write_mmeb_flickr(root, photos, FLICKR / "images", mislabelled=2)
    return root, photos


@needs_flickr
def test_shared_photos_in_the_published_layout(flickr_root, tmp_path: Path, monkeypatch, capsys):
    root, photos = flickr_root
    monkeypatch.setitem(sys.modules, "edge_gcl.runtime",
                        types.SimpleNamespace(load_embedder=lambda model, provider="cpu", device=None: OracleEmbedder(photos)))
    out = tmp_path / "mmeb.json"
    assert main(["eval", "mmeb", "--root", str(root), "--model", "oracle", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["MSCOCO_t2i"]["hit@1"] == pytest.approx(400 / 6)
    assert results["MSCOCO_i2t"]["hit@1"] == 100.0
    assert results["average"]["hit@1"] == pytest.approx((400 / 6 + 100) / 2)
    assert results["MSCOCO_t2i"]["recall@5"] == 100.0  # the true photo ranks 2nd in rows 5 and 6
    assert list(results)[:2] == ["MSCOCO_t2i", "MSCOCO_i2t"]  # MMEB's order, not the folder order
    printed = capsys.readouterr().out
    assert "MSCOCO_t2i" in printed and "not in the root: VisDial" in printed


@needs_flickr
@pytest.mark.slow
def test_tiny_onnx_model_on_the_shared_photos(flickr_root, tmp_path: Path):
    """A real `Embedder` (the tiny ONNX towers of tests/test_runtime.py) decodes the photos; hit@1 equals a
    direct computation with the same embedder."""
    pytest.importorskip("onnx")
    from edge_gcl.runtime import load_embedder
    from tests.test_runtime import make_artifacts

    root, photos = flickr_root
    embedder = load_embedder(str(make_artifacts(tmp_path / "art")))
    results = evaluate_mmeb(embedder, root, tasks=["MSCOCO_i2t"], progress=False)
    rows = read_task(task_files(root, "MSCOCO_i2t")[0], root / "eval_images")
    q = embedder.embed_images([r.query.img_path for r in rows])  # fused with the kept instruction
    t = embedder.embed_texts(["Find an image caption describing the given everyday image."])
    q = (q + t) / np.linalg.norm(q + t, axis=1, keepdims=True)
    hits = [int(np.argmax(embedder.embed_texts([c.txt for c in r.candidates]) @ q[i]) == 0) for i, r in enumerate(rows)]
    assert results["MSCOCO_i2t"]["hit@1"] == pytest.approx(100 * np.mean(hits))


# --- bad input: one line naming the file and line, exit 1 --------------------------------------


@pytest.fixture
def fake_runtime(monkeypatch):
    monkeypatch.setitem(sys.modules, "edge_gcl.runtime",
                        types.SimpleNamespace(load_embedder=lambda model, provider="cpu", device=None: AngleEmbedder(ANGLES)))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("edge-gcl: error: "), err
    return lines[0][len("edge-gcl: error: "):]


def _run(root: Path, *extra: str) -> int:
    return main(["eval", "mmeb", "--root", str(root), "--model", "fake", *extra])


def test_the_worked_root_runs_from_the_command_line(worked_root: Path, fake_runtime, capsys):
    assert _run(worked_root) == 0
    assert re.search(r"MSCOCO_t2i\s+33\.33\s+66\.67\s+100\.00\s+3", capsys.readouterr().out)


GOOD = mmeb_row("t0", "", [("", "imgs/p20.png"), ("", "imgs/p10.png")])
JSONL_CASES = {
    "not JSON": ('{"qry_text": "t0",\n', r"test\.jsonl:2: not valid JSON"),
    "not an object": ("[1, 2]\n", r"test\.jsonl:2: expected a JSON object, got list"),
    "missing column": (json.dumps({k: v for k, v in GOOD.items() if k != "tgt_img_path"}) + "\n",
                       r"test\.jsonl:2: missing tgt_img_path"),
    "lists differ": (json.dumps(GOOD | {"tgt_text": ["", "", ""]}) + "\n",
                     r"test\.jsonl:2: tgt_text has 3 entries, tgt_img_path 2"),
    "no candidates": (json.dumps(GOOD | {"tgt_text": [], "tgt_img_path": []}) + "\n", r"test\.jsonl:2: no candidates"),
    "empty item": (json.dumps(GOOD | {"tgt_text": ["", "<|image_1|>"], "tgt_img_path": ["imgs/p20.png", ""]}) + "\n",
                   r"test\.jsonl:2: tgt_text\[1\] and tgt_img_path\[1\] are both empty"),
    "empty query": (json.dumps(GOOD | {"qry_text": " "}) + "\n", r"test\.jsonl:2: qry_text and qry_img_path are both empty"),
    "text not a string": (json.dumps(GOOD | {"qry_text": 3}) + "\n", r"test\.jsonl:2: qry_text must be a string, got int"),
    "tgt_text a string": (json.dumps(GOOD | {"tgt_text": "x"}) + "\n", r"test\.jsonl:2: tgt_text must be a list, got str"),
    "missing image": (json.dumps(GOOD | {"tgt_img_path": ["imgs/p20.png", "imgs/nope.png"]}) + "\n",
                      r"test\.jsonl:2: image not found: .*eval_images/imgs/nope\.png"),
}


@pytest.mark.parametrize("case", list(JSONL_CASES))
def test_bad_jsonl_row_is_one_line_naming_file_and_line(worked_root: Path, fake_runtime, case: str, capsys):
    bad, pattern = JSONL_CASES[case]
    path = worked_root / "NIGHTS" / "test.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps(GOOD) + "\n" + bad)
    assert _run(worked_root) == 1
    line = _error_line(capsys)
    assert line.startswith(str(path)), line
    assert re.search(pattern, line), line


def test_bad_parquet_row_names_its_row_number(worked_root: Path, fake_runtime, capsys):
    path = _write_task(worked_root, "WebQA", [GOOD, GOOD, GOOD | {"tgt_img_path": ["imgs/p20.png", "imgs/gone.png"]}])
    assert _run(worked_root) == 1
    assert re.fullmatch(rf"{re.escape(str(path))}:3: image not found: .*gone\.png", _error_line(capsys))


def test_parquet_without_a_column(worked_root: Path, fake_runtime, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = worked_root / "EDIS" / "test-00000-of-00001.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"qry_text": ["x"], "qry_img_path": [""], "tgt_text": [["y"]]}), path)
    assert _run(worked_root) == 1
    assert _error_line(capsys) == (f"{path}: no column tgt_img_path "
                                   "(columns: qry_text, qry_img_path, tgt_text)")


def test_not_a_parquet_file(worked_root: Path, fake_runtime, capsys):
    path = worked_root / "MSCOCO_t2i" / "test-00000-of-00001.parquet"
    path.write_bytes(b"not parquet at all")
    assert _run(worked_root) == 1
    assert _error_line(capsys).startswith(f"{path}: not a readable parquet file")


def test_parquet_without_pyarrow_names_the_package(worked_root: Path, fake_runtime, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert _run(worked_root) == 1
    path = worked_root / "MSCOCO_t2i" / "test-00000-of-00001.parquet"
    assert _error_line(capsys) == f"{path}: reading MMEB's parquet files needs pyarrow, from the [mmeb] extra: pip install 'edge-gcl[mmeb]'"


def test_empty_task_file(worked_root: Path, fake_runtime, capsys):
    (worked_root / "OVEN").mkdir()
    (worked_root / "OVEN" / "test.jsonl").write_text("\n\n")
    assert _run(worked_root) == 1
    assert _error_line(capsys) == f"{worked_root / 'OVEN' / 'test.jsonl'}: no rows"


def test_unknown_task(worked_root: Path, fake_runtime, capsys):
    assert _run(worked_root, "--tasks", "MSCOCO_t2i", "Nope") == 1
    assert _error_line(capsys).startswith(f"{worked_root / 'Nope'}: no test-*.parquet, test/*.parquet or test.jsonl")


def test_root_without_retrieval_tasks(tmp_path: Path, fake_runtime, capsys):
    (tmp_path / "ImageNet-1K").mkdir()
    assert _run(tmp_path) == 1
    assert _error_line(capsys).startswith(f"{tmp_path}: none of MMEB's retrieval task folders (VisDial, CIRR")


def test_missing_root(tmp_path: Path, fake_runtime, capsys):
    assert _run(tmp_path / "nowhere") == 1
    assert _error_line(capsys) == f"{tmp_path / 'nowhere'}: no such folder"


def test_convert_branch_layout_is_read(worked_root: Path):
    """The Hub's refs/convert/parquet branch: <Task>/test/0000.parquet."""
    src = task_files(worked_root, "MSCOCO_t2i")[0]
    (worked_root / "MSCOCO_t2i" / "test").mkdir()
    src.rename(worked_root / "MSCOCO_t2i" / "test" / "0000.parquet")
    assert task_files(worked_root, "MSCOCO_t2i") == [worked_root / "MSCOCO_t2i" / "test" / "0000.parquet"]
    assert evaluate_mmeb(AngleEmbedder(ANGLES), worked_root, progress=False)["MSCOCO_t2i"]["queries"] == 3


# --- benchmarks.report: a section when --mmeb-root is given ------------------------------------


def test_report_runs_mmeb_only_when_its_root_is_given(worked_root: Path, tmp_path: Path, monkeypatch):
    pytest.importorskip("onnx")
    from benchmarks.report import main as report
    from benchmarks.report import render
    from tests.test_runtime import make_artifacts

    artifacts = make_artifacts(tmp_path / "art")  # reused as is (it holds a manifest); the towers are stood in for
    monkeypatch.setitem(sys.modules, "edge_gcl.runtime",
                        types.SimpleNamespace(load_embedder=lambda model, provider="cpu", device=None: AngleEmbedder(ANGLES)))
    out = tmp_path / "results"
    argv = ["--artifacts", str(artifacts), "--out", str(out), "--no-doc"]
    assert report(["--only", "mmeb", "--mmeb-root", str(worked_root), *argv]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mmeb.json"]
    md = render(out, doc_dir=tmp_path)
    assert "### MMEB retrieval" in md
    assert "| MSCOCO_t2i | 33.3 | 66.7 | 100.0 | 3 |" in md
    assert "Not in the root: VisDial, CIRR" in md
    with pytest.raises(SystemExit):  # --only mmeb without its root
        report(["--only", "mmeb", *argv])


def test_bad_k_fails_before_anything_loads(worked_root: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "edge_gcl.runtime", types.SimpleNamespace(load_embedder=None))  # never called
    assert _run(worked_root, "--k", "5", "0") == 1
    assert _error_line(capsys) == "--k: must be positive integers, got 5 0"

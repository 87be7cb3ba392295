"""M-BEIR reading and evaluation (edge_gcl.eval.mbeir): metrics by hand, a toy root with known answers, the CLI."""

from __future__ import annotations

import json
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_gcl.cli import main
from edge_gcl.embedding import fuse, l2_normalize
from edge_gcl.eval.mbeir import (
    Candidate,
    MBEIRFormatError,
    Query,
    embed_items,
    evaluate_mbeir,
    format_table,
    query_positives,
    read_pool,
    read_qrels,
    read_queries,
)
from edge_gcl.metrics import recall_at_k, topk

# --- metrics ------------------------------------------------------------------------------------


def test_recall_at_k_hand_worked():
    ranked = np.array([[3, 1, 2], [0, 2, 1], [5, 6, 7]])
    positives = [{1}, {1, 2}, {9}]
    assert recall_at_k(ranked, positives, 1) == 0.0  # no positive at rank 1
    assert recall_at_k(ranked, positives, 2) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, positives, 3) == pytest.approx(2 / 3)  # query 1 hits twice, counts once
    assert recall_at_k(ranked, positives, 50) == pytest.approx(2 / 3)  # k beyond the row: whole row
    assert recall_at_k(np.array([[4, 5]]), [set()], 2) == 0.0  # no positives: 0, as in UniIR
    assert recall_at_k(np.array([["10:1", "10:2"]]), [{"10:2"}], 2) == 1.0  # string ids


def test_recall_at_k_rejects_bad_input():
    with pytest.raises(ValueError, match="positives"):
        recall_at_k(np.zeros((2, 3), int), [{1}], 1)
    with pytest.raises(ValueError, match="ranked_ids"):
        recall_at_k(np.zeros(3, int), [{1}, {2}, {3}], 1)
    with pytest.raises(ValueError, match="k"):
        recall_at_k(np.zeros((1, 3), int), [{1}], 0)


def test_topk_ties_go_to_the_lower_index():
    idx, vals = topk(np.array([[0.5, 0.9, 0.9, 0.1]]), 2)
    assert idx.tolist() == [[1, 2]] and vals.tolist() == [[0.9, 0.9]]
    idx, _ = topk(np.array([[0.0, 1, 1, 1, 1, 0, 0, 1, 0, 0]]), 3)  # tie across the selection boundary
    assert idx.tolist() == [[1, 2, 3]]
    assert topk(np.array([[1.0, 2.0]]), 5)[0].tolist() == [[1, 0]]  # k larger than the pool


def test_topk_matches_a_stable_full_sort():
    for n in (40, 300):
        scores = np.random.default_rng(n).integers(0, 3, (50, n)).astype(np.float32)  # many ties
        for k in (1, 5, 39, 40, 100, 299):
            expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            assert np.array_equal(topk(scores, k)[0], expected), (n, k)


# --- a toy M-BEIR root with known answers ------------------------------------------------------

COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
AXES = [*COLORS, "IMAGE", "TEXT"]


class ColorEmbedder:
    """Images: one-hot of their colour + 0.5 on an image axis. Texts: one-hot of each colour word + 0.5 on a
    text axis. So "a red thing" embeds exactly like the text "red" (score 1) and scores 0.8 with the red image."""

    model_id = "toy-colors"
    embed_dim = len(AXES)

    def __init__(self) -> None:
        self.images: Counter = Counter()
        self.texts: Counter = Counter()

    def embed_images(self, images, *, batch_size=32, progress=False):
        self.images.update(str(p) for p in images)
        rows = []
        for p in images:
            rgb = Image.open(p).convert("RGB").getpixel((0, 0))
            color = next(c for c, v in COLORS.items() if v == rgb)
            rows.append(np.eye(len(AXES))[AXES.index(color)] + 0.5 * np.eye(len(AXES))[AXES.index("IMAGE")])
        return l2_normalize(np.array(rows))

    def embed_texts(self, texts, *, batch_size=64, progress=False):
        self.texts.update(texts)
        rows = []
        for t in texts:
            v = 0.5 * np.eye(len(AXES))[AXES.index("TEXT")]
            v = v + sum(np.eye(len(AXES))[AXES.index(w)] for w in t.split() if w in COLORS)
            rows.append(v)
        return l2_normalize(np.array(rows))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _query(qid, txt, img, modality, pos):
    return {"qid": qid, "query_txt": txt, "query_img_path": img, "query_modality": modality,
            "query_src_content": None, "pos_cand_list": pos, "neg_cand_list": []}


@pytest.fixture
def toy_root(tmp_path: Path) -> Path:
    root = tmp_path / "toy"
    (root / "images").mkdir(parents=True)
    for name, rgb in COLORS.items():
        Image.new("RGB", (4, 4), rgb).save(root / "images" / f"{name}.png")
    images = [{"did": f"1:{i}", "txt": None, "img_path": f"images/{c}.png", "modality": "image"}
              for i, c in enumerate(COLORS, 1)]
    texts = [{"did": f"1:{10 + i}", "txt": t, "img_path": None, "modality": "text"}
             for i, t in enumerate(["red", "green", "blue", "yellow", "red and blue", "green and yellow"], 1)]
    local, q = root / "cand_pool" / "local", root / "query" / "test"
    # task 0, text -> image: positives only in the qrels (pos_cand_list left empty), one relevance-0 line.
    _write_jsonl(q / "mbeir_toy_task0_test.jsonl",
                 [_query(f"1:{i}", f"a {c} thing", None, "text", []) for i, c in enumerate(COLORS, 1)])
    _write_jsonl(local / "mbeir_toy_task0_cand_pool.jsonl", images)
    qrels = root / "qrels" / "test"
    qrels.mkdir(parents=True)
    (qrels / "mbeir_toy_task0_test_qrels.txt").write_text(
        "".join(f"1:{i} 0 1:{i} 1 0\n" for i in range(1, 5)) + "1:1 0 1:11 0 0\n")
    # task 3, image -> text: no qrels file (pos_cand_list is used); a split-specific local pool that must win
    # over the decoy without the split in its name.
    _write_jsonl(q / "mbeir_toy_task3_test.jsonl",
                 [_query(f"1:{4 + i}", None, f"images/{c}.png", "image", [f"1:{10 + i}"])
                  for i, c in enumerate(COLORS, 1)])
    _write_jsonl(local / "mbeir_toy_task3_test_cand_pool.jsonl", texts)
    _write_jsonl(local / "mbeir_toy_task3_cand_pool.jsonl", texts[3:4])
    # task 6, image+text -> text: the answer needs both halves of the query.
    _write_jsonl(q / "mbeir_toy_task6_test.jsonl",
                 [_query("1:9", "blue", "images/red.png", "image,text", ["1:15"]),
                  _query("1:10", "yellow", "images/green.png", "image,text", ["1:16"])])
    _write_jsonl(local / "mbeir_toy_task6_cand_pool.jsonl", texts)
    _write_jsonl(root / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl", images + texts)
    return root


def test_modality_gap_counts_what_outranks_the_positive(toy_root: Path):
    """benchmarks.modality_gap on the toy root, whose embedder has a built-in gap (same modality +0.2)."""
    from benchmarks.modality_gap import gap_rows, modality_gap

    gap = modality_gap(ColorEmbedder(), toy_root)
    t2i, i2t = gap["mbeir_toy_task0_test"], gap["mbeir_toy_task3_test"]
    # "a red thing": the caption "red" (1.0) above the red photo (0.8); "red and blue" (0.75) below it.
    assert t2i["positive"] == pytest.approx(0.8) and t2i["above"] == {"image": 0.0, "text": 1.0}
    # The red photo query: the red photo itself (1.0) above the caption "red" (0.8).
    assert i2t["positive"] == pytest.approx(0.8) and i2t["above"] == {"image": 1.0, "text": 0.0}
    assert t2i["cos"]["image"] == pytest.approx(0.8 / 4)  # one of four photos shares the colour
    rows = gap_rows({"toy": gap})
    assert rows[0]["task"] == "text -> image" and rows[0]["above text"] == 1.0
    union = toy_root / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl"
    union.write_text("".join(line + "\n" for line in union.read_text().splitlines() if '"1:11"' not in line))
    with pytest.raises(ValueError, match="mbeir_toy_task3_test.jsonl: 1 positives are not in the union pool"):
        modality_gap(ColorEmbedder(), toy_root)
    with pytest.raises(FileNotFoundError, match="mbeir_union_dev_cand_pool.jsonl: no such file"):
        modality_gap(ColorEmbedder(), toy_root, split="dev")
    (toy_root / "query" / "test").rename(toy_root / "query" / "old")
    with pytest.raises(FileNotFoundError, match="no query files"):
        modality_gap(ColorEmbedder(), toy_root)


def test_evaluate_toy_local_vs_global(toy_root: Path):
    embedder = ColorEmbedder()
    results = evaluate_mbeir(embedder, toy_root, progress=False)
    tasks = ["mbeir_toy_task0_test", "mbeir_toy_task3_test", "mbeir_toy_task6_test"]
    assert list(results) == [*tasks, "average"]
    for t in [*tasks, "average"]:
        assert list(results[t]) == ["local", "global"]
        for s in ("local", "global"):
            assert list(results[t][s]) == ["recall@1", "recall@5", "recall@10"]
    # Local pools hold one modality: every query finds its positive first.
    for t in tasks:
        assert results[t]["local"] == {"recall@1": 100.0, "recall@5": 100.0, "recall@10": 100.0}
    # Global: "a red thing" meets the caption "red" (score 1) before the red image (0.8); the red image query
    # meets the red image (1) before the caption "red" (0.8). Both positives come second.
    assert results["mbeir_toy_task0_test"]["global"] == {"recall@1": 0.0, "recall@5": 100.0, "recall@10": 100.0}
    assert results["mbeir_toy_task3_test"]["global"] == {"recall@1": 0.0, "recall@5": 100.0, "recall@10": 100.0}
    # red image + "blue" -> "red and blue" (0.95) beats "red", "blue" and both images (0.71).
    assert results["mbeir_toy_task6_test"]["global"] == {"recall@1": 100.0, "recall@5": 100.0, "recall@10": 100.0}
    assert results["average"]["local"] == {"recall@1": 100.0, "recall@5": 100.0, "recall@10": 100.0}
    assert results["average"]["global"]["recall@1"] == pytest.approx(100 / 3)
    assert results["average"]["global"]["recall@5"] == 100.0
    # Each distinct image and text went through the embedder once, over both settings and all files.
    assert set(embedder.images.values()) == {1} and len(embedder.images) == 4
    assert set(embedder.texts.values()) == {1}


def test_evaluate_options(toy_root: Path):
    only_local = evaluate_mbeir(ColorEmbedder(), toy_root, settings=("local",), ks=(2,), progress=False)
    assert only_local["average"] == {"local": {"recall@2": 100.0}}
    filtered = evaluate_mbeir(ColorEmbedder(), toy_root, settings=("global",), progress=False,
                              filter_global_modality=True)
    assert filtered["average"]["global"]["recall@1"] == 100.0  # union restricted to the target modality
    with pytest.raises(ValueError, match="settings"):
        evaluate_mbeir(ColorEmbedder(), toy_root, settings=("union",), progress=False)
    with pytest.raises(FileNotFoundError, match="no query files"):
        evaluate_mbeir(ColorEmbedder(), toy_root, split="val", progress=False)


def test_fused_items_are_normalized_sums(toy_root: Path):
    embedder = ColorEmbedder()
    red = toy_root / "images" / "red.png"
    items = [Query("1:1", "image,text", "blue", red), Candidate("1:2", "image", None, red),
             Candidate("1:3", "text", "blue", None)]
    emb = embed_items(embedder, items)
    assert emb.shape == (3, len(AXES)) and emb.dtype == np.float32
    np.testing.assert_allclose(emb[0], fuse(embedder.embed_images([red]), embedder.embed_texts(["blue"]))[0])
    np.testing.assert_allclose(emb[0], l2_normalize(emb[1] + emb[2]), atol=1e-6)
    assert embedder.images[str(red)] == 2  # once by embed_items (shared by rows 0 and 1), once above


def test_format_table(toy_root: Path):
    text = format_table(evaluate_mbeir(ColorEmbedder(), toy_root, progress=False))
    local, global_, top = text.split("\n\n")
    assert local.startswith("M-BEIR local") and global_.startswith("M-BEIR global")
    assert "text -> image" in local and "image,text -> text" in local
    assert global_.splitlines()[-1].split() == ["average", "33.33", "100.00", "100.00"]
    # The headline: global text -> image R@1 and R@5 beside the global average's.
    assert top == "headline, global pool: text -> image R@1 0.00  R@5 100.00   average R@1 33.33  R@5 100.00"
    only_local = evaluate_mbeir(ColorEmbedder(), toy_root, settings=("local",), progress=False)
    assert len(format_table(only_local).split("\n\n")) == 1  # no global setting, no headline


def test_readers_name_the_bad_input(tmp_path: Path):
    root = tmp_path / "r"
    q = root / "query" / "test" / "mbeir_x_task0_test.jsonl"
    q.parent.mkdir(parents=True)
    q.write_text(json.dumps(_query("1:1", "ok", None, "text", ["1:2"])) + "\n{not json\n")
    with pytest.raises(MBEIRFormatError, match=r"mbeir_x_task0_test\.jsonl:2: not valid JSON"):
        read_queries(q)
    q.write_text(json.dumps(_query("1:1", None, "images/gone.png", "image", [])) + "\n")
    with pytest.raises(FileNotFoundError, match=r"jsonl:1: image not found: .*gone\.png"):
        read_queries(q)
    q.write_text(json.dumps(_query("1:1", "hi", None, "audio", [])) + "\n")
    with pytest.raises(MBEIRFormatError, match="jsonl:1: query_modality"):
        read_queries(q)
    q.write_text(json.dumps(_query("1:1", "  ", None, "text", [])) + "\n")
    with pytest.raises(MBEIRFormatError, match="jsonl:1: query_txt is empty"):
        read_queries(q)
    p = root / "cand_pool" / "local" / "mbeir_x_task0_cand_pool.jsonl"
    p.parent.mkdir(parents=True)
    p.write_text('{"did": "1:2", "txt": "a", "modality": "text"}\n{"did": "1:2", "txt": "b", "modality": "text"}\n')
    with pytest.raises(MBEIRFormatError, match="cand_pool.jsonl:2: duplicate did"):
        read_pool(p)
    qrels = root / "qrels.txt"
    qrels.write_text("1:1 0 1:2 1 0\n1:1 0 1:3\n")
    with pytest.raises(MBEIRFormatError, match=r"qrels\.txt:2: expected"):
        read_qrels(qrels)
    qrels.write_text("1:1 0 1:2 1\n1:1 0 1:3 0 0\n")
    assert read_qrels(qrels) == {"1:1": {"1:2"}}


def test_query_positives_names_the_query(tmp_path: Path):
    queries = [Query("1:1", "text", "a", None, ("1:2",), line=1), Query("1:2", "text", "b", None, (), line=2)]
    with pytest.raises(MBEIRFormatError, match=r"^q\.jsonl:2: query 1:2 has no positive in its pos_cand_list"):
        query_positives(queries, tmp_path / "none.txt", query_file=Path("q.jsonl"))
    with pytest.raises(MBEIRFormatError, match=r"^query 1:2 has no positive in its pos_cand_list \(there is no "):
        query_positives(queries, tmp_path / "none.txt")
    assert query_positives(queries, tmp_path / "none.txt", allow_missing=True) == [{"1:2"}, set()]


# --- command line -------------------------------------------------------------------------------


def test_cli_eval_mbeir(toy_root: Path, tmp_path: Path, monkeypatch, capsys):
    calls = []

    def load_embedder(model, provider="cpu", device=None):
        calls.append((model, provider))
        return ColorEmbedder()

    monkeypatch.setitem(sys.modules, "edge_gcl.runtime", types.SimpleNamespace(load_embedder=load_embedder))
    out = tmp_path / "res" / "r.json"
    assert main(["eval", "mbeir", "--root", str(toy_root), "--model", "toy", "--setting", "global",
                 "--k", "1", "5", "--json", str(out)]) == 0
    assert calls == [("toy", "cpu")]
    results = json.loads(out.read_text())
    assert results["average"] == {"global": {"recall@1": pytest.approx(100 / 3), "recall@5": 100.0}}
    assert results["headline"] == {"text -> image": {"recall@1": 0.0, "recall@5": 100.0},
                                   "average": {"recall@1": pytest.approx(100 / 3), "recall@5": 100.0}}
    assert format_table(results) == format_table({k: v for k, v in results.items() if k != "headline"})
    assert "M-BEIR global" in capsys.readouterr().out

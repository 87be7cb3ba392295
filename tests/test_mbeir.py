"""M-BEIR: metrics by hand, a toy root with known answers, the Flickr builder, the CLI."""

from __future__ import annotations

import json
import os
import re
import sys
import types
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_gcl.cli import main
from edge_gcl.embedding import fuse, l2_normalize
from edge_gcl.mbeir import (
    Candidate,
    MBEIRFormatError,
    Query,
    build_mbeir,
    embed_items,
    evaluate_mbeir,
    format_table,
    read_pool,
    read_qrels,
    read_queries,
)
from edge_gcl.metrics import recall_at_k, topk

FLICKR = Path("/work/shared/data/flickr8k")
TASKS = (0, 1, 2, 3, 6)

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
    local, global_ = text.split("\n\n")
    assert local.startswith("M-BEIR local") and global_.startswith("M-BEIR global")
    assert "text -> image" in local and "image,text -> text" in local
    assert global_.splitlines()[-1].split() == ["average", "33.33", "100.00", "100.00"]


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


# --- building ------------------------------------------------------------------------------------

needs_flickr = pytest.mark.skipif(not (FLICKR / "captions.txt").is_file(), reason=f"{FLICKR} is absent")
WANTED = {0: ("text", "image"), 1: ("text", "text"), 2: ("text", "image,text"), 3: ("image", "text"),
          6: ("image,text", "text")}


def _dev_names(n: int) -> list[str]:
    return sorted(json.loads((FLICKR / "splits.json").read_text())["dev"])[:n]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    if not (FLICKR / "captions.txt").is_file():
        pytest.skip(f"{FLICKR} is absent")
    out = tmp_path_factory.mktemp("mbeir") / "flickr"
    return out, build_mbeir(FLICKR / "captions.txt", None, out, names=_dev_names(20), seed=0)


def _load(out: Path, task: int, dataset: str = "flickr8k"):
    stem = f"mbeir_{dataset}_task{task}_test"
    return (read_queries(out / "query" / "test" / f"{stem}.jsonl"),
            read_pool(out / "cand_pool" / "local" / f"{stem}_cand_pool.jsonl"),
            read_qrels(out / "qrels" / "test" / f"{stem}_qrels.txt"))


def _src(out: Path) -> tuple[dict[str, tuple[str, int | None]], dict[str, tuple[str, int | None]]]:
    """qid -> (photo, caption index) and did -> (photo, caption index), from the src_content fields."""
    qsrc, csrc = {}, {}
    for f in out.glob("query/test/*.jsonl"):
        for row in map(json.loads, f.read_text().splitlines()):
            s = json.loads(row["query_src_content"])
            qsrc[row["qid"]] = (s["image"], s["caption"])
    for row in map(json.loads, (out / "cand_pool/global/mbeir_union_test_cand_pool.jsonl").read_text().splitlines()):
        s = json.loads(row["src_content"])
        csrc[row["did"]] = (s["image"], s["caption"])
    return qsrc, csrc


def _key(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def _check_built(out: Path, dataset: str = "flickr8k") -> dict[str, dict[str, set[str]]]:
    """The builder's invariants; returns {task: {"queries": photos, "pool": photos}} and the union's photos."""
    union = {c.did: c for c in read_pool(out / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl")}
    qsrc, csrc = _src(out)
    photos: dict[str, dict[str, set[str]]] = {}
    local_union: set[str] = set()
    query_texts = []
    for task in TASKS:
        queries, pool, qrels = _load(out, task, dataset)
        assert qrels == {q.qid: set(q.pos) for q in queries}  # qrels and pos_cand_list agree
        pool_dids = {c.did for c in pool}
        assert pool_dids <= set(union) and len(pool_dids) == len(pool)
        local_union |= pool_dids
        assert {c.modality for c in pool} == {WANTED[task][1]}
        for q in queries:
            assert q.modality == WANTED[task][0] and q.task_id == task
            assert q.pos and set(q.pos) <= pool_dids
            assert {csrc[d][0] for d in q.pos} == {qsrc[q.qid][0]}  # positives: the query's photo
        query_texts += [q.txt for q in queries if q.txt is not None]
        photos[str(task)] = {"queries": {qsrc[q.qid][0] for q in queries}, "pool": {csrc[c.did][0] for c in pool}}
    assert local_union == set(union)  # the global pool is the union of the local pools
    # Each photo in at most one candidate modality; the image query photos in no pool at all.
    modalities_of: dict[str, set[str]] = {}
    for did, c in union.items():
        modalities_of.setdefault(csrc[did][0], set()).add(c.modality)
    assert all(len(m) == 1 for m in modalities_of.values())
    query_images = {q.img_path.name for t in (3, 6) for q in _load(out, t, dataset)[0]}
    assert not query_images & {c.img_path.name for c in union.values() if c.img_path is not None}
    # No text twice: query texts distinct, candidate texts distinct, and the two sets disjoint.
    cand_texts = [_key(c.txt) for c in union.values() if c.txt is not None]
    query_keys = [_key(t) for t in query_texts]
    assert len(set(cand_texts)) == len(cand_texts) and len(set(query_keys)) == len(query_keys)
    assert not set(cand_texts) & set(query_keys)
    photos["union"] = {"pool": set(modalities_of)}
    return photos


@needs_flickr
def test_build_layout_and_stats(built):
    out, stats = built
    # 20 photos: B the last 10 of the shuffle, A_i / A_it / A_t 4 / 3 / 3 of the first 10.
    assert stats["photos"] == 20 and stats["pool_photos"] == 10 and stats["query_photos"] == 10
    assert stats["pool_photos_by_modality"] == {"image": 4, "image,text": 3, "text": 3}
    assert stats["skipped"] == {}
    assert {s: (t["queries"], t["local_pool"]) for s, t in stats["tasks"].items()} == {
        "mbeir_flickr8k_task0_test": (4 * 5, 4),  # every caption of every A_i photo
        "mbeir_flickr8k_task1_test": (3 * 4, 3 + 10 * 4),  # captions 1..4 of A_t; A_t notes + B captions 1..4
        "mbeir_flickr8k_task2_test": (3 * 4, 3),  # captions 1..4 of A_it; (photo, caption 0) items
        "mbeir_flickr8k_task3_test": (10, 43),
        "mbeir_flickr8k_task6_test": (10, 43)}
    assert stats["global_pool"] == 4 + 3 + 43
    assert stats["global_pool_by_modality"] == {"image": 4, "image,text": 3, "text": 43}
    photos = _check_built(out)
    assert len(photos["union"]["pool"]) == 20  # every photo is in the union, B's as texts only
    a_i, a_t, a_it, b = (photos[t]["queries"] for t in ("0", "1", "2", "3"))
    assert [len(g) for g in (a_i, a_it, a_t, b)] == [4, 3, 3, 10]
    assert len(a_i | a_it | a_t | b) == 20  # disjoint groups
    assert photos["6"]["queries"] == b and photos["0"]["pool"] == a_i and photos["2"]["pool"] == a_it
    assert photos["1"]["pool"] == photos["3"]["pool"] == a_t | b


@needs_flickr
def test_build_query_captions(built):
    out, _ = built
    qsrc, csrc = _src(out)
    captions = {t: Counter(qsrc[q.qid][1] for q in _load(out, t)[0]) for t in TASKS}
    assert captions[0] == {c: 4 for c in range(5)}  # all five captions of each of the 4 A_i photos
    assert captions[1] == captions[2] == {c: 3 for c in range(1, 5)}  # all but the note (caption 0)
    assert captions[3] == {None: 10} and captions[6] == {0: 10}
    union = read_pool(out / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl")
    assert Counter((c.modality, csrc[c.did][1]) for c in union) == {
        ("image", None): 4, ("image,text", 0): 3, ("text", 0): 3, **{("text", c): 10 for c in range(1, 5)}}


@needs_flickr
def test_build_is_deterministic_and_references_images(built, tmp_path: Path):
    out, _ = built
    again, other = tmp_path / "again", tmp_path / "other"
    build_mbeir(FLICKR / "captions.txt", None, again, names=_dev_names(20), seed=0)
    build_mbeir(FLICKR / "captions.txt", None, other, names=_dev_names(20), seed=1)
    files = sorted(p.relative_to(out) for p in out.rglob("*.*") if p.parts[len(out.parts)] != "images")
    assert len(files) == 5 * 3 + 1
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)
    task0 = Path("query/test/mbeir_flickr8k_task0_test.jsonl")
    assert (out / task0).read_bytes() != (other / task0).read_bytes()
    link = out / "images"
    assert link.is_symlink() and link.resolve() == (FLICKR / "images").resolve()
    real_files = [Path(d) / f for d, _, fs in os.walk(out) for f in fs]  # walk does not follow links
    assert all(f.suffix in (".jsonl", ".txt") for f in real_files)


@needs_flickr
def test_build_rejects_unknown_names(tmp_path: Path):
    with pytest.raises(ValueError, match="nope.jpg"):
        build_mbeir(FLICKR / "captions.txt", None, tmp_path / "x", names=["nope.jpg"])


def test_build_skips_photos_whose_texts_would_repeat(tmp_path: Path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    rows = []
    for i in range(24):
        caps = [f"photo {i} caption {c}" for c in range(5)]
        if i == 0:
            caps[3] = "Photo 0, caption 1."  # the same text as caption 1, case and punctuation aside
        if i in (1, 2):
            caps[4] = "a dog runs"  # shared by two photos: the later one in shuffled order goes
        if i == 3:
            caps = caps[:1]  # one caption: enough for A_i only
        rows += [f"p{i:02d}.jpg,{c}" for c in caps]
        (src / "images" / f"p{i:02d}.jpg").write_bytes(b"")
    (src / "captions.txt").write_text("image,caption\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    stats = build_mbeir(src / "captions.txt", None, out, dataset="toy", seed=3)
    skipped = stats["skipped"]
    assert skipped["p00.jpg"] == "two of its captions are the same"
    assert ("p01.jpg" in skipped) != ("p02.jpg" in skipped)
    assert "repeats an earlier photo" in skipped.get("p01.jpg", skipped.get("p02.jpg"))
    photos = _check_built(out, "toy")
    assert photos["union"]["pool"] == {f"p{i:02d}.jpg" for i in range(24)} - set(skipped)
    if "p03.jpg" in skipped:
        assert skipped["p03.jpg"].startswith("only one caption")
    else:
        assert photos["0"]["pool"] >= {"p03.jpg"}
    assert stats["pool_photos"] + stats["query_photos"] + len(skipped) == 24
    assert sum(stats["pool_photos_by_modality"].values()) == stats["pool_photos"]


class _PhotoEmbedder:
    """One vector per photo (oracle) or per input (random), keyed by the items' src_content."""

    model_id = "test"
    embed_dim = 32

    def __init__(self, out: Path, oracle: bool) -> None:
        self.oracle = oracle
        self.photo_of_text = {}
        for f in [*out.glob("query/test/*.jsonl"), *out.glob("cand_pool/*/*.jsonl")]:
            for line in f.read_text().splitlines():
                row = json.loads(line)
                txt = row.get("query_txt", row.get("txt"))
                src = row.get("query_src_content", row.get("src_content"))
                if txt:
                    self.photo_of_text[txt] = json.loads(src)["image"]

    def _vec(self, key: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(key.encode())).normal(size=self.embed_dim)

    def embed_images(self, images, *, batch_size=32, progress=False):
        return l2_normalize(np.array([self._vec(Path(p).name if self.oracle else f"i{p}") for p in images]))

    def embed_texts(self, texts, *, batch_size=64, progress=False):
        return l2_normalize(np.array([self._vec(self.photo_of_text[t] if self.oracle else t) for t in texts]))


@needs_flickr
def test_oracle_and_random_embedders_on_the_built_benchmark(built):
    out, _ = built
    # Every form of a photo embeds alike under the oracle, and each pool holds one form of a photo at most:
    # the only candidates that match a query are its positives, in the union pool too.
    oracle = evaluate_mbeir(_PhotoEmbedder(out, oracle=True), out, progress=False)
    for task in oracle:
        for setting in ("local", "global"):
            assert oracle[task][setting] == {"recall@1": 100.0, "recall@5": 100.0, "recall@10": 100.0}, task
    rand = evaluate_mbeir(_PhotoEmbedder(out, oracle=False), out, progress=False)
    assert rand["average"]["local"]["recall@1"] < 40.0
    assert rand["average"]["global"]["recall@1"] < 20.0


# --- command line -------------------------------------------------------------------------------


@needs_flickr
def test_cli_build_mbeir(tmp_path: Path, capsys):
    out = tmp_path / "dev"
    args = ["bench", "build-mbeir", "--captions", str(FLICKR / "captions.txt"), "--splits", "splits.json",
            "--split", "dev", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "100 photos, 50 pool-side (17 image, 17 image,text, 16 text), 50 query-side" in printed
    assert "mbeir_flickr8k_task6_test" in printed and "global pool: 250" in printed  # 17 + 17 + 16 + 50 * 4
    counts = {t: len(read_queries(out / "query" / "test" / f"mbeir_flickr8k_task{t}_test.jsonl")) for t in TASKS}
    assert counts == {0: 17 * 5, 1: 16 * 4, 2: 17 * 4, 3: 50, 6: 50}
    with pytest.raises(ValueError, match="--split"):
        main(["bench", "build-mbeir", "--captions", str(FLICKR / "captions.txt"), "--splits", "splits.json",
              "--out", str(out)])


def test_cli_eval_mbeir(toy_root: Path, tmp_path: Path, monkeypatch, capsys):
    calls = []

    def load_embedder(model, provider="cpu"):
        calls.append((model, provider))
        return ColorEmbedder()

    monkeypatch.setitem(sys.modules, "edge_gcl.runtime", types.SimpleNamespace(load_embedder=load_embedder))
    out = tmp_path / "res" / "r.json"
    assert main(["eval", "mbeir", "--root", str(toy_root), "--model", "toy", "--setting", "global",
                 "--k", "1", "5", "--json", str(out)]) == 0
    assert calls == [("toy", "cpu")]
    results = json.loads(out.read_text())
    assert results["average"] == {"global": {"recall@1": pytest.approx(100 / 3), "recall@5": 100.0}}
    assert "M-BEIR global" in capsys.readouterr().out

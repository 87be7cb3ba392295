"""Rebuild `clip-bpe.tokenizer.json.gz`: OpenAI CLIP's byte-level BPE as a `tokenizers` JSON.

Source: `bpe_simple_vocab_16e6.txt.gz` from OpenAI CLIP (https://github.com/openai/CLIP,
MIT License, Copyright (c) 2021 OpenAI), byte-identical in the `open_clip_torch` wheel on PyPI
(sha256 pinned below). The output is equivalent to Hugging Face's `CLIPTokenizer` for
`openai/clip-vit-*`: 49408 ids = 256 byte symbols, the same with "</w>", 48894 merges,
then `<|startoftext|>` (49406) and `<|endoftext|>` (49407).

Only the `tokenizers` library is needed. Steps:

    pip download --no-deps -d /tmp/clipwheel open_clip_torch
    python edge_gcl/assets/make_clip_bpe.py /tmp/clipwheel/open_clip_torch-*.whl

The gzip is written with mtime 0, so the same source gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import zipfile
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

SOURCE_NAME = "bpe_simple_vocab_16e6.txt.gz"
SOURCE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
OUTPUT = Path(__file__).parent / "clip-bpe.tokenizer.json.gz"

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48894 merges of the 16e6 file
# CLIP's word splitter: specials, English contractions, letter runs, single digits, other symbol runs.
SPLIT_PATTERN = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes, in CLIP's id order (GPT-2's byte-to-unicode table).

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are shifted to U+0100.. in order.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))]


def read_merges(source: Path) -> list[tuple[str, str]]:
    """The merges from `bpe_simple_vocab_16e6.txt.gz`, or from a wheel that contains it."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            name = next((n for n in wheel.namelist() if n.endswith("/" + SOURCE_NAME)), None)
            if name is None:
                raise FileNotFoundError(f"{source}: no {SOURCE_NAME} inside this wheel")
            data = wheel.read(name)
    else:
        data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise ValueError(f"{source}: sha256 {digest} is not OpenAI's {SOURCE_NAME} ({SOURCE_SHA256})")
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    return [tuple(line.split()) for line in lines[1 : 1 + N_MERGES]]  # line 0 is a version header


def build_tokenizer(merges: list[tuple[str, str]]) -> Tokenizer:
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens) == 49408, len(vocab)

    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token=EOS,
        )
    )
    # OpenAI: ftfy + whitespace collapse + lower-case; Hugging Face's fast CLIP tokenizer uses NFC instead of ftfy.
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (BOS, EOS)])
    tok.post_processor = processors.RobertaProcessing(
        (EOS, vocab[EOS]), (BOS, vocab[BOS]), trim_offsets=False, add_prefix_space=False
    )
    return tok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "source", type=Path, help=f"{SOURCE_NAME}, or an open_clip_torch wheel that contains it"
    )
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)

    tok = build_tokenizer(read_merges(args.source))
    data = gzip.compress(tok.to_str().encode("utf-8"), compresslevel=9, mtime=0)
    args.out.write_bytes(data)
    print(f"{args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the text read in a photo means: a second text-to-text channel beside the towers.

The fine-tuned text tower maps a query to photos; it was trained on photo captions and does not
map "bakery bill" to a receipt reading "BOULANGERIE MONNIER ... Croissant 4.13". A sentence encoder
trained to compare sentences does: the pretrained all-MiniLM-L6-v2 (its 6 layers, mean pooling
over the tokens, L2 norm), the `lite` text tower's own backbone before fine-tuning. It embeds the
query and each photo's OCR text, and the cosine between them lifts a photo whose text means what
the query says (`boost`; the merge rule is in `edge_gcl.index.search`, `Index.search`).

The graph ships in the artifacts folder like the towers (`export.meaning`: float, QDQ with the
BERT recipe, EPContext), as `towers["ocr_meaning"]` with its own tokenizer, so the runtime needs
no torch. Its contract:

    input_ids, attention_mask (B, L) int32  ->  embedding (B, 384) float32, unit rows   L = 32

Before it is embedded a photo's text is cleaned (`clean`: every token holding a digit dropped;
prices, dates, card numbers are most of a receipt's tokens and mean nothing to a sentence
encoder), then cut into windows of L tokens (at most MAX_CHUNKS; the index does it, as for notes).

Chosen on the dev half of `python -m benchmarks.ocr` (docs/ocr.md): paraphrase R@5 62 -> 88.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TOWER = "ocr_meaning"
MODEL = "all-MiniLM-L6-v2"
TOKENIZER_NAME = "ocr_meaning_tokenizer.json"
CONTEXT_LENGTH = 32  # dev: 32, 64 and 128 tokens found the same (paraphrase R@5 92 on its own)
DIM = 384
MAX_CHUNKS = 8
# The merge rule: a photo's score gains WEIGHT x (cosine - THRESHOLD) when the cosine between the
# query and its text is above THRESHOLD. Dev (50 paraphrases): R@5 88 at (1, 0.1), 82 at (1, 0.2),
# 88 at (2, 0.1) but with word-query R@1 down 1.1; the phone dev benchmark (its queries pooled) moves
# by -0.07 (R@5) at (1, 0.1), by -0.3 (R@5) and -0.5 (R@1) at (2, 0.1).
WEIGHT = 1.0
THRESHOLD = 0.1
_DIGITS = re.compile(r"\S*\d\S*")


def clean(text: str) -> str:
    """`text` without the tokens that hold a digit, white space collapsed."""
    return " ".join(_DIGITS.sub(" ", text).split())


def boost(cosine: np.ndarray) -> np.ndarray:
    """What a photo's score gains from the cosine between the query and its text (0 at or under THRESHOLD)."""
    return WEIGHT * np.maximum(0.0, np.asarray(cosine, np.float32) - THRESHOLD)


def model_id(context_length: int = CONTEXT_LENGTH) -> str:
    """Names the vectors an index stores (float, QDQ and EPContext forms of one graph agree closely)."""
    return f"{MODEL.lower()}@{context_length}"


class MeaningEncoder:
    """Sentence vectors of texts: `embed(texts)` (N, dim) unit rows, each text cut to the context
    length (`tokenizer`). Built from an artifacts folder by `load_meaning`."""

    def __init__(self, graph: Path, tokenizer: Path, *, spec: Any, provider: str = "cpu",
                 qnn_target: dict[str, int | None] | None = None, threads: int = 0, description: str = "") -> None:
        from ..config import TextPreprocess
        from ..runtime import Tower, cpu_session
        from ..tokenizer import Tokenizer

        length = int(spec.inputs[0].shape[1])
        self.tokenizer = Tokenizer.from_config(
            TextPreprocess(tokenizer="minilm-wordpiece", context_length=length, tokenizer_file=Path(tokenizer).name),
            Path(tokenizer).parent,
        )
        self.model_id = model_id(length)
        self.provider = provider
        self.description = description
        if provider == "qnn":
            from ..qnn_ep import qnn_session

            session = qnn_session(graph, threads=threads, **(qnn_target or {}))
        else:
            session = cpu_session(Path(graph), threads=threads)
        self._tower = Tower(session, spec, int(spec.outputs[0].shape[1]))
        self._tower.check_fixed_dims(1, length, "context length")
        self.dim = int(spec.outputs[0].shape[1])

    def __repr__(self) -> str:
        return f"MeaningEncoder({self.description or self.model_id}, provider={self.provider!r})"

    def embed(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """(N, dim) float32 unit rows (a text is cut to the context length)."""
        from ..embedding import l2_normalize

        out = np.zeros((len(texts), self.dim), np.float32)
        step = self._tower.batch_step(batch_size)
        for start in range(0, len(texts), step):
            ids, mask = self.tokenizer(list(texts[start : start + step]))  # (B, L) each
            names = self._tower.input_names
            out[start : start + len(ids)] = self._tower.run({names[0]: ids, names[1]: mask})
        return l2_normalize(out)


def load_meaning(
    embedder: Any, meaning: MeaningEncoder | bool | str | None = "auto", *, provider: str = "cpu", form: str | None = None
) -> MeaningEncoder | None:
    """The sentence encoder an index uses beside `embedder`: `meaning` itself when it is one; the
    artifacts folder's graph ("auto", True) when its manifest lists one, run like its towers
    (`provider`, `form`); else None (False, None, or a model without the graph)."""
    if meaning is None or meaning is False:
        return None
    if not isinstance(meaning, (bool, str)):
        return meaning  # an encoder, or one that stands for it (`embed`, `tokenizer`, `model_id`)
    if meaning not in (True, "auto"):
        raise ValueError(f"meaning {meaning!r}: expected True, False, 'auto' or a MeaningEncoder")
    manifest, folder = getattr(embedder, "manifest", None), getattr(embedder, "folder", None)
    if manifest is None or folder is None or TOWER not in (getattr(manifest, "towers", None) or {}):
        return None
    from ..runtime import DEFAULT_FORM, RuntimeConfigError, qnn_target, rebuild_hint, verify_artifacts

    form = form or getattr(embedder, "form", None) or DEFAULT_FORM[provider]  # type: ignore[index]
    art = manifest.towers[TOWER]
    if form not in art.files:
        raise RuntimeConfigError(f"{folder}: no {form!r} {TOWER} graph (the manifest lists "
                                 f"{', '.join(sorted(art.files))}); {rebuild_hint(Path(folder), manifest)}")
    graph, tokenizer = Path(folder) / art.files[form], Path(folder) / art.files.get("tokenizer", TOKENIZER_NAME)
    for path in (graph, tokenizer):
        if not path.is_file():
            raise RuntimeConfigError(f"{path}: named by the manifest's {TOWER} and missing; {rebuild_hint(Path(folder), manifest)}")
    verify_artifacts(Path(folder), manifest, [p.relative_to(folder).as_posix() for p in (graph, tokenizer)])  # SHA-256
    what = {"float": "float32", "qdq": f"quantized (QDQ) {manifest.precision}", "ctx": f"compiled (EPContext) {manifest.precision}"}
    where = "ONNX Runtime CPU" if provider == "cpu" else "the Hexagon NPU"
    return MeaningEncoder(graph, tokenizer, spec=art.spec, provider=provider,
                          qnn_target=qnn_target(manifest.chipset) if provider == "qnn" else None,
                          description=f"text meaning: {MODEL} {what.get(form, form)} on {where}")

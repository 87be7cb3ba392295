"""Words in photos: PP-OCR on edge-gcl's own ONNX Runtime sessions (`engine.py`), its graphs'
contract (`contract.py`), the numpy geometry that replaces OpenCV (`boxes.py`), and the sentence
encoder that compares a query with what the text read means (`meaning.py`)."""

from __future__ import annotations

import sys

from .contract import GRAPHS, OcrConfig, OcrFiles
from .engine import OcrEngine, OcrLine, OcrResult

__all__ = ["GRAPHS", "OcrConfig", "OcrEngine", "OcrFiles", "OcrLine", "OcrResult", "load_ocr", "ocr_for_command"]


def load_ocr(
    embedder: object, ocr: OcrEngine | bool | str | None = "auto", *, provider: str = "cpu", form: str | None = None
) -> OcrEngine | None:
    """The OCR engine an index uses beside `embedder`.

    `ocr`: an `OcrEngine` (returned as is); False or None (none); "auto": the OCR graphs of the embedder's
    artifacts folder when its manifest lists them, run like its towers (`provider`, `form`), else
    none; True: the same, but a model whose folder has none (a PyTorch model) takes the rapidocr
    wheel's float graphs (the `[export]` extra), and FileNotFoundError says so where it is missing.
    """
    if isinstance(ocr, OcrEngine) or hasattr(ocr, "read_many"):  # an engine, or one that stands for it
        return ocr  # type: ignore[return-value]
    if ocr is False or ocr is None:
        return None
    if ocr not in (True, "auto"):
        raise ValueError(f"ocr {ocr!r}: expected True, False, 'auto' or an OcrEngine")
    from .artifacts import from_artifacts, has_ocr

    manifest = getattr(embedder, "manifest", None)
    folder = getattr(embedder, "folder", None)
    if manifest is not None and folder is not None and has_ocr(manifest):
        return from_artifacts(folder, manifest, provider=provider, form=form or getattr(embedder, "form", None))
    if ocr is True:
        if manifest is not None:
            raise FileNotFoundError(
                f"{folder}: these artifacts have no OCR graphs; rebuild them with `python -m export.compile`"
            )
        return OcrEngine.from_package()
    return None


def ocr_for_command(embedder: object, *, provider: str = "cpu", form: str | None = None) -> OcrEngine | None:
    """The OCR engine of a command that adds photos (`edge-gcl index add|sync|note|reindex|read-text`,
    `edge-gcl app`): the graphs of the embedder's artifacts folder ("auto" of `load_ocr`), or for a
    PyTorch model the rapidocr wheel's. Says on stderr what reads the words, or why nothing does (None)."""
    engine = load_ocr(embedder, "auto", provider=provider, form=form)
    if engine is None and getattr(embedder, "manifest", None) is None:  # a PyTorch model: the wheel's graphs
        try:
            engine = OcrEngine.from_package()
        except FileNotFoundError as e:
            print(f"words in photos are not read: {e}", file=sys.stderr)
            return None
    if engine is None:
        print(f"words in photos are not read: {getattr(embedder, 'folder', 'the model')} ships no OCR graphs "
              "(rebuild it with `python -m export.compile`)", file=sys.stderr)  # fmt: skip
        return None
    print(engine.description or repr(engine), file=sys.stderr, flush=True)
    return engine

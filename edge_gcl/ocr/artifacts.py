"""The OCR graphs of an artifacts folder, as `export.compile` writes them into the manifest.

    towers["ocr_gate" | "ocr_det" | "ocr_cls" | "ocr_rec"]   contract (contract.py) and files per form:
        float  the wheel's float graph (dynamic shapes; "gate" and "det" share one file)
        qdq    quantized at the fixed input shape (OcrConfig.input_shape)
        ctx    compiled for the manifest's chip (EPContext)
    towers["ocr_rec"].files["dictionary"]                    the recogniser's characters
    extra["ocr"] = {"config": OcrConfig.to_dict(), "models": {...}, "char_accuracy": {...}}

Forms run as the towers do (`edge_gcl.runtime`): float and qdq on the CPU, qdq and ctx on the NPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .contract import GRAPHS, OcrConfig, OcrFiles
from .engine import OcrEngine

TOWER_PREFIX = "ocr_"


def has_ocr(manifest: Any) -> bool:
    towers = getattr(manifest, "towers", {}) or {}
    return all(f"{TOWER_PREFIX}{g}" in towers for g in GRAPHS)


def from_artifacts(folder: str | Path, manifest: Any, *, provider: str = "cpu", form: str | None = None) -> OcrEngine:
    """An `OcrEngine` over the OCR graphs of `folder` in `form` (default: float on the CPU, ctx on the NPU)."""
    from ..runtime import (
        DEFAULT_FORM,
        RuntimeConfigError,
        form_files,
        qnn_target,
        rebuild_hint,
        verify_artifacts,
    )

    folder = Path(folder)
    form = form or DEFAULT_FORM[provider]  # type: ignore[index]
    paths: dict[str, Path] = {}
    for g in GRAPHS:
        files = manifest.towers[f"{TOWER_PREFIX}{g}"].files
        if form not in files:
            raise RuntimeConfigError(
                f"{folder}: no {form!r} OCR {g} graph (the manifest lists {', '.join(sorted(files))}); "
                f"{rebuild_hint(folder, manifest)}, or --no-ocr"
            )
        paths[g] = folder / files[form]
        if not paths[g].is_file():
            raise RuntimeConfigError(f"{paths[g]}: the OCR {g} graph named by the manifest is missing; {rebuild_hint(folder, manifest)}")
    dictionary = folder / manifest.towers[f"{TOWER_PREFIX}rec"].files["dictionary"]
    loaded = [name for g in GRAPHS for name in form_files(manifest.towers[f"{TOWER_PREFIX}{g}"].files, form)]
    verify_artifacts(folder, manifest, [*loaded, dictionary.relative_to(folder).as_posix()])
    config = OcrConfig.from_dict((manifest.extra.get("ocr") or {}).get("config", {}))
    where = "ONNX Runtime CPU"
    if provider == "qnn":
        where = f"the Hexagon NPU (QNN HTP {(manifest.chipset or {}).get('htp_arch', '?')})"
    what = {"float": "float32", "qdq": f"quantized (QDQ) {manifest.precision}", "ctx": f"compiled (EPContext) {manifest.precision}"}
    return OcrEngine(
        OcrFiles(dictionary=dictionary, **paths),
        config=config,
        provider=provider,
        qnn_target=qnn_target(manifest.chipset) if provider == "qnn" else None,
        description=f"OCR: PP-OCR {what.get(form, form)} graphs (detector {config.det_size} px, gate {config.gate_size} px) on {where}",
    )

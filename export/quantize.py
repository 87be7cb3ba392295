"""QDQ quantization of the towers for the Hexagon NPU, with onnxruntime.quantization.

:func:`quantize_tower` is the recipe; :func:`qnn_quant_config` its config factory (a thin layer over
``onnxruntime.quantization.execution_providers.qnn.get_qnn_qdq_config`` with the per-tower settings of
:data:`TOWER_SETTINGS`, chosen by architecture); :class:`FeedReader` the calibration protocol (``get_next() -> dict | None``);
:func:`fidelity` the check that a quantized or compiled tower still embeds like the float one.

Precisions (``w<weight bits>a<activation bits>``):

* ``"w8a16"``: 8-bit weights, 16-bit activations. The default: the HTP runs it natively and the
  probed towers (EfficientNet-Lite0, MiniLM-L6) keep cosine >= 0.999 against float.
* ``"w8a8"``: 8-bit everything. Fastest, but transformer towers collapse (cosine ~0.3 on MiniLM):
  attention logits and the LayerNorm inputs need more than 256 levels.
* ``"fp16"``: nothing to quantize; :func:`quantize_tower` only applies the QNN fusions and the compile
  step runs the float graph in fp16 on the HTP (``compile_context(..., fp16=True)``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantType, quantize
from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model
from onnxruntime.quantization.quantize import StaticQuantConfig

from export.qnn import run_on_cpu

log = logging.getLogger(__name__)

TowerKind = Literal["image", "text"]
TOWER_KINDS: tuple[TowerKind, ...] = ("image", "text")
# Quantization settings follow the architecture, not the modality: TinyCLIP's image tower is a ViT.
Architecture = Literal["conv", "transformer"]
Precision = Literal["w8a8", "w8a16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("w8a16", "w8a8", "fp16")

Feeds = Mapping[str, np.ndarray]
PathLike = str | os.PathLike[str]

# Metadata keys written into the quantized model (alongside the float model's own metadata).
META_PREFIX = "edge_gcl.quant."


def is_quantized(precision: Precision) -> bool:
    """True if ``precision`` produces a QDQ model; False for ``"fp16"`` (compile with ``fp16=True``)."""
    _check_precision(precision)
    return precision != "fp16"


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


# --------------------------------------------------------------------------------------------------
# Calibration data
# --------------------------------------------------------------------------------------------------


class FeedReader(CalibrationDataReader):
    """Calibration reader over a list of feed dicts (``{"pixel_values": (1, 3, 224, 224) float32}``).

    ``get_next()`` returns the next feed or None when exhausted; ``rewind()`` starts over.
    """

    def __init__(self, feeds: Sequence[Feeds]) -> None:
        if not feeds:
            raise ValueError("calibration needs at least one feed")
        self._feeds = [dict(feed) for feed in feeds]
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._feeds):
            return None
        feed = self._feeds[self._next]
        self._next += 1
        return feed

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self._feeds)


# --------------------------------------------------------------------------------------------------
# Per-tower settings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TowerQuantSettings:
    """The non-default quantization settings of one tower; ``why`` says why each differs."""

    weight_type: QuantType
    weight_symmetric: bool
    per_channel: bool
    bias_correction: bool
    why: str


TOWER_SETTINGS: dict[Architecture, TowerQuantSettings] = {
    # Conv towers (EfficientNet-Lite): ORT's default uint8 per-tensor weights give cosine ~0.91.
    "conv": TowerQuantSettings(
        weight_type=QuantType.QInt8,
        weight_symmetric=True,
        per_channel=True,
        bias_correction=True,
        why=(
            "per-channel: BatchNorm folding leaves each output channel with its own weight range (depthwise "
            "kernels especially), one per-tensor scale wastes most of the 8 bits. int8 *symmetric*: only for "
            "signed symmetric weights does ORT widen a channel's weight scale when input_scale * weight_scale "
            "would overflow the int32 bias; BN-folded all-zero channels otherwise get a ~1e-6 scale and a "
            "clipped, wrong bias. Bias correction: removes the mean output shift that rounding 3x3 "
            "depthwise kernels (9 weights per channel) leaves, measured on the calibration set."
        ),
    ),
    # Transformer towers (MiniLM, CLIP text, CLIP ViT): uint8 per-channel.
    "transformer": TowerQuantSettings(
        weight_type=QuantType.QUInt8,
        weight_symmetric=False,
        per_channel=True,
        bias_correction=False,
        why=(
            "uint8 asymmetric, not int8: the HTP rejects LayerNormalization whose scale (gamma) is int8 "
            "symmetric. Per-channel: the Linear layers, which ORT's optimizer (inside qnn_preprocess_model) "
            "turns into Reshape-Gemm-Reshape, get one scale per output feature; a plain activation x activation "
            "MatMul stays per-tensor (QNN has no per-channel MatMul) and LayerNorm gamma falls back to "
            "per-tensor (ORT logs 'Axis 1 is out-of-range for weight ...')."
        ),
    ),
}


def architecture_of(model: onnx.ModelProto) -> Architecture:
    """``"transformer"`` if the graph has ``LayerNormalization`` (BERT, CLIP text, ViT), else ``"conv"``.

    Call it on the fused model (after ``qnn_preprocess_model(fuse_layernorm=True)``), where decomposed
    LayerNorms have become ``LayerNormalization`` nodes.
    """
    return "transformer" if any(n.op_type == "LayerNormalization" for n in model.graph.node) else "conv"


def qnn_quant_config(
    model: PathLike,
    calibration: Sequence[Feeds],
    *,
    precision: Precision,
    architecture: Architecture | None = None,
) -> StaticQuantConfig:
    """The ``StaticQuantConfig`` for one tower: ``get_qnn_qdq_config`` plus :data:`TOWER_SETTINGS`.

    ``architecture`` picks the settings (default: :func:`architecture_of` the model). Activations are
    uint16 (``w8a16``) or uint8 (``w8a8``), asymmetric, MinMax-calibrated (16-bit activations have the
    headroom that makes percentile/entropy calibration unnecessary). L2-normalised outputs get the
    fixed range of :func:`unit_range_overrides`.
    """
    _check_precision(precision)
    if precision == "fp16":
        raise ValueError("fp16 is not a QDQ precision: compile the float model with fp16=True")
    proto = onnx.load(str(model), load_external_data=False)
    architecture = architecture or architecture_of(proto)
    if architecture not in TOWER_SETTINGS:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(TOWER_SETTINGS)}")
    settings = TOWER_SETTINGS[architecture]
    return get_qnn_qdq_config(
        str(model),
        FeedReader(calibration),
        calibrate_method=CalibrationMethod.MinMax,
        activation_type=QuantType.QUInt16 if precision == "w8a16" else QuantType.QUInt8,
        weight_type=settings.weight_type,
        weight_symmetric=settings.weight_symmetric,
        per_channel=settings.per_channel,
        init_overrides=unit_range_overrides(proto),
    )


def unit_range_overrides(model: onnx.ModelProto) -> dict[str, list[dict[str, np.ndarray]]]:
    """Quantization range [-1, 1] for every L2-normalised tensor (``LpNormalization`` outputs).

    Calibrated ranges are too tight for these: a held-out embedding component slightly beyond the
    calibration min/max is clipped on the CPU, but the HTP's L2Norm *wraps around* (measured: -0.47
    with a calibrated min of -0.43 came out as +0.51, the max). A unit vector's components are in
    [-1, 1] by construction, so that range never overflows and costs only ~1 bit of resolution.
    """
    return {
        node.output[0]: [{"rmin": np.array(-1.0, np.float32), "rmax": np.array(1.0, np.float32)}]
        for node in model.graph.node
        if node.op_type == "LpNormalization"
    }


# --------------------------------------------------------------------------------------------------
# The recipe
# --------------------------------------------------------------------------------------------------


def quantize_tower(
    float_onnx: PathLike,
    out_path: PathLike,
    *,
    kind: TowerKind,
    precision: Precision,
    calibration: Sequence[Feeds],
) -> Path:
    """Quantize one tower to a QDQ model the QNN HTP runs entirely (``fp16``: fuse only).

    Steps:
      1. Set the float model's ``metadata_props`` aside: ``qnn_preprocess_model`` crashes on a model
         that has any (it ``dict.update``s them, onnxruntime 1.31).
      2. ``qnn_preprocess_model`` with ``fuse_layernorm=True``: Erf-GELU -> ``Gelu``, ReduceL2 ->
         ``LpNormalization``, ReduceMean chains -> ``LayerNormalization`` (a standalone ``Erf`` would
         fall back to the CPU). For ``fp16`` the result is the output.
      3. ``quantize`` with :func:`qnn_quant_config`: the settings of :data:`TOWER_SETTINGS` for the
         graph's architecture (:func:`architecture_of`: a ViT image tower is a "transformer"), and
         the fixed range [-1, 1] for L2-normalised outputs (:func:`unit_range_overrides`).
      4. Conv towers: :func:`correct_biases` from the same calibration feeds.
      5. Put the metadata back, add ``edge_gcl.quant.*`` keys, write atomically to ``out_path``.

    ``calibration`` should be a few dozen representative inputs in the tower's I/O contract, batch 1.
    """
    float_onnx, out_path = Path(float_onnx), Path(out_path)
    _check_precision(precision)
    if kind not in TOWER_KINDS:
        raise ValueError(f"unknown tower kind {kind!r}; choose one of {', '.join(TOWER_KINDS)}")
    out_path.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix=f".{out_path.stem}.", dir=out_path.parent) as tmp:
        tmp_dir = Path(tmp)
        # 1. Metadata aside.
        model = onnx.load(str(float_onnx))
        metadata = {p.key: p.value for p in model.metadata_props}
        del model.metadata_props[:]
        # 2. QNN fusions.
        fused = tmp_dir / "fused.onnx"
        if not qnn_preprocess_model(model, fused, fuse_layernorm=True):
            # nothing to fuse: it writes no file then, and may have left `model`'s weights pointing at
            # external data files it deleted (the OCR angle classifier): save the model as read
            model = onnx.load(str(float_onnx))
            del model.metadata_props[:]
            onnx.save(model, str(fused))
        del model
        result = fused
        architecture = architecture_of(onnx.load(str(fused), load_external_data=False))
        settings = TOWER_SETTINGS[architecture]
        if architecture == "transformer" and precision == "w8a8":
            warnings.warn(
                f"{float_onnx}: w8a8 transformer towers lose most of their fidelity (cosine ~0.3 on MiniLM); "
                "prefer w8a16",
                stacklevel=2,
            )
        bias_stats: BiasCorrection | None = None
        if is_quantized(precision):
            # 3. QDQ.
            qdq = tmp_dir / "qdq.onnx"
            config = qnn_quant_config(fused, calibration, precision=precision, architecture=architecture)
            quantize(fused, qdq, config)
            # 4. Bias correction.
            if settings.bias_correction:
                bias_stats = correct_biases(fused, qdq, calibration)
            result = qdq
        # 5. Metadata back, then atomically into place.
        final = onnx.load(str(result))
        metadata.update(
            {
                f"{META_PREFIX}precision": precision,
                f"{META_PREFIX}kind": kind,
                f"{META_PREFIX}architecture": architecture,
                f"{META_PREFIX}calibration_feeds": str(len(calibration)),
                f"{META_PREFIX}onnxruntime": ort.__version__,
            }
        )
        if is_quantized(precision):
            metadata[f"{META_PREFIX}weights"] = (
                f"{settings.weight_type.name} {'symmetric' if settings.weight_symmetric else 'asymmetric'} "
                f"{'per-channel' if settings.per_channel else 'per-tensor'}"
            )
        if bias_stats is not None:
            metadata[f"{META_PREFIX}bias_correction"] = f"{bias_stats.corrected} layers"
        onnx.helper.set_model_props(final, metadata)
        staged = tmp_dir / out_path.name
        onnx.save(final, str(staged))
        os.replace(staged, out_path)
    return out_path


# --------------------------------------------------------------------------------------------------
# Bias correction
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BiasCorrection:
    """What :func:`correct_biases` changed."""

    corrected: int  # Conv/Gemm nodes whose int32 bias was rewritten
    skipped: int  # candidates left alone (unsupported attributes, shared bias, int32 overflow)
    max_shift: float  # largest |bias change| in float units


@dataclass
class _BiasTarget:
    node: onnx.NodeProto
    delta_w: np.ndarray  # dequantized weight - float weight, same layout as the weight
    bias_int: onnx.TensorProto
    bias_scale: np.ndarray
    bias_zero_point: np.ndarray
    err_sum: np.ndarray | None = None
    count: int = 0


def _initializer_array(inits: Mapping[str, onnx.TensorProto], name: str) -> np.ndarray | None:
    return numpy_helper.to_array(inits[name]) if name in inits else None


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """DequantizeLinear in float64; per-channel when ``scale`` is a vector along ``axis``."""
    shape = [1] * q.ndim  # broadcast shape of scale / zero point
    if scale.ndim == 1 and scale.size > 1:
        shape[axis] = scale.size
    zp = np.zeros_like(scale) if zero_point is None else zero_point
    zp64 = zp.astype(np.float64).reshape(shape)
    return (q.astype(np.float64) - zp64) * scale.astype(np.float64).reshape(shape)


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _weight_error(node: onnx.NodeProto, x: np.ndarray, delta_w: np.ndarray) -> np.ndarray | None:
    """Mean (over batch and positions) of ``op(x, delta_w)`` per output channel, or None if unsupported."""
    import torch
    import torch.nn.functional as F

    attrs = _attrs(node)
    if node.op_type == "Conv":
        if x.ndim != 4 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
            return None
        pads = list(attrs.get("pads", [0, 0, 0, 0]))  # (top, left, bottom, right)
        xt = torch.from_numpy(x.astype(np.float32))
        xt = F.pad(xt, (pads[1], pads[3], pads[0], pads[2]))
        y = F.conv2d(
            xt,
            torch.from_numpy(delta_w.astype(np.float32)),
            stride=tuple(attrs.get("strides", [1, 1])),
            dilation=tuple(attrs.get("dilations", [1, 1])),
            groups=int(attrs.get("group", 1)),
        )  # (N, C_out, H', W')
        return y.double().mean(dim=(0, 2, 3)).numpy()
    if node.op_type == "Gemm":
        if attrs.get("transA", 0):
            return None
        w = delta_w.T if attrs.get("transB", 0) else delta_w  # (K, C_out)
        y = x.reshape(-1, x.shape[-1]).astype(np.float64) @ w.astype(np.float64)
        return float(attrs.get("alpha", 1.0)) * y.mean(axis=0)
    return None


def correct_biases(
    float_onnx: PathLike,
    qdq_onnx: PathLike,
    calibration: Sequence[Feeds],
    *,
    out_path: PathLike | None = None,
) -> BiasCorrection:
    """Empirical bias correction (Nagel et al. 2019) of the Conv/Gemm layers of a QDQ model.

    Rounding weights shifts each output channel's mean by ``E[op(x, W_q - W)]``. For every Conv/Gemm
    with a quantized int32 bias we run the QDQ model on the calibration feeds (CPU), take the
    dequantized input ``x`` each layer actually sees, compute that mean shift with the float weights of
    the same node in ``float_onnx``, subtract it from the bias and requantize the bias with its
    existing scale. Layers are corrected independently from one pass (the correction depends only on
    the layer's own weight error and its input statistics). Writes ``out_path`` (default: in place).
    """
    float_model = onnx.load(str(float_onnx))
    qdq_model = onnx.load(str(qdq_onnx))
    float_inits = {t.name: t for t in float_model.graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node if n.name}
    inits = {t.name: t for t in qdq_model.graph.initializer}
    producer = {out: n for n in qdq_model.graph.node for out in n.output}
    uses: dict[str, int] = {}
    for n in qdq_model.graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1

    targets: list[_BiasTarget] = []
    skipped = 0
    for node in qdq_model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not node.input[2]:
            continue
        w_dq, b_dq = producer.get(node.input[1]), producer.get(node.input[2])
        float_node = float_nodes.get(node.name)
        if (
            w_dq is None
            or b_dq is None
            or w_dq.op_type != "DequantizeLinear"
            or b_dq.op_type != "DequantizeLinear"
            or float_node is None
            or float_node.op_type != node.op_type
            or float_node.input[1] not in float_inits
            or b_dq.input[0] not in inits
            or uses.get(b_dq.input[0], 0) != 1
            or uses.get(node.input[2], 0) != 1
        ):
            skipped += 1
            continue
        w_q = _initializer_array(inits, w_dq.input[0])
        w_scale = _initializer_array(inits, w_dq.input[1])
        w_zp = _initializer_array(inits, w_dq.input[2]) if len(w_dq.input) > 2 and w_dq.input[2] else None
        if w_q is None or w_scale is None:
            skipped += 1
            continue
        w_axis = int(_attrs(w_dq).get("axis", 1))
        w_float = numpy_helper.to_array(float_inits[float_node.input[1]]).astype(np.float64)
        delta_w = _dequantize(w_q, w_scale, w_zp, w_axis % w_q.ndim) - w_float
        b_scale = _initializer_array(inits, b_dq.input[1])
        b_zp = _initializer_array(inits, b_dq.input[2]) if len(b_dq.input) > 2 and b_dq.input[2] else None
        if b_scale is None:
            skipped += 1
            continue
        targets.append(
            _BiasTarget(
                node=node,
                delta_w=delta_w,
                bias_int=inits[b_dq.input[0]],
                bias_scale=b_scale.astype(np.float64),
                bias_zero_point=np.zeros(1) if b_zp is None else b_zp.astype(np.float64),
            )
        )
    if not targets:
        return BiasCorrection(corrected=0, skipped=skipped, max_shift=0.0)

    # One CPU pass over the calibration set with every target's input exposed as a graph output.
    probe = onnx.ModelProto()
    probe.CopyFrom(qdq_model)
    existing = {o.name for o in probe.graph.output}
    x_names = list(dict.fromkeys(t.node.input[0] for t in targets))
    for name in x_names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    for feed in calibration:
        values = dict(zip(x_names, session.run(x_names, dict(feed)), strict=True))
        for target in targets:
            err = _weight_error(target.node, values[target.node.input[0]], target.delta_w)
            if err is None:
                target.count = -1
                continue
            if target.count >= 0:
                target.err_sum = err if target.err_sum is None else target.err_sum + err
                target.count += 1

    corrected, max_shift = 0, 0.0
    int32 = np.iinfo(np.int32)
    for target in targets:
        if target.count <= 0 or target.err_sum is None:
            skipped += 1
            continue
        err = target.err_sum / target.count
        b_int = numpy_helper.to_array(target.bias_int).astype(np.float64)
        b_float = (b_int - target.bias_zero_point) * target.bias_scale
        new_int = np.round((b_float - err) / target.bias_scale + target.bias_zero_point)
        if np.any(new_int > int32.max) or np.any(new_int < int32.min):
            skipped += 1  # keep the bias ORT chose rather than clip it
            continue
        target.bias_int.CopyFrom(numpy_helper.from_array(new_int.astype(np.int32), target.bias_int.name))
        max_shift = max(max_shift, float(np.abs(err).max()))
        corrected += 1
    onnx.save(qdq_model, str(out_path or qdq_onnx))
    log.info(
        "bias correction: %d layers corrected, %d skipped, max shift %.3g", corrected, skipped, max_shift
    )
    return BiasCorrection(corrected=corrected, skipped=skipped, max_shift=max_shift)


# --------------------------------------------------------------------------------------------------
# Fidelity
# --------------------------------------------------------------------------------------------------


def _rows(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    return array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)


def fidelity(
    float_onnx: PathLike,
    other: PathLike,
    feeds: Sequence[Feeds],
    *,
    run_other: Callable[[Path, Feeds], Mapping[str, np.ndarray]],
    output: str | None = None,
) -> dict[str, float]:
    """Compare ``other``'s output embeddings against the float model's on held-out ``feeds``.

    The float model runs on ONNX Runtime's CPU EP; ``other`` (a QDQ model or an EPContext model) runs
    through ``run_other`` (``export.qnn.run_on_htp`` or ``run_on_cpu``). ``output`` names the
    embedding output (default: the first). Each batch row is one embedding.

    Returns ``{"cosine_min", "cosine_mean", "max_abs_error"}``.
    """
    if not feeds:
        raise ValueError("fidelity needs at least one feed")
    cosines: list[np.ndarray] = []
    max_abs = 0.0
    for feed in feeds:
        ref_out = run_on_cpu(float_onnx, feed)
        got_out = run_other(Path(other), feed)
        name = output or next(iter(ref_out))
        if name not in got_out:
            raise KeyError(f"{other}: has no output {name!r} (outputs: {', '.join(got_out)})")
        ref, got = _rows(ref_out[name]), _rows(got_out[name])
        if ref.shape != got.shape:
            raise ValueError(f"{other}: output {name!r} has shape {got.shape}, float model {ref.shape}")
        denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        cosines.append(np.sum(ref * got, axis=1) / np.maximum(denom, 1e-12))
        max_abs = max(max_abs, float(np.abs(ref - got).max()))
    cos = np.concatenate(cosines)
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()), "max_abs_error": max_abs}

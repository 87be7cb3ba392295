"""QDQ quantization and Hexagon (HTP) compilation of tiny stand-ins for the two towers.

The QNN HTP backend in onnxruntime-qnn emulates the NPU on x86 Linux, so these tests compile real
EPContext binaries for a v75 (Snapdragon 8 Gen 3) target and run them, offline, in a few seconds:

* image: a 32x32 EfficientNet-Lite-shaped conv net (BatchNorm folded into convs, depthwise convs,
  ReLU6, a residual, global pooling, linear head, L2 norm), with one BN-zeroed channel.
* text: a 2-layer BERT-shaped encoder (LayerNorm, erf-GELU, finite additive mask built in-graph from
  an int32 attention mask, masked mean pooling, L2 norm).

Tolerances: cosine(float, compiled w8a16) >= 0.99 for every held-out input and >= 0.995 on average.
The image model's projection is centred on data (like a trained head), so its embeddings differ
between inputs (mean pairwise cosine < 0.5) and the cosine thresholds are not met by a constant.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper
from onnxruntime.quantization import QuantType

import export.qnn
import export.quantize as quant
from edge_gcl import qnn_ep
from export.chipsets import CHIPSETS, DEFAULT_TARGET, UnknownChipsetError, format_table, get_chipset
from export.qnn import (
    EP_NAME,
    NPUPlacementError,
    compile_context,
    htp_provider_options,
    measure_placement,
    npu_node_share,
    placement_of,
    qnn_available,
    run_on_cpu,
    run_on_htp,
)
from export.quantize import FeedReader, TowerQuantSettings, fidelity, quantize_tower

needs_qnn = pytest.mark.skipif(not qnn_available(), reason="onnxruntime-qnn (QNN HTP backend) not installed")

V75 = get_chipset("8 Gen 3")
COS_MIN, COS_MEAN = 0.99, 0.995
IMAGE_SIZE, SEQ_LEN, VOCAB = 32, 16, 100
MASK_VALUE = -100.0  # finite: -inf fails on the HTP, finfo.min wrecks quantization ranges


# --------------------------------------------------------------------------------------------------
# Tiny towers
# --------------------------------------------------------------------------------------------------


def _conv_bn(
    cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class TinyLite(nn.Module):
    """EfficientNet-Lite in miniature: (B, 3, 32, 32) float32 -> (B, 32) unit vectors."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, stride=2)
        self.dw1, self.pw1 = _conv_bn(16, 16, 3, groups=16), _conv_bn(16, 24, 1, act=False)
        self.expand, self.dw2, self.pw2 = (
            _conv_bn(24, 48, 1),
            _conv_bn(48, 48, 3, groups=48),
            _conv_bn(48, 24, 1, act=False),
        )
        self.head = _conv_bn(24, 64, 1)
        self.proj = nn.Linear(64, dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 16, 16, 16)
        x = self.pw1(self.dw1(x))  # (B, 24, 16, 16)
        x = x + self.pw2(self.dw2(self.expand(x)))  # residual
        return self.head(x).mean((2, 3))  # (B, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.features(x)), dim=-1)


def _attention_block(d: int, ffn: int) -> nn.ModuleDict:
    block = nn.ModuleDict(
        {
            "qkv": nn.Linear(d, 3 * d),
            "out": nn.Linear(d, d),
            "ln1": nn.LayerNorm(d),
            "fc1": nn.Linear(d, ffn),
            "fc2": nn.Linear(ffn, d),
            "ln2": nn.LayerNorm(d),
        }
    )
    with torch.no_grad():  # peaky attention like a trained encoder (a random one attends ~uniformly)
        block["qkv"].weight[: 2 * d] *= 4.0
    return block


def _attend(block: nn.ModuleDict, x: torch.Tensor, heads: int, additive: torch.Tensor | None) -> torch.Tensor:
    b, t, _ = x.shape  # (B, T, d)
    q, k, v = (z.reshape(b, t, heads, -1).transpose(1, 2) for z in block["qkv"](x).chunk(3, dim=-1))
    att = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5  # (B, H, T, T)
    if additive is not None:
        att = att + additive
    return block["out"]((att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1))


class TinyBert(nn.Module):
    """MiniLM in miniature (post-norm, erf-GELU): (B, T) int32 ids + (B, T) int32 mask -> (B, 32) unit vectors."""

    def __init__(self, d: int = 32, heads: int = 2, layers: int = 2, ffn: int = 64) -> None:
        super().__init__()
        self.tok, self.pos, self.ln0 = nn.Embedding(VOCAB, d), nn.Embedding(SEQ_LEN, d), nn.LayerNorm(d)
        self.heads = heads
        self.blocks = nn.ModuleList(_attention_block(d, ffn) for _ in range(layers))
        self.register_buffer("pos_ids", torch.arange(SEQ_LEN)[None], persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.ln0(self.tok(input_ids) + self.pos(self.pos_ids))  # (B, T, d)
        mask = attention_mask.float()  # (B, T)
        additive = (1.0 - mask)[:, None, None, :] * MASK_VALUE  # (B, 1, 1, T), finite
        for block in self.blocks:
            x = block["ln1"](x + _attend(block, x, self.heads, additive))
            x = block["ln2"](x + block["fc2"](F.gelu(block["fc1"](x))))
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)  # (B, d)
        return F.normalize(pooled, dim=-1)


class TinyViT(nn.Module):
    """TinyCLIP's ViT in miniature (pre-norm, quick-GELU, CLS token): (B, 3, 32, 32) -> (B, 32) unit vectors."""

    def __init__(self, d: int = 32, patch: int = 8, heads: int = 2, layers: int = 2, ffn: int = 64) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, patch, bias=False)
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, (IMAGE_SIZE // patch) ** 2 + 1, d) * 0.1)
        self.ln_pre, self.ln_post, self.proj = nn.LayerNorm(d), nn.LayerNorm(d), nn.Linear(d, d, bias=False)
        self.heads = heads
        self.blocks = nn.ModuleList(_attention_block(d, ffn) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, 16, d)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos  # (B, 17, d)
        x = self.ln_pre(x)
        for block in self.blocks:
            x = x + _attend(block, block["ln1"](x), self.heads, None)
            h = block["fc1"](block["ln2"](x))
            x = x + block["fc2"](h * torch.sigmoid(1.702 * h))  # quick-GELU
        return F.normalize(self.proj(self.ln_post(x[:, 0])), dim=-1)


def _export(model: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str]) -> Path:
    """Legacy (TorchScript) exporter, opset 17: stable node names ("/Erf") the tests can match.

    The dynamo exporter works too (both towers place 100% on the HTP), but it names internal values
    after ops, so an output called "embedding" collides with nn.Embedding's output: an invalid model.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=inputs,
            output_names=["embedding"],
            opset_version=17,
            dynamo=False,
        )
    return path


def _image_feeds(rng: np.random.Generator, n: int) -> list[dict[str, np.ndarray]]:
    return [
        {"pixel_values": rng.standard_normal((1, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)}
        for _ in range(n)
    ]


def _text_feeds(rng: np.random.Generator, n: int) -> list[dict[str, np.ndarray]]:
    feeds = []
    for _ in range(n):
        length = int(rng.integers(3, SEQ_LEN + 1))
        ids = np.zeros((1, SEQ_LEN), np.int32)
        ids[0, :length] = rng.integers(1, VOCAB, length)
        mask = np.zeros((1, SEQ_LEN), np.int32)
        mask[0, :length] = 1
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


def _mean_pairwise_cosine(embeddings: np.ndarray) -> float:
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = e @ e.T
    return float(sims[~np.eye(len(e), dtype=bool)].mean())


@pytest.fixture(scope="module")
def image_tower(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = TinyLite().eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            c = bn.num_features
            bn.weight.copy_(torch.rand(c, generator=gen) * 1.5 + 0.25)
            bn.bias.copy_(torch.randn(c, generator=gen) * 0.3)
            bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
            bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
        model.dw2[1].weight[3] = 0.0  # BN-folded all-zero depthwise channel
        feats = model.features(torch.randn(64, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen))
        model.proj.bias -= model.proj(feats).mean(0)  # centred head, like a trained projection
    folder = tmp_path_factory.mktemp("image")
    float_path = _export(
        model, (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),), folder / "image_tower.onnx", ["pixel_values"]
    )
    rng = np.random.default_rng(0)
    return {
        "folder": folder,
        "float": float_path,
        "calibration": _image_feeds(rng, 16),
        "held_out": _image_feeds(rng, 8),
    }


@pytest.fixture(scope="module")
def text_tower(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    model = TinyBert().eval()
    folder = tmp_path_factory.mktemp("text")
    example = (torch.zeros(1, SEQ_LEN, dtype=torch.int32), torch.ones(1, SEQ_LEN, dtype=torch.int32))
    float_path = _export(model, example, folder / "text_tower.onnx", ["input_ids", "attention_mask"])
    # Export metadata (the I/O contract) must survive quantization; qnn_preprocess_model alone crashes on it.
    proto = onnx.load(str(float_path))
    onnx.helper.set_model_props(proto, {"edge_gcl.tower": "text", "edge_gcl.context_length": str(SEQ_LEN)})
    onnx.save(proto, str(float_path))
    rng = np.random.default_rng(1)
    return {
        "folder": folder,
        "float": float_path,
        "calibration": _text_feeds(rng, 16),
        "held_out": _text_feeds(rng, 8),
    }


def _quantize_and_compile(tower: dict, kind: str) -> dict:
    folder = tower["folder"]
    qdq = quantize_tower(
        tower["float"],
        folder / f"{kind}_tower_w8a16.onnx",
        kind=kind,
        precision="w8a16",
        calibration=tower["calibration"],
    )
    report = compile_context(qdq, folder / f"{kind}_tower_ctx.onnx", chipset=V75)
    return {**tower, "qdq": qdq, "report": report}


@pytest.fixture(scope="module")
def image_compiled(image_tower: dict) -> dict:
    return _quantize_and_compile(image_tower, "image")


@pytest.fixture(scope="module")
def text_compiled(text_tower: dict) -> dict:
    return _quantize_and_compile(text_tower, "text")


# --------------------------------------------------------------------------------------------------
# Chipsets
# --------------------------------------------------------------------------------------------------


def test_get_chipset_accepts_names_parts_and_aliases() -> None:
    assert (
        get_chipset("Snapdragon 8 Gen 3")
        is get_chipset("8 gen 3")
        is get_chipset("SM8650")
        is get_chipset("8gen3")
    )
    assert get_chipset("snapdragon").name == DEFAULT_TARGET
    assert get_chipset("sm8750").htp_arch == "v79"
    assert get_chipset("X Elite").soc_model == 60
    assert get_chipset("8 Gen 3").htp_arch_number == 75
    for chipset in CHIPSETS:  # AI Hub's chipset attribute names it too
        assert get_chipset(chipset.aihub_chipset) is chipset


def test_get_chipset_error_lists_choices() -> None:
    with pytest.raises(UnknownChipsetError, match="Snapdragon 8 Gen 2 \\(SM8550\\)") as info:
        get_chipset("Snapdragon 9 Gen 9")
    assert "'Snapdragon 9 Gen 9'" in str(info.value)


def test_format_table_lists_every_chipset_and_marks_the_default() -> None:
    table = format_table()
    for chipset in CHIPSETS:
        assert chipset.name in table and chipset.part in table
    default_row = next(line for line in table.splitlines() if DEFAULT_TARGET in line and line.startswith("*"))
    assert "v75" in default_row


_CHIPSET_PROBE = """
import sys
import onnxruntime as ort
ort.set_default_logger_severity(0)  # before the QNN EP is registered: it fixes the backend's log level then
from export.chipsets import CHIPSETS
from export.qnn import htp_provider_options, register_qnn_ep
for chipset in CHIPSETS:
    print(f"@@chipset {chipset.part}", file=sys.stderr, flush=True)
    options = ort.SessionOptions()
    options.add_provider_for_devices(register_qnn_ep(), htp_provider_options(chipset))
    ort.InferenceSession(sys.argv[1], options)
"""


@needs_qnn
def test_chipset_table_matches_htp_backend(image_compiled: dict) -> None:
    """The HTP backend logs the SoC name and architecture it derives from each soc_model id."""
    result = subprocess.run(
        [sys.executable, "-c", _CHIPSET_PROBE, str(image_compiled["qdq"])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    logs = dict(chunk.split("\n", 1) for chunk in result.stderr.split("@@chipset ")[1:])
    for chipset in CHIPSETS:
        log = logs[chipset.part]
        assert f"SoC model name is {chipset.part}" in log, chipset
        assert f"DSP arch (min_arch) = {chipset.htp_arch_number}" in log, chipset


# --------------------------------------------------------------------------------------------------
# The plugin EP: edge_gcl.qnn_ep, re-exported by export.qnn
# --------------------------------------------------------------------------------------------------


def test_export_qnn_reexports_the_device_side_module() -> None:
    for name in (
        "EP_NAME",
        "QnnUnavailableError",
        "QnnLibraries",
        "find_qnn_libraries",
        "register_qnn_ep",
        "qnn_available",
    ):
        assert getattr(export.qnn, name) is getattr(qnn_ep, name), name
    assert issubclass(qnn_ep.QnnUnavailableError, RuntimeError)


@needs_qnn
def test_register_qnn_ep_registers_once_from_many_threads() -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: qnn_ep.register_qnn_ep(), range(8)))
    assert results[0] and all(d.ep_name == EP_NAME for d in results[0])
    assert {len(r) for r in results} == {len(results[0])}
    assert len([d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]) == len(results[0])


@needs_qnn
def test_htp_provider_options_for_a_chipset() -> None:
    options = htp_provider_options(V75)
    assert options == qnn_ep.htp_provider_options(soc_model=57, htp_arch=75)
    assert options["soc_model"] == "57" and options["htp_arch"] == "75"
    assert options["offload_graph_io_quantization"] == "0"
    assert Path(options["backend_path"]) == qnn_ep.find_qnn_libraries().htp_backend
    assert "soc_model" not in htp_provider_options(None)  # an EPContext model carries its own target
    assert htp_provider_options(V75, fp16=True)["enable_htp_fp16_precision"] == "1"
    with pytest.raises(ValueError, match="needs a chipset"):
        htp_provider_options(None, fp16=True)
    with pytest.raises(ValueError, match="needs soc_model"):
        qnn_ep.htp_provider_options(soc_model=None, htp_arch=75, fp16=True)


def test_qnn_session_cpu_fallback_cannot_be_configured_back_on(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="session.disable_cpu_ep_fallback"):
        qnn_ep.qnn_session(tmp_path / "m.onnx", extra_config={"session.disable_cpu_ep_fallback": "0"})


@needs_qnn
def test_qnn_session_is_strict_and_records_placement(image_compiled: dict) -> None:
    """The device-side session: an EPContext model carries its own target, a QDQ one gets soc_model/htp_arch."""
    ctx, qdq = image_compiled["report"].ctx_path, image_compiled["qdq"]
    assert placement_of(qnn_ep.qnn_session(ctx)).share == 1.0
    assert (
        placement_of(qnn_ep.qnn_session(qdq, soc_model=V75.soc_model, htp_arch=V75.htp_arch_number)).share
        == 1.0
    )
    feeds = image_compiled["held_out"][0]
    got = qnn_ep.qnn_session(ctx, threads=1).run(["embedding"], feeds)[0]
    np.testing.assert_array_equal(got, run_on_htp(ctx, feeds)["embedding"])


# --------------------------------------------------------------------------------------------------
# Calibration reader
# --------------------------------------------------------------------------------------------------


def test_feed_reader_yields_each_feed_then_none_and_rewinds() -> None:
    feeds = [{"x": np.full((1, 2), i, np.float32)} for i in range(3)]
    reader = FeedReader(feeds)
    assert len(reader) == 3
    assert [reader.get_next()["x"][0, 0] for _ in range(3)] == [0, 1, 2]
    assert reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["x"][0, 0] == 0
    with pytest.raises(ValueError):
        FeedReader([])


# --------------------------------------------------------------------------------------------------
# Image tower
# --------------------------------------------------------------------------------------------------


@needs_qnn
def test_image_tower_compiles_entirely_onto_the_npu(image_compiled: dict) -> None:
    report = image_compiled["report"]
    assert report.ctx_path.name == "image_tower_ctx.onnx" and report.ctx_path.is_file()
    assert report.total_nodes > 30 and report.npu_nodes == report.total_nodes
    assert report.npu_share == 1.0 and report.off_npu == ()
    assert {n.ep for n in report.placement.nodes} == {EP_NAME}
    ctx = onnx.load(str(report.ctx_path))
    assert {n.op_type for n in ctx.graph.node} == {"EPContext"}
    assert report.bin_path is None and report.size_bytes == report.ctx_path.stat().st_size
    assert not [p for p in report.ctx_path.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


@needs_qnn
def test_image_tower_w8a16_on_htp_matches_float(image_compiled: dict) -> None:
    held_out = image_compiled["held_out"]
    float_embeddings = np.concatenate([run_on_cpu(image_compiled["float"], f)["embedding"] for f in held_out])
    assert _mean_pairwise_cosine(float_embeddings) < 0.5  # inputs really differ
    scores = fidelity(
        image_compiled["float"], image_compiled["report"].ctx_path, held_out, run_other=run_on_htp
    )
    assert scores["cosine_min"] >= COS_MIN and scores["cosine_mean"] >= COS_MEAN, scores


def test_image_default_quant_settings_lose_fidelity(
    image_tower: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the image tower needs non-default settings: ORT's uint8 per-tensor default, no bias correction."""
    monkeypatch.setitem(
        quant.TOWER_SETTINGS,
        "conv",
        TowerQuantSettings(
            QuantType.QUInt8, weight_symmetric=False, per_channel=False, bias_correction=False, why="default"
        ),
    )
    qdq = quantize_tower(
        image_tower["float"],
        image_tower["folder"] / "image_default.onnx",
        kind="image",
        precision="w8a16",
        calibration=image_tower["calibration"],
    )
    scores = fidelity(image_tower["float"], qdq, image_tower["held_out"], run_other=run_on_cpu)
    assert scores["cosine_mean"] < 0.9, scores


def test_image_quantization_records_settings(image_compiled: dict) -> None:
    meta = {p.key: p.value for p in onnx.load(str(image_compiled["qdq"])).metadata_props}
    assert meta["edge_gcl.quant.precision"] == "w8a16"
    assert meta["edge_gcl.quant.weights"] == "QInt8 symmetric per-channel"
    assert meta["edge_gcl.quant.architecture"] == "conv"
    assert meta["edge_gcl.quant.bias_correction"].endswith("layers") and not meta[
        "edge_gcl.quant.bias_correction"
    ].startswith("0 ")


@needs_qnn
def test_vit_image_tower_gets_transformer_settings_and_runs_on_htp(tmp_path: Path) -> None:
    """TinyCLIP's image tower is a ViT: conv settings (int8 weights) would push its LayerNorms off the NPU."""
    torch.manual_seed(0)
    float_path = _export(
        TinyViT().eval(),
        (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),),
        tmp_path / "vit.onnx",
        ["pixel_values"],
    )
    rng = np.random.default_rng(2)
    calibration, held_out = _image_feeds(rng, 16), _image_feeds(rng, 6)
    qdq = quantize_tower(
        float_path, tmp_path / "vit_w8a16.onnx", kind="image", precision="w8a16", calibration=calibration
    )
    meta = {p.key: p.value for p in onnx.load(str(qdq)).metadata_props}
    assert meta["edge_gcl.quant.architecture"] == "transformer"
    assert meta["edge_gcl.quant.weights"] == "QUInt8 asymmetric per-channel"
    report = compile_context(qdq, tmp_path / "vit_ctx.onnx", chipset=V75)
    assert report.npu_share == 1.0, report.off_npu
    scores = fidelity(float_path, report.ctx_path, held_out, run_other=run_on_htp)
    assert scores["cosine_min"] >= COS_MIN and scores["cosine_mean"] >= COS_MEAN, scores


# --------------------------------------------------------------------------------------------------
# Text tower
# --------------------------------------------------------------------------------------------------


@needs_qnn
def test_text_tower_compiles_entirely_onto_the_npu(text_compiled: dict) -> None:
    report = text_compiled["report"]
    assert report.npu_share == 1.0 and report.off_npu == ()
    assert report.total_nodes > 100
    assert {n.op_type for n in onnx.load(str(report.ctx_path)).graph.node} == {"EPContext"}


@needs_qnn
def test_text_tower_w8a16_on_htp_matches_float(text_compiled: dict) -> None:
    held_out = text_compiled["held_out"]
    assert len({int(f["attention_mask"].sum()) for f in held_out}) > 3  # several padding lengths
    scores = fidelity(
        text_compiled["float"], text_compiled["report"].ctx_path, held_out, run_other=run_on_htp
    )
    assert scores["cosine_min"] >= COS_MIN and scores["cosine_mean"] >= COS_MEAN, scores


def test_text_quantization_keeps_export_metadata(text_compiled: dict) -> None:
    meta = {p.key: p.value for p in onnx.load(str(text_compiled["qdq"])).metadata_props}
    assert meta["edge_gcl.tower"] == "text" and meta["edge_gcl.context_length"] == str(SEQ_LEN)
    assert meta["edge_gcl.quant.weights"] == "QUInt8 asymmetric per-channel"


def test_l2_normalised_output_is_quantized_over_unit_range(text_compiled: dict) -> None:
    """The HTP's L2Norm wraps around outside its calibrated range; [-1, 1] cannot be exceeded."""
    model = onnx.load(str(text_compiled["qdq"]))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "embedding")
    scale, zero_point = float(inits[dq.input[1]]), int(inits[dq.input[2]])
    lo, hi = (0 - zero_point) * scale, (65535 - zero_point) * scale
    assert lo == pytest.approx(-1.0, abs=1e-4) and hi == pytest.approx(1.0, abs=1e-4)


@needs_qnn
def test_int8_weights_push_layernorm_off_the_npu(text_tower: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the text tower keeps uint8 weights: int8 symmetric LayerNorm scales are rejected by the HTP."""
    monkeypatch.setitem(
        quant.TOWER_SETTINGS,
        "transformer",
        TowerQuantSettings(
            QuantType.QInt8, weight_symmetric=True, per_channel=True, bias_correction=False, why="int8"
        ),
    )
    qdq = quantize_tower(
        text_tower["float"],
        text_tower["folder"] / "text_int8.onnx",
        kind="text",
        precision="w8a16",
        calibration=text_tower["calibration"][:4],
    )
    placement = measure_placement(qdq, chipset=V75)
    assert placement.share < 1.0
    assert any(n.name.startswith("ln") for n in placement.off_npu), placement.off_npu


@needs_qnn
def test_fp16_text_tower_with_external_context_binary(text_tower: dict) -> None:
    folder = text_tower["folder"]
    fused = quantize_tower(
        text_tower["float"],
        folder / "text_tower_fp16.onnx",
        kind="text",
        precision="fp16",
        calibration=text_tower["calibration"][:1],
    )
    assert {n.op_type for n in onnx.load(str(fused)).graph.node}.isdisjoint(
        {"Erf", "QuantizeLinear"}
    )  # GELU fused
    report = compile_context(
        fused, folder / "text_tower_fp16_ctx.onnx", chipset="8 Elite", fp16=True, embed=False
    )
    assert report.npu_share == 1.0 and report.chipset.htp_arch == "v79"
    assert report.bin_path is not None and report.bin_path.parent == folder and report.bin_path.is_file()
    scores = fidelity(text_tower["float"], report.ctx_path, text_tower["held_out"][:4], run_other=run_on_htp)
    assert scores["cosine_min"] >= 0.999, scores


# --------------------------------------------------------------------------------------------------
# Failure paths
# --------------------------------------------------------------------------------------------------


class _StandaloneErf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(self.fc(x)) * 2.0  # not a GELU pattern: nothing fuses it


@needs_qnn
def test_op_the_htp_rejects_raises_naming_the_node(tmp_path: Path) -> None:
    float_path = _export(_StandaloneErf().eval(), (torch.zeros(1, 8),), tmp_path / "erf.onnx", ["x"])
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 8)).astype(np.float32)} for i in range(4)]
    qdq = quantize_tower(
        float_path, tmp_path / "erf_w8a16.onnx", kind="text", precision="w8a16", calibration=feeds
    )
    out = tmp_path / "erf_ctx.onnx"
    with pytest.raises(NPUPlacementError, match=r"/Erf \(Erf\)") as info:
        compile_context(qdq, out, chipset=V75)
    assert "Erf" in {n.op_type for n in info.value.placement.off_npu}
    assert 0.0 < info.value.placement.share < 1.0
    assert npu_node_share(qdq, chipset=V75) == info.value.placement.share
    assert not out.exists()  # ORT had written it; the temporary folder is gone with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["erf.onnx", "erf_w8a16.onnx"]


def test_context_file_name_must_contain_ctx(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ctx"):
        compile_context(tmp_path / "model.onnx", tmp_path / "model_htp.onnx", chipset=V75)


def test_unknown_precision_and_kind_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="w8a16"):
        quantize_tower(
            tmp_path / "m.onnx", tmp_path / "q.onnx", kind="image", precision="int4", calibration=[]
        )
    with pytest.raises(ValueError, match="image"):
        quantize_tower(
            tmp_path / "m.onnx", tmp_path / "q.onnx", kind="audio", precision="w8a16", calibration=[]
        )

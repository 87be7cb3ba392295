"""OnnxEmbedder against numpy references of tiny ONNX towers that honour the manifest contract.

`make_artifacts(folder)` writes a complete artifacts folder (manifest.json, tokenizer.json,
float towers with a dynamic batch and "qdq" towers with a static batch of 1); other tests
(the index CLI) reuse it as a model that needs no torch.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tokenizers import Tokenizer as HFTokenizer

from edge_gcl import qnn_ep
from edge_gcl.config import ImagePreprocess, ModelConfig, TextPreprocess
from edge_gcl.embedding import Embedder
from edge_gcl.manifest import Manifest, TowerArtifacts, tower_specs
from edge_gcl.qnn_ep import QnnUnavailableError, qnn_available, qnn_session
from edge_gcl.runtime import OnnxEmbedder, RuntimeConfigError, describe, load_embedder
from edge_gcl.tokenizer import Tokenizer, minilm_tokenizer_path
from edge_gcl.transform import ImageDecodeError, preprocess

SIZE, DIM, CONTEXT, POOL = 32, 16, 16, 8  # image side, embed dim, context length, avg-pool kernel
OPSET = [helper.make_opsetid("", 17)]


def _weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vocab = HFTokenizer.from_file(str(minilm_tokenizer_path())).get_vocab_size()
    w_image = rng.standard_normal((3 * (SIZE // POOL) ** 2, DIM)).astype(np.float32)  # (48, D)
    table = rng.standard_normal((vocab, DIM)).astype(np.float32)  # (V, D)
    return w_image, table


def _image_graph(w: np.ndarray, batch: int | str) -> onnx.ModelProto:
    """pixels (B, 3, S, S) -> AveragePool 8x8 -> (B, 48) -> MatMul W -> embedding (B, D)."""
    nodes = [
        helper.make_node(
            "AveragePool", ["pixels"], ["pooled"], kernel_shape=[POOL, POOL], strides=[POOL, POOL]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "image_tower",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, DIM])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=OPSET, ir_version=9)


def _text_graph(table: np.ndarray, batch: int | str) -> onnx.ModelProto:
    """input_ids, attention_mask (B, L) int32 -> sum of masked token rows of a table -> (B, D)."""
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "ids64"], ["tokens"], axis=0),  # (B, L, D)
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),  # (B, L, 1)
        helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["embedding"], keepdims=0),  # (B, D)
    ]
    graph = helper.make_graph(
        nodes,
        "text_tower",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT32, [batch, CONTEXT]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT32, [batch, CONTEXT]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, DIM])],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([2], np.int64), "axis2"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ],
    )
    return helper.make_model(graph, opset_imports=OPSET, ir_version=9)


def model_config() -> ModelConfig:
    return ModelConfig(
        name="tiny-onnx",
        family="lite",
        embed_dim=DIM,
        image=ImagePreprocess(size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear"),
        text=TextPreprocess(tokenizer="minilm-wordpiece", context_length=CONTEXT),
    )


def make_artifacts(folder: Path, *, seed: int = 0, model_id: str | None = None) -> Path:
    """A tiny artifacts folder: float towers (dynamic batch) and "qdq" towers (static batch 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    w_image, table = _weights(seed)
    onnx.save(_image_graph(w_image, "batch"), folder / "image_tower.onnx")
    onnx.save(_image_graph(w_image, 1), folder / "image_tower_b1.onnx")
    onnx.save(_text_graph(table, "batch"), folder / "text_tower.onnx")
    onnx.save(_text_graph(table, 1), folder / "text_tower_b1.onnx")
    shutil.copy(minilm_tokenizer_path(), folder / "tokenizer.json")
    cfg = model_config()
    specs = tower_specs(cfg)
    Manifest(
        model_id=model_id or f"tiny-onnx@seed{seed}",
        model_name=cfg.name,
        embed_dim=DIM,
        image=cfg.image,
        text=cfg.text,
        towers={
            "image": TowerArtifacts(
                specs["image"], {"float": "image_tower.onnx", "qdq": "image_tower_b1.onnx"}
            ),
            "text": TowerArtifacts(specs["text"], {"float": "text_tower.onnx", "qdq": "text_tower_b1.onnx"}),
        },
    ).save(folder)
    return folder


# --- numpy references of the same graphs ---------------------------------------------------


def reference_images(paths: list[Path], seed: int = 0) -> np.ndarray:
    w_image, _ = _weights(seed)
    cfg = model_config().image
    x = np.stack([preprocess(p, cfg) for p in paths])  # (N, 3, S, S)
    n, g = len(x), SIZE // POOL
    pooled = x.reshape(n, 3, g, POOL, g, POOL).mean(axis=(3, 5)).reshape(n, -1)  # (N, 48)
    e = pooled @ w_image
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def reference_texts(texts: list[str], seed: int = 0) -> np.ndarray:
    """The tokenizers library directly: truncate to the context, sum the table rows of the tokens."""
    _, table = _weights(seed)
    tok = HFTokenizer.from_file(str(minilm_tokenizer_path()))
    tok.no_padding()
    tok.enable_truncation(max_length=CONTEXT)
    e = np.stack([table[enc.ids].sum(0) for enc in tok.encode_batch(texts)])
    return e / np.linalg.norm(e, axis=1, keepdims=True)


# --- tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    paths = []
    for i, (w, h) in enumerate([(40, 30), (32, 32), (64, 48), (30, 50), (33, 33)]):
        p = folder / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


TEXTS = [
    "a dog on the beach",
    "receipt for the hotel in Lisbon",
    "ünïcödé and emoji 🐶 work too",
    "a very long note " * 20,  # longer than the context: truncated like the reference
]


def test_float_towers_match_numpy_reference(artifacts: Path, photos: list[Path]) -> None:
    emb = OnnxEmbedder(artifacts, threads=1)
    assert isinstance(emb, Embedder)
    assert emb.model_id == "tiny-onnx@seed0" and emb.embed_dim == DIM
    images = emb.embed_images(photos, batch_size=2)
    assert images.dtype == np.float32 and images.shape == (len(photos), DIM)
    np.testing.assert_allclose(images, reference_images(photos), atol=1e-5)
    texts = emb.embed_texts(TEXTS, batch_size=3)
    assert texts.dtype == np.float32 and texts.shape == (len(TEXTS), DIM)
    np.testing.assert_allclose(texts, reference_texts(TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-6)


def test_static_batch_graph_is_looped(artifacts: Path, photos: list[Path]) -> None:
    emb = OnnxEmbedder(artifacts, form="qdq", threads=1)
    assert emb._image.fixed_batch == 1 and emb._text.fixed_batch == 1
    np.testing.assert_allclose(emb.embed_images(photos, batch_size=4), reference_images(photos), atol=1e-5)
    np.testing.assert_allclose(emb.embed_texts(TEXTS, batch_size=4), reference_texts(TEXTS), atol=1e-5)


@pytest.mark.parametrize("form", ["float", "qdq"])
def test_encode_on_ready_tensors_equals_embed(artifacts: Path, photos: list[Path], form: str) -> None:
    """encode_* run the graph alone (a batch-1 graph once per row); embed_* = preprocess + encode_* + L2."""
    emb = OnnxEmbedder(artifacts, form=form, threads=1)  # type: ignore[arg-type]
    pixels = np.stack([preprocess(p, emb.manifest.image) for p in photos])  # (5, 3, S, S) float32
    images = emb.encode_images(pixels)
    assert images.dtype == np.float32 and images.shape == (len(photos), DIM)
    np.testing.assert_allclose(
        images / np.linalg.norm(images, axis=1, keepdims=True), emb.embed_images(photos), atol=1e-6
    )
    ids, mask = emb.tokenizer(TEXTS)  # (4, L) each
    texts = emb.encode_texts(ids, mask)
    assert texts.dtype == np.float32 and texts.shape == (len(TEXTS), DIM)
    np.testing.assert_allclose(
        texts / np.linalg.norm(texts, axis=1, keepdims=True), emb.embed_texts(TEXTS), atol=1e-6
    )
    assert emb.encode_images(pixels[:0]).shape == (0, DIM) and emb.encode_texts(ids[:0], mask[:0]).shape == (
        0,
        DIM,
    )


def test_encode_names_tensors_of_the_wrong_shape(artifacts: Path, photos: list[Path]) -> None:
    emb = OnnxEmbedder(artifacts, threads=1)
    pixels = np.stack([preprocess(p, emb.manifest.image) for p in photos[:2]])
    with pytest.raises(ValueError, match=r"pixels of shape \(2, 32, 32, 3\): expected \(B, 3, 32, 32\)"):
        emb.encode_images(pixels.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"pixels of shape \(3, 32, 32\)"):
        emb.encode_images(pixels[0])
    ids, mask = emb.tokenizer(TEXTS)
    with pytest.raises(ValueError, match=r"token ids \(4, 8\) and mask \(4, 8\): expected \(B, 16\) each"):
        emb.encode_texts(ids[:, :8], mask[:, :8])
    with pytest.raises(ValueError, match=r"token ids \(4, 16\) and mask \(3, 16\)"):
        emb.encode_texts(ids, mask[:3])


def test_pil_images_and_empty_batches(artifacts: Path, photos: list[Path]) -> None:
    emb = OnnxEmbedder(artifacts, threads=1)
    pil = [Image.open(p) for p in photos[:2]]
    np.testing.assert_allclose(emb.embed_images(pil), reference_images(photos[:2]), atol=1e-5)
    assert emb.embed_images([]).shape == (0, DIM)
    assert emb.embed_texts([]).shape == (0, DIM)


def test_bad_inputs_raise_errors_naming_them(artifacts: Path, photos: list[Path], tmp_path: Path) -> None:
    emb = OnnxEmbedder(artifacts, threads=1)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageDecodeError, match="corrupt.jpg"):
        emb.embed_images([photos[0], corrupt])
    with pytest.raises(ImageDecodeError, match="missing.png: no such file"):
        emb.embed_images([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match=r"text\[1\]: empty text"):
        emb.embed_texts(["fine", "   "])
    with pytest.raises(ValueError, match=r"text\[0\]: not valid UTF-8"):
        emb.embed_texts([b"\xff\xfe\xfa"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a single string"):
        emb.embed_texts("a string")  # type: ignore[arg-type]


def test_bad_artifacts_folders_are_named(artifacts: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no manifest"):
        OnnxEmbedder(tmp_path)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for text, why in (("{", "Expecting property name"), ('{"format_version": 1}', "missing 'towers'")):
        (corrupt / "manifest.json").write_text(text)
        with pytest.raises(ValueError, match=rf"corrupt/manifest.json: not a valid edge-gcl manifest \({why}"):
            OnnxEmbedder(corrupt)
    with pytest.raises(RuntimeConfigError, match=r"form 'ctx' \(EPContext\) runs only on the NPU: use --provider qnn"):
        OnnxEmbedder(artifacts, form="ctx")
    with pytest.raises(RuntimeConfigError, match=r"no 'ctx' image tower \(the manifest lists float, qdq\); rebuild with"):
        OnnxEmbedder(artifacts, provider="qnn")  # ctx: the NPU's default form
    with pytest.raises(RuntimeConfigError, match=r"the float graphs are not an NPU target: use --form ctx"):
        OnnxEmbedder(artifacts, provider="qnn", form="float")
    with pytest.raises(RuntimeConfigError, match=r"form 'int4': expected one of float, qdq, ctx"):
        OnnxEmbedder(artifacts, form="int4")  # type: ignore[arg-type]
    broken = tmp_path / "broken"
    shutil.copytree(artifacts, broken)
    w_image, _ = _weights()
    model = _image_graph(w_image, "batch")
    model.graph.input[0].name = "images"  # breaks the contract: the manifest says "pixels"
    model.graph.node[0].input[0] = "images"
    onnx.save(model, broken / "image_tower.onnx")
    with pytest.raises(RuntimeConfigError, match=r"image_tower.onnx: SHA-256 \w+\.\. differs from the manifest's"):
        OnnxEmbedder(broken)
    Manifest.load(broken).save(broken)  # the manifest now vouches for the file: the contract check still holds
    with pytest.raises(ValueError, match=r"image_tower.onnx: graph inputs \['images'\] lack \['pixels'\]"):
        OnnxEmbedder(broken)
    (broken / "image_tower.onnx").unlink()
    with pytest.raises(
        RuntimeConfigError, match="image_tower.onnx: the image tower's 'float' file named by the manifest is missing"
    ):
        OnnxEmbedder(broken)


def test_load_embedder_routes_artifacts_folders(artifacts: Path) -> None:
    emb = load_embedder(artifacts)
    assert isinstance(emb, OnnxEmbedder) and emb.provider == "cpu"
    assert load_embedder(emb) is emb


def test_load_embedder_sends_other_specs_to_the_torch_models(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import types

    fake = types.ModuleType("edge_gcl.models")
    fake.load_model = lambda spec, seed=None: ("model", spec)  # type: ignore[attr-defined]
    fake.TorchEmbedder = lambda model, device, name: ("embedder", model, name)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "edge_gcl.models", fake)
    assert load_embedder("default") == ("embedder", ("model", "default"), "default")
    # a checkpoint folder, named as export.compile records it (the folder's own name)
    assert load_embedder(tmp_path) == ("embedder", ("model", str(tmp_path)), tmp_path.name)
    with pytest.raises(RuntimeConfigError, match="--provider qnn / --form None need an artifacts folder"):
        load_embedder("default", provider="qnn")
    with pytest.raises(RuntimeConfigError, match="--provider cpu / --form ctx need an artifacts folder"):
        load_embedder("default", form="ctx")


def test_without_torch_a_model_name_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(RuntimeConfigError, match=r"needs torch \(pip install 'edge-gcl\[train\]'\)"):
        load_embedder("default")


# --- provider="qnn": edge_gcl.qnn_ep on the HTP (emulated on x86) -----------------------------

needs_qnn = pytest.mark.skipif(not qnn_available(), reason="onnxruntime-qnn (QNN HTP backend) not installed")
V75 = {"soc_model": 57, "htp_arch": "v75"}  # how a manifest names a Snapdragon 8 Gen 3 (export.chipsets)


def _calibration(n: int = 8) -> dict[str, list[dict[str, np.ndarray]]]:
    """Batch-1 feeds per tower: pixels in the preprocessed range [-1, 1]; ids from the real tokenizer,
    TEXTS included (a repeated word sums one table row many times: the largest activations)."""
    rng = np.random.default_rng(2)
    pixels = [{"pixels": rng.uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)} for _ in range(n)]
    tok = Tokenizer.from_config(model_config().text)
    words = "notes photos receipts from the trip to lisbon with a dog on the beach at night".split()
    texts = [" ".join(words[: 2 + 2 * i]) for i in range(n)] + TEXTS  # short to over the context
    ids, mask = tok(texts)  # (N, L) each
    text = [
        {"input_ids": ids[i : i + 1].astype(np.int32), "attention_mask": mask[i : i + 1].astype(np.int32)}
        for i in range(len(texts))
    ]
    return {"image": pixels, "text": text}


@pytest.fixture(scope="module")
def qdq_artifacts(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny towers quantized for the QNN EP (w8a16 QDQ, static batch 1), with a v75 chipset."""
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    from export.quantize import FeedReader

    folder = tmp_path_factory.mktemp("qdq") / "artifacts"
    shutil.copytree(artifacts, folder)
    manifest = Manifest.load(folder)
    for tower, feeds in _calibration().items():
        src, dst = folder / manifest.towers[tower].files["qdq"], folder / f"{tower}_tower_w8a16.onnx"
        config = get_qnn_qdq_config(
            str(src), FeedReader(feeds), activation_type=QuantType.QUInt16, weight_type=QuantType.QUInt8
        )
        quantize(str(src), str(dst), config)
        manifest.towers[tower].files["qdq"] = dst.name
    manifest.precision, manifest.chipset = "w8a16", dict(V75)
    manifest.save(folder)
    return folder


def test_qnn_provider_targets_the_manifest_chipset(
    artifacts: Path, qdq_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OnnxEmbedder hands qnn_ep.qnn_session the manifest's soc_model and htp_arch ("v75" -> 75)."""
    import onnxruntime as ort

    calls = []

    def fake_qnn_session(path: Path, **options: object) -> ort.InferenceSession:
        calls.append((Path(path).name, options))
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    monkeypatch.setattr(qnn_ep, "qnn_session", fake_qnn_session)
    OnnxEmbedder(qdq_artifacts, provider="qnn", form="qdq", threads=1)
    assert calls == [
        ("image_tower_w8a16.onnx", {"threads": 1, "soc_model": 57, "htp_arch": 75}),
        ("text_tower_w8a16.onnx", {"threads": 1, "soc_model": 57, "htp_arch": 75}),
    ]
    calls.clear()
    OnnxEmbedder(artifacts, provider="qnn", form="qdq")  # no chipset in the manifest: the backend's default target
    assert [options for _, options in calls] == [{"threads": 0, "soc_model": None, "htp_arch": None}] * 2


def test_qnn_without_the_plugin_is_a_clear_error(artifacts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime_qnn", None)  # import raises ImportError
    with pytest.raises(
        QnnUnavailableError, match="QNN execution provider not available: onnxruntime-qnn is not installed"
    ):
        qnn_session(artifacts / "image_tower_b1.onnx")
    with pytest.raises(RuntimeError, match="QNN execution provider not available"):
        OnnxEmbedder(artifacts, provider="qnn", form="qdq")


def test_qnn_on_an_onnxruntime_without_plugin_eps_is_a_clear_error(
    artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    monkeypatch.delattr(ort, "register_execution_provider_library", raising=False)
    with pytest.raises(QnnUnavailableError, match=r"onnxruntime \S+ cannot load plugin execution providers"):
        OnnxEmbedder(artifacts, provider="qnn", form="qdq")


@needs_qnn
def test_qnn_provider_runs_qdq_towers_entirely_on_the_htp(qdq_artifacts: Path, photos: list[Path]) -> None:
    """HTP emulation of the w8a16 towers: every node on the QNN EP, and the same embeddings as the
    QDQ graphs on ONNX Runtime's CPU EP (cosine >= 0.999; the float reference >= 0.99)."""
    htp = OnnxEmbedder(qdq_artifacts, provider="qnn", form="qdq", threads=1)
    cpu = OnnxEmbedder(qdq_artifacts, provider="cpu", form="qdq", threads=1)
    for tower in (htp._image, htp._text):
        placed = [
            (node.name, sub.ep_name)
            for sub in tower.session.get_provider_graph_assignment_info()
            for node in sub.get_nodes()
        ]
        assert len(placed) > 5 and {ep for _, ep in placed} == {qnn_ep.EP_NAME}, placed
    for got, ref, float_ref in (
        (htp.embed_images(photos), cpu.embed_images(photos), reference_images(photos)),
        (htp.embed_texts(TEXTS), cpu.embed_texts(TEXTS), reference_texts(TEXTS)),
    ):
        assert got.shape == ref.shape and got.dtype == np.float32
        assert (got * ref).sum(1).min() >= 0.999, (got * ref).sum(1)
        assert (got * float_ref).sum(1).min() >= 0.99, (got * float_ref).sum(1)


@needs_qnn
def test_the_qnn_libraries_banner_reaches_neither_stdout_nor_stderr(qdq_artifacts: Path) -> None:
    """The QNN libraries print " # LIBNATIVE: No alternate configuration ..." from native code when the
    first HTP session opens: off stdout (it would corrupt --json) and dropped (issue 34: on every search)."""
    code = ("import json, sys; from edge_gcl.runtime import OnnxEmbedder; "
            f"e = OnnxEmbedder({str(qdq_artifacts)!r}, provider='qnn', form='qdq', threads=1); "
            "print(json.dumps(e.embed_texts(['a dog']).shape))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == f"[1, {DIM}]\n" and "LIBNATIVE" not in done.stderr, done.stderr[-2000:]


@needs_qnn
def test_qnn_provider_fails_loudly_on_a_graph_the_htp_cannot_run(qdq_artifacts: Path, tmp_path: Path) -> None:
    """Never a silent CPU fallback: an op the HTP rejects (a standalone Erf) fails naming the file."""
    broken = tmp_path / "broken"
    shutil.copytree(qdq_artifacts, broken)
    w_image, _ = _weights()
    model = _image_graph(w_image, 1)
    model.graph.node[-1].output[0] = "projected"
    model.graph.node.append(helper.make_node("Erf", ["projected"], ["embedding"]))
    onnx.save(model, broken / "image_tower_w8a16.onnx")
    Manifest.load(broken).save(broken)  # vouches for the changed graph (else its SHA-256 stops it first)
    with pytest.raises(
        RuntimeError, match="image_tower_w8a16.onnx: the QNN execution provider cannot run this graph"
    ) as info:
        OnnxEmbedder(broken, provider="qnn", form="qdq")
    assert "fallback to CPU EP has been explicitly disabled" in str(info.value)


def test_one_model_name_everywhere(tmp_path: Path) -> None:
    """The name of an artifacts folder's model is the one it was built from, in the CLI's line, the index,
    its stats and the app's /api/stats (issue 34: `lite`, `lite-12038ff96c01` and `default` before)."""
    from edge_gcl.app.server import PhotoSearchApp
    from edge_gcl.index import Index

    folder = make_artifacts(tmp_path / "artifacts", model_id="lite-12038ff96c01")
    manifest = Manifest.load(folder)
    manifest.extra["source_model"] = "default"  # what export.compile records for --model default
    manifest.save(folder)
    embedder = OnnxEmbedder(folder)
    assert describe(embedder).startswith(f"model default (lite-12038ff96c01), {DIM}-d, from {folder}: float32")
    with Index.open(tmp_path / "index", model=embedder) as index:
        assert index.model_name == "default" and index.stats().model_name == "default"
        assert index.stats().model_id == "lite-12038ff96c01"
        assert PhotoSearchApp(index).stats()["model_name"] == "default"

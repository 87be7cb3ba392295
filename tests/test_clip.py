"""Native CLIP towers, checkpoint loaders and the CLIP BPE tokenizer, against references.

References: a tiny random `transformers.CLIPModel` (saved to disk in the layouts users have),
`transformers.CLIPTokenizer` and a from-scratch OpenAI-style BPE encoder. All offline.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import unicodedata

import numpy as np
import pytest
import regex
import torch
import torch.nn.functional as F

from edge_gcl.config import load_preset
from edge_gcl.models.clip import CheckpointError, build_tinyclip, load_hf_clip, load_open_clip_pt
from edge_gcl.tokenizer import ASSETS, Tokenizer

transformers = pytest.importorskip("transformers")

ATOL = 1e-5  # on L2-normalised float32 embeddings
SEQ = 16  # the tiny model's context length
BOS, EOS = 998, 999  # the tiny model's special ids (top of its 1000-token vocab, as in CLIP)


# ----------------------------------------------------------------------------------------------
# A tiny random Hugging Face CLIPModel and its expected outputs


def _unwrap(out: object) -> torch.Tensor:
    # transformers 5 returns an output object, earlier releases a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.fixture(scope="module")
def hf() -> dict:
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        # Head width 64 so that open_clip's shape inference (heads = width // 64) applies; the towers
        # differ in width, MLP ratio and activation so that mix-ups show.
        text_config=dict(
            vocab_size=1000,
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=SEQ,
            hidden_act="gelu",
            bos_token_id=BOS,
            eos_token_id=EOS,
            pad_token_id=EOS,
        ),
        vision_config=dict(
            hidden_size=192,
            intermediate_size=384,
            num_hidden_layers=2,
            num_attention_heads=3,
            image_size=32,
            patch_size=8,
            hidden_act="quick_gelu",
        ),
        projection_dim=16,
    )
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():  # move every tensor off its init value (LayerNorm ones/zeros, zero biases)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(2.0)

    pixels = torch.randn(3, 3, 32, 32)
    lengths = [2, 5, 11, SEQ]  # real tokens incl. BOS and EOS; the rest is padding
    ids = torch.full((len(lengths), SEQ), EOS)  # padded with EOS, as Hugging Face's CLIPTokenizer does
    mask = torch.zeros(len(lengths), SEQ, dtype=torch.int64)
    for i, n in enumerate(lengths):
        ids[i, 0] = BOS
        ids[i, 1 : n - 1] = torch.randint(0, BOS, (n - 2,))
        mask[i, :n] = 1
    with torch.no_grad():
        image = F.normalize(_unwrap(model.get_image_features(pixel_values=pixels)), dim=-1)
        text = F.normalize(_unwrap(model.get_text_features(input_ids=ids, attention_mask=mask)), dim=-1)
    return dict(model=model, pixels=pixels, ids=ids, mask=mask, image=image, text=text)


@pytest.fixture(scope="module")
def hf_folders(hf: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same model as a safetensors folder and as a pytorch_model.bin folder with a tokenizer.json."""
    st = tmp_path_factory.mktemp("hf_safetensors")
    hf["model"].save_pretrained(st)
    assert (st / "model.safetensors").exists()
    bin_ = tmp_path_factory.mktemp("hf_bin")
    (bin_ / "config.json").write_text((st / "config.json").read_text())
    # transformers 5 always writes safetensors; older releases wrote this file.
    torch.save(hf["model"].state_dict(), bin_ / "pytorch_model.bin")
    (bin_ / "tokenizer.json").write_bytes(
        gzip.decompress((ASSETS / "clip-bpe.tokenizer.json.gz").read_bytes())
    )
    return {"safetensors": st, "bin": bin_}


def _check_embeddings(model, hf: dict, *, image: bool = True) -> None:
    with torch.no_grad():
        if image:
            torch.testing.assert_close(model.visual(hf["pixels"]), hf["image"], atol=ATOL, rtol=0)
        torch.testing.assert_close(model.text(hf["ids"], hf["mask"]), hf["text"], atol=ATOL, rtol=0)
    assert model.logit_scale.item() == pytest.approx(2.0)


# ----------------------------------------------------------------------------------------------
# Hugging Face CLIPModel folders


@pytest.mark.parametrize("layout", ["safetensors", "bin"])
def test_hf_folder_matches_transformers(hf: dict, hf_folders: dict, layout: str) -> None:
    folder = hf_folders[layout]
    model = load_hf_clip(folder)
    _check_embeddings(model, hf)
    cfg = model.config
    assert (cfg.name, cfg.family, cfg.embed_dim) == (folder.name, "tinyclip", 16)
    assert cfg.vision.act == "quick_gelu" and cfg.text_tower.act == "gelu"
    assert (cfg.vision.heads, cfg.vision.mlp_ratio, cfg.text_tower.mlp_ratio) == (3, 2.0, 4.0)
    assert cfg.text.context_length == cfg.text_tower.context_length == SEQ
    assert model.source == folder
    if layout == "bin":  # the folder's own tokenizer wins
        assert cfg.text.tokenizer_file == "tokenizer.json"
        ids, mask = model.tokenizer()(["a photo of a cat"])
        assert ids.shape == (1, SEQ) and ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    else:
        assert cfg.text.tokenizer_file is None


def test_hf_folder_errors_name_the_path(hf_folders: dict, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        load_hf_clip(tmp_path / "nope")

    only_config = tmp_path / "only_config"
    only_config.mkdir()
    (only_config / "config.json").write_text((hf_folders["bin"] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=re.escape(str(only_config)) + ".*no weights"):
        load_hf_clip(only_config)

    vision_only = tmp_path / "vision_only"
    vision_only.mkdir()
    (vision_only / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    with pytest.raises(
        CheckpointError, match=re.escape(str(vision_only / "config.json")) + ".*expected 'clip'"
    ):
        load_hf_clip(vision_only)

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text((hf_folders["safetensors"] / "config.json").read_text())
    data = (hf_folders["safetensors"] / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(truncated / "model.safetensors"))):
        load_hf_clip(truncated)

    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "config.json").write_text((hf_folders["bin"] / "config.json").read_text())
    state = torch.load(hf_folders["bin"] / "pytorch_model.bin", weights_only=True)
    state["text_model.final_layer_norm.gamma"] = state.pop("text_model.final_layer_norm.weight")
    torch.save(state, renamed / "pytorch_model.bin")
    with pytest.raises(
        CheckpointError,
        match=r"missing keys: text_model\.final_layer_norm\.weight.*unexpected keys: text_model\.final_layer_norm\.gamma",
    ) as e:
        load_hf_clip(renamed)
    assert str(renamed / "pytorch_model.bin") in str(e.value)


# ----------------------------------------------------------------------------------------------
# open_clip / original TinyCLIP .pt files


def _hf_to_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face CLIPModel weights renamed to open_clip's layout (written for this test, from
    open_clip's `VisionTransformer` / `TextTransformer` attribute names)."""
    rename = {
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm": "visual.ln_pre",
        "vision_model.post_layernorm": "visual.ln_post",
        "vision_model.encoder.layers": "visual.transformer.resblocks",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm": "ln_final",
        "text_model.encoder.layers": "transformer.resblocks",
        ".layer_norm1.": ".ln_1.",
        ".layer_norm2.": ".ln_2.",
        ".mlp.fc1.": ".mlp.c_fc.",
        ".mlp.fc2.": ".mlp.c_proj.",
        ".self_attn.out_proj.": ".attn.out_proj.",
    }
    out = {}
    for key, value in sd.items():
        if "_proj." in key and ".self_attn." in key and "out_proj" not in key:
            continue  # q/k/v, stacked below
        if key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()  # open_clip: x @ proj, (width, D)
            continue
        if key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
            continue
        for old, new in rename.items():
            key = key.replace(old, new)
        out[key] = value
    for key in sd:
        if key.endswith(".self_attn.q_proj.weight") or key.endswith(".self_attn.q_proj.bias"):
            base, kind = key.rsplit(".self_attn.q_proj.", 1)
            stacked = torch.cat([sd[f"{base}.self_attn.{n}_proj.{kind}"] for n in "qkv"])  # (3C, ...)
            for old, new in rename.items():
                base = base.replace(old, new)
            out[f"{base}.attn.in_proj_{kind}"] = stacked
    return out


def _tinyclip_wrapper(key: str) -> str:
    """The submodule TinyCLIP's CLIPBase keeps an open_clip key under."""
    if key.startswith("visual."):
        return "_image_encoder"
    return "_logit_scale" if key == "logit_scale" else "_text_encoder"


@pytest.fixture(scope="module")
def open_clip_files(hf: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    sd = _hf_to_open_clip({k: v.clone() for k, v in hf["model"].state_dict().items()})
    # vision: conv1, class, positions, ln_pre x2, 2 blocks x 12, ln_post x2, proj; text: tokens, positions,
    # 2 blocks x 12, ln_final x2, projection; logit_scale
    assert len(sd) == (3 + 2 + 24 + 2 + 1) + (2 + 24 + 2 + 1) + 1
    root = tmp_path_factory.mktemp("open_clip")
    files = {
        "plain": sd,
        "state_dict+module": {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}},
        # TinyCLIP's CLIPBase: _image_encoder.visual.*, _text_encoder.<text keys>, _logit_scale.logit_scale
        "tinyclip": {f"{_tinyclip_wrapper(k)}.{k}": v for k, v in sd.items()},
        # ... saved from DDP: _image_encoder.module.visual.*
        "tinyclip-ddp": {f"{_tinyclip_wrapper(k)}.module.{k}": v for k, v in sd.items()},
        "with-attn-mask": {**sd, "attn_mask": torch.full((SEQ, SEQ), float("-inf")).triu(1)},
    }
    paths = {}
    for name, obj in files.items():
        torch.save(obj, root / f"{name}.pt")
        paths[name] = root / f"{name}.pt"
    return paths


@pytest.mark.parametrize(
    "layout", ["plain", "state_dict+module", "tinyclip", "tinyclip-ddp", "with-attn-mask"]
)
def test_open_clip_pt_matches_transformers(
    hf: dict, hf_folders: dict, open_clip_files: dict, layout: str
) -> None:
    config = load_hf_clip(hf_folders["safetensors"]).config
    model = load_open_clip_pt(open_clip_files[layout], config=config)
    _check_embeddings(model, hf)


def test_open_clip_pt_infers_architecture(hf: dict, hf_folders: dict, open_clip_files: dict) -> None:
    path = open_clip_files["tinyclip"]
    model = load_open_clip_pt(path)
    hf_config = load_hf_clip(hf_folders["safetensors"]).config
    # Shapes give everything but the activation; open_clip's (and TinyCLIP's) default is exact GELU.
    assert model.config.vision == hf_config.vision.__class__(**{**hf_config.vision.__dict__, "act": "gelu"})
    assert model.config.text_tower == hf_config.text_tower
    assert (model.config.name, model.config.embed_dim, model.config.image.size) == (path.stem, 16, 32)
    _check_embeddings(model, hf, image=False)  # the text tower is GELU in the reference too


def test_open_clip_pt_errors_name_the_path(open_clip_files: dict, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing.pt"))):
        load_open_clip_pt(tmp_path / "missing.pt")

    truncated = tmp_path / "truncated.pt"
    data = open_clip_files["plain"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError, match=re.escape(str(truncated)) + ": not a readable PyTorch checkpoint"
    ):
        load_open_clip_pt(truncated)

    not_weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(CheckpointError, match=re.escape(str(not_weights)) + ": expected a state dict"):
        load_open_clip_pt(not_weights)

    bad_key = tmp_path / "bad_key.pt"
    sd = torch.load(open_clip_files["plain"], weights_only=True)
    sd["visual.ln_post.gamma"] = sd.pop("visual.ln_post.weight")
    torch.save(sd, bad_key)
    with pytest.raises(CheckpointError, match=re.escape(str(bad_key))) as e:
        load_open_clip_pt(bad_key, config=load_open_clip_pt(open_clip_files["plain"]).config)
    assert "missing keys: visual.ln_post.weight" in str(e.value)
    assert "unexpected keys: visual.ln_post.gamma" in str(e.value)

    with pytest.raises(CheckpointError, match=re.escape(str(open_clip_files["plain"]))):  # wrong architecture
        load_open_clip_pt(open_clip_files["plain"], config="tinyclip-vit-8m-16-text-3m")


# ----------------------------------------------------------------------------------------------
# Presets


@pytest.fixture(scope="module")
def tinyclip_8m():
    torch.manual_seed(0)
    return build_tinyclip(load_preset("tinyclip-vit-8m-16-text-3m")).eval()


def test_tinyclip_8m_preset_size_and_forward(tinyclip_8m) -> None:
    model = tinyclip_8m
    n_vision = sum(p.numel() for p in model.visual.parameters())
    n_text = sum(p.numel() for p in model.text.parameters())
    n_token_embedding = model.text.token_embedding.weight.numel()
    print(
        f"vision {n_vision:,}  text {n_text:,} ({n_text - n_token_embedding:,} without the token embedding)"
    )
    # Hand count: patch 256*3*16*16 + cls 256 + pos 197*256 + 2 LN + 10 blocks * 789,760 + proj 256*512.
    block = 2 * 512 + (256 * 768 + 768) + (256 * 256 + 256) + (256 * 1024 + 1024) + (1024 * 256 + 256)
    assert n_vision == 196_608 + 256 + 197 * 256 + 2 * 512 + 10 * block + 256 * 512 == 8_276_992  # "ViT-8M"
    assert n_token_embedding == 49408 * 256
    assert 2_400_000 < n_text - n_token_embedding < 3_000_000  # "Text-3M": 3 blocks + positions + proj
    assert model.config.vision.act == model.config.text_tower.act == "gelu"  # TinyCLIP's open_clip default

    ids, mask = Tokenizer.from_config(model.config.text)(["a photo of a cat", "two dogs playing in the snow"])
    with torch.no_grad():
        image, text, scale = model(torch.randn(2, 3, 224, 224), torch.from_numpy(ids), torch.from_numpy(mask))
    assert image.shape == text.shape == (2, 512)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    assert scale.item() == pytest.approx(1 / 0.07)


# ----------------------------------------------------------------------------------------------
# Text tower: mask-derived end-of-text pooling


def _argmax_pooled_text(text, ids: torch.Tensor) -> torch.Tensor:
    """open_clip's text forward: -inf causal mask, no padding mask, pool at ids.argmax()."""
    T = ids.shape[1]
    x = text.token_embedding(ids.long()) + text.positional_embedding[:T]
    causal = torch.full((T, T), float("-inf")).triu(1)
    for block in text.blocks:
        x = block(x, causal)
    x = text.ln_final(x)[torch.arange(len(ids)), ids.argmax(dim=-1)]
    return F.normalize(text.proj(x), dim=-1)


def test_mask_pooling_equals_argmax_pooling(tinyclip_8m) -> None:
    tok = Tokenizer.from_config(tinyclip_8m.config.text)
    ids, mask = tok(["a photo of a cat", "x", "a much longer caption " * 30, "Hello, World!"])
    assert (mask.sum(1) == [7, 3, 77, 6]).all()
    ids32, mask32 = torch.from_numpy(ids).int(), torch.from_numpy(mask).int()
    text = tinyclip_8m.text
    with torch.no_grad():
        ours = text(ids32, mask32)
        torch.testing.assert_close(ours, _argmax_pooled_text(text, torch.from_numpy(ids)), atol=ATOL, rtol=0)
        torch.testing.assert_close(ours, text(torch.from_numpy(ids), torch.from_numpy(mask)), atol=0, rtol=0)
        # Whatever sits in the padding cannot change the embedding.
        garbage = ids32.clone()
        garbage[mask32 == 0] = torch.randint(0, 49406, (int((mask32 == 0).sum()),), dtype=torch.int32)
        torch.testing.assert_close(text(garbage, mask32), ours, atol=ATOL, rtol=0)


def test_text_tower_masks_are_finite(tinyclip_8m) -> None:
    """The only mask constants are the 0/1 causal buffer and the finite MASK_VALUE."""
    buffers = dict(tinyclip_8m.text.named_buffers())
    assert list(buffers) == ["causal"] and set(buffers["causal"].unique().tolist()) == {0.0, 1.0}
    assert "causal" not in tinyclip_8m.state_dict() and "text.causal" not in tinyclip_8m.state_dict()
    ids = torch.full((1, 77), 49407, dtype=torch.int32)
    with torch.no_grad():  # an all-padding row: every key masked, still finite
        out = tinyclip_8m.text(ids, torch.zeros(1, 77, dtype=torch.int32))
    assert torch.isfinite(out).all()


def test_text_tower_exports_without_argmax_or_infinities(hf: dict, hf_folders: dict, tmp_path) -> None:
    """Static-shape ONNX of the text tower: plain MatMul/Softmax attention, no ArgMax, finite constants."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    text = load_hf_clip(hf_folders["safetensors"]).text
    ids, mask = hf["ids"].int(), hf["mask"].int()  # int32 inputs, as the device runtime feeds them
    path = tmp_path / "text.onnx"
    torch.onnx.export(text, (ids, mask), str(path), input_names=["input_ids", "attention_mask"], dynamo=False)
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert {"MatMul", "Softmax"} <= ops and not ops & {"ArgMax", "ArgMin", "Attention", "MultiHeadAttention"}
    tensors = list(graph.initializer) + [
        a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
    ]
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    floats = [onnx.numpy_helper.to_array(t) for t in tensors if t.data_type in float_types]
    assert floats and all(np.isfinite(a).all() for a in floats)
    (out,) = ort.InferenceSession(str(path)).run(
        None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    )
    np.testing.assert_allclose(out, hf["text"].numpy(), atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------
# CLIP BPE tokenizer

SENTENCES = [
    "a photo of a cat",
    "A PHOTO OF A CAT!!!",
    "Hello, World! It's 2024-05-17; the price: $3.50 (approx.) -- ok?",
    "  multiple   spaces\tand\nnew lines  ",
    "don't won't I'm we'll they've you'd she's",
    "naïve café, Ünïcödé — emojis 🐱🚀, 日本語のテキスト, Ελληνικά, кириллица, नमस्ते",
    "e\u0301 composed by NFC",
    "1234567890 3.14159 1,000,000",
    "x",
    "photo " * 100,  # truncated: BOS + 75 tokens + EOS
]
# sha256 of the first 48894 merges of OpenAI's bpe_simple_vocab_16e6.txt.gz, one "a b" per line.
CLIP_MERGES_SHA256 = "f61f2adf497e6f5357c347aeb4646fabe82f341e946de5bdec5d2858e41bef4a"


@pytest.fixture(scope="module")
def clip_bpe() -> dict:
    spec = json.loads(gzip.decompress((ASSETS / "clip-bpe.tokenizer.json.gz").read_bytes()))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    return {"vocab": spec["model"]["vocab"], "merges": merges}


def test_clip_bpe_asset_is_openai_vocab(clip_bpe: dict) -> None:
    vocab, merges = clip_bpe["vocab"], clip_bpe["merges"]
    assert len(vocab) == 49408 and len(merges) == 48894
    assert hashlib.sha256("\n".join(" ".join(m) for m in merges).encode()).hexdigest() == CLIP_MERGES_SHA256
    assert (vocab["<|startoftext|>"], vocab["<|endoftext|>"], vocab["!"], vocab["a</w>"]) == (
        49406,
        49407,
        0,
        320,
    )
    tok = Tokenizer.from_config(load_preset("tinyclip-vit-8m-16-text-3m").text)
    ids, mask = tok(["a photo of a cat"])
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 49407]  # OpenAI CLIP's ids
    assert mask[0].sum() == 7 and tok.pad_id == 49407


def test_clip_bpe_matches_transformers(clip_bpe: dict, tmp_path) -> None:
    (tmp_path / "vocab.json").write_text(json.dumps(clip_bpe["vocab"]))
    (tmp_path / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in clip_bpe["merges"]) + "\n"
    )
    reference = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    ref = reference(
        SENTENCES + ["<|endoftext|> inside"], padding="max_length", truncation=True, max_length=77
    )
    ids, mask = Tokenizer.from_config(load_preset("tinyclip-vit-8m-16-text-3m").text)(
        SENTENCES + ["<|endoftext|> inside"]
    )
    np.testing.assert_array_equal(ids, np.array(ref["input_ids"]))
    np.testing.assert_array_equal(mask, np.array(ref["attention_mask"]))
    assert mask[-2].all() and ids[-2, -1] == 49407  # long text: truncated with EOS kept last


def _byte_symbols() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character table."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {b: chr(b) for b in keep}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


def _reference_clip_encode(text: str, vocab: dict[str, int], ranks: dict[tuple[str, str], int]) -> list[int]:
    """OpenAI CLIP's simple tokenizer, rewritten from its description (NFC stands in for ftfy)."""
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip().lower()
    pattern = (
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    )
    table, tokens = _byte_symbols(), []
    for word in regex.findall(pattern, text, regex.IGNORECASE):
        symbols = [table[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        while len(symbols) > 1:
            best = min(zip(symbols, symbols[1:], strict=False), key=lambda p: ranks.get(p, math.inf))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(symbols):  # merge every occurrence, left to right
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        tokens += [vocab[s] for s in symbols]
    return [vocab["<|startoftext|>"], *tokens[:75], vocab["<|endoftext|>"]]


def test_clip_bpe_matches_reference_bpe(clip_bpe: dict) -> None:
    ranks = {m: i for i, m in enumerate(clip_bpe["merges"])}
    ids, mask = Tokenizer.from_config(load_preset("tinyclip-vit-8m-16-text-3m").text)(SENTENCES)
    for i, sentence in enumerate(SENTENCES):
        expected = _reference_clip_encode(sentence, clip_bpe["vocab"], ranks)
        assert ids[i, : mask[i].sum()].tolist() == expected, sentence

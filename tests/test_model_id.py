"""The model id names the weights: PyTorch (`TorchEmbedder`) and the exported artifacts agree on it.

An index records the model id it was built with and refuses another; a photo library indexed with
the PyTorch model must open with the artifacts exported from the same weights (and not with
artifacts of other weights). The tiny CLIP and its calibration data are those of `test_export.py`;
the export stops after quantization (the id does not depend on the HTP compile).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_export import TINY, photos, tiny_checkpoint  # noqa: F401 (module-scoped fixtures)

from edge_gcl.index import Index, ModelMismatchError
from edge_gcl.manifest import Manifest
from edge_gcl.models import TorchEmbedder, create_model, load_model
from edge_gcl.models.base import weights_id
from edge_gcl.runtime import OnnxEmbedder
from export import compile as compile_cli


@pytest.fixture(scope="module")
def float_artifacts(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("ids") / "artifacts"
    args = ["--model", str(tiny_checkpoint), "--out", str(out), "--skip-compile"]
    assert compile_cli.main([*args, "--calibration-size", "4", "--heldout-size", "4"]) == 0
    return out


def test_weights_id_is_the_name_and_a_digest_of_every_weight() -> None:
    torch.manual_seed(0)
    model = create_model(TINY)
    model_id = weights_id(model)
    assert model_id.startswith(f"{TINY.name}-") and len(model_id) == len(TINY.name) + 13
    assert TorchEmbedder(model).model_id == model_id
    assert TorchEmbedder(model, model_id="custom").model_id == "custom"
    with torch.no_grad():
        model.logit_scale += 1e-3  # one scalar, outside both towers
    assert weights_id(model) != model_id
    with torch.no_grad():
        model.logit_scale -= 1e-3
    assert weights_id(model) == model_id
    with torch.no_grad():
        next(model.text.parameters()).view(-1)[0] += 1e-3
    assert TorchEmbedder(model).model_id != model_id


def test_torch_and_exported_artifacts_share_the_model_id(
    tiny_checkpoint: Path,  # noqa: F811
    float_artifacts: Path,
) -> None:
    torch_id = TorchEmbedder(load_model(tiny_checkpoint)).model_id
    assert torch_id == TorchEmbedder(load_model(tiny_checkpoint)).model_id  # stable across loads
    assert Manifest.load(float_artifacts).model_id == torch_id
    assert OnnxEmbedder(float_artifacts).model_id == torch_id


def test_index_built_with_pytorch_opens_with_the_artifacts(
    tiny_checkpoint: Path,  # noqa: F811
    float_artifacts: Path,
    photos: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    model = load_model(tiny_checkpoint)
    with Index.open(tmp_path / "index", model=TorchEmbedder(model)) as index:
        index.add_photos(photos / "images", progress=False)
        before = [hit.id for hit in index.search("a photo of colour", k=5)]
    with Index.open(tmp_path / "index", model=float_artifacts) as index:
        assert [hit.id for hit in index.search("a photo of colour", k=5)] == before
    with torch.no_grad():
        next(model.visual.parameters()).view(-1)[0] += 1e-3  # other weights: another model
    with pytest.raises(ModelMismatchError, match="built with model"):
        Index.open(tmp_path / "index", model=TorchEmbedder(model))

"""`edge-gcl status`: the default model and where it was recorded, the index folder, providers, versions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_gcl.cli import main
from edge_gcl.locations import environment, record_artifacts

pytestmark = pytest.mark.runtime  # runs in the torch-free install too (tests/test_runtime_install.py)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGE_GCL_HOME", str(tmp_path / "home"))
    for name in ("EDGE_GCL_INDEX", "EDGE_GCL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def artifacts(folder: Path) -> Path:
    folder.mkdir(parents=True)
    manifest = {"format_version": 1, "model_id": "lite-12038ff96c01", "model_name": "lite", "embed_dim": 256,
                "precision": "w8a16", "chipset": {"name": "Snapdragon 8 Gen 3", "htp_arch": "v75"},
                "image": {"size": 224}, "text": {"context_length": 64}, "towers": {}, "files": {},
                "extra": {"source_model": "default"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


class NoteEmbedder:
    model_id = "toy-notes"
    embed_dim = 4

    def embed_texts(self, texts, *, batch_size=64, progress=False):
        return np.tile(np.array([[1, 0, 0, 0]], np.float32), (len(texts), 1))

    def embed_images(self, images, *, batch_size=32, progress=False):
        raise NotImplementedError


def test_status_says_there_is_no_model_and_no_index_yet(home: Path, capsys) -> None:
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"({environment()})" in out.splitlines()[0]
    assert "model:      none: no compiled model found" in out and "python -m export.compile --target snapdragon" in out
    assert f"index:      {home / 'index'} (not created yet" in out
    assert "providers:  cpu (onnxruntime " in out and "qnn" in out
    assert f"state:      {home} " in out and "versions:   edge-gcl " in out


def test_status_names_the_recorded_model_its_record_and_the_index(home: Path, tmp_path: Path, capsys) -> None:
    from edge_gcl.index import Index

    built = artifacts(tmp_path / "clone" / "artifacts")
    record = record_artifacts(built)
    with Index.open(home / "index", model=NoteEmbedder()) as index:
        index.add_note("lunch with Anna at the harbour")
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"model:      {built}: default (lite-12038ff96c01), 256-d, w8a16 for Snapdragon 8 Gen 3 (v75)" in out
    assert f"this environment ({environment()}), in {record}" in out  # where the default was recorded
    assert f"index:      {home / 'index'}: 1 items (0 photos, 1 notes, 0 photo+note), model toy-notes" in out
    assert main(["status", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["model"]["spec"] == str(built) and s["model"]["name"] == "default" and s["index"]["items"] == 1
    assert s["artifacts_record"] == str(record) and s["providers"]["cpu"]["available"] is True
    assert set(s["extras"]) == {"train", "export", "video", "mmeb", "dev"} and s["packages"]["numpy"]
    assert main(["status", "--model", "elsewhere", "--index", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "model:      elsewhere: a PyTorch model" in out and "chosen by --model" in out
    assert f"index:      {tmp_path / 'none'} (not created yet" in out

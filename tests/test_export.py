"""`python -m export.compile` end to end on a tiny CLIP: export, QDQ, EPContext, verify, manifest."""

from __future__ import annotations

import json
import os
import platform
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edge_gcl.checkpoint import save_checkpoint
from edge_gcl.config import (
    ImagePreprocess,
    ModelConfig,
    TextPreprocess,
    TextTransformerConfig,
    VisionTransformerConfig,
)
from edge_gcl.manifest import Manifest, file_digest, write_json_atomic
from edge_gcl.models import create_model
from edge_gcl.runtime import OnnxEmbedder
from export import compile as compile_cli
from export.onnx_export import export_tower, fix_batch

TINY = ModelConfig(
    name="tiny-clip-test",
    family="tinyclip",
    embed_dim=16,
    image=ImagePreprocess(size=32),
    text=TextPreprocess(tokenizer="clip-bpe", context_length=16),
    vision=VisionTransformerConfig(image_size=32, patch_size=8, width=32, layers=2, heads=2, act="gelu"),
    text_tower=TextTransformerConfig(context_length=16, width=32, layers=2, heads=2, act="gelu"),
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,caption"]
    for i in range(24):
        base = rng.integers(0, 255, 3)
        a = np.clip(base + rng.integers(-40, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(root / "images" / f"{i}.jpg")
        rows.append(f"{i}.jpg,a photo of colour {base.tolist()} number {i}")
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, photos):
    torch.manual_seed(0)
    model = create_model(TINY)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    return save_checkpoint(folder, model, train={"data": [str(photos / "captions.txt")], "images": []})


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("art") / "artifacts"
    code = compile_cli.main(["--no-ocr", "--model", str(tiny_checkpoint), "--target", "snapdragon", "--out", str(out),
                             "--calibration-size", "8", "--heldout-size", "8"])
    assert code == 0
    return out


def test_calibration_follows_the_recorded_per_source_splits_and_held_out_lists(photos, tmp_path, monkeypatch):
    """Checkpoints of `edge-gcl train --recipe` record one FILE:SPLIT per source (`${recipes}/...` for the
    package's own split files) and --exclude lists: calibration draws from that split, minus the held-out."""
    from edge_gcl.models import load_model

    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": [f"{i}.jpg" for i in range(12)], "dev": [f"{i}.jpg" for i in range(12, 24)],
                                  "held": ["0.jpg", "1.jpg"]}))
    monkeypatch.setattr("edge_gcl.train.config.RECIPE_DIR", tmp_path)  # ${recipes} -> tmp_path
    torch.manual_seed(0)
    train = {"data": ["nowhere/captions.txt", str(photos / "captions.txt")], "images": [],
             "split": ["all", "${recipes}/splits.json:train"], "exclude": [f"{splits}:held", f"{splits}:dev"]}
    folder = save_checkpoint(tmp_path / "ck", create_model(TINY), train=train)
    captions, images, names = compile_cli.calibration_source(load_model(folder), None)
    assert captions == photos / "captions.txt" and images is None
    assert names == {f"{i}.jpg" for i in range(2, 12)}
    # the whole source, stripped of the held-out lists
    folder = save_checkpoint(tmp_path / "ck2", create_model(TINY), train={**train, "split": ["all", "all"]})
    assert compile_cli.calibration_source(load_model(folder), None)[2] == {f"{i}.jpg" for i in range(2, 12)}


def test_manifest_states_the_contract(artifacts):
    manifest = Manifest.load(artifacts, verify=True)  # every file's SHA-256 checks out
    raw = json.loads((artifacts / "manifest.json").read_text())
    assert raw["precision"] == "w8a16" and raw["chipset"]["htp_arch"] == "v75"
    for tower in ("image", "text"):
        t = manifest.towers[tower]
        assert t.npu_node_share == 1.0
        assert t.fidelity["cosine_min"] >= 0.99, t.fidelity  # compiled (HTP emulation) vs float
        ctx = t.files["ctx"]
        assert "ctx" in ctx and ctx.endswith(".onnx") and (artifacts / ctx).exists()
        assert manifest.files[ctx]["sha256"] == file_digest(artifacts / ctx)["sha256"]
    assert manifest.towers["text"].spec.inputs[0].dtype == "int32"
    assert raw["extra"]["onnx_parity_max_abs_error"]["image"] < 1e-4


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_manifest_records_no_path_of_the_build_machine(artifacts, photos):
    raw = json.loads((artifacts / "manifest.json").read_text())
    assert raw["calibration"]["captions"] == f"{photos.name}/captions.txt"  # relative to the data root
    assert raw["extra"]["source_model"] == "model"  # the checkpoint folder's name
    assert [s for s in _strings(raw) if os.path.isabs(s) or "/tmp" in s] == []


def test_manifest_has_the_mode_of_the_other_artifacts(artifacts):
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in artifacts.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes  # manifest.json was 0600, the rest 0644


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_write_json_atomic_respects_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_json_atomic(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_runtime_reads_the_artifacts_like_pytorch(artifacts, tiny_checkpoint, photos):
    from edge_gcl.models import TorchEmbedder, load_model

    torch_emb = TorchEmbedder(load_model(tiny_checkpoint))
    onnx_emb = OnnxEmbedder(artifacts)
    paths = [photos / "images" / f"{i}.jpg" for i in range(4)]
    texts = ["a photo of a red car", "two dogs"]
    np.testing.assert_allclose(onnx_emb.embed_images(paths), torch_emb.embed_images(paths), atol=1e-4)
    np.testing.assert_allclose(onnx_emb.embed_texts(texts), torch_emb.embed_texts(texts), atol=1e-4)
    assert onnx_emb.model_id == Manifest.load(artifacts).model_id


def test_failed_rebuild_keeps_the_old_artifacts(artifacts, tiny_checkpoint, tmp_path):
    before = (artifacts / "manifest.json").read_bytes()
    with pytest.raises(FileNotFoundError, match="--calibration"):
        compile_cli.main(["--no-ocr", "--model", str(tiny_checkpoint), "--out", str(artifacts), "--calibration", str(tmp_path)])
    assert (artifacts / "manifest.json").read_bytes() == before
    assert not list(artifacts.parent.glob(".artifacts.partial-*"))


def _tree(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_failure_mid_build_after_staging_keeps_the_old_artifacts(artifacts, tiny_checkpoint, monkeypatch):
    import export.quantize

    before, staged = _tree(artifacts), []
    real = export.quantize.quantize_tower

    def quantize_then_die(float_onnx, out_path, *, kind, **options):
        if kind == "text":  # the image tower is already quantized in the staging folder
            staged.extend(p.name for p in out_path.parent.iterdir())
            raise KeyboardInterrupt  # not an Exception: a Ctrl-C mid-build
        return real(float_onnx, out_path, kind=kind, **options)

    monkeypatch.setattr(export.quantize, "quantize_tower", quantize_then_die)
    with pytest.raises(KeyboardInterrupt):
        compile_cli.main(["--no-ocr", "--model", str(tiny_checkpoint), "--out", str(artifacts), "--skip-compile",
                          "--calibration-size", "2", "--heldout-size", "2"])
    assert "image_tower_w8a16.onnx" in staged
    assert _tree(artifacts) == before
    assert sorted(p.name for p in artifacts.parent.iterdir()) == ["artifacts", "artifacts-failed-build.log"]


def test_fidelity_gate_fails_the_build_naming_the_tower(artifacts, tiny_checkpoint, capfd):
    """w8a8 wrecks the tiny text transformer (cosine min ~0.4): the build must fail, replacing nothing."""
    before = _tree(artifacts)
    code = compile_cli.main(["--no-ocr", "--model", str(tiny_checkpoint), "--out", str(artifacts), "--precision", "w8a8",
                             "--calibration-size", "8", "--heldout-size", "8"])
    err = capfd.readouterr().err
    assert code == 1
    assert "text tower cosine min 0." in err and "image tower" not in err  # the image tower passes
    assert "--min-fidelity 0.98" in err and "try --precision w8a16 or fp16" in err
    assert _tree(artifacts) == before
    assert "text: cosine min" in (artifacts.parent / "artifacts-failed-build.log").read_text()


def test_manifest_says_what_was_verified(artifacts, tiny_checkpoint, tmp_path):
    checked = Manifest.load(artifacts).verification
    assert checked == {"checked": True, "min_fidelity": 0.98, "heldout_inputs": 8,
                       "on": f"QNN HTP backend, {platform.machine()}"}  # x86_64: the emulator
    result = compile_cli.run(str(tiny_checkpoint), ocr=False, out=tmp_path / "unchecked", n_calibration=2, n_heldout=2,
                             skip_verify=True, log=lambda line: None)
    unchecked = Manifest.load(tmp_path / "unchecked").verification
    assert unchecked == result.manifest.verification
    assert unchecked["checked"] is False and "--skip-verify" in unchecked["reason"]
    assert all(t.fidelity is None for t in result.manifest.towers.values())


def test_min_fidelity_must_be_a_cosine(capsys):
    with pytest.raises(SystemExit):
        compile_cli.main(["--min-fidelity", "1.5"])
    assert "a cosine threshold in [0, 1]" in capsys.readouterr().err


_BUILD = """
import sys
from export.compile import run
run(sys.argv[1], out=sys.argv[2], n_calibration=4, n_heldout=4, ocr=False)
"""


def test_build_shows_its_steps_and_logs_the_libraries_chatter(tiny_checkpoint, tmp_path):
    """The quantizer's WARNING:root lines and the QNN banner (native, fd 1/2) go to build.log only."""
    import subprocess
    import sys

    out = tmp_path / "artifacts"
    done = subprocess.run([sys.executable, "-c", _BUILD, str(tiny_checkpoint), str(out)], capture_output=True,
                          text=True, cwd=Path(compile_cli.__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "WARNING" not in done.stdout and "LIBNATIVE" not in done.stdout
    log = (out / "build.log").read_text()
    assert "WARNING:root:" in log  # produced, and kept (the QNN banner is dropped: edge_gcl.qnn_ep)

    # Quantize and verify (60-85 s on the default model) report each tower as it starts and ends.
    lines = [line.strip() for line in done.stdout.splitlines()]
    expected = ["image: quantizing ...", "image: quantized in", "text: quantizing ...", "text: quantized in",
                "image: running 4 inputs ...", "image: cosine min", "text: running 4 inputs ...", "text: cosine min"]
    found = [next(i for i, line in enumerate(lines) if line.startswith(e)) for e in expected]
    assert found == sorted(found), lines


def _folder(path, marker):
    path.mkdir()
    (path / "manifest.json").write_text(marker)
    return path


def test_replace_swaps_in_one_step(tmp_path, monkeypatch):
    out = _folder(tmp_path / "artifacts", "old")
    stage = _folder(tmp_path / ".artifacts.partial-1", "new")

    def no_rename(self, target):
        raise AssertionError(f"two-step rename {self} -> {target}")

    monkeypatch.setattr(type(out), "rename", no_rename)  # Linux: one renameat2(RENAME_EXCHANGE)
    compile_cli._replace_folder(stage, out)
    assert (out / "manifest.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["artifacts"]


_CRASH_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
import export.compile as c
c._exchange = lambda a, b: False  # a file system without RENAME_EXCHANGE: two renames
real, calls = Path.rename, []
def rename(self, target):
    calls.append(target)
    if len(calls) == 2:  # out is already aside, stage not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, target)
Path.rename = rename
c._replace_folder(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_killed_between_renames_the_next_build_puts_the_old_folder_back(tmp_path, tiny_checkpoint):
    import signal
    import subprocess
    import sys

    out = _folder(tmp_path / "artifacts", "old")
    stage = _folder(tmp_path / ".artifacts.partial-999999999", "new")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = _folder(tmp_path / f".artifacts.partial-{dead.stdout.strip()}", "killed build")
    done = subprocess.run([sys.executable, "-c", _CRASH_BETWEEN_RENAMES, str(stage), str(out)],
                          cwd=Path(compile_cli.__file__).parents[1])
    assert done.returncode == -signal.SIGKILL
    assert not out.exists() and (tmp_path / ".artifacts.old" / "manifest.json").read_text() == "old"

    # The next build, even one that fails at once, first puts the old build back.
    with pytest.raises(FileNotFoundError):
        compile_cli.main(["--no-ocr", "--model", str(tiny_checkpoint), "--out", str(out), "--calibration", str(tmp_path / "x")])
    assert (out / "manifest.json").read_text() == "old"
    assert not stale.exists() and not stage.exists() and not (tmp_path / ".artifacts.old").exists()


def test_fix_batch_pins_shapes(tiny_checkpoint, tmp_path):
    import onnx

    from edge_gcl.models import load_model

    path = export_tower(load_model(tiny_checkpoint), "text", tmp_path / "t.onnx")
    fixed = onnx.load(str(fix_batch(path, tmp_path / "t1.onnx")))
    dims = [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 16]


def test_aihub_without_token_fails_fast(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("QAIHUB_CLIENT_INI", str(tmp_path / "missing.ini"))
    start = time.perf_counter()
    assert compile_cli.main(["--target", "snapdragon", "--via", "aihub"]) == 2
    assert time.perf_counter() - start < 5
    assert "qai-hub configure" in capsys.readouterr().err


def test_aihub_rejected_token_is_one_line_without_the_token(tiny_checkpoint, tmp_path, monkeypatch, capfd):
    from fake_aihub import FakeAIHub

    secret = "sk-qaihub-REJECTED-3b9e71c2"
    with FakeAIHub(lifetime_s=60) as hub:
        monkeypatch.setenv("QAIHUB_CLIENT_INI", str(hub.write_client_ini(tmp_path / "client.ini", token=secret)))
        code = compile_cli.main(["--no-ocr", "--model", str(tiny_checkpoint), "--via", "aihub", "--out", str(tmp_path / "hub"),
                                 "--calibration-size", "2", "--heldout-size", "2"])
    printed = capfd.readouterr()
    assert code == 1 and "HTTP 401" in printed.err and "Traceback" not in printed.err
    assert secret not in printed.out + printed.err
    assert secret not in (tmp_path / "hub-failed-build.log").read_text()


def test_list_chipsets(capsys):
    assert compile_cli.main(["--list-chipsets"]) == 0
    table = capsys.readouterr().out
    for name in ("8 Gen 2", "8 Gen 3", "8 Elite", "X Elite"):
        assert name in table


@pytest.mark.parametrize("aihub_quantize", [False, True])
def test_via_aihub_against_the_fake_server(tiny_checkpoint, tmp_path, monkeypatch, aihub_quantize):
    """The real qai-hub client, pointed at a local fake AI Hub: (quantize +) compile + profile land in the manifest."""
    from fake_aihub import FakeAIHub

    with FakeAIHub(lifetime_s=60) as hub:
        monkeypatch.setenv("QAIHUB_CLIENT_INI", str(hub.write_client_ini(tmp_path / "client.ini")))
        result = compile_cli.run(str(tiny_checkpoint), ocr=False, out=tmp_path / "hub", via="aihub", n_calibration=4,
                                 n_heldout=4, aihub_quantize=aihub_quantize, aihub_poll_s=0.02, log=lambda *a: None)
    profile = result.manifest.extra["aihub"]
    assert profile["device"] == "Samsung Galaxy S24 (Family)"
    for tower in ("image", "text"):
        t = profile["towers"][tower]
        assert t["inference_ms"] > 0 and sum(t["layer_counts"].values()) > 0
        assert (tmp_path / "hub" / t["model_file"]).exists()
    assert (tmp_path / "hub" / "aihub_profile.json").exists()
    assert len(hub.uploads) >= 2  # both towers were uploaded
    assert len(hub.jobs_of("quantize")) == (2 if aihub_quantize else 0)
    assert not (tmp_path / "hub" / ".aihub-float").exists()

"""The on-device CLI: the compiled model by default, forms and providers, one-line errors, the NPU.

The first tests use the tiny ONNX artifacts of test_runtime.py; the last builds the real default
model's artifacts (`export.compile`, HTP-emulation check skipped) and runs `edge-gcl index add`
and `edge-gcl search` with `--provider qnn` against the CPU form on the shared Flickr8k photos.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_runtime import make_artifacts  # noqa: E402

from edge_gcl.cli import main  # noqa: E402
from edge_gcl.locations import record_artifacts  # noqa: E402
from edge_gcl.manifest import Manifest  # noqa: E402
from edge_gcl.qnn_ep import qnn_available  # noqa: E402


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGE_GCL_HOME", str(tmp_path / "home"))
    for name in ("EDGE_GCL_INDEX", "EDGE_GCL_MODEL", "EDGE_GCL_HTP_ARCH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def make_photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        paths.append(folder / f"p{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("edge-gcl: error: "), err
    return err[-1]


def test_no_model_and_no_artifacts_is_one_line_saying_how_to_build(home: Path, capsys) -> None:
    make_photos(Path("photos"), 2)
    assert main(["index", "add", "photos"]) == 1
    line = one_line_error(capsys)
    assert "no compiled model found" in line and "python -m export.compile --target snapdragon" in line
    assert not (home / "index" / "index.sqlite").exists()  # nothing created for nothing


def test_add_and_search_run_the_recorded_artifacts_by_default(home: Path, tmp_path: Path, capsys) -> None:
    artifacts = make_artifacts(tmp_path / "build" / "artifacts")
    record_artifacts(artifacts)  # what `python -m export.compile` does when it succeeds
    photos = make_photos(tmp_path / "photos", 3)
    assert main(["index", "add", str(tmp_path / "photos")]) == 0
    out, err = capsys.readouterr()
    assert "added 3" in out
    assert f"index: {home / 'index'}" in err  # the user's index, said where
    assert f"loading {artifacts.resolve()} (the record of export.compile's last build in this environment" in err
    assert "float32 towers on ONNX Runtime CPU" in err  # which model and form
    assert main(["search", "--image", str(photos[1]), "--json", "--k", "1"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["path"] == str(photos[1]) and "float32 towers on ONNX Runtime CPU" in err
    # the quantized form of the same weights searches the same vectors (same model id)
    assert main(["search", "--image", str(photos[2]), "--json", "--k", "1", "--form", "qdq"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["path"] == str(photos[2]) and "quantized (QDQ)" in err


def test_add_fails_on_a_named_path_it_cannot_add_and_keeps_the_rest(home: Path, tmp_path: Path, capsys) -> None:
    artifacts = make_artifacts(tmp_path / "artifacts")
    photos = make_photos(tmp_path / "photos", 2)
    common = ["--model", str(artifacts)]
    # a typo alone: one line naming it, and no index created for nothing
    assert main(["index", "add", str(tmp_path / "Photoss"), *common]) == 1
    assert one_line_error(capsys) == f"edge-gcl: error: {tmp_path / 'Photoss'}: no such file or folder"
    assert not (home / "index" / "index.sqlite").exists()
    # a typo beside a good folder: the folder is added, the typo named, the exit fails
    assert main(["index", "add", str(tmp_path / "photos"), str(tmp_path / "Photoss"), *common]) == 1
    out, err = capsys.readouterr()
    assert "added 2" in out and f"skipped {tmp_path / 'Photoss'}: no such file or folder" in err
    # a corrupt file inside a folder is reported but does not fail the command ...
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["index", "add", str(tmp_path / "photos"), *common]) == 0
    out, err = capsys.readouterr()
    assert "unchanged 2" in out and "skipped 1" in out and "broken.jpg" in err
    # ... the same file named on the command line does, and what is stored stays
    assert main(["index", "add", str(tmp_path / "photos" / "broken.jpg"), str(photos[0]), *common]) == 1
    out, err = capsys.readouterr()
    assert "unchanged 1" in out and f"skipped {tmp_path / 'photos' / 'broken.jpg'}: " in err
    assert main(["index", "stats"]) == 0
    assert json.loads(capsys.readouterr().out)["photos"] == 2


def test_forms_that_cannot_run_are_one_line_naming_what_to_do(home: Path, tmp_path: Path, capsys) -> None:
    artifacts = make_artifacts(tmp_path / "artifacts")  # float and qdq, no ctx
    make_photos(tmp_path / "photos", 1)
    common = ["--model", str(artifacts)]
    assert main(["index", "add", str(tmp_path / "photos"), *common]) == 0
    capsys.readouterr()
    assert main(["search", "x", "--form", "ctx", *common]) == 1
    assert "form 'ctx' (EPContext) runs only on the NPU: use --provider qnn" in one_line_error(capsys)
    assert main(["search", "x", "--provider", "qnn", *common]) == 1
    line = one_line_error(capsys)
    assert "no 'ctx' image tower" in line and "rebuild with `python -m export.compile --target snapdragon" in line
    assert main(["search", "x", "--provider", "qnn", "--form", "float", *common]) == 1
    assert "the float graphs are not an NPU target" in one_line_error(capsys)
    assert main(["search", "x", "--model", "default", "--form", "qdq"]) == 1
    assert "need an artifacts folder" in one_line_error(capsys)


def test_artifacts_for_another_hexagon_arch_are_refused(
    home: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifacts = make_artifacts(tmp_path / "artifacts")
    manifest = Manifest.load(artifacts)
    for tower in ("image", "text"):  # a stand-in ctx file: refused before any session opens
        shutil.copy(artifacts / manifest.towers[tower].files["qdq"], artifacts / f"{tower}_ctx.onnx")
        manifest.towers[tower].files["ctx"] = f"{tower}_ctx.onnx"
    manifest.chipset = {"name": "Snapdragon 8 Gen 3", "soc_model": 57, "htp_arch": "v75"}
    manifest.save(artifacts)
    monkeypatch.setenv("EDGE_GCL_HTP_ARCH", "v79")  # the device says what it is
    make_photos(tmp_path / "photos", 1)
    assert main(["index", "add", str(tmp_path / "photos"), "--model", str(artifacts), "--provider", "qnn"]) == 1
    line = one_line_error(capsys)
    assert "built for Snapdragon 8 Gen 3 (HTP v75), but this NPU is an HTP v79" in line
    assert "rebuild with `python -m export.compile --target snapdragon" in line


def test_no_qnn_wheel_is_one_line(home: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_gcl.qnn_ep as qnn_ep

    artifacts = make_artifacts(tmp_path / "artifacts")
    make_photos(tmp_path / "photos", 1)
    monkeypatch.setitem(sys.modules, "onnxruntime_qnn", None)  # as where no wheel exists
    monkeypatch.setattr(qnn_ep.ort, "get_ep_devices", lambda: [])  # not registered earlier in this process
    args = ["index", "add", str(tmp_path / "photos"), "--model", str(artifacts), "--provider", "qnn", "--form", "qdq"]
    assert main(args) == 1
    assert "QNN execution provider not available: onnxruntime-qnn is not installed" in one_line_error(capsys)


# --- the real default model on the NPU (HTP emulation) ----------------------------------------


@pytest.fixture(scope="module")
def default_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from conftest import FLICKR

    if not (FLICKR / "captions.txt").exists():
        pytest.skip(f"{FLICKR} not present (the shared research data set)")
    from export import compile as compile_cli

    out = tmp_path_factory.mktemp("default") / "artifacts"
    argv = ["--model", "default", "--out", str(out), "--calibration-size", "16", "--skip-verify", "--no-ocr"]
    assert compile_cli.main(argv) == 0
    return out


QUERIES = ["a dog running on the beach", "a child in a red shirt", "two people climbing a rock", "a man on a bike"]


@pytest.mark.slow
@pytest.mark.skipif(not qnn_available(), reason="onnxruntime-qnn (QNN HTP backend) not installed")
def test_npu_ingest_and_search_agree_with_the_cpu_form(
    default_artifacts: Path, home: Path, tmp_path: Path, capsys
) -> None:
    """CLI on real photos: photos embedded by the compiled (ctx) towers in HTP emulation match the
    CPU float ones, and ctx queries over a CPU-built index find what CPU queries find (top 5)."""
    from conftest import FLICKR

    names = json.loads((FLICKR / "splits.json").read_text())["dev"][:40]
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in names:
        (photos / name).symlink_to(FLICKR / "images" / name)
    few = tmp_path / "few"
    few.mkdir()
    for name in names[:4]:
        (few / name).symlink_to(FLICKR / "images" / name)
    cpu = ["--model", str(default_artifacts)]
    npu = [*cpu, "--provider", "qnn"]
    assert main(["index", "add", str(photos), "--index", "cpu", *cpu]) == 0
    assert main(["index", "add", str(few), "--index", "npu", *npu]) == 0
    err = capsys.readouterr().err
    from edge_gcl.qnn_ep import htp_emulated

    where = "the HTP emulated on this CPU" if htp_emulated() else "Hexagon NPU"  # x86: emulated, and said so
    assert f"compiled (EPContext) w8a16 towers on {where} (QNN HTP v75, built for Snapdragon 8 Gen 3" in err

    # a photo embedded on one form finds itself embedded on the other, at cosine >= 0.98
    for name in names[:4]:
        for index, args in (("cpu", npu), ("npu", cpu)):
            assert main(["search", "--image", str(few / name), "--index", index, "--json", "--k", "1", *args]) == 0
            (hit,) = json.loads(capsys.readouterr().out)
            assert hit["path"].endswith(name) and hit["score"] >= 0.98, (index, hit)
    overlaps = []
    for query in QUERIES:
        results = {}
        for name, args in (("cpu", cpu), ("npu", npu)):
            # --all: the rankings of both forms, none hidden by the model's relevance cut-off
            assert main(["search", query, "--index", "cpu", "--json", "--k", "5", "--all", *args]) == 0
            results[name] = [h["id"] for h in json.loads(capsys.readouterr().out)]
        overlaps.append(len(set(results["cpu"]) & set(results["npu"])))
    assert sum(overlaps) / len(overlaps) >= 4, overlaps


def test_search_can_force_exact_or_approximate(home: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from edge_gcl.index.search import Searcher

    artifacts = make_artifacts(tmp_path / "artifacts")
    photos = make_photos(tmp_path / "photos", 4)
    common = ["--model", str(artifacts), "--json", "-a"]
    assert main(["index", "add", str(tmp_path / "photos"), "--model", str(artifacts)]) == 0
    calls = []
    real = Searcher.search_approximate
    monkeypatch.setattr(Searcher, "search_approximate", lambda self, *a: calls.append(1) or real(self, *a))
    found = {}
    for flag in ("--exact", "--approximate"):
        capsys.readouterr()
        assert main(["search", "--image", str(photos[2]), flag, *common]) == 0
        found[flag] = [h["id"] for h in json.loads(capsys.readouterr().out)]
    assert len(calls) == 1  # only --approximate went through the HNSW (4 vectors: exact by default)
    assert found["--exact"][0] == found["--approximate"][0]
    with pytest.raises(SystemExit):  # argparse: not both
        main(["search", "x", "--exact", "--approximate", *common])

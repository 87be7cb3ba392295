"""export/aihub.py against a fake AI Hub, driven by the real, unmodified qai_hub client.

Every test points the client at ``FakeAIHub`` through a client.ini named by $QAIHUB_CLIENT_INI
(the variable the client itself reads), so uploads, job polling and downloads go over HTTP
exactly as they would against the service. Offline; each test takes well under a few seconds.
"""

from __future__ import annotations

import io
import time
import traceback
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fake_aihub import FakeAIHub, FakeProfile
from onnx import TensorProto, helper, numpy_helper
from qai_hub.public_api_pb2 import QuantizeDtype

from export.aihub import (
    CONFIG_ENV,
    AIHubAuthError,
    AIHubError,
    AIHubJobFailed,
    AIHubNotConfigured,
    QuantizeOptions,
    check_configured,
    compile_and_profile,
    config_path,
    list_devices,
    load_profile,
    summarize_profile,
)

DEVICE = "Samsung Galaxy S24 (Family)"
SPECS = {
    "image": {"pixels": ((1, 16), "float32")},
    "text": {"tokens": ((1, 12), "float32")},
}


def _matmul_tower(path: Path, input_name: str, in_dim: int, *, external: bool = False) -> Path:
    """A one-MatMul ONNX 'tower': (1, in_dim) float32 -> (1, 8) float32 embedding."""
    rng = np.random.default_rng(in_dim)
    weight = numpy_helper.from_array(rng.standard_normal((in_dim, 8)).astype(np.float32), "proj")
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "proj"], ["embedding"])],
        path.stem,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, in_dim])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 8])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    if external:
        onnx.save(
            model, str(path), save_as_external_data=True, location=path.name + ".weights", size_threshold=0
        )
    else:
        onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def towers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    return {
        "image": _matmul_tower(folder / "image.onnx", "pixels", 16),
        "text": _matmul_tower(folder / "text.onnx", "tokens", 12),
    }


@contextmanager
def _aihub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, token: str | None = None, **options: Any
) -> Iterator[FakeAIHub]:
    """A running FakeAIHub with the client configured (via $QAIHUB_CLIENT_INI) to talk to it."""
    with FakeAIHub(lifetime_s=30, **options) as hub:
        monkeypatch.setenv(CONFIG_ENV, str(hub.write_client_ini(tmp_path / "client.ini", token=token)))
        yield hub


def _run(
    towers: dict[str, Path], out_dir: Path, logs: list[str] | None = None, **options: Any
) -> dict[str, Any]:
    options = {
        "device": DEVICE,
        "input_specs": SPECS,
        "out_dir": out_dir,
        "poll_s": 0.01,
        "timeout_s": 20,
        **options,
    }
    return compile_and_profile(towers, log=(logs if logs is not None else []).append, **options)


# -- the whole flow --------------------------------------------------------------------------


def test_upload_compile_profile_download(towers, tmp_path, monkeypatch):
    profiles = {
        "image.onnx": FakeProfile(
            inference_us=1_500,
            peak_memory_bytes=20 * 2**20,
            peak_memory_range_bytes=(3 * 2**20, 21 * 2**20),
            layers={"NPU": 7, "CPU": 2},
        ),
        "text.onnx": FakeProfile(inference_us=730, layers={"NPU": 4, "GPU": 1}),
    }
    out_dir, logs = tmp_path / "out", []
    with _aihub(tmp_path, monkeypatch, profiles=profiles) as hub:
        document = _run(towers, out_dir, logs)

    # The client uploaded both ONNX files byte for byte, through the presigned multipart PUT.
    uploaded = {u.name: u.data for u in hub.uploads.values()}
    assert uploaded == {"image.onnx": towers["image"].read_bytes(), "text.onnx": towers["text"].read_bytes()}
    assert sum(m == "PUT" and p.startswith("/s3/models/") for m, p in hub.requests) == 2

    image, text = document["towers"]["image"], document["towers"]["text"]
    # µs from the profile -> ms; bytes -> MiB; layers counted per compute unit.
    assert image["inference_ms"] == pytest.approx(1.5)
    assert text["inference_ms"] == pytest.approx(0.73)
    assert image["peak_memory_mb"] == pytest.approx(20.0)
    assert image["peak_memory_range_mb"] == pytest.approx([3.0, 21.0])
    assert image["layer_counts"] == {"NPU": 7, "GPU": 0, "CPU": 2}
    assert text["layer_counts"] == {"NPU": 4, "GPU": 1, "CPU": 0}
    assert document["device"] == image["device"] == DEVICE
    assert document["runtime"] == image["runtime"] == "qnn_context_binary"
    assert image["quantize_job_id"] is None

    # Job ids are the server's; compile got the runtime flag and our input specs; profile ran the compiled model.
    for name, summary in document["towers"].items():
        compile_job = hub.jobs[summary["compile_job_id"]]
        profile_job = hub.jobs[summary["profile_job_id"]]
        assert (compile_job.kind, profile_job.kind) == ("compile", "inference")
        assert compile_job.submitted.options == "--target_runtime qnn_context_binary"
        [(input_name, (shape, _))] = SPECS[name].items()
        [sent] = compile_job.submitted.tensor_type_list.types
        assert (sent.name, tuple(sent.tensor_type.shape)) == (input_name, shape)
        assert profile_job.source_model_id == compile_job.target_model_id
        assert profile_job.submitted.is_profiling_on

        # The compiled model is on disk under the tower's name, with the server's bytes.
        model_file = out_dir / summary["model_file"]
        assert summary["model_file"] == f"{name}.bin"
        assert model_file.read_bytes() == hub.models[compile_job.target_model_id].data

    # Jobs were polled through their states, and the summary file reads back equal.
    assert any("OPTIMIZING_MODEL" in line for line in logs)
    assert any("MEASURING_PERFORMANCE" in line for line in logs)
    assert load_profile(out_dir / "aihub_profile.json") == document


def test_precompiled_onnx_with_external_weights(tmp_path, monkeypatch):
    source = _matmul_tower(tmp_path / "image.onnx", "pixels", 16, external=True)
    out_dir = tmp_path / "out"
    with _aihub(tmp_path, monkeypatch) as hub:
        document = _run(
            {"image": source},
            out_dir,
            device="chipset:qualcomm-snapdragon-x-elite",  # a chipset attribute picks a device too
            runtime="precompiled_qnn_onnx",
            profile=False,
        )

    # External weights go up as a zipped folder holding one .onnx and one .data file.
    [upload] = hub.uploads.values()
    assert upload.is_directory
    names = zipfile.ZipFile(io.BytesIO(upload.data)).namelist()
    assert sorted(Path(n).suffix for n in names if not n.endswith("/")) == [".data", ".onnx"]

    # The zipped compiled folder is unpacked to out/image.onnx/.
    summary = document["towers"]["image"]
    assert summary["model_file"] == "image.onnx"
    assert sorted(p.name for p in (out_dir / "image.onnx").iterdir()) == ["model.bin", "model.onnx"]
    assert summary["profile_job_id"] is None and summary["inference_ms"] is None
    assert summary["device"] == "Snapdragon X Elite CRD"
    assert hub.jobs[summary["compile_job_id"]].submitted.options == "--target_runtime precompiled_qnn_onnx"


def test_quantize_then_compile(towers, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    calibration = {
        "image": {"pixels": rng.standard_normal((4, 1, 16)).astype(np.float32)},
        "text": {"tokens": [rng.standard_normal((1, 12)).astype(np.float32) for _ in range(4)]},
    }
    with _aihub(tmp_path, monkeypatch) as hub:
        document = _run(towers, tmp_path / "out", quantize=QuantizeOptions(calibration, activations="int16"))

    assert len([d for d in hub.datasets.values() if d]) == 2  # one calibration set per tower
    for summary in document["towers"].values():
        quantize_job = hub.jobs[summary["quantize_job_id"]]
        compile_job = hub.jobs[summary["compile_job_id"]]
        assert quantize_job.kind == "quantize"
        assert compile_job.source_model_id == quantize_job.target_model_id  # compiled the QDQ model
        assert QuantizeDtype.Name(quantize_job.submitted.activations_dtype) == "QUANTIZE_DTYPE_INT16"


def test_list_devices_and_unknown_device(towers, tmp_path, monkeypatch):
    with _aihub(tmp_path, monkeypatch) as hub:
        assert "Samsung Galaxy S24 (Family)" in list_devices()
        assert list_devices(attributes="chipset:qualcomm-snapdragon-x-elite") == ["Snapdragon X Elite CRD"]
        with pytest.raises(AIHubError, match="'Galaxy S99'"):
            _run(towers, tmp_path / "out", device="Galaxy S99")
    assert not hub.uploads


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "option", "tower"),
    [("compile", "fail_compile", "text"), ("profile", "fail_profile", "image")],
)
def test_failed_job_names_tower_job_and_reason(towers, tmp_path, monkeypatch, kind, option, tower):
    reason = "Failed to compile: unsupported op 'Foo' (layer /proj/MatMul)"
    with _aihub(tmp_path, monkeypatch, **{option: {f"{tower}.onnx": reason}}) as hub:
        with pytest.raises(AIHubJobFailed) as failure:
            _run(towers, tmp_path / "out")

    error = failure.value
    job = hub.jobs[error.job_id]
    assert job.kind == {"compile": "compile", "profile": "inference"}[kind]
    assert hub.source_name(job.source_model_id) == f"{tower}.onnx"
    assert (error.tower, error.kind, error.reason) == (tower, kind, reason)
    assert error.job_id in str(error) and f"'{tower}'" in str(error) and reason in str(error)
    assert not (tmp_path / "out" / "aihub_profile.json").exists()


def test_rejected_token_is_an_auth_error_without_the_token(towers, tmp_path, monkeypatch, capsys):
    secret = "sk-qaihub-NOT-A-REAL-TOKEN-7c41e9"
    started = time.monotonic()
    with _aihub(tmp_path, monkeypatch, token=secret) as hub:
        with pytest.raises(AIHubAuthError) as failure:
            _run(towers, tmp_path / "out")
        with pytest.raises(AIHubAuthError) as via_client:  # 401 seen through the client's own UserError
            list_devices()
    assert time.monotonic() - started < 5  # a 401 is not retried

    assert hub.rejected_tokens >= 1 and not hub.uploads  # refused before anything was uploaded
    assert "401" in str(failure.value) and "qai-hub configure" in str(failure.value)
    captured = capsys.readouterr()
    printed = (
        "".join("".join(traceback.format_exception(e.value)) for e in (failure, via_client))
        + captured.out
        + captured.err
    )
    assert secret not in printed


@pytest.mark.parametrize(
    ("ini", "names"),
    [
        (None, "no client config"),
        (
            "[api]\napi_url = https://example.invalid\nweb_url = https://example.invalid\napi_token =\n",
            "api_token",
        ),
        ("[other]\nkey = value\n", "api_token, api_url, web_url"),
    ],
    ids=["missing-file", "empty-token", "no-api-section"],
)
def test_not_configured_fails_fast(towers, tmp_path, monkeypatch, ini, names):
    path = tmp_path / "client.ini"
    if ini is not None:
        path.write_text(ini)
    monkeypatch.setenv(CONFIG_ENV, str(path))

    started = time.monotonic()
    with pytest.raises(AIHubNotConfigured) as failure:
        check_configured()
    with pytest.raises(AIHubNotConfigured):
        _run(towers, tmp_path / "out")
    assert time.monotonic() - started < 0.5

    message = str(failure.value)
    assert str(path) in message and names in message and "qai-hub configure --api_token" in message


SECRET = "sk-qaihub-LEAK-CHECK-5d1f0a9e"
_URLS = "api_url = https://example.invalid\nweb_url = https://example.invalid\n"


@pytest.mark.parametrize(
    ("ini", "line"),
    [
        (f"api_token = {SECRET}\n{_URLS}", 1),  # no [api] header
        (f"{SECRET}\n[api]\n{_URLS}api_token =\n", 1),  # the token above the header
        (f"[api]\n{_URLS}api_token =\n{SECRET}\n", 5),  # the token on a line of its own
        (f"[api]\n{_URLS}api_token =\n    {SECRET}\n", 4),  # ... indented: a 2-line value
        (f"[api]\n{_URLS}api_token = {SECRET[:9]}%{SECRET[9:]}\n", 4),  # a '%' the client rejects
        (f"[api]\n{_URLS}api_token = {SECRET}\napi_token = {SECRET}\n", 5),
    ],
    ids=["no-header", "token-above-header", "token-own-line", "token-continuation", "percent", "twice"],
)
def test_malformed_config_names_file_and_line_never_the_token(tmp_path, monkeypatch, capfd, ini, line):
    from export import compile as compile_cli

    path = tmp_path / "client.ini"
    path.write_text(ini)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    with pytest.raises(AIHubNotConfigured) as failure:
        check_configured()
    error = failure.value
    assert f"{path} (from ${CONFIG_ENV}), line {line}:" in str(error)
    assert error.__context__ is None and error.__cause__ is None  # no parser error rides along
    assert SECRET not in "".join(traceback.format_exception(error))
    for piece in (SECRET[:9], SECRET[9:]):
        assert piece not in str(error)

    assert compile_cli.main(["--target", "snapdragon", "--via", "aihub"]) == 2  # before any work
    printed = capfd.readouterr()
    assert f"line {line}" in printed.err
    assert SECRET[9:] not in printed.out + printed.err


def test_unreachable_hub_error_is_redacted_and_unchained(towers, tmp_path):
    """requests quotes a malformed Authorization header (token included); the AIHubError must not."""
    import qai_hub as hub
    from qai_hub.client import ClientConfig

    with FakeAIHub(lifetime_s=30) as server:
        config = ClientConfig(api_token=f"{SECRET}\n", api_url=server.url, web_url=server.url)
        with pytest.raises(AIHubError) as failure:
            _run(towers, tmp_path / "out", client=hub.Client(config=config))
    assert SECRET not in "".join(traceback.format_exception(failure.value))  # chained causes included
    assert "could not reach AI Hub" in str(failure.value) and "InvalidHeader" in str(failure.value)


def test_config_path_is_the_clients(tmp_path, monkeypatch):
    from qai_hub.api_utils import get_config_path

    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "alt.ini"))
    assert config_path() == Path(get_config_path()) == tmp_path / "alt.ini"
    monkeypatch.delenv(CONFIG_ENV)
    assert config_path() == Path(get_config_path())


def test_summarize_profile_units():
    profile = {
        "execution_summary": {
            "estimated_inference_time": 2_500,  # µs
            "estimated_inference_peak_memory": 3 * 2**20,  # bytes
            "inference_memory_peak_range": (2**20, 4 * 2**20),
        },
        "execution_detail": [{"compute_unit": "NPU"}] * 3 + [{"compute_unit": "CPU"}],
    }
    assert summarize_profile(profile) == {
        "inference_ms": 2.5,
        "peak_memory_mb": 3.0,
        "peak_memory_range_mb": [1.0, 4.0],
        "layer_counts": {"NPU": 3, "GPU": 0, "CPU": 1},
    }


@pytest.mark.parametrize("status", [400, 403, 404])  # the codes whose body the client quotes
def test_an_error_body_that_echoes_the_request_never_shows_the_token(towers, tmp_path, monkeypatch, status):
    """Issue 33: a non-401 error whose body quotes the request headers was re-raised as it came, token included."""
    with _aihub(tmp_path, monkeypatch, echo_status=status) as hub:  # the token is right; the answer quotes it
        with pytest.raises(AIHubError) as failure:
            _run(towers, tmp_path / "out")
        with pytest.raises(AIHubError) as listing:
            list_devices()
    for error in (failure, listing):
        printed = "".join(traceback.format_exception(error.value))
        assert hub.token not in printed and "Authorization" in printed and "token <token>" in printed
        assert error.value.__cause__ is None and error.value.__suppress_context__  # the raw error is not shown
    assert f"(HTTP {status})" in str(failure.value)

"""A small fake Qualcomm AI Hub for offline tests.

It speaks the REST + protobuf API that the real, unmodified ``qai_hub`` client (0.56) calls, so a
test exercises the client end to end: model upload (create -> presigned multipart PUT -> complete),
calibration-dataset upload (create -> presigned POST -> confirm), compile / quantize / profile
(inference) jobs that move through their states as they are polled, compiled-model download, and
profile results. Presigned URLs point back at this server under ``/s3/...``.

Point the client at it through the client's own config file::

    with FakeAIHub() as hub:
        ini = hub.write_client_ini(tmp_path / "client.ini")      # api_url/web_url = hub.url
        monkeypatch.setenv("QAIHUB_CLIENT_INI", str(ini))         # the variable qai_hub reads
        ...                                                       # code under test
        hub.uploads                                               # what the client sent

Behaviour a test can set (all keyed by the *source* model's upload name, e.g. ``"text.onnx"``,
which is traced back through quantize/compile jobs to the file the user uploaded):
``fail_compile`` / ``fail_quantize`` / ``fail_profile`` map a name to the failure reason the job
reports; ``profiles`` maps a name to the ``FakeProfile`` its profile job returns. ``token`` is the
only API token accepted; any other gets HTTP 401 like the real service.

The server listens on 127.0.0.1 on an ephemeral port, in a daemon thread, and shuts itself down
after ``lifetime_s`` even if a test forgets to leave the ``with`` block.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shlex
import threading
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.protobuf.timestamp_pb2 import Timestamp
from qai_hub import public_api_pb2 as pb

API_PREFIX = "/api/v1/"
DEFAULT_TOKEN = "fake-aihub-token-0123456789abcdef"

DEFAULT_DEVICES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Samsung Galaxy S24 (Family)",
        "14",
        (
            "chipset:qualcomm-snapdragon-8gen3",
            "os:android",
            "framework:qnn",
            "framework:onnx",
            "framework:tflite",
            "hexagon:v75",
            "format:phone",
            "vendor:samsung",
        ),
    ),
    (
        "Snapdragon X Elite CRD",
        "11",
        (
            "chipset:qualcomm-snapdragon-x-elite",
            "os:windows",
            "framework:qnn",
            "framework:onnx",
            "hexagon:v73",
            "format:compute",
        ),
    ),
    (
        "QCS8550 (Proxy)",
        "12",
        (
            "chipset:qualcomm-qcs8550-proxy",
            "os:android",
            "framework:qnn",
            "framework:onnx",
            "framework:tflite",
            "hexagon:v73",
            "format:iot",
        ),
    ),
)

# Compiled-model file suffix and AI Hub model type per --target_runtime.
_TARGETS: dict[str, tuple[str, int]] = {
    "qnn_context_binary": (".bin", pb.MODEL_TYPE_QNN_CONTEXT_BINARY),
    "precompiled_qnn_onnx": (".onnx.zip", pb.MODEL_TYPE_ONNX),
    "onnx": (".onnx", pb.MODEL_TYPE_ONNX),
    "tflite": (".tflite", pb.MODEL_TYPE_TFLITE),
    "qnn_dlc": (".dlc", pb.MODEL_TYPE_QNN_DLC),
}

_DONE, _FAILED = pb.JOB_STATE_DONE, pb.JOB_STATE_FAILED
_STATES = {
    "compile": (pb.JOB_STATE_CREATED, pb.JOB_STATE_OPTIMIZING_MODEL),
    "quantize": (pb.JOB_STATE_CREATED, pb.JOB_STATE_QUANTIZING_MODEL),
    "inference": (pb.JOB_STATE_CREATED, pb.JOB_STATE_PROVISIONING_DEVICE, pb.JOB_STATE_MEASURING_PERFORMANCE),
}


@dataclass(frozen=True)
class FakeProfile:
    """What a profile job reports: times in microseconds, memory in bytes, layers per compute unit."""

    inference_us: int = 1_234
    peak_memory_bytes: int = 12 * 2**20
    peak_memory_range_bytes: tuple[int, int] = (2 * 2**20, 15 * 2**20)
    layers: Mapping[str, int] = field(default_factory=lambda: {"NPU": 5, "CPU": 1})


@dataclass
class Upload:
    """A model as the server holds it (uploaded by the client, or produced by a job)."""

    model_id: str
    name: str
    model_type: int
    is_directory: bool
    created: Timestamp
    data: bytes | None = None  # None until the upload completes
    producer_id: str | None = None  # job that produced it
    parts: dict[int, bytes] = field(default_factory=dict)


@dataclass
class FakeJob:
    job_id: str
    kind: str  # "compile" | "quantize" | "inference"
    submitted: Any  # the job-specific protobuf the client posted
    source_model_id: str
    created: Timestamp
    failure_reason: str | None = None
    target_model_id: str | None = None
    runtime: str | None = None
    profile: FakeProfile | None = None
    polls: int = 0

    @property
    def state(self) -> int:
        """The state the last poll reported."""
        states = _STATES[self.kind]
        if self.polls <= len(states):
            return states[max(self.polls - 1, 0)]
        return _FAILED if self.failure_reason else _DONE


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/x-protobuf"
    headers: dict[str, str] = field(default_factory=dict)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.reply = _Reply(status, json.dumps({"detail": message}).encode(), "application/json")


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def _pb_reply(message: Any) -> _Reply:
    return _Reply(200, message.SerializeToString())


class FakeAIHub:
    """Fake AI Hub server; use as a context manager (``with FakeAIHub() as hub: ...``)."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        devices: tuple[tuple[str, str, tuple[str, ...]], ...] = DEFAULT_DEVICES,
        fail_compile: Mapping[str, str] | None = None,
        fail_quantize: Mapping[str, str] | None = None,
        fail_profile: Mapping[str, str] | None = None,
        profiles: Mapping[str, FakeProfile] | None = None,
        max_part_size: int = 5 * 2**20,
        lifetime_s: float = 60.0,
        echo_status: int | None = None,
    ):
        self.token = token
        self.echo_status = echo_status  # answer every API call with this error, its body echoing the headers
        self.devices = devices
        self.fail_compile = dict(fail_compile or {})
        self.fail_quantize = dict(fail_quantize or {})
        self.fail_profile = dict(fail_profile or {})
        self.profiles = dict(profiles or {})
        self.max_part_size = max_part_size
        self.lifetime_s = lifetime_s

        self.models: dict[str, Upload] = {}
        self.datasets: dict[str, bytes | None] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), never headers
        self.rejected_tokens = 0  # requests answered with 401

        self._lock = threading.Lock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Timer | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FakeAIHub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._watchdog = threading.Timer(self.lifetime_s, self.stop)
        self._watchdog.daemon = True
        self._watchdog.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.cancel()

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeAIHub is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def write_client_ini(self, path: Path, *, token: str | None = None) -> Path:
        """Write a qai_hub client.ini pointing at this server (``token`` defaults to the accepted one)."""
        path.write_text(
            "[api]\n"
            f"api_token = {self.token if token is None else token}\n"
            f"api_url = {self.url}\n"
            f"web_url = {self.url}\n"
            "verbose = False\n"
        )
        return path

    # -- what tests inspect ------------------------------------------------------------------

    @property
    def uploads(self) -> dict[str, Upload]:
        """Models the client uploaded (not the ones jobs produced), by model id."""
        return {m: u for m, u in self.models.items() if u.producer_id is None and u.data is not None}

    def jobs_of(self, kind: str) -> list[FakeJob]:
        return [j for j in self.jobs.values() if j.kind == kind]

    def source_name(self, model_id: str) -> str:
        """Upload name of the file a model ultimately came from (through quantize/compile jobs)."""
        model = self.models[model_id]
        while model.producer_id is not None:
            model = self.models[self.jobs[model.producer_id].source_model_id]
        return model.name

    # -- request handling --------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter:08x}"

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        with self._lock:
            self.requests.append((method, path))
            try:
                if path.startswith("/s3/"):
                    return self._storage(method, path.removeprefix("/s3/").split("/"), query, body)
                if not path.startswith(API_PREFIX):
                    raise _HTTPError(404, f"no route for {path}")
                if headers.get("Authorization") != f"token {self.token}":
                    self.rejected_tokens += 1
                    raise _HTTPError(401, "Invalid token.")
                if self.echo_status is not None:  # a misbehaving proxy or server: the token comes back in the body
                    raise _HTTPError(self.echo_status, f"request refused; it carried {json.dumps(dict(headers))}")
                route = [p for p in path.removeprefix(API_PREFIX).split("/") if p]
                return self._api(method, route, query, body)
            except _HTTPError as e:
                return e.reply

    def _api(self, method: str, route: list[str], query: dict[str, list[str]], body: bytes) -> _Reply:
        match method, route:
            case "GET", ["users", "auth", "user"]:
                return _pb_reply(pb.User(id=1, email="tester@example.com", first_name="Test"))
            case "GET", ["devices"]:
                return _pb_reply(self._device_list(query))
            case "POST", ["models"]:
                return self._create_model(pb.Model.FromString(body))
            case "GET", ["models", model_id]:
                return _pb_reply(self._model_pb(self._model(model_id)))
            case "GET", ["models", model_id, "multipart_upload"]:
                return self._upload_urls(model_id, int(query.get("file_size", ["0"])[0]))
            case "POST", ["models", model_id, "multipart_upload"]:
                return self._complete_upload(model_id, pb.FileMultipartUploadComplete.FromString(body))
            case "GET", ["models", model_id, "download"]:
                return self._download_url(model_id)
            case "POST", ["datasets"]:
                return self._create_dataset(pb.Dataset.FromString(body))
            case "GET", ["datasets", dataset_id, "upload_url"]:
                self._dataset(dataset_id)
                url = pb.FileUploadURL(url=f"{self.url}/s3/datasets/{dataset_id}", file_field_name="file")
                url.fields["key"] = f"datasets/{dataset_id}.h5"
                return _pb_reply(pb.FileUploadResponse(url=url))
            case "PATCH", ["datasets", dataset_id]:
                if self._dataset(dataset_id) is None:
                    raise _HTTPError(400, f"dataset {dataset_id} has no uploaded file")
                return _pb_reply(pb.CreateUpdateResponse(id=dataset_id, creation_time=_now()))
            case "POST", ["jobs"]:
                return self._create_job(pb.Job.FromString(body))
            case "GET", ["jobs", job_id]:
                job = self._job(job_id)
                job.polls += 1
                return _pb_reply(self._job_pb(job))
            case "GET", ["jobs", job_id, "result"]:
                return _pb_reply(self._job_result(self._job(job_id)))
            case "GET", ["jobs", job_id, "download_compiled_model"]:
                target = self._job(job_id).target_model_id
                if target is None:
                    raise _HTTPError(404, f"job {job_id} has no compiled model")
                return self._download_url(target)
        raise _HTTPError(404, f"no route for {method} /api/v1/{'/'.join(route)}/")

    def _storage(self, method: str, route: list[str], query: dict[str, list[str]], body: bytes) -> _Reply:
        """The presigned-URL side (S3 in the real service); no API token involved."""
        match method, route:
            case "PUT", ["models", model_id]:
                model = self._model(model_id)
                if query.get("uploadId") != [f"upload-{model_id}"]:
                    raise _HTTPError(403, "bad uploadId")
                model.parts[int(query["partNumber"][0])] = body
                return _Reply(200, b"", "application/xml", {"ETag": _etag(body)})
            case "POST", ["datasets", dataset_id]:
                self._dataset(dataset_id)
                self.datasets[dataset_id] = body  # the multipart form, h5 file inside
                return _Reply(204, b"", "application/xml")
            case "GET", ["download", model_id]:
                data = self._model(model_id).data
                if data is None:
                    raise _HTTPError(404, "NoSuchKey")
                return _Reply(200, data, "application/octet-stream")
        raise _HTTPError(404, f"no storage route for {method} /s3/{'/'.join(route)}")

    # -- lookups -----------------------------------------------------------------------------

    def _model(self, model_id: str) -> Upload:
        if model_id not in self.models:
            raise _HTTPError(404, f"Model ID '{model_id}' could not be found.")
        return self.models[model_id]

    def _job(self, job_id: str) -> FakeJob:
        if job_id not in self.jobs:
            raise _HTTPError(404, f"Job ID '{job_id}' could not be found.")
        return self.jobs[job_id]

    def _dataset(self, dataset_id: str) -> bytes | None:
        if dataset_id not in self.datasets:
            raise _HTTPError(404, f"Dataset ID '{dataset_id}' could not be found.")
        return self.datasets[dataset_id]

    # -- devices, models, datasets -----------------------------------------------------------

    def _device_list(self, query: dict[str, list[str]]) -> pb.DeviceList:
        name = query.get("name", [""])[0]
        wanted = set(query.get("attributes", []))
        found = [
            pb.Device(name=n, os=os, attributes=list(attrs))
            for n, os, attrs in self.devices
            if (not name or n == name) and wanted <= set(attrs)
        ]
        if query.get("select", ["False"])[0].lower() == "true":
            found = found[:1]
        return pb.DeviceList(devices=found, total_query_count=len(found))

    def _create_model(self, model_pb: pb.Model) -> _Reply:
        model = Upload(
            model_id=self._new_id("m"),
            name=model_pb.name,
            model_type=model_pb.model_type,
            is_directory=model_pb.is_directory,
            created=_now(),
        )
        self.models[model.model_id] = model
        return _pb_reply(pb.CreateUpdateResponse(id=model.model_id, creation_time=model.created))

    def _upload_urls(self, model_id: str, file_size: int) -> _Reply:
        self._model(model_id)
        n_parts = max(1, math.ceil(file_size / self.max_part_size))
        urls = [
            f"{self.url}/s3/models/{model_id}?partNumber={i + 1}&uploadId=upload-{model_id}"
            for i in range(n_parts)
        ]
        multipart = pb.FileMultipartUploadURL(
            urls=urls, upload_id=f"upload-{model_id}", max_part_size=self.max_part_size
        )
        return _pb_reply(pb.FileUploadResponse(multipart_url=multipart))

    def _complete_upload(self, model_id: str, done: pb.FileMultipartUploadComplete) -> _Reply:
        model = self._model(model_id)
        numbers = sorted(model.parts)
        if done.upload_id != f"upload-{model_id}" or numbers != list(range(1, len(numbers) + 1)):
            raise _HTTPError(400, f"incomplete multipart upload for {model_id}")
        if list(done.etags) != [_etag(model.parts[n]) for n in numbers]:
            raise _HTTPError(400, f"ETag mismatch for {model_id}")
        model.data = b"".join(model.parts[n] for n in numbers)
        model.parts.clear()
        return _pb_reply(pb.CreateUpdateResponse(id=model_id, creation_time=model.created))

    def _download_url(self, model_id: str) -> _Reply:
        model = self._model(model_id)
        producer = self.jobs.get(model.producer_id or "")
        if model.data is None or (producer is not None and producer.state != _DONE):
            raise _HTTPError(400, f"model {model_id} is not available for download")
        url = pb.FileDownloadURL(url=f"{self.url}/s3/download/{model_id}", filename=model.name)
        return _pb_reply(pb.FileDownloadResponse(url=url))

    def _create_dataset(self, dataset_pb: pb.Dataset) -> _Reply:
        dataset_id = self._new_id("d")
        self.datasets[dataset_id] = None
        expires = Timestamp(seconds=int(time.time()) + 30 * 24 * 3600)
        return _pb_reply(
            pb.CreateUpdateResponse(id=dataset_id, creation_time=_now(), expiration_time=expires)
        )

    def _model_pb(self, model: Upload) -> pb.Model:
        model_pb = pb.Model(
            model_id=model.model_id,
            name=model.name,
            creation_time=model.created,
            model_type=model.model_type,
            file_upload_complete=model.data is not None,
            is_directory=model.is_directory,
        )
        if model.producer_id is not None:
            model_pb.producer_id = model.producer_id
        return model_pb

    # -- jobs --------------------------------------------------------------------------------

    def _create_job(self, job_pb: pb.Job) -> _Reply:
        kind = job_pb.WhichOneof("job")
        if kind == "compile_job":
            job = self._new_compile_job(job_pb.compile_job)
        elif kind == "quantize_job":
            job = self._new_quantize_job(job_pb.quantize_job)
        elif kind == "inference_job":
            job = self._new_inference_job(job_pb.inference_job)
        else:
            raise _HTTPError(400, f"unsupported job type {kind}")
        self.jobs[job.job_id] = job
        return _pb_reply(pb.CreateUpdateResponse(id=job.job_id, creation_time=job.created))

    def _uploaded_source(self, model_id: str) -> Upload:
        model = self._model(model_id)
        if model.data is None:
            raise _HTTPError(400, f"model {model_id} has not finished uploading")
        return model

    def _new_compile_job(self, compile_pb: pb.CompileJob) -> FakeJob:
        source = self._uploaded_source(compile_pb.model.model_id)
        runtime = _option(compile_pb.options, "--target_runtime") or "tflite"
        if runtime not in _TARGETS:
            raise _HTTPError(400, f"--target_runtime {runtime} is not supported")
        job = FakeJob(self._new_id("j"), "compile", compile_pb, source.model_id, _now(), runtime=runtime)
        job.failure_reason = self.fail_compile.get(self.source_name(source.model_id))
        suffix, model_type = _TARGETS[runtime]
        target_id = self._new_id("m")
        stem = f"job_{job.job_id}_optimized_{suffix.strip('.').split('.')[0]}_{target_id}"
        self.models[target_id] = Upload(
            model_id=target_id,
            name=stem + suffix,
            model_type=model_type,
            is_directory=suffix.endswith(".zip"),
            created=_now(),
            data=_compiled_bytes(runtime, source.data or b"", stem),
            producer_id=job.job_id,
        )
        job.target_model_id = target_id
        return job

    def _new_quantize_job(self, quantize_pb: pb.QuantizeJob) -> FakeJob:
        source = self._uploaded_source(quantize_pb.model.model_id)
        if self._dataset(quantize_pb.calibration_dataset.dataset_id) is None:
            raise _HTTPError(400, "calibration dataset has no uploaded file")
        job = FakeJob(self._new_id("j"), "quantize", quantize_pb, source.model_id, _now())
        job.failure_reason = self.fail_quantize.get(self.source_name(source.model_id))
        target_id = self._new_id("m")
        self.models[target_id] = Upload(
            model_id=target_id,
            name=f"job_{job.job_id}_quantized_onnx_{target_id}.onnx",
            model_type=pb.MODEL_TYPE_ONNX,
            is_directory=False,
            created=_now(),
            data=source.data,  # pretend QDQ model
            producer_id=job.job_id,
        )
        job.target_model_id = target_id
        return job

    def _new_inference_job(self, inference_pb: pb.InferenceJob) -> FakeJob:
        model = self._model(inference_pb.model.model_id)
        producer = self.jobs.get(model.producer_id or "")
        if producer is not None and producer.state != _DONE:
            raise _HTTPError(400, f"model {model.model_id} is not ready (job {producer.job_id})")
        job = FakeJob(self._new_id("j"), "inference", inference_pb, model.model_id, _now())
        name = self.source_name(model.model_id)
        job.failure_reason = self.fail_profile.get(name)
        job.profile = self.profiles.get(name, FakeProfile())
        return job

    def _job_pb(self, job: FakeJob) -> pb.Job:
        if job.kind == "compile":
            compile_pb = pb.CompileJob()
            compile_pb.CopyFrom(job.submitted)
            compile_pb.compile_job_id = job.job_id
            compile_pb.model.CopyFrom(self._model_pb(self.models[job.source_model_id]))
            compile_pb.device.CopyFrom(job.submitted.devices.devices[0])
            compile_pb.target_model.CopyFrom(self._model_pb(self.models[job.target_model_id or ""]))
            compile_pb.target_tensor_type_list.CopyFrom(job.submitted.tensor_type_list)
            _stamp(compile_pb, job)
            return pb.Job(compile_job=compile_pb, hub_version="fake-aihub")
        if job.kind == "quantize":
            quantize_pb = pb.QuantizeJob()
            quantize_pb.CopyFrom(job.submitted)
            quantize_pb.quantize_job_id = job.job_id
            quantize_pb.model.CopyFrom(self._model_pb(self.models[job.source_model_id]))
            quantize_pb.target_model.CopyFrom(self._model_pb(self.models[job.target_model_id or ""]))
            _stamp(quantize_pb, job)
            return pb.Job(quantize_job=quantize_pb, hub_version="fake-aihub")
        inference_pb = pb.InferenceJob()
        inference_pb.CopyFrom(job.submitted)
        inference_pb.inference_job_id = job.job_id
        inference_pb.model.CopyFrom(self._model_pb(self.models[job.source_model_id]))
        _stamp(inference_pb, job)
        if job.state == _DONE and job.profile is not None:
            inference_pb.execution_time = job.profile.inference_us
            lower, upper = job.profile.peak_memory_range_bytes
            inference_pb.execution_peak_memory.CopyFrom(pb.Range(lower=lower, upper=upper))
            producer = self.jobs.get(self.models[job.source_model_id].producer_id or "")
            if producer is not None and producer.kind == "compile":
                inference_pb.tensor_type_list.CopyFrom(producer.submitted.tensor_type_list)
        return pb.Job(inference_job=inference_pb, hub_version="fake-aihub")

    def _job_result(self, job: FakeJob) -> pb.JobResult:
        if job.state not in (_DONE, _FAILED):
            raise _HTTPError(404, f"Job ID '{job.job_id}' has no results yet.")
        if job.kind == "compile":
            return pb.JobResult(compile_job_result=pb.CompileJobResult(compile_job_id=job.job_id))
        if job.kind == "quantize":
            return pb.JobResult(quantize_job_result=pb.QuantizeJobResult(quantize_job_id=job.job_id))
        result = pb.InferenceJobResult(inference_job_id=job.job_id)
        if job.state == _DONE and job.profile is not None:
            result.detail.CopyFrom(profile_detail(job.profile))
        return pb.JobResult(inference_job_result=result)


def profile_detail(profile: FakeProfile) -> pb.ProfileDetail:
    """The ProfileDetail protobuf a profile job returns (format 1.8, as AI Hub sends today)."""
    detail = pb.ProfileDetail(
        major_version=1,
        minor_version=8,
        execution_time=profile.inference_us,
        after_execution_peak_memory=profile.peak_memory_bytes,
        cold_load_time=250_000,
        after_cold_load_peak_memory=profile.peak_memory_bytes,
        warm_load_time=40_000,
        after_warm_load_peak_memory=profile.peak_memory_bytes // 2,
    )
    lower, upper = profile.peak_memory_range_bytes
    detail.execution_memory.peak.lower, detail.execution_memory.peak.upper = lower, upper
    detail.execution_memory.increase.lower, detail.execution_memory.increase.upper = 0, upper - lower
    detail.cold_load_memory.peak.lower, detail.cold_load_memory.peak.upper = lower, upper
    detail.all_execution_times.extend([profile.inference_us] * 3)
    detail.all_cold_load_times.append(250_000)
    detail.all_warm_load_times.append(40_000)
    index = 0
    for unit, count in profile.layers.items():
        for _ in range(count):
            index += 1
            detail.layer_details.append(
                pb.LayerDetail(
                    name=f"/layer_{index}/MatMul",
                    compute_unit=pb.ComputeUnit.Value(f"COMPUTE_UNIT_{unit}"),
                    layer_type_name="MatMul",
                    id=f":0:{index}",
                    delegate_name="QNN" if unit in ("NPU", "GPU") else "CPU",
                    execution_time=max(profile.inference_us // max(sum(profile.layers.values()), 1), 1),
                )
            )
    return detail


def _stamp(job_pb: Any, job: FakeJob) -> None:
    job_pb.job_state = job.state
    job_pb.creation_time.CopyFrom(job.created)
    if job.state == _FAILED and job.failure_reason:
        job_pb.failure_reason = job.failure_reason


def _option(options: str, flag: str) -> str | None:
    words = shlex.split(options)
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def _compiled_bytes(runtime: str, source: bytes, stem: str) -> bytes:
    """Stand-in for a compiled model: recognisable bytes, a zip folder for precompiled ONNX."""
    digest = hashlib.sha256(source).hexdigest().encode()
    if runtime == "onnx":
        return source
    if runtime == "precompiled_qnn_onnx":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"{stem}.onnx/", "")
            archive.writestr(f"{stem}.onnx/model.onnx", source)
            archive.writestr(f"{stem}.onnx/model.bin", b"FAKE-QNN-CONTEXT " + digest)
        return buffer.getvalue()
    return b"FAKE-" + runtime.upper().encode() + b" " + digest


def _make_handler(hub: FakeAIHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            reply = hub.handle(self.command, self.path, dict(self.headers.items()), self._body())
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    return Handler

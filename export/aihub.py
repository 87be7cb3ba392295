"""Qualcomm AI Hub backend: compile and profile the exported towers on a real Snapdragon device.

This is the only module that imports ``qai_hub`` (lazily: importing this module costs nothing and
needs no account). The compile CLI uses:

- ``check_configured()``: fails at once, with no network call, when no API token is set up.
- ``list_devices()``: names of the devices a job can target.
- ``compile_and_profile(...)``: the recipe below, for every tower; returns and writes
  ``out_dir / "aihub_profile.json"`` (read it back with ``load_profile``).

Recipe. Each step is submitted for every tower before waiting on any, so the towers' jobs run on
AI Hub side by side:

1. (optional, ``quantize=``) upload calibration data and submit a quantize job; its QDQ ONNX model
   replaces the float model.
2. upload the ONNX model (one file; or a folder with the ``.onnx`` and one ``.data`` file when the
   weights are stored externally) and submit a compile job with ``--target_runtime <runtime>``.
3. wait for the compile job; download the compiled model into ``out_dir``.
4. submit a profile job (an inference job with profiling on) for the compiled model on the same
   device; wait.
5. summarize each profile: inference time (ms), peak memory (MiB), layers per compute unit.

Units: AI Hub reports times in microseconds and memory in bytes; the summary uses ``*_ms`` and
``*_mb`` (MiB, bytes / 2**20, the unit AI Hub's own pages call "MB").
"""

from __future__ import annotations

import configparser
import inspect
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import qai_hub as hub

SUPPORTED_RUNTIMES = ("qnn_context_binary", "precompiled_qnn_onnx", "onnx")
COMPUTE_UNITS = ("NPU", "GPU", "CPU")
PROFILE_FILENAME = "aihub_profile.json"
PROFILE_FORMAT = "edge-gcl/aihub-profile"
PROFILE_FORMAT_VERSION = 1

# Where the qai_hub client looks for its config (mirrors qai_hub.api_utils.get_config_path()).
CONFIG_ENV = "QAIHUB_CLIENT_INI"
DEFAULT_CONFIG = "~/.qai_hub/client.ini"
_CONFIGURE_CMD = "`qai-hub configure --api_token <TOKEN>`"
_CONFIGURE_HINT = f"run {_CONFIGURE_CMD} (token: AI Hub web page > Account > Settings)"

# input name -> (shape, dtype), e.g. {"image": ((1, 3, 224, 224), "float32")}
InputSpec = dict[str, tuple[tuple[int, ...], str]]
Log = Callable[[str], Any]


class AIHubError(RuntimeError):
    """Base class for AI Hub failures this module reports."""


class AIHubNotConfigured(AIHubError):
    """No usable client config (API token) was found; nothing was sent."""


class AIHubAuthError(AIHubError):
    """AI Hub rejected the API token (HTTP 401). The message never contains the token."""


class AIHubJobFailed(AIHubError):
    """A quantize, compile or profile job ended in FAILED; carries the server's reason."""

    def __init__(self, *, tower: str, kind: str, job_id: str, reason: str, url: str | None = None):
        where = f" ({url})" if url else ""
        super().__init__(f"AI Hub {kind} job {job_id} for tower '{tower}' failed: {reason}{where}")
        self.tower, self.kind, self.job_id, self.reason, self.url = tower, kind, job_id, reason, url


class AIHubTimeout(AIHubJobFailed):
    """A job did not finish within ``timeout_s``; it may still be running on AI Hub."""


@dataclass(frozen=True)
class QuantizeOptions:
    """Ask AI Hub to quantize each tower (post-training, QDQ ONNX) before compiling it.

    ``calibration[tower][input_name]`` is a list of samples, each shaped like that input's spec
    (e.g. ``(1, 3, 224, 224)``), or one array stacking them on a new leading axis.
    """

    calibration: Mapping[str, Mapping[str, Sequence[np.ndarray] | np.ndarray]]
    weights: str = "int8"  # "int8" | "int4"
    activations: str = "int8"  # "int8" | "int16"


@dataclass
class _Tower:
    """One tower's progress through the recipe."""

    name: str
    source: Path
    input_spec: InputSpec
    model: Any = None  # what step 2 compiles: an upload path (str) or a qai_hub.Model
    quantize_job: Any = None
    compile_job: Any = None
    profile_job: Any = None
    model_file: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


# -- configuration ---------------------------------------------------------------------------


def config_path() -> Path:
    """The client.ini the qai_hub client will read: ``$QAIHUB_CLIENT_INI`` or ``~/.qai_hub/client.ini``."""
    return Path(os.path.expanduser(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)))


def check_configured() -> None:
    """Raise ``AIHubNotConfigured`` unless the client config holds an API token (no network call).

    A config the qai_hub client would misread is reported by file and line number only, never by
    its content: the line at fault may be the token itself (a ``client.ini`` without its ``[api]``
    header, or a token on a line of its own).
    """
    path = config_path()
    where = f"{path} (from ${CONFIG_ENV})" if os.environ.get(CONFIG_ENV) else str(path)
    if not path.is_file():
        raise AIHubNotConfigured(
            f"AI Hub is not configured: no client config at {where}. To use AI Hub, {_CONFIGURE_HINT}, "
            f"or point ${CONFIG_ENV} at a client.ini with an [api] section."
        )
    # Raised outside any `except`: no parser error (its message quotes the line) is chained.
    problem = _config_problem(path)
    if problem is not None:
        line, what = problem
        raise AIHubNotConfigured(
            f"AI Hub client config {where}, line {line}: {what} (the line is not shown: it may hold the API "
            f"token). Fix that line, or {_CONFIGURE_HINT}."
        )
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    api = parser["api"] if parser.has_section("api") else {}
    missing = [key for key in ("api_token", "api_url", "web_url") if not str(api.get(key, "")).strip()]
    if missing:
        raise AIHubNotConfigured(
            f"AI Hub client config {where} has no {', '.join(missing)} in its [api] section; {_CONFIGURE_HINT}."
        )


def _config_problem(path: Path) -> tuple[int, str] | None:
    """(line number, what is wrong) for a config the qai_hub client would misread, else None.

    The description never quotes the file: configparser's own messages quote the offending line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        return path.read_bytes()[: e.start].count(b"\n") + 1, "not UTF-8 text"
    parser = configparser.ConfigParser()  # as the qai_hub client reads it (with % interpolation)
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError as e:
        return e.lineno, "a line before any [section] header (a client.ini starts with [api])"
    except configparser.ParsingError as e:
        return e.errors[0][0], "a line that is neither a [section] header nor a `key = value` line"
    except configparser.DuplicateSectionError as e:
        return e.lineno, f"a second [{e.section}] section"
    except configparser.DuplicateOptionError as e:
        return e.lineno, f"a second `{e.option}` in [{e.section}]"
    except configparser.Error as e:
        return getattr(e, "lineno", None) or 1, f"not a valid ini file ({type(e).__name__})"
    if not parser.has_section("api"):
        return None
    for key in parser["api"]:
        try:
            value = parser.get("api", key)
        except configparser.InterpolationError:
            return _line_of(text, "api", key), f"`{key}` holds a '%' the qai_hub client cannot read"
        if key == "api_token" and any(ch.isspace() or not ch.isprintable() for ch in value):
            return _line_of(text, "api", key), "`api_token` spans several lines or holds spaces"
    return None


def _line_of(text: str, section: str, key: str) -> int:
    """1-based line of ``key``'s ``key = ...`` line inside ``[section]`` (1 if not found)."""
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1].strip()
        elif current == section and not line[:1].isspace():
            name = stripped.split("=", 1)[0].split(":", 1)[0].strip()
            if name.lower() == key:
                return number
    return 1


def _client(client: hub.Client | None) -> hub.Client:
    """A fresh client for the current config (the qai_hub module-level client caches its first one)."""
    if client is not None:
        return client
    check_configured()
    import qai_hub as hub

    return hub.Client()


def _config_source(client: hub.Client | None) -> str:
    return "the ClientConfig passed in" if client is not None else str(config_path())


# -- error translation -----------------------------------------------------------------------


@contextmanager
def _hub_errors(client: hub.Client, source: str) -> Iterator[None]:
    """Turn the client's authentication failures into ``AIHubAuthError`` (the token stays out)."""
    import qai_hub as hub
    import requests
    from qai_hub.public_rest_api import APIException

    token = client.config.api_token
    try:
        yield
    except APIException as e:
        if e.status_code == 401:
            raise AIHubAuthError(_auth_message(client, source)) from None
        # Not chained, and redacted: the client quotes the response body, and a body that echoes the request
        # (a proxy's error page, a debugging server) holds the Authorization header.
        raise AIHubError(f"AI Hub refused a request (HTTP {e.status_code}): {_redact(str(e), token)}") from None
    except requests.exceptions.RequestException as e:  # raised past the client's own retries
        # Not chained, and redacted: requests quotes a malformed Authorization header, token included.
        reason = _redact(f"{type(e).__name__}: {e}", token)
        raise AIHubError(f"could not reach AI Hub at {client.config.api_url}: {reason}") from None
    except hub.UserError as e:
        # The client turns HTTP 401 into UserError("Failed to authenticate. ...").
        if str(e).startswith("Failed to authenticate"):
            raise AIHubAuthError(_auth_message(client, source)) from None
        raise AIHubError(f"AI Hub: {_redact(str(e), token)}") from None
    except Exception as e:
        if _redact(str(e), token) != str(e):  # anything else that quotes the token: never shown as it is
            raise AIHubError(f"AI Hub: {type(e).__name__}: {_redact(str(e), token)}") from None
        raise


def _redact(text: str, token: str | None) -> str:
    """``text`` with the API token (and each whitespace-separated piece of it) replaced by ``<token>``."""
    for secret in sorted({token or "", *(token or "").split()}, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "<token>")
    return text


def _auth_message(client: hub.Client, source: str) -> str:
    web_url = client.config.web_url.rstrip("/")
    return (
        f"AI Hub rejected the API token from {source} (HTTP 401 Unauthorized): it is wrong, expired or "
        f"revoked. Copy a current token from {web_url}/account/ and run {_CONFIGURE_CMD}."
    )


# -- devices ---------------------------------------------------------------------------------


def list_devices(*, attributes: str | list[str] | None = None, client: hub.Client | None = None) -> list[str]:
    """Sorted names of the AI Hub devices matching ``attributes`` (e.g. ``"chipset:qualcomm-snapdragon-8gen3"``)."""
    hub_client = _client(client)
    with _hub_errors(hub_client, _config_source(client)):
        devices = hub_client.get_devices(attributes=attributes or [])
    return sorted({d.name for d in devices})


def _resolve_device(client: hub.Client, device: str) -> hub.Device:
    """The single device ``device`` names: an exact device name, or a ``chipset:...`` attribute."""
    import qai_hub as hub
    from qai_hub.public_rest_api import get_device_list

    name, attributes = ("", [device]) if device.startswith("chipset:") else (device, [])
    # Called on the REST layer directly so that a rejected token surfaces as HTTP 401, typed.
    found = get_device_list(client.config, name=name, attributes=attributes, select=True)
    if not found.devices:
        raise AIHubError(f"device {device!r}: no such device on AI Hub (see list_devices() for the names)")
    return hub.Device(name=found.devices[0].name, os=found.devices[0].os)


# -- the recipe ------------------------------------------------------------------------------


def compile_and_profile(
    onnx_paths: Mapping[str, Path],
    *,
    device: str,
    runtime: str = "qnn_context_binary",
    input_specs: Mapping[str, InputSpec],
    quantize: QuantizeOptions | None = None,
    out_dir: Path,
    profile: bool = True,
    compile_options: str = "",
    poll_s: float = 10.0,
    timeout_s: float = 3600.0,
    client: hub.Client | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Compile (and profile) each tower on AI Hub; download the compiled models into ``out_dir``.

    ``onnx_paths`` maps a tower name ("image", "text") to its ONNX file (or a folder holding one
    ``.onnx`` and one ``.data``); ``input_specs`` gives each tower's inputs. ``device`` is an AI Hub
    device name or a ``chipset:...`` attribute. ``compile_options`` is appended to
    ``--target_runtime <runtime>``. ``timeout_s`` bounds each wait on a job.

    Returns the document also written to ``out_dir / "aihub_profile.json"``:
    ``{"format", "format_version", "device", "runtime", "towers": {tower: summary}}`` where each
    summary holds ``device``, ``runtime``, ``source``, ``quantize_job_id``, ``compile_job_id``,
    ``profile_job_id``, ``model_file`` (relative to ``out_dir``), ``inference_ms``,
    ``peak_memory_mb`` (MiB), ``peak_memory_range_mb`` and ``layer_counts`` (``{"NPU", "GPU", "CPU"}``).
    Raises ``AIHubNotConfigured``, ``AIHubAuthError``, ``AIHubJobFailed`` (naming the tower and job).
    """
    if runtime not in SUPPORTED_RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: not supported; use one of {', '.join(SUPPORTED_RUNTIMES)}")
    towers = _towers(onnx_paths, input_specs, quantize)
    hub_client = _client(client)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wait = _waiter(poll_s=poll_s, timeout_s=timeout_s, log=log)

    with _hub_errors(hub_client, _config_source(client)), tempfile.TemporaryDirectory(prefix="aihub-") as tmp:
        hub_device = _resolve_device(hub_client, device)
        log(f"AI Hub: {len(towers)} tower(s) -> {hub_device.name}, runtime {runtime}")
        for tower in towers:
            tower.model = _upload_path(tower.source, Path(tmp))

        if quantize is not None:  # 1. quantize
            for tower in towers:
                tower.quantize_job = _submit_quantize(hub_client, tower, quantize, log)
            for tower in towers:
                wait(tower.quantize_job, tower=tower.name, kind="quantize")
                tower.quantize_job.wait()  # status is final: this only fetches the target model
                tower.model = tower.quantize_job.get_target_model()

        for tower in towers:  # 2. upload + compile
            tower.compile_job = _submit_compile(hub_client, tower, hub_device, runtime, compile_options, log)

        for tower in towers:  # 3. download, 4. submit profile
            wait(tower.compile_job, tower=tower.name, kind="compile")
            tower.model_file = _download(tower.compile_job, out_dir, tower.name, log)
            if profile:
                tower.profile_job = _submit_profile(hub_client, tower, hub_device, log)

        for tower in towers:  # 5. summarize
            if tower.profile_job is not None:
                wait(tower.profile_job, tower=tower.name, kind="profile")
                tower.summary = summarize_profile(tower.profile_job.download_profile())

    document = _document(towers, device=hub_device.name, runtime=runtime)
    _write_json(out_dir / PROFILE_FILENAME, document)
    log(f"AI Hub: summary written to {out_dir / PROFILE_FILENAME}")
    return document


def _towers(
    onnx_paths: Mapping[str, Path],
    input_specs: Mapping[str, InputSpec],
    quantize: QuantizeOptions | None,
) -> list[_Tower]:
    if not onnx_paths:
        raise ValueError("onnx_paths is empty: nothing to compile")
    towers = []
    for name, path in onnx_paths.items():
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: ONNX model for tower '{name}' not found")
        if path.is_file() and path.suffix != ".onnx":
            raise ValueError(f"{path}: tower '{name}' must be an .onnx file or a folder holding one")
        if name not in input_specs:
            raise ValueError(f"input_specs has no entry for tower '{name}' (has: {', '.join(input_specs)})")
        if quantize is not None and name not in quantize.calibration:
            raise ValueError(f"quantize.calibration has no data for tower '{name}'")
        towers.append(_Tower(name=name, source=path, input_spec=dict(input_specs[name])))
    return towers


def _upload_path(source: Path, tmp: Path) -> str:
    """What to upload: the file itself, or a folder (.onnx + one .data) if its weights are external."""
    if source.is_dir():
        return str(source)
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load(str(source), load_external_data=False)
    if not any(uses_external_data(t) for t in proto.graph.initializer):
        return str(source)
    # AI Hub takes external weights as a folder with exactly one .onnx and one .data file.
    folder = tmp / source.stem / f"{source.stem}.onnx"
    folder.mkdir(parents=True)
    onnx.save(
        onnx.load(str(source)),
        str(folder / source.name),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{source.stem}.data",
        size_threshold=0,  # keep every initializer that was external in the one .data file
    )
    return str(folder)


def _samples(tower: str, name: str, data: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    samples = list(data)
    if not samples:
        raise ValueError(f"quantize.calibration['{tower}']['{name}'] has no samples")
    return [np.ascontiguousarray(s) for s in samples]


def _submit_quantize(client: hub.Client, tower: _Tower, options: QuantizeOptions, log: Log) -> Any:
    import qai_hub as hub

    calibration = {
        name: _samples(tower.name, name, data) for name, data in options.calibration[tower.name].items()
    }
    job = client.submit_quantize_job(
        model=tower.model,
        calibration_data=calibration,
        weights_dtype=hub.QuantizeDtype[options.weights.upper()],
        activations_dtype=hub.QuantizeDtype[options.activations.upper()],
        name=f"edge-gcl {tower.name}",
    )
    log(f"[{tower.name}] quantize job {job.job_id}: {job.url}")
    return job


def _submit_compile(
    client: hub.Client, tower: _Tower, device: hub.Device, runtime: str, extra: str, log: Log
) -> Any:
    if isinstance(tower.model, str):
        log(f"[{tower.name}] uploading {tower.source}")
    job = client.submit_compile_job(
        model=tower.model,
        device=device,
        name=f"edge-gcl {tower.name}",
        input_specs=tower.input_spec,
        options=f"--target_runtime {runtime} {extra}".strip(),
    )
    log(f"[{tower.name}] compile job {job.job_id}: {job.url}")
    return job


def _submit_profile(client: hub.Client, tower: _Tower, device: hub.Device, log: Log) -> Any:
    model = tower.compile_job.get_target_model()
    name = f"edge-gcl {tower.name}"
    if "profile" in inspect.signature(client.submit_inference_job).parameters:  # qai-hub >= 0.56
        job = client.submit_inference_job(model, device, name=name, profile=True)
    else:
        job = client.submit_profile_job(model, device, name=name)
    log(f"[{tower.name}] profile job {job.job_id}: {job.url}")
    return job


def _waiter(*, poll_s: float, timeout_s: float, log: Log) -> Callable[..., None]:
    def wait(job: Any, *, tower: str, kind: str) -> None:
        """Poll ``job`` until it finishes; raise ``AIHubJobFailed`` / ``AIHubTimeout``."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            status = job.get_status()
            if status.code != last:
                log(f"[{tower}] {kind} job {job.job_id}: {status.code}")
                last = status.code
            if status.success:
                return
            if status.failure:
                reason = status.message or "no reason given"
                raise AIHubJobFailed(tower=tower, kind=kind, job_id=job.job_id, reason=reason, url=job.url)
            if time.monotonic() >= deadline:
                reason = f"still {status.code} after {timeout_s:g} s"
                raise AIHubTimeout(tower=tower, kind=kind, job_id=job.job_id, reason=reason, url=job.url)
            time.sleep(poll_s)

    return wait


def _download(compile_job: Any, out_dir: Path, tower: str, log: Log) -> str:
    """Download the compiled model as ``out_dir/<tower><suffix>``; unpack zipped folders. Returns the name."""
    path = Path(compile_job.download_target_model(str(out_dir / tower)))
    if path.suffix == ".zip":
        path = _unzip_model(path, path.with_suffix(""))
    log(f"[{tower}] compiled model: {path}")
    return os.path.relpath(path, out_dir)


def _unzip_model(archive: Path, dest: Path) -> Path:
    """Extract a zipped model folder (one top-level directory) to ``dest``, then delete the zip."""
    with zipfile.ZipFile(archive) as zipped:
        members = [m for m in zipped.infolist() if not m.is_dir()]
        tops = {Path(m.filename).parts[0] for m in members}
        strip = 1 if len(tops) == 1 and all(len(Path(m.filename).parts) > 1 for m in members) else 0
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        for member in members:
            relative = Path(*Path(member.filename).parts[strip:])
            if relative.is_absolute() or ".." in relative.parts:
                raise AIHubError(f"{archive}: unsafe path {member.filename!r} in downloaded model")
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zipped.read(member))
    archive.unlink()
    return dest


# -- profile summary and the JSON document ---------------------------------------------------


def summarize_profile(profile: Mapping[str, Any]) -> dict[str, Any]:
    """Reduce a qai_hub profile dict (``job.download_profile()``) to the numbers we report.

    ``inference_ms`` is ``estimated_inference_time`` (µs) / 1000; ``peak_memory_mb`` is
    ``estimated_inference_peak_memory`` (bytes) / 2**20; ``peak_memory_range_mb`` is the
    inference-stage peak range when present; ``layer_counts`` counts layers per compute unit.
    """
    summary = profile.get("execution_summary") or {}
    layers = profile.get("execution_detail") or []
    time_us = summary.get("estimated_inference_time")
    peak_bytes = summary.get("estimated_inference_peak_memory")
    peak_range = summary.get("inference_memory_peak_range")
    counts = dict.fromkeys(COMPUTE_UNITS, 0)
    for layer in layers:
        unit = str(layer.get("compute_unit", "UNSPECIFIED"))
        counts[unit] = counts.get(unit, 0) + 1
    return {
        "inference_ms": None if time_us is None else time_us / 1000,
        "peak_memory_mb": None if peak_bytes is None else round(peak_bytes / 2**20, 3),
        "peak_memory_range_mb": None if peak_range is None else [round(b / 2**20, 3) for b in peak_range],
        "layer_counts": counts,
    }


def _document(towers: list[_Tower], *, device: str, runtime: str) -> dict[str, Any]:
    import qai_hub as hub

    empty = {"inference_ms": None, "peak_memory_mb": None, "peak_memory_range_mb": None, "layer_counts": None}
    return {
        "format": PROFILE_FORMAT,
        "format_version": PROFILE_FORMAT_VERSION,
        "qai_hub_version": str(hub.__version__),
        "device": device,
        "runtime": runtime,
        "towers": {
            t.name: {
                "device": device,
                "runtime": runtime,
                "source": t.source.name,
                "quantize_job_id": t.quantize_job.job_id if t.quantize_job is not None else None,
                "compile_job_id": t.compile_job.job_id,
                "profile_job_id": t.profile_job.job_id if t.profile_job is not None else None,
                "model_file": t.model_file,
                **(t.summary or empty),
            }
            for t in towers
        },
    }


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)


def load_profile(path: Path) -> dict[str, Any]:
    """Read an ``aihub_profile.json`` written by ``compile_and_profile`` (checks its format header)."""
    document = json.loads(Path(path).read_text())
    if document.get("format") != PROFILE_FORMAT:
        raise ValueError(f"{path}: not an edge-gcl AI Hub profile (format={document.get('format')!r})")
    if document.get("format_version") != PROFILE_FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {document.get('format_version')!r}, this reader knows {PROFILE_FORMAT_VERSION}"
        )
    return document

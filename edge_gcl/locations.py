"""Where edge-gcl looks by default: the index folder and the compiled model.

The CLI and the photo app share these defaults, so a photo indexed by one is never embedded
again by the other.

    index folder   --index, else $EDGE_GCL_INDEX, else <data dir>/index
    model          --model, else $EDGE_GCL_MODEL, else the artifacts folder that
                   `python -m export.compile` last built in this Python environment (recorded in
                   <data dir>/artifacts.json under the environment's `sys.prefix`), else
                   ./artifacts when it holds a manifest.json

The record is per environment (a venv, or the system Python), not per user: two clones, each
with its own venv, never use each other's model without saying so. A build recorded by another
environment is named in the error that says no model was found, never used silently.

<data dir> is $EDGE_GCL_HOME, else the platform's user data folder (`platformdirs`:
~/.local/share/edge-gcl on Linux, %LOCALAPPDATA%\\edge-gcl on Windows, ~/Library/Application
Support/edge-gcl on macOS). Torch-free.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def environment() -> str:
    """This Python environment, as the artifacts record keys it: the venv's (or the system
    Python's) `sys.prefix`, resolved."""
    return str(Path(sys.prefix).resolve())


def _read_record() -> dict[str, dict[str, Any]]:
    """{environment: {"path", "recorded"}} from the record file; {} when absent or unreadable.
    A record from before environments were recorded ({"path": ...}) belongs to no environment."""
    try:
        doc = json.loads((data_dir() / ARTIFACTS_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    envs = doc.get("environments") if isinstance(doc, dict) else None
    if not isinstance(envs, dict):
        return {}
    return {k: v for k, v in envs.items() if isinstance(v, dict) and isinstance(v.get("path"), str)}


def record_artifacts(folder: str | Path, *, env: str | None = None) -> Path:
    """Remember `folder` (a finished artifacts folder) as the default model of this Python
    environment (`env`: another one); returns the record file."""
    from filelock import FileLock

    folder = Path(folder).resolve()
    if not is_artifacts_folder(folder):
        raise ValueError(f"{folder}: not an artifacts folder (no manifest.json)")
    record = data_dir() / ARTIFACTS_RECORD
    record.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(record.with_name(f".{record.name}.lock")):  # two builds finishing at once keep both
        envs = _read_record()
        envs[env or environment()] = {"path": str(folder), "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json_atomic(record, {"environments": envs})
    return record


def recorded_artifacts(*, env: str | None = None) -> Path | None:
    """The artifacts folder `record_artifacts` last remembered for this environment (`env`: another
    one), if it still holds a manifest."""
    entry = _read_record().get(env or environment())
    if entry is None:
        return None
    path = Path(entry["path"])
    return path if is_artifacts_folder(path) else None


def recorded_elsewhere() -> dict[str, Path]:
    """{environment: artifacts folder} recorded by other Python environments (still present)."""
    here = environment()
    return {env: Path(e["path"]) for env, e in _read_record().items()
            if env != here and is_artifacts_folder(e["path"])}


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
        return ModelChoice(str(recorded), f"the record of export.compile's last build in this environment "
                                          f"({environment()}), in {data_dir() / ARTIFACTS_RECORD}")
    if is_artifacts_folder("artifacts"):
        return ModelChoice("artifacts", "./artifacts")
    others = recorded_elsewhere()
    elsewhere = (f"; other environments built {', '.join(sorted(map(str, others.values())))}: pass one with "
                 f"--model to use it" if others else "")
    raise NoModelError(
        f"no compiled model found (no --model, no $EDGE_GCL_MODEL, none recorded for this environment "
        f"({environment()}) in {data_dir() / ARTIFACTS_RECORD}, no ./artifacts/manifest.json): build one with "
        f"`{BUILD_COMMAND}`, or pass --model ARTIFACTS_DIR (or --model default for the PyTorch "
        f"model, with `pip install 'edge-gcl[train]'`){elsewhere}"
    )

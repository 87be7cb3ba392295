"""`edge-gcl status`: what this install runs by default, where its state lives, what it can run on.

    edge-gcl status            # the default model and how it was chosen, the index folder, providers, versions
    edge-gcl status --json     # the same as one JSON object

Nothing is loaded or created: the model is read from its manifest, the index from its SQLite file
(read-only), the QNN execution provider is only registered. Torch-free.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
from importlib import metadata
from pathlib import Path
from typing import Any

from .embedding import model_label
from .extras import EXTRA_OF, importable
from .locations import ARTIFACTS_RECORD, NoModelError, data_dir, default_index, default_model, environment
from .manifest import Manifest, is_artifacts_folder

# distributions whose versions matter to a bug report, runtime first
PACKAGES = ("edge-gcl", "numpy", "onnxruntime", "onnxruntime-qnn", "tokenizers", "usearch", "simsimd", "pillow",
            "pillow-heif", "torch", "onnx", "qai-hub", "av", "pyarrow", "matplotlib", "faiss-cpu")
EXTRA_PACKAGE = {"train": "torch", "export": "onnx", "video": "av", "mmeb": "pyarrow", "dev": "matplotlib"}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def model_status(explicit: str | None = None) -> dict[str, Any]:
    """{"spec", "source", ...}: the model `edge-gcl search` would run and why; "error" when there is none."""
    try:
        choice = default_model(explicit)
    except NoModelError as e:
        return {"spec": None, "source": None, "error": str(e)}
    out: dict[str, Any] = {"spec": choice.spec, "source": choice.source}
    if is_artifacts_folder(choice.spec):
        try:
            m = Manifest.load(choice.spec)
        except (OSError, ValueError) as e:
            return out | {"error": str(e)}
        chip = m.chipset or {}
        out |= {"name": m.extra.get("source_model") or m.model_name, "model_id": m.model_id,
                "embed_dim": m.embed_dim, "precision": m.precision, "chipset": chip.get("name"),
                "htp_arch": chip.get("htp_arch"), "forms": sorted({f for t in m.towers.values() for f in t.files})}
    else:
        out["note"] = "a PyTorch model: runs only with the [train] extra, on the CPU"
    return out


def index_status(folder: Path) -> dict[str, Any]:
    """{"path", "exists", ...}: what the index folder holds, read without opening it for writing."""
    out: dict[str, Any] = {"path": str(folder), "exists": (folder / "index.sqlite").is_file()}
    if not out["exists"]:
        return out
    try:
        conn = sqlite3.connect(f"{(folder / 'index.sqlite').resolve().as_uri()}?mode=ro", uri=True)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            counts = dict(conn.execute("SELECT modality, count(*) FROM items GROUP BY modality").fetchall())
        finally:
            conn.close()
    except sqlite3.Error as e:
        return out | {"error": f"{folder / 'index.sqlite'}: {e}"}
    return out | {"items": sum(counts.values()), "photos": counts.get("photo", 0), "notes": counts.get("note", 0),
                  "photo_notes": counts.get("photo+note", 0), "model_name": meta.get("model_name"),
                  "model_id": meta.get("model_id")}


def provider_status() -> dict[str, Any]:
    """{"cpu": {...}, "qnn": {...}}: the execution providers this install can run the towers on."""
    import onnxruntime as ort

    out: dict[str, Any] = {"cpu": {"available": True, "onnxruntime": ort.__version__}}
    try:
        from .qnn_ep import find_qnn_libraries, register_qnn_ep

        devices = register_qnn_ep()
        libs = find_qnn_libraries()
        npu = any(d.device.type == ort.OrtHardwareDeviceType.NPU for d in devices)
        out["qnn"] = {"available": True, "onnxruntime-qnn": libs.package_version, "qnn_sdk": libs.qnn_sdk_version,
                      "device": "Hexagon NPU" if npu else f"HTP emulation on this {platform.machine()} CPU "
                                                           "(correct, slow; not device speed)"}
    except Exception as e:  # noqa: BLE001 - no wheel for this platform, an old onnxruntime, a plugin that fails
        out["qnn"] = {"available": False, "why": str(e).splitlines()[0] if str(e) else type(e).__name__}
    return out


def status(*, model: str | None = None, index: str | None = None) -> dict[str, Any]:
    extras = {}
    for extra, dist in EXTRA_PACKAGE.items():
        modules = [m for m, e in EXTRA_OF.items() if e == extra and m != "pytest"]
        missing = [m for m in modules if not importable(m)]
        extras[extra] = {"installed": not missing, "version": _version(dist)} | ({"missing": missing} if missing else {})
    return {
        "version": _version("edge-gcl"),
        "python": platform.python_version(),
        "environment": environment(),
        "data_dir": str(data_dir()),
        "artifacts_record": str(data_dir() / ARTIFACTS_RECORD),
        "model": model_status(model),
        "index": index_status(Path(index).expanduser() if index else default_index()),
        "providers": provider_status(),
        "extras": extras,
        "packages": {p: v for p in PACKAGES if (v := _version(p)) is not None},
    }


def format_status(s: dict[str, Any]) -> str:
    m, ix, prov = s["model"], s["index"], s["providers"]
    lines = [f"edge-gcl {s['version']}, Python {s['python']} ({s['environment']})"]
    if m.get("spec") is None:
        lines.append(f"model:      none: {m['error']}")
    else:
        what = f"{model_label(m['name'], m['model_id'])}, {m['embed_dim']}-d" if "name" in m else m.get("note", "")
        chip = f", {m['precision']} for {m['chipset']} ({m['htp_arch']})" if m.get("chipset") else ""
        forms = f", forms {'/'.join(m['forms'])}" if m.get("forms") else ""
        lines.append(f"model:      {m['spec']}: {what}{chip}{forms}")
        lines.append(f"            chosen by {m['source']}")
        if m.get("error"):
            lines.append(f"            error: {m['error']}")
    if not ix["exists"]:
        lines.append(f"index:      {ix['path']} (not created yet: `edge-gcl index add PHOTOS` creates it)")
    elif "error" in ix:
        lines.append(f"index:      {ix['path']} (unreadable: {ix['error']})")
    else:
        lines.append(f"index:      {ix['path']}: {ix['items']} items ({ix['photos']} photos, {ix['notes']} notes, "
                     f"{ix['photo_notes']} photo+note), model {model_label(ix['model_name'] or ix['model_id'], ix['model_id'])}")
    cpu, qnn = prov["cpu"], prov["qnn"]
    qnn_text = (f"qnn (onnxruntime-qnn {qnn['onnxruntime-qnn']}, QNN {qnn['qnn_sdk']}: {qnn['device']})"
                if qnn["available"] else f"qnn not available ({qnn['why']})")
    lines.append(f"providers:  cpu (onnxruntime {cpu['onnxruntime']}), {qnn_text}")
    lines.append("extras:     " + ", ".join(
        f"{name} ({EXTRA_PACKAGE[name]} {e['version']})" if e["installed"] else f"{name} not installed"
        for name, e in s["extras"].items()))
    lines.append(f"state:      {s['data_dir']} (the index and the record of built models; $EDGE_GCL_HOME moves it)")
    lines.append("versions:   " + ", ".join(f"{p} {v}" for p, v in s["packages"].items()))
    return "\n".join(lines)


def cli_status(args: argparse.Namespace) -> int:
    s = status(model=args.model, index=args.index)
    print(json.dumps(s, indent=2) if args.json else format_status(s))
    return 0

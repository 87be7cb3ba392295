"""The I/O contract of the exported towers and the `manifest.json` that carries it.

One place says what each graph takes and returns (names, shapes, dtypes) and how inputs are
prepared (image preprocessing, tokenizer, context length). `export` writes it beside the
artifacts; the on-device runtime (`edge_gcl.runtime`) reads it back and checks it; AI Hub input
specs are derived from it. Torch-free.

Layout of an artifacts folder::

    manifest.json
    tokenizer.json                     # the text tower's tokenizer (tokenizers library JSON)
    image_tower.onnx, text_tower.onnx  # float ONNX (dynamic batch; CPU runtime, reference)
    image_tower_w8a16.onnx, ...        # QDQ (static batch 1)
    image_tower_w8a16_ctx.onnx, ...    # EPContext for the Hexagon NPU
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import ImagePreprocess, ModelConfig, TextPreprocess

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"

Tower = Literal["image", "text"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # a str is a dynamic axis ("batch")
    dtype: str  # numpy dtype name: "float32", "int32"


@dataclass(frozen=True)
class TowerSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def tower_specs(config: ModelConfig, *, batch: int | str = "batch") -> dict[Tower, TowerSpec]:
    """The graphs' contract: image (B, 3, S, S) float32 -> (B, D); text (B, L) int32 x2 -> (B, D)."""
    s, length, d = config.image.size, config.text.context_length, config.embed_dim
    return {
        "image": TowerSpec(
            inputs=(TensorSpec("pixels", (batch, 3, s, s), "float32"),),
            outputs=(TensorSpec("embedding", (batch, d), "float32"),),
        ),
        "text": TowerSpec(
            inputs=(
                TensorSpec("input_ids", (batch, length), "int32"),
                TensorSpec("attention_mask", (batch, length), "int32"),
            ),
            outputs=(TensorSpec("embedding", (batch, d), "float32"),),
        ),
    }


@dataclass
class TowerArtifacts:
    spec: TowerSpec
    files: dict[str, str] = field(default_factory=dict)  # form ("float", "qdq", "ctx") -> file name
    npu_node_share: float | None = None
    fidelity: dict[str, float] | None = None  # cosine_min, cosine_mean, max_abs_error vs float


@dataclass
class Manifest:
    model_id: str  # names the weights (model name + weights digest); an index stores it
    model_name: str
    embed_dim: int
    image: ImagePreprocess
    text: TextPreprocess
    towers: dict[str, TowerArtifacts]
    precision: str = "fp32"
    chipset: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    # What the build checked: {"checked": True, "min_fidelity", "heldout_inputs", "on"} when every tower
    # passed the fidelity gate, else {"checked": False, "reason"} (--skip-verify, --skip-compile, AI Hub).
    verification: dict[str, Any] | None = None
    tools: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {sha256, size_bytes}
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"manifest format_version {d.get('format_version')!r}, expected {FORMAT_VERSION}")
        towers = {}
        for name, t in d["towers"].items():
            spec = TowerSpec(
                inputs=tuple(TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in t["spec"]["inputs"]),
                outputs=tuple(TensorSpec(o["name"], tuple(o["shape"]), o["dtype"]) for o in t["spec"]["outputs"]),
            )
            towers[name] = TowerArtifacts(spec, dict(t["files"]), t.get("npu_node_share"), t.get("fidelity"))
        image = d["image"]
        return cls(
            model_id=d["model_id"],
            model_name=d["model_name"],
            embed_dim=int(d["embed_dim"]),
            image=ImagePreprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in image.items()}),
            text=TextPreprocess(**d["text"]),
            towers=towers,
            precision=d.get("precision", "fp32"),
            chipset=d.get("chipset"),
            calibration=d.get("calibration"),
            verification=d.get("verification"),
            tools=d.get("tools", {}),
            files=d.get("files", {}),
            extra=d.get("extra", {}),
        )

    def save(self, folder: str | Path) -> Path:
        """Record SHA-256 and size of every file the manifest names, then write it atomically."""
        folder = Path(folder)
        names = {TOKENIZER_NAME} | {f for t in self.towers.values() for f in t.files.values()}
        self.files = {n: file_digest(folder / n) for n in sorted(names) if (folder / n).exists()}
        return write_json_atomic(folder / MANIFEST_NAME, self.to_dict())

    @classmethod
    def load(cls, folder: str | Path, *, verify: bool = False) -> Manifest:
        """Read `folder/manifest.json`; with verify=True, check every file's SHA-256."""
        path = Path(folder) / MANIFEST_NAME
        if not path.exists():
            raise FileNotFoundError(f"{path}: no manifest (not an artifacts folder made by `python -m export.compile`)")
        try:
            manifest = cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as e:  # JSON, a missing field, a field of the wrong kind
            detail = f"missing {e}" if isinstance(e, KeyError) else str(e)
            raise ValueError(f"{path}: not a valid edge-gcl manifest ({detail}); rebuild with export.compile") from None
        if verify:
            for name, info in manifest.files.items():
                got = file_digest(Path(folder) / name)["sha256"]
                if got != info["sha256"]:
                    raise ValueError(f"{Path(folder) / name}: SHA-256 {got[:12]}.. does not match the manifest")
        return manifest


def is_artifacts_folder(path: str | Path) -> bool:
    return (Path(path) / MANIFEST_NAME).is_file()


def file_digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "size_bytes": path.stat().st_size}


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write JSON to a temp file in the same folder, fsync it and rename it over `path`.

    The file gets the mode any new file gets (0666 minus the umask, so 0644 beside the other
    artifacts), not the 0600 of `tempfile.mkstemp`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

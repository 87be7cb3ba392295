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
from collections.abc import Iterable
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
    made_by: str | None = None  # "export.compile" for a folder it built: the only kind a build may replace
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """The manifest a JSON object describes; TypeError/ValueError name a field of the wrong kind (a
        hand-edited manifest must fail here, in one line, not as an AttributeError deep in the runtime)."""
        _expect(d, dict, "the manifest")
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"manifest format_version {d.get('format_version')!r}, expected {FORMAT_VERSION}")
        for key, kind in (("towers", dict), ("model_id", str), ("model_name", str), ("embed_dim", int),
                          ("image", dict), ("text", dict)):
            _expect(d[key], kind, key)
        for key, kind in (("precision", str), ("made_by", str), ("chipset", dict), ("calibration", dict), ("verification", dict),
                          ("tools", dict), ("files", dict), ("extra", dict)):
            if d.get(key) is not None:
                _expect(d[key], kind, key)
        for name, record in (d.get("files") or {}).items():
            _expect(record, dict, f"files[{name!r}]")
        for key, kinds in (("name", str), ("soc_model", int), ("htp_arch", (str, int))):  # htp_arch: "v75" or 75
            value = (d.get("chipset") or {}).get(key)
            if value is not None:
                _expect(value, kinds, f"chipset.{key}")
        towers = {}
        for name, t in d["towers"].items():
            _expect(t, dict, f"towers[{name!r}]")
            _expect(t.get("files"), dict, f"towers[{name!r}].files")
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
            made_by=d.get("made_by"),
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


def _expect(value: Any, kinds: type | tuple[type, ...], what: str) -> None:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = {dict: "an object", str: "a string", int: "an integer"}
        expected = " or ".join(names.get(k, k.__name__) for k in kinds)
        raise TypeError(f"{what}: expected {expected}, got {type(value).__name__}")


class ArtifactIntegrityError(ValueError):
    """A file of an artifacts folder that is not the one the manifest recorded (changed or damaged since)."""


def verify_files(folder: str | Path, manifest: Manifest, names: Iterable[str], *, cache: Path | None = None) -> None:
    """Check each of `names` (files of `folder`) against the SHA-256 its manifest recorded when it was built;
    raise ArtifactIntegrityError naming the first that differs or that the manifest does not list.

    A file once found whole is not hashed again while its size, mtime, ctime and inode stay the same:
    `cache` (a JSON file, e.g. in edge-gcl's user data folder) remembers them, so a start-up costs a `stat`
    per file. A cache that cannot be read or written is ignored (every file is hashed)."""
    folder = Path(folder)
    seen = _read_verified(cache)
    changed = False
    for name in names:
        path = (folder / name).absolute()
        want = (manifest.files.get(name) or {}).get("sha256")
        if not isinstance(want, str):
            raise ArtifactIntegrityError(f"{path}: the manifest records no SHA-256 for it, so it cannot be checked")
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, want]
        if seen.get(str(path)) == stamp:
            continue
        got = file_digest(path)["sha256"]
        if got != want:
            raise ArtifactIntegrityError(
                f"{path}: SHA-256 {got[:12]}.. differs from the manifest's {want[:12]}..: the file was changed or "
                "damaged after export.compile built it"
            )
        seen.pop(str(path), None)
        seen[str(path)] = stamp
        changed = True
    if changed and cache is not None:
        try:
            write_json_atomic(cache, {"format": VERIFIED_FORMAT, "files": dict(list(seen.items())[-VERIFIED_MAX:])})
        except OSError:
            pass


VERIFIED_FORMAT = "edge-gcl-verified-artifacts"
VERIFIED_MAX = 256  # files remembered (the most recently checked)


def _read_verified(cache: Path | None) -> dict[str, list[Any]]:
    if cache is None:
        return {}
    try:
        record = json.loads(cache.read_text(encoding="utf-8"))
        files = record["files"] if record.get("format") == VERIFIED_FORMAT else {}
        return {k: v for k, v in files.items() if isinstance(v, list)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


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

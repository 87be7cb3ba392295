"""The on-device embedder: the exported towers run with ONNX Runtime, no torch.

`OnnxEmbedder(folder)` reads an artifacts folder (see `edge_gcl.manifest`): the manifest names
the tower files and their I/O contract, `tokenizer.json` the tokenizer, and the image
preprocessing is `transform.preprocess` with the manifest's settings, so a photo or a note
becomes exactly the tensor the graph was exported for.

    provider="cpu"   ONNX Runtime's CPU execution provider (reference, any machine)
    provider="qnn"   the QNN execution provider plugin (`onnxruntime-qnn`) on the Hexagon NPU,
                     through `edge_gcl.qnn_ep.qnn_session`: CPU fallback disabled, so a graph the
                     NPU cannot run fails loudly instead of silently running on the CPU; the
                     manifest's chipset (if any) is the HTP target.

`embed_images` / `embed_texts` are preprocessing + `encode_images` / `encode_texts` (the graphs
alone on ready tensors, what a latency benchmark times) + L2 normalisation.

`load_embedder(spec)` turns whatever a user names (artifacts folder, model name, checkpoint
folder) into an `Embedder`; only the non-artifacts case imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from tqdm.auto import tqdm

from .embedding import Embedder, ImageInput, l2_normalize
from .manifest import TOKENIZER_NAME, Manifest, TowerSpec, is_artifacts_folder
from .tokenizer import Tokenizer, check_text
from .transform import preprocess

if TYPE_CHECKING:
    import onnxruntime as ort

Provider = Literal["cpu", "qnn"]
Form = Literal["float", "qdq", "ctx"]

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


class OnnxEmbedder:
    """`Embedder` over the image and text towers of an artifacts folder, run by ONNX Runtime.

    `form` picks the graph files the manifest lists: "float" (dynamic batch, the CPU reference),
    "qdq" (quantized, static batch 1) or "ctx" (EPContext for the NPU; needs provider="qnn").
    Graphs with a fixed batch size are fed that many rows at a time (the last chunk padded), by
    `embed_*` and `encode_*` alike.
    `threads` sets ONNX Runtime's intra-op threads (0: its default).
    """

    def __init__(
        self, folder: str | Path, *, provider: Provider = "cpu", form: Form = "float", threads: int = 0
    ) -> None:
        if provider not in ("cpu", "qnn"):
            raise ValueError(f"provider {provider!r}: expected 'cpu' or 'qnn'")
        self.folder = Path(folder)
        self.manifest = Manifest.load(self.folder)
        self.model_id = self.manifest.model_id
        self.embed_dim = self.manifest.embed_dim
        self.provider = provider
        self.form = form
        text_cfg = dataclasses.replace(self.manifest.text, tokenizer_file=TOKENIZER_NAME)
        self.tokenizer = Tokenizer.from_config(text_cfg, self.folder)
        self._image = _Tower(
            self._session("image", threads), self.manifest.towers["image"].spec, self.embed_dim
        )
        self._text = _Tower(self._session("text", threads), self.manifest.towers["text"].spec, self.embed_dim)
        s, length = self.manifest.image.size, self.tokenizer.context_length
        self._image.check_fixed_dims(2, s, "image size")
        self._text.check_fixed_dims(1, length, "context length")

    def __repr__(self) -> str:
        return f"OnnxEmbedder({str(self.folder)!r}, provider={self.provider!r}, form={self.form!r})"

    def _session(self, tower: str, threads: int) -> ort.InferenceSession:
        if tower not in self.manifest.towers:
            raise ValueError(f"{self.folder}: the manifest has no {tower} tower")
        files = self.manifest.towers[tower].files
        if self.form not in files:
            raise ValueError(
                f"{self.folder}: no {self.form!r} file for the {tower} tower (the manifest lists {sorted(files)})"
            )
        path = self.folder / files[self.form]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {tower} tower named by the manifest is missing")
        if self.provider == "qnn":
            from .qnn_ep import qnn_session  # imports onnxruntime-qnn's registration code only when asked

            return qnn_session(path, threads=threads, **_qnn_target(self.manifest.chipset))
        return _cpu_session(path, threads=threads)

    def embed_images(
        self, images: Sequence[ImageInput], *, batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """(N, D) float32, rows L2-normalised. Raises ImageDecodeError naming a bad input."""
        out = np.zeros((len(images), self.embed_dim), np.float32)
        step = self._image.batch_step(batch_size)
        for start in tqdm(range(0, len(images), step), desc="images", disable=not progress):
            batch = images[start : start + step]
            pixels = np.stack([preprocess(x, self.manifest.image) for x in batch])  # (B, 3, S, S)
            out[start : start + len(batch)] = self.encode_images(pixels)
        return l2_normalize(out)

    def embed_texts(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """(N, D) float32, rows L2-normalised. Raises ValueError naming an empty or non-UTF-8 text."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("embed_texts: pass a list of texts, not a single string")
        texts = [check_text(t, name=f"text[{i}]") for i, t in enumerate(texts)]
        out = np.zeros((len(texts), self.embed_dim), np.float32)
        step = self._text.batch_step(batch_size)
        for start in tqdm(range(0, len(texts), step), desc="texts", disable=not progress):
            ids, mask = self.tokenizer(texts[start : start + step])  # (B, L) each
            out[start : start + len(ids)] = self.encode_texts(ids, mask)
        return l2_normalize(out)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """The image graph alone: pixels (B, 3, S, S) float32, as `transform.preprocess` makes them,
        -> (B, D) float32 as the graph outputs them (not normalised again)."""
        pixels = np.asarray(pixels)
        s = self.manifest.image.size
        if pixels.ndim != 4 or pixels.shape[1:] != (3, s, s):
            raise ValueError(
                f"pixels of shape {pixels.shape}: expected (B, 3, {s}, {s}) (transform.preprocess)"
            )
        return self._image.run({self._image.input_names[0]: pixels})

    def encode_texts(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The text graph alone: token ids and attention mask (B, L) each, as `self.tokenizer` makes
        them, -> (B, D) float32 as the graph outputs them (not normalised again)."""
        ids, mask = np.asarray(ids), np.asarray(mask)
        length = self.tokenizer.context_length
        if ids.ndim != 2 or ids.shape[1] != length or mask.shape != ids.shape:
            raise ValueError(
                f"token ids {ids.shape} and mask {mask.shape}: expected (B, {length}) each (as tokenized)"
            )
        ids_name, mask_name = self._text.input_names
        return self._text.run({ids_name: ids, mask_name: mask})


class _Tower:
    """One ONNX Runtime session checked against its manifest contract."""

    def __init__(self, session: ort.InferenceSession, spec: TowerSpec, embed_dim: int) -> None:
        self.session = session
        self.path = getattr(session, "_model_path", None) or "<onnx graph>"  # set by InferenceSession
        inputs = {i.name: i for i in session.get_inputs()}
        self.input_names = [t.name for t in spec.inputs]
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"{self.path}: graph inputs {sorted(inputs)} lack {missing} (manifest contract)")
        self.input_dtypes = {}
        for name in self.input_names:
            ort_type = inputs[name].type
            if ort_type not in _ORT_DTYPES:
                raise ValueError(f"{self.path}: input {name!r} has unsupported type {ort_type}")
            self.input_dtypes[name] = _ORT_DTYPES[ort_type]
        self.input_shapes = {n: inputs[n].shape for n in self.input_names}
        outputs = [o.name for o in session.get_outputs()]
        self.output_name = spec.outputs[0].name
        if self.output_name not in outputs:
            raise ValueError(
                f"{self.path}: graph outputs {outputs} lack {self.output_name!r} (manifest contract)"
            )
        batch = self.input_shapes[self.input_names[0]][0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.embed_dim = embed_dim

    def check_fixed_dims(self, axis: int, expected: int, what: str) -> None:
        for name, shape in self.input_shapes.items():
            got = shape[axis] if len(shape) > axis else None
            if isinstance(got, int) and got != expected:
                raise ValueError(f"{self.path}: input {name!r} {what} is {got}, the manifest says {expected}")

    def batch_step(self, batch_size: int) -> int:
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: must be >= 1")
        return self.fixed_batch or batch_size

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Feeds of n rows -> (n, D) float32. A fixed-batch graph gets that many rows per call, the
        last chunk padded with zero rows (dropped from the output)."""
        feeds = {k: np.ascontiguousarray(v, dtype=self.input_dtypes[k]) for k, v in feeds.items()}
        n = len(next(iter(feeds.values())))
        step = self.fixed_batch or max(n, 1)
        outs = [self._run_chunk({k: v[s : s + step] for k, v in feeds.items()}) for s in range(0, n, step)]
        if len(outs) == 1:
            return outs[0]
        return np.concatenate(outs) if outs else np.zeros((0, self.embed_dim), np.float32)

    def _run_chunk(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(feeds.values())))
        if self.fixed_batch is not None and n < self.fixed_batch:
            feeds = {k: _pad_rows(v, self.fixed_batch) for k, v in feeds.items()}
        (out,) = self.session.run([self.output_name], feeds)
        out = np.asarray(out, np.float32).reshape(len(out), -1)[:n]  # (n, D)
        if out.shape[1] != self.embed_dim:
            raise ValueError(
                f"{self.path}: output has {out.shape[1]} dims, the manifest says {self.embed_dim}"
            )
        return out


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    pad = np.zeros((rows - len(x), *x.shape[1:]), x.dtype)
    return np.concatenate([x, pad])


def _session_options(threads: int) -> ort.SessionOptions:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return so


def _cpu_session(path: Path, *, threads: int = 0) -> ort.InferenceSession:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), _session_options(threads), providers=["CPUExecutionProvider"])


def _qnn_target(chipset: dict | None) -> dict[str, int | None]:
    """`soc_model`/`htp_arch` for `edge_gcl.qnn_ep` from a manifest's chipset ({"htp_arch": "v75", ...})."""
    chipset = chipset or {}
    soc_model, htp_arch = chipset.get("soc_model"), chipset.get("htp_arch")
    return {
        "soc_model": int(soc_model) if soc_model is not None else None,
        "htp_arch": int(str(htp_arch).removeprefix("v")) if htp_arch is not None else None,
    }


def load_embedder(spec: str | Path | Embedder, *, provider: Provider = "cpu") -> Embedder:
    """An `Embedder` from what a user names.

    - an `Embedder`: returned as is;
    - an artifacts folder (holds `manifest.json`): `OnnxEmbedder(spec, provider=provider)`;
    - anything else (a preset name like "default", a checkpoint folder, ...): the PyTorch model,
      `TorchEmbedder(load_model(spec))` from `edge_gcl.models` (imports torch; CPU only).
    """
    if isinstance(spec, Embedder):
        return spec
    if is_artifacts_folder(spec):
        return OnnxEmbedder(spec, provider=provider)
    if provider != "cpu":
        raise ValueError(
            f"{spec}: provider={provider!r} needs an artifacts folder (manifest.json), not a model"
        )
    from .models import TorchEmbedder, load_model

    return TorchEmbedder(load_model(str(spec)))

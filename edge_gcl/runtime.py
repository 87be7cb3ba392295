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

Forms and providers (`OnnxEmbedder(folder, provider=..., form=...)`):

    provider  default form   runs
    cpu       float          the float32 graphs on ONNX Runtime's CPU EP (fastest and exact on a CPU)
    cpu       qdq            the quantized graphs on the CPU (what the NPU computes, emulated)
    qnn       ctx            the EPContext graphs compiled for the manifest's chip, on the Hexagon NPU
    qnn       qdq            the quantized graphs, compiled for the manifest's chip at session start

Any other combination, or a form the folder lacks, is a `RuntimeConfigError` saying what to run or
rebuild; nothing falls back to the CPU silently.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from tqdm.auto import tqdm

from .embedding import Embedder, ImageInput, l2_normalize, model_label, model_name
from .locations import data_dir
from .manifest import (
    TOKENIZER_NAME,
    ArtifactIntegrityError,
    Manifest,
    TowerSpec,
    is_artifacts_folder,
    verify_files,
)
from .tokenizer import Tokenizer, check_text
from .transform import preprocess

if TYPE_CHECKING:
    import onnxruntime as ort

Provider = Literal["cpu", "qnn"]
Form = Literal["float", "qdq", "ctx"]
PROVIDERS: tuple[Provider, ...] = ("cpu", "qnn")
FORMS: tuple[Form, ...] = ("float", "qdq", "ctx")
DEFAULT_FORM: dict[Provider, Form] = {"cpu": "float", "qnn": "ctx"}
_FORM_TEXT = {"float": "float32", "qdq": "quantized (QDQ)", "ctx": "compiled (EPContext)"}
DECODE_THREADS = min(4, os.cpu_count() or 1)  # photos decoded while the image tower runs
# Rows per image-tower run. ONNX Runtime's arena keeps the activations of the largest batch it ran,
# and small batches cost no more CPU: Lite0 float on 128 photos, 2 cores, per photo and process
# peak: 1 row 16 ms, 2 rows 12.5 ms / 250 MB, 4 rows 12.5 ms / 285 MB, 8 rows 13.6 ms / 335 MB,
# 32 rows 15.7 ms / 665 MB (CPU time, so a loaded machine still compares them).
IMAGE_ROWS = 4
VERIFIED_CACHE = "verified-artifacts.json"  # in the user data folder: artifacts files already checked


class RuntimeConfigError(ValueError):
    """A provider/form/artifacts combination that cannot run; the message says what to do."""


def rebuild_hint(folder: Path, manifest: Manifest, *, chip: str | None = None) -> str:
    """The command that rebuilds `folder` (for `chip`, else the manifest's own)."""
    chip = chip or (manifest.chipset or {}).get("name")
    chip_flag = f' --chipset "{chip}"' if chip else ""
    return f"rebuild with `python -m export.compile --target snapdragon{chip_flag} --out {folder}`"


def verify_artifacts(folder: Path, manifest: Manifest, names: Sequence[str]) -> None:
    """`manifest.verify_files` with the user data folder's cache; a mismatch is a RuntimeConfigError naming the
    file and the command that rebuilds the folder."""
    try:
        verify_files(folder, manifest, names, cache=data_dir() / VERIFIED_CACHE)
    except ArtifactIntegrityError as e:
        raise RuntimeConfigError(f"{e}; {rebuild_hint(folder, manifest)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


class OnnxEmbedder:
    """`Embedder` over the image and text towers of an artifacts folder, run by ONNX Runtime.

    `form` picks the graph files the manifest lists: "float" (dynamic batch, the CPU reference),
    "qdq" (quantized, static batch 1) or "ctx" (EPContext for the NPU; needs provider="qnn");
    None takes the provider's default (`DEFAULT_FORM`: cpu -> float, qnn -> ctx).
    Graphs with a fixed batch size are fed that many rows at a time (the last chunk padded), by
    `embed_*` and `encode_*` alike.
    `threads` sets ONNX Runtime's intra-op threads (0: its default); `decode_threads` how many
    photos are decoded at once, overlapping the image tower (0: decode in the calling thread).
    `verify` checks the files it loads against the manifest's SHA-256 (a changed or damaged tower
    would embed silently wrong); a file found whole is remembered by size, mtime, ctime and inode in
    the user data folder (`VERIFIED_CACHE`), so later starts only `stat` it.
    Raises `RuntimeConfigError` (what to run or rebuild) for a combination that cannot run,
    `edge_gcl.qnn_ep.QnnUnavailableError` where the QNN EP cannot be loaded.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        provider: Provider = "cpu",
        form: Form | None = None,
        threads: int = 0,
        decode_threads: int = DECODE_THREADS,
        verify: bool = True,
    ) -> None:
        if provider not in PROVIDERS:
            raise RuntimeConfigError(f"provider {provider!r}: expected one of {', '.join(PROVIDERS)}")
        form = form or DEFAULT_FORM[provider]
        if form not in FORMS:
            raise RuntimeConfigError(f"form {form!r}: expected one of {', '.join(FORMS)}")
        self.folder = Path(folder)
        self.manifest = Manifest.load(self.folder)
        self.model_id = self.manifest.model_id
        self.embed_dim = self.manifest.embed_dim
        self.provider = provider
        self.form = form
        self._check_combination()
        if verify:
            self._verify()
        self.decode_threads = decode_threads
        text_cfg = dataclasses.replace(self.manifest.text, tokenizer_file=TOKENIZER_NAME)
        self.tokenizer = Tokenizer.from_config(text_cfg, self.folder)
        self._image = Tower(
            self._session("image", threads), self.manifest.towers["image"].spec, self.embed_dim, max_rows=IMAGE_ROWS
        )
        self._text = Tower(self._session("text", threads), self.manifest.towers["text"].spec, self.embed_dim)
        s, length = self.manifest.image.size, self.tokenizer.context_length
        self._image.check_fixed_dims(2, s, "image size")
        self._text.check_fixed_dims(1, length, "context length")

    def __repr__(self) -> str:
        return f"OnnxEmbedder({str(self.folder)!r}, provider={self.provider!r}, form={self.form!r})"

    def describe(self) -> str:
        """One line for a user: which model, which form, where it runs."""
        m = self.manifest
        where = "ONNX Runtime CPU"
        if self.provider == "qnn":
            from .qnn_ep import htp_emulated

            chip = m.chipset or {}
            built = f"QNN HTP {chip.get('htp_arch', '?')}, built for {chip.get('name', 'an unnamed chip')}"
            where = (f"the HTP emulated on this CPU ({built}; correct, not device speed)" if htp_emulated()
                     else f"Hexagon NPU ({built})")
        precision = "" if self.form == "float" else f" {m.precision}"
        return (
            f"model {model_label(model_name(self), self.model_id)}, {self.embed_dim}-d, from {self.folder}: "
            f"{_FORM_TEXT[self.form]}{precision} towers on {where}"
        )

    def _check_combination(self) -> None:
        if self.provider == "cpu" and self.form == "ctx":
            raise RuntimeConfigError(
                f"{self.folder}: form 'ctx' (EPContext) runs only on the NPU: use --provider qnn, "
                "or --form float / qdq on the CPU"
            )
        if self.provider == "qnn" and self.form == "float":
            raise RuntimeConfigError(
                f"{self.folder}: the float graphs are not an NPU target: use --form ctx (compiled) "
                "or qdq with --provider qnn, or --provider cpu for float"
            )
        hint = rebuild_hint(self.folder, self.manifest)
        for tower in ("image", "text"):
            if tower not in self.manifest.towers:
                raise RuntimeConfigError(f"{self.folder}: the manifest has no {tower} tower; {hint}")
            files = self.manifest.towers[tower].files
            if self.form not in files:
                raise RuntimeConfigError(
                    f"{self.folder}: no {self.form!r} {tower} tower (the manifest lists "
                    f"{', '.join(sorted(files))}); {hint}"
                )
            if not (self.folder / files[self.form]).is_file():
                raise RuntimeConfigError(
                    f"{self.folder / files[self.form]}: the {tower} tower's {self.form!r} file named by "
                    f"the manifest is missing; {hint}"
                )

    def _verify(self) -> None:
        """The files this form loads against the manifest's SHA-256 (`manifest.verify_files`; remembered in the
        user data folder, so only a changed file is hashed again)."""
        names = [TOKENIZER_NAME]
        for tower in ("image", "text"):
            names += form_files(self.manifest.towers[tower].files, self.form)
        verify_artifacts(self.folder, self.manifest, names)

    def _session(self, tower: str, threads: int) -> ort.InferenceSession:
        path = self.folder / self.manifest.towers[tower].files[self.form]
        if self.provider == "qnn":
            # imports onnxruntime-qnn's registration code only when asked
            from .qnn_ep import QnnUnavailableError, device_htp_arch, qnn_session

            target = qnn_target(self.manifest.chipset)
            device_arch = device_htp_arch()
            if device_arch is not None and target["htp_arch"] is not None and device_arch != target["htp_arch"]:
                chip = (self.manifest.chipset or {}).get("name")
                raise RuntimeConfigError(
                    f"{self.folder}: built for {chip} (HTP v{target['htp_arch']}), but this NPU is an "
                    f"HTP v{device_arch}: "
                    f"{rebuild_hint(self.folder, self.manifest, chip=f'a chip with HTP v{device_arch}')} "
                    "(`python -m export.compile --list-chipsets` names them)"
                )
            try:
                return qnn_session(path, threads=threads, **target)
            except QnnUnavailableError:
                raise
            except RuntimeError as error:
                if self.form != "ctx":
                    raise  # names the graph and what the HTP rejected
                chip = self.manifest.chipset or {}
                raise RuntimeConfigError(
                    f"{_first_line(error)}; {self.folder} was compiled for {chip.get('name')} "
                    f"(HTP {chip.get('htp_arch')}): for another Snapdragon, "
                    f"{rebuild_hint(self.folder, self.manifest, chip='YOUR CHIP')} "
                    "(`python -m export.compile --list-chipsets` names them)"
                ) from error
        try:
            return cpu_session(path, threads=threads)
        except Exception as error:  # ONNX Runtime's own exception types (InvalidProtobuf, Fail, ...)
            if not type(error).__module__.startswith("onnxruntime"):
                raise
            raise RuntimeConfigError(
                f"{path}: ONNX Runtime cannot load it ({_first_line(error)}); {rebuild_hint(self.folder, self.manifest)}"
            ) from None

    def embed_images(
        self, images: Sequence[ImageInput], *, batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """(N, D) float32, rows L2-normalised. Raises ImageDecodeError naming a bad input.

        Photos go through the tower IMAGE_ROWS at a time; the next rows' photos are decoded (JPEG at
        reduced DCT scale, `transform.load_image`) in `decode_threads` threads while the tower runs
        on the current ones, so decoding and the tower overlap even within one call."""
        out = np.zeros((len(images), self.embed_dim), np.float32)
        self._image.batch_step(batch_size)  # validates it; the tower takes IMAGE_ROWS rows per run
        step = max(self._image.fixed_batch or 1, min(batch_size, IMAGE_ROWS))
        bar = tqdm(total=len(images), desc="images", unit="photo", disable=not progress)
        for start, pixels in self._pixel_batches(images, step):
            out[start : start + len(pixels)] = self.encode_images(pixels)
            bar.update(len(pixels))
        bar.close()
        return l2_normalize(out)

    def _pixel_batches(self, images: Sequence[ImageInput], step: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start, (B, 3, S, S) float32) per batch of `step` photos, decoded one batch ahead."""
        cfg = self.manifest.image
        if self.decode_threads < 1 or len(images) <= 1:
            for start in range(0, len(images), step):
                yield start, np.stack([preprocess(x, cfg) for x in images[start : start + step]])
            return
        with ThreadPoolExecutor(self.decode_threads, thread_name_prefix="edge-gcl-decode") as pool:

            def submit(start: int) -> list[Future[np.ndarray]]:
                return [pool.submit(preprocess, x, cfg) for x in images[start : start + step]]

            pending = submit(0)
            try:
                for start in range(0, len(images), step):
                    current, pending = pending, submit(start + step)
                    yield start, np.stack([f.result() for f in current])
            finally:
                for f in pending:
                    f.cancel()

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


class Tower:
    """One ONNX Runtime session checked against its manifest contract (`TowerSpec`): its inputs' names and
    dtypes, fixed dims, and `run` in batches of at most `max_rows` rows. The embedder's towers and other
    graphs run on edge-gcl's sessions (the OCR sentence encoder, `edge_gcl.ocr.meaning`) use it."""

    def __init__(
        self, session: ort.InferenceSession, spec: TowerSpec, embed_dim: int, *, max_rows: int | None = None
    ) -> None:
        self.session = session
        self.max_rows = max_rows  # rows per run of a dynamic-batch graph (None: all at once)
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
        last chunk padded with zero rows (dropped from the output); a dynamic one `max_rows`."""
        feeds = {k: np.ascontiguousarray(v, dtype=self.input_dtypes[k]) for k, v in feeds.items()}
        n = len(next(iter(feeds.values())))
        step = self.fixed_batch or self.max_rows or max(n, 1)
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
    # ORT's worker threads otherwise spin after each run, taking the cores the photo decoders need
    # (12 MP ingest, 2 cores: 25 instead of 31 CPU-ms per photo, ~25% more photos/s).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def cpu_session(path: Path, *, threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime session of the graph at `path` on the CPU provider, with edge-gcl's session options
    (`threads`: intra-op threads, 0 for ONNX Runtime's default)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), _session_options(threads), providers=["CPUExecutionProvider"])


def qnn_target(chipset: dict | None) -> dict[str, int | None]:
    """`soc_model`/`htp_arch` for `edge_gcl.qnn_ep` from a manifest's chipset ({"htp_arch": "v75", ...}): the
    Hexagon target every graph of an artifacts folder runs on (towers, OCR, sentence encoder)."""
    chipset = chipset or {}
    soc_model, htp_arch = chipset.get("soc_model"), chipset.get("htp_arch")
    return {
        "soc_model": int(soc_model) if soc_model is not None else None,
        "htp_arch": int(str(htp_arch).removeprefix("v")) if htp_arch is not None else None,
    }


def form_files(files: dict[str, str], form: str) -> list[str]:
    """The files a graph of `form` loads, as a tower's manifest entry names them: its ONNX file, and the
    EPContext binary beside a compiled (ctx) graph."""
    return [files[form]] + ([files["ctx_bin"]] if form == "ctx" and "ctx_bin" in files else [])


def load_embedder(
    spec: str | Path | Embedder, *, provider: Provider = "cpu", form: Form | None = None, device: str | None = None
) -> Embedder:
    """An `Embedder` from what a user names.

    - an `Embedder`: returned as is;
    - an artifacts folder (holds `manifest.json`): `OnnxEmbedder(spec, provider=provider, form=form)`;
    - anything else (a preset name like "default", a checkpoint folder, ...): the PyTorch model,
      `TorchEmbedder(load_model(spec), device=device)` from `edge_gcl.models` (imports torch; `device`
      is a `--device` spelling, default the CPU). Without torch installed that is a
      `RuntimeConfigError` saying how to get either.

    `device` is for PyTorch models only: naming one (other than auto, or cpu with the cpu provider) with an
    artifacts folder is a `RuntimeConfigError` (artifacts choose where they run with `provider`).
    """
    if isinstance(spec, Embedder):
        return spec
    if is_artifacts_folder(spec):
        if device not in (None, "auto") and not (device == "cpu" and provider == "cpu"):
            raise RuntimeConfigError(f"{spec}: --device {device} is for PyTorch models; an artifacts folder runs on "
                                     "ONNX Runtime (--provider cpu or qnn)")
        return OnnxEmbedder(spec, provider=provider, form=form)
    if Path(spec).suffix.lower() == ".onnx":
        raise RuntimeConfigError(
            f"{spec}: one .onnx file is not a model edge-gcl runs: --model takes the artifacts folder "
            "`python -m export.compile` builds (manifest.json, both towers, the tokenizer)"
        )
    if provider != "cpu" or form is not None:
        raise RuntimeConfigError(
            f"{spec}: --provider {provider} / --form {form} need an artifacts folder (manifest.json) "
            f"from `python -m export.compile`, not a PyTorch model"
        )
    if importlib.util.find_spec("torch") is None:
        raise RuntimeConfigError(
            f"{spec}: not an artifacts folder, and running a PyTorch model needs torch "
            "(pip install 'edge-gcl[train]'); on a device, pass the artifacts folder that "
            "`python -m export.compile` built"
        )
    from .models import TorchEmbedder, load_model

    name = Path(spec).name if Path(spec).exists() else str(spec)  # as export.compile records it
    # seed 0: a fresh (untrained) preset such as `lite` gets the same weights, so the same model id, in every
    # process; otherwise an index built with it could never be opened again
    return TorchEmbedder(load_model(str(spec), seed=0), device=device or "cpu", name=name)


def describe(embedder: Embedder) -> str:
    """One line naming the model and where it runs, for the CLI and the app."""
    own = getattr(embedder, "describe", None)
    if callable(own):
        return own()
    device = getattr(embedder, "device", None)
    where = "the CPU" if device is None or str(device) == "cpu" else str(device)
    return f"model {model_label(model_name(embedder), embedder.model_id)}, {embedder.embed_dim}-d: PyTorch float32 on {where}"

"""The `lite` family's stem cache: the frozen pretrained stems run once per source, their outputs kept.

A `lite` model trains only its top layers (`LiteDualEncoder`: EfficientNet-Lite's last blocks and
MiniLM's last layers, plus heads). The stems below them never change, so their outputs are computed
once per source and cached on disk: images as a centre view plus `image_views - 1` augmented views,
captions as hidden states with their masks. The cache is keyed by a hash of the stem weights, the
preprocessing and that source's photos, so every later run (other seeds, losses, mixes of the same
sources) starts at once.

The stems run on the training device: PyTorch on CUDA or MPS; ONNX Runtime on the CPU, where its
kernels beat eager PyTorch (about 3x on EfficientNet-Lite0, `benchmarks/results/towers.json`).
Photos are decoded by `workers` DataLoader processes, in order; the augmented views draw from one
seeded stream in that order, so the cache is the same whichever device or worker count built it
(up to float rounding between backends).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import Pairs
from ..models import DualEncoder
from ..transform import ImageDecodeError, load_image, preprocess, random_resized_crop, to_array
from .config import TrainConfig

Log = Callable[..., None]
IMAGE_CHUNK = 32  # photos through the image stem at once
TEXT_CHUNK = 256  # captions through the text stem at once


class StemCache:
    """Outputs of the frozen stems.

    images: (N, V, C, H, W) float16, view 0 the centre crop; hidden: (M, L, W) float16 text hidden
    states with their (M, L) masks; `caption_rows[i]` indexes photo i's captions.
    """

    def __init__(self, images: np.ndarray, hidden: np.ndarray, masks: np.ndarray, caption_rows: list[np.ndarray],
                 *, built_s: float = 0.0):
        self.images, self.hidden, self.masks, self.caption_rows = images, hidden, masks, caption_rows
        self.built_s = built_s  # seconds spent computing it now (0: read from disk)

    @classmethod
    def build(cls, model: DualEncoder, pairs: Pairs, cfg: TrainConfig, device: torch.device, *,
              log: Log = print) -> tuple[StemCache, Pairs]:
        key = _cache_key(model, pairs, cfg)
        folder = Path(cfg.cache_dir).expanduser() / key
        if (folder / "done").exists():
            log(f"stem cache: {folder}")
            z = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in ("images", "hidden", "masks", "keep")}
            kept = _kept(pairs, z["keep"])
            return cls(np.asarray(z["images"]), np.asarray(z["hidden"]), np.asarray(z["masks"]), _caption_rows(kept)), kept
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            stems = _StemRunner(model, device, Path(tmp))
            _check_memory(stems, pairs, model, cfg)
            images, keep = _cache_images(stems, pairs, model, cfg)
            kept = _kept(pairs, keep)
            hidden, masks = _cache_texts(stems, kept, model)
        folder.mkdir(parents=True, exist_ok=True)
        for name, arr in (("images", images), ("hidden", hidden), ("masks", masks), ("keep", np.asarray(keep))):
            np.save(folder / f"{name}.npy", arr)
        (folder / "done").write_text(json.dumps({"photos": len(kept), "views": cfg.image_views, "device": str(device)}))
        return cls(images, hidden, masks, _caption_rows(kept), built_s=time.perf_counter() - t0), kept

    @classmethod
    def build_sources(cls, model: DualEncoder, sources: list[Pairs], cfg: TrainConfig, device: torch.device, *,
                      log: Log = print) -> tuple[StemCache, Pairs]:
        """One cache per source (so any mix of sources reuses them), concatenated in source order."""
        parts = [cls.build(model, source, cfg, device, log=log) for source in sources]
        kept = Pairs()
        for _, k in parts:
            kept.extend(k)
        if len(parts) == 1:
            return parts[0][0], kept
        caches = [c for c, _ in parts]
        cat = {n: np.concatenate([getattr(c, n) for c in caches]) for n in ("images", "hidden", "masks")}
        return cls(cat["images"], cat["hidden"], cat["masks"], _caption_rows(kept),
                   built_s=sum(c.built_s for c in caches)), kept

    def caption_features(self, chunk: int = 4096) -> np.ndarray:
        """(photos, W) float32: each photo's captions, mean-pooled over tokens and then over captions."""
        pooled = np.zeros((len(self.hidden), self.hidden.shape[-1]), np.float32)
        for start in range(0, len(self.hidden), chunk):
            h, m = self.hidden[start : start + chunk].astype(np.float32), self.masks[start : start + chunk]
            pooled[start : start + chunk] = (h * m[:, :, None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1)
        return np.stack([pooled[rows].mean(0) for rows in self.caption_rows])


class CachedBatches:
    """A step's inputs to the trainable top layers, from the cache: on the training device.

    On CUDA the cache moves to GPU memory once when it takes at most `gpu_fraction` of it (a few GB
    for the default recipe's 15k photos); otherwise each step's rows are gathered on the host and
    copied from pinned memory.
    """

    def __init__(self, cache: StemCache, device: torch.device, *, gpu_fraction: float = 0.4) -> None:
        self.cache, self.device = cache, device
        self.images: np.ndarray | torch.Tensor = cache.images
        self.hidden: np.ndarray | torch.Tensor = cache.hidden
        if device.type == "cuda":
            size = cache.images.nbytes + cache.hidden.nbytes
            if size <= gpu_fraction * torch.cuda.get_device_properties(device).total_memory:
                self.images = torch.from_numpy(np.ascontiguousarray(cache.images)).to(device)
                self.hidden = torch.from_numpy(np.ascontiguousarray(cache.hidden)).to(device)

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x))
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True).float()

    def images_of(self, photos: np.ndarray, views: np.ndarray) -> torch.Tensor:
        """(b, C, H, W) float32 image-stem outputs of `photos`, each in its `view`."""
        if isinstance(self.images, torch.Tensor):  # already on the device
            x = self.images[torch.as_tensor(photos, device=self.device), torch.as_tensor(views, device=self.device)].float()
        else:
            x = self._to_device(self.images[photos, views])
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cpu" else x

    def text_of(self, rows: np.ndarray) -> list[torch.Tensor]:
        """[(b, l, W) float32 text-stem hidden states, their (b, l) masks], trimmed to the longest caption:
        the top layers never see padding columns."""
        mask = self.cache.masks[rows]  # (b, L) on the host
        length = int(mask.sum(1).max())
        if isinstance(self.hidden, torch.Tensor):
            hidden = self.hidden[torch.as_tensor(rows, device=self.device), :length].float()
        else:
            hidden = self._to_device(self.hidden[rows, :length])
        return [hidden, torch.from_numpy(np.ascontiguousarray(mask[:, :length])).to(self.device, non_blocking=True)]


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux); None where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(stems: _StemRunner, pairs: Pairs, model: DualEncoder, cfg: TrainConfig) -> None:
    """Refuse a cache that cannot fit in memory (it is held whole while training) before computing it."""
    size = model.config.image.size
    per_view = stems.images(np.zeros((1, 3, size, size), np.float32)).nbytes  # float16 stem output of one view
    ids = np.zeros((1, model.config.text.context_length), np.int64)
    per_caption = stems.texts(ids, np.ones_like(ids)).nbytes
    need = len(pairs) * cfg.image_views * per_view + sum(map(len, pairs.captions)) * per_caption
    have = available_memory_bytes()
    if have is not None and need > 0.8 * have:
        raise ValueError(f"the lite stem cache of {len(pairs):,} photos x {cfg.image_views} views needs "
                         f"{_size(need)} of memory and {_size(have)} is available: train on fewer "
                         "photos or --image-views, or a TinyCLIP model (decoded on the fly, no cache)")


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _kept(pairs: Pairs, keep) -> Pairs:
    kept = Pairs([pairs.images[i] for i in keep], [pairs.captions[i] for i in keep], Counter(pairs.skipped))
    if len(pairs) > len(keep):
        kept.skipped["corrupt image"] += len(pairs) - len(keep)
    return kept


def _caption_rows(pairs: Pairs) -> list[np.ndarray]:
    starts = np.cumsum([0] + [len(c) for c in pairs.captions])
    return [np.arange(starts[i], starts[i + 1]) for i in range(len(pairs))]


def _cache_key(model: DualEncoder, pairs: Pairs, cfg: TrainConfig) -> str:
    h = hashlib.sha256()
    for name, t in list(model.visual.stem.state_dict().items()) + list(model.text.stem.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes()[:4096])
    h.update(json.dumps([dataclasses.asdict(model.config.image), dataclasses.asdict(model.config.text)]).encode())
    h.update(json.dumps([[str(Path(p).resolve()), c] for p, c in zip(pairs.images, pairs.captions, strict=True)]).encode())
    h.update(f"views={cfg.image_views},seed=0".encode())
    return h.hexdigest()[:16]


class _StemRunner:
    """The two frozen stems on `device`: ONNX Runtime on the CPU, PyTorch elsewhere. numpy in, float16 out."""

    def __init__(self, model: DualEncoder, device: torch.device, tmp: Path) -> None:
        self.model, self.device = model, device
        if device.type == "cpu":
            size, length = model.config.image.size, model.config.text.context_length
            self._image = _ort_session(model.visual.stem, (torch.zeros(1, 3, size, size),), tmp / "i.onnx")
            ids = torch.zeros(1, length, dtype=torch.int64)
            self._text = _ort_session(model.text.stem, (ids, torch.ones_like(ids)), tmp / "t.onnx")

    @torch.no_grad()
    def images(self, pixels: np.ndarray) -> np.ndarray:  # (b, 3, S, S) -> (b, C, H, W) float16
        if self.device.type == "cpu":
            return self._image.run(None, {"x0": pixels})[0].astype(np.float16)
        stem = self.model.visual.stem.eval()
        return stem(torch.from_numpy(pixels).to(self.device)).half().cpu().numpy()

    @torch.no_grad()
    def texts(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:  # (b, L) each -> (b, L, W) float16
        if self.device.type == "cpu":
            return self._text.run(None, {"x0": ids, "x1": mask})[0].astype(np.float16)
        stem = self.model.text.stem.eval()
        y = stem(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))
        return y.half().cpu().numpy()


def _ort_session(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path):
    import onnxruntime as ort

    names = [f"x{i}" for i in range(len(example))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), example, str(path), input_names=names, output_names=["y"],
            dynamic_axes={**{n: {0: "b"} for n in names}, "y": {0: "b"}}, opset_version=17, dynamo=False,
        )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class _Decoded(torch.utils.data.Dataset):
    """Photo i decoded (at the draft size that covers the model's input), or None when it cannot be."""

    def __init__(self, pairs: Pairs, draft_size: int) -> None:
        self.paths, self.draft_size = [str(p) for p in pairs.images], draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return load_image(self.paths[i], draft_size=self.draft_size)
        except ImageDecodeError:
            return None


def _cache_images(stems: _StemRunner, pairs: Pairs, model: DualEncoder, cfg: TrainConfig) -> tuple[np.ndarray, list[int]]:
    icfg, views = model.config.image, cfg.image_views
    decoded = torch.utils.data.DataLoader(_Decoded(pairs, icfg.size), batch_size=None, num_workers=max(0, cfg.workers),
                                          prefetch_factor=8 if cfg.workers > 0 else None)
    out, keep = None, []
    rng = np.random.default_rng(0)  # augmentations are part of the cache, fixed for all runs, drawn in photo order
    batch: list[np.ndarray] = []
    ok: list[int] = []

    def flush() -> None:
        nonlocal out
        y = stems.images(np.stack(batch))  # (b * V, C, H, W)
        y = y.reshape(len(ok), views, *y.shape[1:])
        if out is None:
            out = np.zeros((len(pairs), views, *y.shape[2:]), np.float16)
        out[len(keep) : len(keep) + len(ok)] = y
        keep.extend(ok)
        batch.clear()
        ok.clear()

    for i, img in enumerate(tqdm(decoded, total=len(pairs), desc="caching image stems", unit="photo", mininterval=2)):
        if img is not None:
            batch += [preprocess(img, icfg)] + [to_array(random_resized_crop(img, icfg, rng), icfg) for _ in range(views - 1)]
            ok.append(i)
        if ok and ((i + 1) % IMAGE_CHUNK == 0 or i == len(pairs) - 1):  # chunks of photo order, as caches always had
            flush()
    if out is None:
        raise ValueError("no training photo could be decoded")
    return out[: len(keep)], keep


def _cache_texts(stems: _StemRunner, pairs: Pairs, model: DualEncoder) -> tuple[np.ndarray, np.ndarray]:
    tok = model.tokenizer()
    texts = [c for caps in pairs.captions for c in caps]
    hidden, masks = None, np.zeros((len(texts), tok.context_length), np.int64)
    for start in tqdm(range(0, len(texts), TEXT_CHUNK), desc="caching text stems", unit_scale=TEXT_CHUNK):
        ids, mask = tok(texts[start : start + TEXT_CHUNK])
        y = stems.texts(ids, mask)  # (b, L, W)
        if hidden is None:
            hidden = np.zeros((len(texts), *y.shape[1:]), np.float16)
        hidden[start : start + len(ids)], masks[start : start + len(ids)] = y, mask
    return hidden, masks

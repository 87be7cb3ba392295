"""Fine-tune a dual encoder with GCL (or the CL / pairwise baselines) on image-caption pairs.

    edge-gcl train --data ../shared/data/flickr8k/captions.txt --split ../shared/data/flickr8k/splits.json:train \
                   --loss gcl --steps 1000 --out runs/gcl

Recipe, step by step:
1. Read the pairs (Flickr CSV, COCO JSON, LLaVA JSON); bad rows are skipped and counted. Each
   source can be restricted to a split of its own (`--split FILE:SPLIT`, matched to `--data` by
   order), and `--exclude FILE:SPLIT` drops a held-out list's photos from every source.
2. Build the model. For the `lite` family the frozen stems are run once over each source with ONNX
   Runtime and their outputs cached (images: a centre view plus augmented views; captions: hidden
   states), keyed by a hash of the stem weights and that source's photos, so every later run (other
   seeds, losses, or mixes of the same sources) starts at once. Other families decode every photo
   once up front (undecodable ones are dropped and counted, as the stem cache does) and then on the
   fly in DataLoader workers.
3. Every step draws a batch of distinct photos (a seeded permutation per epoch) and one random
   caption of each, so a batch never holds two positives of one photo. The batch for step s
   depends only on (seed, s): a resumed run sees exactly the batches it would have seen.
4. AdamW, warm-up then cosine (or constant) schedule, learnable temperature (start: `--temperature`, else the
   model's own) with the logit scale clamped at 100 and learning at `--temperature-lr-mult` times the lr.
5. Checkpoints every `checkpoint_every` steps under `out/checkpoints/step_N/` (model, optimizer,
   step); the final model is saved to `out/` itself so `--model out` works everywhere.

A recipe (`--recipe default`: `edge_gcl/recipes/default.json`) names the data, splits, held-out
lists, model and schedule of a shipped model in one file; flags override it (see `load_recipe`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint
from .config import ImagePreprocess
from .data import Pairs, parse_split_spec, read_pairs, read_split
from .models import DualEncoder, load_model
from .transform import ImageDecodeError, load_image, preprocess, random_resized_crop, to_array

CACHE_DIR = Path.home() / ".cache" / "edge-gcl" / "features"
RECIPE_DIR = Path(__file__).parent / "recipes"
DEFAULT_DATA_ROOT = "../shared/data"  # where a recipe's ${data} points unless --data-root says otherwise
WHOLE_SOURCE = "all"  # a --split entry that keeps its whole source


@dataclass
class TrainConfig:
    model: str = "lite"
    loss: str = "gcl"
    data: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    # One "FILE:SPLIT" per --data source, by order ("all", or no entry, keeps the whole source). A plain
    # string (configs from before per-source splits) restricts the sources in that splits file's folder.
    split: str | list[str] | None = None
    exclude: list[str] = field(default_factory=list)  # "FILE:SPLIT": photos no source may contribute (held-out)
    batch_size: int = 256
    steps: int | None = None
    epochs: float = 10.0
    lr: float = 5e-4
    weight_decay: float = 0.05
    schedule: str = "cosine"
    warmup: int = 50
    temperature: float | None = None  # initial tau (learnable); None keeps the model's own (lite: 0.07)
    temperature_lr_mult: float = 1.0  # the logit scale learns at lr x this (a short fine-tune needs ~50 to move it)
    seed: int = 0
    out: str = "runs/train"
    checkpoint_every: int = 500
    resume: bool = False
    workers: int = 2
    image_views: int = 3  # cached lite stems: centre view + (image_views - 1) augmented views
    # >0: batches are built from whole groups of about this many photos whose captions read alike
    # (k-means on the cached text-stem features), so in-batch negatives share the query's words.
    hard_negatives: int = 0
    # GCL: cross-modal cosines lose this (times the modality share not in common) in the softmax (GCLLoss)
    modality_margin: float = 0.0
    # GCL: the weight of the note<->photo positives (t->i, i->t) against the other four's 1 (GCLLoss)
    text_photo_weight: float = 1.0
    # the note fused into each sample's photo+note: "same" caption as its text (CLIP-SF, the paper), or
    # "other": another caption of that photo, as a library's photo+note and a typed query differ
    pair_caption: str = "same"  # CL has no photo+note: it trains alike with either
    cache_dir: str = str(CACHE_DIR)
    recipe: str | None = None  # the recipe these options came from (a record; flags may have changed them)


# ----------------------------------------------------------------------------- data
def source_splits(cfg: TrainConfig) -> list[str | None]:
    """The split spec of each --data source, by order (None: the whole source)."""
    if isinstance(cfg.split, str):  # older configs: one split for the sources in its file's folder
        folder = parse_split_spec(cfg.split)[0].resolve().parent
        return [cfg.split if Path(d).resolve().parent == folder else None for d in cfg.data]
    specs = list(cfg.split or [])
    if len(specs) > len(cfg.data):
        raise ValueError(f"{len(specs)} --split for {len(cfg.data)} --data sources: give at most one split per "
                         f"source, in the order of --data ('{WHOLE_SOURCE}' keeps a whole source)")
    return listed_splits(specs, len(cfg.data))


def listed_splits(specs: Sequence[str | None], sources: int) -> list[str | None]:
    """Per-source split specs as given, one per source: "all", "" or no entry is None (the whole source)."""
    return [None if s in (None, "", WHOLE_SOURCE) else s for s in specs] + [None] * (sources - len(specs))


def load_training_sources(cfg: TrainConfig, *, log=print) -> list[Pairs]:
    """Each --data source, restricted to its own split and stripped of every --exclude list."""
    if not cfg.data:
        raise ValueError("no training data: give --data (and --images for JSON layouts), or --recipe")
    excluded: set[str] = set()
    for spec in cfg.exclude:
        excluded |= read_split(*parse_split_spec(spec))
    sources = []
    for i, (data, spec) in enumerate(zip(cfg.data, source_splits(cfg), strict=True)):
        images = cfg.images[i] if i < len(cfg.images) else None
        source = read_pairs(data, images)
        note = "all"
        if spec is not None:
            names = read_split(*parse_split_spec(spec))
            n_all, source = len(source), source.subset(names)
            if not len(source):
                raise ValueError(f"--split {spec}: none of its {len(names)} photos is in {data} ({n_all} photos); "
                                 "splits are matched to --data sources by order")
            note = f"split {parse_split_spec(spec)[1]}"
        if excluded:
            n_before, source = len(source), source.without(excluded)
            if n_before > len(source):
                note += f", {n_before - len(source)} held-out photos excluded"
            if not len(source):
                raise ValueError(f"{data}: every photo is in an --exclude list")
        log(f"data: {data}: {len(source)} photos, {sum(map(len, source.captions))} captions ({note})")
        sources.append(source)
    return sources


def load_training_pairs(cfg: TrainConfig, *, log=print) -> Pairs:
    """All sources of `cfg` in one `Pairs` (see `load_training_sources`)."""
    pairs = Pairs()
    for source in load_training_sources(cfg, log=log):
        pairs.extend(source)
    return pairs


def load_recipe(name: str | Path, *, data_root: str | Path = DEFAULT_DATA_ROOT) -> TrainConfig:
    """A recipe: the TrainConfig of a named model in one JSON file.

    `name` is a file of `edge_gcl/recipes/` (`default` -> `default.json`) or a path. In its strings,
    `${data}` becomes `data_root` (the shared data folder) and `${recipes}` the recipes folder, so the
    committed held-out lists travel with the package. Keys starting with `_` are comments.
    """
    path = Path(name)
    if not path.suffix and not path.exists():
        path = RECIPE_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPE_DIR.glob("*.json") if not p.stem.endswith("-splits"))
        raise FileNotFoundError(f"recipe {name!r}: no such file or named recipe ({', '.join(known)})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a recipe is a JSON object of training options")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in fields)
    if unknown:
        raise ValueError(f"{path}: unknown training options {unknown}")

    def expand(v):
        if isinstance(v, str):
            return v.replace("${data}", str(data_root)).replace("${recipes}", str(RECIPE_DIR))
        return [expand(x) for x in v] if isinstance(v, list) else v

    options = {k: expand(v) for k, v in raw.items() if not k.startswith("_")}
    return dataclasses.replace(TrainConfig(), **options, recipe=str(name))


def batch_indices(n: int, batch_size: int, seed: int, step: int, groups: np.ndarray | None = None) -> np.ndarray:
    """The photos of step `step`: a slice of the seeded permutation of its epoch. With `groups` (a
    group label per photo), the permutation keeps each group's photos side by side, the groups in
    a random order: a batch then holds a few whole groups, each photo still once per epoch."""
    per_epoch = max(1, n // batch_size)
    epoch, b = divmod(step, per_epoch)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    if groups is not None:
        group_rank = rng.permutation(int(groups.max()) + 1)[groups[order]]  # (n,) each photo's group's place
        order = order[np.argsort(group_rank, kind="stable")]
    return order[b * batch_size : (b + 1) * batch_size]


def caption_groups(features: np.ndarray, group_size: int, seed: int, iterations: int = 15) -> np.ndarray:
    """Spherical k-means labels (n,) of per-photo caption features (n, d) into about n / `group_size`
    groups. Seeded, so every rank of a distributed run computes the same groups."""
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    n, k = len(x), max(1, round(len(x) / group_size))
    rng = np.random.default_rng([seed, 4])
    centres = np.empty((k, x.shape[1]), x.dtype)  # k-means++ seeding: far-apart starts, no topic split in two
    centres[0] = x[rng.integers(n)]
    dist = 1 - x @ centres[0]
    for j in range(1, k):
        p = np.maximum(dist, 0) ** 2
        centres[j] = x[rng.choice(n, p=p / p.sum()) if p.sum() > 0 else rng.integers(n)]
        dist = np.minimum(dist, 1 - x @ centres[j])
    for _ in range(iterations):
        labels = np.argmax(x @ centres.T, axis=1)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, x)
        empty = np.bincount(labels, minlength=k) == 0
        sums[empty] = x[rng.choice(n, int(empty.sum()), replace=False)]  # an empty group restarts at a photo
        centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    _, labels = np.unique(np.argmax(x @ centres.T, axis=1), return_inverse=True)  # labels 0..groups-1
    return labels


def caption_choice(n_captions: np.ndarray, seed: int, step: int) -> np.ndarray:
    rng = np.random.default_rng([seed, step, 1])
    return (rng.random(len(n_captions)) * n_captions).astype(np.int64)


def _fuses_other_caption(cfg: TrainConfig) -> bool:
    """Whether each step encodes a second caption per photo for its photo+note (CL has no photo+note)."""
    return cfg.pair_caption == "other" and cfg.loss != "cl"


def pair_caption_choice(n_captions: np.ndarray, choice: np.ndarray, seed: int, step: int) -> np.ndarray:
    """Per sample, a caption other than `choice` for its photo+note (the same one when it has only one)."""
    rng = np.random.default_rng([seed, step, 4])
    shift = 1 + (rng.random(len(n_captions)) * np.maximum(n_captions - 1, 1)).astype(np.int64)  # 1..n-1
    return np.where(n_captions > 1, (choice + shift) % n_captions, choice)


# ----------------------------------------------------------------------------- cached stems (lite)
class StemCache:
    """Outputs of the frozen stems, computed once with ONNX Runtime.

    images: (N, V, C, H, W) float16, view 0 the centre crop; text: (M, L, W) float16 hidden
    states with their (M, L) masks; `caption_rows[i]` indexes photo i's captions.
    """

    def __init__(self, images: np.ndarray, hidden: np.ndarray, masks: np.ndarray, caption_rows: list[np.ndarray]):
        self.images, self.hidden, self.masks, self.caption_rows = images, hidden, masks, caption_rows

    @classmethod
    def build(cls, model: DualEncoder, pairs: Pairs, cfg: TrainConfig) -> tuple[StemCache, Pairs]:
        key = _cache_key(model, pairs, cfg)
        folder = Path(cfg.cache_dir).expanduser() / key
        if (folder / "done").exists():
            print(f"stem cache: {folder}")
            z = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in ("images", "hidden", "masks", "keep")}
            kept = Pairs([pairs.images[i] for i in z["keep"]], [pairs.captions[i] for i in z["keep"]], pairs.skipped)
            if len(pairs) > len(z["keep"]):
                kept.skipped["corrupt image"] += len(pairs) - len(z["keep"])
            return cls(np.asarray(z["images"]), np.asarray(z["hidden"]), np.asarray(z["masks"]), _caption_rows(kept)), kept
        with tempfile.TemporaryDirectory() as tmp:
            image_stem = _ort_session(model.visual.stem, (torch.zeros(1, 3, model.config.image.size, model.config.image.size),), Path(tmp) / "i.onnx")
            ids0 = torch.zeros(1, model.config.text.context_length, dtype=torch.int64)
            text_stem = _ort_session(model.text.stem, (ids0, torch.ones_like(ids0)), Path(tmp) / "t.onnx")
            images, keep = _cache_images(image_stem, pairs, model, cfg)
            kept = Pairs([pairs.images[i] for i in keep], [pairs.captions[i] for i in keep], Counter(pairs.skipped))
            if len(pairs) > len(keep):
                kept.skipped["corrupt image"] += len(pairs) - len(keep)
            hidden, masks = _cache_texts(text_stem, kept, model)
        folder.mkdir(parents=True, exist_ok=True)
        for name, arr in (("images", images), ("hidden", hidden), ("masks", masks), ("keep", np.asarray(keep))):
            np.save(folder / f"{name}.npy", arr)
        (folder / "done").write_text(json.dumps({"photos": len(kept), "views": cfg.image_views}))
        return cls(images, hidden, masks, _caption_rows(kept)), kept


    @classmethod
    def build_sources(cls, model: DualEncoder, sources: list[Pairs], cfg: TrainConfig) -> tuple[StemCache, Pairs]:
        """One cache per source (so any mix of sources reuses them), concatenated in source order."""
        parts = [cls.build(model, source, cfg) for source in sources]
        kept = Pairs()
        for _, k in parts:
            kept.extend(k)
        if len(parts) == 1:
            return parts[0][0], kept
        caches = [c for c, _ in parts]
        cat = {n: np.concatenate([getattr(c, n) for c in caches]) for n in ("images", "hidden", "masks")}
        return cls(cat["images"], cat["hidden"], cat["masks"], _caption_rows(kept)), kept


    def caption_features(self, chunk: int = 4096) -> np.ndarray:
        """(photos, W) float32: each photo's captions, mean-pooled over tokens and then over captions."""
        pooled = np.zeros((len(self.hidden), self.hidden.shape[-1]), np.float32)
        for start in range(0, len(self.hidden), chunk):
            h, m = self.hidden[start : start + chunk].astype(np.float32), self.masks[start : start + chunk]
            pooled[start : start + chunk] = (h * m[:, :, None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1)
        return np.stack([pooled[rows].mean(0) for rows in self.caption_rows])


def _cached_text(model: DualEncoder, cache: StemCache, rows: np.ndarray) -> torch.Tensor:
    """Text features (B, D) of cached caption rows, through the trainable top layers."""
    mask = torch.from_numpy(cache.masks[rows])  # (B, L)
    length = int(mask.sum(1).max())  # trim padding columns: the top layers never see them
    return model.text.top(torch.from_numpy(cache.hidden[rows, :length]).float(), mask[:, :length])


def _caption_rows(pairs: Pairs) -> list[np.ndarray]:
    starts = np.cumsum([0] + [len(c) for c in pairs.captions])
    return [np.arange(starts[i], starts[i + 1]) for i in range(len(pairs))]


def _cache_key(model: DualEncoder, pairs: Pairs, cfg: TrainConfig) -> str:
    h = hashlib.sha256()
    for name, t in list(model.visual.stem.state_dict().items()) + list(model.text.stem.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().numpy().tobytes()[:4096])
    h.update(json.dumps([dataclasses.asdict(model.config.image), dataclasses.asdict(model.config.text)]).encode())
    h.update(json.dumps([[str(Path(p).resolve()), c] for p, c in zip(pairs.images, pairs.captions, strict=True)]).encode())
    h.update(f"views={cfg.image_views},seed=0".encode())
    return h.hexdigest()[:16]


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


def _cache_images(session, pairs: Pairs, model: DualEncoder, cfg: TrainConfig) -> tuple[np.ndarray, list[int]]:
    icfg, views, chunk = model.config.image, cfg.image_views, 32
    out, keep = None, []
    rng = np.random.default_rng(0)  # augmentations are part of the cache, fixed for all runs
    for start in tqdm(range(0, len(pairs), chunk), desc="caching image stems", unit_scale=chunk):
        batch, ok = [], []
        for i in range(start, min(start + chunk, len(pairs))):
            try:
                img = load_image(pairs.images[i], draft_size=icfg.size)
            except ImageDecodeError:
                continue
            batch += [preprocess(img, icfg)] + [to_array(random_resized_crop(img, icfg, rng), icfg) for _ in range(views - 1)]
            ok.append(i)
        if not ok:
            continue
        y = session.run(None, {"x0": np.stack(batch)})[0].astype(np.float16)  # (b * V, C, H, W)
        y = y.reshape(len(ok), views, *y.shape[1:])
        if out is None:
            out = np.zeros((len(pairs), views, *y.shape[2:]), np.float16)
        out[len(keep) : len(keep) + len(ok)] = y
        keep += ok
    if out is None:
        raise ValueError("no training photo could be decoded")
    return out[: len(keep)], keep


def _cache_texts(session, pairs: Pairs, model: DualEncoder) -> tuple[np.ndarray, np.ndarray]:
    tok = model.tokenizer()
    texts = [c for caps in pairs.captions for c in caps]
    hidden, masks = None, np.zeros((len(texts), tok.context_length), np.int64)
    for start in tqdm(range(0, len(texts), 256), desc="caching text stems", unit_scale=256):
        ids, mask = tok(texts[start : start + 256])
        y = session.run(None, {"x0": ids, "x1": mask})[0].astype(np.float16)  # (b, L, W)
        if hidden is None:
            hidden = np.zeros((len(texts), *y.shape[1:]), np.float16)
        hidden[start : start + len(ids)], masks[start : start + len(ids)] = y, mask
    return hidden, masks


# ----------------------------------------------------------------------------- on-the-fly pixels (other families)
def drop_undecodable(pairs: Pairs, cfg: ImagePreprocess) -> Pairs:
    """Decode every photo once; those that fail are dropped and counted (`skipped["corrupt image"]`, one
    per photo, as the stem cache counts them), so a batch never meets one. `Image.verify()` is not
    enough: a truncated JPEG passes it."""
    keep = []
    for i, path in enumerate(tqdm(pairs.images, desc="checking photos", unit="photo", mininterval=5)):
        try:
            load_image(path, draft_size=cfg.size)
            keep.append(i)
        except ImageDecodeError:
            pass
    kept = Pairs([pairs.images[i] for i in keep], [pairs.captions[i] for i in keep], Counter(pairs.skipped))
    if len(pairs) > len(keep):
        kept.skipped["corrupt image"] += len(pairs) - len(keep)
    if not keep:
        raise ValueError("no training photo could be decoded")
    return kept


class PixelBatches(torch.utils.data.Dataset):
    """Item s is the whole batch of step s: pixels (B, 3, S, S), ids and mask (B, L)."""

    def __init__(self, model: DualEncoder, pairs: Pairs, cfg: TrainConfig, start: int, steps: int,
                 shard: slice = slice(None)):
        self.pairs, self.cfg, self.start, self.steps, self.shard = pairs, cfg, start, steps, shard
        self.icfg, self.tok = model.config.image, model.tokenizer()
        self.n_caps = np.array([len(c) for c in pairs.captions])

    def __len__(self) -> int:
        return self.steps - self.start

    def __getitem__(self, i: int):
        step = self.start + i
        idx = batch_indices(len(self.pairs), self.cfg.batch_size, self.cfg.seed, step)
        choice = caption_choice(self.n_caps[idx], self.cfg.seed, step)
        pixels, texts = [], []
        for j, c in zip(idx[self.shard], choice[self.shard], strict=True):
            try:  # every photo decoded once before training (drop_undecodable); never swap in another
                img = load_image(self.pairs.images[j], draft_size=self.icfg.size)
            except ImageDecodeError as e:
                raise ImageDecodeError(f"{e} (it decoded before training began: was it changed? "
                                       "--resume continues from the last checkpoint)") from None
            rng = np.random.default_rng([self.cfg.seed, step, 2, int(j)])  # per photo: same on any rank
            pixels.append(to_array(random_resized_crop(img, self.icfg, rng), self.icfg))
            texts.append(self.pairs.captions[j][c])
        ids, mask = self.tok(texts)
        batch = [torch.from_numpy(np.stack(pixels)), torch.from_numpy(ids), torch.from_numpy(mask)]
        if _fuses_other_caption(self.cfg):
            pair_choice = pair_caption_choice(self.n_caps[idx], choice, self.cfg.seed, step)[self.shard]
            pair_ids, pair_mask = self.tok([self.pairs.captions[j][c] for j, c in zip(idx[self.shard], pair_choice, strict=True)])
            batch += [torch.from_numpy(pair_ids), torch.from_numpy(pair_mask)]
        return tuple(batch)


# ----------------------------------------------------------------------------- training
def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: weight decay on matrices only; the logit scale in a group of its own whose lr is
    `temperature_lr_mult` times the schedule's (the training loop sets every group's lr)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad and name != "logit_scale":
            (decay if p.ndim >= 2 and "embedding" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
              {"params": [model.logit_scale], "weight_decay": 0.0, "lr_mult": cfg.temperature_lr_mult}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def latest_checkpoint(out: Path) -> Path | None:
    steps = sorted((out / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    return steps[-1] if steps else None


def init_distributed() -> tuple[int, int]:
    """(rank, world size); under `torchrun` joins the gloo process group (CPU)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def average_gradients(model: nn.Module, world: int) -> None:
    """Every rank computed the global loss (see `edge_gcl.loss`): averaging gives the single-process gradient."""
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def train(cfg: TrainConfig) -> Path:
    """Train as the module docstring says. Under `torchrun --nproc_per_node W` each rank takes a
    contiguous 1/W of every global batch, the loss gathers all ranks' embeddings (negatives from the
    global batch) and gradients are averaged, so W processes train like one with the same batch
    (BatchNorm in trained conv blocks uses per-rank statistics, as in plain DDP)."""
    from .loss import create_loss

    if cfg.temperature is not None and not 0.01 <= cfg.temperature <= 1:
        raise ValueError(f"--temperature {cfg.temperature}: expected 0.01..1 (the logit scale is clamped at 100)")
    if cfg.hard_negatives < 0:
        raise ValueError(f"--hard-negatives {cfg.hard_negatives}: expected a group size >= 1, or 0 for random batches")
    if not 0 <= cfg.modality_margin <= 1:
        raise ValueError(f"--modality-margin {cfg.modality_margin}: expected a cosine margin from 0 to 1")
    if cfg.pair_caption not in ("same", "other"):
        raise ValueError(f"--pair-caption {cfg.pair_caption!r}: expected 'same' or 'other'")
    # a bad loss, margin or weight fails before any data loads
    create_loss(cfg.loss, modality_margin=cfg.modality_margin, text_photo_weight=cfg.text_photo_weight)
    if not 0 <= cfg.temperature_lr_mult <= 1000:
        raise ValueError(f"--temperature-lr-mult {cfg.temperature_lr_mult}: expected 0..1000 (0 fixes the temperature)")
    rank, world = init_distributed()
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the {world} processes")
    shard = slice(rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    sources = load_training_sources(cfg, log=print if rank == 0 else lambda *_: None)
    model = load_model(cfg.model)
    if cfg.temperature is not None:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1 / cfg.temperature))
    cached = hasattr(model.visual, "stem") and hasattr(model, "freeze_stems")
    if cached:
        for turn in range(world):  # rank 0 builds the cache; the others then read it
            if turn == rank:
                cache, built = StemCache.build_sources(model, sources, cfg)
            if world > 1:
                torch.distributed.barrier()
        pairs = built
    else:
        pairs = Pairs()
        for source in sources:
            pairs.extend(source)
        pairs = drop_undecodable(pairs, model.config.image)
    n = len(pairs)
    groups = None
    if cfg.hard_negatives:
        if not cached:
            raise ValueError(f"--hard-negatives: {model.config.name} has no cached text stem to group captions by "
                             "(a lite model has)")
        groups = caption_groups(cache.caption_features(), cfg.hard_negatives, cfg.seed)
        print(f"hard negatives: {int(groups.max()) + 1} caption groups of about {cfg.hard_negatives} photos")
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = cfg.steps or max(1, round(cfg.epochs * steps_per_epoch))
    if cached:  # oneDNN's CPU conv backward is ~30% faster in NHWC; results agree to float rounding
        model.visual.top.to(memory_format=torch.channels_last)
    loss_fn = create_loss(cfg.loss, modality_margin=cfg.modality_margin, text_photo_weight=cfg.text_photo_weight)
    optimizer = make_optimizer(model, cfg)

    start = 0
    resume_from = latest_checkpoint(out) if cfg.resume else None
    if resume_from is not None:
        state = torch.load(resume_from / "train_state.pt", map_location="cpu", weights_only=True)
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(resume_from / "model.safetensors")), strict=False)
        if len(state["optimizer"]["param_groups"]) != len(optimizer.param_groups):  # saved before the logit scale's group
            raise ValueError(f"{resume_from}: optimizer state with {len(state['optimizer']['param_groups'])} parameter "
                             f"groups, this version trains with {len(optimizer.param_groups)}; resume it with the edge-gcl "
                             "that saved it, or start afresh without --resume")
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        print(f"resumed from {resume_from} at step {start}")

    print(f"training {model.config.name} with {cfg.loss} on {n} photos / {sum(map(len, pairs.captions))} captions, "
          f"batch {cfg.batch_size}, {total} steps ({total / steps_per_epoch:.1f} epochs)")
    n_caps = np.array([len(c) for c in pairs.captions])
    loader = None
    if not cached:
        loader = iter(torch.utils.data.DataLoader(PixelBatches(model, pairs, cfg, start, total, shard), batch_size=None,
                                                  num_workers=cfg.workers, shuffle=False))
    model.train()
    log = []
    t0 = time.time()
    bar = tqdm(range(start, total), initial=start, total=total, desc=f"train {cfg.loss}", disable=rank > 0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg, total) * group.get("lr_mult", 1.0)
        pair_text_features = None  # None: the photo+note fuses the sample's own caption
        if cached:
            idx = batch_indices(n, cfg.batch_size, cfg.seed, step, groups)
            view = np.random.default_rng([cfg.seed, step, 3]).integers(0, cache.images.shape[1], len(idx))[shard]
            choice = caption_choice(n_caps[idx], cfg.seed, step)
            rows = np.array([cache.caption_rows[i][c] for i, c in zip(idx, choice, strict=True)])[shard]
            stems = torch.from_numpy(cache.images[idx[shard], view]).float().contiguous(memory_format=torch.channels_last)
            image_features = model.visual.top(stems)
            text_features = _cached_text(model, cache, rows)
            if _fuses_other_caption(cfg):
                pair_choice = pair_caption_choice(n_caps[idx], choice, cfg.seed, step)
                pair_rows = np.array([cache.caption_rows[i][c] for i, c in zip(idx, pair_choice, strict=True)])[shard]
                pair_text_features = _cached_text(model, cache, pair_rows)
        else:
            pixels, ids, mask, *pair = next(loader)
            image_features, text_features = model.encode_image(pixels), model.encode_text(ids, mask)
            if pair:
                pair_text_features = model.encode_text(*pair)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp(), pair_text_features)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            average_gradients(model, world)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        log.append({"step": step + 1, "loss": loss.item(), "lr": lr_at(step, cfg, total),
                    "temperature": 1 / model.logit_scale.exp().item()})
        bar.set_postfix(loss=f"{log[-1]['loss']:.3f}", tau=f"{log[-1]['temperature']:.3f}")
        if rank == 0 and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            _save_training_state(out / "checkpoints" / f"step_{step + 1}", model, optimizer, step + 1, cfg)
    if rank > 0:
        return out
    save_checkpoint(out, model, step=total, train=portable_record(cfg), data={
        "photos": n, "captions": int(n_caps.sum()), "skipped": dict(pairs.skipped),
        "sources": [{"data": d, "photos": len(src)} for d, src in zip(cfg.data, sources, strict=True)]})
    (out / "train_log.jsonl").open("a").writelines(json.dumps(r) + "\n" for r in log)
    print(f"done: {total - start} steps in {time.time() - t0:.0f} s, final loss {log[-1]['loss'] if log else float('nan'):.4f}")
    if pairs.skipped:
        print("skipped rows: " + ", ".join(f"{v} {k}" for k, v in pairs.skipped.items()))
    print(f"model saved to {out}/ (use --model {out})")
    return out


def expand_recorded(path: str) -> str:
    """A path as `portable_record` writes it, back to one this machine can open (`${recipes}/`, `~/`)."""
    return os.path.expanduser(path.replace("${recipes}", str(RECIPE_DIR)))


def portable_record(cfg: TrainConfig) -> dict:
    """The config as a checkpoint records it: paths into this package's recipes folder as `${recipes}/...`
    and paths under the home folder as `~/...`, so a shipped model does not carry the build machine's paths."""
    recipes, home = str(RECIPE_DIR.resolve()), str(Path.home())

    def portable(v):
        if isinstance(v, list):
            return [portable(x) for x in v]
        if isinstance(v, str) and v.startswith(recipes + os.sep):
            return "${recipes}" + v[len(recipes) :]
        if isinstance(v, str) and v.startswith(home + os.sep):
            return "~" + v[len(home) :]
        return v

    return {k: portable(v) for k, v in dataclasses.asdict(cfg).items()}


def config_from_record(record: dict) -> TrainConfig:
    """The inverse of `portable_record`: a checkpoint's "train" record as a config this machine can train
    with (recorded paths expanded; fields this version does not know are dropped)."""

    def expand(v):
        if isinstance(v, list):
            return [expand(x) for x in v]
        return expand_recorded(v) if isinstance(v, str) else v

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: expand(v) for k, v in record.items() if k in names})


def _save_training_state(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig):
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, model, step=step, train=portable_record(cfg))
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, tmp / "train_state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


# GCLLoss's own options and their values when off: the other losses have neither
GCL_ONLY = {"modality_margin": 0.0, "text_photo_weight": 1.0}


def with_loss(cfg: TrainConfig, loss: str) -> TrainConfig:
    """`cfg` trained with `loss`; for CL and pairwise, its GCL-only options (GCL_ONLY) are turned off,
    so `--recipe default --loss cl` is that recipe's ablation even when the recipe sets a margin."""
    return dataclasses.replace(cfg, loss=loss, **({} if loss == "gcl" else GCL_ONLY))


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The options of `edge-gcl train`: the recipe (if any), then the --config file, then the flags.

    Giving --data replaces the recipe's sources along with their --split and --images lists;
    --exclude adds to the recipe's held-out lists (a flag never brings a held-out photo back).
    A --loss other than gcl turns off the recipe's GCL-only options (`with_loss`); given as flags
    too, they are refused.
    """
    cfg = TrainConfig()
    if getattr(args, "recipe", None):
        cfg = load_recipe(args.recipe, data_root=getattr(args, "data_root", None) or DEFAULT_DATA_ROOT)
    if args.config:
        cfg = dataclasses.replace(cfg, **json.loads(Path(args.config).read_text()))
    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in given.items() if v is not None and v is not False}  # 0 and 0.0 are values
    if "loss" in overrides:
        cfg = with_loss(cfg, overrides["loss"])
    if "data" in overrides:
        cfg = dataclasses.replace(cfg, split=None, images=[])
    if "exclude" in overrides:
        overrides["exclude"] = list(dict.fromkeys([*cfg.exclude, *overrides["exclude"]]))
    return dataclasses.replace(cfg, **overrides)


def cli_train(args: argparse.Namespace) -> int:
    """`edge-gcl train`: bad options, data or checkpoints are one line naming them, exit 1."""
    try:
        train(resolve_config(args))
    except (ValueError, OSError, KeyError) as e:  # ImageDecodeError is a ValueError
        print(f"edge-gcl: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    return 0

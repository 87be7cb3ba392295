"""Training data: the sources and their splits, which photos and captions each step draws, and the
DataLoader that decodes photos for the families without a stem cache.

Batches are a pure function of (seed, step): `batch_indices` draws the photos of a step's global
batch, `caption_choice` one caption of each, `pair_caption_choice` the note fused into each
photo+note. Under torchrun, rank r of W takes rows [r B/W, (r+1) B/W) of every global batch (its
shard), so W processes see exactly the batches one process would, and a run resumes at any step,
at any world size.

At scale (LLaVA's LCS-558K, COCO), photos are decoded on the fly in DataLoader workers (pinned
memory, a prefetch queue, workers that persist across epochs), and paths and captions live in a
few numpy buffers (`PhotoTable`) that forked workers share without copying. Every photo is checked
once before training, in parallel across workers and ranks, and the check is cached, so a corrupt
photo is counted and dropped up front and never swaps another into a batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import ImagePreprocess
from ..data import Pairs, parse_split_spec, read_pairs, read_split
from ..tokenizer import Tokenizer
from ..transform import ImageDecodeError, load_image, random_resized_crop, to_array
from .config import WHOLE_SOURCE, TrainConfig
from .distributed import DistEnv, all_gather_objects

Log = Callable[..., None]


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


def load_training_sources(cfg: TrainConfig, *, log: Log = print) -> list[Pairs]:
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


def load_training_pairs(cfg: TrainConfig, *, log: Log = print) -> Pairs:
    """All sources of `cfg` in one `Pairs` (see `load_training_sources`)."""
    pairs = Pairs()
    for source in load_training_sources(cfg, log=log):
        pairs.extend(source)
    return pairs


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


def fuses_other_caption(cfg: TrainConfig) -> bool:
    """Whether each step encodes a second caption per photo for its photo+note (CL has no photo+note)."""
    return cfg.pair_caption == "other" and cfg.loss != "cl"


def pair_caption_choice(n_captions: np.ndarray, choice: np.ndarray, seed: int, step: int) -> np.ndarray:
    """Per sample, a caption other than `choice` for its photo+note (the same one when it has only one)."""
    rng = np.random.default_rng([seed, step, 4])
    shift = 1 + (rng.random(len(n_captions)) * np.maximum(n_captions - 1, 1)).astype(np.int64)  # 1..n-1
    return np.where(n_captions > 1, (choice + shift) % n_captions, choice)


# ----------------------------------------------------------------------------- photos decoded on the fly
def _pack(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (UTF-8 bytes (total,) uint8, offsets (n + 1,) int64)."""
    encoded = [s.encode("utf-8", "surrogateescape") for s in strings]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


class PhotoTable:
    """The paths and captions of `Pairs` packed into four numpy arrays.

    DataLoader workers are forked copies of the training process; a list of Python strings is copied
    into each of them page by page as their reference counts are touched (pytorch/pytorch#13246),
    which for LCS-558K's 558k photos is gigabytes per worker. Flat numpy buffers stay shared.
    """

    def __init__(self, pairs: Pairs) -> None:
        self._paths, self._path_at = _pack([str(p) for p in pairs.images])
        self._captions, self._caption_at = _pack([c for caps in pairs.captions for c in caps])
        self.first_caption = np.zeros(len(pairs) + 1, np.int64)  # photo i's captions: rows [first[i], first[i+1])
        np.cumsum([len(c) for c in pairs.captions], out=self.first_caption[1:])

    def __len__(self) -> int:
        return len(self.first_caption) - 1

    @property
    def n_captions(self) -> np.ndarray:  # (n,) int64
        return np.diff(self.first_caption)

    def path(self, i: int) -> str:
        return self._paths[self._path_at[i] : self._path_at[i + 1]].tobytes().decode("utf-8", "surrogateescape")

    def caption(self, i: int, c: int) -> str:
        row = self.first_caption[i] + c
        return self._captions[self._caption_at[row] : self._caption_at[row + 1]].tobytes().decode("utf-8", "surrogateescape")


Sample = tuple[int, int, int, int]  # (step, photo, caption, caption fused into its photo+note or -1)


class StepSampler(torch.utils.data.Sampler):
    """For each step in [first, last): this rank's samples of that step's global batch.

    Runs in the main process (the DataLoader's `batch_sampler`), so `set_steps` before another pass
    reaches persistent workers. `shard` is this rank's rows of every global batch.
    """

    def __init__(self, n_captions: np.ndarray, cfg: TrainConfig, shard: slice = slice(None),
                 groups: np.ndarray | None = None) -> None:
        self.n_captions, self.cfg, self.shard, self.groups = n_captions, cfg, shard, groups
        self.first, self.last = 0, 0

    def set_steps(self, first: int, last: int) -> None:
        self.first, self.last = first, last

    def __len__(self) -> int:
        return self.last - self.first

    def __iter__(self) -> Iterator[list[Sample]]:
        for step in range(self.first, self.last):
            yield step_samples(self.n_captions, self.cfg, step, self.shard, self.groups)


def step_samples(n_captions: np.ndarray, cfg: TrainConfig, step: int, shard: slice = slice(None),
                 groups: np.ndarray | None = None) -> list[Sample]:
    """This rank's (step, photo, caption, pair caption) samples of step `step`'s global batch."""
    idx = batch_indices(len(n_captions), cfg.batch_size, cfg.seed, step, groups)  # (B,)
    choice = caption_choice(n_captions[idx], cfg.seed, step)  # (B,)
    pair = pair_caption_choice(n_captions[idx], choice, cfg.seed, step) if fuses_other_caption(cfg) else -np.ones_like(choice)
    return [(step, int(j), int(c), int(p)) for j, c, p in zip(idx[shard], choice[shard], pair[shard], strict=True)]


class PixelSamples(torch.utils.data.Dataset):
    """Sample (step, photo, caption, pair caption) -> pixels (3, S, S) float32, ids and mask (L,) int64,
    and the pair caption's ids and mask when it has one. The crop of photo j at step s is seeded by
    (seed, s, j): the same on any rank, in any worker."""

    def __init__(self, table: PhotoTable, image: ImagePreprocess, tokenizer: Tokenizer, seed: int) -> None:
        self.table, self.image, self.tok, self.seed = table, image, tokenizer, seed

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, sample: Sample) -> tuple[np.ndarray, ...]:
        step, j, c, pair = sample
        try:  # every photo decoded once before training (check_photos); never swap in another
            img = load_image(self.table.path(j), draft_size=self.image.size)
        except ImageDecodeError as e:
            raise ImageDecodeError(f"{e} (it decoded before training began: was it changed? "
                                   "--resume continues from the last checkpoint)") from None
        rng = np.random.default_rng([self.seed, step, 2, j])
        pixels = to_array(random_resized_crop(img, self.image, rng), self.image)  # (3, S, S)
        ids, mask = self.tok([self.table.caption(j, c)])  # (1, L) each
        out = (pixels, ids[0], mask[0])
        if pair >= 0:
            pair_ids, pair_mask = self.tok([self.table.caption(j, pair)])
            out += (pair_ids[0], pair_mask[0])
        return out


def pixel_loader(dataset: PixelSamples, sampler: StepSampler, cfg: TrainConfig, device: torch.device):
    """The DataLoader of on-the-fly batches: `cfg.workers` processes (0: in this one), `cfg.prefetch`
    batches ready per worker, pinned memory on CUDA, and workers that persist from one pass over the
    sampler to the next (training makes one pass over the whole run; `benchmarks.train_speed` several)."""
    workers = max(0, cfg.workers)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
        prefetch_factor=max(1, cfg.prefetch) if workers else None, persistent_workers=workers > 0)


def pixel_batch(dataset: PixelSamples, samples: list[Sample]) -> list[torch.Tensor]:
    """One batch collated in this process, as the DataLoader's workers build it."""
    return torch.utils.data.default_collate([dataset[s] for s in samples])


# ----------------------------------------------------------------------------- the check before training
class _Decodes(torch.utils.data.Dataset):
    def __init__(self, table: PhotoTable, draft_size: int, indices: np.ndarray) -> None:
        self.table, self.draft_size, self.indices = table, draft_size, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> bool:
        try:
            load_image(self.table.path(int(self.indices[k])), draft_size=self.draft_size)
            return True
        except ImageDecodeError:
            return False


def photos_key(pairs: Pairs, image: ImagePreprocess) -> str:
    """Identifies a check of these photos, as they are now: paths, sizes and modification times."""
    h = hashlib.sha256(f"draft={image.size}".encode())
    for p in pairs.images:
        try:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            h.update(f"{p}\0missing\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def check_photos(pairs: Pairs, image: ImagePreprocess, cfg: TrainConfig, env: DistEnv, *, log: Log = print) -> Pairs:
    """Decode every photo once; those that fail are dropped and counted (`skipped["corrupt image"]`, one
    per photo, as the stem cache counts them). `Image.verify()` is not enough: a truncated JPEG passes it.

    Rank r checks photos r, r + W, ... in `cfg.workers` DataLoader processes; the ranks then share
    their findings. The result is cached under `cfg.cache_dir` by `photos_key`, so a rerun on the same
    files (another seed, a resume) starts at once.
    """
    cache = Path(cfg.cache_dir).expanduser() / "photo-checks" / f"{photos_key(pairs, image)}.json"
    bad: list[int] | None = None
    if cache.is_file():
        try:
            bad = [int(i) for i in json.loads(cache.read_text())["undecodable"]]
            log(f"photo check: {cache}")
        except (OSError, ValueError, KeyError, TypeError):
            bad = None
    if not all(all_gather_objects(bad is not None, env)):  # one node's cache is not another's: check together
        bad = None
    if bad is None:
        table = PhotoTable(pairs)
        mine = np.arange(env.rank, len(pairs), env.size)
        loader = torch.utils.data.DataLoader(_Decodes(table, image.size, mine), batch_size=64, num_workers=max(0, cfg.workers),
                                             collate_fn=list)
        ok: list[bool] = []
        for chunk in tqdm(loader, desc="checking photos", unit="photo", unit_scale=64, mininterval=5, disable=not env.is_master):
            ok += chunk
        found = [int(i) for i, good in zip(mine, ok, strict=True) if not good]
        bad = sorted(i for part in all_gather_objects(found, env) for i in part)
        if env.is_master:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"photos": len(pairs), "undecodable": bad}))
            os.replace(tmp, cache)
    drop = set(bad)
    keep = [i for i in range(len(pairs)) if i not in drop]
    kept = Pairs([pairs.images[i] for i in keep], [pairs.captions[i] for i in keep], Counter(pairs.skipped))
    if drop:
        kept.skipped["corrupt image"] += len(drop)
    if not keep:
        raise ValueError("no training photo could be decoded")
    return kept

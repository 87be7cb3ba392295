"""Fine-tune a dual encoder with GCL (or the CL / pairwise baselines) on image-caption pairs.

    edge-gcl train --data ../shared/data/flickr8k/captions.txt --split ../shared/data/flickr8k/splits.json:train \
                   --loss gcl --steps 1000 --out runs/gcl --device cuda --precision bf16
    torchrun --nproc-per-node 8 -m edge_gcl.cli train --recipe default --device cuda    # 8 GPUs, DDP

Recipe, step by step:
1. Join the processes and pick the device (`distributed.init_distributed_device`): one process, or
   one per GPU (NCCL) or per CPU share (gloo) under torchrun, on one node or several.
2. Read the pairs (Flickr CSV, COCO JSON, LLaVA JSON); bad rows are skipped and counted. Each
   source can be restricted to a split of its own (`--split FILE:SPLIT`, matched to `--data` by
   order), and `--exclude FILE:SPLIT` drops a held-out list's photos from every source.
3. Build the model on the device. For the `lite` family the frozen stems run once over each source,
   on that device, and their outputs are cached (`stems.StemCache`). Other families decode every
   photo once up front, in parallel (`data.check_photos`: the undecodable are dropped and counted),
   then on the fly in DataLoader workers (`data.pixel_loader`).
4. Every step draws a global batch of distinct photos (a seeded permutation per epoch) and one random
   caption of each, so a batch never holds two positives of one photo; rank r of W takes its 1/W
   shard. The batch for step s depends only on (seed, s): a resumed run sees exactly the batches it
   would have seen, at any world size.
5. Forward under autocast (`precision.Precision`), through PyTorch's `DistributedDataParallel` when
   there are several processes; the loss runs in fp32 and gathers every rank's features with their
   gradients, so each rank computes the global-batch loss and DDP's gradient average is exactly the
   one-process gradient (`edge_gcl.loss`). W processes train like one with the same global batch
   (BatchNorm in the trained conv blocks of `lite` uses per-rank statistics on the CPU; on several
   GPUs it is synchronised).
6. AdamW, warm-up then cosine (or constant) schedule, learnable temperature (start: `--temperature`,
   else the model's own) with the logit scale clamped at 100 and learning at `--temperature-lr-mult`
   times the lr; fp16 scales the loss (`torch.amp.GradScaler`).
7. Rank 0 alone logs and writes: `train_log.jsonl` (step, loss, lr, temperature; a row per step, as it
   goes), checkpoints every `checkpoint_every` steps under `out/checkpoints/step_N/` (model,
   optimizer, scaler, step), and the final model in `out/` itself so `--model out` works everywhere.

A recipe (`--recipe default`: `edge_gcl/recipes/default.json`) names the data, splits, held-out
lists, model and schedule of a shipped model in one file; flags override it (see `config.load_recipe`).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import save_checkpoint
from ..data import Pairs
from ..models import DualEncoder, load_model
from ..tokenizer import Tokenizer
from .config import TrainConfig, portable_record, resolve_config
from .data import (
    PhotoTable,
    PixelSamples,
    StepSampler,
    batch_indices,
    caption_choice,
    caption_groups,
    check_photos,
    fuses_other_caption,
    load_training_sources,
    pair_caption_choice,
    pixel_loader,
)
from .distributed import DistEnv, all_gather_objects, barrier, cleanup, init_distributed_device
from .precision import Precision
from .stems import CachedBatches, StemCache


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


class TrainForward(nn.Module):
    """One step's forward, the module DDP wraps: a batch in, the features and the log logit scale out.

    cached (lite): stem outputs (B, C, H, W), caption hidden states (B, l, W) and masks (B, l), and
    optionally the fused caption's; otherwise pixels (B, 3, S, S), ids and masks (B, L), and optionally
    the fused caption's. Returns image (B, D), text (B, D), pair text (B, D) or None, and the raw
    `logit_scale` parameter (log 1/tau), which the loss exponentiates in fp32 outside autocast.
    """

    def __init__(self, model: DualEncoder, *, cached: bool) -> None:
        super().__init__()
        self.model, self.cached = model, cached

    def forward(self, *batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        m = self.model
        if self.cached:
            stems, hidden, mask, *pair = batch
            image, text = m.visual.top(stems), m.text.top(hidden, mask)
            pair_text = m.text.top(*pair) if pair else None
        else:
            pixels, ids, mask, *pair = batch
            image, text = m.encode_image(pixels), m.encode_text(ids, mask)
            pair_text = m.encode_text(*pair) if pair else None
        return image, text, pair_text, m.logit_scale


def check_config(cfg: TrainConfig) -> None:
    """Options that are wrong whatever the data: refused before anything loads."""
    from ..loss import create_loss

    if cfg.temperature is not None and not 0.01 <= cfg.temperature <= 1:
        raise ValueError(f"--temperature {cfg.temperature}: expected 0.01..1 (the logit scale is clamped at 100)")
    if cfg.hard_negatives < 0:
        raise ValueError(f"--hard-negatives {cfg.hard_negatives}: expected a group size >= 1, or 0 for random batches")
    if not 0 <= cfg.modality_margin <= 1:
        raise ValueError(f"--modality-margin {cfg.modality_margin}: expected a cosine margin from 0 to 1")
    if cfg.pair_caption not in ("same", "other"):
        raise ValueError(f"--pair-caption {cfg.pair_caption!r}: expected 'same' or 'other'")
    create_loss(cfg.loss, modality_margin=cfg.modality_margin, text_photo_weight=cfg.text_photo_weight)
    if not 0 <= cfg.temperature_lr_mult <= 1000:
        raise ValueError(f"--temperature-lr-mult {cfg.temperature_lr_mult}: expected 0..1000 (0 fixes the temperature)")
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size {cfg.batch_size}: expected at least 1")
    if cfg.workers < 0 or cfg.prefetch < 1:
        raise ValueError(f"--workers {cfg.workers} / --prefetch {cfg.prefetch}: expected workers >= 0, prefetch >= 1")
    Precision(cfg.precision)


def train(cfg: TrainConfig) -> Path:
    """Train as the module docstring says; returns the output folder (on every rank)."""
    check_config(cfg)
    env = init_distributed_device(cfg.device)
    try:
        return _train(cfg, env)
    finally:
        cleanup(env)


def _train(cfg: TrainConfig, env: DistEnv) -> Path:
    log = print if env.is_master else _silent
    run = build_run(cfg, env, log=log)
    model, out, total = run.model, Path(cfg.out), run.total
    train_log = _open_log(out / "train_log.jsonl", run.start) if env.is_master else None
    t0, waited, step_s = time.perf_counter(), 0.0, []
    bar = tqdm(range(run.start, total), initial=run.start, total=total, desc=f"train {cfg.loss}", disable=not env.is_master)
    last: dict[str, Any] = {}
    for step in bar:
        lr = lr_at(step, cfg, total)
        for group in run.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        t_wait = time.perf_counter()
        batch = run.batches.get(step, total)
        t_step = time.perf_counter()
        waited += t_step - t_wait
        loss = run.step(batch)
        last = {"step": step + 1, "loss": loss.item(), "lr": lr, "temperature": 1 / model.logit_scale.exp().item()}
        step_s.append(time.perf_counter() - t_step)  # after .item(): the device has finished the step
        if train_log is not None:
            train_log.write(json.dumps(last) + "\n")
        bar.set_postfix(loss=f"{last['loss']:.3f}", tau=f"{last['temperature']:.3f}")
        if env.is_master and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            train_log.flush()
            _save_training_state(out / "checkpoints" / f"step_{step + 1}", run, step + 1)
    seconds = time.perf_counter() - t0
    if not env.is_master:
        return out
    train_log.close()
    pairs, n_caps = run.pairs, run.n_caps
    save_checkpoint(out, model, step=total, train=portable_record(cfg), data={
        "photos": len(pairs), "captions": int(n_caps.sum()), "skipped": dict(pairs.skipped),
        "sources": [{"data": d, "photos": len(src)} for d, src in zip(cfg.data, run.sources, strict=True)]},
        run=_run_record(env, run.precision) | (speed := _speed(cfg, seconds, waited, step_s)))
    rate = f", {speed['pairs_per_s']:.0f} pairs/s" if "pairs_per_s" in speed else ""
    print(f"done: {total - run.start} steps in {seconds:.0f} s{rate}, waiting for data "
          f"{100 * speed['data_wait_share']:.0f}% of it, final loss {last.get('loss', float('nan')):.4f}")
    if pairs.skipped:
        print("skipped rows: " + ", ".join(f"{v} {k}" for k, v in pairs.skipped.items()))
    print(f"model saved to {out}/ (use --model {out})")
    return out


@dataclass
class Run:
    """What a training run steps through, built by `build_run`: the model on its device, the pairs, the
    batches of each step (`batches.get(step, total)`), and the step itself (`step(batch) -> loss`)."""

    cfg: TrainConfig
    env: DistEnv
    precision: Precision
    model: DualEncoder  # the model itself (not its DDP wrapper): checkpoints save it
    sources: list[Pairs]
    pairs: Pairs  # the photos trained on, the undecodable dropped
    n_caps: np.ndarray  # (photos,) captions per photo
    batches: CachedSteps | PixelSteps
    step: TrainStep
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    total: int  # steps of the whole run
    start: int = 0  # the step it resumes at


def build_run(cfg: TrainConfig, env: DistEnv, *, log: Callable[..., None] = print,
              sources: list[Pairs] | None = None) -> Run:
    """Steps 2 to 6 of the module docstring up to the first step: data, model, stem cache or photo check,
    resume, DDP, optimizer. `edge-gcl train` and `benchmarks.train_speed` both build their runs here."""
    from ..loss import create_loss

    precision = Precision(cfg.precision)
    precision.check(env.device)
    if cfg.batch_size % env.size:
        raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the {env.size} processes")
    shard = slice(env.rank * cfg.batch_size // env.size, (env.rank + 1) * cfg.batch_size // env.size)
    if env.device.type == "cuda":  # fp32 matrix products in TF32, as open_clip's trainer does
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    log(f"device: {_describe(env)}, precision {precision.name}")
    torch.manual_seed(cfg.seed)
    sources = load_training_sources(cfg, log=log) if sources is None else sources
    model = load_model(cfg.model)
    if cfg.temperature is not None:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1 / cfg.temperature))
    model.to(env.device)
    cached = hasattr(model.visual, "stem") and hasattr(model, "freeze_stems")
    cache = None
    if cached:
        for turn in range(env.size):  # rank 0 builds the cache; the others then read it
            if turn == env.rank:
                cache, pairs = StemCache.build_sources(model, sources, cfg, env.device, log=log)
            barrier(env)
    else:
        pairs = Pairs()
        for source in sources:
            pairs.extend(source)
        pairs = check_photos(pairs, model.config.image, cfg, env, log=log)
    n = len(pairs)
    if n < cfg.batch_size:  # a batch holds distinct photos, the same number on every rank
        raise ValueError(f"--batch-size {cfg.batch_size}: only {n} training photos; a batch holds distinct photos, "
                         "so give more photos or a smaller batch")
    groups = None
    if cfg.hard_negatives:
        if cache is None:
            raise ValueError(f"--hard-negatives: {model.config.name} has no cached text stem to group captions by "
                             "(a lite model has)")
        groups = caption_groups(cache.caption_features(), cfg.hard_negatives, cfg.seed)
        log(f"hard negatives: {int(groups.max()) + 1} caption groups of about {cfg.hard_negatives} photos")
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = cfg.steps or max(1, round(cfg.epochs * steps_per_epoch))
    if cached and env.device.type == "cpu":  # oneDNN's CPU conv backward is ~30% faster in NHWC; results agree to float rounding
        model.visual.top.to(memory_format=torch.channels_last)

    resume_from = _agreed_checkpoint(Path(cfg.out), env) if cfg.resume else None
    if cfg.resume and resume_from is None:
        log(f"--resume: no checkpoint under {Path(cfg.out) / 'checkpoints'}; starting at step 0")
    start, state = 0, None
    if resume_from is not None:
        state = torch.load(resume_from / "train_state.pt", map_location=env.device, weights_only=True)
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(resume_from / "model.safetensors"), device=str(env.device)), strict=False)
        start = int(state["step"])
    if env.distributed and env.device.type == "cuda":  # one batch's statistics across GPUs, as one process would
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = make_optimizer(model, cfg)
    scaler = precision.scaler(env.device)
    if state is not None:
        if len(state["optimizer"]["param_groups"]) != len(optimizer.param_groups):  # saved before the logit scale's group
            raise ValueError(f"{resume_from}: optimizer state with {len(state['optimizer']['param_groups'])} parameter "
                             f"groups, this version trains with {len(optimizer.param_groups)}; resume it with the edge-gcl "
                             "that saved it, or start afresh without --resume")
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        log(f"resumed from {resume_from} at step {start}" + (f" (saved by {state['world_size']} processes)"
                                                             if state.get("world_size", env.size) != env.size else ""))

    forward: nn.Module = TrainForward(model, cached=cached)
    if env.distributed:
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    loss_fn = create_loss(cfg.loss, modality_margin=cfg.modality_margin, text_photo_weight=cfg.text_photo_weight)
    n_caps = np.array([len(c) for c in pairs.captions])
    log(f"training {model.config.name} with {cfg.loss} on {n} photos / {int(n_caps.sum())} captions, "
        f"batch {cfg.batch_size}{f' ({cfg.batch_size // env.size} per process)' if env.distributed else ''}, "
        f"{total} steps ({total / steps_per_epoch:.1f} epochs)")
    batches = (CachedSteps(cache, cfg, env, n_caps, shard, groups) if cache is not None
               else PixelSteps(PhotoTable(pairs), model, cfg, env, shard))
    model.train()
    step = TrainStep(model, forward, loss_fn, optimizer, precision, env.device, scaler)
    return Run(cfg, env, precision, model, sources, pairs, n_caps, batches, step, optimizer, scaler, total, start)


def _agreed_checkpoint(out: Path, env: DistEnv) -> Path | None:
    """The newest checkpoint under `out`, as rank 0 sees it, which every rank must be able to read: a node
    whose `--out` is not the storage rank 0 writes to would otherwise start afresh while the others resume."""
    found = latest_checkpoint(out) if env.is_master else None
    name = all_gather_objects(found.name if found is not None else None, env)[0]
    if name is None:
        return None
    path = out / "checkpoints" / name
    readable = all_gather_objects((path / "train_state.pt").is_file() and (path / "model.safetensors").is_file(), env)
    if not all(readable):
        missing = [r for r, ok in enumerate(readable) if not ok]
        raise ValueError(f"--resume: {path} is not there for rank {', '.join(map(str, missing))}: every node must see "
                         "--out on storage they share (rank 0 alone writes the checkpoints)")
    return path


class TrainStep:
    """One optimizer step on a batch: forward under autocast (through DDP when distributed), the loss in
    fp32, backward (scaled for fp16), AdamW, the logit scale clamped at 100. Returns the loss. The
    training loop and `benchmarks.train_speed` both step through it."""

    def __init__(self, model: DualEncoder, forward: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 precision: Precision, device: torch.device, scaler: torch.amp.GradScaler | None = None) -> None:
        self.model, self.forward, self.loss_fn, self.optimizer = model, forward, loss_fn, optimizer
        self.precision, self.device, self.scaler = precision, device, scaler

    def __call__(self, batch: list[torch.Tensor]) -> torch.Tensor:
        with self.precision.autocast(self.device):
            image, text, pair_text, log_scale = self.forward(*batch)
        # the loss in fp32: features cast up, the logit scale exponentiated from its fp32 parameter
        loss = self.loss_fn(image.float(), text.float(), log_scale.float().exp(),
                            None if pair_text is None else pair_text.float())
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        return loss


def _speed(cfg: TrainConfig, seconds: float, waited: float, step_s: list[float]) -> dict[str, float]:
    """The run's speed: wall time, the share of it spent waiting for data, and the steady rate (the median
    step after the first 3, which include start-up: workers, kernels' first calls)."""
    speed = {"train_s": round(seconds, 3), "data_wait_share": round(waited / seconds, 4) if seconds > 0 else 0.0}
    steady = step_s[3:] or step_s
    if steady:
        speed["step_ms"] = round(1000 * float(np.median(steady)), 3)
        speed["pairs_per_s"] = round(cfg.batch_size / float(np.median(steady)), 1)
    return speed


class CachedSteps:
    """A step's batch from the stem cache (lite): this rank's rows, on the device."""

    def __init__(self, cache: StemCache, cfg: TrainConfig, env: DistEnv, n_caps: np.ndarray, shard: slice,
                 groups: np.ndarray | None) -> None:
        self.cache, self.cfg, self.n_caps, self.shard, self.groups = cache, cfg, n_caps, shard, groups
        self.rows = CachedBatches(cache, env.device)

    def get(self, step: int, total: int) -> list[torch.Tensor]:
        cfg, cache = self.cfg, self.cache
        idx = batch_indices(len(self.n_caps), cfg.batch_size, cfg.seed, step, self.groups)  # (B,)
        view = np.random.default_rng([cfg.seed, step, 3]).integers(0, cache.images.shape[1], len(idx))[self.shard]
        choice = caption_choice(self.n_caps[idx], cfg.seed, step)
        rows = np.array([cache.caption_rows[i][c] for i, c in zip(idx, choice, strict=True)])[self.shard]
        batch = [self.rows.images_of(idx[self.shard], view), *self.rows.text_of(rows)]
        if fuses_other_caption(cfg):
            pair = pair_caption_choice(self.n_caps[idx], choice, cfg.seed, step)
            pair_rows = np.array([cache.caption_rows[i][c] for i, c in zip(idx, pair, strict=True)])[self.shard]
            batch += self.rows.text_of(pair_rows)
        return batch


class PixelSteps:
    """A step's batch decoded by the DataLoader's workers. The sampler spans the whole run, from the first
    step asked for to `total`: the workers start once and keep decoding across epoch boundaries."""

    def __init__(self, table: PhotoTable, model: DualEncoder, cfg: TrainConfig, env: DistEnv, shard: slice) -> None:
        tok: Tokenizer = model.tokenizer()
        self.sampler = StepSampler(table.n_captions, cfg, shard)
        self.loader = pixel_loader(PixelSamples(table, model.config.image, tok, cfg.seed), self.sampler, cfg, env.device)
        self.device = env.device
        self.it, self.next_step = None, -1

    def get(self, step: int, total: int) -> list[torch.Tensor]:
        if self.it is None or step != self.next_step:  # the first step, or a jump: start the workers there
            self.sampler.set_steps(step, total)
            self.it = iter(self.loader)
        self.next_step = step + 1
        return [x.to(self.device, non_blocking=True) for x in next(self.it)]


def _open_log(path: Path, start: int) -> IO[str]:
    """train_log.jsonl for appending, its rows after `start` dropped (a resumed run logs them again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if json.loads(r).get("step", 0) <= start]
        if len(kept) < len(rows):
            path.write_text("".join(r + "\n" for r in kept))
    return path.open("a")


def _describe(env: DistEnv) -> str:
    where = str(env.device)
    if env.device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(env.device)})"
    if env.distributed:
        where += f", {env.size} processes ({env.backend})"
    return where


def _run_record(env: DistEnv, precision: Precision) -> dict[str, Any]:
    """Where a checkpoint was trained (a record; training again elsewhere ignores it)."""
    record: dict[str, Any] = {"device": env.device.type, "world_size": env.size, "precision": precision.name,
                              "torch": torch.__version__}
    if env.device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(env.device)
    return record


def _save_training_state(folder: Path, run: Run, step: int) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, run.model, step=step, train=portable_record(run.cfg))
    torch.save({"optimizer": run.optimizer.state_dict(), "step": step, "world_size": run.env.size,
                "scaler": run.scaler.state_dict() if run.scaler is not None else None}, tmp / "train_state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _silent(*_: object, **__: object) -> None:
    pass


def cli_train(args: argparse.Namespace) -> int:
    """`edge-gcl train`: bad options, devices, data or checkpoints are one line naming them, exit 1."""
    try:
        train(resolve_config(args))
    except (ValueError, OSError, KeyError) as e:  # ImageDecodeError and DeviceError are ValueErrors
        print(f"edge-gcl: error: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0


def _one_line(e: BaseException) -> str:
    """The error's message; for one re-raised from a DataLoader worker, the worker's own last line."""
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text

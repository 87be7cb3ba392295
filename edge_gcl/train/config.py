"""Training options: `TrainConfig` (one dataclass), named recipes, and how flags, a --config file and a
recipe combine (`resolve_config`). A checkpoint records its config portably (`portable_record`) and
`config_from_record` reads it back, so a shipped model names the run that made it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

CACHE_DIR = Path.home() / ".cache" / "edge-gcl" / "features"
RECIPE_DIR = Path(__file__).parent.parent / "recipes"
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
    # where and how: `auto` is CUDA when PyTorch sees a GPU (edge_gcl.train.distributed); fp32 | bf16 | fp16
    # (edge_gcl.train.precision). Under torchrun every process trains one shard of each global batch.
    device: str = "auto"
    precision: str = "fp32"
    workers: int = 2  # DataLoader processes decoding photos (on-the-fly pixels, and building the lite stem cache)
    prefetch: int = 4  # batches each worker keeps ready
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

    names = {f.name for f in dataclasses.fields(TrainConfig)} - MACHINE_OPTIONS
    return TrainConfig(**{k: expand(v) for k, v in record.items() if k in names})


# Options that say where a run ran, not what it trained: a record read back on another machine keeps
# this machine's defaults for them (a model trained on 8 GPUs retrains here with --device auto).
MACHINE_OPTIONS = {"device", "workers", "prefetch"}


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


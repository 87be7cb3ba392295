"""Fine-tuning: `edge-gcl train`, on one CPU or GPU, or many under torchrun.

    config.py        TrainConfig, named recipes, how flags and recipes combine, portable records
    data.py          sources and splits, the batches of each step, on-the-fly photo decoding
    stems.py         the lite family's stem cache
    distributed.py   devices and processes (torchrun, NCCL / gloo)
    precision.py     fp32 / bf16 / fp16
    loop.py          the training loop (DistributedDataParallel), checkpoints, `cli_train`
"""

from __future__ import annotations

from .config import (
    CACHE_DIR,
    DEFAULT_DATA_ROOT,
    GCL_ONLY,
    RECIPE_DIR,
    WHOLE_SOURCE,
    TrainConfig,
    config_from_record,
    expand_recorded,
    load_recipe,
    portable_record,
    resolve_config,
    with_loss,
)
from .data import (
    PhotoTable,
    PixelSamples,
    StepSampler,
    batch_indices,
    caption_choice,
    caption_groups,
    check_photos,
    listed_splits,
    load_training_pairs,
    load_training_sources,
    pair_caption_choice,
    source_splits,
)
from .distributed import DeviceError, init_distributed_device, resolve_device
from .loop import cli_train, latest_checkpoint, lr_at, make_optimizer, train
from .precision import PRECISIONS, Precision
from .stems import StemCache

__all__ = [
    "CACHE_DIR", "DEFAULT_DATA_ROOT", "GCL_ONLY", "PRECISIONS", "RECIPE_DIR", "WHOLE_SOURCE", "DeviceError",
    "PhotoTable", "PixelSamples", "Precision", "StemCache", "StepSampler", "TrainConfig", "batch_indices",
    "caption_choice", "caption_groups", "check_photos", "cli_train", "config_from_record", "expand_recorded",
    "init_distributed_device", "latest_checkpoint", "listed_splits", "load_recipe", "load_training_pairs",
    "load_training_sources", "lr_at", "make_optimizer", "pair_caption_choice", "portable_record", "resolve_config",
    "resolve_device", "source_splits", "train", "with_loss",
]

"""Training throughput: pairs/s and step time per model, device, precision, batch and world size, with the
data pipeline's own rate measured apart from the model step, so a starved GPU shows.

    python -m benchmarks.train_speed                                   # this machine's device, defaults below
    python -m benchmarks.train_speed --device cuda --precisions fp32,bf16 --batches 256,1024 --world-sizes 1,2
    python -m benchmarks.train_speed --json benchmarks/results/train_speed.json --plot benchmarks/results/train_speed.png

For each configuration, three rates, each timed over a window of `max(--steps, 2 x workers)` batches:
  step   the optimizer step alone (`edge_gcl.train.loop.TrainStep`: forward under autocast, the fp32 loss
         with every rank's features, backward, AdamW) on a batch already on the device, after `--warmup`;
  data   the batches alone, as training draws them: decoded and augmented by `--workers` DataLoader
         processes per rank into pinned memory (tinyclip), or gathered from the stem cache (lite). The
         `workers x prefetch` batches the workers decode ahead are drained first, so this is the rate at
         which batches are made, not the rate a full queue hands them out;
  train  both together, as `edge-gcl train` runs them, from a fresh pass of the loader (its queue drained
         the same way); its data-wait share is the time the step waited for a batch. A data rate below
         the step rate means the accelerator waits.
The run is built by `edge_gcl.train.loop.build_run`, as `edge-gcl train` builds it (TF32 on CUDA,
SyncBatchNorm across GPUs, the same seeds).
The `lite` rows train on cached stems (the family's only mode); the cache is built first, on the device,
and its rate is reported too (photos/s, centre view plus `--image-views - 1` augmented views).

Photos: `--photos N` seeded synthetic JPEGs (480x360, smooth shapes and noise, quality 90: the size of the
web photos of LCS-558K after a decode at reduced scale would not apply; each one is decoded in full), with
captions; or `--data captions.txt` for real ones. World sizes above 1 run under torchrun on this node
(gloo on the CPU, NCCL on GPUs); a rank's data rate is its own loader's, and the table shows the sum.

Results go to runs/benchmarks/train_speed.json and .png unless --json / --plot say otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    Col,
    default_out,
    format_table,
    header_line,
    machine_info,
    make_document,
    parse_list,
    pyplot,
    save_figure,
    save_json,
)

MODELS = ("lite", "tinyclip-vit-8m-16-text-3m", "tinyclip-vit-39m-16-text-19m")
SHORT = {"lite": "lite", "tinyclip-vit-8m-16-text-3m": "TinyCLIP-8M", "tinyclip-vit-39m-16-text-19m": "TinyCLIP-39M"}
WORDS = "dog cat man woman child beach snow street park water ball bike red blue green running sitting".split()


# ----------------------------------------------------------------------------- photos
def synthetic_photos(folder: Path, n: int, *, seed: int = 0, size: tuple[int, int] = (480, 360)) -> Path:
    """`folder/captions.txt` and n seeded JPEGs in `folder/images/`: smooth colour fields with a few shapes and mild noise, so
    they decode like photos (a JPEG of pure noise is several times slower to decode)."""
    from PIL import Image, ImageDraw

    (folder / "images").mkdir(parents=True, exist_ok=True)
    if (folder / "captions.txt").exists() and len(list((folder / "images").glob("*.jpg"))) >= n:
        return folder / "captions.txt"
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rows = ["image,caption"]
    for i in range(n):
        base = rng.uniform(0, 255, (3, 3))  # a colour gradient per channel
        img = np.stack([c[0] + (c[1] - c[0]) * xx / w + (c[2] - c[0]) * yy / h for c in base], axis=-1)
        img += rng.normal(0, 6, img.shape)
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(4):
            x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
            box = (int(x0), int(y0), int(x0 + rng.integers(20, 200)), int(y0 + rng.integers(20, 150)))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        pil.save(folder / "images" / f"{i:05d}.jpg", quality=90)
        words = rng.choice(WORDS, 6)
        rows += [f"{i:05d}.jpg,a {words[0]} and a {words[1]} near the {words[2]}",
                 f"{i:05d}.jpg,{words[3]} {words[4]} {words[5]}"]
    (folder / "captions.txt").write_text("\n".join(rows) + "\n")
    return folder / "captions.txt"


# ----------------------------------------------------------------------------- one configuration
def measure(model_name: str, *, data: Path, device: str, precision: str, batch: int, steps: int, warmup: int,
            workers: int, prefetch: int, image_views: int, cache_dir: Path) -> dict[str, Any]:
    """This process's (or, under torchrun, this rank's) rates for one configuration; see the module docstring.

    The run is built as `edge-gcl train` builds it (`edge_gcl.train.loop.build_run`). A rate is timed over a
    window of `max(steps, 2 x workers)` batches, after what the workers decoded ahead has been drained
    (`workers x prefetch` batches, plus `warmup`), so it is the rate at which batches are made, not a queue's.
    """
    import itertools

    import torch

    from edge_gcl.train import TrainConfig
    from edge_gcl.train.distributed import init_distributed_device
    from edge_gcl.train.loop import CachedSteps, build_run

    env = init_distributed_device(device)
    cfg = TrainConfig(model=model_name, data=[str(data)], batch_size=batch, steps=10**9, warmup=1, workers=workers,
                      prefetch=prefetch, precision=precision, image_views=image_views, cache_dir=str(cache_dir),
                      out=str(cache_dir / "unused"))
    run = build_run(cfg, env, log=lambda *_: None)
    dev = env.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    cached = isinstance(run.batches, CachedSteps)
    row: dict[str, Any] = {"model": model_name, "device": dev.type, "precision": precision, "batch": batch,
                           "world": env.size, "workers": 0 if cached else workers, "prefetch": 0 if cached else prefetch}
    if dev.type == "cuda":
        row["gpu"] = torch.cuda.get_device_name(dev)
    if cached and run.batches.cache.built_s and env.is_master:  # built now, not read from an earlier row's build
        row["cache_photos_per_s"] = len(run.pairs) / run.batches.cache.built_s
    ahead = 0 if cached else workers * prefetch  # batches the DataLoader decodes before the first is asked for
    window = max(steps, 2 * workers)

    def timed(fn: Any, before: int) -> tuple[float, float]:
        """(seconds per call over `window` calls after `before` untimed ones, seconds of it in `waits`)."""
        for _ in range(before):
            fn()
        sync()
        waits.clear()
        t0 = time.perf_counter()
        for _ in range(window):
            fn()
        sync()
        return (time.perf_counter() - t0) / window, sum(waits)

    waits: list[float] = []
    steps_of = itertools.count()  # data alone: one pass of the loader, nothing else running

    def data_only() -> None:
        run.batches.get(next(steps_of), run.total)

    data_s, _ = timed(data_only, ahead + warmup)
    fixed = run.batches.get(next(steps_of), run.total)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    step_s, _ = timed(lambda: run.step(fixed).item(), warmup)  # the step alone, on one batch already there
    train_steps = itertools.count(10**8)  # a jump: a fresh pass of the loader, its queue empty

    def train_step() -> None:
        t0 = time.perf_counter()
        batch_ = run.batches.get(next(train_steps), run.total)
        waits.append(time.perf_counter() - t0)
        run.step(batch_).item()

    train_s, waited = timed(train_step, ahead + warmup)
    local = batch // env.size
    row |= {"step_ms": 1000 * step_s, "step_pairs_per_s": batch / step_s, "data_pairs_per_s": local / data_s,
            "train_pairs_per_s": batch / train_s, "data_wait_share": waited / (train_s * window), "window": window}
    if dev.type == "cuda":
        row["gpu_peak_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
    if env.distributed:  # the data rate of every rank's loader together
        row["data_pairs_per_s"] = float(sum(all_gather(row["data_pairs_per_s"])))
        torch.distributed.destroy_process_group()
    return row


def all_gather(value: float) -> list[float]:
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, value)
    return parts


def measure_world(world: int, **kwargs: Any) -> dict[str, Any]:
    """`measure` in this process (world 1), or under torchrun with `world` processes on this node."""
    if world == 1:
        return measure(**kwargs)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world), "--master-addr", "127.0.0.1",
           "--master-port", str(port), "-m", "benchmarks.train_speed", "--rank-worker", spec]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"world size {world}: torchrun failed\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def _rank_worker(spec: str) -> int:
    kwargs = json.loads(spec)
    for key in ("data", "cache_dir"):
        kwargs[key] = Path(kwargs[key])
    row = measure(**kwargs)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(row), flush=True)
    return 0


# ----------------------------------------------------------------------------- the photo table's memory
def table_memory(rows: int, *, workers: int = 4) -> dict[str, Any]:
    """Private memory (MB) of DataLoader workers after one pass reading every row's path and caption, for
    `rows` LCS-558K-like entries held as `PhotoTable` buffers and as the Python lists of `Pairs`. Forked
    workers copy list pages as reference counts touch them (pytorch/pytorch#13246); flat buffers stay shared."""
    import torch

    from edge_gcl.data import Pairs
    from edge_gcl.train.data import PhotoTable

    def private_mb(pid: int) -> float:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean", "Private_Dirty"))) / 1024

    class Reads(torch.utils.data.Dataset):
        def __init__(self, source: Any) -> None:
            self.source = source

        def __len__(self) -> int:
            return rows

        def __getitem__(self, i: int) -> int:
            if isinstance(self.source, PhotoTable):
                return len(self.source.path(i)) + len(self.source.caption(i, 0))
            return len(str(self.source.images[i])) + len(self.source.captions[i][0])

    out: dict[str, Any] = {"rows": rows, "workers": workers}
    for name in ("lists", "table"):
        pairs = Pairs([Path(f"/data/LCS-558K/{i // 1000:05d}/{i:09d}.jpg") for i in range(rows)],
                      [[f"a caption of photo {i}: a dog running on a beach with a ball, people behind it"] for i in range(rows)])
        source = PhotoTable(pairs) if name == "table" else pairs
        del pairs
        loader = torch.utils.data.DataLoader(Reads(source), batch_size=1024, shuffle=True, num_workers=workers,
                                             persistent_workers=True)
        it = iter(loader)
        for _ in range(len(loader)):
            next(it)
        out[f"{name}_worker_private_mb"] = float(np.mean([private_mb(w.pid) for w in it._workers]))
        del it, loader, source
    return out


# ----------------------------------------------------------------------------- output
COLS = [Col("model_short", "model"), Col("where", "device"), Col("precision"), Col("batch"), Col("world"),
        Col("step_ms", "step ms", ".1f"), Col("step_pairs_per_s", "step pairs/s", ".0f"),
        Col("data_pairs_per_s", "data pairs/s", ".0f"), Col("train_pairs_per_s", "train pairs/s", ".0f"),
        Col("data_wait_pct", "waits %", ".0f"), Col("cache_photos_per_s", "cache photos/s", ".0f"),
        Col("gpu_peak_gb", "GPU GB", ".1f")]


def _display(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"model_short": SHORT.get(row["model"], row["model"]), "where": row.get("gpu", row["device"]),
                  "data_wait_pct": 100 * row["data_wait_share"]}


def table(doc: dict[str, Any], *, markdown: bool = False) -> str:
    from benchmarks.common import markdown_table

    rows = [_display(r) for r in doc["rows"]]
    cols = [c for c in COLS if any(r.get(c.key) is not None for r in rows)]
    return markdown_table(rows, cols) if markdown else format_table(rows, cols, title="training throughput")


def plot(doc: dict[str, Any], path: str | Path) -> Path:
    plt = pyplot()
    rows = [_display(r) for r in doc["rows"]]
    labels = [f"{r['model_short']}\n{r['precision']} b{r['batch']} w{r['world']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4))
    ax.bar(x - 0.2, [r["step_pairs_per_s"] for r in rows], 0.4, label="model step")
    ax.bar(x + 0.2, [r["train_pairs_per_s"] for r in rows], 0.4, label="training (with data)")
    ax.scatter(x, [r["data_pairs_per_s"] for r in rows], color="black", marker="_", s=400, zorder=3,
               label="data pipeline alone")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("image-caption pairs / s")
    where = ", ".join(sorted({r["where"] for r in rows}))
    ax.set_title(f"edge-gcl training throughput ({where})")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (each process of a world takes its own GPU)")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--batches", help="comma-separated global batch sizes (default: 32 on the CPU, 256,1024 on a GPU)")
    p.add_argument("--world-sizes", default="1", help="comma-separated process counts (torchrun on this node)")
    p.add_argument("--steps", type=int, help="timed steps per rate (default: 5 on the CPU, 20 on a GPU)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each rate")
    p.add_argument("--workers", type=int, help="DataLoader processes per rank (default: the usable cores / world, "
                   "at most 16)")
    p.add_argument("--prefetch", type=int, default=4, help="batches each worker keeps ready")
    p.add_argument("--image-views", type=int, default=2, help="lite: cached views per photo")
    p.add_argument("--photos", type=int, help="synthetic photos (default: twice the largest batch, at least 64)")
    p.add_argument("--data", help="a captions.txt of real photos instead of synthetic ones")
    p.add_argument("--table-memory", type=int, default=0, metavar="ROWS",
                   help="also measure DataLoader workers' private memory for ROWS photos held as PhotoTable buffers "
                   "and as Python lists (e.g. 558000, LCS-558K's size; Linux only; 0: skip)")
    p.add_argument("--workdir", help="where the synthetic photos and stem caches go (default: a temporary folder)")
    p.add_argument("--json", default=default_out("train_speed.json"), help="result JSON")
    p.add_argument("--plot", default=default_out("train_speed.png"), help="result PNG")
    p.add_argument("--rank-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rank_worker:
        return _rank_worker(args.rank_worker)

    from edge_gcl.device import DeviceError, resolve_device

    try:
        device = resolve_device(args.device)
    except DeviceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    gpu = device.type == "cuda"
    batches = parse_list(args.batches or ("256,1024" if gpu else "32"), int)
    worlds = parse_list(args.world_sizes, int)
    steps = args.steps or (20 if gpu else 5)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    machine = machine_info()
    if gpu:
        import torch

        machine["gpu"] = {"name": torch.cuda.get_device_name(device), "count": torch.cuda.device_count(),
                          "memory_gb": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1),
                          "cuda": torch.version.cuda}
    print(header_line(machine) + (f" | {machine['gpu']['count']} x {machine['gpu']['name']}" if gpu else ""))
    rows = []
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="train-speed-", dir=args.workdir) as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        data = Path(args.data) if args.data else synthetic_photos(work / "photos", args.photos or max(64, 2 * max(batches)))
        for model in parse_list(args.models):
            for precision in parse_list(args.precisions):
                for batch in batches:
                    for world in worlds:
                        workers = args.workers if args.workers is not None else max(1, min(16, usable // world))
                        print(f"{model} {device.type} {precision} batch {batch} world {world} ({workers} workers per rank)",
                              file=sys.stderr, flush=True)
                        try:
                            rows.append(measure_world(world, model_name=model, data=data, device=args.device,
                                                      precision=precision, batch=batch, steps=steps,
                                                      warmup=args.warmup, workers=workers, prefetch=args.prefetch,
                                                      image_views=args.image_views, cache_dir=work / "stem-cache"))
                        except (RuntimeError, ValueError) as e:  # e.g. out of GPU memory: the row says so
                            print(f"  failed: {str(e).strip().splitlines()[-1]}", file=sys.stderr)
    config = {"models": parse_list(args.models), "device": args.device, "precisions": parse_list(args.precisions),
              "batches": batches, "world_sizes": worlds, "steps": steps, "warmup": args.warmup,
              "prefetch": args.prefetch, "image_views": args.image_views, "data": args.data or "synthetic 480x360 JPEG"}
    extra = {}
    if args.table_memory:
        mem = table_memory(args.table_memory)
        extra["table_memory"] = mem
        print(f"photo table of {mem['rows']:,} rows, {mem['workers']} DataLoader workers: "
              f"{mem['table_worker_private_mb']:.0f} MB private per worker (PhotoTable) vs "
              f"{mem['lists_worker_private_mb']:.0f} MB (Python lists)")
    doc = make_document("train-speed", rows, config=config, machine=machine, **extra)
    print(table(doc))
    if rows:
        print(f"wrote {save_json(args.json, doc)}")
        print(f"wrote {plot(doc, args.plot)}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())

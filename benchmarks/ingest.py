"""Photo ingest speed and memory: `Index.add_photos` (what `edge-gcl index add` runs) end to end.

Two photo sets:
- `small`: the shared Flickr8k photos as they are (short side 256 px, a few tens of KB);
- `12mp`: phone-sized photos, the same photos upscaled to 4032x3024 and re-encoded as JPEG at
  quality 90, written once into ~/.cache/edge-gcl/bench/ (the shared data is never copied into the
  project).

Each path runs in a fresh process (`--one`), so its peak RSS is the whole process's high-water
mark (`VmHWM`): the figure a phone or laptop sees, imports and model included. Rows: the default
path (the compiled artifacts' float towers on ONNX Runtime's CPU EP, photos decoded one batch
ahead in threads, JPEG at reduced DCT scale), the same without the decode threads, and the
PyTorch model (`--model default`).

    python -m benchmarks.ingest --artifacts artifacts            # table, benchmarks/results/ingest.json
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

from .common import (
    Col,
    _status_kb,
    default_out,
    format_table,
    header_line,
    machine_info,
    make_document,
    pyplot,
    save_figure,
    save_json,
)

SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k" / "images"
CACHE = Path.home() / ".cache" / "edge-gcl" / "bench"
PHONE_SIZE = (4032, 3024)  # a 12 MP phone photo, landscape


def phone_photos(n: int, *, source: Path = SHARED_PHOTOS, cache: Path = CACHE, quality: int = 90) -> Path:
    """A folder of `n` 12 MP JPEGs made from the shared photos (built once, then reused)."""
    from PIL import Image, ImageOps

    folder = cache / f"phone-12mp-q{quality}-{n}"
    if len(list(folder.glob("*.jpg"))) == n:
        return folder
    sources = sorted(source.glob("*.jpg"))[:n]
    if len(sources) < n:
        raise FileNotFoundError(f"{source}: {len(sources)} photos, {n} wanted")
    folder.mkdir(parents=True, exist_ok=True)
    for src in sources:
        with Image.open(src) as img:
            img = img.convert("RGB")
            size = PHONE_SIZE if img.width >= img.height else PHONE_SIZE[::-1]
            big = ImageOps.fit(img, size, Image.Resampling.BICUBIC)
            tmp = folder / f".{src.name}"
            big.save(tmp, "JPEG", quality=quality)
            tmp.rename(folder / src.name)
    return folder


def small_photos(n: int, *, source: Path = SHARED_PHOTOS, cache: Path = CACHE) -> Path:
    """A folder of links to `n` shared photos as they are."""
    folder = cache / f"small-{n}"
    sources = sorted(source.glob("*.jpg"))[:n]
    if len(sources) < n:
        raise FileNotFoundError(f"{source}: {len(sources)} photos, {n} wanted")
    folder.mkdir(parents=True, exist_ok=True)
    for src in sources:
        link = folder / src.name
        if not link.exists():
            link.symlink_to(src)
    return folder


def measure_one(model: str, photos: Path, *, form: str | None, decode_threads: int | None,
                device: str | None = None) -> dict[str, Any]:
    """In this process: load the model, ingest `photos` into a fresh index; times and peak RSS."""
    from edge_gcl.index import Index
    from edge_gcl.runtime import OnnxEmbedder, load_embedder

    t0 = time.perf_counter()
    embedder = load_embedder(model, form=form, device=device)
    if decode_threads is not None and isinstance(embedder, OnnxEmbedder):
        embedder.decode_threads = decode_threads
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as folder, Index.open(folder, model=embedder) as index:
        t0 = time.perf_counter()
        report = index.add_photos([photos], progress=False)
        ingest_s = time.perf_counter() - t0
    n = len(report.added)
    if report.skipped or n == 0:
        raise RuntimeError(f"{photos}: added {n}, skipped {[(s.input, s.reason) for s in report.skipped][:3]}")
    peak_kb = _status_kb("VmHWM")
    return {"photos": n, "load_s": load_s, "ingest_s": ingest_s, "photos_per_s": n / ingest_s,
            "peak_rss_mb": peak_kb / 1024 if peak_kb else None,
            "decode_threads": getattr(embedder, "decode_threads", None)}


def run_one(model: str, photos: Path, *, form: str | None = None, decode_threads: int | None = None,
            device: str | None = None) -> dict:
    """`measure_one` in a fresh interpreter."""
    cmd = [sys.executable, "-m", "benchmarks.ingest", "--one", "--model", model, "--photos-dir", str(photos)]
    if device:
        cmd += ["--device", device]
    if form:
        cmd += ["--form", form]
    if decode_threads is not None:
        cmd += ["--decode-threads", str(decode_threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


COLS = [
    Col("path", "path"),
    Col("set", "photos"),
    Col("photos", "n", "d"),
    Col("photos_per_s", "photos/s", ".1f"),
    Col("peak_rss_mb", "peak RSS MB", ".0f"),
    Col("load_s", "model load s", ".2f"),
]


def run(artifacts: str, *, n: int, sets: Sequence[str], torch_model: str | None, device: str = "cpu",
        log=print) -> list[dict]:
    folders = {}
    for name in sets:
        log(f"preparing {n} {name} photos...")
        folders[name] = phone_photos(n) if name == "12mp" else small_photos(n)
    paths = [("default: artifacts float, ORT CPU", artifacts, None, None),
             ("artifacts float, no decode threads", artifacts, None, 0)]
    if torch_model:
        paths.append((f"PyTorch ({torch_model}), {device}", torch_model, None, None))
    rows = []
    for name, folder in folders.items():
        for label, model, form, threads in paths:
            log(f"{label} on {name}...")
            row = run_one(model, folder, form=form, decode_threads=threads,
                          device=device if model == torch_model else None)
            rows.append({"path": label, "set": name, "model": model, **row})
            log(f"  {row['photos_per_s']:.1f} photos/s, peak RSS {row['peak_rss_mb']:.0f} MB")
    return rows


def plot(doc: dict[str, Any], path: str | Path) -> Path:
    """Photos/s and peak RSS per path, one bar group per photo set."""
    plt = pyplot()
    rows = doc["rows"]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    paths = list(dict.fromkeys(r["path"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    width = 0.8 / max(len(paths), 1)
    for i, label in enumerate(paths):
        for ax, key in zip(axes, ("photos_per_s", "peak_rss_mb"), strict=True):
            values = [next((r[key] or 0 for r in rows if r["path"] == label and r["set"] == s), 0) for s in sets]
            ax.bar([j + i * width for j in range(len(sets))], values, width, label=label)
    for ax, title in zip(axes, ("photos/s (higher is better)", "peak RSS, MB (whole process)"), strict=True):
        ax.set_xticks([j + width * (len(paths) - 1) / 2 for j in range(len(sets))], sets)
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def markdown(doc: dict[str, Any]) -> str:
    """The results page's section (docs/results.md): the table and what was measured."""
    from .common import markdown_table

    c = doc["config"]
    return "\n".join([
        f"`Index.add_photos` (what `edge-gcl index add` runs) on {c['photos']} photos per set, each row in a "
        "fresh process: photos/s over the ingest (decode, embed, store), peak RSS of the whole process "
        f"(imports and model included). `small`: the shared Flickr8k photos (short side 256 px); `12mp`: "
        f"the same photos upscaled to {c['phone_size'][0]}x{c['phone_size'][1]} and re-encoded as JPEG at "
        f"quality {c['jpeg_quality']}" + (f" ({c['mean_12mp_mb']:.1f} MB on average; real phone photos, "
                                          "with more detail, are larger and decode slower)"
                                          if c.get("mean_12mp_mb") else "") + ".",
        "", markdown_table(doc["rows"], COLS)])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", default="artifacts", help="artifacts folder of the default path")
    p.add_argument("--torch-model", default="default", help="PyTorch model shown beside it ('' to skip)")
    p.add_argument("--device", default="cpu", help="where the PyTorch model runs: cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--photos", type=int, default=200, help="photos per set")
    p.add_argument("--sets", default="small,12mp",
                   help="photo sets, comma-separated: small (the shared Flickr8k photos as they are), 12mp (the same "
                        "upscaled to 4032x3024 JPEGs, like a phone's)")
    p.add_argument("--json", default=default_out("ingest.json"),
                   help="result JSON (benchmarks/results/ingest.json: the committed one)")
    p.add_argument("--plot", default=default_out("ingest.png"), help="result plot (PNG)")
    # one measurement in this process (used by run_one)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--photos-dir", help=argparse.SUPPRESS)
    p.add_argument("--form", help=argparse.SUPPRESS)
    p.add_argument("--decode-threads", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        row = measure_one(args.model, Path(args.photos_dir), form=args.form, decode_threads=args.decode_threads,
                          device=args.device)
        print(json.dumps(row))
        return 0
    if args.photos < 1:
        p.error(f"--photos {args.photos}: at least 1")
    if not os.path.exists(os.path.join(args.artifacts, "manifest.json")):
        print(f"benchmarks.ingest: error: {args.artifacts}: no manifest.json (build it with "
              "`python -m export.compile --target snapdragon`)", file=sys.stderr)
        return 1
    machine = machine_info()
    print(header_line(machine))
    config = {"artifacts": args.artifacts, "torch_model": args.torch_model or None, "device": args.device,
              "photos": args.photos,
              "sets": args.sets.split(","), "phone_size": list(PHONE_SIZE), "jpeg_quality": 90}
    rows = run(args.artifacts, n=args.photos, sets=config["sets"], torch_model=config["torch_model"], device=args.device,
               log=lambda s: print(s, file=sys.stderr))
    if "12mp" in config["sets"]:
        files = list(phone_photos(args.photos).glob("*.jpg"))
        config["mean_12mp_mb"] = sum(f.stat().st_size for f in files) / len(files) / 1e6
    print(format_table(rows, COLS, title="Photo ingest (Index.add_photos, fresh process per row)"))
    doc = make_document("ingest", rows, config=config, machine=machine)
    if args.json:
        print(f"wrote {save_json(args.json, doc)}")
    if args.plot:
        print(f"wrote {plot(doc, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

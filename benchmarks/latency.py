"""`python -m benchmarks.latency`: per tower and end to end, per form and batch; device numbers from AI Hub.

    python -m benchmarks.latency --model default --artifacts runs/bench-artifacts
    python -m benchmarks.latency --artifacts runs/bench-artifacts --forms onnx,qdq --batches 1
    python -m benchmarks.latency --artifacts A --aihub-profile A/aihub_profile.json   # + device rows

Forms (an Embedder each, loaded one after the other in this process):

    torch   PyTorch eager, float32, CPU          TorchEmbedder(load_model(--model))
    onnx    ONNX Runtime CPU EP, float32         OnnxEmbedder(artifacts, form="float")
    qdq     ONNX Runtime CPU EP, quantized QDQ   OnnxEmbedder(artifacts, form="qdq")   (batch-1 graphs)
    htp     QNN EP, HTP backend, EPContext       OnnxEmbedder(artifacts, provider="qnn", form="ctx")
            On x86 the HTP backend *emulates* the NPU: these rows say "emulation (not device speed)".
    aihub   rows read from `aihub_profile.json` files (`export.aihub.load_profile`): the compiled towers
            profiled on a real Snapdragon device by Qualcomm AI Hub (its inference time and peak memory).

Stages, each timed as `--warmup` untimed calls then `--runs` timed calls (median and p90 per call):

    encode       the tower graph alone on ready tensors (pixels (B, 3, S, S); token ids and mask (B, L)):
                 `OnnxEmbedder.encode_images` / `encode_texts` (torch: `model.encode_image` / `encode_text`);
                 a batch-1 graph (QDQ, EPContext) is run B times for a batch of B
    embed        `embed_images(paths)` (JPEG decode, resize/crop, normalise, encode) and
                 `embed_texts(texts)` (tokenize, encode): what the SDK does per photo or note
    query        end to end at batch 1: `Index.search(text=...)` and `Index.search(image=path)` on an index of
                 --index-size items (synthetic vectors of the model's width, float16, the index's default
                 search): encode the query, scan, rank, read the items back from SQLite

items/s = batch / median. Each form runs in a fresh process (spawned), so forms do not share allocator pools,
thread pools or caches. Memory (`common.PeakRSS`): `peak MB` is that process's peak RSS while the form was
loaded and measured, over its RSS just before loading (Python + numpy + edge_gcl imported), so it includes
the runtime's own buffers and, for the torch form, PyTorch's import; `process peak MB` is the absolute peak.
Inputs are real: the first photos and captions of the shared Flickr8k folder.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    Col,
    PeakRSS,
    Timing,
    default_out,
    format_table,
    header_line,
    limit_threads,
    machine_info,
    make_document,
    parse_list,
    pyplot,
    save_figure,
    save_json,
    time_call,
)

FORMS = ("torch", "onnx", "qdq", "htp")
WHERE = {
    "torch": "PyTorch eager, CPU",
    "onnx": "ORT CPU, float32",
    "qdq": "ORT CPU, QDQ",
    "htp": "QNN HTP emulation (not device speed)",
}
SHARED_FLICKR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"


# ----------------------------------------------------------------------------- inputs
def sample_inputs(flickr: str | Path, count: int) -> tuple[list[str], list[str]]:
    """(photo paths, captions): the first `count` photos of a Flickr-style folder and their first captions."""
    from edge_gcl.data import read_flickr

    folder = Path(flickr)
    pairs = read_flickr(folder / "captions.txt")
    if len(pairs) < count:
        raise ValueError(f"{folder}: {len(pairs)} photos, need {count} for the bulk batch")
    return [str(p) for p in pairs.images[:count]], [c[0] for c in pairs.captions[:count]]


class _WithCollection:
    """The form's embedder, except texts "v<i>" are row i of fixed vectors (the synthetic collection)."""

    def __init__(self, embedder: Any, vectors: np.ndarray) -> None:
        self.embedder, self.vectors = embedder, vectors
        self.model_id, self.embed_dim = embedder.model_id, embedder.embed_dim
        self.tokenizer = None

    def embed_texts(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if texts and all(t.startswith("v") and t[1:].isdigit() for t in texts):
            return self.vectors[[int(t[1:]) for t in texts]]
        return self.embedder.embed_texts(texts, batch_size=batch_size)

    def embed_images(self, images: Sequence[Any], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        return self.embedder.embed_images(images, batch_size=batch_size)


# ----------------------------------------------------------------------------- encode calls
def encode_calls(form: str, embedder: Any, photos_px: np.ndarray, ids: np.ndarray, mask: np.ndarray
                 ) -> dict[str, Callable[[], object]]:
    """tower -> a call encoding the given batch with the form's graph only."""
    if form == "torch":
        import torch

        model, device = embedder.model, embedder.device
        px, ti, tm = (torch.from_numpy(x).to(device) for x in (photos_px, ids, mask))

        def image() -> object:  # .cpu(): on a GPU the call's time includes finishing the work
            with torch.inference_mode():
                return model.encode_image(px).cpu()

        def text() -> object:
            with torch.inference_mode():
                return model.encode_text(ti, tm).cpu()

        return {"image": image, "text": text}
    return {"image": lambda: embedder.encode_images(photos_px), "text": lambda: embedder.encode_texts(ids, mask)}


def load_form(form: str, *, model: str, artifacts: str | Path | None, threads: int = 0, device: str = "cpu") -> Any:
    if form == "torch":
        from edge_gcl.models import TorchEmbedder, load_model

        return TorchEmbedder(load_model(model), device=device)
    if artifacts is None:
        raise ValueError(f"form {form!r} needs --artifacts (a folder written by `python -m export.compile`)")
    from edge_gcl.runtime import OnnxEmbedder

    if form == "onnx":
        return OnnxEmbedder(artifacts, form="float", threads=threads)
    if form == "qdq":
        return OnnxEmbedder(artifacts, form="qdq", threads=threads)
    if form == "htp":
        return OnnxEmbedder(artifacts, provider="qnn", form="ctx", threads=threads)
    raise ValueError(f"unknown form {form!r}: expected one of {FORMS}")


# ----------------------------------------------------------------------------- one form
def measure_form(
    form: str,
    *,
    model: str,
    artifacts: str | Path | None,
    photos: Sequence[str],
    captions: Sequence[str],
    batches: Sequence[int],
    warmup: int,
    runs: int,
    budget_s: float | None,
    index_size: int,
    threads: int = 0,
    device: str = "cpu",
    workdir: Path,
    log: Callable[[str], Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (stage, tower, batch, timing) and a summary (load time, peak memory) of one form, in this process.
    `log` defaults to printing on stderr."""
    from edge_gcl.index import Index
    from edge_gcl.transform import preprocess

    rows: list[dict[str, Any]] = []
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))

    def add(stage: str, tower: str, batch: int, timing: Timing) -> None:
        rows.append({"form": form, "where": WHERE[form], "stage": stage, "tower": tower, "batch": batch,
                     **timing.to_dict(items=batch)})
        log(f"  {form} {stage} {tower} b={batch}: median {timing.median_ms:.2f} ms, p90 {timing.p90_ms:.2f} ms")

    if form == "torch" and threads:
        import torch

        torch.set_num_threads(threads)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        embedder = load_form(form, model=model, artifacts=artifacts, threads=threads, device=device)
        load_s = time.perf_counter() - t0
        image_cfg = embedder.model.config.image if form == "torch" else embedder.manifest.image
        tokenizer = embedder.tokenizer
        for b in batches:
            px = np.stack([preprocess(p, image_cfg) for p in photos[:b]])  # (B, 3, S, S) float32
            ids, mask = tokenizer(list(captions[:b]))  # (B, L) each
            for tower, call in encode_calls(form, embedder, px, ids, mask).items():
                add("encode", tower, b, time_call(call, warmup=warmup, runs=runs, budget_s=budget_s))
            add("embed", "image", b, time_call(lambda b=b: embedder.embed_images(photos[:b], batch_size=b),
                                               warmup=warmup, runs=runs, budget_s=budget_s))
            add("embed", "text", b, time_call(lambda b=b: embedder.embed_texts(captions[:b], batch_size=b),
                                              warmup=warmup, runs=runs, budget_s=budget_s))
        if index_size > 0:
            vectors = np.random.default_rng(0).standard_normal((index_size, embedder.embed_dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            folder = workdir / f"query-index-{form}"
            with Index.open(folder, model=_WithCollection(embedder, vectors)) as ix:  # type: ignore[arg-type]
                ix.add_notes([f"v{i}" for i in range(index_size)], batch_size=4096, progress=False)
                texts = iter(captions * (warmup + runs + 1))
                images = iter(list(photos) * (warmup + runs + 1))
                add("query", "text", 1, time_call(lambda: ix.search(next(texts), k=10), warmup=warmup, runs=runs,
                                                   budget_s=budget_s))
                add("query", "image", 1, time_call(lambda: ix.search(image=next(images), k=10), warmup=warmup,
                                                    runs=runs, budget_s=budget_s))
    summary = {"form": form, "where": WHERE[form], "load_s": load_s, "peak_rss_mb": mem.peak_mb,
               "process_peak_mb": mem.process_peak_mb, "memory_method": mem.method, "embedder": repr(embedder) if form != "torch" else f"TorchEmbedder({model!r}, device={str(embedder.device)!r})",
               "model_id": embedder.model_id}
    for r in rows:
        r["peak_rss_mb"] = mem.peak_mb
    return rows, summary  # the embedder goes with this frame; run() collects it before the next form


def _measure_isolated(form: str, kwargs: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    with limit_threads(kwargs["threads"] or None):
        return measure_form(form, **kwargs)


def aihub_rows(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Device rows from `aihub_profile.json` files: one per tower, encode stage, batch 1."""
    from export.aihub import load_profile

    rows = []
    for path in paths:
        doc = load_profile(Path(path))
        for tower, t in doc.get("towers", {}).items():
            ms = t.get("inference_ms")
            rows.append({"form": "aihub", "where": f"{t.get('device', doc.get('device'))} ({t.get('runtime', doc.get('runtime'))})",
                         "stage": "encode", "tower": tower, "batch": 1, "median_ms": ms, "p90_ms": None,
                         "items_per_s": 1e3 / ms if ms else None, "peak_rss_mb": t.get("peak_memory_mb"),
                         "layer_counts": t.get("layer_counts"), "source": str(path)})
    return rows


# ----------------------------------------------------------------------------- the run
def run(
    *,
    model: str = "default",
    artifacts: str | Path | None = None,
    forms: Sequence[str] = FORMS,
    batches: Sequence[int] = (1, 32),
    htp_batches: Sequence[int] = (1,),
    warmup: int = 5,
    runs: int = 30,
    htp_runs: int = 3,
    budget_s: float = 20.0,
    index_size: int = 10_000,
    aihub_profiles: Sequence[str | Path] = (),
    flickr: str | Path = SHARED_FLICKR,
    threads: int = 0,
    device: str = "cpu",
    workdir: str | Path | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """{"rows": [...], "forms": [...]} for every form; see the module docstring.

    HTP emulation is slow (seconds per call): it runs `htp_batches` with 1 warm-up and `htp_runs` runs.
    `budget_s` caps the timed runs of any one measurement (at least 3 runs are kept).
    """
    bad = [f for f in forms if f not in FORMS]
    if bad:
        raise ValueError(f"unknown forms {bad}: expected some of {FORMS}")
    photos, captions = sample_inputs(flickr, max([*batches, *htp_batches]))
    rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-", dir=workdir) as tmp:
        for form in forms:
            log(f"{form}: {WHERE[form]}")
            htp = form == "htp"
            kwargs = dict(model=model, artifacts=artifacts, photos=photos, captions=captions,
                          batches=htp_batches if htp else batches, warmup=1 if htp else warmup,
                          runs=htp_runs if htp else runs, budget_s=None if htp else budget_s, index_size=index_size,
                          threads=threads, device=device, workdir=Path(tmp))
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                form_rows, summary = pool.submit(_measure_isolated, form, kwargs).result()
            rows += form_rows
            summaries.append(summary)
    rows += aihub_rows(aihub_profiles)
    return {"rows": rows, "forms": summaries}


# ----------------------------------------------------------------------------- output
COLS = [
    Col("form"), Col("where"), Col("stage"), Col("tower"), Col("batch"),
    Col("median_ms", "median ms", ".2f"), Col("p90_ms", "p90 ms", ".2f"), Col("items_per_s", "items/s", ",.1f"),
    Col("peak_rss_mb", "peak MB", ".0f"),
]
FORM_COLS = [Col("form"), Col("where"), Col("load_s", "load s", ".2f"), Col("peak_rss_mb", "peak MB", ".0f"),
             Col("process_peak_mb", "process peak MB", ".0f"), Col("model_id")]


def tables(doc: dict[str, Any]) -> str:
    return "\n\n".join([
        format_table(doc["rows"], COLS, title="latency per call (peak MB: the form's peak RSS; aihub: the device's)"),
        format_table(doc.get("forms", []), FORM_COLS, title="forms"),
    ])


def plot(doc: dict[str, Any], path: str | Path) -> Path:
    """Left: batch-1 latency per stage and tower, a bar per form (log scale). Right: bulk throughput."""
    plt = pyplot()
    rows = doc["rows"]
    forms = list(dict.fromkeys(f"{r['form']}: {r['where']}" for r in rows))
    cats = [("encode", "image"), ("encode", "text"), ("embed", "image"), ("embed", "text"), ("query", "text"),
            ("query", "image")]
    bulk = max((r["batch"] for r in rows if r["form"] != "aihub"), default=1)
    fig, axes = plt.subplots(1, 2 if bulk > 1 else 1, figsize=(14 if bulk > 1 else 8, 5), squeeze=False)
    width = 0.8 / max(1, len(forms))
    for panel, (ax, batch, key) in enumerate(zip(axes[0], [1, bulk], ["median_ms", "items_per_s"], strict=False)):
        panel_cats = [c for c in cats if any((r["stage"], r["tower"], r["batch"]) == (*c, batch) for r in rows)]
        for j, label in enumerate(forms):
            vals = []
            for c in panel_cats:
                hit = [r for r in rows if f"{r['form']}: {r['where']}" == label and (r["stage"], r["tower"]) == c
                       and r["batch"] == batch and r.get(key)]
                vals.append(hit[0][key] if hit else 0)
            if any(vals):
                ax.bar(np.arange(len(panel_cats)) + j * width, vals, width, label=label,
                       hatch="//" if "emulation" in label else None)
        ax.set_xticks(np.arange(len(panel_cats)) + width * (len(forms) - 1) / 2)
        ax.set_xticklabels([f"{s}\n{t}" for s, t in panel_cats])
        ax.set_yscale("log")
        ax.set_ylabel("median ms per call (log)" if panel == 0 else f"items/s at batch {batch} (log)")
        ax.set_title("batch 1 latency" if panel == 0 else f"batch {batch} throughput")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="the PyTorch model of the torch form")
    p.add_argument("--artifacts", help="artifacts folder (export.compile) for the onnx, qdq and htp forms")
    p.add_argument("--forms", default=",".join(FORMS))
    p.add_argument("--batches", default="1,32", help="batch sizes (CPU forms)")
    p.add_argument("--htp-batches", default="1", help="batch sizes in HTP emulation (seconds per item)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--htp-runs", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=20.0, help="max seconds of timed runs per measurement")
    p.add_argument("--index-size", type=int, default=10_000, help="items in the index of the query stage (0: skip)")
    p.add_argument("--aihub-profile", nargs="*", default=[], metavar="PATH", help="aihub_profile.json files")
    p.add_argument("--flickr", default=str(SHARED_FLICKR), help="Flickr-style folder with the input photos")
    p.add_argument("--threads", type=int, default=0, help="torch / ORT intra-op / BLAS threads (0: defaults)")
    p.add_argument("--device", default="cpu", help="where the torch form runs: cpu, cuda, cuda:N, mps or auto "
                   "(default: cpu, the on-device comparison)")
    p.add_argument("--json", default=default_out("latency.json"),
                   help="result JSON (benchmarks/results/latency.json: the committed one)")
    p.add_argument("--plot", default=default_out("latency.png"), help="result plot (PNG)")
    args = p.parse_args(argv)
    config = {"model": args.model, "artifacts": args.artifacts, "forms": parse_list(args.forms),
              "batches": parse_list(args.batches, int), "htp_batches": parse_list(args.htp_batches, int),
              "warmup": args.warmup, "runs": args.runs, "htp_runs": args.htp_runs, "budget_s": args.budget_s,
              "index_size": args.index_size, "aihub_profiles": args.aihub_profile, "flickr": args.flickr,
              "threads": args.threads, "device": args.device}
    machine = machine_info()
    print(header_line(machine))
    result = run(**config, log=lambda s: print(s, file=sys.stderr))
    doc = make_document("latency", result["rows"], config=config, machine=machine, forms=result["forms"])
    print(tables(doc))
    if args.json:
        print(f"wrote {save_json(args.json, doc)}")
    if args.plot:
        print(f"wrote {plot(doc, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

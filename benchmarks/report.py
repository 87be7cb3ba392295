"""`python -m benchmarks.report`: every harness on the default model; results under runs/benchmarks/, or
benchmarks/results/ and docs/results.md when told.

    python -m benchmarks.report                        # export if needed, run all -> runs/benchmarks/
    python -m benchmarks.report --out benchmarks/results   # the same into the committed results, docs/results.md rewritten
    python -m benchmarks.report --only index --out benchmarks/results   # one harness (the others' stay)
    python -m benchmarks.report --render-only          # rebuild docs/results.md from benchmarks/results/
    python -m benchmarks.report --smoke                # minutes: the whole pipeline, tiny settings -> runs/bench-smoke
    python -m benchmarks.report --only mmeb --mmeb-root DIR   # MMEB retrieval on a root in MMEB-eval's layout
    python -m benchmarks.report --only covr --covr-root DIR   # CoVR on a root in CoVR's layout (needs [video])

Steps:
1. Artifacts: `--artifacts` when given; else ./artifacts when `python -m export.compile` built it from
   `--model` (the set-up's first command), else runs/bench-artifacts, built if it holds no manifest with
   `export.compile.run(--model)` (float, QDQ w8a16, EPContext for the default chip, verified in emulation).
   An `aihub_profile.json` in it (from `--via aihub`) adds device rows to the latency table.
2. The M-BEIR root (`--root`, default benchmarks.recall's: the phone dev benchmark, runs/mbeir-phone-dev), built
   from the shared data if missing.
3. `benchmarks.recall` (torch, onnx, qdq, ctx), `benchmarks.latency`, `benchmarks.index`, `benchmarks.ingest`
   with their defaults,
   each writing <name>.json and <name>.png into `--out` (default runs/benchmarks/). With `--mmeb-root` / `--covr-root`,
   also `edge_gcl.eval.mmeb` / `edge_gcl.eval.covr` on that root with the artifacts' float towers, writing
   mmeb.json / covr.json (nothing is written for a benchmark whose root is not given).
4. When `--out` is benchmarks/results/ (the committed results): rewrite docs/results.md between
   `<!-- results:start -->` and `<!-- results:end -->`: machine, versions and date, then tables
   generated from the JSON files found there (including
   recall_losses*.json, modality_gap*.json and index_million.json, which this command does not produce:
   `COMMANDS` below),
   with the plots linked.
Budget: under 30 minutes on 2 cores, most of it the EPContext recall in HTP emulation (~1 s per item).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .common import (
    RESULTS_DIR,
    RUNS_DIR,
    Col,
    dumps,
    header_line,
    load_json,
    machine_info,
    make_document,
    markdown_table,
    parse_list,
    save_json,
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "results.md"  # the page whose results section is generated
START, END = "<!-- results:start -->", "<!-- results:end -->"
HARNESSES = ("recall", "latency", "index", "ingest")
ROOT_HARNESSES = ("mmeb", "covr")  # run when their root is given (--mmeb-root, --covr-root)


# ----------------------------------------------------------------------------- the doc's markers
def rewrite_section(text: str, content: str, *, start: str = START, end: str = END) -> str:
    """`text` with everything between the `start` and `end` marker lines replaced by `content`.

    The markers stay; each must occur exactly once, `start` before `end`. Raises ValueError otherwise.
    """
    n_start, n_end = text.count(start), text.count(end)
    if n_start != 1 or n_end != 1:
        raise ValueError(f"expected one {start!r} and one {end!r} marker, found {n_start} and {n_end}")
    i, j = text.index(start), text.index(end)
    if j < i:
        raise ValueError(f"{end!r} comes before {start!r}")
    return text[: i + len(start)] + "\n" + content.strip("\n") + "\n" + text[j:]


def update_doc(path: str | Path, content: str) -> bool:
    """Rewrite the results section of the file at `path` (docs/results.md); True if it changed."""
    path = Path(path)
    old = path.read_text(encoding="utf-8")
    new = rewrite_section(old, content)
    if new != old:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(path)
    return new != old


# ----------------------------------------------------------------------------- markdown from the JSON
def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def recall_markdown(doc: Mapping[str, Any]) -> str:
    """Recall@5 per (setting, task) with a column per form (delta vs the reference in brackets)."""
    rows = doc["rows"]
    forms = list(dict.fromkeys(r["form"] for r in rows))
    ref = doc.get("reference")
    table = []
    for key in dict.fromkeys((r["setting"], r["task"]) for r in rows):
        line: dict[str, Any] = {"setting": key[0], "task": next(r["label"] for r in rows if (r["setting"], r["task"]) == key)}
        for form in forms:
            r = next(r for r in rows if (r["setting"], r["task"], r["form"]) == (*key, form))
            delta = r.get("delta@5")
            line[form] = f"{r['recall@5']:.1f}" + (f" ({delta:+.1f})" if form != ref and delta is not None else "")
        table.append(line)
    where = {f["form"]: f["where"] for f in doc.get("forms", [])}
    cols = [Col("setting"), Col("task")] + [Col(f, f"{f} ({where.get(f, f)})") for f in forms]
    ref_note = f"; in brackets the change vs {ref}, in points" if ref else ""
    parts = [f"M-BEIR Recall@5 (%) on `{doc['config'].get('root')}` (UniIR protocol; `edge-gcl bench build-mbeir` "
             f"builds it: `--layout phone` the phone dev benchmark){ref_note}. R@1 and R@10 are in the JSON.", "",
             markdown_table(table, cols)]
    if doc.get("note"):
        parts += ["", f"Note: {doc['note']}."]
    return "\n".join(parts)


def losses_markdown(doc: Mapping[str, Any]) -> str:
    """Average R@1 and R@5 per loss and setting and global text -> image R@1 / R@5 (mean ± std over seeds), each
    task's global R@5, then GCL's per-seed lead over CL."""
    from .recall import headline_summary, loss_summary, ordered_runs, task_label

    runs = ordered_runs(doc["runs"])
    summaries = {m: loss_summary(runs, metric=m) for m in ("recall@1", "recall@5")}
    settings = list(dict.fromkeys(r["setting"] for r in summaries["recall@5"]))
    table, cols = [], [Col("loss")]
    for s in settings:
        cols += [Col(f"{s} R@1"), Col(f"{s} R@5")]
    for loss in dict.fromkeys(r["loss"] for r in runs):
        line: dict[str, Any] = {"loss": loss}
        for metric, rows in summaries.items():
            for r in rows:
                if r["loss"] == loss:
                    line[f"{r['setting']} R@{metric.split('@')[1]}"] = r["summary"]
                    line["seeds"] = ",".join(map(str, r["seeds"]))
        table.append(line)
    t2i = {r["loss"]: r for r in headline_summary(runs)
           if "text -> image recall@1" in r and "text -> image recall@5" in r}
    if t2i:  # the headline task: a typed query looking for its photo in the union pool
        cols += [Col("t2i R@1", "global text→photo R@1"), Col("t2i R@5", "global text→photo R@5")]
        for line in table:
            line |= {f"t2i R@{k}": t2i.get(line["loss"], {}).get(f"text -> image recall@{k}", "") for k in (1, 5)}
    recipe = doc.get("recipe") or {}
    steps, tau, mult = doc["config"].get("steps"), recipe.get("temperature"), recipe.get("temperature_lr_mult", 1.0)
    data = ", ".join(Path(d).parent.name for d in recipe.get("data") or [])  # the sources, by folder name
    epochs = f"{recipe['epochs']:g} epochs" if recipe.get("epochs") else "the recipe's budget"
    budget = (f"{steps} steps each" if steps else f"{epochs} each") + (f" on {data}" if data else "")
    start = f"starting temperature {tau:g}" if tau else "the model's own starting temperature (lite: 0.07)"
    pace = f"learnt at {mult:g} x the lr" if mult != 1 else "learnable at the lr"
    if all("final_temperature" in r for r in runs):
        cols.append(Col("τ", "learnt τ"))
        for line in table:
            end = [r["final_temperature"] for r in runs if r["loss"] == line["loss"]]
            line["τ"] = f"{sum(end) / len(end):.3f}"
    parts = [f"Average M-BEIR Recall@1 / Recall@5 (%) on `{doc['config'].get('root')}`, mean ± std over seeds; one "
             f"model per loss and seed, {budget}, {start}, {pace}.", "", markdown_table(table, [*cols, Col("seeds")])]
    if "global" in settings:  # where the losses differ: each task in the union pool
        tasks = [t for t in runs[0]["results"] if t != "average"]
        per_task = []
        for loss in dict.fromkeys(r["loss"] for r in runs):
            line = {"loss": loss}
            for t in tasks:
                values = [r["results"][t]["global"]["recall@5"] for r in runs if r["loss"] == loss]
                line[t] = f"{sum(values) / len(values):.1f}"
            per_task.append(line)
        parts += ["", "Global Recall@5 per task (%), mean over seeds:", "",
                  markdown_table(per_task, [Col("loss")] + [Col(t, task_label(t)) for t in tasks])]
    by = {(r["loss"], r["seed"]): r["results"]["average"] for r in runs}
    paired = sorted(seed for loss, seed in by if loss == "gcl" and ("cl", seed) in by)
    if paired and "global" in settings:
        leads = ", ".join(
            f"seed {seed}: {by[('gcl', seed)]['global']['recall@1'] - by[('cl', seed)]['global']['recall@1']:+.2f} / "
            f"{by[('gcl', seed)]['global']['recall@5'] - by[('cl', seed)]['global']['recall@5']:+.2f}"
            for seed in paired)
        parts += ["", f"GCL minus CL, global average R@1 / R@5 (points), same seed: {leads}."]
    return "\n".join(parts)


def gap_markdown(doc: Mapping[str, Any]) -> str:
    """Per task and model: cosine with the best positive and the candidates of each modality ranked above it."""
    rows = doc["rows"]
    cols = [Col("task"), Col("model")] + [Col(k, k, ".3f" if k.startswith(("cos", "positive")) else ".2f")
                                          for k in rows[0] if k not in ("task", "model")]
    return "\n".join([
        f"Union pool of `{doc['config'].get('root')}`, every query of each task: `positive` is the mean cosine with "
        "the best-scoring positive, `cos <m>` the mean cosine with the pool's candidates of modality m, `above <m>` "
        "the mean number of them scoring above the best positive (a hit at rank k needs fewer than k in all). "
        "`default` is the model shipped at the run's commit (below).",
        "", markdown_table(rows, cols)])


def latency_markdown(doc: Mapping[str, Any]) -> str:
    """Median (p90) ms per (stage, tower, batch), a column per form; memory per form below."""
    rows = doc["rows"]
    labels = {}
    for r in rows:
        labels.setdefault(r["form"] if r["form"] != "aihub" else f"aihub:{r['where']}", r["where"])
    table = []
    for key in dict.fromkeys((r["stage"], r["tower"], r["batch"]) for r in rows):
        line: dict[str, Any] = {"stage": key[0], "tower": key[1], "batch": key[2]}
        for r in rows:
            if (r["stage"], r["tower"], r["batch"]) != key:
                continue
            label = r["form"] if r["form"] != "aihub" else f"aihub:{r['where']}"
            p90 = f" ({r['p90_ms']:.1f})" if r.get("p90_ms") is not None else ""
            line[label] = "-" if r.get("median_ms") is None else f"{r['median_ms']:.1f}{p90}"
        table.append(line)
    cols = [Col("stage"), Col("tower"), Col("batch")] + [
        Col(label, f"{label.split(':')[0]}: {where}") for label, where in labels.items()]
    forms = doc.get("forms", [])
    mem = "; ".join(f"{f['form']} {f['peak_rss_mb']:.0f} MB (process peak {f.get('process_peak_mb', 0):.0f} MB)"
                    for f in forms)
    return "\n".join([
        "Median (p90) milliseconds per call. `encode`: the tower graph alone; `embed`: the SDK's `embed_images` "
        "(decode, preprocess, encode) / `embed_texts` (tokenize, encode); `query`: `Index.search` end to end on "
        f"{doc['config'].get('index_size', 0):,} items. HTP rows are an x86 emulation of the NPU, not device speed; "
        "aihub rows are measured on the device by Qualcomm AI Hub.", "", markdown_table(table, cols), "",
        f"Peak RSS while loading and running each form, over the process before it: {mem}." if mem else ""])


# the scale run's (--million) figures at the largest N: key -> (format, column title)
SCALE_COLS = {"build_s": (".1f", "build s"), "open_s": (".2f", "open s"), "open_rss_mb": (".0f", "open RSS MB"),
              "disk_mb": (".0f", "SQLite MB"), "vectors_mb": (".0f", "vectors file MB")}


def index_markdown(doc: Mapping[str, Any]) -> str:
    """Median ms per query vs N, a row per (D, dtype, method); recall and distance to the floor at the largest N."""
    rows = doc["rows"]
    scale = bool(doc.get("config", {}).get("million"))
    sizes = sorted({r["n"] for r in rows})
    big = sizes[-1]
    table = []
    for key in dict.fromkeys((r["dim"], r["dtype"], r["method"]) for r in rows):
        line: dict[str, Any] = {"D": key[0], "dtype": key[1], "method": key[2]}
        for r in rows:
            if (r["dim"], r["dtype"], r["method"]) == key:
                line[f"n{r['n']}"] = f"{r['median_ms']:.3f}"
                if r["n"] == big:
                    line["recall"] = f"{r['recall@10']:.3f}"
                    line["floor"] = _fmt(r.get("x_floor"), ".1f")
                    line["copy"] = _fmt(r.get("x_copy_floor"), ".1f")
                    line["rss"] = _fmt(r.get("rss_mb"), ".0f")
                    line.update({name: _fmt(r.get(name), fmt) for name, (fmt, _) in SCALE_COLS.items()})
        table.append(line)
    cols = ([Col("D"), Col("dtype"), Col("method")] + [Col(f"n{n}", f"{n:,}") for n in sizes]
            + [Col("recall", f"recall@10 @{big:,}"), Col("floor", f"x floor @{big:,}"),
               Col("copy", f"x copy floor @{big:,}"), Col("rss", f"RSS MB @{big:,}")]
            + [Col(name, f"{title} @{big:,}") for name, (_, title) in SCALE_COLS.items()
               if scale and any(r.get(name) is not None and r["n"] == big for r in rows)])
    bw = doc.get("bandwidth", {})
    parts = [
        "Search time per query (median ms, one query per call) vs collection size N. `index-*` is "
        "`edge_gcl.index.Index.search` (exact, or approximate with its usearch HNSW); recall@10 is against "
        "faiss `IndexFlatIP` on the float32 vectors; `x floor` is the median over the time to read the scanned "
        "bytes at the fastest measured memory bandwidth (a read or a copy, on all cores or one), `x copy floor` "
        "the same at the copy bandwidth"
        + (f" (copy {bw['copy_gbps']:.1f} GB/s, read {bw['read_gbps']:.1f} GB/s)" if bw else "") + ".",
        "", markdown_table(table, cols)]
    approx = [r for r in rows if not r["exact"]]
    if scale:
        parts += ["", "`open s`: `Index.open` and a first exact search in a fresh process, the index closed before "
                  "(the vectors file is read into memory and its checksum verified; the committed run predates issue 33, "
                  "when it was memory-mapped, so opening takes longer now than it shows); `open RSS MB` that "
                  "process's peak RSS, Python and imports "
                  "included; `SQLite MB` the database, `vectors file MB` index.vectors beside it."]
    if scale and approx:  # each approximate row at every N
        cols_a = [Col("dim", "D"), Col("n", "N", ","), Col("dtype"), Col("method"), Col("median_ms", "median ms", ".3f"),
                  Col("p90_ms", "p90 ms", ".3f"), Col("recall@10", "recall@10", ".3f"), Col("build_s", "build s", ".1f"),
                  Col("load_s", "load s", ".1f")]
        parts += ["", "Approximate search at each N (recall@10 against faiss-flat; `index-approx` re-scores its "
                  "candidates exactly; build: the HNSW, load: reading a saved one):", "", markdown_table(approx, cols_a)]
    for r in doc.get("photo_ingest", []):
        parts += ["", f"Photo ingest (`Index.add_photos`, {r['embedder']}): {r['added']} photos in "
                  f"{r['seconds']:.1f} s, {r['items_per_s']:.1f} photos/s."]
    notes = [r for r in doc.get("ingest", []) if r["n"] == big]
    if notes:
        rate = sum(r["items_per_s"] for r in notes) / len(notes)
        slowest = max(notes, key=lambda r: r["seconds"])
        parts += ["", f"Note ingest without a model (`Index.add_notes`, synthetic vectors): {rate:,.0f} notes/s; "
                  f"{big:,} notes in {slowest['seconds']:.0f} s at the slowest ({slowest['dim']}-d {slowest['dtype']})."]
    for r in doc.get("sync", []):
        parts += ["", f"`Index.sync` of an unchanged folder of {r['files']:,} photo files (synthetic, nothing "
                  f"decoded): {r['sync_s']:.1f} s ({r['files_per_s']:,.0f} files/s)."]
    run_s = doc.get("config", {}).get("run_s")
    if scale and run_s:
        cached = {r["cached"] for r in [*rows, *doc.get("ingest", [])] if "cached" in r}
        parts += ["", f"This run: {run_s / 60:.1f} min, " + (
            "every index and graph built in it." if cached == {False} else
            "every index and graph read from `--cache` (the build times are those recorded when built)."
            if cached == {True} else "some indexes read from `--cache` (their build times recorded when built).")]
    return "\n".join(parts)


def ingest_markdown(doc: Mapping[str, Any]) -> str:
    from .ingest import markdown

    return markdown(dict(doc))


def ocr_markdown(doc: Mapping[str, Any]) -> str:
    from .ocr import markdown

    return markdown(dict(doc))


def train_speed_markdown(doc: Mapping[str, Any]) -> str:
    from .train_speed import table

    return table(dict(doc), markdown=True)


def mmeb_markdown(doc: Mapping[str, Any]) -> str:
    """hit@1 and local recall@k per MMEB task, then the average."""
    rows = doc["rows"]
    metrics = [k for k in rows[0] if k == "hit@1" or k.startswith("recall@")]
    cols = [Col("task")] + [Col(m, m, ".1f") for m in metrics] + [Col("queries")]
    missing = doc["config"].get("tasks_missing") or []
    parts = [f"MMEB retrieval on `{doc['config'].get('root')}` ({doc['config'].get('model')}): hit@1 (%) over each "
             "query's own candidate list, positive first, as VLM2Vec scores it (the average over the twelve "
             "retrieval tasks is the leaderboard's Retrieval column), and local recall@k for comparison; MMEB's "
             "instructions kept verbatim, image+text items fused (`edge_gcl/eval/mmeb.py`).",
             "", markdown_table(rows, cols)]
    if missing:
        parts += ["", f"Not in the root: {', '.join(missing)}; the average covers the tasks above only."]
    return "\n".join(parts)


def covr_markdown(doc: Mapping[str, Any]) -> str:
    """CoVR recall@k in one row."""
    rows = doc["rows"]
    metrics = [k for k in rows[0] if k.startswith("recall@")]
    cols = ([Col("annotation"), Col("queries"), Col("pool", "target videos")]
            + [Col(m, f"R@{m.split('@')[1]}", ".1f") for m in metrics])
    return "\n".join([
        f"CoVR composed video retrieval on `{doc['config'].get('root')}` ({doc['config'].get('model')}): a query is "
        "its video's middle frame fused with the edit text, a target its frames' embeddings weighted by "
        "softmax(scores / 0.1) as CoVR pools them (rows without scores: "
        f"{doc['config'].get('frames')} frames averaged); recall (%) against the pool of target videos, a query's own "
        "video removed "
        "(`edge_gcl/eval/covr.py`).", "", markdown_table(rows, cols)])


# docs/results.md sections: (JSON name in the results folder, title, markdown), in order; rendered when the file exists.
SECTIONS = [("recall", "Recall per deployed form", recall_markdown),
            ("recall_losses_phone_ep15", "GCL vs CL vs pairwise under the shipped recipe, phone dev benchmark",
             losses_markdown),
            ("recall_losses_phone", "GCL vs CL vs pairwise under the previous recipe (trial margin08), phone dev "
             "benchmark", losses_markdown),
            ("recall_losses", "GCL vs CL vs pairwise, each learning its temperature", losses_markdown),
            ("recall_losses_tlr1", "GCL vs CL vs pairwise, temperature held near 0.07", losses_markdown),
            ("recall_losses_t0.02", "GCL vs CL at a CLIP-like temperature", losses_markdown),
            ("modality_gap_phone", "Modality gap on the phone dev benchmark", gap_markdown),
            ("modality_gap", "Modality gap in the union pool", gap_markdown),
            ("latency", "Latency", latency_markdown),
            ("index", "Index search", index_markdown),
            ("ingest", "Photo ingest", ingest_markdown),
            ("ocr", "Words in photos (OCR)", ocr_markdown),
            ("ocr_phone_dev", "The phone dev benchmark with OCR on (dev split of the OCR samples)", ocr_markdown),
            ("train_speed_cpu", "Training throughput on this machine's CPU", train_speed_markdown),
            ("index_million", "Index search at a million vectors", index_markdown),
            ("mmeb", "MMEB retrieval", mmeb_markdown),
            ("covr", "CoVR composed video retrieval", covr_markdown)]
# The commands that write the JSON files this command does not (see the module docstring).
COMMANDS = {
    "recall_losses_phone_ep15": "python -m benchmarks.recall --losses gcl,cl,pairwise --seeds 0,1,2 "
                                "--train-out runs/bench-losses-phone-ep15 "
                                "--json benchmarks/results/recall_losses_phone_ep15.json "
                                "--plot benchmarks/results/recall_losses_phone_ep15.png",
    "recall_losses_phone": "python -m benchmarks.recall --losses gcl,cl,pairwise --seeds 0,1,2 "
                           "--train-out runs/bench-losses-phone --json benchmarks/results/recall_losses_phone.json "
                           "--plot benchmarks/results/recall_losses_phone.png",
    "recall_losses": "python -m benchmarks.recall --losses gcl,cl,pairwise --seeds 0,1,2 --temperature-lr-mult 50 "
                     "--json benchmarks/results/recall_losses.json --plot benchmarks/results/recall_losses.png",
    "recall_losses_tlr1": "python -m benchmarks.recall --losses gcl,cl,pairwise --seeds 0,1,2 --temperature-lr-mult 1 "
                          "--json benchmarks/results/recall_losses_tlr1.json "
                          "--plot benchmarks/results/recall_losses_tlr1.png",
    "recall_losses_t0.02": "python -m benchmarks.recall --losses gcl,cl --seeds 0,1 --temperature 0.02 "
                           "--json benchmarks/results/recall_losses_t0.02.json "
                           "--plot benchmarks/results/recall_losses_t0.02.png",
    "modality_gap": "python -m benchmarks.modality_gap --models default,runs/bench-losses/cl-s0-tlr50,"
                    "runs/bench-losses/gcl-s0-t0.02,runs/bench-losses/cl-s0-t0.02 "
                    "--json benchmarks/results/modality_gap.json",
    "modality_gap_phone": "python -m benchmarks.modality_gap --root runs/mbeir-phone-dev "
                          "--models default,runs/trials/margin08-s0 --json benchmarks/results/modality_gap_phone.json",
    "index_million": "python -m benchmarks.index --million --json benchmarks/results/index_million.json "
                     "--plot benchmarks/results/index_million.png",
    "ocr": "python -m benchmarks.ocr --artifacts runs/art-ocr --ocr-vectors fused,both "
           "--json benchmarks/results/ocr.json --plot benchmarks/results/ocr.png",
    "ocr_phone_dev": "python -m benchmarks.ocr --artifacts runs/art-ocr --tune --skip-speed "
                     "--json benchmarks/results/ocr_phone_dev.json --plot ''",
    "train_speed_cpu": "python -m benchmarks.train_speed --device cpu --table-memory 558000 "
                       "--json benchmarks/results/train_speed_cpu.json --plot benchmarks/results/train_speed_cpu.png",
    "mmeb": "python -m benchmarks.report --only mmeb --mmeb-root DIR --out benchmarks/results",
    "covr": "python -m benchmarks.report --only covr --covr-root DIR --out benchmarks/results",
} | {name: f"python -m benchmarks.{name} --json benchmarks/results/{name}.json --plot benchmarks/results/{name}.png"
     for name in HARNESSES}


def _shown(path: Path) -> str:
    """`path` as the docs name it: relative to the clone's root when inside it."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def render(results_dir: str | Path = RESULTS_DIR, *, doc_dir: str | Path = DOC.parent) -> str:
    """The results section from the JSON files in `results_dir` (those present), plots linked relative to
    `doc_dir`, the folder of the page it goes into."""
    results_dir = Path(results_dir)
    link = Path(os.path.relpath(results_dir.resolve(), Path(doc_dir).resolve())).as_posix()
    rel = _shown(results_dir)
    sections = []
    for name, title, fn in SECTIONS:
        path = results_dir / f"{name}.json"
        if not path.is_file():
            continue
        doc = load_json(path)
        body = fn(doc)
        png = results_dir / f"{name}.png"
        img = f"\n\n![{title}]({link}/{name}.png)" if png.is_file() else ""
        command = f"`{COMMANDS.get(name, 'python -m benchmarks.' + name)}`"
        sections.append(f"### {title}\n\n{body}{img}\n\nJSON: `{rel}/{name}.json` ({command}). "
                        f"Run: {header_line(doc['machine'])}.")
    if not sections:
        return "Not generated yet: `python -m benchmarks.report` writes this section."
    head = ("Generated by `python -m benchmarks.report` from the JSON in `" + rel + "`; each section ends "
            "with the date, machine, load and versions of the run that measured it.")
    timings = results_dir / "report_timings.json"
    if timings.is_file():
        t = json.loads(timings.read_text())
        steps = ", ".join(f"{k} {v / 60:.1f}" for k, v in t["seconds"].items() if k != "total")
        head += (f"\n\nLast whole run of `python -m benchmarks.report` ({t.get('date', 'date not recorded')}): "
                 f"{t['seconds']['total'] / 60:.1f} min in all ({steps} min).")
    return head + "\n\n" + "\n\n".join(sections)


# ----------------------------------------------------------------------------- the run
def built_artifacts(model: str, *, folder: str | Path = "artifacts") -> Path | None:
    """`folder` (./artifacts) when `python -m export.compile` built it from `model`: the set-up's first
    command already compiled what the report would, so the report uses it instead of exporting again."""
    from edge_gcl.manifest import Manifest, is_artifacts_folder

    if not is_artifacts_folder(folder):
        return None
    try:
        source = Manifest.load(folder).extra.get("source_model")
    except (OSError, ValueError):
        return None
    return Path(folder) if source is not None and str(source) == str(model) else None


def ensure_artifacts(model: str, artifacts: Path, *, log=print) -> Path:
    from edge_gcl.manifest import Manifest, is_artifacts_folder

    if is_artifacts_folder(artifacts):
        source = Manifest.load(artifacts).extra.get("source_model")
        if source is not None and str(source) != str(model):
            log(f"warning: {artifacts} was exported from {source!r}, not {model!r}; delete it to re-export")
        return artifacts
    from export.compile import run, summary_table

    log(f"exporting {model} into {artifacts} (export.compile)")
    result = run(model, out=artifacts, log=log)
    log(summary_table(result))
    return artifacts


def run_mmeb(artifacts: Path, root: str, out: Path, *, images: str | None = None) -> Path:
    """`edge_gcl.eval.mmeb` on `root` with the artifacts' float towers; writes <out>/mmeb.json."""
    from edge_gcl.eval.mmeb import NOT_TASKS, evaluate_mmeb, read_mmeb
    from edge_gcl.runtime import load_embedder

    data = read_mmeb(root, images=images)  # bad input fails before the model loads
    results = evaluate_mmeb(load_embedder(str(artifacts)), data)
    rows = [{"task": t, **v} for t, v in results.items() if t not in NOT_TASKS]
    rows.append({"task": "average", **results["average"]})
    config = {"root": root, "model": str(artifacts), "tasks_missing": results.get("tasks_missing", [])}
    return save_json(out / "mmeb.json", make_document("mmeb", rows, config=config))


def run_covr(artifacts: Path, root: str, out: Path, *, frames: int = 15) -> Path:
    """`edge_gcl.eval.covr` on `root` (CoVR's default paths) with the artifacts' float towers; <out>/covr.json."""
    from edge_gcl.eval.covr import (
        ANNOTATION,
        VIDEOS,
        check_decoder,
        evaluate_covr,
        read_annotation,
        resolve_videos,
    )
    from edge_gcl.runtime import load_embedder

    annotation = Path(root) / ANNOTATION
    check_decoder(resolve_videos(read_annotation(annotation), Path(root) / VIDEOS, annotation))
    result = evaluate_covr(load_embedder(str(artifacts)), root, frames=frames)
    row = {"annotation": Path(result["annotation"]).name, "queries": result["queries"], "pool": result["pool"]}
    row |= {k: v for k, v in result.items() if k.startswith("recall@")}
    config = {"root": root, "model": str(artifacts), "frames": frames}
    return save_json(out / "covr.json", make_document("covr", [row], config=config))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--artifacts", help="the model's artifacts, exported here if it holds no manifest (default: "
                   "./artifacts when export.compile built it from --model, else runs/bench-artifacts)")
    p.add_argument("--root", help="M-BEIR root for the recall (default: benchmarks.recall's, the phone dev benchmark "
                   "runs/mbeir-phone-dev, built from the shared data if missing)")
    p.add_argument("--out", help="where the JSON and PNG files go (default: runs/benchmarks; --smoke: runs/bench-smoke; "
                   "--render-only reads benchmarks/results); benchmarks/results: the committed ones, and "
                   "docs/results.md is rewritten")
    p.add_argument("--doc", default=str(DOC), help="the page whose results section is rewritten")
    p.add_argument("--only", default=",".join(HARNESSES), help="harnesses to run (mmeb, covr: with their root)")
    p.add_argument("--mmeb-root", help="also run MMEB retrieval on this MMEB-eval folder (edge-gcl eval mmeb)")
    p.add_argument("--mmeb-images", help="its images.zip unzipped (default: <root>/eval_images, else <root>)")
    p.add_argument("--covr-root", help="also run CoVR on this CoVR work folder (edge-gcl eval covr)")
    p.add_argument("--render-only", action="store_true",
                   help="only rewrite the results section of --doc from the saved JSON (benchmarks/results)")
    p.add_argument("--no-doc", action="store_true", help="do not touch --doc")
    p.add_argument("--smoke", action="store_true",
                   help="a few-minute check of the whole pipeline with tiny settings (CPU forms only); writes to "
                        "runs/bench-smoke unless --out is given, never the doc")
    args = p.parse_args(argv)
    default = RESULTS_DIR if args.render_only else Path("runs/bench-smoke") if args.smoke else RUNS_DIR
    out = Path(args.out) if args.out else default
    committed = out.resolve() == RESULTS_DIR.resolve()
    if args.smoke or not committed:  # the doc shows the committed results only
        args.no_doc = True
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    if not args.render_only:
        only = parse_list(args.only)
        bad = [h for h in only if h not in HARNESSES + ROOT_HARNESSES]
        if bad:
            p.error(f"--only: unknown harnesses {bad} (choose from {', '.join(HARNESSES + ROOT_HARNESSES)})")
        roots = {"mmeb": args.mmeb_root, "covr": args.covr_root}
        for name in ROOT_HARNESSES:
            if name in only and not roots[name]:
                p.error(f"--only {name}: give --{name}-root")
            if roots[name] and name not in only:
                only.append(name)
        print(header_line(machine_info()))
        artifacts = Path(args.artifacts or built_artifacts(args.model) or "runs/bench-artifacts")
        log(f"artifacts: {artifacts}")
        t0 = time.perf_counter()
        ensure_artifacts(args.model, artifacts, log=log)
        timings["export"] = time.perf_counter() - t0
        profile = artifacts / "aihub_profile.json"
        from . import index, ingest, latency, recall

        aihub = ["--aihub-profile", str(profile)] if profile.is_file() else []
        jobs = {
            "recall": (recall.main, ["--model", args.model, "--artifacts", str(artifacts),
                                     *(["--root", args.root] if args.root else [])]),
            "latency": (latency.main, ["--model", args.model, "--artifacts", str(artifacts), "--runs", "20",
                                       "--budget-s", "10", *aihub]),
            "index": (index.main, ["--artifacts", str(artifacts)]),
            "ingest": (ingest.main, ["--artifacts", str(artifacts), "--torch-model", args.model]),
        }
        root_jobs = {"mmeb": lambda: run_mmeb(artifacts, args.mmeb_root, out, images=args.mmeb_images),
                     "covr": lambda: run_covr(artifacts, args.covr_root, out)}
        if args.smoke:
            jobs["recall"][1].extend(["--forms", "onnx,qdq", *([] if args.root else ["--bench", "flickr8k-dev"])])
            jobs["latency"][1].extend(["--forms", "onnx,qdq", "--batches", "1,4", "--warmup", "1", "--runs", "3",
                                       "--index-size", "1000"])
            jobs["index"][1].extend(["--sizes", "1000,10000", "--dims", "256", "--queries", "10", "--photos", "8",
                                     "--bandwidth-mb", "64"])
            jobs["ingest"][1].extend(["--photos", "8", "--torch-model", ""])
        for name in only:
            log(f"== {name}")
            t0 = time.perf_counter()
            if name in root_jobs:
                root_jobs[name]()
            else:
                fn, argv_ = jobs[name]
                fn([*argv_, "--json", str(out / f"{name}.json"), "--plot", str(out / f"{name}.png")])
            timings[name] = time.perf_counter() - t0
            log(f"== {name}: {timings[name] / 60:.1f} min")
        timings["total"] = time.perf_counter() - t_all
        log("time per step: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()))
        if set(only) >= set(HARNESSES):  # the doc quotes the time of a whole run, not of a part
            (out / "report_timings.json").write_text(dumps({"seconds": timings, "date": machine_info()["date"],
                                                            "smoke": args.smoke}))
    if not args.no_doc:
        changed = update_doc(args.doc, render(out, doc_dir=Path(args.doc).resolve().parent))
        print(f"{'rewrote' if changed else 'unchanged:'} the results section of {args.doc}")
    elif not args.smoke:
        print(f"results in {out}; {_shown(Path(args.doc))} shows {_shown(RESULTS_DIR)} "
              f"(--out {_shown(RESULTS_DIR)} writes there and rewrites it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

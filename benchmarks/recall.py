"""`python -m benchmarks.recall`: M-BEIR recall of one model in every deployed form, and GCL vs CL vs pairwise.

    python -m benchmarks.recall --model default --artifacts artifacts/           # the phone dev benchmark
    python -m benchmarks.recall --bench flickr8k-dev --forms torch               # the old dev benchmark
    python -m benchmarks.recall --artifacts artifacts/ --forms onnx,qdq            # no PyTorch, no emulation
    python -m benchmarks.recall --losses gcl,cl,pairwise --seeds 0,1,2             # hours: trains 9 models
    python -m benchmarks.recall --losses gcl,cl --seeds 0 --steps 20               # a quick look

Forms mode. `evaluate_mbeir` (UniIR's protocol, `edge_gcl.eval.mbeir`) runs once per form of the same weights:

    torch   PyTorch float32 (`TorchEmbedder(load_model(--model))`): the float model, the reference
    onnx    the exported float ONNX towers on ONNX Runtime's CPU EP
    qdq     the quantized QDQ towers on the CPU EP (ORT's CPU kernels, not the NPU's arithmetic)
    ctx     the compiled EPContext towers on the QNN EP's HTP backend: on x86 an emulation of the NPU that
            is bit-faithful to the device, and slow (about a second per item)

and the table lists Recall@1/5/10 per task x setting x form, with deltas (points) against the reference
form (`--reference`, default torch, else onnx). `--artifacts` must come from `--model`'s weights for the
deltas to mean quantization / compilation error: the harness checks the model ids agree and says so.
Beside the table, the headline figures per form: global text->image R@1 and R@5 (a text query looking for a
photo among photos, notes and photo+note items) beside the global average R@1 and R@5.

The benchmark (`--bench`, M-BEIR layout, `edge_gcl.eval.build`; built into `--root` from ../shared/data when
that holds no query files):

    phone         the default: 400 photos never trained on (flickr8k dev + the 300 held-out flickr8k-extra
                  photos), a union pool of about 1/4 photos, 1/4 photo+note items, 1/2 notes;
                  root runs/mbeir-phone-dev (`build_phone_mbeir`)
    flickr8k-dev  the 100 flickr8k dev photos, a text-heavy pool (17 photos, 17 photo+note, 216 texts), kept
                  for comparison with earlier results; root runs/mbeir-dev (`build_mbeir`)

Losses mode (`--losses`). The paper's central claim: GCL's unified softmax beats the CLIP loss on
mixed-modality retrieval, globally and locally. `pairwise` (GCL's six modality pairs, one modality per
denominator) is this project's own ablation, not the paper's: its "+Pairwise" rows mean training on
image-caption pair data. For each loss and seed, train the default
recipe with `edge_gcl.train.train` (the "train" record of `edge_gcl/weights/default/edge_gcl.json` when it
exists, else the README's recipe), changing only the loss and seed (`--steps` shortens every run alike),
evaluate the PyTorch model on `--root`, and report mean +- std over seeds of the average Recall@5 in the
global and local settings. Finished runs in `--train-out` are reused, interrupted ones resumed, and runs
already in the result JSON (`--json`) for the same recipe and benchmark are kept without retraining, so a
table of 9 runs of 50 min can be built over several sittings (each run records its config and date).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
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

FORMS = ("torch", "onnx", "qdq", "ctx")
WHERE = {"torch": "PyTorch float32, CPU", "onnx": "ORT CPU, float32", "qdq": "ORT CPU, QDQ",
         "ctx": "QNN HTP emulation, EPContext"}
LOSSES = ("gcl", "cl", "pairwise")
KS = (1, 5, 10)
SHARED_FLICKR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
BENCHES = {"phone": "runs/mbeir-phone-dev", "flickr8k-dev": "runs/mbeir-dev"}  # --bench -> its default root
REPO = Path(__file__).resolve().parents[1]
DEFAULT_META = REPO / "edge_gcl" / "weights" / "default" / "edge_gcl.json"

MBEIR = dict[str, dict[str, dict[str, float]]]  # evaluate_mbeir's result: task -> setting -> metric -> value


# ----------------------------------------------------------------------------- the benchmark root
def ensure_root(root: str | Path | None = None, *, bench: str | None = None, flickr: str | Path = SHARED_FLICKR,
                split: str = "dev", log: Callable[[str], Any] = print) -> Path:
    """The M-BEIR root (default: `bench`'s); built when it holds no query files. `bench` "phone": from the shared
    data beside `flickr` (`build_phone_mbeir`'s default sources); "flickr8k-dev": from `flickr`'s `split`.
    `bench` defaults to the one whose default root `root` names (runs/mbeir-dev: flickr8k-dev), else phone."""
    from edge_gcl.data import read_split
    from edge_gcl.eval.build import build_mbeir, build_phone_mbeir, phone_sources

    if bench is None:
        bench = next((b for b, r in BENCHES.items() if root is not None and Path(root) == Path(r)), "phone")
    if bench not in BENCHES:
        raise ValueError(f"bench {bench!r}: expected one of {', '.join(BENCHES)}")
    root = Path(root if root is not None else BENCHES[bench])
    if (root / "query").is_dir():
        return root
    flickr = Path(flickr)
    if bench == "phone":
        log(f"building {root}: the phone dev benchmark from {flickr.parent}")
        build_phone_mbeir(phone_sources(flickr.parent), root)
        return root
    captions, splits = flickr / "captions.txt", flickr / "splits.json"
    if not captions.is_file() or not splits.is_file():
        raise FileNotFoundError(f"{root}: no M-BEIR root, and {flickr} has no captions.txt + splits.json to build one")
    log(f"building {root} from {flickr} ({split} split)")
    build_mbeir(captions, None, root, names=sorted(read_split(splits, split)))
    return root


def bench_of(root: str | Path) -> str | None:
    """Which `BENCHES` layout a root holds, by its query files' dataset name; None when neither."""
    names = {f.name for f in (Path(root) / "query" / "test").glob("mbeir_*.jsonl")}
    for bench, dataset in (("phone", "phone"), ("flickr8k-dev", "flickr8k")):
        if any(n.startswith(f"mbeir_{dataset}_task") for n in names):
            return bench
    return None


# ----------------------------------------------------------------------------- pure pieces
def task_label(stem: str) -> str:
    """"mbeir_flickr8k_task0_test" -> "text -> image" (UniIR's task ids); "" when unknown."""
    from edge_gcl.eval.mbeir import task_label as label

    return label(stem)


def recall_rows(results: Mapping[str, MBEIR], reference: str | None) -> list[dict[str, Any]]:
    """Flat rows (setting, task, form, recall@k..., delta@k...) from {form: evaluate_mbeir result}.

    delta@k = form's recall@k - reference form's, in points (None without a reference, 0.0 on its own rows).
    Rows are ordered by setting, task (the average last), then form in the given order.
    """
    if reference is not None and reference not in results:
        raise ValueError(f"reference form {reference!r} has no results (forms: {list(results)})")
    forms = list(results)
    if not forms:
        return []
    first = results[forms[0]]
    tasks = [t for t in first if t != "average"] + (["average"] if "average" in first else [])
    settings = list(first[tasks[0]])
    for form in forms[1:]:
        if set(results[form]) != set(first):
            raise ValueError(f"form {form!r} was evaluated on other tasks than {forms[0]!r}")
    rows = []
    for setting in settings:
        for task in tasks:
            for form in forms:
                vals = results[form][task][setting]
                row: dict[str, Any] = {"setting": setting, "task": task,
                                       "label": task_label(task) if task != "average" else "average",
                                       "form": form}
                for metric, v in vals.items():
                    row[metric] = v
                    ref = results[reference][task][setting][metric] if reference is not None else None
                    row["delta" + metric[len("recall"):]] = None if ref is None else v - ref
                rows.append(row)
    return rows


HEADLINE = (("text -> image", "recall@1"), ("text -> image", "recall@5"), ("average", "recall@1"),
            ("average", "recall@5"))  # global setting: `edge_gcl.eval.mbeir.headline`


def headline_rows(results: Mapping[str, MBEIR]) -> list[dict[str, Any]]:
    """One row per form: its headline figures (global text -> image and average R@1 / R@5), keys "<what> <metric>"."""
    from edge_gcl.eval.mbeir import headline

    rows = []
    for form, res in results.items():
        top = headline(res)
        rows.append({"form": form, **{f"{w} {m}": top.get(w, {}).get(m) for w, m in HEADLINE}})
    return rows


def headline_summary(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per loss: mean +- std over seeds of each headline figure, as "<what> <metric>" (text) and
    "<what> <metric> mean" / "... std" (numbers)."""
    from edge_gcl.eval.mbeir import headline

    by_loss: dict[str, dict[str, list[float]]] = {}
    seeds: dict[str, list[int]] = {}
    for r in runs:
        seeds.setdefault(r["loss"], []).append(r["seed"])
        top = headline(r["results"])
        for w, m in HEADLINE:
            if m in top.get(w, {}):
                by_loss.setdefault(r["loss"], {}).setdefault(f"{w} {m}", []).append(top[w][m])
    rows = []
    for loss, figures in by_loss.items():
        row: dict[str, Any] = {"loss": loss, "seeds": seeds[loss]}
        for key, vals in figures.items():
            mean, std = mean_std(vals)
            row |= {key: mean_std_text(vals), f"{key} mean": mean, f"{key} std": std}
        rows.append(row)
    return rows


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("mean_std: no values")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


def ordered_runs(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Runs by loss in LOSSES' order (GCL first), then by seed: tables and plots read alike whichever run ended first."""
    rank = {loss: i for i, loss in enumerate(LOSSES)}
    return sorted(runs, key=lambda r: (rank.get(r["loss"], len(rank)), r["seed"]))


def mean_std_text(values: Sequence[float]) -> str:
    """"mean ± std" over seeds, or the one value alone: a single seed has no spread to show."""
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def loss_summary(runs: Sequence[Mapping[str, Any]], *, metric: str = "recall@5") -> list[dict[str, Any]]:
    """Per loss and setting: mean +- std over seeds of the average `metric`.

    `runs`: one per (loss, seed) with "loss", "seed" and "results" (an evaluate_mbeir result).
    """
    by_loss: dict[str, dict[str, list[float]]] = {}
    seeds: dict[str, list[int]] = {}
    for r in runs:
        seeds.setdefault(r["loss"], []).append(r["seed"])
        for setting, vals in r["results"]["average"].items():
            by_loss.setdefault(r["loss"], {}).setdefault(setting, []).append(vals[metric])
    rows = []
    for loss, settings in by_loss.items():
        for setting, vals in settings.items():
            mean, std = mean_std(vals)
            rows.append({"loss": loss, "setting": setting, "metric": metric, "mean": mean, "std": std,
                         "seeds": seeds[loss], "values": vals, "summary": mean_std_text(vals)})
    return rows


def recorded_runs(path: str | Path, root: str | Path) -> list[dict[str, Any]]:
    """The runs (with their training record) of an earlier losses result at `path` on the benchmark `root`.

    [] when there is no such file or it holds another benchmark; ValueError naming the file when it is not
    a result JSON (so a damaged file is reported, never silently overwritten).
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text())
        runs = doc.get("runs", []) if isinstance(doc, dict) else None
        if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
            raise ValueError("no list of runs")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable result JSON ({e}); move it away or pass another --json") from None
    if doc.get("benchmark") != "recall-losses" or doc.get("config", {}).get("root") != str(root):
        return []
    return [r for r in runs if "train" in r and "loss" in r and "seed" in r and "results" in r]


def with_recorded(runs: Sequence[Mapping[str, Any]], path: str | Path, root: str | Path,
                  same: Callable[[Mapping[str, Any]], bool] = lambda r: True) -> list[dict[str, Any]]:
    """`runs` plus the runs recorded at `path` (read now) of every other (loss, seed) for which `same(run)`
    (the caller's recipe: a table never mixes recipes).

    Read at save time, not at start: another sitting, or a process training other losses beside this one,
    may have recorded runs since; a run in `runs` replaces a recorded one of its (loss, seed).
    """
    done = {(r["loss"], r["seed"]) for r in runs}
    return [dict(r) for r in runs] + [r for r in recorded_runs(path, root) if (r["loss"], r["seed"]) not in done
                                      and same(r)]


# ----------------------------------------------------------------------------- forms mode
def load_form(form: str, *, model: str, artifacts: str | Path | None, device: str = "cpu") -> Any:
    if form == "torch":
        from edge_gcl.models import TorchEmbedder, load_model

        return TorchEmbedder(load_model(model), device=device)
    from edge_gcl.manifest import is_artifacts_folder
    from edge_gcl.runtime import OnnxEmbedder

    if artifacts is None and is_artifacts_folder(model):  # --model names the artifacts folder itself
        artifacts = model
    if artifacts is None:
        raise ValueError(f"form {form!r} needs --artifacts (a folder written by `python -m export.compile`)")

    if form == "ctx":
        return OnnxEmbedder(artifacts, provider="qnn", form="ctx")
    if form in ("onnx", "qdq"):
        return OnnxEmbedder(artifacts, form="float" if form == "onnx" else "qdq")
    raise ValueError(f"unknown form {form!r}: expected one of {FORMS}")


def run_forms(
    *,
    model: str = "default",
    artifacts: str | Path | None = None,
    root: str | Path,
    forms: Sequence[str] = FORMS,
    reference: str | None = None,
    batch_size: int = 32,
    via_index: bool = False,
    index_dtype: str = "float32",
    device: str = "auto",
    progress: bool = False,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """{"rows": recall_rows(...), "results": {form: evaluate_mbeir result}, "forms": [per-form info]}.

    `via_index`: also measure each form's global-setting recall through the on-device index (`index_recall`,
    vectors stored as `index_dtype`), under "via_index": {form: result} and "index_rows": index_rows(...).
    """
    from edge_gcl.eval.mbeir import evaluate_mbeir

    bad = [f for f in forms if f not in FORMS]
    if bad:
        raise ValueError(f"unknown forms {bad}: expected some of {FORMS}")
    if reference is None:
        reference = "torch" if "torch" in forms else "onnx" if "onnx" in forms else None
    results: dict[str, MBEIR] = {}
    indexed: dict[str, MBEIR] = {}
    info = []
    for form in forms:
        log(f"{form}: {WHERE[form]}")
        embedder = load_form(form, model=model, artifacts=artifacts, device=device)
        t0 = time.perf_counter()
        results[form] = evaluate_mbeir(embedder, root, batch_size=batch_size, ks=KS, progress=progress)
        seconds = time.perf_counter() - t0
        avg = results[form]["average"]
        log("  average R@5: " + ", ".join(f"{s} {v['recall@5']:.2f}" for s, v in avg.items()) + f" ({seconds:.0f} s)")
        info.append({"form": form, "where": WHERE[form], "model_id": embedder.model_id, "eval_s": seconds})
        if via_index:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="recall-index-") as tmp:
                indexed[form] = index_recall(embedder, root, ks=KS, dtype=index_dtype, index_dir=tmp,
                                             batch_size=batch_size, progress=progress)
            info[-1]["index_eval_s"] = time.perf_counter() - t0
            r5, index_s = indexed[form]["average"]["global"]["recall@5"], info[-1]["index_eval_s"]
            log(f"  via the index ({index_dtype}): global average R@5 {r5:.2f} ({index_s:.0f} s)")
    ids = {i["model_id"] for i in info if i["form"] != "torch"}
    torch_ids = [i["model_id"] for i in info if i["form"] == "torch"]
    note = None
    if torch_ids and ids and torch_ids[0] not in ids:
        note = (f"the PyTorch model ({torch_ids[0]}) and the artifacts ({', '.join(sorted(ids))}) have different "
                f"weights: deltas vs torch are not export/quantization error")
        log("warning: " + note)
    out = {"rows": recall_rows(results, reference), "headline": headline_rows(results), "results": results,
           "forms": info, "reference": reference, "note": note}
    if via_index:
        out |= {"via_index": indexed, "index_rows": index_rows(results, indexed), "index_dtype": index_dtype}
    return out


# ----------------------------------------------------------------------------- index mode (--via-index)
def index_recall(
    embedder: Any,
    root: str | Path,
    *,
    split: str = "test",
    ks: Sequence[int] = KS,
    dtype: str = "float32",
    index_dir: str | Path,
    batch_size: int = 32,
    progress: bool = False,
) -> MBEIR:
    """Global-setting recall (percent) through the on-device index, in `evaluate_mbeir`'s layout:
    {"<query file stem>": {"global": {"recall@k": ..}}, ..., "average": {"global": {..}}}.

    1. Load the union pool into a new `edge_gcl.index.Index` at `index_dir` (`embedder`, vectors stored as
       `dtype`), in pool order: "image" candidates as photos, "text" ones as notes, "image,text" ones as a
       photo with its note. The index keys a photo by its path and a note by its text, so a pool that holds
       the same photo in two candidates (say as an image and as an image+text item) or the same note twice
       has no index equivalent: ValueError naming both dids. Pool order matters: the index breaks score ties
       by insertion order, the harness by pool row.
    2. Search each query of each query file with `Index.search` (text=, image= or both, as its modality says),
       k = max(ks), no modality filter; map hit ids back to dids.
    3. Recall@k (`edge_gcl.metrics.recall_at_k`) against the same positives as the harness (qrels, else
       pos_cand_list); "average" is the unweighted mean over query files.

    With float32 storage this equals `evaluate_mbeir(embedder, root, settings=("global",))` except where the
    index differs by design: a note longer than the text tower's context is split into chunks (score = max
    over chunks) where the harness truncates it (a warning counts them), and float16 / int8 storage rounds
    the vectors. `index_dir` must not hold an index yet.
    """
    from edge_gcl.eval.mbeir import global_pool_path, query_positives, read_pool, read_queries
    from edge_gcl.index import Index
    from edge_gcl.index.sources import chunk_note, note_id, photo_id
    from edge_gcl.metrics import recall_at_k

    root = Path(root)
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks: expected positive integers, got {ks}")
    query_files = sorted((root / "query" / split).glob(f"mbeir_*_{split}.jsonl"))
    if not query_files:
        raise FileNotFoundError(f"{root / 'query' / split}: no query files mbeir_*_{split}.jsonl")
    pool_path = global_pool_path(root, split)
    pool = read_pool(pool_path, root=root)
    if not pool:
        raise ValueError(f"{pool_path}: empty candidate pool")
    if (Path(index_dir) / "index.sqlite").exists():
        raise FileExistsError(f"{index_dir}: already holds an index; index_recall needs a new one")

    # 1. item ids, checked for candidates the index would merge, then the pool in order
    did_of: dict[str, str] = {}  # index item id -> M-BEIR did
    photo_of: dict[str, tuple[str, str]] = {}  # photo item id -> (did, modality)
    for c in pool:
        if c.img_path is not None:
            item_id = photo_id(c.img_path)
            if item_id in photo_of:
                did, modality = photo_of[item_id]
                raise ValueError(
                    f"{pool_path}: candidates {did} ({modality}) and {c.did} ({c.modality}) use the same "
                    f"photo {c.img_path}; the index keys a photo by its path, so it holds one item per photo")
            photo_of[item_id] = (c.did, c.modality)
        else:
            item_id = note_id(c.txt)  # type: ignore[arg-type]
            if item_id in did_of:
                raise ValueError(f"{pool_path}: candidates {did_of[item_id]} and {c.did} are the same note "
                                 f"{c.txt!r}; the index keys a note by its text, so it holds it once")
        did_of[item_id] = c.did
    tokenizer = getattr(embedder, "tokenizer", None)
    chunked = sum(1 for c in pool if c.txt is not None and len(chunk_note(c.txt, tokenizer)) > 1)
    if chunked:
        warnings.warn(f"{pool_path}: {chunked} candidate texts are longer than the text tower's context; "
                      f"the index splits them into chunks (score = max over chunks), the harness truncates "
                      f"them, so recall through the index may differ from the harness's there", stacklevel=2)

    k_max = max(ks)
    index = Index.open(index_dir, model=embedder, dtype=dtype)  # type: ignore[arg-type]
    try:
        skipped = []
        for start, end in _runs([c.modality for c in pool]):
            run = pool[start:end]
            if run[0].modality == "image":
                photos = [str(c.img_path) for c in run]
                report = index.add_photos(photos, recursive=False, batch_size=batch_size, progress=progress)
                skipped += report.skipped
            elif run[0].modality == "text":
                notes = [c.txt for c in run if c.txt is not None]
                skipped += index.add_notes(notes, batch_size=batch_size, progress=progress).skipped
            else:
                for c in run:
                    index.add_note(c.txt, photo=str(c.img_path))  # type: ignore[arg-type]
        if skipped:
            raise ValueError(f"{pool_path}: the index skipped {len(skipped)} candidates, e.g. "
                             f"{skipped[0].input}: {skipped[0].reason}")
        if list(index) != list(did_of):  # iteration is in insertion order, the order ties are broken in
            raise RuntimeError(f"{index_dir}: the index does not hold the {len(pool)} candidates in order")

        # 2-3. search, map ids back, score
        results: MBEIR = {}
        for qf in query_files:
            queries = read_queries(qf, root=root)
            if not queries:
                raise ValueError(f"{qf}: no queries")
            positives = query_positives(queries, root / "qrels" / split / f"{qf.stem}_qrels.txt", query_file=qf)
            ranked = np.full((len(queries), k_max), "", dtype=object)  # (nq, k) dids, "" past the last hit
            for i, q in enumerate(queries):
                hits = index.search(text=q.txt, image=str(q.img_path) if q.img_path is not None else None,
                                    k=k_max)
                ranked[i, : len(hits)] = [did_of[h.id] for h in hits]
            results[qf.stem] = {"global": {f"recall@{k}": 100.0 * recall_at_k(ranked, positives, k)
                                           for k in ks}}
    finally:
        index.close()
    tasks = list(results)
    results["average"] = {"global": {m: float(np.mean([results[t]["global"][m] for t in tasks]))
                                     for m in results[tasks[0]]["global"]}}
    return results


def _runs(values: Sequence[Any]) -> list[tuple[int, int]]:
    """[start, end) of each run of equal consecutive values: "aabc" -> [(0, 2), (2, 3), (3, 4)]."""
    bounds = [0, *(i for i in range(1, len(values)) if values[i] != values[i - 1]), len(values)]
    return [(a, b) for a, b in pairwise(bounds) if b > a]


def index_rows(harness: Mapping[str, MBEIR], indexed: Mapping[str, MBEIR]) -> list[dict[str, Any]]:
    """Per form and query file (the average last): global recall@k from the harness, through the index, and
    delta@k = index - harness in points."""
    rows = []
    for form, via in indexed.items():
        tasks = [t for t in via if t != "average"] + ["average"]
        for task in tasks:
            label = task_label(task) if task != "average" else "average"
            row: dict[str, Any] = {"task": task, "label": label, "form": form}
            for metric, v in via[task]["global"].items():
                k = metric[len("recall@"):]
                ref = harness[form][task]["global"][metric]
                row |= {f"harness@{k}": ref, f"index@{k}": v, f"delta@{k}": v - ref}
            rows.append(row)
    return rows


def index_columns(rows: Sequence[Mapping[str, Any]]) -> list[Col]:
    ks = [k for k in KS if rows and f"index@{k}" in rows[0]]
    per_k = [(Col(f"harness@{k}", f"harness R@{k}", ".2f"), Col(f"index@{k}", f"index R@{k}", ".2f"),
              Col(f"delta@{k}", f"Δ@{k}", "+.2f")) for k in ks]
    return [Col("task"), Col("label", "task kind"), Col("form")] + [c for cols in per_k for c in cols]


# ----------------------------------------------------------------------------- losses mode
def default_recipe(meta_path: Path = DEFAULT_META):  # -> edge_gcl.train.TrainConfig
    """The default model's training config: its checkpoint's "train" record (paths expanded, so `train` can
    open them), else the README's recipe."""
    from edge_gcl.train import TrainConfig, config_from_record

    if meta_path.is_file():
        train = json.loads(meta_path.read_text()).get("train")
        if isinstance(train, dict) and train:
            return config_from_record(train)
    flickr, extra = SHARED_FLICKR, SHARED_FLICKR.parent / "flickr8k-extra"
    return TrainConfig(model="lite", loss="gcl", data=[str(flickr / "captions.txt"), str(extra / "captions.txt")],
                       split=f"{flickr / 'splits.json'}:train", batch_size=256, epochs=10.0, lr=3e-4)


RUN_ONLY = ("out", "resume", "checkpoint_every", "workers", "prefetch", "cache_dir", "device")  # train options that leave the model alone


def same_recipe(record: Mapping[str, Any], cfg: Any) -> bool:
    """Whether a finished run's "train" record is the run `cfg` asks for (paths compared resolved)."""
    from edge_gcl.train import listed_splits

    # CL has no photo+note: its training is the same whichever caption a photo+note would fuse
    ignored = RUN_ONLY + (("pair_caption",) if cfg.loss == "cl" else ())
    want = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ignored}
    unset = dataclasses.asdict(type(cfg)())  # a field newer than the run: the run had its default
    have = {k: record.get(k, unset[k]) for k in want}

    def split(value: str) -> str:  # "FILE:SPLIT" with FILE resolved (checkpoints write ${recipes}/, ~/); "all" as it is
        from edge_gcl.train import expand_recorded

        file, sep, name = value.rpartition(":")
        return f"{Path(expand_recorded(file)).resolve()}:{name}" if sep else value

    def splits(value: Any, sources: int) -> Any:  # one "FILE:SPLIT" (older runs) or one per source
        if not value:
            return None
        if isinstance(value, str):
            return split(value)
        return [split(v) if v else None for v in listed_splits(value, sources)]  # as train reads them

    def norm(d: Mapping[str, Any]) -> dict[str, Any]:
        paths = {"data": [str(Path(x).resolve()) for x in d["data"] or []],
                 "images": [str(Path(x).resolve()) for x in d["images"] or []],
                 "split": splits(d["split"], len(d["data"] or []))}
        if "exclude" in d:
            paths["exclude"] = [split(v) for v in d["exclude"] or []]
        return {**d, **paths}

    return norm(have) == norm(want)


def losses_base(recipe: Any = None, *, temperature: float | None = None, temperature_lr_mult: float | None = None):
    """The recipe every loss run starts from: `recipe` (default: the default model's), with the overrides."""
    base = recipe if recipe is not None else default_recipe()
    if temperature is not None:
        base = dataclasses.replace(base, temperature=temperature)
    if temperature_lr_mult is not None:
        base = dataclasses.replace(base, temperature_lr_mult=temperature_lr_mult)
    return base


def run_config(base: Any, loss: str, seed: int, *, train_out: str | Path, steps: int | None = None,
               temperature: float | None = None, temperature_lr_mult: float | None = None):
    """The training config of one (loss, seed) run of the losses mode, in its own folder under `train_out`."""
    from edge_gcl.train import with_loss

    out = Path(train_out) / (f"{loss}-s{seed}" + (f"-{steps}steps" if steps else "")
                             + (f"-t{temperature:g}" if temperature is not None else "")
                             + (f"-tlr{temperature_lr_mult:g}" if temperature_lr_mult is not None else ""))
    return dataclasses.replace(with_loss(base, loss), seed=seed, out=str(out), resume=True,
                               **({"steps": steps} if steps else {}))


def run_losses(
    *,
    root: str | Path,
    losses: Sequence[str] = LOSSES,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int | None = None,
    temperature: float | None = None,
    temperature_lr_mult: float | None = None,
    train_out: str | Path = "runs/bench-losses",
    recipe: Any = None,
    batch_size: int = 32,
    device: str = "auto",
    precision: str = "fp32",
    recorded: Sequence[Mapping[str, Any]] = (),
    on_run: Callable[[list[dict[str, Any]]], Any] | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Train and evaluate every (loss, seed); {"rows": loss_summary(...), "runs": [...], "recipe": {...}}.

    A run is trained only when neither `train_out` holds it finished nor `recorded` (the "runs" of an earlier
    result on the same benchmark) holds its figures under the same recipe: at 50 min a run, the 9 runs of a
    table outlast one sitting, and the table is built over several. `on_run(runs)` is called after each newly
    trained run with the runs so far (the caller saves them, so a sitting that ends mid-table loses no run).
    """
    from edge_gcl.checkpoint import is_checkpoint, read_meta
    from edge_gcl.eval.mbeir import evaluate_mbeir
    from edge_gcl.models import TorchEmbedder, load_model
    from edge_gcl.train import portable_record, train

    bad = [x for x in losses if x not in LOSSES]
    if bad:
        raise ValueError(f"unknown losses {bad}: expected some of {LOSSES}")
    base = losses_base(recipe, temperature=temperature, temperature_lr_mult=temperature_lr_mult)
    missing = [d for d in base.data if not Path(d).is_file()]
    if missing:
        raise FileNotFoundError(f"training data of the recipe not found: {', '.join(missing)}")
    runs = []
    for loss in losses:
        for seed in seeds:
            cfg = run_config(base, loss, seed, train_out=train_out, steps=steps, temperature=temperature,
                             temperature_lr_mult=temperature_lr_mult)
            cfg = dataclasses.replace(cfg, device=device, precision=precision)
            out = Path(cfg.out)
            done = is_checkpoint(out) and same_recipe(read_meta(out).get("train", {}), cfg)
            earlier = [r for r in recorded if (r.get("loss"), r.get("seed"), r.get("checkpoint")) == (loss, seed, str(out))
                       and "train" in r and same_recipe(r["train"], cfg)]
            if not done and earlier:
                log(f"{loss} seed {seed}: reusing the recorded figures of {out} (trained {earlier[-1].get('date', '?')})")
                runs.append({**earlier[-1], "reused": "recorded"})
                continue
            t0 = time.perf_counter()
            if done:
                log(f"{loss} seed {seed}: reusing {out}")
            else:
                log(f"{loss} seed {seed}: training into {out}")
                train(cfg)
            train_s = time.perf_counter() - t0
            model = load_model(str(out))
            results = evaluate_mbeir(TorchEmbedder(model, device=device), root, batch_size=batch_size, ks=KS, progress=False)
            avg = results["average"]
            log("  average R@5: " + ", ".join(f"{s} {v['recall@5']:.2f}" for s, v in avg.items()))
            runs.append({"loss": loss, "seed": seed, "checkpoint": str(out), "reused": done, "train_s": train_s,
                         "final_temperature": 1 / model.logit_scale.exp().item(), "results": results,
                         "train": portable_record(cfg), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            if on_run is not None:
                on_run(runs)
    return {"rows": loss_summary(runs), "headline": headline_summary(runs), "runs": runs,
            "recipe": dataclasses.asdict(base), "steps": steps}


# ----------------------------------------------------------------------------- output
def form_columns(rows: Sequence[Mapping[str, Any]]) -> list[Col]:
    ks = [k for k in KS if rows and f"recall@{k}" in rows[0]]
    return ([Col("setting"), Col("task"), Col("label", "task kind"), Col("form")]
            + [Col(f"recall@{k}", f"R@{k}", ".2f") for k in ks]
            + [Col(f"delta@{k}", f"ΔR@{k}", "+.2f") for k in ks])


LOSS_COLS = [Col("loss"), Col("setting"), Col("metric"), Col("summary", "mean ± std"), Col("seeds")]
HEADLINE_TITLE = "headline, global pool (%): text -> image R@1 / R@5 beside the average R@1 / R@5"


def headline_columns(first: str, fmt: str) -> list[Col]:
    return [Col(first)] + [Col(f"{w} {m}", f"{'text->image' if w != 'average' else 'avg'} R@{m[len('recall@'):]}", fmt)
                           for w, m in HEADLINE]


def tables(doc: Mapping[str, Any]) -> str:
    if doc["benchmark"] == "recall-losses":
        out = format_table(doc["rows"], LOSS_COLS, title="average M-BEIR recall@5 (%) over seeds, per loss")
        if doc.get("headline"):
            out += "\n\n" + format_table(doc["headline"], [*headline_columns("loss", ""), Col("seeds")],
                                         title=HEADLINE_TITLE + ", mean ± std over seeds")
        return out
    ref = doc.get("reference")
    title = f"M-BEIR recall (%) per form; Δ = points vs {ref}" if ref else "M-BEIR recall (%) per form"
    out = format_table(doc["rows"], form_columns(doc["rows"]), title=title)
    if doc.get("headline"):
        out += "\n\n" + format_table(doc["headline"], headline_columns("form", ".2f"), title=HEADLINE_TITLE)
    out += f"\nnote: {doc['note']}" if doc.get("note") else ""
    if doc.get("index_rows"):
        out += "\n\n" + format_table(doc["index_rows"], index_columns(doc["index_rows"]),
                                     title=f"M-BEIR global recall (%): harness vs through the index "
                                           f"({doc.get('index_dtype', '?')} vectors); Δ = index - harness")
    return out


def plot_losses(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Average R@1 and R@5 per loss and setting: every seed as a dot, the mean ± std as a square with whiskers."""
    plt = pyplot()
    runs = ordered_runs(doc["runs"])
    losses = list(dict.fromkeys(r["loss"] for r in runs))
    settings = list(dict.fromkeys(s for r in runs for s in r["results"]["average"]))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, metric in zip(axes, ("recall@1", "recall@5"), strict=True):
        rows = loss_summary(runs, metric=metric)
        for j, loss in enumerate(losses):
            x = np.arange(len(settings)) * (len(losses) + 1) + j
            pts = [next(r for r in rows if (r["loss"], r["setting"]) == (loss, s)) for s in settings]
            ax.errorbar(x, [p["mean"] for p in pts], yerr=[p["std"] for p in pts], fmt="s", capsize=5,
                        color=f"C{j}", label=loss)
            for xi, p in zip(x, pts, strict=True):
                ax.plot([xi + 0.15] * len(p["values"]), p["values"], ".", color=f"C{j}", alpha=0.6)
        ax.set_xticks(np.arange(len(settings)) * (len(losses) + 1) + (len(losses) - 1) / 2)
        ax.set_xticklabels([f"{s} pool" for s in settings])
        ax.set_ylabel(f"average {metric.replace('recall', 'Recall')} (%)")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    recipe = doc.get("recipe") or {}
    tau, mult = recipe.get("temperature"), recipe.get("temperature_lr_mult", 1.0)
    fig.suptitle(" vs ".join(x.upper() if x != "pairwise" else x for x in losses) + " on M-BEIR"
                 + (f", starting temperature {tau:g}" if tau else "")
                 + (f", temperature lr x{mult:g}" if mult != 1 else "") + "\n(dots: seeds; squares: mean ± std)")
    return save_figure(fig, path)


def plot(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Forms: Recall@5 per task, one panel per setting, a bar per form. Losses: see `plot_losses`."""
    if doc["benchmark"] == "recall-losses":
        return plot_losses(doc, path)
    plt = pyplot()
    rows = doc["rows"]
    metric = "recall@5" if rows and "recall@5" in rows[0] else next(k for k in rows[0] if k.startswith("recall@"))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    forms = list(dict.fromkeys(r["form"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    labels = {r["task"]: r["label"] for r in rows}
    fig, axes = plt.subplots(len(settings), 1, figsize=(max(8, 1.6 * len(tasks)), 3.6 * len(settings)), squeeze=False)
    width = 0.8 / max(1, len(forms))
    for ax, setting in zip(axes[:, 0], settings, strict=True):
        for j, form in enumerate(forms):
            vals = [next(r[metric] for r in rows if (r["setting"], r["task"], r["form"]) == (setting, t, form))
                    for t in tasks]
            ax.bar(np.arange(len(tasks)) + j * width, vals, width, label=f"{form} ({WHERE.get(form, form)})")
        ax.set_xticks(np.arange(len(tasks)) + width * (len(forms) - 1) / 2)
        ax.set_xticklabels([labels[t] or t for t in tasks], fontsize=8)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"M-BEIR {setting} pool")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.recall", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="the PyTorch model (torch form)")
    p.add_argument("--artifacts", help="artifacts folder from export.compile (onnx, qdq, ctx forms)")
    p.add_argument("--bench", choices=list(BENCHES),
                   help="the dev benchmark: phone (the default) or flickr8k-dev (the old one, for comparison; also "
                   "the default when --root is runs/mbeir-dev)")
    p.add_argument("--root", help="M-BEIR root (default: runs/mbeir-phone-dev or runs/mbeir-dev, per --bench; "
                   "built from ../shared/data if missing)")
    p.add_argument("--flickr", default=str(SHARED_FLICKR),
                   help="the shared flickr8k folder (its parent holds flickr8k-extra) to build --root from")
    p.add_argument("--forms", default=",".join(FORMS))
    p.add_argument("--reference", help="form the deltas are against (default: torch, else onnx)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="where PyTorch runs (the torch form, and training and evaluating "
                   "in losses mode): auto, cpu, cuda, cuda:N or mps (default: auto, CUDA when present)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="losses mode: training precision (default: fp32)")
    p.add_argument("--via-index", action="store_true",
                   help="also measure global recall through the on-device index (edge_gcl.index) per form")
    p.add_argument("--index-dtype", default="float32", choices=("float32", "float16", "int8"),
                   help="--via-index: how the index stores vectors")
    p.add_argument("--losses", help="losses mode: e.g. gcl,cl,pairwise (trains a model per loss and seed)")
    p.add_argument("--seeds", default="0,1,2", help="losses mode: seeds")
    p.add_argument("--steps", type=int, help="losses mode: training steps per run (default: the recipe's)")
    p.add_argument("--temperature", type=float, help="losses mode: initial temperature of every run (default: the recipe's)")
    p.add_argument("--temperature-lr-mult", type=float,
                   help="losses mode: the temperature's lr multiplier in every run (default: the recipe's)")
    p.add_argument("--train-out", default="runs/bench-losses", help="losses mode: where the trained models go")
    p.add_argument("--json", help="result JSON (default: runs/benchmarks/recall[_losses].json; "
                   "benchmarks/results/ holds the committed ones); --losses: runs it already holds are not trained again")
    p.add_argument("--plot", help="result PNG (default: runs/benchmarks/recall[_losses].png)")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    machine = machine_info()
    print(header_line(machine))
    root = ensure_root(args.root, bench=args.bench, flickr=args.flickr, log=log)
    bench = bench_of(root)
    if args.losses:
        config = {"bench": bench, "root": str(root), "losses": parse_list(args.losses),
                  "seeds": parse_list(args.seeds, int), "steps": args.steps, "temperature": args.temperature,
                  "temperature_lr_mult": args.temperature_lr_mult, "train_out": args.train_out,
                  "batch_size": args.batch_size, "device": args.device, "precision": args.precision}
        json_path = Path(args.json or default_out("recall_losses.json"))
        try:
            recorded = recorded_runs(json_path, root)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

        base = losses_base(temperature=args.temperature, temperature_lr_mult=args.temperature_lr_mult)

        def same(r: Mapping[str, Any]) -> bool:  # a recorded run of this table's recipe
            return r["loss"] in LOSSES and same_recipe(r["train"], dataclasses.replace(run_config(
                base, r["loss"], r["seed"], train_out=args.train_out, steps=args.steps,
                temperature=args.temperature, temperature_lr_mult=args.temperature_lr_mult), precision=args.precision))

        def save_so_far(runs: list[dict[str, Any]]) -> None:
            kept = with_recorded(runs, json_path, root, same)
            save_json(json_path, make_document("recall-losses", loss_summary(kept), config=config, machine=machine,
                                               headline=headline_summary(kept), runs=kept, partial=True))

        result = run_losses(**{k: v for k, v in config.items() if k != "bench"}, recipe=base, recorded=recorded,
                            on_run=save_so_far, log=log)
        kept = with_recorded(result["runs"], json_path, root, same)
        doc = make_document("recall-losses", loss_summary(kept), config=config, machine=machine,
                            headline=headline_summary(kept), runs=kept, recipe=result["recipe"])
        stem = "recall_losses"
    else:
        config = {"bench": bench, "model": args.model, "artifacts": args.artifacts, "root": str(root),
                  "forms": parse_list(args.forms), "reference": args.reference, "batch_size": args.batch_size,
                  "device": args.device}
        if args.via_index:
            config |= {"via_index": True, "index_dtype": args.index_dtype}
        result = run_forms(**{k: v for k, v in config.items() if k != "bench"}, progress=args.progress, log=log)
        extra = {k: result[k] for k in ("via_index", "index_rows", "index_dtype") if k in result}
        doc = make_document("recall", result["rows"], config=config, machine=machine, headline=result["headline"],
                            results=result["results"],
                            forms=result["forms"], reference=result["reference"], note=result["note"],
                            **extra)
        stem = "recall"
    print(tables(doc))
    json_path = Path(args.json or default_out(f"{stem}.json"))
    plot_path = args.plot or default_out(f"{stem}.png")
    print(f"wrote {save_json(json_path, doc)}")
    print(f"wrote {plot(doc, plot_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

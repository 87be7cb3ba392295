"""`python -m benchmarks.ocr`: finding photos by the words in them, with OCR off and on.

The data (`benchmarks/ocr_data.py`, seeded): screenshots, receipts, tickets, documents, posters,
signs and plates drawn in several fonts, sizes and orientations, some pasted onto shared photos
with perspective, blur and JPEG noise; half are the dev split (choices are tuned there), half the
held-out test split (the figures reported). Each split's text photos are mixed into the 400 photos
of the phone dev benchmark (flickr8k dev + flickr8k-extra held-out) in one index, and queried:

- words: names and codes unique to a photo ("Moreau", "gate K47");
- substrings: part of a word or code ("RE16" of "RE16 TGK", the last digits of an invoice number);
- paraphrases: what the photo is, in words not in it ("bakery bill"); every photo of that category
  is a positive.

A query's positives are the text photos whose text holds it (words, substrings) or whose category
it describes (paraphrases). Recall@k: the share of queries with a positive in the top k of
`Index.search` (the merged ranking of words.py, no cut-off). It also reports the OCR's character and
word accuracy against the drawn text (1 - edit distance / length), ingest photos/s with OCR on
(ordinary photos: the shared ones as they are and 12 MP JPEGs of them; text-heavy screenshots), and
the phone dev benchmark's global recall with OCR on (the photo's OCR rows added to its vectors, the
pool's photos read by the same engine).

    python -m benchmarks.ocr --artifacts runs/art-ocr --json benchmarks/results/ocr.json --plot benchmarks/results/ocr.png
    python -m benchmarks.ocr --artifacts runs/art-ocr --tune   # the dev-split sweep of docs/ocr.md
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edge_gcl.index import words
from edge_gcl.index.words import matching_keys

from .common import (
    Col,
    default_out,
    format_table,
    header_line,
    machine_info,
    make_document,
    pyplot,
    save_figure,
    save_json,
)
from .ocr_data import CATEGORIES, Sample, make_samples, render

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repository (--data-root moves it)
WORK = Path("runs") / "bench-ocr"
N_SAMPLES = 150  # 75 dev, 75 test (six per category)
QUERY_KINDS = ("word", "substring", "paraphrase")


# ----------------------------------------------------------------------------- data
def pool_photos(data_root: Path = SHARED) -> list[Path]:
    """The phone dev benchmark's 400 photos (flickr8k dev, flickr8k-extra held-out)."""
    from edge_gcl.data import read_split
    from edge_gcl.eval.build import EXTRA_SPLITS

    dev = sorted(read_split(data_root / "flickr8k" / "splits.json", "dev"))
    held = sorted(read_split(EXTRA_SPLITS, "heldout"))
    return [data_root / "flickr8k" / "images" / n for n in dev] + [data_root / "flickr8k-extra" / "images" / n for n in held]


def backgrounds(data_root: Path = SHARED) -> list[Path]:
    """Photos the text is pasted onto: flickr8k train photos, never in the pool."""
    from edge_gcl.data import read_split

    return [data_root / "flickr8k" / "images" / n for n in sorted(read_split(data_root / "flickr8k" / "splits.json", "train"))]


def build(work: Path, *, n: int = N_SAMPLES, seed: int = 0, data_root: Path = SHARED) -> tuple[list[Sample], dict[str, Path]]:
    """The samples and their files under `work/text-<seed>-<n>/` (drawn once, then reused)."""
    bgs = backgrounds(data_root)
    samples = make_samples(n, seed=seed, backgrounds=len(bgs))
    folder = work / f"text-{seed}-{n}"
    paths = {}
    for s in samples:
        done = list(folder.glob(f"{s.id}.*"))
        paths[s.id] = done[0] if done else render(s, folder, bgs)
    return samples, paths


def queries(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """[{kind, text, positives (sample ids)}]: words and substrings positive wherever their folded
    text occurs, paraphrases for every sample of their category."""
    from edge_gcl.index.words import fold

    texts = {s.id: fold(s.text) for s in samples}
    out = []
    for s in samples:
        for kind, items in (("word", s.words), ("substring", s.substrings)):
            for q in items:
                terms = fold(q).split()
                positives = sorted(i for i, t in texts.items() if all(x in t for x in terms))
                if s.id not in positives:
                    raise ValueError(f"{s.id}: query {q!r} is not in its text")
                out.append({"kind": kind, "text": q, "positives": positives})
    for cat in CATEGORIES:
        ids = sorted(s.id for s in samples if s.category == cat.name)
        if ids:
            out += [{"kind": "paraphrase", "text": p, "positives": ids} for p in cat.paraphrases]
    return out


# ----------------------------------------------------------------------------- metrics
def accuracy(truth: str, read: str) -> tuple[float, float]:
    """(character accuracy, word accuracy): 1 - edit distance / length of the truth, floored at 0;
    white space normalised, case kept."""
    from edge_gcl.metrics import char_accuracy, edit_distance

    t, r = " ".join(truth.split()), " ".join(read.split())
    word = max(0.0, 1 - edit_distance(t.split(), r.split()) / max(len(t.split()), 1))
    return char_accuracy([t], [r]), word


def recall(ranked: Sequence[Sequence[str]], positives: Sequence[Sequence[str]], k: int) -> float:
    """Percent of queries with a positive among the first k ids."""
    hits = [bool(set(r[:k]) & set(p)) for r, p in zip(ranked, positives, strict=True)]
    return 100.0 * sum(hits) / max(len(hits), 1)


# ----------------------------------------------------------------------------- OCR, once per config
class CachedOcr:
    """An OCR engine for `Index` that answers from texts read before (the benchmark reads each photo
    once per configuration and builds several indexes from it)."""

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts
        self.description = "cached"

    def read_many(self, photos: Sequence[str | Path]) -> list[Any]:
        from edge_gcl.ocr import OcrLine, OcrResult

        out = []
        for p in photos:
            text = self.texts[str(p)]
            result = OcrResult()
            result.lines = [OcrLine(line, 1.0, ((0, i), (1, i), (1, i + 1), (0, i + 1))) for i, line in enumerate(text.split("\n")) if line]
            out.append(result)
        return out


def read_all(engine: Any, paths: Sequence[Path], cache: Path, log=print) -> dict[str, dict[str, Any]]:
    """{path: {"text", "ms"}} for every photo, from `cache` (a JSON file) or read now."""
    done: dict[str, dict[str, Any]] = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [p for p in paths if str(p) not in done]
    for i, p in enumerate(todo):
        t = time.perf_counter()
        r = engine.read(p)
        done[str(p)] = {"text": r.text, "ms": (time.perf_counter() - t) * 1e3, "steps_ms": r.timings_ms}
        if (i + 1) % 50 == 0:
            log(f"  read {i + 1}/{len(todo)}")
            cache.write_text(json.dumps(done))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(done))
    return done


def engine_for(artifacts: Path | None, config: Any, form: str = "float") -> Any:
    from edge_gcl.ocr import OcrEngine
    from edge_gcl.ocr.artifacts import from_artifacts, has_ocr

    if artifacts is not None:
        from edge_gcl.manifest import Manifest

        manifest = Manifest.load(artifacts)
        if has_ocr(manifest):
            engine = from_artifacts(artifacts, manifest, form=form)
            engine.config = config
            return engine
    return OcrEngine.from_package(config=config)


# ----------------------------------------------------------------------------- retrieval
def retrieval(embedder: Any, photos: list[Path], texts: dict[str, str] | None, qs: list[dict[str, Any]],
              ids: dict[str, str], *, work: Path, ocr_vectors: str = "fused", meaning: bool = True) -> dict[str, dict[str, float]]:
    """{kind: {"R@1", "R@5", "queries"}} over one index of `photos` (OCR texts given, or off; `meaning`:
    the artifacts' sentence encoder lifts photos by the meaning of their text, where they ship one)."""
    from edge_gcl.index import Index

    with tempfile.TemporaryDirectory(dir=work) as folder:
        with Index.open(folder, model=embedder, ocr=CachedOcr(texts) if texts is not None else False,
                        meaning="auto" if meaning else False, ocr_vectors=ocr_vectors) as index:  # type: ignore[arg-type]
            report = index.add_photos([str(p) for p in photos], progress=False)
            if report.skipped:
                raise RuntimeError(f"skipped {report.skipped[:3]}")
            by_path = {str(p): ids.get(str(p), str(p)) for p in photos}
            ranked = [[by_path[h.path] for h in index.search(q["text"], k=5)] for q in qs]
    out = {}
    for kind in QUERY_KINDS:
        rows = [i for i, q in enumerate(qs) if q["kind"] == kind]
        r = [ranked[i] for i in rows]
        p = [qs[i]["positives"] for i in rows]
        out[kind] = {"R@1": recall(r, p, 1), "R@5": recall(r, p, 5), "queries": len(rows)}
    return out


# ----------------------------------------------------------------------------- phone dev benchmark
def phone_dev(embedder: Any, root: Path, texts: dict[str, str], *, offset: float, ocr_vectors: str = "fused",
              meaning: Any = None) -> dict[str, Any]:
    """Global recall@1/5 per task of the phone dev benchmark at `root`, OCR off and on: a candidate with
    a photo whose OCR text is not empty also scores by its OCR row (as the index stores it), and, with a
    sentence encoder (`meaning`), a text query lifts it by the meaning of that text; then the candidates
    whose note or OCR text holds every word of a text query come first (`Index.search`'s rule, through
    the index's own matcher, `words.matching_keys`). "off": neither the text read, nor its meaning, nor
    the words rule (the ranking before OCR); "vectors": on without the words rule."""
    from edge_gcl.embedding import fuse, modality_offsets
    from edge_gcl.eval.mbeir import embed_items, global_pool_path, read_pool, read_qrels, read_queries
    from edge_gcl.index.meaning import item_cosines
    from edge_gcl.index.sources import chunk_note
    from edge_gcl.ocr.meaning import MAX_CHUNKS, boost, clean

    pool = read_pool(global_pool_path(root, "test"), root=root)
    cache: dict = {}
    cand = embed_items(embedder, pool, cache=cache)  # (N, D)
    ocr_rows, ocr_of = [], []
    tokenizer = getattr(embedder, "tokenizer", None)
    for j, c in enumerate(pool):
        t = texts.get(str(Path(c.img_path).resolve())) if c.img_path is not None else None  # the root links the photos
        if t:
            for chunk in chunk_note(t, tokenizer)[:8]:
                ocr_rows.append(chunk)
                ocr_of.append(j)
    img = {str(c.img_path): cache[("image", str(c.img_path))] for c in pool if c.img_path is not None}
    extra = np.zeros((0, cand.shape[1]), np.float32)
    if ocr_rows:
        e = embedder.embed_texts(ocr_rows)
        base = np.stack([img[str(pool[j].img_path)] for j in ocr_of])
        extra = {"fused": fuse(base, e), "text": e, "both": np.concatenate([fuse(base, e), e])}[ocr_vectors]
        if ocr_vectors == "both":
            ocr_of = ocr_of + ocr_of
    sense_rows, sense_of = [], []  # the meaning rows of the photos with text (cleaned, chunked), and whose
    if meaning is not None:
        for j, c in enumerate(pool):
            t = texts.get(str(Path(c.img_path).resolve())) if c.img_path is not None else None
            for chunk in chunk_note(clean(t), meaning.tokenizer)[:MAX_CHUNKS] if t and clean(t) else []:
                sense_rows.append(chunk)
                sense_of.append(j)
    sense = meaning.embed(sense_rows) if sense_rows else None  # (R, d)
    lexicon = _words_table([(c.txt if c.txt else None,
                             texts.get(str(Path(c.img_path).resolve())) if c.img_path is not None else None) for c in pool])
    out: dict[str, Any] = {"ocr_rows": len(ocr_rows), "photos_with_text": len(set(ocr_of)), "meaning_rows": len(sense_rows),
                           "tasks": {}, "word_matched_queries": 0}
    for qfile in sorted((root / "query" / "test").glob("mbeir_*_test.jsonl")):
        qs = read_queries(qfile, root=root)
        qrels = read_qrels(root / "qrels" / "test" / qfile.name.replace(".jsonl", "_qrels.txt"))
        q = embed_items(embedder, qs, cache=cache)
        task: dict[str, float] = {}
        for mode in ("off", "vectors", "on"):
            hits = {1: 0, 5: 0}
            for m in dict.fromkeys(x.modality for x in qs):
                rows = [i for i, x in enumerate(qs) if x.modality == m]
                bias = modality_offsets(m, [c.modality for c in pool], offset)
                scores = q[rows] @ cand.T + bias  # (n, N)
                if mode != "off" and len(ocr_of):
                    s2 = q[rows] @ extra.T + bias[ocr_of]
                    np.maximum.at(scores.T, np.array(ocr_of), s2.T)
                if mode != "off" and sense is not None and m == "text":  # a query of words alone: the lift
                    for r, qv in enumerate(meaning.embed([qs[i].txt for i in rows])):
                        items, cos = item_cosines(np.array(sense_of), sense, qv)
                        scores[r, items] += boost(cos)
                if mode == "on" and m == "text":  # the word matches first, in their order
                    for r, i in enumerate(rows):
                        found = matching_keys(lexicon, qs[i].txt)
                        scores[r, found] += 1e3
                        out["word_matched_queries"] += bool(len(found))
                top = np.argsort(-scores, axis=1)[:, :5]
                for r, i in enumerate(rows):
                    pos = qrels.get(qs[i].qid, set())
                    ranked = [pool[j].did for j in top[r]]
                    hits[1] += bool(set(ranked[:1]) & pos)
                    hits[5] += bool(set(ranked[:5]) & pos)
            task[f"{mode} R@1"] = 100 * hits[1] / len(qs)
            task[f"{mode} R@5"] = 100 * hits[5] / len(qs)
        out["tasks"][qfile.stem.removeprefix("mbeir_").removesuffix("_test")] = task
    tasks = out["tasks"].values()
    out["average"] = {f"{mode} R@{k}": float(np.mean([t[f"{mode} R@{k}"] for t in tasks]))
                      for mode in ("off", "vectors", "on") for k in (1, 5)}
    return out


def _words_table(texts: Sequence[tuple[str | None, str | None]]) -> sqlite3.Connection:
    """An in-memory words table of candidates' (note, OCR text), rowid = the candidate's position, as
    an index holds it (`edge_gcl.index.words`)."""
    conn = sqlite3.connect(":memory:")
    words.register(conn)
    conn.execute(words.SCHEMA[0])
    conn.executemany("INSERT INTO item_words (rowid, words, squeezed) VALUES (?, ?, ?)",
                     [(j, words.fold(note, ocr), words.squeeze(note, ocr)) for j, (note, ocr) in enumerate(texts) if note or ocr])
    return conn


def ensure_phone_dev(root: Path, data_root: Path = SHARED) -> Path:
    if not (root / "query").is_dir():
        from edge_gcl.eval.build import build_phone_mbeir, phone_sources

        build_phone_mbeir(phone_sources(data_root), root)
    return root


# ----------------------------------------------------------------------------- ingest speed
def ingest_rate(embedder: Any, engine: Any, photos: Sequence[Path], work: Path) -> dict[str, float]:
    """Photos/s of `Index.add_photos` into a fresh index with `engine` reading the text (None: off; the
    artifacts' sentence encoder stores the meaning of the text read, as by default), the process's CPU
    time per photo (all threads), and the cores it got on average (CPU time / wall time: under 2 on
    2 cores when other jobs took the rest)."""
    from edge_gcl.index import Index

    with tempfile.TemporaryDirectory(dir=work) as folder, Index.open(folder, model=embedder, ocr=engine or False) as index:
        t, cpu = time.perf_counter(), time.process_time()
        report = index.add_photos([str(p) for p in photos], progress=False)
        s, cpu_s = time.perf_counter() - t, time.process_time() - cpu
    n = len(report.added)
    # CPU seconds of the whole process (all its threads): what a shared machine distorts least
    return {"photos": n, "seconds": s, "photos_per_s": n / s, "cpu_ms_per_photo": 1e3 * cpu_s / n,
            "photos_per_cpu_s": n / cpu_s, "cores_used": cpu_s / s}


# ----------------------------------------------------------------------------- the run
COLS = [Col("split"), Col("kind", "queries"), Col("queries", "n", "d"), Col("off R@1", fmt=".1f"), Col("off R@5", fmt=".1f"),
        Col("on R@1", fmt=".1f"), Col("on R@5", fmt=".1f")]


def run(args: argparse.Namespace, log=print) -> dict[str, Any]:
    from edge_gcl.index.search import default_cross_modal_offset
    from edge_gcl.ocr import OcrConfig
    from edge_gcl.runtime import load_embedder

    work = Path(args.work).resolve()  # the index stores absolute paths
    work.mkdir(parents=True, exist_ok=True)
    data_root = Path(args.data_root)
    artifacts = Path(args.artifacts) if args.artifacts else None
    embedder = load_embedder(str(artifacts) if artifacts else args.model)
    config = OcrConfig(det_size=args.det_size, gate_size=args.gate_size, **({"tile_ratio": args.tile_ratio} if args.tile_ratio else {}))
    engine = engine_for(artifacts, config, form=args.ocr_form)
    log(f"model {getattr(embedder, 'model_id', '?')}; OCR {engine.description or engine} {config}")
    samples, paths = build(work, n=args.samples, seed=args.seed, data_root=data_root)
    pool = pool_photos(data_root)
    splits = [] if args.speed_only else ["dev"] if args.tune else ["dev", "test"]
    # the cache names the settings and the engine's code: any change reads again
    import hashlib

    import edge_gcl.ocr.boxes as boxes_code
    import edge_gcl.ocr.engine as engine_code

    code = "".join(Path(m.__file__).read_text() for m in (boxes_code, engine_code))
    tag = f"{args.ocr_form}-det{config.det_size}-gate{config.gate_size}-" + hashlib.sha256(
        (json.dumps(asdict(config), sort_keys=True) + code).encode()).hexdigest()[:8]
    wanted = [paths[s.id] for s in samples if s.split in splits]
    log(f"reading {len(wanted)} text photos and {len(pool)} pool photos ({tag})...")
    read = {} if args.speed_only else read_all(engine, [*wanted, *pool], work / f"ocr-{tag}-{args.seed}-{args.samples}.json", log)
    texts = {str(Path(p).resolve()): r["text"] for p, r in read.items()}
    rows, acc = [], {}
    for split in splits:
        chosen = [s for s in samples if s.split == split]
        ids = {str(paths[s.id]): s.id for s in chosen}
        qs = queries(chosen)
        photos = pool + [paths[s.id] for s in chosen]
        char, word = zip(*(accuracy(s.text, texts[str(paths[s.id])]) for s in chosen), strict=True)
        acc[split] = {"char_accuracy": 100 * float(np.mean(char)), "word_accuracy": 100 * float(np.mean(word)),
                      "per_kind": {k: 100 * float(np.mean([c for s, c in zip(chosen, char, strict=True) if s.kind == k]))
                                   for k in sorted({s.kind for s in chosen})}}
        log(f"{split}: character accuracy {acc[split]['char_accuracy']:.1f}, word accuracy {acc[split]['word_accuracy']:.1f}")
        off = retrieval(embedder, photos, None, qs, ids, work=work)
        vectors = args.ocr_vectors.split(",")
        for mode in vectors:
            on = retrieval(embedder, photos, {str(p): texts[str(p)] for p in photos}, qs, ids, work=work, ocr_vectors=mode,
                           meaning=not args.no_meaning)
            for kind in QUERY_KINDS:
                rows.append({"split": split, "ocr_vectors": mode, "kind": kind, "queries": on[kind]["queries"],
                             "off R@1": off[kind]["R@1"], "off R@5": off[kind]["R@5"], "on R@1": on[kind]["R@1"], "on R@5": on[kind]["R@5"]})
    doc_extra: dict[str, Any] = {"accuracy": acc}
    if read:
        doc_extra["ocr_ms"] = {
        "text photos": float(np.median([read[str(p)]["ms"] for p in wanted])),
        "pool photos": float(np.median([read[str(p)]["ms"] for p in pool])),
        "pool photos with text found": sum(bool(texts[str(Path(p).resolve())]) for p in pool)}
    if not args.skip_phone_dev and not args.speed_only:
        root = ensure_phone_dev(Path(args.phone_dev), data_root)
        offset = default_cross_modal_offset(embedder)
        from edge_gcl.ocr.meaning import load_meaning

        sense = load_meaning(embedder) if not args.no_meaning else None
        doc_extra["phone_dev"] = {mode: phone_dev(embedder, root, texts, offset=offset, ocr_vectors=mode, meaning=sense)
                                  for mode in args.ocr_vectors.split(",")}
        doc_extra["phone_dev_offset"] = offset
        for mode, pd in doc_extra["phone_dev"].items():
            log(f"phone dev ({mode}, offset {offset}): global average R@5 off {pd['average']['off R@5']:.2f}, on {pd['average']['on R@5']:.2f}")
    if not args.skip_speed:
        from .ingest import phone_photos

        speed = []
        ordinary = sorted((data_root / "flickr8k" / "images").glob("*.jpg"))[: args.speed_photos]
        twelve = sorted(phone_photos(args.speed_photos // 2, source=data_root / "flickr8k" / "images").glob("*.jpg"))
        screens = [paths[s.id] for s in samples if s.kind == "screen"][: args.speed_photos // 4]
        warm = engine_for(artifacts, config, form=args.ocr_form)
        for name, photos in (("ordinary (shared, 256 px)", ordinary), ("ordinary (12 MP JPEG)", twelve), ("text-heavy screenshots", screens)):
            for label, eng in (("OCR off", None), ("OCR on", warm)):
                runs = []  # the fastest of --speed-repeat runs: a shared machine only ever slows one down
                for _ in range(args.speed_repeat):
                    runs.append({**ingest_rate(embedder, eng, photos, work), "load_1min": os.getloadavg()[0]})
                r = max(runs, key=lambda x: x["photos_per_s"])
                speed.append({"set": name, "ocr": label, **r, "runs": runs,
                              "cpu_ms_per_photo_median": float(np.median([x["cpu_ms_per_photo"] for x in runs]))})
                log(f"ingest {name}, {label}: {r['photos_per_s']:.1f} photos/s on {r['cores_used']:.1f} cores, "
                    f"{r['cpu_ms_per_photo']:.0f} CPU-ms a photo (best of {len(runs)}; load {r['load_1min']:.2f})")
        doc_extra["ingest"] = speed
    config_doc = {"samples": args.samples, "seed": args.seed, "ocr": asdict(config), "ocr_form": args.ocr_form,
                  "artifacts": str(artifacts) if artifacts else None, "model": getattr(embedder, "model_id", None),
                  "pool_photos": len(pool), "splits": splits, "ocr_vectors": args.ocr_vectors, "meaning": not args.no_meaning}
    return make_document("ocr", rows, config=config_doc, machine=machine_info(), **doc_extra)


def plot(doc: dict[str, Any], path: str | Path) -> Path:
    plt = pyplot()
    rows = [r for r in doc["rows"] if r["split"] == doc["config"]["splits"][-1] and r["ocr_vectors"] == doc["config"]["ocr_vectors"].split(",")[0]]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(len(rows))
    for i, (key, label) in enumerate((("off R@5", "OCR off"), ("on R@5", "OCR on"))):
        ax.bar(x + (i - 0.5) * 0.38, [r[key] for r in rows], 0.38, label=label)
    ax.set_xticks(x, [r["kind"] for r in rows])
    ax.set_ylabel("Recall@5 (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Text-in-photo queries ({doc['config']['splits'][-1]} split)")
    ax.legend()
    return save_figure(fig, path)


def markdown(doc: dict[str, Any]) -> str:
    """The docs/ocr.md table: recall per query kind and split, OCR off and on, then the rest."""
    from .common import markdown_table

    lines = [markdown_table(doc["rows"], [Col("ocr_vectors", "OCR rows"), Col("split"), Col("kind", "queries"), Col("queries", "n", "d"),
                                          Col("off R@1", "OCR off R@1", ".1f"), Col("off R@5", "OCR off R@5", ".1f"),
                                          Col("on R@1", "OCR on R@1", ".1f"), Col("on R@5", "OCR on R@5", ".1f")]), ""]
    for split, a in doc["accuracy"].items():
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in a["per_kind"].items())
        lines.append(f"- {split}: character accuracy {a['char_accuracy']:.1f}%, word accuracy {a['word_accuracy']:.1f}% ({kinds})")
    for r in doc.get("ingest", []):
        lines.append(f"- ingest, {r['set']}, {r['ocr']}: {r['photos_per_s']:.1f} photos/s on {r.get('cores_used', 0):.1f} cores, "
                     f"{r['cpu_ms_per_photo']:.0f} CPU-ms a photo ({r['photos']} photos; 1-minute load {r['load_1min']:.1f})")
    for pd in doc.get("phone_dev", {}).values():
        a = pd["average"]
        lines.append(f"- phone dev benchmark, global average R@1 / R@5 with the offset {doc.get('phone_dev_offset')}: OCR off "
                     f"{a['off R@1']:.2f} / {a['off R@5']:.2f}, on {a['on R@1']:.2f} / {a['on R@5']:.2f} "
                     + (f"(without the words rule {a['vectors R@1']:.2f} / {a['vectors R@5']:.2f}; "
                        f"{pd['photos_with_text']} of its pool's photos have text read, {pd['word_matched_queries']} text "
                        "queries match words)" if "vectors R@1" in a else  # a run before the words rule joined it
                        f"(without the words-first rule; {pd['photos_with_text']} of its pool's photos have text read)"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ocr", description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", help="artifacts folder (towers and OCR graphs); default: --model's PyTorch towers and the rapidocr wheel's graphs")
    p.add_argument("--model", default="default", help="the PyTorch model when no --artifacts")
    p.add_argument("--ocr-form", default="float", choices=["float", "qdq"], help="which OCR graphs run (CPU)")
    p.add_argument("--det-size", type=int, default=OcrConfigDefaults.det_size)
    p.add_argument("--gate-size", type=int, default=OcrConfigDefaults.gate_size)
    p.add_argument("--tile-ratio", type=float, help="OcrConfig.tile_ratio (default: its default; 100: no tiles)")
    p.add_argument("--ocr-vectors", default="fused", help="fused, text or both (fused and text rows); several with commas")
    p.add_argument("--no-meaning", action="store_true",
                   help="without the sentence encoder's lift (the artifacts' ocr_meaning graph), as before it")
    p.add_argument("--samples", type=int, default=N_SAMPLES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tune", action="store_true", help="the dev split only (what choices are made on)")
    p.add_argument("--work", default=str(WORK))
    p.add_argument("--data-root", default=str(SHARED))
    p.add_argument("--phone-dev", default="runs/mbeir-phone-dev", help="the phone dev benchmark's root (built if missing)")
    p.add_argument("--skip-phone-dev", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--speed-photos", type=int, default=120)
    p.add_argument("--speed-repeat", type=int, default=3, help="ingest runs per set and mode; the fastest is reported")
    p.add_argument("--speed-only", action="store_true", help="only the ingest speed (OCR read only for the samples' files)")
    p.add_argument("--json", default=default_out("ocr.json"),
                   help="result JSON (default: under runs/benchmarks; the committed one: benchmarks/results/ocr.json)")
    p.add_argument("--plot", default=default_out("ocr.png"), help="result plot (PNG)")
    args = p.parse_args(argv)
    machine = machine_info()
    print(header_line(machine))
    doc = run(args, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(doc["rows"], [Col("ocr_vectors", "vectors"), *COLS], title="Recall (%) of text-in-photo queries, OCR off and on"))
    for split, a in doc["accuracy"].items():
        print(f"{split}: character accuracy {a['char_accuracy']:.1f}%, word accuracy {a['word_accuracy']:.1f}%  {a['per_kind']}")
    for r in doc.get("ingest", []):
        print(f"ingest {r['set']}, {r['ocr']}: {r['photos_per_s']:.1f} photos/s on {r['cores_used']:.1f} cores, "
              f"{r['cpu_ms_per_photo']:.0f} CPU-ms a photo ({r['photos']} photos, best of {len(r['runs'])}, load {r['load_1min']:.2f})")
    for mode, pd in doc.get("phone_dev", {}).items():
        print(f"phone dev ({mode}): global average R@1/R@5 OCR off {pd['average']['off R@1']:.2f}/{pd['average']['off R@5']:.2f}, "
              f"on {pd['average']['on R@1']:.2f}/{pd['average']['on R@5']:.2f}, on without the words rule "
              f"{pd['average']['vectors R@1']:.2f}/{pd['average']['vectors R@5']:.2f} ({pd['photos_with_text']} pool photos with text, "
              f"{pd['word_matched_queries']} text queries match words)")
    if args.json:
        print(f"wrote {save_json(args.json, doc)}")
    if args.plot and doc["rows"]:
        print(f"wrote {plot(doc, args.plot)}")
    return 0


class OcrConfigDefaults:  # argparse defaults without importing edge_gcl at module import
    det_size = 640
    gate_size = 320


if __name__ == "__main__":
    sys.exit(main())

"""M-BEIR benchmarks (UniIR's file layout): read them and evaluate an `Embedder` on them.

Layout, as published in TIGER-Lab/M-BEIR and read by UniIR (`src/common/mbeir_embedder.py`,
`src/common/mbeir_retriever.py`, the `configs_scripts/*/eval/inbatch/{embed,retrieval}.yaml` files):

    <root>/query/<split>/mbeir_<name>_<split>.jsonl                 queries of one task of one dataset
    <root>/cand_pool/local/mbeir_<name>_cand_pool.jsonl             that task's own pool (M-BEIR_local)
    <root>/cand_pool/local/mbeir_<name>_<split>_cand_pool.jsonl     ... where the pool differs per split
                                                                    (UniIR's MSCOCO: mscoco_task0_test)
    <root>/cand_pool/global/mbeir_union_<split>_cand_pool.jsonl     union of the local pools (M-BEIR, global)
    <root>/qrels/<split>/mbeir_<name>_<split>_qrels.txt             "qid 0 did relevance task_id" lines

`<name>` is `<dataset>_task<id>`, the task ids being UniIR's (`MBEIR_TASKS`). A query row holds `qid`
("<dataset id>:<n>"), `query_txt`, `query_img_path` (relative to the root), `query_modality` ("text",
"image" or "image,text"), `query_src_content`, `pos_cand_list`, `neg_cand_list` and `task_id`; a candidate row
`did`, `txt`, `img_path`, `modality`, `src_content`. A query file's local pool is the first of the two local
names above that exists (the split-specific one wins).

Evaluation, as UniIR's pipeline does it:
1. Embed every query and candidate; an "image,text" item is the score fusion of its two embeddings,
   normalize(e_image + e_text) (`edge_gcl.embedding.fuse`, UniIR's CLIP-SF). Each distinct image and text
   is embedded once per run, so the union pool costs nothing beyond the local pools (UniIR concatenates
   the local pools' embeddings for the same reason).
2. Rank candidates by inner product (UniIR: faiss IndexFlatIP); ties go to the earlier pool row. With a
   `cross_modal_offset`, as the index ranks (not UniIR's protocol): each candidate of another modality than
   the query's scores `edge_gcl.embedding.modality_offset` more.
3. Positives are the qrels rows with relevance > 0 (`pos_cand_list` when a query file has no qrels file).
4. Recall@k is the hit rate (`edge_gcl.metrics.recall_at_k`), in percent; "average" is the unweighted mean
   over query files, like UniIR's average row.
Settings: "local" ranks each query file against its local pool; "global" against the union pool with no
modality filter. UniIR's `run_retrieval` searches the whole union index and scores the run against the qrels;
nothing restricts the candidates to the task's target modality (the task id only labels the results), so a
text->image query whose captions outrank its image counts as a miss. That is what M-BEIR's global numbers
measure, and why UniIR trains with instructions. `filter_global_modality=True` gives the easier variant that
restricts the union pool to the modalities of each task's positives; it is not UniIR's protocol.

Building M-BEIR-layout benchmarks from captions folders: `edge_gcl.eval.build`. The command line:
`edge_gcl.eval.cli`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..embedding import Embedder, fuse, modality_offsets
from ..metrics import recall_at_k, topk

MODALITIES = ("text", "image", "image,text")
# UniIR's task ids (src/data/preprocessing/utils.py: MBEIR_TASK): id -> (query modality, candidate modality).
MBEIR_TASKS: dict[int, tuple[str, str]] = {
    0: ("text", "image"),
    1: ("text", "text"),
    2: ("text", "image,text"),
    3: ("image", "text"),
    4: ("image", "image"),
    6: ("image,text", "text"),
    7: ("image,text", "image"),
    8: ("image,text", "image,text"),
}
SETTINGS = ("local", "global")


class MBEIRFormatError(ValueError):
    """A malformed M-BEIR file; the message starts with `<file>:<line>:`."""


@dataclass(frozen=True)
class Query:
    qid: str
    modality: str  # "text" | "image" | "image,text"
    txt: str | None  # None unless the modality has text
    img_path: Path | None  # resolved against the root; None unless the modality has an image
    pos: tuple[str, ...] = ()  # pos_cand_list
    task_id: int | None = None
    line: int | None = field(default=None, compare=False)  # its line in the query file, for messages


@dataclass(frozen=True)
class Candidate:
    did: str
    modality: str
    txt: str | None
    img_path: Path | None


# --- reading ----------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of a UTF-8 file; errors name the file (and line)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path}: is a folder, not a file") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise MBEIRFormatError(f"{path}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                       f"{e.start + 1})") from None
            if line.strip():
                yield lineno, line


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in _lines(path):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MBEIRFormatError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise MBEIRFormatError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def _default_root(path: Path) -> Path:
    return path.absolute().parents[2]  # <root>/query/<split>/x.jsonl, <root>/cand_pool/<local|global>/x.jsonl


def _content(
    row: dict[str, Any], where: str, root: Path, keys: tuple[str, str, str], check_images: bool
) -> tuple[str, str | None, Path | None]:
    """(modality, text, resolved image path) of a query or candidate row, checked against its modality."""
    txt_key, img_key, mod_key = keys
    modality = row.get(mod_key)
    if modality == "text,image":  # M-BEIR's README spells it both ways; the data uses "image,text"
        modality = "image,text"
    if modality not in MODALITIES:
        raise MBEIRFormatError(f"{where}: {mod_key} must be one of {', '.join(MODALITIES)}, got {modality!r}")
    txt = img = None
    if "text" in modality:
        txt = row.get(txt_key)
        if not isinstance(txt, str) or not txt.strip():
            raise MBEIRFormatError(f"{where}: {txt_key} is empty but {mod_key} is {modality!r}")
    if "image" in modality:
        rel = row.get(img_key)
        if not isinstance(rel, str) or not rel.strip():
            raise MBEIRFormatError(f"{where}: {img_key} is empty but {mod_key} is {modality!r}")
        img = root / rel
        if check_images and not img.is_file():
            raise FileNotFoundError(f"{where}: image not found: {img}")
    return modality, txt, img


def _id(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise MBEIRFormatError(f"{where}: missing {key}")
    return value


def _dids(value: Any, key: str, where: str) -> tuple[str, ...]:
    """pos_cand_list: a list of dids (the data) or of {"did": ...} objects (the README's notation)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MBEIRFormatError(f"{where}: {key} must be a list of dids")
    out = []
    for v in value:
        did = v.get("did") if isinstance(v, dict) else v
        if not isinstance(did, str) or not did:
            raise MBEIRFormatError(f"{where}: {key} holds {v!r}, not a did")
        out.append(did)
    return tuple(out)


def read_queries(path: str | Path, *, root: str | Path | None = None, check_images: bool = True) -> list[Query]:
    """Queries of an M-BEIR query file. `root` defaults to the folder two levels above the file's folder."""
    path = Path(path)
    base = Path(root) if root is not None else _default_root(path)
    queries, seen = [], set()
    for lineno, row in _rows(path):
        where = f"{path}:{lineno}"
        qid = _id(row, "qid", where)
        if qid in seen:
            raise MBEIRFormatError(f"{where}: duplicate qid {qid!r}")
        seen.add(qid)
        modality, txt, img = _content(row, where, base, ("query_txt", "query_img_path", "query_modality"), check_images)
        task_id = row.get("task_id")
        if task_id is not None and not isinstance(task_id, int):
            raise MBEIRFormatError(f"{where}: task_id must be an integer, got {task_id!r}")
        pos = _dids(row.get("pos_cand_list"), "pos_cand_list", where)
        queries.append(Query(qid, modality, txt, img, pos, task_id, lineno))
    return queries


def read_pool(path: str | Path, *, root: str | Path | None = None, check_images: bool = True) -> list[Candidate]:
    """Candidates of an M-BEIR pool file. `root` defaults to the folder two levels above the file's folder."""
    path = Path(path)
    base = Path(root) if root is not None else _default_root(path)
    pool, seen = [], set()
    for lineno, row in _rows(path):
        where = f"{path}:{lineno}"
        did = _id(row, "did", where)
        if did in seen:
            raise MBEIRFormatError(f"{where}: duplicate did {did!r}")
        seen.add(did)
        modality, txt, img = _content(row, where, base, ("txt", "img_path", "modality"), check_images)
        pool.append(Candidate(did, modality, txt, img))
    return pool


def read_qrels(path: str | Path) -> dict[str, set[str]]:
    """qid -> dids with relevance > 0, from TREC-style lines `qid 0 did relevance [task_id]`."""
    path = Path(path)
    qrels: dict[str, set[str]] = {}
    for lineno, line in _lines(path):
        fields = line.split()
        if len(fields) not in (4, 5):
            raise MBEIRFormatError(f"{path}:{lineno}: expected 'qid 0 did relevance [task_id]', got {line.strip()!r}")
        try:
            relevance = int(fields[3])
        except ValueError:
            raise MBEIRFormatError(f"{path}:{lineno}: relevance {fields[3]!r} is not an integer") from None
        if relevance > 0:
            qrels.setdefault(fields[0], set()).add(fields[2])
    return qrels


# --- embedding --------------------------------------------------------------------------------


def _checked(emb: np.ndarray, n: int, what: str) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embedder: {what} returned shape {emb.shape} for {n} inputs, expected ({n}, D)")
    return emb


def embed_items(
    embedder: Embedder,
    items: Sequence[Query | Candidate],
    *,
    batch_size: int = 32,
    progress: bool = False,
    cache: dict[tuple[str, str], np.ndarray] | None = None,
) -> np.ndarray:
    """(N, D) float32 embeddings of queries or candidates of any modality mix.

    All images go to the embedder in one `embed_images` call and all texts in one `embed_texts` call, each
    distinct input once; "image,text" rows are then fused. Pass the same `cache` dict across calls to embed
    each distinct image and text once per run (keys ("image", path) and ("text", text)).
    """
    cache = {} if cache is None else cache
    images = list(dict.fromkeys(str(it.img_path) for it in items if it.img_path is not None))
    texts = list(dict.fromkeys(it.txt for it in items if it.txt is not None))
    images = [p for p in images if ("image", p) not in cache]
    texts = [t for t in texts if ("text", t) not in cache]
    if images:
        emb = _checked(embedder.embed_images(images, batch_size=batch_size, progress=progress), len(images), "embed_images")
        cache.update({("image", p): e for p, e in zip(images, emb, strict=True)})
    if texts:
        emb = _checked(embedder.embed_texts(texts, batch_size=batch_size, progress=progress), len(texts), "embed_texts")
        cache.update({("text", t): e for t, e in zip(texts, emb, strict=True)})
    if not items:
        return np.zeros((0, int(embedder.embed_dim)), np.float32)
    img = [cache[("image", str(it.img_path))] if it.img_path is not None else None for it in items]
    txt = [cache[("text", it.txt)] if it.txt is not None else None for it in items]
    dims = {v.shape[0] for v in img + txt if v is not None}
    if len(dims) != 1:
        raise ValueError(f"embedder: image and text embeddings differ in width ({sorted(dims)})")
    out = np.empty((len(items), dims.pop()), np.float32)  # (N, D)
    fused = [i for i, it in enumerate(items) if it.modality == "image,text"]
    for i, it in enumerate(items):
        if it.modality == "image":
            out[i] = img[i]
        elif it.modality == "text":
            out[i] = txt[i]
    if fused:
        out[fused] = fuse(np.stack([img[i] for i in fused]), np.stack([txt[i] for i in fused]))
    return out


# --- evaluation -------------------------------------------------------------------------------


def _search(queries: np.ndarray, pool: np.ndarray, k: int, bias: np.ndarray | None = None) -> np.ndarray:
    """(nq, min(k, N)) pool rows by descending inner product (+ `bias` (N,) per pool row), in query
    blocks of <= 2**26 scores."""
    block = max(1, 2**26 // max(1, pool.shape[0]))
    parts = []
    for i in range(0, len(queries), block):
        scores = queries[i : i + block] @ pool.T  # (b, N)
        parts.append(topk(scores if bias is None else scores + bias, k)[0])  # (b, k)
    return np.concatenate(parts) if parts else np.zeros((0, min(k, pool.shape[0])), np.int64)


def _search_offset(
    q_emb: np.ndarray, queries: Sequence[Query], pool: np.ndarray, cands: Sequence[Candidate], k: int, offset: float
) -> np.ndarray:
    """`_search` with each candidate's cross-modal offset for the query's modality added to its score."""
    out = np.zeros((len(queries), min(k, len(cands))), np.int64)
    modalities = np.array([q.modality for q in queries])
    for m in dict.fromkeys(modalities):
        rows = np.flatnonzero(modalities == m)
        out[rows] = _search(q_emb[rows], pool, k, modality_offsets(m, [c.modality for c in cands], offset))
    return out


def local_pool_path(root: str | Path, name: str, split: str) -> Path:
    """The local pool UniIR pairs with `query/<split>/mbeir_<name>_<split>.jsonl`."""
    local = Path(root) / "cand_pool" / "local"
    for path in (local / f"mbeir_{name}_{split}_cand_pool.jsonl", local / f"mbeir_{name}_cand_pool.jsonl"):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{local}: no local pool for query file mbeir_{name}_{split}.jsonl "
        f"(looked for mbeir_{name}_{split}_cand_pool.jsonl and mbeir_{name}_cand_pool.jsonl)"
    )


def global_pool_path(root: str | Path, split: str) -> Path:
    return Path(root) / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl"


def _where(query_file: Path | None, q: Query) -> str:
    """The "FILE:LINE: " prefix of a message about query `q` ("FILE: " without its line, "" without a file)."""
    if query_file is None:
        return ""
    return f"{query_file}:{q.line}: " if q.line is not None else f"{query_file}: "


def query_positives(
    queries: list[Query], qrels_path: Path, *, query_file: Path | None = None, allow_missing: bool = False
) -> list[set[str]]:
    """The positive dids of each query: from the qrels file, else (file missing) from `pos_cand_list`.

    A query without any is an MBEIRFormatError naming it (`query_file`:line) unless `allow_missing`.
    """
    if not qrels_path.is_file():
        positives = [set(q.pos) for q in queries]
        source = f"its pos_cand_list (there is no {qrels_path})"
    else:
        qrels = read_qrels(qrels_path)
        positives = [qrels.get(q.qid, set()) for q in queries]
        source = str(qrels_path)
    empty = [q for q, pos in zip(queries, positives, strict=True) if not pos]
    if empty and not allow_missing:
        more = f" (and {len(empty) - 1} more queries)" if len(empty) > 1 else ""
        raise MBEIRFormatError(f"{_where(query_file, empty[0])}query {empty[0].qid} has no positive in {source}{more}")
    return positives


def check_root(root: Path) -> None:
    """FileNotFoundError / NotADirectoryError naming `root` unless it is a folder."""
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")


def evaluate_mbeir(
    embedder: Embedder,
    root: str | Path,
    *,
    split: str = "test",
    settings: Sequence[str] = SETTINGS,
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = 32,
    progress: bool = True,
    filter_global_modality: bool = False,
    allow_missing_positives: bool = False,
    cross_modal_offset: float = 0.0,
) -> dict[str, dict[str, dict[str, float]]]:
    """Recall@k (percent) of every query file of `root/query/<split>/` in each setting, plus their average.

    Candidates are ranked by cosine, plus `cross_modal_offset` as the index adds it
    (`edge_gcl.embedding.modality_offset`: 0 = plain GCL ranking).

    Returns {"<query file stem>": {"local": {"recall@1": ..}, "global": {..}}, ..., "average": {...}},
    settings and ks in the order given. See the module docstring for the protocol.

    A query none of whose positives is in the pool it is ranked against is an MBEIRFormatError naming the
    query (file:line) and the pool. With `allow_missing_positives` it counts as a miss instead: each query
    file and setting that has some says so on stderr, and the result gains a "missing_positives" entry,
    {"<query file stem>": {"<setting>": count}} (see `task_stems`).
    """
    root = Path(root)
    check_root(root)
    settings = tuple(settings)
    if not settings or any(s not in SETTINGS for s in settings):
        raise ValueError(f"settings: expected some of {SETTINGS}, got {settings}")
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks: expected positive integers, got {ks}")
    query_dir = root / "query" / split
    query_files = sorted(query_dir.glob(f"mbeir_*_{split}.jsonl"))
    if not query_files:
        raise FileNotFoundError(f"{query_dir}: no query files mbeir_*_{split}.jsonl")

    # 1. Read and check every file before embedding anything: bad input fails in a second, not after minutes.
    pools: dict[Path, list[Candidate]] = {}
    runs = []  # (query file, queries, {setting: (pool path, positive pool rows per query)})
    missing_of: dict[str, dict[str, int]] = {}
    for qf in query_files:
        name = qf.stem[len("mbeir_") : -len(f"_{split}")]
        queries = read_queries(qf, root=root)
        if not queries:
            raise MBEIRFormatError(f"{qf}: no queries")
        positives = query_positives(queries, root / "qrels" / split / f"{qf.stem}_qrels.txt", query_file=qf,
                                    allow_missing=allow_missing_positives)
        per_setting = {}
        for setting in settings:
            path = local_pool_path(root, name, split) if setting == "local" else global_pool_path(root, split)
            if path not in pools:
                pools[path] = read_pool(path, root=root)
                if not pools[path]:
                    raise MBEIRFormatError(f"{path}: empty candidate pool")
            row_of = {c.did: i for i, c in enumerate(pools[path])}
            pos = [{row_of[d] for d in p if d in row_of} for p in positives]
            missing = [i for i, p in enumerate(pos) if not p]
            if missing and not allow_missing_positives:
                q = queries[missing[0]]
                more = f"; {len(missing) - 1} more queries of this file have none there" if len(missing) > 1 else ""
                raise MBEIRFormatError(f"{_where(qf, q)}query {q.qid} has no positive in {path} "
                                       f"(positives: {', '.join(sorted(positives[missing[0]])) or 'none'}){more}")
            if missing:
                print(f"{qf}: {len(missing)} of {len(queries)} queries have no positive in {path}; "
                      f"counted as misses", file=sys.stderr)
                missing_of.setdefault(qf.stem, {})[setting] = len(missing)
            per_setting[setting] = (path, pos)
        runs.append((qf, queries, per_setting))

    # 2. Embed (each distinct image / text once per run) and rank.
    cache: dict[tuple[str, str], np.ndarray] = {}
    pool_emb: dict[Path, np.ndarray] = {}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for qf, queries, per_setting in runs:
        if progress:
            print(f"embedding {qf.name} ({len(queries)} queries)", file=sys.stderr)
        q_emb = embed_items(embedder, queries, batch_size=batch_size, progress=progress, cache=cache)
        row = {}
        for setting, (path, pos) in per_setting.items():
            cands = pools[path]
            if path not in pool_emb:
                if progress:
                    print(f"embedding {path.name} ({len(cands)} candidates)", file=sys.stderr)
                pool_emb[path] = embed_items(embedder, cands, batch_size=batch_size, progress=progress, cache=cache)
            cols = np.arange(len(cands))
            if setting == "global" and filter_global_modality:
                targets = {cands[i].modality for p in pos for i in p}
                cols = np.flatnonzero([c.modality in targets for c in cands])
            if cross_modal_offset:
                ranked = cols[_search_offset(q_emb, queries, pool_emb[path][cols], [cands[i] for i in cols],
                                             max(ks), cross_modal_offset)]
            else:
                ranked = cols[_search(q_emb, pool_emb[path][cols], max(ks))]  # (nq, k) pool rows
            row[setting] = {f"recall@{k}": 100.0 * recall_at_k(ranked, pos, k) for k in ks}
        results[qf.stem] = row
    tasks = list(results)
    results["average"] = {
        s: {m: float(np.mean([results[t][s][m] for t in tasks])) for m in results[tasks[0]][s]} for s in settings
    }
    if missing_of:
        results["missing_positives"] = missing_of  # type: ignore[assignment]
    return results


# Keys of an `evaluate_mbeir` result (and of `edge-gcl eval mbeir --json`) that are not query files.
NOT_TASKS = ("average", "missing_positives", "headline", "cross_modal_offset")


def task_stems(results: dict[str, Any]) -> list[str]:
    """The query-file keys of an `evaluate_mbeir` result, in order."""
    return [t for t in results if t not in NOT_TASKS]


def task_label(stem: str) -> str:
    """"mbeir_flickr8k_task0_test" -> "text -> image" (UniIR's task ids); "" when unknown."""
    m = re.search(r"_task(\d+)(?:_|$)", stem)
    if not m or int(m.group(1)) not in MBEIR_TASKS:
        return ""
    q, c = MBEIR_TASKS[int(m.group(1))]
    return f"{q} -> {c}"


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One plain-text table per setting: a row per query file (and its task), recall@k columns, the average."""
    tasks = task_stems(results)
    if not tasks:
        raise ValueError("results: no tasks")
    settings = list(results[tasks[0]])
    width = max(len(t) for t in [*tasks, "average"])
    label_width = max(len(task_label(t)) for t in tasks)
    blocks = []
    for s in settings:
        metrics = list(results[tasks[0]][s])
        lines = [f"M-BEIR {s} pool: recall (%)"]
        lines.append(f"{'task':<{width}}  {'':<{label_width}}  " + "  ".join(f"{m:>9}" for m in metrics))
        rows = [(t, task_label(t), results[t][s]) for t in tasks]
        if "average" in results:
            rows.append(("average", "", results["average"][s]))
        for t, label, vals in rows:
            lines.append(f"{t:<{width}}  {label:<{label_width}}  " + "  ".join(f"{vals[m]:>9.2f}" for m in metrics))
        blocks.append("\n".join(lines))
    top = headline(results)
    if top:
        blocks.append("headline, global pool: " + "   ".join(
            f"{what} " + "  ".join(f"R@{m[len('recall@'):]} {v:.2f}" for m, v in top[what].items()) for what in top))
    return "\n\n".join(blocks)


HEADLINE_TASK = 0  # text -> image: a text query looking for a photo, what the phone app needs most
HEADLINE_KS = (1, 5)


def headline(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The headline figures of an `evaluate_mbeir` result, global setting: text -> image recall@1 and @5 (the mean
    over the text -> image query files) beside the average's. {"text -> image": {"recall@1": ..}, "average":
    {..}}; a figure the result lacks is left out, and {} when it has no global setting."""
    tasks = task_stems(results)
    wanted = [f"recall@{k}" for k in HEADLINE_KS]
    t2i = [t for t in tasks if task_label(t) == " -> ".join(MBEIR_TASKS[HEADLINE_TASK]) and "global" in results[t]]
    out: dict[str, dict[str, float]] = {}
    if t2i:
        metrics = [m for m in wanted if m in results[t2i[0]]["global"]]
        out["text -> image"] = {m: float(np.mean([results[t]["global"][m] for t in t2i])) for m in metrics}
    if "global" in results.get("average", {}):
        out["average"] = {m: results["average"]["global"][m] for m in wanted if m in results["average"]["global"]}
    return {k: v for k, v in out.items() if v}

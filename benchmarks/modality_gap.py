"""`python -m benchmarks.modality_gap`: why a model wins or loses in the union pool, per task and model.

    python -m benchmarks.modality_gap --models default,runs/bench-losses/cl-s0              # the phone dev benchmark
    python -m benchmarks.modality_gap --models default --bench flickr8k-dev                  # the old one

For each query file of an M-BEIR root, against the global (union) pool and for each model:

    positive    mean cosine of a query with its best-scoring positive
    cos <m>     mean cosine of a query with the pool's candidates of modality <m>
    above <m>   mean number of candidates of modality <m> that score above the query's best positive
                (rank of the first hit = 1 + the sum over modalities; UniIR's recall@k counts a hit when it is < k)

A model with a modality gap shows it directly: text queries rank many texts above the matching photo
(`above text` on text -> image), image queries rank other photos above their captions (`above image` on
image -> text). Prints a table, writes JSON (`--json`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import Col, format_table, header_line, machine_info, make_document, parse_list, save_json
from .recall import BENCHES, ensure_root, task_label

MODALITIES = ("image", "text", "image,text")


def modality_gap(embedder: Any, root: str | Path, *, split: str = "test", batch_size: int = 32) -> dict[str, dict]:
    """{query file stem: {"queries": n, "positive": cos, "cos": {modality: cos}, "above": {modality: count}}}."""
    from edge_gcl.eval.mbeir import embed_items, global_pool_path, query_positives, read_pool, read_queries

    root = Path(root)
    cache: dict = {}
    pool = read_pool(global_pool_path(root, split), root=root)
    if not pool:
        raise ValueError(f"{global_pool_path(root, split)}: empty candidate pool")
    pool_emb = embed_items(embedder, pool, batch_size=batch_size, cache=cache)  # (N, D), L2-normalised
    modality = np.array([c.modality for c in pool])
    row_of = {c.did: i for i, c in enumerate(pool)}
    query_files = sorted((root / "query" / split).glob(f"mbeir_*_{split}.jsonl"))
    if not query_files:
        raise FileNotFoundError(f"{root / 'query' / split}: no query files mbeir_*_{split}.jsonl")
    out = {}
    for qf in query_files:
        queries = read_queries(qf, root=root)
        if not queries:
            raise ValueError(f"{qf}: no queries")
        positives = query_positives(queries, root / "qrels" / split / f"{qf.stem}_qrels.txt", query_file=qf)
        absent = sorted({d for pos in positives for d in pos} - row_of.keys())
        if absent:
            raise ValueError(f"{qf}: {len(absent)} positives are not in the union pool (e.g. {absent[0]})")
        scores = embed_items(embedder, queries, batch_size=batch_size, cache=cache) @ pool_emb.T  # (nq, N)
        best = np.array([scores[q, [row_of[d] for d in pos]].max() for q, pos in enumerate(positives)])  # (nq,)
        present = [m for m in MODALITIES if (modality == m).any()]
        out[qf.stem] = {
            "queries": len(queries),
            "positive": float(best.mean()),
            "cos": {m: float(scores[:, modality == m].mean()) for m in present},
            "above": {m: float((scores[:, modality == m] > best[:, None]).sum(1).mean()) for m in present},
        }
    return out


def gap_rows(results: dict[str, dict[str, dict]]) -> list[dict[str, Any]]:
    """One row per (task, model): {"task", "model", "positive", "cos <m>", "above <m>"}."""
    rows = []
    tasks = dict.fromkeys(t for per_model in results.values() for t in per_model)
    for task in tasks:
        for model, per_task in results.items():
            r = per_task[task]
            rows.append({"task": task_label(task) or task, "model": model, "positive": r["positive"],
                         **{f"cos {m}": v for m, v in r["cos"].items()},
                         **{f"above {m}": v for m, v in r["above"].items()}})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.modality_gap", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="default", help="comma-separated models or checkpoint folders")
    p.add_argument("--bench", choices=list(BENCHES), help="the dev benchmark (default: phone; see benchmarks.recall)")
    p.add_argument("--root", help="M-BEIR root (default: --bench's; built from ../shared/data if missing)")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", help="write the result JSON here")
    p.add_argument("--device", default="auto", help="for PyTorch models: auto, cpu, cuda, cuda:N or mps (default: auto)")
    args = p.parse_args(argv)
    from edge_gcl.runtime import load_embedder

    machine = machine_info()
    print(header_line(machine))
    root = ensure_root(args.root, bench=args.bench, log=lambda s: print(s, file=sys.stderr))
    models = parse_list(args.models)
    results = {m: modality_gap(load_embedder(m, device=args.device), root, split=args.split, batch_size=args.batch_size) for m in models}
    rows = gap_rows(results)
    cols = [Col("task"), Col("model")] + [Col(k, k, ".3f" if not k.startswith("above") else ".2f")
                                          for k in rows[0] if k not in ("task", "model")]
    print(format_table(rows, cols, title=f"Union pool of {root}: cosines and candidates ranked above the best positive"))
    if args.json:
        doc = make_document("modality-gap", rows, config={"models": models, "root": str(root), "split": args.split},
                            machine=machine, results=results)
        print(f"wrote {save_json(args.json, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

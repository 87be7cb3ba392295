"""A model's relevance cut-off: the cosine below which search results are hidden by default.

Calibrated on an M-BEIR-layout dev benchmark (the phone one: `edge-gcl bench build-mbeir --layout
phone --out runs/mbeir-phone-dev`): every (query, true positive) pair of every task is scored
against the global pool as the index scores it (cosine of unit vectors, photo+note fused), and the
cut-off is the score that keeps `--keep` (default 95%) of the true positives of EVERY task (the
lowest of the per-task quantiles: text->photo scores run lower than photo->photo ones, so one
pooled quantile would hide more of its true positives than asked). Also reported: the pooled
quantile, the share of each task's positives and of all (query, negative) pairs above the cut-off.

    python -m benchmarks.cutoff --root runs/mbeir-phone-dev --model runs/art-default \\
        --json benchmarks/results/cutoff_phone_dev_default.json

Record the figure in the model card and in `edge_gcl/weights/<model>/cutoff.json`, which
`export.compile` copies into the manifest (`extra["min_score"]`) when the model ids agree.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_gcl.eval.mbeir import (
    embed_items,
    global_pool_path,
    query_positives,
    read_pool,
    read_queries,
    task_label,
)


def positive_scores(embedder: Any, root: Path, *, split: str = "test") -> dict[str, dict[str, np.ndarray]]:
    """{task stem: {"positives": (P,) cosines of every (query, positive) pair, "negatives": (N,) of
    every (query, other pool item) pair}} over the global pool."""
    pool = read_pool(global_pool_path(root, split), root=root)
    cache: dict = {}
    pool_emb = embed_items(embedder, pool, cache=cache)  # (C, D) unit rows
    row_of = {c.did: i for i, c in enumerate(pool)}
    out = {}
    for qf in sorted((root / "query" / split).glob(f"mbeir_*_{split}.jsonl")):
        queries = read_queries(qf, root=root)
        positives = query_positives(queries, root / "qrels" / split / f"{qf.stem}_qrels.txt", query_file=qf)
        scores = embed_items(embedder, queries, cache=cache) @ pool_emb.T  # (Q, C)
        is_pos = np.zeros_like(scores, dtype=bool)
        for i, pos in enumerate(positives):
            is_pos[i, [row_of[d] for d in pos if d in row_of]] = True
        out[qf.stem] = {"positives": scores[is_pos], "negatives": scores[~is_pos]}
    return out


def calibrate(scores: dict[str, dict[str, np.ndarray]], keep: float = 0.95) -> dict[str, Any]:
    """The cut-off keeping `keep` of every task's positives, and what it keeps and lets through."""
    # "lower": a score the data holds, at or under the quantile, so at least `keep` of them are >= it
    per_task = {t: float(np.quantile(s["positives"], 1 - keep, method="lower")) for t, s in scores.items()}
    cutoff = math.floor(min(per_task.values()) * 1e4) / 1e4  # rounded down: still keeps them
    every = np.concatenate([s["positives"] for s in scores.values()])
    negatives = np.concatenate([s["negatives"] for s in scores.values()])
    return {
        "min_score": cutoff,
        "keep": keep,
        "pooled_quantile": round(float(np.quantile(every, 1 - keep)), 4),
        "per_task": {
            t: {
                "label": task_label(t),
                "quantile": round(per_task[t], 4),
                "positives": int(s["positives"].size),
                "positives_kept": round(float((s["positives"] >= cutoff).mean()), 4),
                "negatives_above": round(float((s["negatives"] >= cutoff).mean()), 4),
                "positive_median": round(float(np.median(s["positives"])), 4),
            }
            for t, s in scores.items()
        },
        "positives_kept": round(float((every >= cutoff).mean()), 4),
        "negatives_above": round(float((negatives >= cutoff).mean()), 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cutoff", description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs/mbeir-phone-dev", help="M-BEIR root (default: runs/mbeir-phone-dev)")
    p.add_argument("--model", required=True, help="artifacts folder or model name (what load_embedder takes)")
    p.add_argument("--keep", type=float, default=0.95, help="share of true positives kept (default: 0.95)")
    p.add_argument("--split", default="test", help="query/<split>/ (default: test)")
    p.add_argument("--json", help="write the result here (default: print only)")
    args = p.parse_args(argv)
    from edge_gcl.runtime import load_embedder

    embedder = load_embedder(args.model)
    result = calibrate(positive_scores(embedder, Path(args.root), split=args.split), args.keep)
    result.update(model_id=embedder.model_id, root=args.root, command="python -m benchmarks.cutoff " + " ".join(
        sys.argv[1:] if argv is None else argv))
    for r in result["per_task"].values():
        print(f"{r['label']:<28} {r['positives']:5d} positives, median {r['positive_median']:.3f}, "
              f"5% quantile {r['quantile']:.3f}; kept {100 * r['positives_kept']:.1f}%, "
              f"negatives above {100 * r['negatives_above']:.2f}%")
    print(f"cut-off {result['min_score']:.4f} (pooled quantile {result['pooled_quantile']:.4f}): keeps "
          f"{100 * result['positives_kept']:.1f}% of positives, lets {100 * result['negatives_above']:.2f}% of "
          f"negatives through ({result['model_id']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

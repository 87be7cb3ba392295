"""A model's calibration for search: its cross-modal offset, then its relevance cut-off.

Both are fit on an M-BEIR-layout dev benchmark (the phone one: `edge-gcl bench build-mbeir --layout
phone --out runs/mbeir-phone-dev`), every task's queries scored against the global pool as the index
scores them (cosine of unit vectors, photo+note fused):

1. The cross-modal offset (`edge_gcl.embedding.modality_offset`): added to a candidate's cosine when
   its modality differs from the query's. On photos it never saw, a GCL model still scores a text a
   little lower against its photo than against notes of a like scene, so a mixed pool ranks notes
   first. The offset is the value of `--offsets` with the best average global recall@5 over the tasks
   (ties: the smallest). Its honest estimate is cross-validated: the queries split in two at random,
   the offset fit on one half and scored on the other, both ways, over `--folds-repeats` splits.
2. The cut-off: the score (cosine + offset) that keeps `--keep` (default 95%) of the true positives of
   EVERY task (the lowest of the per-task quantiles: text->photo scores run lower than photo->photo
   ones, so one pooled quantile would hide more of its true positives than asked). Also reported:
   the pooled quantile, the share of each task's positives and of all (query, negative) pairs above it.

    python -m benchmarks.calibrate --root runs/mbeir-phone-dev --model default \\
        --json benchmarks/results/calibration_phone_dev_default.json --write edge_gcl/weights/default

`--write FOLDER` writes FOLDER/calibration.json, which the index reads for a PyTorch model and
`export.compile` copies into the manifest (`extra["min_score"]`, `extra["cross_modal_offset"]`) when
the model ids agree. Record the figures in the model card.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_gcl.embedding import modality_offsets
from edge_gcl.eval.mbeir import (
    embed_items,
    global_pool_path,
    query_positives,
    read_pool,
    read_queries,
    task_label,
)

OFFSETS = tuple(round(0.01 * i, 2) for i in range(51))  # 0 .. 0.5, cosine units (CL needs ~0.34)


@dataclass
class TaskScores:
    """One task's queries against the global pool."""

    scores: np.ndarray  # (Q, C) cosines
    positive: np.ndarray  # (Q, C) bool
    query_modality: str
    pool_modalities: list[str]

    def with_offset(self, offset: float) -> np.ndarray:
        return self.scores + modality_offsets(self.query_modality, self.pool_modalities, offset)

    def hits_at(self, offset: float, k: int = 5) -> np.ndarray:
        """(Q,) bool: some positive ranks in the top k (ties go to the positive)."""
        scores = self.with_offset(offset)
        best_positive = np.where(self.positive, scores, -np.inf).max(1)
        better = ((scores > best_positive[:, None]) & ~self.positive).sum(1)
        return better < k


def task_scores(embedder: Any, root: Path, *, split: str = "test") -> dict[str, TaskScores]:
    """{task stem: TaskScores} over the global pool. Each task's queries share one modality."""
    pool = read_pool(global_pool_path(root, split), root=root)
    cache: dict = {}
    pool_emb = embed_items(embedder, pool, cache=cache)  # (C, D) unit rows
    row_of = {c.did: i for i, c in enumerate(pool)}
    out = {}
    for qf in sorted((root / "query" / split).glob(f"mbeir_*_{split}.jsonl")):
        queries = read_queries(qf, root=root)
        modalities = {q.modality for q in queries}
        if len(modalities) != 1:
            raise ValueError(f"{qf}: queries of several modalities ({sorted(modalities)}); one per task file")
        positives = query_positives(queries, root / "qrels" / split / f"{qf.stem}_qrels.txt", query_file=qf)
        scores = embed_items(embedder, queries, cache=cache) @ pool_emb.T  # (Q, C)
        is_pos = np.zeros_like(scores, dtype=bool)
        for i, pos in enumerate(positives):
            is_pos[i, [row_of[d] for d in pos if d in row_of]] = True
        out[qf.stem] = TaskScores(scores, is_pos, modalities.pop(), [c.modality for c in pool])
    return out


def recall_by_offset(tasks: dict[str, TaskScores], offsets: Sequence[float], masks=None) -> np.ndarray:
    """(len(offsets),) average over tasks of recall@5 (percent), on the queries `masks[t]` keeps."""
    out = []
    for offset in offsets:
        per_task = []
        for t, s in tasks.items():
            hits = s.hits_at(offset)
            per_task.append(hits[masks[t]].mean() if masks is not None else hits.mean())
        out.append(100.0 * float(np.mean(per_task)))
    return np.asarray(out)


def fit_offset(tasks: dict[str, TaskScores], offsets: Sequence[float] = OFFSETS, *, repeats: int = 5,
               seed: int = 0) -> dict[str, Any]:
    """The offset with the best average global recall@5 (ties: the smallest), and its cross-validated
    estimate (2 folds of the queries at random, `repeats` times)."""
    offsets = sorted(offsets, key=abs)  # argmax takes the first best: the smallest offset
    curve = recall_by_offset(tasks, offsets)
    best = offsets[int(np.argmax(curve))]
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(repeats):
        fold = {t: rng.random(len(s.scores)) < 0.5 for t, s in tasks.items()}
        hits = {t: np.zeros(len(s.scores), bool) for t, s in tasks.items()}
        for side in (True, False):
            fit = offsets[int(np.argmax(recall_by_offset(tasks, offsets, {t: f == side for t, f in fold.items()})))]
            for t, s in tasks.items():
                held = fold[t] != side
                hits[t][held] = s.hits_at(fit)[held]
        estimates.append(100.0 * float(np.mean([h.mean() for h in hits.values()])))
    order = np.argsort(offsets)
    return {
        "cross_modal_offset": best,
        "recall@5_without": round(float(curve[offsets.index(0.0)]), 2) if 0.0 in offsets else None,
        "recall@5_with": round(float(curve.max()), 2),
        "recall@5_with_per_task": {t: round(100.0 * float(s.hits_at(best).mean()), 2) for t, s in tasks.items()},
        "recall@1_without_per_task": {t: round(100.0 * float(s.hits_at(0.0, 1).mean()), 2) for t, s in tasks.items()},
        "recall@1_with_per_task": {t: round(100.0 * float(s.hits_at(best, 1).mean()), 2) for t, s in tasks.items()},
        "recall@5_cross_validated": round(float(np.mean(estimates)), 2),
        "recall@5_by_offset": {f"{offsets[i]:g}": round(float(curve[i]), 2) for i in order},
    }


def calibrate(scores: dict[str, dict[str, np.ndarray]], keep: float = 0.95) -> dict[str, Any]:
    """The cut-off keeping `keep` of every task's positives, and what it keeps and lets through.
    `scores`: {task: {"positives": (P,) scores of (query, positive) pairs, "negatives": (N,) the rest}}."""
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
    p = argparse.ArgumentParser(prog="python -m benchmarks.calibrate", description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs/mbeir-phone-dev", help="M-BEIR root (default: runs/mbeir-phone-dev)")
    p.add_argument("--model", required=True, help="artifacts folder or model name (what load_embedder takes)")
    p.add_argument("--keep", type=float, default=0.95, help="share of true positives kept (default: 0.95)")
    p.add_argument("--offsets", default=",".join(f"{o:g}" for o in OFFSETS),
                   help="comma-separated cross-modal offsets to try (default: 0 to 0.5 by 0.01; '0': none)")
    p.add_argument("--folds-repeats", type=int, default=5, help="random 2-fold splits for the estimate (default: 5)")
    p.add_argument("--split", default="test", help="query/<split>/ (default: test)")
    p.add_argument("--json", help="write the result here (default: print only)")
    p.add_argument("--device", default="auto", help="for a PyTorch model: auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--write", metavar="FOLDER", help="write FOLDER/calibration.json (the model's folder)")
    args = p.parse_args(argv)
    if args.folds_repeats < 1:
        p.error(f"--folds-repeats {args.folds_repeats}: expected at least 1")
    try:
        offsets = [float(o) for o in args.offsets.split(",")]
    except ValueError:
        p.error(f"--offsets {args.offsets!r}: expected comma-separated numbers")
    from edge_gcl.runtime import load_embedder

    embedder = load_embedder(args.model, device=args.device)
    tasks = task_scores(embedder, Path(args.root), split=args.split)
    fit = fit_offset(tasks, offsets, repeats=args.folds_repeats)
    offset = fit["cross_modal_offset"]
    adjusted = {}
    for t, s in tasks.items():
        scores = s.with_offset(offset)
        adjusted[t] = {"positives": scores[s.positive], "negatives": scores[~s.positive]}
    result = {"model_id": embedder.model_id, "cross_modal_offset": offset, **calibrate(adjusted, args.keep),
              "offset_fit": fit, "root": args.root,
              "command": "python -m benchmarks.calibrate " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"cross-modal offset {offset:g}: global avg R@5 {fit['recall@5_without']} without, "
          f"{fit['recall@5_with']} with ({fit['recall@5_cross_validated']} cross-validated)")
    for r in result["per_task"].values():
        print(f"{r['label']:<28} {r['positives']:5d} positives, median {r['positive_median']:.3f}, "
              f"5% quantile {r['quantile']:.3f}; kept {100 * r['positives_kept']:.1f}%, "
              f"negatives above {100 * r['negatives_above']:.2f}%")
    print(f"cut-off {result['min_score']:.4f} (pooled quantile {result['pooled_quantile']:.4f}): keeps "
          f"{100 * result['positives_kept']:.1f}% of positives, lets {100 * result['negatives_above']:.2f}% of "
          f"negatives through ({result['model_id']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.write:
        record = {key: result[key] for key in ("model_id", "cross_modal_offset", "min_score", "keep",
                                               "positives_kept", "negatives_above")}
        record["calibrated_on"] = (f"{args.root} (an M-BEIR-layout dev benchmark), global pool, every task's "
                                   f"queries; offset cross-validated R@5 {fit['recall@5_cross_validated']}")
        record["command"] = result["command"]
        Path(args.write, "calibration.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Retrieval metrics: pure numpy over `(nq, k)` arrays of ranked ids (faiss `contrib.evaluation` style).

    scores (nq, N) --topk--> ranked ids (nq, k) --recall_at_k(positives)--> float

`recall_at_k` is the hit rate UniIR (and the CLIP/BLIP code bases) report as Recall@k: a query
scores 1 when any of its positives is among its first k results, 0 otherwise (also when it has
no positives), and the metric is the mean over queries, as a fraction in [0, 1].
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest scores of each row, best first: (indices (nq, k'), scores (nq, k')), k' = min(k, N).

    Ties are broken by the lower column index, so results do not depend on the sort algorithm.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores: expected a (nq, N) array, got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    nq, n = scores.shape
    k = min(k, n)
    if nq == 0 or k == 0:
        return np.zeros((nq, k), np.int64), np.zeros((nq, k), scores.dtype)
    if k == n:
        idx = np.argsort(-scores, axis=1, kind="stable")
    else:
        # O(N) selection, then an exact (score desc, index asc) order of the k selected. A row whose
        # k-th score is tied with unselected columns is redone exactly: argpartition picks arbitrarily.
        idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(scores, idx, axis=1).min(axis=1)  # (nq,)
        ragged = np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > k)
        for r in ragged:
            cand = np.flatnonzero(scores[r] >= kth[r])
            idx[r] = cand[np.lexsort((cand, -scores[r, cand]))][:k]
        vals = np.take_along_axis(scores, idx, axis=1)
        idx = np.take_along_axis(idx, np.lexsort((idx, -vals), axis=1), axis=1)
    idx = idx[:, :k]
    return idx.astype(np.int64, copy=False), np.take_along_axis(scores, idx, axis=1)


def recall_at_k(ranked_ids: np.ndarray, positives: Sequence[Collection], k: int) -> float:
    """Fraction of queries with at least one positive among their first k ranked ids.

    ranked_ids: (nq, K) ids, best first (any comparable id type; padding such as -1 never matches
    a positive you did not put there). K < k is fine: the whole row is then searched, as when the
    pool holds fewer than k items. positives: one collection of ids per query.
    """
    ranked = np.asarray(ranked_ids)
    if ranked.ndim != 2:
        raise ValueError(f"ranked_ids: expected a (nq, K) array, got shape {ranked.shape}")
    if len(positives) != ranked.shape[0]:
        raise ValueError(f"positives: {len(positives)} entries for {ranked.shape[0]} queries in ranked_ids")
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    if ranked.shape[0] == 0:
        raise ValueError("ranked_ids: no queries")
    top = ranked[:, :k].tolist()
    hits = sum(1 for row, pos in zip(top, positives, strict=True) if not set(pos).isdisjoint(row))
    return hits / ranked.shape[0]


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (characters or words), one numpy row at a time."""
    if not len(a):
        return len(b)
    if not len(b):
        return len(a)
    prev = np.arange(len(b) + 1)
    bb = np.array([hash(x) for x in b])
    steps = np.arange(len(b) + 1)
    for i, x in enumerate(a, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[:-1] + (bb != hash(x)), prev[1:] + 1)  # substitution, deletion
        prev = np.minimum.accumulate(cur - steps) + steps  # insertions, left to right
    return int(prev[-1])


def char_accuracy(reference: Sequence[str], read: Sequence[str]) -> float:
    """OCR character accuracy: 1 - total edit distance / total reference length, over pairs of texts
    (floored at 0)."""
    total = sum(len(r) for r in reference)
    errors = sum(edit_distance(r, o) for r, o in zip(reference, read, strict=True))
    return max(0.0, 1.0 - errors / max(total, 1))

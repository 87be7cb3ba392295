"""MMEB's retrieval tasks (TIGER-Lab/MMEB-eval, scored as VLM2Vec does): read them and evaluate an `Embedder`.

Layout (confirmed, sources below):

    <root>/<Task>/test-00000-of-00001.parquet     the task's rows (any <Task>/test-*.parquet shards, in name order)
    <root>/<Task>/test/0000.parquet               ... the Hub's refs/convert/parquet branch spells it this way
    <root>/<Task>/test.jsonl                      ... or the same rows as JSON lines (an export, read alike)
    <images>/<img_path>                           images.zip unzipped (VLM2Vec's --image_dir); default
                                                  <root>/eval_images when that folder exists, else <root>

A row is one query and its own candidate list: `qry_text` (str), `qry_img_path` (str, "" for none),
`tgt_text` (list of str) and `tgt_img_path` (list of str, "" for none), the two lists of equal length with
the positive first. A `tgt_text` given as the single string "" stands for an empty text for every candidate
(VLM2Vec's readers expand it so). The twelve retrieval tasks (`RETRIEVAL_TASKS`) have 1,000 rows of 1,000
candidates each. Reading parquet needs pyarrow (`pip install 'edge-gcl[mmeb]'`); JSON-lines files need nothing.

Confirmed from the published sources (read, not copied):
- file names: the Hub tree of TIGER-Lab/MMEB-eval (e.g. `MSCOCO/test-00000-of-00001.parquet`), which
  TIGER-AI-Lab/VLM2Vec `eval.py` reads with `load_dataset(dataset_name, task, split=dataset_split)`, its README
  passing `--dataset_name TIGER-Lab/MMEB-eval --dataset_split test`;
- the four columns and their list form: VLM2Vec `eval.py` (zip of `row["tgt_text"]`, `row["tgt_img_path"]`) and
  `src/dataset.py` (`EvalDataset.get_paired_data`, which also expands a `tgt_text` of "");
- the positive first and hit@1: `eval.py` counts a row correct when `pred == 0`, `pred` being
  `np.argmax` of the candidates' scores (`evaluation/eval_utils.get_pred`, cosine under `--normalize True`);
- the image folder: VLM2Vec's README unzips with `unzip images.zip -d eval_images/` and evaluates with
  `--image_dir eval_images/`; `src/dataset.py` opens `os.path.join(image_dir, img_path)`.
Not confirmed: the archive's own listing (that its paths resolve directly under the folder it is unzipped
into is taken from those commands), and which of `evaluation/eval_clip.py`'s two modes ("unimodal": text
queries against images alone, "multimodal": image + text summed) produced the paper's CLIP-style rows.

Items. An item's image is its path when not ""; its text is the published text with VLM2Vec's image
placeholder `<|image_1|>` removed (it marks where a vision-language model splices in the image tokens;
edge-gcl's image goes to the image tower instead; VLM2Vec's CLIP baseline, `evaluation/eval_clip.py`,
tokenizes it as text) and surrounding whitespace stripped. An item with both is image+text and scored as the
fusion normalize(e_image + e_text) (`edge_gcl.embedding.fuse`, CLIP-SF), as everywhere in edge-gcl
(`eval_clip.py`'s "multimodal" mode sums the unnormalised features instead).

Instructions. MMEB's texts carry task instructions written for instruction-tuned embedders, e.g. a
MSCOCO_t2i query "Find me an everyday image that matches the given caption: <caption>" and every image
candidate "<|image_1|>\\nRepresent the given image.". GCL's CLIP-SF models were trained on plain captions and
notes, but this module keeps the published text verbatim (only the placeholder goes): the figures are then
those of the published benchmark, not of a rewritten one. The cost is visible: an image candidate whose only
text is an instruction becomes image+text, its image fused with the same instruction embedding as every other
image candidate of the task.

Scoring, as VLM2Vec's `eval.py` (`evaluation/eval_utils.get_pred`):
1. Embed each distinct item of a task once (VLM2Vec embeds each distinct (text, image) pair once).
2. For each row, score the query against its own candidates by inner product (rows are L2-normalised, so
   this is VLM2Vec's cosine); the row is a hit when candidate 0 ranks first. Ties go to the earlier
   candidate (`np.argmax` there, `edge_gcl.metrics.topk` here), so a positive tied with a negative is a hit.
3. hit@1 (%) per task, and "average": the unweighted mean over the tasks evaluated, which over the twelve
   retrieval tasks is the MMEB leaderboard's Retrieval column (MMEB reports precision@1 = hit@1).
4. For comparison, local recall@k (%): the positive among the first k of the row's own candidates
   (`edge_gcl.metrics.recall_at_k`); recall@1 equals hit@1.

Bad input (a missing column, a list of the wrong length, an empty item, a missing image) is an
`MMEBFormatError` naming `FILE:LINE`, the line being the row's line in a JSON-lines file and its 1-based row
number in a parquet file. The command line: `edge-gcl eval mmeb` (`edge_gcl.eval.cli`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embedding import Embedder
from ..metrics import recall_at_k, topk
from .mbeir import Candidate, _lines, check_root, embed_items

# MMEB's retrieval meta-task (VLM2Vec paper, Table 1; the leaderboard's Retrieval column), in its order.
RETRIEVAL_TASKS = ("VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t", "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS",
                   "WebQA", "FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS")
IMAGE_TOKEN = "<|image_1|>"
COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")
SPLIT = "test"


class MMEBFormatError(ValueError):
    """A malformed MMEB file; the message starts with `<file>:<line>:` (a parquet file: its row number)."""


@dataclass(frozen=True)
class Row:
    """One MMEB query with its candidate list (positive first); items are `mbeir.Candidate`s (did: "q" / "c<i>")."""

    query: Candidate
    candidates: tuple[Candidate, ...]
    where: str  # "FILE:LINE", for messages


# --- reading ----------------------------------------------------------------------------------


def task_files(root: str | Path, task: str) -> list[Path]:
    """The files holding `task`'s test rows under `root` (see the module docstring); FileNotFoundError if none."""
    folder = Path(root) / task
    for found in (sorted(folder.glob(f"{SPLIT}-*.parquet")), sorted((folder / SPLIT).glob("*.parquet")),
                  [folder / f"{SPLIT}.jsonl"]):
        found = [p for p in found if p.is_file()]
        if found:
            return found
    raise FileNotFoundError(f"{folder}: no {SPLIT}-*.parquet, {SPLIT}/*.parquet or {SPLIT}.jsonl for MMEB task {task}")


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MMEBFormatError(f"{path}: reading MMEB's parquet files needs pyarrow, from the [mmeb] extra: pip install 'edge-gcl[mmeb]'") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow's errors (ArrowInvalid, OSError) name no file
        raise MMEBFormatError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise MMEBFormatError(f"{path}: no column {', '.join(missing)} (columns: {', '.join(table.column_names)})")
    yield from enumerate(table.select(list(COLUMNS)).to_pylist(), 1)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    for lineno, line in _lines(path):
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise MMEBFormatError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


def _text(value: Any, key: str, where: str) -> str | None:
    """The published text without the image placeholder, stripped; None when nothing is left."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MMEBFormatError(f"{where}: {key} must be a string, got {type(value).__name__}")
    return value.replace(IMAGE_TOKEN, " ").strip() or None


def _item(did: str, text: Any, img: Any, keys: tuple[str, str], where: str, images: Path,
          checked: set[Path] | None) -> Candidate:
    """An item of a row; `checked` (None: no check) collects the image paths already found on disk."""
    txt = _text(text, keys[0], where)
    if img is None:
        img = ""
    if not isinstance(img, str):
        raise MMEBFormatError(f"{where}: {keys[1]} must be a string, got {type(img).__name__}")
    path = images / img if img.strip() else None
    if path is not None and checked is not None and path not in checked:
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image not found: {path}")
        checked.add(path)
    if txt is None and path is None:
        raise MMEBFormatError(f"{where}: {keys[0]} and {keys[1]} are both empty")
    modality = "image,text" if txt and path else "text" if txt else "image"
    return Candidate(did, modality, txt, path)


def read_task(path: str | Path, images: str | Path, *, check_images: bool = True) -> list[Row]:
    """The rows of one MMEB task file (parquet or JSON lines), image paths resolved against `images`."""
    path, images = Path(path), Path(images)
    checked: set[Path] | None = set() if check_images else None  # each image stat()ed once, not once per row
    rows = []
    for lineno, row in (_parquet_rows(path) if path.suffix == ".parquet" else _jsonl_rows(path)):
        where = f"{path}:{lineno}"
        if not isinstance(row, dict):
            raise MMEBFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise MMEBFormatError(f"{where}: missing {', '.join(missing)}")
        texts, imgs = row["tgt_text"], row["tgt_img_path"]
        if texts == "" and isinstance(imgs, list):  # one empty text for every candidate, as VLM2Vec reads it
            texts = [""] * len(imgs)
        for key, value in (("tgt_text", texts), ("tgt_img_path", imgs)):
            if not isinstance(value, list):
                raise MMEBFormatError(f"{where}: {key} must be a list, got {type(value).__name__}")
        if len(texts) != len(imgs):
            raise MMEBFormatError(f"{where}: tgt_text has {len(texts)} entries, tgt_img_path {len(imgs)}")
        if not texts:
            raise MMEBFormatError(f"{where}: no candidates")
        query = _item("q", row["qry_text"], row["qry_img_path"], ("qry_text", "qry_img_path"), where, images,
                      checked)
        cands = tuple(_item(f"c{i}", t, p, (f"tgt_text[{i}]", f"tgt_img_path[{i}]"), where, images, checked)
                      for i, (t, p) in enumerate(zip(texts, imgs, strict=True)))
        rows.append(Row(query, cands, where))
    if not rows:
        raise MMEBFormatError(f"{path}: no rows")
    return rows


def default_images(root: str | Path) -> Path:
    """Where images.zip is unzipped: <root>/eval_images when it is a folder, else <root>."""
    root = Path(root)
    return root / "eval_images" if (root / "eval_images").is_dir() else root


def find_tasks(root: str | Path) -> list[str]:
    """The retrieval tasks present under `root`, in `RETRIEVAL_TASKS` order."""
    return [t for t in RETRIEVAL_TASKS if (Path(root) / t).is_dir()]


# --- evaluation -------------------------------------------------------------------------------


def score_rows(q_emb: np.ndarray, c_emb: np.ndarray, rows: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, float]:
    """hit@1 and recall@k (%) of queries ranked against their own candidates.

    q_emb: (nq, D); c_emb: (N, D) distinct candidates; rows[i]: (n_i,) rows of c_emb that are query i's
    candidates, its positive first.
    """
    kmax = max(1, *ks)
    ranked = np.full((len(rows), kmax), -1, np.int64)  # (nq, kmax) positions in each candidate list, -1 padding
    for i, idx in enumerate(rows):
        top, _ = topk(q_emb[i : i + 1] @ c_emb[idx].T, kmax)  # (1, min(kmax, n_i))
        ranked[i, : top.shape[1]] = top[0]
    positives = [(0,)] * len(rows)
    out = {"hit@1": 100.0 * recall_at_k(ranked, positives, 1)}
    out |= {f"recall@{k}": 100.0 * recall_at_k(ranked, positives, k) for k in ks}
    return out


def distinct_candidates(rows: Sequence[Row]) -> tuple[list[Candidate], list[np.ndarray]]:
    """The distinct candidate items of `rows` and, per row, the indices of its candidates among them.

    MMEB's candidate lists overlap heavily (1,000 rows of 1,000 candidates drawn from one pool), so each
    distinct item is embedded and stored once, as VLM2Vec does.
    """
    index: dict[tuple[str, str | None, str | None], int] = {}
    items: list[Candidate] = []
    per_row = []
    for r in rows:
        idx = []
        for c in r.candidates:
            key = (c.modality, c.txt, None if c.img_path is None else str(c.img_path))
            if key not in index:
                index[key] = len(items)
                items.append(c)
            idx.append(index[key])
        per_row.append(np.array(idx, np.int64))
    return items, per_row


@dataclass(frozen=True)
class MMEBData:
    """The rows of each task read from a root, and the retrieval tasks a default selection lacked."""

    tasks: dict[str, list[Row]]
    missing: tuple[str, ...] = ()


def read_mmeb(root: str | Path, *, tasks: Sequence[str] | None = None, images: str | Path | None = None) -> MMEBData:
    """Read and check every task file of `root` (all of it before anything is embedded).

    `tasks` defaults to the retrieval tasks present (`RETRIEVAL_TASKS`); `images` to `default_images(root)`.
    """
    root = Path(root)
    check_root(root)
    images = Path(images) if images is not None else default_images(root)
    check_root(images)
    missing: tuple[str, ...] = ()
    if tasks is None:
        tasks = find_tasks(root)
        missing = tuple(t for t in RETRIEVAL_TASKS if t not in tasks)
        if not tasks:
            raise FileNotFoundError(f"{root}: none of MMEB's retrieval task folders ({', '.join(RETRIEVAL_TASKS)})")
    data = {t: [r for f in task_files(root, t) for r in read_task(f, images)] for t in dict.fromkeys(tasks)}
    return MMEBData(data, missing)


def evaluate_mmeb(
    embedder: Embedder,
    root: str | Path | MMEBData,
    *,
    tasks: Sequence[str] | None = None,
    images: str | Path | None = None,
    ks: Sequence[int] = (5, 10),
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """hit@1 and recall@k (%) per MMEB task of `root` (or of data `read_mmeb` returned), and their average.

    `tasks` defaults to the retrieval tasks present (`RETRIEVAL_TASKS`). Returns {"<Task>": {"hit@1": ..,
    "recall@5": .., "queries": n, "candidates": total}, ..., "average": {"hit@1": .., ...}}, plus
    "tasks_missing": [...] when the default selection lacks some of the twelve (the average is then not the
    leaderboard's Retrieval figure). See the module docstring for the protocol.
    """
    ks = tuple(ks)
    if any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks: expected positive integers, got {ks}")
    data = root if isinstance(root, MMEBData) else read_mmeb(root, tasks=tasks, images=images)
    # Embed each distinct image and text of a task once, and score each row against its own candidates.
    results: dict[str, Any] = {}
    for task, rows in data.tasks.items():
        items, per_row = distinct_candidates(rows)
        if progress:
            print(f"embedding MMEB {task} ({len(rows)} queries, {len(items)} distinct candidates)", file=sys.stderr)
        cache: dict[tuple[str, str], np.ndarray] = {}  # per task: MMEB's tasks share no images
        q_emb = embed_items(embedder, [r.query for r in rows], batch_size=batch_size, progress=progress, cache=cache)
        c_emb = embed_items(embedder, items, batch_size=batch_size, progress=progress, cache=cache)  # (N, D)
        results[task] = score_rows(q_emb, c_emb, per_row, ks)
        results[task] |= {"queries": len(rows), "candidates": sum(len(r.candidates) for r in rows)}
    metrics = ["hit@1", *(f"recall@{k}" for k in ks)]
    results["average"] = {m: float(np.mean([results[t][m] for t in data.tasks])) for m in metrics}
    if data.missing:
        results["tasks_missing"] = list(data.missing)
    return results


NOT_TASKS = ("average", "tasks_missing")


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table: a row per task (hit@1, recall@k, queries), then the average."""
    tasks = [t for t in results if t not in NOT_TASKS]
    metrics = list(results["average"])
    width = max(len(t) for t in [*tasks, "average"])
    lines = ["MMEB retrieval: hit@1 over each query's own candidates (positive first), local recall@k (%)",
             f"{'task':<{width}}  " + "  ".join(f"{m:>9}" for m in metrics) + f"  {'queries':>7}"]
    for t in tasks:
        lines.append(f"{t:<{width}}  " + "  ".join(f"{results[t][m]:>9.2f}" for m in metrics)
                     + f"  {results[t]['queries']:>7}")
    lines.append(f"{'average':<{width}}  " + "  ".join(f"{results['average'][m]:>9.2f}" for m in metrics))
    if results.get("tasks_missing"):
        lines.append(f"not in the root: {', '.join(results['tasks_missing'])} (the average covers "
                     f"{len(tasks)} of MMEB's {len(RETRIEVAL_TASKS)} retrieval tasks)")
    return "\n".join(lines)

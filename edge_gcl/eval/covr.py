"""CoVR, composed video retrieval (lucas-ventura/CoVR, WebVid-CoVR's test set): read it, evaluate an `Embedder`.

Layout, as CoVR's `configs/test/webvid-covr.yaml` expects it with the default paths (`paths.work_dir` = <root>,
`paths.datasets_dir` = <root>/datasets):

    <root>/annotation/webvid-covr/webvid8m-covr_test.csv    the test triplets (`--annotation` names another)
    <root>/datasets/WebVid/8M/train/<pth>.mp4                the videos (`--videos` names another folder);
                                                             <pth> = "<folder>/<video id>" as in pth1 / pth2
    <videos>/<pth>/                                          ... or a folder of frames extracted beforehand
                                                             (*.jpg, *.jpeg, *.png; in name order)

The CSV (header line, then one triplet per row) is read for four columns: `pth1` (the query video), `edit`
(the modification text), `pth2` (the target video) and `scores` (a list literal such as "[0.2113, 0.2087]":
per-frame similarities of the target video's sampled frames to the edit, `[]` for none); the others (txt1,
txt2, ...) are ignored. A target video is the target of one row only (CoVR's test split asserts it). The edit
text is kept verbatim (CoVR's `pre_caption` lower-cases it, drops .!"()*#:;~ and keeps 30 words first;
edge-gcl's tokenizer gets the published text).

Confirmed from lucas-ventura/CoVR (read, not copied):
- paths and file: `configs/test/webvid-covr.yaml` (annotation, `vid_dirs`, `vid_query_method: middle`,
  `emb_pool: query`); `tools/scripts/download_annotation_covr.sh` fetches the three CSVs into
  annotation/webvid-covr/ (webvid2m-covr_train, webvid8m-covr_val, webvid8m-covr_test);
- columns: `src/data/webvid_covr.py` (`WebVidCoVRDataset`) reads `pth1`, `pth2`, `edit` and, under
  `emb_pool: query`, `scores` (`ast.literal_eval`); `pth` = parent folder + "/" + stem of `<vid_dir>/*/*.mp4`;
- the pool: the same class iterates `pth2` (`iterate: pth2`), asserts one row per target in the test split,
  and `src/test/webvid_covr.py` (`TestWebVidCoVR`, `eval_recall`) ranks every query against every row's
  target, the positive being its own row's, a query's own video set to -10 (`remove_self_similarity`);
- frames: the query is the middle frame (`src/data/utils.get_middle_frame`: frame count // 2); a target is
  the pre-extracted frame features of `tools/embs/save_blip_embs_vids.py` (`--frames_video 15`, frames at
  `src/data/embs.sample_frames`, each L2-normalised), pooled as softmax(scores / 0.1)-weighted sum
  (even weights when `scores` is `[]`); `tools/embs/get_scores.py` wrote `scores` as the dot products of those
  frame features with the edit's text feature, rounded to 4 places, one per stored frame.
- there is no CC-CoVR test set: CoVR-2's `configs/data/cc-coir.yaml` / `src/data/cc_coir.py` is CC-CoIR, image
  triplets for training (annotation/cc-coir/cc-coir_train.csv), validated on webvid8m-covr_val.csv.
Not confirmed: the published CSV itself (not readable here); that it carries `scores` is inferred from the
test config (`emb_pool: query` reads the column; the run would fail without it), and txt1 / txt2 from
third-party readers of the file.

Evaluation, as CoVR's `src/test/webvid_covr.py` (`TestWebVidCoVR`) does it:
1. The pool is the target videos of the file (pth2, one per row, in row order); a row's positive is its pth2.
2. A query is the middle frame of its pth1 video (frame n // 2 of n, CoVR's `vid_query_method: middle`) and
   its edit text, fused as image+text: normalize(e_frame + e_text) (`edge_gcl.embedding.fuse`, CLIP-SF).
3. A target video, `frame_pool="query"` (CoVR's `emb_pool: query`, the default): the len(scores) frames
   `sample_frames` picks (one in the middle of each of len(scores) equal segments: CoVR's 15 for a video of
   15 frames or more), each embedded by the image tower and L2-normalised, weighted by
   softmax(scores / 0.1) and summed, then L2-normalised. The weights are the published ones (computed by
   CoVR with BLIP), part of the benchmark's data like the edit text. A row whose scores are `[]` weighs
   `frames` frames (the command line's `--frames`) evenly, CoVR all the frames it stored (15).
   `frame_pool="mean"` (CoVR's `emb_pool: mean`) ignores `scores` and averages `frames` frames evenly.
4. A query's own video is removed from its ranking when it is also a target (CoVR sets that score to -10).
5. Recall@1/5/10/50 (%, `edge_gcl.metrics.recall_at_k`) by inner product; ties go to the earlier pool row.
Where this differs from CoVR: frames are counted by demuxing (CoVR: OpenCV's CAP_PROP_FRAME_COUNT, which
can differ by a frame or so on some files); CoVR's `src/data/embs.get_video_frames` hands OpenCV's BGR
frames to the target encoder unconverted (its query frames are converted to RGB), while every frame here is
RGB; CoVR breaks exact ties by `np.argsort` over the pool sorted by pth2.

Videos are decoded with PyAV (`pip install 'edge-gcl[video]'`); frame folders need nothing beyond Pillow.
Bad input (a missing column or video, an empty field, a bad `scores` list, a target repeated, an undecodable
video) is a `CoVRFormatError` (or FileNotFoundError) naming `FILE:LINE`. The command line: `edge-gcl eval
covr` (`edge_gcl.eval.cli`).
"""

from __future__ import annotations

import ast
import csv
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..embedding import Embedder, ImageInput, fuse, l2_normalize
from ..metrics import recall_at_k, topk
from .mbeir import _checked, check_root

if TYPE_CHECKING:
    from PIL import Image

ANNOTATION = Path("annotation/webvid-covr/webvid8m-covr_test.csv")
VIDEOS = Path("datasets/WebVid/8M/train")
COLUMNS = ("pth1", "edit", "pth2")
SCORES = "scores"  # per-frame weights of CoVR's emb_pool=query
FRAME_POOLS = ("query", "mean")  # CoVR's emb_pool values: scores-weighted, even
FRAMES = 15  # CoVR's frames_video (tools/embs/save_blip_embs_vids.py)
SCORE_TEMPERATURE = 0.1  # softmax(scores / 0.1), src/data/webvid_covr.py
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
KS = (1, 5, 10, 50)
VIDEO_EXTRA = "decoding videos needs PyAV, the optional extra [video]: pip install 'edge-gcl[video]'"


class CoVRFormatError(ValueError):
    """A malformed CoVR file or video; the message starts with the file (and line)."""


class MissingExtraError(ValueError):
    """An optional dependency is missing; the message names the extra to install."""


@dataclass(frozen=True)
class Triplet:
    query: str  # pth1
    edit: str
    target: str  # pth2
    line: int  # of the CSV row, for messages
    scores: tuple[float, ...] | None = None  # the target's per-frame scores, () for `[]`; None: not read


@dataclass
class Video:
    """A video of the benchmark: an .mp4 file or a folder of frames."""

    pth: str
    path: Path
    frames: list[Path] | None = field(default=None, repr=False)  # a frames folder's files, in order

    @property
    def is_folder(self) -> bool:
        return self.frames is not None


# --- reading ----------------------------------------------------------------------------------


def parse_scores(cell: str, where: str) -> tuple[float, ...]:
    """A `scores` cell, a Python list literal of numbers as CoVR writes it ("[0.2113, 0.2087]", "[]")."""
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        shown = cell if len(cell) <= 40 else cell[:37] + "..."
        raise CoVRFormatError(f"{where}: scores is not a list of numbers ({shown!r})")
    return tuple(float(v) for v in value)


def read_annotation(path: str | Path, *, scores: bool = True) -> list[Triplet]:
    """The triplets of a CoVR CSV (header line with pth1, edit, pth2 and, with `scores`, scores), with their
    line numbers; each pth2 the target of one row only."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path}: is a folder, not a file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CoVRFormatError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x})") from None
    columns = (*COLUMNS, SCORES) if scores else COLUMNS
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CoVRFormatError(f"{path}: empty file (expected a header line with {', '.join(columns)})") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise CoVRFormatError(f"{path}:1: no column {', '.join(missing)} (header: {','.join(header)})")
    col = {c: header.index(c) for c in columns}
    triplets: list[Triplet] = []
    target_line: dict[str, int] = {}
    line = reader.line_num + 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                if len(row) != len(header):
                    raise CoVRFormatError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
                values = {c: row[i].strip() for c, i in col.items()}
                empty = [c for c, v in values.items() if not v]
                if empty:
                    raise CoVRFormatError(f"{path}:{line}: empty {', '.join(empty)}")
                if values["pth1"] == values["pth2"]:
                    raise CoVRFormatError(f"{path}:{line}: pth1 and pth2 are the same video ({values['pth1']})")
                first = target_line.setdefault(values["pth2"], line)
                if first != line:
                    raise CoVRFormatError(f"{path}:{line}: pth2 {values['pth2']} is already the target of line "
                                          f"{first} (CoVR's test set has one row per target video)")
                weights = parse_scores(values[SCORES], f"{path}:{line}") if scores else None
                triplets.append(Triplet(values["pth1"], values["edit"], values["pth2"], line, weights))
            line = reader.line_num + 1
    except csv.Error as e:
        raise CoVRFormatError(f"{path}:{line}: not valid CSV ({e})") from None
    if not triplets:
        raise CoVRFormatError(f"{path}: no triplets")
    return triplets


def find_video(videos: Path, pth: str) -> Video | None:
    """<videos>/<pth>.mp4, else the frames folder <videos>/<pth>/; None when neither exists."""
    file = videos / f"{pth}.mp4"
    if file.is_file():
        return Video(pth, file)
    folder = videos / pth
    if folder.is_dir():
        return Video(pth, folder, sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES))
    return None


def resolve_videos(triplets: Sequence[Triplet], videos: str | Path, annotation: str | Path) -> dict[str, Video]:
    """pth -> Video for every pth1 and pth2; a missing video or empty frames folder names its CSV line."""
    videos = Path(videos)
    found: dict[str, Video] = {}
    for t in triplets:
        for pth in (t.query, t.target):
            if pth in found:
                continue
            video = find_video(videos, pth)
            if video is None:
                raise FileNotFoundError(f"{annotation}:{t.line}: video not found: {videos / pth}.mp4 "
                                        f"(nor a frames folder {videos / pth})")
            if video.frames == []:
                raise CoVRFormatError(f"{annotation}:{t.line}: {video.path}: a frames folder with no "
                                      f"{', '.join('*' + s for s in FRAME_SUFFIXES)}")
            found[pth] = video
    return found


# --- frames -----------------------------------------------------------------------------------


def frame_indices(n: int, k: int) -> list[int]:
    """CoVR's `sample_frames`: the middle frame of each of min(k, n) equal segments of n frames."""
    if n < 1 or k < 1:
        raise ValueError(f"frame_indices: need n >= 1 and k >= 1, got n={n}, k={k}")
    k = min(k, n)
    bounds = np.linspace(0, n, k + 1).astype(int)
    return [int((bounds[i] + bounds[i + 1] - 1) // 2) for i in range(k)]


def middle_index(n: int) -> int:
    """CoVR's `get_middle_frame`: frame n // 2."""
    return n // 2


def frame_weights(scores: Sequence[float], *, temperature: float = SCORE_TEMPERATURE) -> np.ndarray:
    """CoVR's emb_pool=query weights: softmax(scores / temperature), (k,) float64 summing to 1."""
    s = np.asarray(scores, np.float64)  # (k,)
    with np.errstate(over="ignore"):  # a score far below the best becomes -inf: weight 0, as it should
        w = np.exp((s - s.max()) / temperature)  # shifted before dividing: 1e308 / 0.1 would be inf, inf - inf NaN
    return w / w.sum()


def target_frames(triplet: Triplet, n: int, *, frames: int, frame_pool: str, annotation: str | Path
                  ) -> tuple[list[int], np.ndarray]:
    """Which frames of the n-frame target video of `triplet` make its embedding, and their weights (k,).

    "query" with scores: the len(scores) frames `frame_indices` picks, weighted by `frame_weights`; else
    (no scores, or "mean"): `frames` frames, weighted evenly.
    """
    if frame_pool == "query" and triplet.scores:
        k = len(triplet.scores)
        if k > n:
            raise CoVRFormatError(f"{annotation}:{triplet.line}: scores has {k} entries, one per sampled frame, "
                                  f"but {triplet.target} has {n} frames")
        return frame_indices(n, k), frame_weights(triplet.scores)
    indices = frame_indices(n, frames)
    return indices, np.full(len(indices), 1.0 / len(indices))


def require_av() -> Any:
    try:
        import av
    except ImportError:
        raise MissingExtraError(VIDEO_EXTRA) from None
    return av


def count_frames(video: Video) -> int:
    """The number of frames: the folder's files, else the video stream's packets (demuxed, not decoded)."""
    if video.frames is not None:
        return len(video.frames)
    av = require_av()
    try:
        with av.open(str(video.path)) as container:
            if not container.streams.video:
                raise CoVRFormatError(f"{video.path}: no video stream")
            stream = container.streams.video[0]
            n = sum(1 for packet in container.demux(stream) if packet.size)
    except CoVRFormatError:
        raise
    except Exception as e:  # PyAV's FFmpeg errors
        raise CoVRFormatError(f"{video.path}: not a decodable video ({e})") from None
    if n == 0:
        raise CoVRFormatError(f"{video.path}: no frames")
    return n


def read_frames(video: Video, indices: Sequence[int]) -> list[ImageInput]:
    """The frames at `indices` (ascending, distinct): paths of a frames folder, else decoded RGB images.

    An index past the frames actually decoded (a container that over-counts) gets the last frame.
    """
    if video.frames is not None:
        return [video.frames[i] for i in indices]
    av = require_av()
    wanted, out, last = set(indices), {}, None
    try:
        with av.open(str(video.path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                last = frame
                if i in wanted:
                    out[i] = frame.to_image()  # PIL RGB
                    if len(out) == len(wanted):
                        break
    except Exception as e:  # PyAV's FFmpeg errors
        raise CoVRFormatError(f"{video.path}: not a decodable video ({e})") from None
    if last is None:
        raise CoVRFormatError(f"{video.path}: no frames")
    images: list[Image.Image] = [out[i] if i in out else last.to_image() for i in indices]
    return list(images)


# --- evaluation -------------------------------------------------------------------------------


def embed_video_frames(
    embedder: Embedder, wanted: dict[str, tuple[Video, list[int]]], *, batch_size: int = 32, progress: bool = False
) -> dict[tuple[str, int], np.ndarray]:
    """(pth, frame index) -> embedding of every wanted frame; decoded and embedded a few videos at a time."""
    out: dict[tuple[str, int], np.ndarray] = {}
    keys: list[tuple[str, int]] = []
    frames: list[ImageInput] = []
    chunk = max(batch_size, 64)

    def flush() -> None:
        if frames:
            emb = _checked(embedder.embed_images(frames, batch_size=batch_size), len(frames), "embed_images")
            out.update(zip(keys, emb, strict=True))
            keys.clear()
            frames.clear()

    for n, (pth, (video, indices)) in enumerate(wanted.items(), 1):
        frames.extend(read_frames(video, indices))
        keys.extend((pth, i) for i in indices)
        if len(frames) >= chunk:
            flush()
        if progress and n % 50 == 0:
            print(f"  {n} / {len(wanted)} videos", file=sys.stderr)
    flush()
    return out


def check_decoder(videos: dict[str, Video]) -> None:
    """MissingExtraError when some video is a file and PyAV is not installed (before any model loads)."""
    if any(not v.is_folder for v in videos.values()):
        require_av()


def evaluate_covr(
    embedder: Embedder,
    root: str | Path,
    *,
    annotation: str | Path | None = None,
    videos: str | Path | None = None,
    frames: int = FRAMES,
    frame_pool: str = "query",
    ks: Sequence[int] = KS,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Recall@k (%) of the CoVR triplets of `annotation` against the pool of their target videos.

    `frame_pool`: "query" (CoVR's default: target frames weighted by the CSV's `scores`) or "mean" (`frames`
    frames, even weights; `scores` not read). Returns {"annotation": path, "queries": n, "pool": m,
    "frames": frames, "frame_pool": frame_pool, "recall@1": .., ...}; see the module docstring for the
    protocol and the default paths under `root`.
    """
    root = Path(root)
    check_root(root)
    if frames < 1:
        raise ValueError(f"frames: must be >= 1, got {frames}")
    if frame_pool not in FRAME_POOLS:
        raise ValueError(f"frame_pool: expected one of {', '.join(FRAME_POOLS)}, got {frame_pool!r}")
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks: expected positive integers, got {ks}")
    annotation = Path(annotation) if annotation is not None else root / ANNOTATION
    videos = Path(videos) if videos is not None else root / VIDEOS
    # 1. Read and check everything before embedding: the CSV, every video's presence, the decoder.
    triplets = read_annotation(annotation, scores=frame_pool == "query")
    check_root(videos)
    found = resolve_videos(triplets, videos, annotation)
    check_decoder(found)
    pool = [t.target for t in triplets]  # one target per row (read_annotation checks it), in row order
    # 2. Which frames: the middle one of each query video; each target's frames and their weights.
    counts = {pth: count_frames(found[pth]) for pth in dict.fromkeys([t.query for t in triplets] + pool)}
    middle = {t.query: middle_index(counts[t.query]) for t in triplets}
    spread = {t.target: target_frames(t, counts[t.target], frames=frames, frame_pool=frame_pool,
                                      annotation=annotation) for t in triplets}
    wanted: dict[str, set[int]] = {}
    for pth, i in middle.items():
        wanted.setdefault(pth, set()).add(i)
    for pth, (idx, _) in spread.items():
        wanted.setdefault(pth, set()).update(idx)
    if progress:
        n_frames = sum(len(v) for v in wanted.values())
        print(f"CoVR: {len(triplets)} queries, {len(pool)} target videos, {n_frames} frames to embed", file=sys.stderr)
    # 3. Embed frames and edit texts; fuse queries; pool targets.
    emb = embed_video_frames(embedder, {p: (found[p], sorted(i)) for p, i in wanted.items()},
                             batch_size=batch_size, progress=progress)
    edits = list(dict.fromkeys(t.edit for t in triplets))
    text_emb = _checked(embedder.embed_texts(edits, batch_size=batch_size), len(edits), "embed_texts")
    text_of = dict(zip(edits, text_emb, strict=True))
    q_emb = fuse(np.stack([emb[(t.query, middle[t.query])] for t in triplets]),
                 np.stack([text_of[t.edit] for t in triplets]))  # (nq, D)
    pooled = []
    for pth in pool:
        idx, w = spread[pth]
        pooled.append(w @ l2_normalize(np.stack([emb[(pth, i)] for i in idx])))  # (k,) @ (k, D) -> (D,)
    t_emb = l2_normalize(np.stack(pooled).astype(np.float32))  # (m, D)
    # 4. Rank, without each query's own video.
    scores = q_emb @ t_emb.T  # (nq, m)
    row_of = {p: i for i, p in enumerate(pool)}
    for qi, t in enumerate(triplets):
        if t.query in row_of:
            scores[qi, row_of[t.query]] = -np.inf
    ranked, _ = topk(scores, max(ks))
    positives = [{row_of[t.target]} for t in triplets]
    result: dict[str, Any] = {"annotation": str(annotation), "queries": len(triplets), "pool": len(pool),
                              "frames": frames, "frame_pool": frame_pool}
    result |= {f"recall@{k}": 100.0 * recall_at_k(ranked, positives, k) for k in ks}
    return result


def format_table(result: dict[str, Any]) -> str:
    metrics = [m for m in result if m.startswith("recall@")]
    targets = (f"mean of {result['frames']} frames" if result.get("frame_pool") == "mean"
               else "frames weighted by softmax(scores / 0.1)")
    return "\n".join([
        f"CoVR: {result['queries']} queries (middle frame + edit text) against {result['pool']} target videos "
        f"({targets}), recall (%)",
        "  ".join(f"{'R@' + m[len('recall@'):]:>7}" for m in metrics),
        "  ".join(f"{result[m]:>7.2f}" for m in metrics),
    ])

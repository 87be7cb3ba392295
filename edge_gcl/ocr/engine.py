"""`OcrEngine`: the words in a photo, with PP-OCR's detector, angle classifier and recogniser on
edge-gcl's own ONNX Runtime sessions (CPU, or the Hexagon NPU through `edge_gcl.qnn_ep`).

The graphs and their contract (`contract.py`) come from an artifacts folder built by
`python -m export.compile` (float, QDQ and EPContext forms, the dictionary beside them), or, where
the `[export]` extra is installed, straight from the rapidocr wheel's float models
(`OcrEngine.from_package`). No OCR library runs at all: what PP-OCR's own pipeline does with OpenCV,
Shapely and pyclipper is a few hundred lines of numpy and Pillow here (`boxes.py`).

`read(photo)`, step by step:

1. Decode upright (`transform.decoded`: EXIF orientation applied, HEIC, JPEG at reduced scale; the
   decoding memory counts against the process's budget until the photo is read).
2. Gate: the detector on the photo letterboxed into `gate_size` (a cheap pass; 320 px costs a
   quarter of 640). No text region: stop, the photo has no text (most photos end here). A region
   whose short side is over `max_box_height` of the input is a flat area (sky, wall), not text.
3. Detect at `det_size` (letterboxed, fixed, as the NPU needs): DB probability map -> boxes
   (`boxes.find_boxes`), mapped back to the photo's pixels. A long image (a screenshot) is detected
   in about square tiles (`tile_ratio`), so its text keeps its size; a tile where the gate saw no
   text is skipped, and on the CPU only the part of a tile around the gate's text is detected.
4. Crop each box upright (a tall box is a line rotated by 90 or 270 degrees: turned by 90), then
   the angle classifier says whether it is upside down (180): turned if it is sure (> 0.9).
5. Recognise: each crop resized to `rec_height` and cut at blank columns into pieces of at most
   `rec_width` (one fixed shape for every line: long lines are split between words), CTC-decoded
   with the dictionary (index 0 the blank, the last a space). On the CPU, where the float graphs
   take any size, a piece is read at its own width (grouped by width), not padded to `rec_width`.
6. Lines in reading order (top to bottom, left to right on a line), pieces with a score under
   `min_line_score` dropped.

Channel order: PP-OCR was trained on OpenCV's BGR images, so every graph is fed BGR.

`read_many` reads `workers` photos at once (on the CPU one per core, each graph run on one thread).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..transform import ImageDecodeError, decoded, load_image
from .boxes import crop, find_boxes, reading_order
from .contract import DEFAULT_CONFIG, GRAPHS, OcrConfig, OcrFiles, package_files, read_dictionary

if TYPE_CHECKING:
    import onnxruntime as ort

TILE_OVERLAP = 0.1  # of a tile's share, on each side: more than a line of text
DET_MULTIPLE = 32  # a detector that takes any size is fed the image padded to a multiple of this (DB's stride)
NEAR_MARGIN = 0.1  # of a tile's long side: how far beyond the gate's text the detector looks (`detect`)
# a recogniser that takes any width reads pieces this many at a time, sorted by width, each group
# padded to its widest (a multiple of REC_MULTIPLE, the graph's stride along the line; never under
# REC_MIN_WIDTH): on the CPU its cost is linear in the width, so blank padding was most of a short line's
REC_GROUP = 8
REC_MULTIPLE = 8
REC_MIN_WIDTH = 64
CPU_WORKERS = 4  # at most this many photos read at once on the CPU (`OcrEngine.workers`)


@dataclass(frozen=True)
class OcrLine:
    text: str
    score: float  # mean CTC confidence of its characters
    box: tuple[tuple[float, float], ...]  # 4 corners (x, y) in the upright photo's pixels, as read:
    # box[0] -> box[1] along the text, box[0] -> box[3] from its top to its bottom


@dataclass
class OcrResult:
    lines: list[OcrLine] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)  # per step: gate, det, cls, rec

    @property
    def text(self) -> str:
        """The lines in reading order, one row of text a line; boxes on one row joined by a space.
        Rows run along the photo's dominant reading direction (a photo rotated by 90 degrees reads
        in its own frame)."""
        if not self.lines:
            return ""
        boxes = np.array([ln.box for ln in self.lines], np.float64)  # (N, 4, 2), reading order
        along = boxes[:, 1] - boxes[:, 0]
        d = (along / np.maximum(np.linalg.norm(along, axis=1, keepdims=True), 1e-9)).sum(0)
        d = d / max(float(np.linalg.norm(d)), 1e-9)  # the dominant reading direction
        centers = boxes.mean(1)  # (N, 2)
        x = centers @ d
        y = centers @ np.array([-d[1], d[0]])  # across the text, downwards as read
        heights = np.linalg.norm(boxes[:, 3] - boxes[:, 0], axis=1)
        rows: list[list[int]] = []
        for i in np.argsort(y, kind="stable"):
            if rows and abs(y[rows[-1][0]] - y[i]) < 0.5 * max(heights[i], heights[rows[-1][0]]):
                rows[-1].append(int(i))
            else:
                rows.append([int(i)])
        return "\n".join(" ".join(self.lines[i].text for i in sorted(r, key=lambda i: x[i])) for r in rows)


class OcrEngine:
    """Reads the text in photos. `graphs` maps each of `contract.GRAPHS` to an ONNX file (a float
    graph may serve both "gate" and "det"); `provider` "cpu" or "qnn" (the NPU: QDQ or EPContext
    graphs, fixed shapes, CPU fallback disabled)."""

    def __init__(
        self,
        graphs: OcrFiles,
        *,
        config: OcrConfig = DEFAULT_CONFIG,
        provider: str = "cpu",
        qnn_target: dict[str, int | None] | None = None,
        threads: int = 0,
        workers: int = 0,
        description: str = "",
    ) -> None:
        self.config = config
        self.provider = provider
        self.files = graphs
        # photos `read_many` reads at once: on the CPU one per core, each graph on one thread (ONNX
        # Runtime spends ~13% more CPU time per photo spreading one run over 2 threads, and the
        # numpy and Pillow steps between runs keep a core busy only with a photo of their own);
        # on the NPU one at a time
        self.workers = workers or (1 if provider == "qnn" else max(1, min(CPU_WORKERS, _cores())))
        threads = threads or (1 if self.workers > 1 else 0)
        self.characters = ["", *read_dictionary(graphs.dictionary), " "]  # CTC: 0 blank, then the dictionary, space
        self.description = description
        sessions: dict[Path, Any] = {}

        def session(path: Path) -> ort.InferenceSession:
            if path not in sessions:
                sessions[path] = _open_session(path, provider=provider, qnn_target=qnn_target, threads=threads)
            return sessions[path]

        self._sessions = {name: session(getattr(graphs, name)) for name in GRAPHS}
        for name, s in self._sessions.items():
            shape = s.get_inputs()[0].shape
            if provider == "qnn" and not all(isinstance(d, int) for d in shape):
                raise ValueError(f"{getattr(graphs, name)}: the {name} graph has dynamic dims {shape}; the NPU needs fixed ones")
        # graphs whose input width (and height) may vary: the float graphs on the CPU. They are fed
        # just the pixels that hold the image (no letterbox padding, no blank tail after a short line),
        # which costs less; fixed graphs (QDQ, EPContext: the NPU) get their one shape.
        self._any_size = {name: not isinstance(s.get_inputs()[0].shape[3], int) for name, s in self._sessions.items()}

    @classmethod
    def from_package(cls, *, config: OcrConfig = DEFAULT_CONFIG, threads: int = 0, workers: int = 0) -> OcrEngine:
        """The float PP-OCR graphs of the rapidocr wheel (the `[export]` extra), on the CPU."""
        return cls(package_files(), config=config, threads=threads, workers=workers,
                   description="PP-OCR float32 on ONNX Runtime CPU")

    def __repr__(self) -> str:
        return f"OcrEngine({self.description or self.files.det}, provider={self.provider!r})"

    # --- the steps ---------------------------------------------------------------------------

    def read(self, photo: str | Path | Image.Image) -> OcrResult:
        """The text in one photo (a path or a PIL image). Raises ImageDecodeError naming a bad file.

        A file is decoded twice at most: first just large enough for the gate (a 12 MP JPEG at 1/8
        scale), then, only when the gate finds text, large enough for the detector. Each decoded image
        is read inside its `decoded` block, so its memory counts against the process's decoding budget
        until the read is done (photos read in several threads stay under it together), and one block
        ends before the next begins (a thread never holds two reservations)."""
        if isinstance(photo, Image.Image):
            return self.read_image(load_image(photo))
        cfg = self.config
        if not cfg.gate_size:
            with decoded(photo, draft_size=cfg.det_size) as image:
                return self.read_image(image)
        t = time.perf_counter()
        with decoded(photo, draft_size=cfg.gate_size) as small:
            gate = self.detect(small, size=cfg.gate_size, graph="gate", split=_long_side(small))
            if not gate:
                return OcrResult(timings_ms={"gate": (time.perf_counter() - t) * 1e3})
            gate_ms = (time.perf_counter() - t) * 1e3
            if max(small.size) >= cfg.det_size:
                return self._read_gated(small, gate, gate_ms)
            small_width = small.width
        with decoded(photo, draft_size=cfg.det_size) as image:
            return self._read_gated(image, [(b * (image.width / small_width), sc) for b, sc in gate], gate_ms)

    def _read_gated(self, image: Image.Image, gate: list[tuple[np.ndarray, float]], gate_ms: float) -> OcrResult:
        result = self.read_image(image, gated=True, split=self.tile_axis(image, gate), near=[b for b, _ in gate])
        result.timings_ms["gate"] = gate_ms
        return result

    def read_image(
        self, image: Image.Image, *, gated: bool = False, split: str | None = None, near: list[np.ndarray] | None = None
    ) -> OcrResult:
        """The text in an upright RGB image (`gated`: the gate already found text in it, `split` is
        where the detector may tile it and `near` the gate's boxes in the image's pixels, `detect`)."""
        cfg, result = self.config, OcrResult()
        t = time.perf_counter()
        if cfg.gate_size and not gated:
            boxes = self.detect(image, size=cfg.gate_size, graph="gate", split=_long_side(image))
            result.timings_ms["gate"] = (time.perf_counter() - t) * 1e3
            if not boxes:
                return result
            split, near = self.tile_axis(image, boxes), [b for b, _ in boxes]
            t = time.perf_counter()
        boxes = self.detect(image, size=cfg.det_size, graph="det", split=split, near=near)
        result.timings_ms["det"] = (time.perf_counter() - t) * 1e3
        if not boxes:
            return result
        boxes = boxes[: cfg.max_lines]
        t = time.perf_counter()
        cut = [crop(image, box) for box, _ in boxes]
        flipped = self.upside_down([c for c, _ in cut])
        crops = [c.transpose(Image.Transpose.ROTATE_180) if f else c for (c, _), f in zip(cut, flipped, strict=True)]
        result.timings_ms["cls"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        for (box, _), (_, turned), f, (text, score) in zip(boxes, cut, flipped, self.recognize(crops), strict=True):
            text = " ".join(text.split())
            if text and score >= cfg.min_line_score:
                corners = reading_order(box, turned=turned, flipped=f)
                result.lines.append(OcrLine(text, score, tuple((float(x), float(y)) for x, y in corners)))
        result.timings_ms["rec"] = (time.perf_counter() - t) * 1e3
        return result

    def read_many(self, photos: Sequence[str | Path]) -> list[OcrResult | str]:
        """`read` per photo, `workers` photos at once, in order; a photo that cannot be decoded gives
        the reason (a str) instead."""

        def one(p: str | Path) -> OcrResult | str:
            try:
                return self.read(p)
            except (ImageDecodeError, OSError) as e:
                return str(e)

        if self.workers == 1 or len(photos) < 2:
            return [one(p) for p in photos]
        with ThreadPoolExecutor(min(self.workers, len(photos))) as pool:  # ONNX Runtime, numpy, Pillow free the GIL
            return list(pool.map(one, photos))

    def detect(
        self, image: Image.Image, *, size: int, graph: str = "det", split: str | None = None,
        near: list[np.ndarray] | None = None,
    ) -> list[tuple[np.ndarray, float]]:
        """Text boxes (4, 2) in `image`'s pixels, with their scores: the detector on the image
        letterboxed into size x size.

        `split` "y" (or "x"): an image more than `tile_ratio` times taller than wide (wider than tall)
        is cut into about square tiles along y (x), overlapping by TILE_OVERLAP, each detected at
        `size`, so the text of a phone screenshot (1080 x 2340) is not shrunk to nothing; a box is
        kept by the tile whose own share holds its centre. Cut across the lines of text only: a line
        running along the cut would be cut with it (`tile_axis` picks it from the gate's boxes).

        `near`: where the gate found text (boxes in `image`'s pixels). A tile with none of it is not
        detected; on a graph that takes any size, only the part of the tile around them (NEAR_MARGIN
        of the tile's long side beyond their bounds) is, at the scale of the whole tile: the text
        keeps its size and the blank rest of a screenshot costs nothing."""
        cfg = self.config
        axis = {"x": 0, "y": 1}.get(split or "", None)
        long, short = (image.size[axis], image.size[1 - axis]) if axis is not None else (0, 1)
        tiles = max(1, round(long / short)) if axis is not None and long > cfg.tile_ratio * short else 1
        step = long / tiles
        any_size = self._any_size[graph]
        out = []
        for i in range(tiles):
            bounds = np.array([0, 0, image.width, image.height])  # x0, y0, x1, y1 of the tile
            if tiles > 1:
                bounds[axis] = max(0, int((i - TILE_OVERLAP) * step))
                bounds[axis + 2] = min(long, int((i + 1 + TILE_OVERLAP) * step))
            scale = size / max(bounds[2] - bounds[0], bounds[3] - bounds[1])
            if near is not None:
                inside = [b for b in near if (b.min(0) < bounds[2:]).all() and (b.max(0) > bounds[:2]).all()]
                if not inside:
                    continue  # the gate saw no text here
                if any_size:
                    margin = NEAR_MARGIN * max(bounds[2] - bounds[0], bounds[3] - bounds[1])
                    pts = np.concatenate(inside)  # (4 N, 2)
                    bounds = np.concatenate([np.maximum(bounds[:2], np.floor(pts.min(0) - margin)),
                                             np.minimum(bounds[2:], np.ceil(pts.max(0) + margin))]).astype(int)
            part = image if (bounds == [0, 0, image.width, image.height]).all() else image.crop(tuple(int(v) for v in bounds))
            shift = bounds[:2].astype(np.float32)
            x, scale, (w, h) = det_input(part, size, multiple=DET_MULTIPLE if any_size else None, scale=scale if any_size else None)
            prob = self._run(graph, x)[0, 0, :h, :w]  # (h, w)
            boxes = find_boxes(prob, threshold=cfg.threshold, box_threshold=cfg.box_threshold,
                               unclip_ratio=cfg.unclip_ratio, max_height=cfg.max_box_height * size)  # fmt: skip
            for box, score in boxes:
                box = box / scale + shift
                if tiles > 1 and not (i * step <= float(box[:, axis].mean()) < (i + 1) * step):
                    continue  # the neighbouring tile's
                out.append((np.clip(box, 0, [image.width - 1, image.height - 1]).astype(np.float32), score))
        return out

    def tile_axis(self, image: Image.Image, boxes: list[tuple[np.ndarray, float]]) -> str | None:
        """Where a long image may be cut into tiles: across its lines of text ("y" when most boxes,
        by area, run along x), if that is its long side; else None."""
        if not boxes:
            return None
        along_x = sum(float(np.ptp(b[:, 0]) * np.ptp(b[:, 1])) for b, _ in boxes if np.ptp(b[:, 0]) >= np.ptp(b[:, 1]))
        total = sum(float(np.ptp(b[:, 0]) * np.ptp(b[:, 1])) for b, _ in boxes)
        axis = "y" if along_x >= total / 2 else "x"
        tall = image.height >= image.width
        return axis if (axis == "y") == tall else None

    def upside_down(self, crops: list[Image.Image]) -> list[bool]:
        """Which crops are upside down. The angle classifier sees each line's central cls_width
        columns at rec_height (a long line squeezed into them would be unreadable); a line is turned
        when the classifier is sure (> cls_threshold), or leans that way (> 0.5) and most of the
        photo's text (by width) does: the lines of one photo mostly share its orientation."""
        if not crops:
            return []
        cfg = self.config
        x = np.stack([cls_input(c, cfg.rec_height, cfg.cls_width) for c in crops])  # (N, 3, 48, 192)
        p180 = self._run("cls", x)[:, 1]  # (N,)
        widths = np.array([c.width / c.height for c in crops])
        photo_flipped = float((widths * (p180 > 0.5)).sum()) > 0.5 * float(widths.sum())
        return [bool(p > cfg.cls_threshold or (photo_flipped and p > 0.5)) for p in p180]

    def recognize(self, crops: list[Image.Image]) -> list[tuple[str, float]]:
        """(text, score) per upright line crop: pieces of at most rec_width, CTC-decoded, joined."""
        cfg = self.config
        pieces: list[np.ndarray] = []
        owner: list[tuple[int, str]] = []  # (crop index, what joins it to the previous piece)
        fixed = not self._any_size["rec"]
        for i, c in enumerate(crops):
            for piece, joint in rec_inputs(c, cfg.rec_height, cfg.rec_width, pad=fixed):
                pieces.append(piece)
                owner.append((i, joint))
        texts = [""] * len(crops)
        scores: list[list[float]] = [[] for _ in crops]
        for (i, joint), (text, conf) in zip(owner, self.read_pieces(pieces), strict=True):
            texts[i] = f"{texts[i]}{joint}{text}" if texts[i] else text
            scores[i] += conf
        return [(t, float(np.mean(s)) if s else 0.0) for t, s in zip(texts, scores, strict=True)]

    def read_pieces(self, pieces: list[np.ndarray]) -> list[tuple[str, list[float]]]:
        """(text, confidences) per line piece (3, rec_height, w). A fixed graph (the NPU's) reads
        them at its one width (`rec_inputs` padded them); a graph that takes any width reads them
        sorted by width, REC_GROUP at a time, each group padded to its widest piece (rounded up to
        REC_MULTIPLE): a short line no longer costs a full rec_width of blank."""
        if not pieces:
            return []
        if not self._any_size["rec"]:
            return self.decode(self._run("rec", np.stack(pieces)))  # (P, 3, H, rec_width) -> (P, T, C)
        out: list[tuple[str, list[float]]] = [("", [])] * len(pieces)
        order = sorted(range(len(pieces)), key=lambda j: pieces[j].shape[2])
        for start in range(0, len(order), REC_GROUP):
            group = order[start : start + REC_GROUP]
            width = -(-max(pieces[j].shape[2] for j in group) // REC_MULTIPLE) * REC_MULTIPLE
            x = np.zeros((len(group), *pieces[group[0]].shape[:2], width), np.float32)  # (G, 3, H, width)
            for row, j in enumerate(group):
                x[row, :, :, : pieces[j].shape[2]] = pieces[j]
            for j, decoded in zip(group, self.decode(self._run("rec", x)), strict=True):
                out[j] = decoded
        return out

    def decode(self, probs: np.ndarray) -> list[tuple[str, list[float]]]:
        """Greedy CTC: (P, T, C) probabilities -> (text, per-character confidences) per row."""
        best, conf = probs.argmax(axis=2), probs.max(axis=2)  # (P, T)
        out = []
        for ids, cs in zip(best, conf, strict=True):
            keep = np.ones(len(ids), bool)
            keep[1:] = ids[1:] != ids[:-1]
            keep &= ids != 0
            out.append(("".join(self.characters[i] for i in ids[keep] if i < len(self.characters)), cs[keep].tolist()))
        return out

    def _run(self, graph: str, x: np.ndarray) -> np.ndarray:
        """Run one graph on (N, ...) rows: all at once on a dynamic batch, else its fixed batch at a time."""
        s = self._sessions[graph]
        inp = s.get_inputs()[0]
        batch = inp.shape[0]
        if isinstance(batch, int) and batch > 0 and len(x) != batch:
            outs = []
            for start in range(0, len(x), batch):
                part = x[start : start + batch]
                if len(part) < batch:
                    part = np.concatenate([part, np.zeros((batch - len(part), *part.shape[1:]), part.dtype)])
                outs.append(s.run(None, {inp.name: part})[0][: min(batch, len(x) - start)])
            return np.concatenate(outs)
        return s.run(None, {inp.name: np.ascontiguousarray(x, np.float32)})[0]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _long_side(image: Image.Image) -> str:
    return "y" if image.height >= image.width else "x"


def det_input(
    image: Image.Image, size: int, *, multiple: int | None = None, scale: float | None = None
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The detector's input: `image` letterboxed into size x size (top-left, zero padding) ->
    ((1, 3, size, size) float32 BGR in [-1, 1], the scale applied, the (w, h) it covers).
    `multiple`: pad only up to the next multiple of it instead (a graph that takes any size; DB
    needs a multiple of 32): (1, 3, ceil(h), ceil(w)); `scale` then shrinks the image by that
    (at most size / its long side) rather than to fill `size`."""
    scale = min(scale or 1e9, size / max(image.size))
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    small = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR), np.float32)  # (h, w, 3) RGB
    H, W = (size, size) if multiple is None else (-(-h // multiple) * multiple, -(-w // multiple) * multiple)
    x = np.zeros((1, 3, H, W), np.float32)  # zero = mid-grey after normalising
    x[0, :, :h, :w] = (small[:, :, ::-1] * (2 / 255.0) - 1.0).transpose(2, 0, 1)  # BGR in [-1, 1]
    return x, scale, (w, h)


def cls_input(image: Image.Image, height: int, width: int) -> np.ndarray:
    """A line crop at `height`, its central `width` columns (all of it if narrower) ->
    (3, height, width) float32 BGR in [-1, 1], zero-padded on the right."""
    w = max(1, math.ceil(height * image.width / image.height))
    line = np.asarray(image.resize((w, height), Image.Resampling.BILINEAR), np.float32)  # (H, w, 3) RGB
    start = max(0, (w - width) // 2)
    return _pad(line[:, start : start + width], width)


def rec_inputs(image: Image.Image, height: int, width: int, *, pad: bool = True) -> list[tuple[np.ndarray, str]]:
    """A line crop -> pieces (3, height, width) for the recogniser, each with what joins it to the
    previous one ("" or " "). A line that fits is one piece; a longer one is cut at the blankest
    column of the last 40% of each window (between words, where there is a gap), so every piece
    has the recogniser's one fixed width. `pad=False`: each piece as wide as its pixels (at most
    `width`), for a graph that takes any width."""
    w = max(1, math.ceil(height * image.width / image.height))
    line = np.asarray(image.resize((w, height), Image.Resampling.BILINEAR), np.float32)  # (H, w, 3) RGB
    if w <= width:
        return [(_pad(line, width if pad else max(w, REC_MIN_WIDTH)), "")]
    gray = line.mean(axis=2)  # (H, w)
    ink = np.abs(gray - np.median(gray)).mean(axis=0)  # (w,): how much each column differs from the paper
    blank = ink < 0.1 * max(float(ink.max()), 1e-6)
    ink = np.convolve(ink, np.ones(5) / 5, mode="same")  # cut in the middle of a gap, not beside a stroke
    pieces, start, joint = [], 0, ""
    while w - start > width:
        lo, hi = start + int(0.6 * width), start + width
        cut = lo + int(np.argmin(ink[lo:hi]))
        pieces.append((_pad(line[:, start:cut], width if pad else max(cut - start, REC_MIN_WIDTH)), joint))
        left, right = cut, cut  # the blank run around the cut: a gap between words is wide
        while left > start and blank[left - 1]:
            left -= 1
        while right < w - 1 and blank[right + 1]:
            right += 1
        joint = " " if blank[cut] and right - left + 1 >= 0.2 * height else ""
        start = cut
    pieces.append((_pad(line[:, start:], width if pad else max(w - start, REC_MIN_WIDTH)), joint))
    return pieces


def _pad(rgb: np.ndarray, width: int) -> np.ndarray:
    """(H, w, 3) RGB 0..255 -> (3, H, width) BGR in [-1, 1], zero-padded on the right."""
    h, w = rgb.shape[:2]
    out = np.zeros((3, h, width), np.float32)
    out[:, :, :w] = (rgb[:, :, ::-1] * (2 / 255.0) - 1.0).transpose(2, 0, 1)
    return out


def _open_session(
    path: Path, *, provider: str, qnn_target: dict[str, int | None] | None, threads: int
) -> ort.InferenceSession:
    if provider == "qnn":
        from ..qnn_ep import qnn_session

        return qnn_session(path, threads=threads, **(qnn_target or {}))
    if provider != "cpu":
        raise ValueError(f"provider {provider!r}: expected cpu or qnn")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

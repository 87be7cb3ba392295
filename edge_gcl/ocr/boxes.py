"""Text boxes from a DB probability map, and their crops: numpy + Pillow, no OpenCV.

PP-OCR's detector (DB, "Differentiable Binarization") outputs a per-pixel text probability. Its
usual post-processing (OpenCV contours, Shapely and pyclipper polygon offsetting) is replaced here by:

1. `components`: 8-connected components of `prob > threshold`, labelled over horizontal runs
   (a union of touching runs in numpy: a few thousand runs even on a text-heavy screenshot);
2. `min_area_rect`: each component's minimum-area rectangle (rotating calipers on the convex hull
   of its run end points), kept if the mean probability over the component is >= `box_threshold`;
3. `unclip`: the rectangle grown by DB's offset d = area * ratio / perimeter on every side (what
   pyclipper does to a rectangle, minus the rounded corners);
4. `crop`: the rectangle cut out of the photo upright (a perspective `Image.transform`), turned by
   90 degrees when it is tall (a line of text in a photo rotated by 90 or 270 degrees).

Coordinates are (x, y) pixels; a box is (4, 2) float32 corners in the order top-left, top-right,
bottom-right, bottom-left of the text as read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

TALL_RATIO = 1.5  # a crop this much taller than wide is a rotated line: turned by 90 degrees


@dataclass(frozen=True)
class Component:
    points: np.ndarray  # (P, 2) float32: each row's outer pixel corners, enough for the hull
    score: float  # mean probability over the component's pixels
    pixels: int


def components(prob: np.ndarray, threshold: float, *, min_score: float = 0.0) -> list[Component]:
    """8-connected components of `prob > threshold` whose mean probability is at least `min_score`.
    `prob` (H, W) float32 in [0, 1].

    Labelled over horizontal runs, all in numpy: the runs of consecutive rows that touch (diagonally
    included) are edges of a graph, whose components are found by hooking roots and halving paths
    until no edge joins two trees (a few rounds). A text-heavy 640 px map has thousands of runs and,
    on a detector fed just the image (no letterbox), hundreds of faint specks, which a Python loop
    per run or per speck made the slowest part of reading a screenshot."""
    mask = prob > threshold
    if not mask.any():
        return []
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)  # (H, W + 1): +1 where a run starts, -1 one past where it ends
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # row-major order on both: the i-th start pairs with the i-th end
    n = len(rows)
    # run a (row r) touches run b (row r + 1) when starts[b] <= ends[a] and ends[b] >= starts[a]
    # (ends exclusive: a run starting just past a's last pixel touches it diagonally); runs are
    # sorted row-major, so b ranges over one slice found by binary search on global keys
    stride = w + 2
    start_key = rows.astype(np.int64) * stride + starts
    end_key = rows.astype(np.int64) * stride + ends
    next_row = (rows.astype(np.int64) + 1) * stride
    lo = np.searchsorted(end_key, next_row + starts, side="left")
    hi = np.searchsorted(start_key, next_row + ends, side="right")
    counts = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), counts)
    b = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
    parent = np.arange(n)
    while True:
        pa, pb = parent[a], parent[b]
        apart = pa != pb
        if not apart.any():
            break
        a, b, pa, pb = a[apart], b[apart], pa[apart], pb[apart]
        np.minimum.at(parent, np.maximum(pa, pb), np.minimum(pa, pb))  # hook the larger root under the smaller
        while True:  # flatten: every run points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    # mean probability over each component: per-run sums from a row-wise cumulative sum
    cum = np.zeros((h, w + 1), np.float64)
    np.cumsum(prob, axis=1, out=cum[:, 1:])
    run_sum = cum[rows, ends] - cum[rows, starts]
    run_len = ends - starts
    labels, inverse = np.unique(parent, return_inverse=True)
    sums = np.bincount(inverse, run_sum, len(labels))
    pixels = np.bincount(inverse, run_len, len(labels))
    keep = np.flatnonzero(sums >= min_score * pixels)  # the mean, without dividing
    if not len(keep):
        return []
    kept = np.isin(inverse, keep)
    order = np.flatnonzero(kept)[np.argsort(inverse[kept], kind="stable")]  # by component, then row-major
    comp, row = inverse[order], rows[order]
    # a row's leftmost start and rightmost end are all of it the hull can touch
    first = np.flatnonzero(np.r_[True, (comp[1:] != comp[:-1]) | (row[1:] != row[:-1])])  # (G,) per (component, row)
    last = np.r_[first[1:], len(order)] - 1
    r = row[first].astype(np.float32)
    s, e = starts[order[first]].astype(np.float32), ends[order[last]].astype(np.float32)
    corners = np.stack([np.stack([s, r], 1), np.stack([e, r], 1), np.stack([s, r + 1], 1), np.stack([e, r + 1], 1)], 1)  # (G, 4, 2)
    bounds = np.searchsorted(comp[first], keep, side="left")
    out = []
    for c, lo_c, hi_c in zip(keep, bounds, [*bounds[1:], len(first)], strict=True):
        out.append(Component(corners[lo_c:hi_c].reshape(-1, 2), float(sums[c] / pixels[c]), int(pixels[c])))
    return out


def convex_hull(points: np.ndarray) -> np.ndarray:
    """(P, 2) -> (K, 2) hull corners, counter-clockwise (Andrew's monotone chain, each chain pruned
    in numpy: every corner that does not turn left is dropped, round after round, until all do)."""
    pts = np.unique(points, axis=0)  # sorted by x, then y
    if len(pts) < 3:
        return pts

    def chain(seq: np.ndarray) -> np.ndarray:
        while len(seq) > 2:
            a, b, c = seq[:-2], seq[1:-1], seq[2:]
            turn = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
            left = turn > 0
            if left.all():
                break
            seq = np.concatenate([seq[:1], b[left], seq[-1:]])
        return seq

    lower, upper = chain(pts), chain(pts[::-1])
    return np.concatenate([lower[:-1], upper[:-1]]).astype(np.float32)


def min_area_rect(points: np.ndarray) -> np.ndarray:
    """The minimum-area rectangle around `points` (P, 2): its (4, 2) corners."""
    hull = convex_hull(points)
    if len(hull) < 3:
        lo, hi = points.min(0), points.max(0)
        return np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]], np.float32)
    edges = np.roll(hull, -1, axis=0) - hull  # (K, 2)
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2))  # (A,)
    cos, sin = np.cos(angles), np.sin(angles)
    # hull in each candidate frame: u along the edge, v across it; (A, K)
    u = hull[None, :, 0] * cos[:, None] + hull[None, :, 1] * sin[:, None]
    v = -hull[None, :, 0] * sin[:, None] + hull[None, :, 1] * cos[:, None]
    area = (u.max(1) - u.min(1)) * (v.max(1) - v.min(1))
    a = int(np.argmin(area))
    u0, u1, v0, v1 = u[a].min(), u[a].max(), v[a].min(), v[a].max()
    c, s = cos[a], sin[a]
    corners_uv = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
    return np.stack(
        [corners_uv[:, 0] * c - corners_uv[:, 1] * s, corners_uv[:, 0] * s + corners_uv[:, 1] * c], 1
    ).astype(np.float32)


def side_lengths(box: np.ndarray) -> tuple[float, float]:
    """(width, height) of a (4, 2) rectangle: its first edge and its second."""
    return float(np.linalg.norm(box[1] - box[0])), float(np.linalg.norm(box[2] - box[1]))


def unclip(box: np.ndarray, ratio: float) -> np.ndarray:
    """Grow a rectangle by DB's offset d = area * ratio / perimeter on every side."""
    w, h = side_lengths(box)
    if w <= 0 or h <= 0:
        return box
    d = w * h * ratio / (2 * (w + h))
    ex = (box[1] - box[0]) / w * d  # unit vector along the first edge, times d
    ey = (box[3] - box[0]) / h * d
    return np.stack([box[0] - ex - ey, box[1] + ex - ey, box[2] + ex + ey, box[3] - ex + ey]).astype(np.float32)


def order_corners(box: np.ndarray) -> np.ndarray:
    """Corners as top-left, top-right, bottom-right, bottom-left (PaddleOCR's order_points_clockwise:
    the two leftmost are the left side, each side ordered by y)."""
    by_x = box[np.lexsort((box[:, 1], box[:, 0]))]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1])]
    tr, br = right[np.argsort(right[:, 1])]
    return np.stack([tl, tr, br, bl]).astype(np.float32)


def find_boxes(
    prob: np.ndarray,
    *,
    threshold: float,
    box_threshold: float,
    unclip_ratio: float,
    min_size: float = 3.0,
    max_height: float | None = None,
    max_boxes: int = 1000,
) -> list[tuple[np.ndarray, float]]:
    """DB post-processing: (box (4, 2) in `prob`'s pixels, score) per text region, best first.
    `max_height`: regions whose short side is longer are dropped (PP-OCR's detector also lights up
    flat areas of a photo: a sky, a wall; a line of text is a thin strip)."""
    found = []
    for comp in sorted(components(prob, threshold, min_score=box_threshold), key=lambda c: -c.pixels)[:max_boxes]:
        if max_height is not None:  # a strip of short side t and length L has L * t >= pixels, L <= the diagonal
            span = comp.points.max(0) - comp.points.min(0)
            if comp.pixels > float(np.hypot(*span)) * max_height:
                continue  # a flat area, not a line: dropped before its hull (thousands of points)
        rect = min_area_rect(comp.points)
        if min(side_lengths(rect)) < min_size or (max_height is not None and min(side_lengths(rect)) > max_height):
            continue
        grown = unclip(rect, unclip_ratio)
        if min(side_lengths(grown)) < min_size + 2:
            continue
        found.append((order_corners(grown), comp.score))
    return found


def crop(image: Image.Image, box: np.ndarray) -> tuple[Image.Image, bool]:
    """The (4, 2) box of `image` (tl, tr, br, bl) as an upright RGB image, and whether it was turned
    by 90 degrees (counter-clockwise: it was TALL_RATIO times taller than wide)."""
    tl, tr, br, bl = box
    w = max(int(round(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))), 1)
    h = max(int(round(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))), 1)
    quad = (*tl, *bl, *br, *tr)  # PIL's QUAD: upper-left, lower-left, lower-right, upper-right
    out = image.transform((w, h), Image.Transform.QUAD, tuple(float(v) for v in quad), Image.Resampling.BILINEAR)
    if h >= TALL_RATIO * w:
        return out.transpose(Image.Transpose.ROTATE_90), True
    return out, False


def reading_order(box: np.ndarray, *, turned: bool, flipped: bool) -> np.ndarray:
    """The corners of a line's box as read: box[0] -> box[1] runs along the text, box[0] -> box[3]
    from its top to its bottom. `turned`: its crop was turned by 90 degrees counter-clockwise (the
    crop's top-left was the box's top-right); `flipped`: then by 180."""
    tl, tr, br, bl = box
    corners = np.stack([tr, br, bl, tl] if turned else [tl, tr, br, bl])
    return np.roll(corners, -2, axis=0) if flipped else corners

"""Small roots in MMEB-eval's and CoVR's published layouts, for `edge-gcl eval mmeb|covr` (issue 16).

Neither data set can be downloaded here, so the commands are checked end to end on roots written in the
same layouts from the shared Flickr8k photos (dev split) and synthetic clips:

    python -m benchmarks.eval_fixtures --out runs/eval-fixtures      # [--data-root ../shared/data]
    edge-gcl eval mmeb --root runs/eval-fixtures/MMEB-eval --model default
    edge-gcl eval covr --root runs/eval-fixtures/CoVR --model default

What it writes (the layouts `edge_gcl/eval/mmeb.py` and `edge_gcl/eval/covr.py` document):

    <out>/MMEB-eval/MSCOCO_t2i/test-00000-of-00001.parquet    24 rows: an MMEB-worded caption query, 10
                                                              candidate photos (its own first, then the
                                                              next 9 photos of the list, cyclically)
    <out>/MMEB-eval/MSCOCO_i2t/test-00000-of-00001.parquet    24 rows: a photo query, 10 candidate captions
    <out>/MMEB-eval/eval_images/<Task>/<photo>.jpg            the shared photos, copied byte for byte
    <out>/CoVR/annotation/webvid-covr/webvid8m-covr_test.csv  8 rows txt1,txt2,edit,scores,pth1,pth2: clip i
                                                              edited by photo i+1's caption -> clip i+1
    <out>/CoVR/datasets/WebVid/8M/train/<pth>.mp4             8 clips, 20 frames (2 s) each, panning across
                                                              one photo (MPEG-4, written with PyAV)

The CoVR `scores` are placeholders (15 fixed values, one per frame CoVR samples, rounded to 4 places as
CoVR writes them), not BLIP's frame-to-edit similarities. The figures on these roots check that the
commands run on the published layout; they are not comparable with the papers' (the photos are Flickr8k's,
the texts and clips made up here).

Deterministic: the same photos, Pillow, PyArrow and PyAV give the same bytes. Clips need PyAV (the
`[video]` extra); without it only the MMEB root is written. The parquet files need pyarrow (`[mmeb]`).

The writers are the tests' too (tests/test_eval_mmeb.py, test_eval_covr.py, test_eval_fixtures.py): those
call them with tiny hand-tuned settings (placeholder images, solid-colour clips) whose rankings are worked
out by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from edge_gcl.eval.build import SHARED_DATA
from edge_gcl.eval.covr import ANNOTATION, VIDEO_EXTRA, VIDEOS

MMEB_DIR, COVR_DIR = "MMEB-eval", "CoVR"
PARQUET = "test-00000-of-00001.parquet"  # one shard per task, as on the Hub
IMAGES = "eval_images"  # where VLM2Vec's README unzips images.zip
# MMEB's wording of the two MSCOCO tasks (the instructions VLM2Vec's embedders get).
T2I_QUERY = "Find me an everyday image that matches the given caption: {caption}"
I2T_QUERY = "<|image_1|>\nFind an image caption describing the given everyday image."
INSTRUCTION_IMG = "<|image_1|>\nRepresent the given image."
COVR_HEADER = ["txt1", "txt2", "edit", "scores", "pth1", "pth2"]
Colour = tuple[int, int, int]


# --- MMEB ------------------------------------------------------------------------------------------


def mmeb_row(qry_text: str, qry_img: str, tgt: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """One MMEB row: a query and its candidates as (text, image path) pairs, positive first ("" for none)."""
    return {"qry_text": qry_text, "qry_img_path": qry_img, "tgt_text": [t for t, _ in tgt],
            "tgt_img_path": [p for _, p in tgt]}


def write_mmeb_task(root: Path, task: str, rows: Sequence[Mapping[str, Any]], fmt: str = "parquet") -> Path:
    """One task in MMEB-eval's layout: <root>/<task>/test-00000-of-00001.parquet (or, fmt="jsonl", test.jsonl)."""
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path = folder / "test.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("writing MMEB's parquet files needs pyarrow: pip install 'edge-gcl[mmeb]'") from None
    schema = pa.schema([("qry_text", pa.string()), ("qry_img_path", pa.string()),
                        ("tgt_text", pa.list_(pa.string())), ("tgt_img_path", pa.list_(pa.string()))])
    path = folder / PARQUET
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), path)
    return path


def write_placeholder_images(root: Path, names: Sequence[str]) -> None:
    """Grey 4 x 4 PNGs at <root>/eval_images/imgs/<name>, for stand-in embedders that key on the file name."""
    (root / IMAGES / "imgs").mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (4, 4), (128, 128, 128)).save(root / IMAGES / "imgs" / name)


def flickr_photos(flickr: Path, n: int, *, start: int = 0) -> list[tuple[str, str]]:
    """(photo, first caption) of dev photos start .. start+n-1, in name order (flickr8k's splits.json)."""
    dev = sorted(json.loads((flickr / "splits.json").read_text())["dev"])
    if start + n > len(dev):
        raise ValueError(f"{flickr / 'splits.json'}: {len(dev)} dev photos, asked for {start} .. {start + n - 1}")
    first: dict[str, str] = {}
    with open(flickr / "captions.txt", newline="") as f:
        for name, caption in list(csv.reader(f))[1:]:
            first.setdefault(name, caption.strip())
    return [(name, first[name]) for name in dev[start:start + n]]


def write_mmeb_flickr(root: Path, photos: Sequence[tuple[str, str]], images: Path, *, candidates: int | None = None,
                      mislabelled: int = 0) -> list[Path]:
    """MSCOCO_t2i and MSCOCO_i2t in MMEB's wording over `photos` (copied into eval_images/<Task>/).

    Row j's candidates are photo j and the next `candidates - 1` photos of the list, cyclically (default: all
    of them), positive first. In the last `mislabelled` t2i rows the next photo is given as the positive and
    the true one comes second, so a model that ranks the true photo first misses them at 1.
    """
    n = len(photos)
    k = n if candidates is None else candidates
    if not 1 <= k <= n or not 0 <= mislabelled <= n or (mislabelled and k < 2):
        raise ValueError(f"{n} photos: candidates must be in 1..{n} (got {k}), "
                         f"mislabelled in 0..{n} (got {mislabelled})")
    for task in ("MSCOCO_t2i", "MSCOCO_i2t"):
        (root / IMAGES / task).mkdir(parents=True, exist_ok=True)
        for name, _ in photos:
            shutil.copyfile(images / name, root / IMAGES / task / name)
    t2i, i2t = [], []
    for j, (name, caption) in enumerate(photos):
        others = [photos[(j + s) % n] for s in range(1, k)]
        pos = others[0][0] if j >= n - mislabelled else name
        order = [pos] + [o for o in [name] + [o for o, _ in others] if o != pos]
        t2i.append(mmeb_row(T2I_QUERY.format(caption=caption), "",
                            [(INSTRUCTION_IMG, f"MSCOCO_t2i/{o}") for o in order]))
        i2t.append(mmeb_row(I2T_QUERY, f"MSCOCO_i2t/{name}",
                            [(c, "") for c in [caption] + [c for _, c in others]]))
    return [write_mmeb_task(root, "MSCOCO_t2i", t2i), write_mmeb_task(root, "MSCOCO_i2t", i2t)]


# --- CoVR ------------------------------------------------------------------------------------------


def write_video(path: Path, frames: Sequence[Colour | np.ndarray], *, size: int = 32, fps: int = 10) -> Path:
    """An MPEG-4 clip (PyAV; FFmpeg's own codec). A frame is an RGB colour (a solid size x size frame) or an
    (H, W, 3) uint8 array, all of one shape with even sides."""
    try:
        import av
    except ImportError:
        raise ImportError(VIDEO_EXTRA.replace("decoding", "writing")) from None
    pixels = [np.full((size, size, 3), f, np.uint8) if isinstance(f, tuple) else np.asarray(f, np.uint8)
              for f in frames]  # each (H, W, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = pixels[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for rgb in pixels:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(folder: Path, colours: Sequence[Colour], *, size: int = 32) -> Path:
    """A video as a folder of extracted frames: solid size x size PNGs 0001.png, 0002.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(colours):
        Image.new("RGB", (size, size), rgb).save(folder / f"{i + 1:04d}.png")
    return folder


def placeholder_scores(n: int) -> str:
    """A `scores` cell of n per-frame weights (0.2000, 0.2013, ...), as CoVR writes them: a list literal."""
    return "[" + ", ".join(f"{0.2 + 0.0013 * i:.4f}" for i in range(n)) + "]"


def covr_rows(triplets: Sequence[tuple[str, str, str]], scores: str,
              captions: Mapping[str, str] | None = None) -> list[list[str]]:
    """CSV rows (COVR_HEADER's order) of (pth1, edit, pth2) triplets; txt1 / txt2 from `captions` by pth, else
    "caption of <pth>"."""
    def txt(pth: str) -> str:
        return captions[pth] if captions is not None else f"caption of {pth}"

    return [[txt(a), txt(b), edit, scores, a, b] for a, edit, b in triplets]


def write_covr_csv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = COVR_HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def pan_frames(photo: Path, n: int, *, size: tuple[int, int] = (128, 96)) -> list[np.ndarray]:
    """n frames of a window of `size` (W, H) sliding diagonally across the photo (fitted to 1.25 x size)."""
    w, h = size
    fitted = ImageOps.fit(Image.open(photo).convert("RGB"), (w * 5 // 4, h * 5 // 4), Image.Resampling.BILINEAR)
    big = np.asarray(fitted)  # (1.25 H, 1.25 W, 3) uint8
    dx, dy = big.shape[1] - w, big.shape[0] - h
    steps = [i / max(n - 1, 1) for i in range(n)]
    return [big[round(t * dy):round(t * dy) + h, round(t * dx):round(t * dx) + w] for t in steps]  # each (H, W, 3)


def write_covr_photos(root: Path, photos: Sequence[tuple[str, str]], images: Path, *, frames: int = 20,
                      scores: int = 15) -> Path:
    """A CoVR root: one clip per photo (`frames` frames panning across it), and the CSV's row i taking clip i,
    edited by photo i+1's caption, to clip i+1 (cyclically: every clip is a query and a target, as in CoVR
    some are). `scores` placeholder weights per row (CoVR: 15). Returns the CSV's path."""
    if len(photos) < 2 or frames < scores:
        raise ValueError(f"need 2 photos or more (got {len(photos)}) and frames >= scores (got {frames}, {scores})")
    n = len(photos)
    pths = [f"{j // 4 + 1:03d}/{1000 + j}" for j in range(n)]  # <folder>/<video id>
    captions: dict[str, str] = {}
    for j, (name, caption) in enumerate(photos):
        write_video(root / VIDEOS / f"{pths[j]}.mp4", pan_frames(images / name, frames))
        captions[pths[j]] = caption
    triplets = [(pths[j], photos[(j + 1) % n][1], pths[(j + 1) % n]) for j in range(n)]
    return write_covr_csv(root / ANNOTATION, covr_rows(triplets, placeholder_scores(scores), captions))


# --- the command -----------------------------------------------------------------------------------


def build(out: Path, data_root: Path = SHARED_DATA, *, photos: int = 24, candidates: int = 10,
          clips: int = 8) -> dict[str, Path | None]:
    """Write <out>/MMEB-eval (`photos` dev photos) and <out>/CoVR (`clips` clips of the next dev photos).

    Returns the two roots; CoVR's is None when PyAV is missing (nothing of it written).
    """
    flickr = data_root / "flickr8k"
    mmeb = out / MMEB_DIR
    write_mmeb_flickr(mmeb, flickr_photos(flickr, photos), flickr / "images", candidates=candidates)
    try:
        import av  # noqa: F401
    except ImportError:
        return {"mmeb": mmeb, "covr": None}
    covr = out / COVR_DIR
    write_covr_photos(covr, flickr_photos(flickr, clips, start=photos), flickr / "images")
    return {"mmeb": mmeb, "covr": covr}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_fixtures", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/eval-fixtures",
                   help="folder for MMEB-eval/ and CoVR/ (default: %(default)s)")
    p.add_argument("--data-root", default=str(SHARED_DATA), help="holds flickr8k/ (default: %(default)s)")
    p.add_argument("--photos", type=int, default=24, help="MMEB rows per task (default: %(default)s)")
    p.add_argument("--candidates", type=int, default=10, help="MMEB candidates per row (default: %(default)s)")
    p.add_argument("--clips", type=int, default=8, help="CoVR clips and rows (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        roots = build(Path(args.out), Path(args.data_root), photos=args.photos, candidates=args.candidates,
                      clips=args.clips)
    except (ImportError, OSError, ValueError, KeyError) as e:
        print(f"eval_fixtures: error: {e}", file=sys.stderr)
        return 1
    print(f"MMEB-eval: {roots['mmeb']} (MSCOCO_t2i, MSCOCO_i2t: {args.photos} rows of "
          f"{args.candidates} candidates)")
    if roots["covr"] is None:
        print("CoVR: not written, its clips need PyAV: pip install 'edge-gcl[video]'")
    else:
        print(f"CoVR: {roots['covr']} ({args.clips} clips, {args.clips} triplets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

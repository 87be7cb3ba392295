"""Image-caption pairs from the layouts users have: Flickr `captions.txt`, COCO captions, LLaVA LCS-558K.

Every reader returns `Pairs`: one entry per photo with all its captions, plus counts of the rows
it skipped and why (missing image file, empty caption). Bad rows are never fatal.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Pairs:
    images: list[Path] = field(default_factory=list)  # one entry per photo
    captions: list[list[str]] = field(default_factory=list)  # captions[i]: all captions of images[i]
    skipped: Counter = field(default_factory=Counter)  # reason -> rows skipped

    def __len__(self) -> int:
        return len(self.images)

    def extend(self, other: Pairs) -> None:
        self.images += other.images
        self.captions += other.captions
        self.skipped.update(other.skipped)

    def subset(self, names: set[str]) -> Pairs:
        """The photos whose file name is in `names` (a split's list)."""
        keep = [i for i, p in enumerate(self.images) if p.name in names]
        return Pairs([self.images[i] for i in keep], [self.captions[i] for i in keep], Counter(self.skipped))

    def without(self, names: set[str]) -> Pairs:
        """The photos whose file name is not in `names` (a held-out list)."""
        keep = [i for i, p in enumerate(self.images) if p.name not in names]
        return Pairs([self.images[i] for i in keep], [self.captions[i] for i in keep], Counter(self.skipped))


def _group(rows: list[tuple[str, str]], images_dir: Path, source: Path) -> Pairs:
    """(image relative path, caption) rows -> Pairs, skipping and counting bad rows."""
    by_image: dict[str, list[str]] = {}
    skipped: Counter = Counter()
    for name, caption in rows:
        caption = (caption or "").strip()
        if not name:
            skipped["no image name"] += 1
        elif not caption:
            skipped["empty caption"] += 1
        else:
            by_image.setdefault(name, []).append(caption)
    pairs = Pairs(skipped=skipped)
    for name, caps in by_image.items():
        path = images_dir / name
        if not path.is_file():
            pairs.skipped["missing image file"] += len(caps)
            continue
        pairs.images.append(path)
        pairs.captions.append(caps)
    if not pairs.images:
        raise ValueError(f"{source}: no usable image-caption pairs (images looked up in {images_dir})")
    return pairs


def read_flickr(captions_file: str | Path, images_dir: str | Path | None = None) -> Pairs:
    """Flickr8k/30k `captions.txt`: a CSV with header `image,caption`, one row per caption."""
    path = Path(captions_file)
    images = Path(images_dir) if images_dir else path.parent / "images"
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["image", "caption"]:
            raise ValueError(f"{path}: expected a CSV header 'image,caption', got {header!r}")
        rows = [(r[0].strip(), ",".join(r[1:])) if r else ("", "") for r in reader]
    return _group(rows, images, path)


def read_coco(annotations_file: str | Path, images_dir: str | Path) -> Pairs:
    """COCO captions JSON (`captions_train2017.json`): `images[{id, file_name}]`, `annotations[{image_id, caption}]`."""
    path = Path(annotations_file)
    data = _read_json(path)
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise ValueError(f"{path}: not a COCO captions file (needs 'images' and 'annotations')")
    names = {img["id"]: img["file_name"] for img in data["images"]}
    rows = [(names.get(a.get("image_id"), ""), a.get("caption", "")) for a in data["annotations"]]
    return _group(rows, Path(images_dir), path)


def read_llava(json_file: str | Path, images_dir: str | Path) -> Pairs:
    """LLaVA LCS-558K (`blip_laion_cc_sbu_558k.json`): `[{image, conversations: [human, gpt]}]`; the gpt turn is the caption."""
    path = Path(json_file)
    data = _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: not a LLaVA pretraining file (expected a JSON list)")
    rows = []
    for item in data:
        turns = item.get("conversations") or []
        caption = next((t.get("value", "") for t in turns if t.get("from") == "gpt"), "")
        rows.append((item.get("image", ""), caption))
    return _group(rows, Path(images_dir), path)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_pairs(data_file: str | Path, images_dir: str | Path | None = None) -> Pairs:
    """Detect the layout of `data_file` (CSV -> Flickr; JSON dict -> COCO; JSON list -> LLaVA)."""
    path = Path(data_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such captions file")
    if path.suffix.lower() in (".txt", ".csv"):
        return read_flickr(path, images_dir)
    if images_dir is None:
        raise ValueError(f"{path}: give the image folder for this JSON captions file (--images)")
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.read(64).lstrip()[:1]
    return read_coco(path, images_dir) if first == "{" else read_llava(path, images_dir)


def read_split(splits_file: str | Path, split: str) -> set[str]:
    """Photo names of one split of a `splits.json` ({"train": [...], "dev": [...]}; keys starting
    with `_` are comments)."""
    splits = _read_json(Path(splits_file))
    if not isinstance(splits, dict):
        raise ValueError(f"{splits_file}: not a splits file (expected a JSON object of name lists)")
    if split.startswith("_") or split not in splits:
        raise KeyError(f"{splits_file}: no split {split!r} (has {', '.join(k for k in splits if not k.startswith('_'))})")
    if not isinstance(splits[split], list):
        raise ValueError(f"{splits_file}: split {split!r} is not a list of photo names")
    return set(splits[split])


def parse_split_spec(spec: str) -> tuple[Path, str]:
    """`path/to/splits.json:train` -> (path, "train"); the error names the spec."""
    file, sep, split = str(spec).rpartition(":")
    if not sep or not file or not split:
        raise ValueError(f"split {spec!r}: expected FILE:SPLIT, e.g. splits.json:train")
    return Path(file), split

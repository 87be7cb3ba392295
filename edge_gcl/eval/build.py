"""Build mixed-modality M-BEIR benchmarks (UniIR's layout, read by `edge_gcl.eval.mbeir`) from captions folders.

Two layouts, both with UniIR's five tasks of the photo app (t->i, t->t, t->it, i->t, it->t) under split
"test", dataset id 10 (M-BEIR uses 0-9), and these rules in common. Every candidate is distinct content, as
in M-BEIR and in the phone app's index (one item per photo, the photo with its note): each photo appears in
at most one candidate form, so a query meets one form of its photo and the global setting measures modality
bias, not "same photo, other form" collisions. A query photo's image is in no pool, so an image query can
never win by matching its own pixels. No text appears twice (case, punctuation and spacing aside), so no
candidate text equals a query text or another candidate text: a photo is used only if its captions differ
from each other and from every caption of the photos used before it (in shuffled order) and it has the
captions its role needs (one in A_i, two elsewhere); any other is skipped, leaving its group one short, and
listed with the reason in the stats. Caption 0 of a photo is its note, c0. The global pool is the union of
the local pools, in the order images, image+text items, texts. Nothing is copied: image paths are relative to
the root and resolve through symlinks. Same inputs and seed, same bytes.

`build_mbeir`: the flickr8k-dev layout (one captions folder; the benchmark the default model was chosen on).
The photos are shuffled with `seed` and dealt into four disjoint groups: of n photos, B (query photos) takes
the last ceil(n/2); the first floor(n/2) go, in order, to A_i (image candidates), A_it (image+text
candidates) and A_t (text candidates), whose sizes are floor(n/2) // 3 plus one for the first
floor(n/2) % 3 of them (n = 100: A_i 17, A_it 17, A_t 16, B 50):

    file stem                   photos  query                 positive candidate(s)   local pool
    mbeir_flickr8k_task0_test   A_i     each caption          its image               images of A_i
    mbeir_flickr8k_task1_test   A_t     each caption but c0   its c0 (a text)         all text candidates
    mbeir_flickr8k_task2_test   A_it    each caption but c0   its image + c0          image+text items of A_it
    mbeir_flickr8k_task3_test   B       its image             its c1..c4 (texts)      all text candidates
    mbeir_flickr8k_task6_test   B       its image + c0        its c1..c4 (texts)      all text candidates

The text candidates are A_t's notes and B's captions 1..4, so B's captions are the bulk of the text pool
(n = 100: 17 images, 17 image+text items, 216 texts). Image paths are `images/<name>`, `images` a symlink to
the source's image folder.

`build_phone_mbeir`: the phone layout (issue 13), a union pool shaped like a phone library: about 1/4
photos, 1/4 photo+note items and 1/2 notes, one note per photo that carries text. It takes several sources
(a captions folder and the photos to use from it); each source's photos are shuffled with `seed` (one
random stream over the sources in order) and dealt in equal quarters (largest remainder, earlier groups
first) into A_i, A_it, A_t and B, so every group holds the same mix of sources. The text candidates are the
notes of the photos that are neither image candidates nor image queries (A_t, queried by their other
captions) plus the notes of the query photos (B, the positives of the image and image+text queries): one
note per photo, where the flickr8k-dev layout put four of B's captions in the pool. With 4m photos and no
skips the union pool is m images, m image+text items and 2m texts, exactly 1/4 : 1/4 : 1/2:

    file stem                   photos  query                 positive candidate      local pool
    mbeir_phone_task0_test      A_i     each caption          its image               images of A_i
    mbeir_phone_task1_test      A_t     each caption but c0   its c0 (a text)         all text candidates
    mbeir_phone_task2_test      A_it    each caption but c0   its image + c0          image+text items of A_it
    mbeir_phone_task3_test      B       its image             its c0 (a text)         all text candidates
    mbeir_phone_task6_test      B       its image + c1        its c0 (a text)         all text candidates

Every query has exactly one positive, and every photo is in the pool in exactly one form (B's as its
note). Image paths are `images/<source>/<name>`: `images/` is a folder of one
symlink per source, named by the source's label (default: its captions folder's name, e.g. `flickr8k`,
`flickr8k-extra`); `src_content` records the source, the photo and the caption index. The default sources
(`phone_sources()`) are the 100 flickr8k dev photos and the 300 flickr8k-extra photos of the "heldout" split
of `edge_gcl/recipes/flickr8k-extra-splits.json`, which training leaves out: with seed 0, 5 of them are
skipped (repeated captions) and the union pool is 99 images, 98 image+text items and 198 texts.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from ..data import read_flickr, read_split
from .mbeir import MBEIR_TASKS, global_pool_path

BUILD_TASKS = (0, 1, 2, 3, 6)  # the tasks both layouts write
BUILD_SPLIT = "test"
# The photo groups, in dealing order: the candidate form of A_i, A_it, A_t, then B (query photos).
GROUPS = ("image", "image,text", "text", "query")
DATASET_ID = 10  # M-BEIR's datasets take ids 0-9

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"  # ../shared/data beside the repository
EXTRA_SPLITS = REPO / "edge_gcl" / "recipes" / "flickr8k-extra-splits.json"


@dataclass(frozen=True)
class Source:
    """A Flickr-style captions folder (`captions.txt` CSV `image,caption`) and the photos to take from it."""

    captions: Path
    images: Path | None = None  # default: images/ beside captions.txt
    names: tuple[str, ...] | None = None  # default: every photo with a caption and an image file
    label: str | None = None  # its folder under the root's images/ (default: the captions folder's name)

    @property
    def name(self) -> str:
        return self.label or Path(self.captions).parent.name

    @classmethod
    def parse(cls, spec: str) -> Source:
        """"captions.txt" or "captions.txt:splits.json:split" (the photos of that split)."""
        parts = str(spec).split(":")
        if len(parts) == 1:
            return cls(Path(parts[0]))
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"source {spec!r}: expected CAPTIONS or CAPTIONS:SPLITS_FILE:SPLIT")
        captions, splits, split = Path(parts[0]), Path(parts[1]), parts[2]
        return cls(captions, names=tuple(sorted(read_split(splits, split))))


def phone_sources(data_root: str | Path = SHARED_DATA) -> list[Source]:
    """The phone benchmark's default sources: flickr8k's dev split and flickr8k-extra's held-out photos."""
    root = Path(data_root)
    return [
        Source(root / "flickr8k" / "captions.txt", names=tuple(sorted(read_split(root / "flickr8k" / "splits.json", "dev")))),
        Source(root / "flickr8k-extra" / "captions.txt", names=tuple(sorted(read_split(EXTRA_SPLITS, "heldout")))),
    ]


# --- pieces both layouts share ------------------------------------------------------------------


def _norm(text: str) -> str:
    """Comparison key: case, punctuation and spacing ignored."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _link(link: Path, target: Path) -> None:
    """`link` -> `target` (a folder), replacing a symlink that points elsewhere, never a real file."""
    if link.is_symlink():
        if link.resolve() == target:
            return
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link}: exists and is not a symlink; remove it or choose another output folder")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)


def _photos(source: Source) -> tuple[Path, dict[str, list[str]], list[str]]:
    """(resolved image folder, name -> captions, the source's photos in name order), unknown names an error."""
    captions = Path(source.captions)
    images = (Path(source.images) if source.images is not None else captions.parent / "images").resolve()
    pairs = read_flickr(captions, images)
    by_name = {p.relative_to(images).as_posix(): caps for p, caps in zip(pairs.images, pairs.captions, strict=True)}
    if source.names is None:
        return images, by_name, sorted(by_name)
    chosen = sorted(set(source.names))
    unknown = [n for n in chosen if n not in by_name]
    if unknown:
        raise ValueError(f"{captions}: {len(unknown)} requested photos have no caption there or no image file in "
                         f"{images}: {', '.join(unknown[:5])}")
    return images, by_name, chosen


def _check_dataset(dataset: str) -> None:
    if not re.fullmatch(r"[a-z0-9]+", dataset):
        raise ValueError(f"dataset: use lowercase letters and digits (it names the files), got {dataset!r}")


def _skip(order: list[str], captions_of: dict[str, list[str]], group_of: dict[str, str]) -> dict[str, str]:
    """Photos to leave out, with the reason: repeated captions within the photo or with an earlier photo's
    (in `order`), or fewer distinct captions than its group needs (A_i one, the others two)."""
    skipped: dict[str, str] = {}
    taken: set[str] = set()
    for photo in order:
        keys = {_norm(c) for c in captions_of[photo]}
        need = 1 if group_of[photo] == "image" else 2
        if len(keys) < len(captions_of[photo]):
            skipped[photo] = "two of its captions are the same"
        elif keys & taken:
            skipped[photo] = "one of its captions repeats an earlier photo's"
        elif len(keys) < need:
            skipped[photo] = "only one caption, and its group needs a candidate text and a query text"
        else:
            taken |= keys
    return skipped


# task id -> ([(photo, query caption or None, query has the image, positive dids)], local pool dids)
Tasks = dict[int, tuple[list[tuple[str, int | None, bool, list[str]]], list[str]]]


class _Pool:
    """The union pool being built: candidate rows by did ("<DATASET_ID>:<n>"), in insertion order."""

    def __init__(self, captions_of: dict[str, list[str]], image_path: Callable[[str], str],
                 src: Callable[[str, int | None], dict[str, Any]]) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.captions_of, self.image_path, self.src = captions_of, image_path, src

    def add(self, modality: str, photo: str, caption: int | None) -> str:
        did = f"{DATASET_ID}:{len(self.rows) + 1}"
        self.rows[did] = {"txt": None if caption is None else self.captions_of[photo][caption],
                          "img_path": None if modality == "text" else self.image_path(photo), "modality": modality,
                          "did": did, "src_content": json.dumps(self.src(photo, caption))}
        return did


def _write(out: Path, dataset: str, pool: _Pool, tasks: Tasks) -> dict[str, dict[str, Any]]:
    """Query, local pool and qrels files of each task and the union pool; returns per-task stats."""
    stats = {}
    n_queries = 0
    for task_id, (rows, pool_dids) in tasks.items():
        stem = f"mbeir_{dataset}_task{task_id}_{BUILD_SPLIT}"
        q_mod = MBEIR_TASKS[task_id][0]
        queries = []
        for photo, caption, with_image, pos in rows:
            n_queries += 1
            queries.append({
                "qid": f"{DATASET_ID}:{n_queries}",
                "query_txt": None if caption is None else pool.captions_of[photo][caption],
                "query_img_path": pool.image_path(photo) if with_image else None, "query_modality": q_mod,
                "query_src_content": json.dumps(pool.src(photo, caption)),
                "pos_cand_list": pos, "neg_cand_list": [], "task_id": task_id,
            })
        _write_jsonl(out / "query" / BUILD_SPLIT / f"{stem}.jsonl", queries)
        _write_jsonl(out / "cand_pool" / "local" / f"{stem}_cand_pool.jsonl", [pool.rows[d] for d in pool_dids])
        qrels = out / "qrels" / BUILD_SPLIT / f"{stem}_qrels.txt"
        qrels.parent.mkdir(parents=True, exist_ok=True)
        qrels.write_text("".join(f"{q['qid']} 0 {d} 1 {task_id}\n" for q in queries for d in q["pos_cand_list"]))
        stats[stem] = {"task": " -> ".join(MBEIR_TASKS[task_id]), "queries": len(queries), "local_pool": len(pool_dids)}
    _write_jsonl(global_pool_path(out, BUILD_SPLIT), list(pool.rows.values()))
    return stats


def _by_modality(pool: _Pool) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in pool.rows.values():
        counts[c["modality"]] = counts.get(c["modality"], 0) + 1
    return counts


# --- the flickr8k-dev layout -----------------------------------------------------------------------


def build_mbeir(
    captions_file: str | Path,
    images_dir: str | Path | None,
    out_dir: str | Path,
    *,
    names: Sequence[str] | None = None,
    seed: int = 0,
    dataset: str = "flickr8k",
) -> dict[str, Any]:
    """Write the flickr8k-dev layout's five tasks built from one captions folder; returns its stats.

    `names`: the photos to use (default: all with captions and an image file). `images_dir` defaults to
    `images/` beside the captions file. Rewrites the files it writes (including the union pool) and leaves
    any others in `out_dir` alone. See the module docstring.
    """
    _check_dataset(dataset)
    images, by_name, chosen = _photos(Source(Path(captions_file), None if images_dir is None else Path(images_dir),
                                             None if names is None else tuple(names)))
    random.Random(seed).shuffle(chosen)

    # 1. Groups: B the last ceil(n/2) photos; A_i, A_it, A_t the first floor(n/2), sizes within one, larger first.
    n_pool = len(chosen) // 2
    bounds = [0, *accumulate([n_pool // 3 + (i < n_pool % 3) for i in range(3)] + [len(chosen) - n_pool])]
    groups = dict(zip(GROUPS, (chosen[bounds[i] : bounds[i + 1]] for i in range(4)), strict=True))

    # 2. Photos kept: captions distinct within the photo and from the captions of the photos kept before it.
    skipped = _skip(chosen, by_name, {n: g for g, members in groups.items() for n in members})
    a_i, a_it, a_t, b = ([n for n in groups[g] if n not in skipped] for g in GROUPS)

    # 3. Candidates (pool order: images, image+text items, texts) and queries.
    pool = _Pool(by_name, lambda n: f"images/{n}", lambda n, c: {"image": n, "caption": c})

    def rest(n: str) -> range:  # the captions of a photo but its note (caption 0)
        return range(1, len(by_name[n]))

    image_of = {n: pool.add("image", n, None) for n in a_i}
    pair_of = {n: pool.add("image,text", n, 0) for n in a_it}
    note_of = {n: pool.add("text", n, 0) for n in a_t}
    texts_of = {n: [pool.add("text", n, c) for c in rest(n)] for n in b}
    text_pool = list(note_of.values()) + [d for ds in texts_of.values() for d in ds]
    tasks: Tasks = {
        0: ([(n, c, False, [image_of[n]]) for n in a_i for c in range(len(by_name[n]))], list(image_of.values())),
        1: ([(n, c, False, [note_of[n]]) for n in a_t for c in rest(n)], text_pool),
        2: ([(n, c, False, [pair_of[n]]) for n in a_it for c in rest(n)], list(pair_of.values())),
        3: ([(n, None, True, texts_of[n]) for n in b], text_pool),
        6: ([(n, 0, True, texts_of[n]) for n in b], text_pool),
    }

    # 4. Files.
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _link(out / "images", images)
    stats_tasks = _write(out, dataset, pool, tasks)
    return {
        "root": str(out),
        "layout": "flickr8k-dev",
        "split": BUILD_SPLIT,
        "seed": seed,
        "photos": len(chosen),
        "pool_photos": len(a_i) + len(a_it) + len(a_t),
        "pool_photos_by_modality": {"image": len(a_i), "image,text": len(a_it), "text": len(a_t)},
        "query_photos": len(b),
        "skipped": dict(sorted(skipped.items())),
        "tasks": stats_tasks,
        "global_pool": len(pool.rows),
        "global_pool_by_modality": _by_modality(pool),
    }


# --- the phone layout ------------------------------------------------------------------------------


def _quarters(n: int) -> list[int]:
    """n split into four sizes within one of each other, the earlier groups larger."""
    return [n // 4 + (i < n % 4) for i in range(4)]


def build_phone_mbeir(
    sources: Sequence[Source],
    out_dir: str | Path,
    *,
    seed: int = 0,
    dataset: str = "phone",
) -> dict[str, Any]:
    """Write the phone layout's five tasks built from several captions folders; returns its stats.

    Each source's photos are dealt into A_i, A_it, A_t and B in equal quarters (see the module docstring).
    Rewrites the files it writes and leaves any others in `out_dir` alone.
    """
    _check_dataset(dataset)
    if not sources:
        raise ValueError("sources: give at least one captions folder")
    labels = [s.name for s in sources]
    for label in labels:
        if labels.count(label) > 1 or not re.fullmatch(r"[\w.-]+", label):
            raise ValueError(f"source label {label!r}: labels name folders under images/ and must be distinct "
                             f"(give Source(label=...))")

    # 1. Photos ("<label>/<name>"), dealt per source in shuffled order into quarters.
    rng = random.Random(seed)
    captions_of: dict[str, list[str]] = {}
    folders: dict[str, Path] = {}
    order: list[str] = []
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    per_source: dict[str, dict[str, int]] = {}
    for source, label in zip(sources, labels, strict=True):
        folders[label], by_name, chosen = _photos(source)
        rng.shuffle(chosen)
        photos = [f"{label}/{n}" for n in chosen]
        captions_of |= {f"{label}/{n}": by_name[n] for n in chosen}
        bounds = [0, *accumulate(_quarters(len(photos)))]
        for i, g in enumerate(GROUPS):
            groups[g] += photos[bounds[i] : bounds[i + 1]]
        per_source[label] = dict(zip(GROUPS, _quarters(len(photos)), strict=True))
        order += photos

    # 2. Photos kept: as in the flickr8k-dev layout (B needs a note and an image+text query caption).
    skipped = _skip(order, captions_of, {p: g for g, members in groups.items() for p in members})
    a_i, a_it, a_t, b = ([p for p in groups[g] if p not in skipped] for g in GROUPS)

    # 3. Candidates (pool order: images, image+text items, texts) and queries; one note (c0) per text candidate.
    def src(photo: str, caption: int | None) -> dict[str, Any]:
        label, name = photo.split("/", 1)
        return {"source": label, "image": name, "caption": caption}

    pool = _Pool(captions_of, lambda p: f"images/{p}", src)

    def rest(p: str) -> range:
        return range(1, len(captions_of[p]))

    image_of = {p: pool.add("image", p, None) for p in a_i}
    pair_of = {p: pool.add("image,text", p, 0) for p in a_it}
    note_of = {p: pool.add("text", p, 0) for p in [*a_t, *b]}
    text_pool = list(note_of.values())
    tasks: Tasks = {
        0: ([(p, c, False, [image_of[p]]) for p in a_i for c in range(len(captions_of[p]))], list(image_of.values())),
        1: ([(p, c, False, [note_of[p]]) for p in a_t for c in rest(p)], text_pool),
        2: ([(p, c, False, [pair_of[p]]) for p in a_it for c in rest(p)], list(pair_of.values())),
        3: ([(p, None, True, [note_of[p]]) for p in b], text_pool),
        6: ([(p, 1, True, [note_of[p]]) for p in b], text_pool),
    }

    # 4. Files: images/<label> -> each source's image folder.
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "images").is_symlink():
        raise FileExistsError(f"{out / 'images'}: a symlink (a flickr8k-dev layout root?); the phone layout needs "
                              f"a folder of links there: choose another output folder")
    for label, folder in folders.items():
        _link(out / "images" / label, folder)
    stats_tasks = _write(out, dataset, pool, tasks)
    by_modality = _by_modality(pool)
    return {
        "root": str(out),
        "layout": "phone",
        "split": BUILD_SPLIT,
        "seed": seed,
        "sources": {label: {"captions": str(s.captions), "photos": sum(per_source[label].values()),
                            "groups": per_source[label]} for s, label in zip(sources, labels, strict=True)},
        "photos": len(order),
        "groups": {"image": len(a_i), "image,text": len(a_it), "text": len(a_t), "query": len(b)},
        "skipped": dict(sorted(skipped.items())),
        "tasks": stats_tasks,
        "global_pool": len(pool.rows),
        "global_pool_by_modality": by_modality,
        "global_pool_fractions": {m: n / len(pool.rows) for m, n in by_modality.items()},
    }

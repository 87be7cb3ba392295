"""M-BEIR builders (edge_gcl.eval.build): the flickr8k-dev layout on the shared Flickr8k dev photos, the phone
layout on synthetic captions folders (and once on the shared data), and `edge-gcl bench build-mbeir`."""

from __future__ import annotations

import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from edge_gcl.cli import main
from edge_gcl.embedding import l2_normalize
from edge_gcl.eval.build import SHARED_DATA, Source, build_mbeir, build_phone_mbeir, phone_sources
from edge_gcl.eval.mbeir import evaluate_mbeir, read_pool, read_qrels, read_queries

FLICKR = SHARED_DATA / "flickr8k"  # ../shared/data beside the repository, where phone_sources() looks
TASKS = (0, 1, 2, 3, 6)

# --- building ------------------------------------------------------------------------------------

needs_flickr = pytest.mark.skipif(not (FLICKR / "captions.txt").is_file(), reason=f"{FLICKR} is absent")
WANTED = {0: ("text", "image"), 1: ("text", "text"), 2: ("text", "image,text"), 3: ("image", "text"),
          6: ("image,text", "text")}


def _dev_names(n: int) -> list[str]:
    return sorted(json.loads((FLICKR / "splits.json").read_text())["dev"])[:n]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    if not (FLICKR / "captions.txt").is_file():
        pytest.skip(f"{FLICKR} is absent")
    out = tmp_path_factory.mktemp("mbeir") / "flickr"
    return out, build_mbeir(FLICKR / "captions.txt", None, out, names=_dev_names(20), seed=0)


def _load(out: Path, task: int, dataset: str = "flickr8k"):
    stem = f"mbeir_{dataset}_task{task}_test"
    return (read_queries(out / "query" / "test" / f"{stem}.jsonl"),
            read_pool(out / "cand_pool" / "local" / f"{stem}_cand_pool.jsonl"),
            read_qrels(out / "qrels" / "test" / f"{stem}_qrels.txt"))


def _src(out: Path) -> tuple[dict[str, tuple[str, int | None]], dict[str, tuple[str, int | None]]]:
    """qid -> (photo, caption index) and did -> (photo, caption index), from the src_content fields."""
    qsrc, csrc = {}, {}
    for f in out.glob("query/test/*.jsonl"):
        for row in map(json.loads, f.read_text().splitlines()):
            s = json.loads(row["query_src_content"])
            qsrc[row["qid"]] = (s["image"], s["caption"])
    for row in map(json.loads, (out / "cand_pool/global/mbeir_union_test_cand_pool.jsonl").read_text().splitlines()):
        s = json.loads(row["src_content"])
        csrc[row["did"]] = (s["image"], s["caption"])
    return qsrc, csrc


def _key(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def _check_built(out: Path, dataset: str = "flickr8k") -> dict[str, dict[str, set[str]]]:
    """The builder's invariants; returns {task: {"queries": photos, "pool": photos}} and the union's photos."""
    union = {c.did: c for c in read_pool(out / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl")}
    qsrc, csrc = _src(out)
    photos: dict[str, dict[str, set[str]]] = {}
    local_union: set[str] = set()
    query_texts = []
    for task in TASKS:
        queries, pool, qrels = _load(out, task, dataset)
        assert qrels == {q.qid: set(q.pos) for q in queries}  # qrels and pos_cand_list agree
        pool_dids = {c.did for c in pool}
        assert pool_dids <= set(union) and len(pool_dids) == len(pool)
        local_union |= pool_dids
        assert {c.modality for c in pool} == {WANTED[task][1]}
        for q in queries:
            assert q.modality == WANTED[task][0] and q.task_id == task
            assert q.pos and set(q.pos) <= pool_dids
            assert {csrc[d][0] for d in q.pos} == {qsrc[q.qid][0]}  # positives: the query's photo
        query_texts += [q.txt for q in queries if q.txt is not None]
        photos[str(task)] = {"queries": {qsrc[q.qid][0] for q in queries}, "pool": {csrc[c.did][0] for c in pool}}
    assert local_union == set(union)  # the global pool is the union of the local pools
    # Each photo in at most one candidate modality; the image query photos in no pool at all.
    modalities_of: dict[str, set[str]] = {}
    for did, c in union.items():
        modalities_of.setdefault(csrc[did][0], set()).add(c.modality)
    assert all(len(m) == 1 for m in modalities_of.values())
    query_images = {q.img_path.name for t in (3, 6) for q in _load(out, t, dataset)[0]}
    assert not query_images & {c.img_path.name for c in union.values() if c.img_path is not None}
    # No text twice: query texts distinct, candidate texts distinct, and the two sets disjoint.
    cand_texts = [_key(c.txt) for c in union.values() if c.txt is not None]
    query_keys = [_key(t) for t in query_texts]
    assert len(set(cand_texts)) == len(cand_texts) and len(set(query_keys)) == len(query_keys)
    assert not set(cand_texts) & set(query_keys)
    photos["union"] = {"pool": set(modalities_of)}
    return photos


@needs_flickr
def test_build_layout_and_stats(built):
    out, stats = built
    # 20 photos: B the last 10 of the shuffle, A_i / A_it / A_t 4 / 3 / 3 of the first 10.
    assert stats["photos"] == 20 and stats["pool_photos"] == 10 and stats["query_photos"] == 10
    assert stats["pool_photos_by_modality"] == {"image": 4, "image,text": 3, "text": 3}
    assert stats["skipped"] == {}
    assert {s: (t["queries"], t["local_pool"]) for s, t in stats["tasks"].items()} == {
        "mbeir_flickr8k_task0_test": (4 * 5, 4),  # every caption of every A_i photo
        "mbeir_flickr8k_task1_test": (3 * 4, 3 + 10 * 4),  # captions 1..4 of A_t; A_t notes + B captions 1..4
        "mbeir_flickr8k_task2_test": (3 * 4, 3),  # captions 1..4 of A_it; (photo, caption 0) items
        "mbeir_flickr8k_task3_test": (10, 43),
        "mbeir_flickr8k_task6_test": (10, 43)}
    assert stats["global_pool"] == 4 + 3 + 43
    assert stats["global_pool_by_modality"] == {"image": 4, "image,text": 3, "text": 43}
    photos = _check_built(out)
    assert len(photos["union"]["pool"]) == 20  # every photo is in the union, B's as texts only
    a_i, a_t, a_it, b = (photos[t]["queries"] for t in ("0", "1", "2", "3"))
    assert [len(g) for g in (a_i, a_it, a_t, b)] == [4, 3, 3, 10]
    assert len(a_i | a_it | a_t | b) == 20  # disjoint groups
    assert photos["6"]["queries"] == b and photos["0"]["pool"] == a_i and photos["2"]["pool"] == a_it
    assert photos["1"]["pool"] == photos["3"]["pool"] == a_t | b


@needs_flickr
def test_build_query_captions(built):
    out, _ = built
    qsrc, csrc = _src(out)
    captions = {t: Counter(qsrc[q.qid][1] for q in _load(out, t)[0]) for t in TASKS}
    assert captions[0] == {c: 4 for c in range(5)}  # all five captions of each of the 4 A_i photos
    assert captions[1] == captions[2] == {c: 3 for c in range(1, 5)}  # all but the note (caption 0)
    assert captions[3] == {None: 10} and captions[6] == {0: 10}
    union = read_pool(out / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl")
    assert Counter((c.modality, csrc[c.did][1]) for c in union) == {
        ("image", None): 4, ("image,text", 0): 3, ("text", 0): 3, **{("text", c): 10 for c in range(1, 5)}}


@needs_flickr
def test_build_is_deterministic_and_references_images(built, tmp_path: Path):
    out, _ = built
    again, other = tmp_path / "again", tmp_path / "other"
    build_mbeir(FLICKR / "captions.txt", None, again, names=_dev_names(20), seed=0)
    build_mbeir(FLICKR / "captions.txt", None, other, names=_dev_names(20), seed=1)
    files = sorted(p.relative_to(out) for p in out.rglob("*.*") if p.parts[len(out.parts)] != "images")
    assert len(files) == 5 * 3 + 1
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)
    task0 = Path("query/test/mbeir_flickr8k_task0_test.jsonl")
    assert (out / task0).read_bytes() != (other / task0).read_bytes()
    link = out / "images"
    assert link.is_symlink() and link.resolve() == (FLICKR / "images").resolve()
    real_files = [Path(d) / f for d, _, fs in os.walk(out) for f in fs]  # walk does not follow links
    assert all(f.suffix in (".jsonl", ".txt") for f in real_files)


@needs_flickr
def test_build_rejects_unknown_names(tmp_path: Path):
    with pytest.raises(ValueError, match="nope.jpg"):
        build_mbeir(FLICKR / "captions.txt", None, tmp_path / "x", names=["nope.jpg"])


def test_build_skips_photos_whose_texts_would_repeat(tmp_path: Path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    rows = []
    for i in range(24):
        caps = [f"photo {i} caption {c}" for c in range(5)]
        if i == 0:
            caps[3] = "Photo 0, caption 1."  # the same text as caption 1, case and punctuation aside
        if i in (1, 2):
            caps[4] = "a dog runs"  # shared by two photos: the later one in shuffled order goes
        if i == 3:
            caps = caps[:1]  # one caption: enough for A_i only
        rows += [f"p{i:02d}.jpg,{c}" for c in caps]
        (src / "images" / f"p{i:02d}.jpg").write_bytes(b"")
    (src / "captions.txt").write_text("image,caption\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    stats = build_mbeir(src / "captions.txt", None, out, dataset="toy", seed=3)
    skipped = stats["skipped"]
    assert skipped["p00.jpg"] == "two of its captions are the same"
    assert ("p01.jpg" in skipped) != ("p02.jpg" in skipped)
    assert "repeats an earlier photo" in skipped.get("p01.jpg", skipped.get("p02.jpg"))
    photos = _check_built(out, "toy")
    assert photos["union"]["pool"] == {f"p{i:02d}.jpg" for i in range(24)} - set(skipped)
    if "p03.jpg" in skipped:
        assert skipped["p03.jpg"].startswith("only one caption")
    else:
        assert photos["0"]["pool"] >= {"p03.jpg"}
    assert stats["pool_photos"] + stats["query_photos"] + len(skipped) == 24
    assert sum(stats["pool_photos_by_modality"].values()) == stats["pool_photos"]


class _PhotoEmbedder:
    """One vector per photo (oracle) or per input (random), keyed by the items' src_content."""

    model_id = "test"
    embed_dim = 32

    def __init__(self, out: Path, oracle: bool) -> None:
        self.oracle = oracle
        self.photo_of_text = {}
        for f in [*out.glob("query/test/*.jsonl"), *out.glob("cand_pool/*/*.jsonl")]:
            for line in f.read_text().splitlines():
                row = json.loads(line)
                txt = row.get("query_txt", row.get("txt"))
                src = row.get("query_src_content", row.get("src_content"))
                if txt:
                    self.photo_of_text[txt] = json.loads(src)["image"]

    def _vec(self, key: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(key.encode())).normal(size=self.embed_dim)

    def embed_images(self, images, *, batch_size=32, progress=False):
        return l2_normalize(np.array([self._vec(Path(p).name if self.oracle else f"i{p}") for p in images]))

    def embed_texts(self, texts, *, batch_size=64, progress=False):
        return l2_normalize(np.array([self._vec(self.photo_of_text[t] if self.oracle else t) for t in texts]))


@needs_flickr
def test_oracle_and_random_embedders_on_the_built_benchmark(built):
    out, _ = built
    # Every form of a photo embeds alike under the oracle, and each pool holds one form of a photo at most:
    # the only candidates that match a query are its positives, in the union pool too.
    oracle = evaluate_mbeir(_PhotoEmbedder(out, oracle=True), out, progress=False)
    for task in oracle:
        for setting in ("local", "global"):
            assert oracle[task][setting] == {"recall@1": 100.0, "recall@5": 100.0, "recall@10": 100.0}, task
    rand = evaluate_mbeir(_PhotoEmbedder(out, oracle=False), out, progress=False)
    assert rand["average"]["local"]["recall@1"] < 40.0
    assert rand["average"]["global"]["recall@1"] < 20.0




@needs_flickr
def test_cli_build_mbeir(tmp_path: Path, capsys):
    out = tmp_path / "dev"
    args = ["bench", "build-mbeir", "--captions", str(FLICKR / "captions.txt"), "--splits", "splits.json",
            "--split", "dev", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "100 photos, 50 pool-side (17 image, 17 image,text, 16 text), 50 query-side" in printed
    assert "mbeir_flickr8k_task6_test" in printed and "global pool: 250" in printed  # 17 + 17 + 16 + 50 * 4
    counts = {t: len(read_queries(out / "query" / "test" / f"mbeir_flickr8k_task{t}_test.jsonl")) for t in TASKS}
    assert counts == {0: 17 * 5, 1: 16 * 4, 2: 17 * 4, 3: 50, 6: 50}
    capsys.readouterr()
    assert main(["bench", "build-mbeir", "--captions", str(FLICKR / "captions.txt"), "--splits", "splits.json",
                 "--out", str(out)]) == 1
    assert capsys.readouterr().err == "edge-gcl: error: --splits splits.json: give --split too (e.g. --split dev)\n"


# --- the phone layout --------------------------------------------------------------------------------


def _captions_folder(folder: Path, prefix: str, n: int, *, twins: Sequence[int] = ()) -> list[str]:
    """A Flickr-style folder of n photos with 5 distinct captions each (photos in `twins` repeat one)."""
    (folder / "images").mkdir(parents=True)
    rows, names = [], []
    for i in range(n):
        name = f"{prefix}{i:02d}.jpg"
        caps = [f"{prefix} photo {i} says {c}" for c in range(5)]
        if i in twins:
            caps[4] = caps[2].upper()  # the same text, case aside
        rows += [f"{name},{c}" for c in caps]
        (folder / "images" / name).write_bytes(b"")
        names.append(name)
    (folder / "captions.txt").write_text("image,caption\n" + "\n".join(rows) + "\n")
    return names


@pytest.fixture
def sources(tmp_path: Path) -> list[Source]:
    """Two synthetic sources: 12 of the 14 photos of folder "alpha" (a split), all 28 of folder "beta"."""
    names = _captions_folder(tmp_path / "alpha", "a", 14)
    _captions_folder(tmp_path / "beta", "b", 28)
    (tmp_path / "alpha" / "splits.json").write_text(json.dumps({"dev": names[:12], "train": names[12:]}))
    return [Source.parse(f"{tmp_path}/alpha/captions.txt:{tmp_path}/alpha/splits.json:dev"),
            Source(tmp_path / "beta" / "captions.txt")]


def _files(out: Path) -> dict[Path, bytes]:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.*")) if "images" not in p.parts}


def test_phone_layout_proportions_and_invariants(sources: list[Source], tmp_path: Path):
    out = tmp_path / "phone"
    stats = build_phone_mbeir(sources, out, seed=0)
    # 40 photos, each source dealt in quarters (alpha 3 + beta 7 per group): a pool of exactly 1/4 : 1/4 : 1/2.
    assert stats["photos"] == 40 and stats["skipped"] == {}
    assert stats["groups"] == {"image": 10, "image,text": 10, "text": 10, "query": 10}
    assert stats["sources"]["alpha"]["groups"] == {"image": 3, "image,text": 3, "text": 3, "query": 3}
    assert stats["sources"]["beta"]["groups"] == {"image": 7, "image,text": 7, "text": 7, "query": 7}
    assert stats["global_pool_by_modality"] == {"image": 10, "image,text": 10, "text": 20}
    assert stats["global_pool_fractions"] == {"image": 0.25, "image,text": 0.25, "text": 0.5}
    assert {s: (t["queries"], t["local_pool"]) for s, t in stats["tasks"].items()} == {
        "mbeir_phone_task0_test": (10 * 5, 10),  # every caption of every A_i photo
        "mbeir_phone_task1_test": (10 * 4, 20),  # captions 1..4 of A_t; the notes of A_t and B
        "mbeir_phone_task2_test": (10 * 4, 10),
        "mbeir_phone_task3_test": (10, 20),
        "mbeir_phone_task6_test": (10, 20)}
    photos = _check_built(out, "phone")  # positives in their pools, one form per photo, no text twice
    a_i, a_t, a_it, b = (photos[t]["queries"] for t in ("0", "1", "2", "3"))
    assert [len(g) for g in (a_i, a_it, a_t, b)] == [10, 10, 10, 10] and len(a_i | a_it | a_t | b) == 40
    assert photos["union"]["pool"] == a_i | a_it | a_t | b  # every photo in exactly one candidate form
    assert photos["6"]["queries"] == b and photos["1"]["pool"] == photos["3"]["pool"] == a_t | b
    assert not {n for n in a_i | a_it | a_t | b if n.startswith("a")} & {"a12.jpg", "a13.jpg"}  # not in the split
    # Every query has one positive; B's positive is its note (caption 0), its image+text query caption 1.
    qsrc, csrc = _src(out)
    for task in TASKS:
        for q in _load(out, task, "phone")[0]:
            assert len(q.pos) == 1
            if task in (1, 3, 6):
                assert csrc[q.pos[0]][1] == 0
    assert {qsrc[q.qid][1] for q in _load(out, 6, "phone")[0]} == {1}
    # Images resolve through one link per source; src_content names the source.
    assert (out / "images" / "alpha").resolve() == (tmp_path / "alpha" / "images").resolve()
    assert (out / "images" / "beta").is_symlink()
    row = json.loads((out / "query/test/mbeir_phone_task3_test.jsonl").read_text().splitlines()[0])
    source = json.loads(row["query_src_content"])["source"]
    assert row["query_img_path"] == f"images/{source}/{json.loads(row['query_src_content'])['image']}"


def test_phone_layout_is_deterministic(sources: list[Source], tmp_path: Path):
    build_phone_mbeir(sources, tmp_path / "one", seed=0)
    build_phone_mbeir(sources, tmp_path / "two", seed=0)
    build_phone_mbeir(sources, tmp_path / "other", seed=1)
    one, two, other = (_files(tmp_path / d) for d in ("one", "two", "other"))
    assert len(one) == 5 * 3 + 1 and one == two
    assert one != other


def test_phone_layout_oracle_embedder_finds_everything(sources: list[Source], tmp_path: Path):
    out = tmp_path / "phone"
    build_phone_mbeir(sources, out)
    oracle = evaluate_mbeir(_PhotoEmbedder(out, oracle=True), out, progress=False)
    for task in (t for t in oracle if t != "average"):
        for setting in ("local", "global"):
            assert oracle[task][setting]["recall@1"] == 100.0, (task, setting)


def test_phone_layout_skips_and_refuses(tmp_path: Path):
    _captions_folder(tmp_path / "x", "x", 8, twins=(3,))
    _captions_folder(tmp_path / "y" / "x", "y", 8)  # another folder named "x"
    stats = build_phone_mbeir([Source(tmp_path / "x" / "captions.txt")], tmp_path / "out")
    assert stats["skipped"] == {"x/x03.jpg": "two of its captions are the same"}
    assert sum(stats["groups"].values()) == 7
    with pytest.raises(ValueError, match="label 'x'.*distinct"):
        build_phone_mbeir([Source(tmp_path / "x" / "captions.txt"), Source(tmp_path / "y" / "x" / "captions.txt")],
                          tmp_path / "out2")
    both = [Source(tmp_path / "x" / "captions.txt"), Source(tmp_path / "y" / "x" / "captions.txt", label="y")]
    assert build_phone_mbeir(both, tmp_path / "out3")["photos"] == 16
    with pytest.raises(ValueError, match="nope.jpg"):
        build_phone_mbeir([Source(tmp_path / "x" / "captions.txt", names=("nope.jpg",))], tmp_path / "out4")
    with pytest.raises(ValueError, match="expected CAPTIONS or CAPTIONS:SPLITS_FILE:SPLIT"):
        Source.parse("a:b")


def test_cli_build_phone(sources: list[Source], tmp_path: Path, capsys):
    out = tmp_path / "phone"
    alpha, beta = (str(s.captions) for s in sources)
    args = ["bench", "build-mbeir", "--layout", "phone", "--out", str(out),
            "--source", f"{alpha}:{tmp_path}/alpha/splits.json:dev", "--source", beta]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "(phone layout)" in printed and "40 photos (alpha 12, beta 28)" in printed
    assert "global pool: 40 candidates (10 image, 10 image,text, 20 text) = 0.250 : 0.250 : 0.500" in printed
    assert main([*args[:6], "--captions", alpha]) == 1
    assert capsys.readouterr().err.startswith("edge-gcl: error: --captions: options of --layout flickr8k-dev")
    assert main([*args, "--source", f"{alpha}:{tmp_path}/alpha/splits.json:test"]) == 1
    assert "no split 'test'" in capsys.readouterr().err


@needs_flickr
def test_phone_dev_benchmark_from_the_shared_data(tmp_path: Path):
    """The default sources: the 100 flickr8k dev photos and the 300 held-out flickr8k-extra photos."""
    stats = build_phone_mbeir(phone_sources(), tmp_path / "phone")
    assert {label: s["photos"] for label, s in stats["sources"].items()} == {"flickr8k": 100, "flickr8k-extra": 300}
    assert stats["photos"] == 400 and len(stats["skipped"]) <= 10
    fractions = stats["global_pool_fractions"]
    assert abs(fractions["image"] - 0.25) < 0.01 and abs(fractions["image,text"] - 0.25) < 0.01
    assert abs(fractions["text"] - 0.5) < 0.01
    _check_built(tmp_path / "phone", "phone")

"""`python -m benchmarks.eval_fixtures`: the roots it writes are in MMEB-eval's and CoVR's published layouts,
byte for byte the same on every run, and `edge-gcl eval mmeb` / `eval covr` run on them end to end.

The embedder is a stand-in (no weights): an oracle that knows which photo each caption, file and clip frame
shows, so it finds every row's positive when MMEB's rows list their positive first, and every CoVR target
when the edit (the target photo's caption) names it and the query's own clip is left out.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.eval_fixtures import flickr_photos, main, pan_frames
from edge_gcl.cli import main as cli
from edge_gcl.eval.covr import ANNOTATION, VIDEOS

PHOTOS, CANDIDATES, CLIPS = 24, 10, 8  # the command's defaults
T2I, I2T = "MSCOCO_t2i/test-00000-of-00001.parquet", "MSCOCO_i2t/test-00000-of-00001.parquet"


def _thumb(image) -> np.ndarray:
    """An 8 x 8 grey thumbnail, mean removed, unit length: (64,) float32."""
    v = np.asarray(image.convert("L").resize((8, 8), Image.Resampling.BILINEAR), np.float32).ravel()
    v = v - v.mean()
    return v / np.linalg.norm(v)


class PhotoOracle:
    """Photo j -> one-hot j, and so are its caption (any text holding it), its file (by name) and any frame of
    its clip (a decoded frame: the photo whose clip frames' thumbnails are nearest). Other texts (instructions)
    -> the last axis. So a fused query of photo i and photo k's caption is (e_i + e_k) / sqrt 2."""

    model_id = "photo-oracle"

    def __init__(self, flickr: Path, photos: list[tuple[str, str]]):
        self.names = {name: j for j, (name, _) in enumerate(photos)}
        self.captions = {cap: j for j, (_, cap) in enumerate(photos)}
        self.embed_dim = len(photos) + 1
        frames = [pan_frames(flickr / "images" / name, 20) for name, _ in photos]  # what eval_fixtures encodes
        self.thumbs = np.stack([[_thumb(Image.fromarray(f)) for f in clip] for clip in frames])  # (n, 20, 64)

    def _photo(self, image) -> int:
        if not isinstance(image, Image.Image):
            return self.names[Path(image).name]
        return int(np.argmax((self.thumbs @ _thumb(image)).max(axis=1)))

    def embed_images(self, images, *, batch_size=32, progress=False):
        return np.eye(self.embed_dim, dtype=np.float32)[[self._photo(im) for im in images]]

    def embed_texts(self, texts, *, batch_size=32, progress=False):
        last = self.embed_dim - 1
        return np.eye(self.embed_dim, dtype=np.float32)[
            [next((j for c, j in self.captions.items() if c in t), last) for t in texts]]


@pytest.fixture(scope="module")
def built(flickr: Path, tmp_path_factory) -> Path:
    pytest.importorskip("pyarrow")
    out = tmp_path_factory.mktemp("fixtures")
    assert main(["--out", str(out), "--data-root", str(flickr.parent)]) == 0
    return out


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_mmeb_root_is_in_the_published_layout(built: Path, flickr: Path):
    root = built / "MMEB-eval"
    photos = [name for name, _ in flickr_photos(flickr, PHOTOS)]
    images = {f"eval_images/{task}/{name}" for task in ("MSCOCO_t2i", "MSCOCO_i2t") for name in photos}
    assert set(_tree(root)) == {T2I, I2T} | images
    copied = root / "eval_images" / "MSCOCO_t2i" / photos[0]
    assert copied.read_bytes() == (flickr / "images" / photos[0]).read_bytes()
    import pyarrow.parquet as pq

    rows = pq.read_table(root / T2I).to_pylist()
    assert pq.read_schema(root / T2I).names == ["qry_text", "qry_img_path", "tgt_text", "tgt_img_path"]
    assert len(rows) == PHOTOS and {len(r["tgt_img_path"]) for r in rows} == {CANDIDATES}
    assert rows[0]["tgt_img_path"][:2] == [f"MSCOCO_t2i/{photos[0]}", f"MSCOCO_t2i/{photos[1]}"]  # own photo first


def test_covr_root_is_in_the_published_layout(built: Path):
    pytest.importorskip("av")
    root = built / "CoVR"
    with open(root / ANNOTATION, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["txt1", "txt2", "edit", "scores", "pth1", "pth2"]
    assert len(rows) == CLIPS
    assert [r["pth2"] for r in rows] == [r["pth1"] for r in rows[1:] + rows[:1]]  # clip i -> clip i+1
    assert all(r["edit"] == r["txt2"] and len(json.loads(r["scores"])) == 15 for r in rows)
    assert sorted(str(p.relative_to(root / VIDEOS)) for p in (root / VIDEOS).rglob("*.mp4")) == sorted(
        f"{r['pth1']}.mp4" for r in rows)


def test_same_bytes_on_every_run(built: Path, flickr: Path, tmp_path: Path):
    assert main(["--out", str(tmp_path), "--data-root", str(flickr.parent)]) == 0
    assert _tree(tmp_path) == _tree(built)


def _oracle(monkeypatch, flickr: Path, photos: list[tuple[str, str]]) -> None:
    monkeypatch.setitem(sys.modules, "edge_gcl.runtime", types.SimpleNamespace(
        load_embedder=lambda model, provider="cpu", device=None: PhotoOracle(flickr, photos)))


def test_eval_mmeb_runs_on_it(built: Path, flickr: Path, monkeypatch, tmp_path: Path):
    _oracle(monkeypatch, flickr, flickr_photos(flickr, PHOTOS))
    out = tmp_path / "mmeb.json"
    assert cli(["eval", "mmeb", "--root", str(built / "MMEB-eval"), "--model", "oracle", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    for task in ("MSCOCO_t2i", "MSCOCO_i2t"):
        assert (results[task]["queries"], results[task]["hit@1"]) == (PHOTOS, 100.0)


def test_eval_covr_runs_on_it(built: Path, flickr: Path, monkeypatch, tmp_path: Path):
    pytest.importorskip("av")
    _oracle(monkeypatch, flickr, flickr_photos(flickr, CLIPS, start=PHOTOS))
    out = tmp_path / "covr.json"
    assert cli(["eval", "covr", "--root", str(built / "CoVR"), "--model", "oracle", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["queries"], result["pool"], result["frame_pool"]) == (CLIPS, CLIPS, "query")
    assert result["recall@1"] == 100.0  # the edit names the target; the query's own clip is removed


def test_without_pyav_only_mmeb_is_written(flickr: Path, monkeypatch, tmp_path: Path, capsys):
    pytest.importorskip("pyarrow")
    monkeypatch.setitem(sys.modules, "av", None)
    assert main(["--out", str(tmp_path), "--data-root", str(flickr.parent), "--photos", "3", "--candidates", "2"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MMEB-eval"]
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == "CoVR: not written, its clips need PyAV: pip install 'edge-gcl[video]'"

"""benchmarks.recall on the dev benchmarks: --bench picks (and builds) the root, headline figures per form and loss."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

import benchmarks.recall as recall
from benchmarks.recall import bench_of, ensure_root, headline_rows, headline_summary, tables
from edge_gcl.eval.build import Source, build_mbeir, build_phone_mbeir

FLICKR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k"
needs_flickr = pytest.mark.skipif(not (FLICKR / "captions.txt").is_file(), reason=f"{FLICKR} is absent")


def _result(t2i: tuple[float, float], avg: tuple[float, float]) -> dict:
    row = {"local": {"recall@1": 99.0, "recall@5": 100.0}, "global": {"recall@1": t2i[0], "recall@5": t2i[1]}}
    other = {"local": {"recall@1": 90.0, "recall@5": 95.0}, "global": {"recall@1": 50.0, "recall@5": 60.0}}
    return {"mbeir_phone_task0_test": row, "mbeir_phone_task3_test": other,
            "average": {"local": {"recall@1": 94.5, "recall@5": 97.5},
                        "global": {"recall@1": avg[0], "recall@5": avg[1]}}}


def test_headline_rows_and_table():
    rows = headline_rows({"torch": _result((8.0, 40.0), (29.0, 50.0)), "qdq": _result((7.5, 39.0), (28.0, 49.5))})
    assert rows[0] == {"form": "torch", "text -> image recall@1": 8.0, "text -> image recall@5": 40.0,
                       "average recall@1": 29.0, "average recall@5": 50.0}
    doc = {"benchmark": "recall", "rows": recall.recall_rows({"torch": _result((8.0, 40.0), (29.0, 50.0))}, "torch"),
           "headline": rows}
    text = tables(doc)
    assert "headline, global pool" in text and "text->image R@1" in text
    assert text.splitlines()[-1].split() == ["qdq", "7.50", "39.00", "28.00", "49.50"]


def test_headline_summary_over_seeds():
    runs = [{"loss": "gcl", "seed": s, "results": _result((10.0 + 2 * s, 50.0), (60.0, 80.0 + s))} for s in (0, 1, 2)]
    runs += [{"loss": "cl", "seed": 0, "results": _result((2.0, 20.0), (50.0, 70.0))}]
    rows = headline_summary(runs)
    assert [r["loss"] for r in rows] == ["gcl", "cl"] and rows[0]["seeds"] == [0, 1, 2]
    assert rows[0]["text -> image recall@1"] == "12.00 ± 2.00" and rows[0]["text -> image recall@1 mean"] == 12.0
    assert rows[0]["average recall@5"] == "81.00 ± 1.00" and rows[1]["average recall@5"] == "70.00"
    doc = {"benchmark": "recall-losses", "rows": recall.loss_summary(runs), "headline": rows}
    assert "mean ± std over seeds" in tables(doc)


@needs_flickr
def test_ensure_root_builds_the_chosen_bench(tmp_path: Path, monkeypatch):
    logs = []
    phone = ensure_root(tmp_path / "phone", bench="phone", flickr=FLICKR, log=logs.append)
    assert bench_of(phone) == "phone" and "phone dev benchmark" in logs[0]
    assert (phone / "images" / "flickr8k-extra").is_symlink()
    old = ensure_root(tmp_path / "old", bench="flickr8k-dev", flickr=FLICKR, log=logs.append)
    assert bench_of(old) == "flickr8k-dev"
    assert ensure_root(old, bench="phone", log=logs.append) == old and len(logs) == 2  # an existing root is kept
    assert bench_of(tmp_path) is None
    monkeypatch.chdir(tmp_path)  # runs/mbeir-dev names the old bench's default root: built as that one
    assert bench_of(ensure_root("runs/mbeir-dev", flickr=FLICKR, log=logs.append)) == "flickr8k-dev"
    with pytest.raises(ValueError, match="bench 'nope'"):
        ensure_root(tmp_path / "x", bench="nope")


class _Hash:
    model_id = "hash"
    embed_dim = 8

    @staticmethod
    def _vec(key: str) -> np.ndarray:
        v = np.random.default_rng(zlib.crc32(key.encode())).normal(size=8)
        return v / np.linalg.norm(v)

    def embed_images(self, images, *, batch_size=32, progress=False):
        return np.array([self._vec(Path(p).name) for p in images], np.float32)

    def embed_texts(self, texts, *, batch_size=32, progress=False):
        return np.array([self._vec(t) for t in texts], np.float32)


def test_recall_main_on_a_phone_root(tmp_path: Path, monkeypatch, capsys):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    rows = [f"p{i}.jpg,photo {i} caption {c}" for i in range(12) for c in range(5)]
    (src / "captions.txt").write_text("image,caption\n" + "\n".join(rows) + "\n")
    for i in range(12):
        (src / "images" / f"p{i}.jpg").write_bytes(b"")
    root = tmp_path / "bench"
    build_phone_mbeir([Source(src / "captions.txt")], root)
    monkeypatch.setattr(recall, "load_form", lambda form, model, artifacts, device="cpu": _Hash())
    out = tmp_path / "r.json"
    assert recall.main(["--root", str(root), "--forms", "torch", "--json", str(out),
                        "--plot", str(tmp_path / "r.png")]) == 0
    doc = json.loads(out.read_text())
    assert doc["config"]["bench"] == "phone"
    assert set(doc["headline"][0]) == {"form", "text -> image recall@1", "text -> image recall@5",
                                       "average recall@1", "average recall@5"}
    assert doc["headline"][0]["text -> image recall@5"] == doc["results"]["torch"]["mbeir_phone_task0_test"][
        "global"]["recall@5"]
    assert {(r["setting"], r["task"]) for r in doc["rows"]} >= {("local", "mbeir_phone_task1_test"),
                                                                 ("global", "average")}
    assert "headline, global pool" in capsys.readouterr().out
    build_mbeir(src / "captions.txt", None, tmp_path / "old")
    assert bench_of(tmp_path / "old") == "flickr8k-dev"

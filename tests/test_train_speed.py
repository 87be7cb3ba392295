"""benchmarks.train_speed on a tiny TinyCLIP: a row per precision and world size with the step, data and
training rates measured apart, the JSON and the plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import tiny_tinyclip

from benchmarks import train_speed

pytestmark = pytest.mark.slow


def test_rows_for_each_configuration_with_the_data_rate_apart(tmp_path, capsys):
    tiny = tiny_tinyclip(tmp_path / "tiny")
    out = tmp_path / "speed.json"
    assert train_speed.main(["--models", str(tiny), "--device", "cpu", "--precisions", "fp32,bf16", "--batches", "8",
                             "--world-sizes", "1,2", "--steps", "2", "--warmup", "1", "--photos", "16", "--workers", "1",
                             "--workdir", str(tmp_path / "work"), "--json", str(out), "--plot", str(tmp_path / "s.png")]) == 0
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert [(r["precision"], r["world"]) for r in rows] == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    for r in rows:
        assert r["step_pairs_per_s"] > 0 and r["data_pairs_per_s"] > 0 and r["train_pairs_per_s"] > 0
        assert 0 <= r["data_wait_share"] <= 1 and r["batch"] == 8 and r["device"] == "cpu"
    assert (tmp_path / "s.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "step pairs/s" in printed and "data pairs/s" in printed
    assert "| model |" in train_speed.table(doc, markdown=True)
    # synthetic photos: seeded JPEGs with two captions each
    photos = sorted((tmp_path / "work" / "photos" / "images").glob("*.jpg"))
    assert len(photos) == 16
    assert (tmp_path / "work" / "photos" / "captions.txt").read_text().count("\n") == 1 + 2 * 16


def test_the_photo_table_keeps_forked_workers_from_copying_it():
    # in a fresh process: forked from this long test session, each worker also copied ~15 MB of the session's
    # own pages (56 vs 28 MB where a fresh process measures 40 vs 13), which says nothing about the table
    code = "import json; from benchmarks import train_speed; print(json.dumps(train_speed.table_memory(50_000, workers=1)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    mem = json.loads(done.stdout.strip().splitlines()[-1])
    assert mem["table_worker_private_mb"] < mem["lists_worker_private_mb"] / 2, mem

"""benchmarks.ingest: phone-sized photos, a measurement in a fresh process, its table, plot and README text."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_runtime import make_artifacts  # noqa: E402

from benchmarks import ingest  # noqa: E402
from benchmarks.common import load_json, make_document  # noqa: E402
from benchmarks.report import render  # noqa: E402
from edge_gcl.runtime import DECODE_THREADS  # noqa: E402


def sources(folder: Path, n: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        size = (48, 32) if i % 2 else (32, 48)  # landscape and portrait
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return folder


def test_phone_photos_are_12mp_jpegs_made_once(tmp_path: Path) -> None:
    src = sources(tmp_path / "src", 2)
    folder = ingest.phone_photos(2, source=src, cache=tmp_path / "cache")
    sizes = sorted(Image.open(p).size for p in folder.glob("*.jpg"))
    assert sizes == [(3024, 4032), (4032, 3024)]
    stamp = [p.stat().st_mtime_ns for p in sorted(folder.glob("*.jpg"))]
    ingest.phone_photos(2, source=src, cache=tmp_path / "cache")
    assert [p.stat().st_mtime_ns for p in sorted(folder.glob("*.jpg"))] == stamp  # reused, not rebuilt


def test_one_measurement_in_a_fresh_process_then_table_plot_and_readme(tmp_path: Path) -> None:
    artifacts = make_artifacts(tmp_path / "artifacts")
    photos = sources(tmp_path / "photos", 6)
    row = ingest.run_one(str(artifacts), photos)
    assert row["photos"] == 6 and row["photos_per_s"] > 0 and row["peak_rss_mb"] > 20
    assert row["decode_threads"] == DECODE_THREADS
    assert ingest.run_one(str(artifacts), photos, decode_threads=0)["decode_threads"] == 0
    rows = [{"path": "default", "set": "small", "model": str(artifacts), **row}]
    config = {"photos": 6, "phone_size": [4032, 3024], "jpeg_quality": 90, "sets": ["small"]}
    doc = make_document("ingest", rows, config=config)
    assert "| default | small | 6 |" in ingest.markdown(doc)
    out = tmp_path / "results"
    out.mkdir()
    from benchmarks.common import save_json

    save_json(out / "ingest.json", doc)
    ingest.plot(load_json(out / "ingest.json"), out / "ingest.png")
    text = render(out, doc_dir=tmp_path)
    assert "### Photo ingest" in text and "ingest.png" in text and "python -m benchmarks.ingest" in text


def test_main_refuses_a_folder_without_a_manifest(tmp_path: Path, capsys) -> None:
    assert ingest.main(["--artifacts", str(tmp_path)]) == 1
    assert "no manifest.json" in capsys.readouterr().err

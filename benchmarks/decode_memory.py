"""Peak memory of one hostile photo (issue 33): what a single decoded input costs the CLI and the app.

Each case runs in a fresh process (`--one CASE`), so its figure is that process's whole high-water mark
(`VmHWM`: imports, model and all), the number a phone or laptop sees:

    search-thin     `edge-gcl search --image` a 40000 x 2 PNG (its short side to 224 px made a 4.5M x 224 image)
    upload-thin     the app's search with a 20000 x 2 PNG uploaded
    ingest-large    `Index.add_photos` of four 33 MP PNGs (decoded in threads), the largest the decode budget takes
    thumbs-large    then their four thumbnails asked for at once, cold
    upload-photo    the app's search with an ordinary 64 x 48 PNG uploaded: the baseline

Photos are made under a temporary folder, never in the project. The goal is at most 600 MB for every row.

    python -m benchmarks.decode_memory --model artifacts      # table, runs/benchmarks/decode_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from .common import (
    Col,
    _status_kb,
    default_out,
    format_table,
    header_line,
    machine_info,
    make_document,
    save_json,
)

CASES = ("upload-photo", "search-thin", "upload-thin", "ingest-large", "thumbs-large")
GOAL_MB = 600


def peak_mb() -> int:
    return (_status_kb("VmHWM") or 0) // 1024


def run_one(case: str, model: str, work: Path) -> dict[str, object]:
    """One case in this process; returns its row."""
    from PIL import Image

    from edge_gcl.app.server import PhotoSearchApp
    from edge_gcl.index import Index

    photos = work / "photos"
    photos.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 48), (i * 80, 40, 200)).save(photos / f"small{i}.png")
    if case.endswith("-large"):
        Image.new("RGB", (6000, 5500), "green").save(work / "big.png")  # 33 MP: 126 MiB decoded, under the budget
        for i in range(4):
            os.link(work / "big.png", photos / f"big{i}.png")
    if case == "search-thin":
        from edge_gcl.cli import main

        Image.new("RGB", (40_000, 2), "red").save(work / "thin.png")
        main(["index", "add", str(photos), "--index", str(work / "idx"), "--model", model])
        status = main(["search", "--image", str(work / "thin.png"), "--all", "--index", str(work / "idx"),
                       "--model", model])
        return {"case": case, "ok": status == 0, "peak_mb": peak_mb()}
    with Index.open(work / "idx", model=model) as index:
        index.add_photos(photos, progress=False)
        app = PhotoSearchApp(index)
        if case in ("upload-thin", "upload-photo"):
            size = (20_000, 2) if case == "upload-thin" else (64, 48)
            Image.new("RGB", size, "red").save(work / "upload.png")
            ok = bool(app.search({"min_score": "-1"}, photo=(work / "upload.png").read_bytes())["hits"])
        elif case == "thumbs-large":
            ids = [it.id for it in index.items() if "big" in (it.path or "")]
            threads = [threading.Thread(target=app.thumbnail, args=(i,)) for i in ids]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ok = len(app._thumbs) == len(ids) == 4  # noqa: SLF001
        else:
            ok = len(index) == 7
    return {"case": case, "ok": ok, "peak_mb": peak_mb()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decode_memory", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="artifacts", help="artifacts folder (or a model name, with torch)")
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--json", default=default_out("decode_memory.json"), help="where to write the results")
    p.add_argument("--one", choices=CASES, help=argparse.SUPPRESS)  # run one case in this process
    args = p.parse_args(argv)
    if args.one:
        with tempfile.TemporaryDirectory(prefix="edge-gcl-decode-") as work:
            print(json.dumps(run_one(args.one, args.model, Path(work))))
        return 0
    rows = []
    for case in args.cases:
        done = subprocess.run([sys.executable, "-m", "benchmarks.decode_memory", "--one", case, "--model", args.model],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({**row, "goal_mb": GOAL_MB, "met": row["peak_mb"] <= GOAL_MB})
    machine = machine_info()
    print(header_line(machine))
    print(format_table(rows, [Col("case", "case"), Col("peak_mb", "peak MB"), Col("goal_mb", "goal MB"),
                              Col("met", "met"), Col("ok", "answered")], title="peak memory of one hostile photo"))
    path = save_json(args.json, make_document("decode_memory", rows, config={"model": args.model}, machine=machine))
    print(f"saved {path}")
    return 0 if all(r["met"] and r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

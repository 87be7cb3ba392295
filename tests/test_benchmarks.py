"""Benchmarks: the pure pieces by hand (percentiles, timing, the bandwidth floor, tables, JSON, README markers,
recall deltas) and a tiny end-to-end run of `benchmarks.index` checked against faiss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import index as bindex
from benchmarks.common import (
    Col,
    PeakRSS,
    Timing,
    cell,
    format_table,
    load_json,
    make_document,
    markdown_table,
    parse_list,
    percentile,
    save_json,
    time_call,
)
from benchmarks.latency import aihub_rows, encode_calls
from benchmarks.recall import loss_summary, mean_std, recall_rows, same_recipe, task_label
from benchmarks.report import (
    END,
    START,
    gap_markdown,
    losses_markdown,
    render,
    rewrite_section,
    update_doc,
)

# ----------------------------------------------------------------------------- timing


def test_percentile_hand_worked_and_matches_numpy():
    x = list(range(1, 11))  # 1..10
    assert percentile(x, 50) == 5.5
    assert percentile(x, 90) == pytest.approx(9.1)
    assert percentile(x, 0) == 1 and percentile(x, 100) == 10
    assert percentile([7.0], 90) == 7.0
    rng = np.random.default_rng(0)
    y = rng.exponential(size=101)
    for q in (10, 50, 90, 99):
        assert percentile(y, q) == pytest.approx(np.percentile(y, q))
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_timing_summary():
    t = Timing((3.0, 1.0, 2.0, 10.0))
    assert t.median_ms == 2.5
    assert t.p90_ms == pytest.approx(7.9)  # sorted 1,2,3,10: position 2.7 -> 3 + 0.7 * 7
    assert t.mean_ms == 4.0 and t.min_ms == 1.0 and t.runs == 4
    assert t.per_second(32) == pytest.approx(12_800)  # 32 items per 2.5 ms
    d = t.to_dict(items=32)
    assert d["items_per_s"] == pytest.approx(12_800) and d["runs"] == 4
    with pytest.raises(ValueError):
        Timing(())
    with pytest.raises(ValueError):
        Timing((1.0, float("nan")))
    with pytest.raises(ValueError):
        Timing((-1.0,))


def test_time_call_warms_up_then_times_each_call_with_the_given_clock():
    ticks = iter([0.0, 0.001, 1.0, 1.003, 2.0, 2.002])
    calls = []
    t = time_call(lambda: calls.append(1), warmup=2, runs=3, clock=lambda: next(ticks))
    assert len(calls) == 5  # 2 untimed + 3 timed
    assert t.samples_ms == pytest.approx((1.0, 3.0, 2.0))
    assert t.median_ms == pytest.approx(2.0)


def test_time_call_budget_stops_early_but_keeps_min_runs():
    ticks = iter([0.0, 0.001, 1.0, 1.003, 2.0, 2.002, 3.0, 3.001])
    t = time_call(lambda: None, warmup=0, runs=4, budget_s=0.0025, min_runs=2, clock=lambda: next(ticks))
    assert t.runs == 2  # 1 ms + 3 ms >= 2.5 ms after the second run
    ticks = iter([0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    assert time_call(lambda: None, warmup=0, runs=5, budget_s=1.0, min_runs=3, clock=lambda: next(ticks)).runs == 3


def test_peak_rss_sees_a_block_allocation_and_resets_between_blocks():
    with PeakRSS() as big:
        a = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del a
    if not big.method.startswith("VmHWM"):
        pytest.skip("no resettable peak RSS on this platform")
    assert big.peak_mb >= 48
    with PeakRSS() as small:
        b = np.ones(1024)
        del b
    assert small.peak_mb < 16  # the earlier 64 MiB peak is not this block's
    assert small.process_peak_mb > 0


# ----------------------------------------------------------------------------- the floor and index metrics


def test_floor_arithmetic():
    assert bindex.floor_ms(1e9, 10.0) == pytest.approx(100.0)  # 1 GB at 10 GB/s
    assert bindex.floor_ms(100_000 * 256 * 4, 12.8) == pytest.approx(8.0)  # 102.4 MB at 12.8 GB/s
    assert bindex.floor_ms(0, 5.0) == 0.0
    with pytest.raises(ValueError):
        bindex.floor_ms(1e6, 0.0)
    bw = bindex.measure_bandwidth(size_mb=8, runs=2)
    assert bw["copy_gbps"] > 0 and bw["read_gbps"] > 0
    assert bw["floor_gbps"] == max(bw["copy_gbps"], bw["read_gbps"])


def test_intersection_recall_and_same_order_hand_worked():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 2, 9], [4, 5, 6]])
    assert bindex.intersection_recall(found, truth) == pytest.approx((2 + 3) / 6)
    assert bindex.intersection_recall(found, truth, k=1) == pytest.approx((0 + 1) / 2)
    assert bindex.same_order(found, truth) == 0.5
    assert bindex.intersection_recall(np.array([[-1, -1, -1]]), np.array([[1, 2, 3]])) == 0.0
    with pytest.raises(ValueError):
        bindex.intersection_recall(found[:1], truth)


def test_synthetic_is_seeded_normalised_and_prefix_stable():
    xb, xq = bindex.synthetic(500, 7, 24, seed=3)
    assert xb.shape == (500, 24) and xq.shape == (7, 24) and xb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(xb, axis=1), 1.0, atol=1e-5)
    xb2, xq2 = bindex.synthetic(200, 7, 24, seed=3)
    np.testing.assert_array_equal(xb[:200], xb2)
    np.testing.assert_array_equal(xq, xq2)
    assert not np.array_equal(bindex.synthetic(200, 7, 24, seed=4)[0], xb2)


# ----------------------------------------------------------------------------- tables and JSON

ROWS = [{"name": "a", "ms": 1.234, "n": 1000, "x": None}, {"name": "bb", "ms": 12.5, "n": 20, "x": float("nan")}]
COLS = [Col("name"), Col("ms", "median ms", ".2f"), Col("n", "N", ","), Col("x")]


def test_format_table_exact_text():
    assert format_table(ROWS, COLS, title="t") == (
        "t\n"
        "name  median ms      N  x\n"
        "----  ---------  -----  -\n"
        "a          1.23  1,000  -\n"
        "bb        12.50     20  -"
    )


def test_markdown_table_exact_text():
    assert markdown_table(ROWS, COLS) == (
        "| name | median ms | N | x |\n"
        "| --- | ---: | ---: | --- |\n"
        "| a | 1.23 | 1,000 | - |\n"
        "| bb | 12.50 | 20 | - |"
    )
    assert markdown_table([{"k": "a|b"}], [Col("k")]).splitlines()[-1] == "| a\\|b |"


def test_cell_and_parse_list():
    assert cell(None) == "-" and cell(float("nan"), ".2f") == "-" and cell(0.5, "+.1f") == "+0.5"
    assert cell([0, 1, 2]) == "0,1,2" and cell(True) == "True" and cell(np.float32(2.0), ".1f") == "2.0"
    assert parse_list("1000, 1e4,100000", int) == [1000, 10_000, 100_000]
    assert parse_list("torch,qdq") == ["torch", "qdq"]
    with pytest.raises(ValueError):
        parse_list(" , ")


def test_json_round_trip_checks_its_header(tmp_path: Path):
    doc = make_document("index", [{"n": np.int64(3), "ms": np.float32(1.5), "bad": float("nan")}],
                        config={"path": tmp_path}, machine={"date": "2026-01-01T00:00:00Z"}, extra=np.arange(2))
    path = save_json(tmp_path / "sub" / "r.json", doc)
    raw = json.loads(path.read_text())
    assert raw["rows"] == [{"n": 3, "ms": 1.5, "bad": None}] and raw["extra"] == [0, 1]
    assert load_json(path, "index")["config"] == {"path": str(tmp_path)}
    with pytest.raises(ValueError, match="expected 'latency'"):
        load_json(path, "latency")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not an edge-gcl benchmark"):
        load_json(tmp_path / "other.json")
    raw["format_version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="format_version"):
        load_json(tmp_path / "future.json")


# ----------------------------------------------------------------------------- README markers


README = f"# title\n\nintro\n\n## Results\n\n{START}\nold text\nmore old\n{END}\n\n## After\n\nkept\n"


def test_rewrite_section_replaces_only_between_markers():
    new = rewrite_section(README, "new table\n")
    assert new == f"# title\n\nintro\n\n## Results\n\n{START}\nnew table\n{END}\n\n## After\n\nkept\n"
    assert rewrite_section(new, "new table") == new  # idempotent
    empty = rewrite_section(README, "")
    assert f"{START}\n\n{END}" in empty


@pytest.mark.parametrize("text", [
    "no markers at all",
    f"{START}\nonly the start",
    f"{END}\n{START}\n",  # reversed
    f"{START}\n{END}\n{START}\n{END}\n",  # twice
])
def test_rewrite_section_refuses_bad_markers(text: str):
    with pytest.raises(ValueError):
        rewrite_section(text, "x")


def test_update_doc_on_a_file(tmp_path: Path):
    path = tmp_path / "README.md"
    path.write_text(README)
    assert update_doc(path, "| a |") is True
    assert path.read_text().count("| a |") == 1 and "old text" not in path.read_text()
    assert path.read_text().endswith("## After\n\nkept\n")
    assert update_doc(path, "| a |") is False


# ----------------------------------------------------------------------------- recall


def _mbeir(r1: float, r5: float, avg5: float) -> dict:
    task = {"local": {"recall@1": r1, "recall@5": r5}, "global": {"recall@1": r1 / 2, "recall@5": r5 / 2}}
    return {"mbeir_flickr8k_task0_test": task,
            "average": {"local": {"recall@1": r1, "recall@5": avg5}, "global": {"recall@1": r1 / 2, "recall@5": avg5 / 2}}}


def test_recall_rows_deltas_against_the_reference():
    rows = recall_rows({"torch": _mbeir(40.0, 80.0, 70.0), "qdq": _mbeir(38.0, 81.0, 69.0)}, "torch")
    assert [(r["setting"], r["task"], r["form"]) for r in rows][:4] == [
        ("local", "mbeir_flickr8k_task0_test", "torch"), ("local", "mbeir_flickr8k_task0_test", "qdq"),
        ("local", "average", "torch"), ("local", "average", "qdq")]
    qdq_local = rows[1]
    assert qdq_local["label"] == "text -> image"
    assert qdq_local["delta@1"] == pytest.approx(-2.0) and qdq_local["delta@5"] == pytest.approx(1.0)
    assert rows[0]["delta@1"] == 0.0
    qdq_global_avg = [r for r in rows if (r["setting"], r["task"], r["form"]) == ("global", "average", "qdq")][0]
    assert qdq_global_avg["delta@5"] == pytest.approx(-0.5)  # 34.5 - 35
    assert recall_rows({"onnx": _mbeir(1, 2, 3)}, None)[0]["delta@1"] is None
    with pytest.raises(ValueError):
        recall_rows({"onnx": _mbeir(1, 2, 3)}, "torch")
    with pytest.raises(ValueError):
        recall_rows({"a": _mbeir(1, 2, 3), "b": {"average": _mbeir(1, 2, 3)["average"]}}, "a")


def test_task_label_and_loss_summary():
    assert task_label("mbeir_flickr8k_task6_test") == "image,text -> text"
    assert task_label("mbeir_x_task5_test") == ""  # not a UniIR task id
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_std([4.0]) == (4.0, 0.0)
    runs = [{"loss": "gcl", "seed": s, "results": _mbeir(0, 0, v)} for s, v in enumerate([60.0, 62.0, 64.0])]
    runs += [{"loss": "cl", "seed": 0, "results": _mbeir(0, 0, 50.0)}]
    rows = {(r["loss"], r["setting"]): r for r in loss_summary(runs)}
    assert rows[("gcl", "local")]["mean"] == pytest.approx(62.0) and rows[("gcl", "local")]["std"] == pytest.approx(2.0)
    assert rows[("gcl", "global")]["mean"] == pytest.approx(31.0) and rows[("gcl", "global")]["seeds"] == [0, 1, 2]
    assert rows[("cl", "local")]["std"] == 0.0 and rows[("cl", "local")]["summary"] == "50.00"  # one seed: no spread


def test_losses_markdown_gives_both_recalls_and_the_paired_lead(tmp_path: Path):
    runs = [{"loss": "gcl", "seed": s, "results": _mbeir(80.0 + s, 90.0 + 2 * s, 90.0 + 2 * s)} for s in (0, 1)]
    runs += [{"loss": "cl", "seed": s, "results": _mbeir(78.0, 90.0, 86.0)} for s in (0, 1)]
    text = losses_markdown({"runs": runs, "config": {"steps": None}})
    assert "the model's own starting temperature" in text
    assert "| loss | text -> image |" in text  # global R@5 per task, mean over seeds
    assert "| gcl | 45.5 |" in text and "| cl | 45.0 |" in text
    assert "starting temperature 0.02, learnable" in losses_markdown(
        {"runs": runs, "config": {"steps": None}, "recipe": {"temperature": 0.02}})
    said = losses_markdown({"runs": runs, "config": {"steps": None, "root": "runs/mbeir-dev"},
                            "recipe": {"epochs": 10.0, "data": ["d/flickr8k/captions.txt", "d/web-captions/captions.txt"]}})
    assert "on `runs/mbeir-dev`" in said and "10 epochs each on flickr8k, web-captions" in said  # which recipe, where
    assert "| gcl | 80.50 ± 0.71 | 91.00 ± 1.41 | 40.25 ± 0.35 | 45.50 ± 0.71 | 40.25 ± 0.35 | 45.50 ± 0.71 | 0,1 |" in text
    assert "| cl | 78.00 ± 0.00 | 86.00 ± 0.00 | 39.00 ± 0.00 | 43.00 ± 0.00 | 39.00 ± 0.00 | 45.00 ± 0.00 | 0,1 |" in text
    assert "| global text→photo R@1 | global text→photo R@5 |" in text
    one = losses_markdown({"runs": runs[2:3] + runs[:1], "config": {"steps": None}})  # one seed each: no spread
    assert "| gcl | 80.00 | 90.00 | 40.00 | 45.00 | 40.00 | 45.00 | 0 |\n| cl | 78.00 |" in one  # GCL first
    apart = [{**r, "results": {**r["results"], "mbeir_flickr8k_task0_test": {  # text -> image apart from the average
        "local": {"recall@1": 70.0, "recall@5": 95.0}, "global": {"recall@1": 11.0 + r["seed"], "recall@5": 33.0}}}}
        for r in runs]
    assert "| 40.25 ± 0.35 | 45.50 ± 0.71 | 11.50 ± 0.71 | 33.00 ± 0.00 | 0,1 |" in losses_markdown(
        {"runs": apart, "config": {"steps": None}})
    assert "seed 0: +1.00 / +2.00, seed 1: +1.50 / +3.00." in text
    assert "learnt" not in text  # runs without their final temperature: no column for it
    for r, tau in zip(runs, (0.08, 0.07, 0.03, 0.02), strict=True):
        r["final_temperature"] = tau
    learnt = losses_markdown({"runs": runs, "config": {"steps": None}, "recipe": {"temperature_lr_mult": 50.0}})
    assert "learnt at 50 x the lr." in learnt and "| learnt τ | seeds |" in learnt
    assert "| 45.50 ± 0.71 | 0.075 | 0,1 |" in learnt and "| 45.00 ± 0.00 | 0.025 | 0,1 |" in learnt
    from benchmarks.recall import plot

    png = plot({"benchmark": "recall-losses", "runs": runs, "rows": []}, tmp_path / "losses.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_recipe_reuses_only_a_run_of_the_asked_recipe(tmp_path: Path, monkeypatch):
    """The losses mode reuses a finished run only when its recorded recipe is the one asked for."""
    import dataclasses

    from edge_gcl.train import TrainConfig

    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(data=[str(tmp_path / "d" / "captions.txt")], split=f"{tmp_path / 'd' / 'splits.json'}:train",
                      loss="cl", seed=1, out="runs/x")
    record = dataclasses.asdict(dataclasses.replace(cfg, out="elsewhere", workers=7))
    record.update(data=["d/captions.txt"], split="d/splits.json:train")  # relative paths, same files
    assert same_recipe(record, cfg)
    for change in ({"loss": "gcl"}, {"seed": 2}, {"lr": 1e-3}, {"steps": 10}, {"split": "d/splits.json:dev"}):
        assert not same_recipe({**record, **change}, cfg), change
    assert not same_recipe({"loss": "cl"}, cfg)  # an old record without the recipe
    # CL trains alike whichever caption a photo+note fuses; GCL does not
    assert same_recipe({**record, "pair_caption": "other"}, cfg)
    gcl = dataclasses.replace(cfg, loss="gcl")
    assert not same_recipe({**record, "loss": "gcl", "pair_caption": "other"}, gcl)
    assert same_recipe({**record, "loss": "gcl"}, gcl)
    # under a recipe with GCL-only options, a CL run (which never has them) is still that recipe's ablation
    from edge_gcl.train import with_loss

    margin = dataclasses.replace(cfg, loss="gcl", modality_margin=0.08, text_photo_weight=2.0)
    assert same_recipe(record, with_loss(margin, "cl")) and not same_recipe(record, dataclasses.replace(margin, loss="cl"))
    old = {k: v for k, v in record.items() if k != "temperature_lr_mult"}  # a run older than the option
    assert same_recipe(old, cfg) and not same_recipe(old, dataclasses.replace(cfg, temperature_lr_mult=50.0))
    # per-source split lists and held-out exclusions (train's --split per --data, --exclude)
    listed = dataclasses.replace(cfg, split=[f"{tmp_path / 'd' / 'splits.json'}:train", "all"],
                                 exclude=[f"{tmp_path / 'h.json'}:heldout"])
    rec = dataclasses.asdict(dataclasses.replace(listed, out="elsewhere"))
    rec.update(split=["d/splits.json:train", "all"], exclude=["h.json:heldout"])
    assert same_recipe(rec, listed)
    assert not same_recipe({**rec, "exclude": []}, listed) and not same_recipe({**rec, "split": ["all", "all"]}, listed)
    # a source with no split entry is the whole source: `--recipe default` lists "all", older runs left it out
    three = dataclasses.replace(listed, data=[*listed.data, str(tmp_path / "e.txt"), str(tmp_path / "w.txt")],
                                split=[f"{tmp_path / 'd' / 'splits.json'}:train", "all"])
    rec3 = dataclasses.asdict(dataclasses.replace(three, out="elsewhere"))
    rec3.update(split=["d/splits.json:train", "all", "all"], exclude=["h.json:heldout"])
    assert same_recipe(rec3, three)
    assert not same_recipe({**rec3, "split": ["d/splits.json:train", "all", "d/splits.json:train"]}, three)
    # a checkpoint writes the package's recipe files as ${recipes}/...: the same files
    from edge_gcl.train import RECIPE_DIR, portable_record

    recipe = dataclasses.replace(cfg, exclude=[f"{RECIPE_DIR / 'flickr8k-extra-splits.json'}:heldout"])
    assert portable_record(recipe)["exclude"] == ["${recipes}/flickr8k-extra-splits.json:heldout"]
    assert same_recipe(portable_record(recipe), recipe)
    assert not same_recipe({**portable_record(recipe), "exclude": ["${recipes}/other.json:heldout"]}, recipe)


def test_losses_mode_keeps_recorded_runs_of_the_same_recipe_and_trains_the_rest(tmp_path: Path, monkeypatch):
    """A run whose figures an earlier result recorded under the same recipe is not trained again; one recorded
    under another recipe (or without its recipe) is."""
    import dataclasses

    import edge_gcl.train
    from benchmarks.recall import run_losses
    from edge_gcl.train import TrainConfig, portable_record

    data = tmp_path / "captions.txt"
    data.write_text("image,caption\n")
    base = TrainConfig(data=[str(data)], loss="gcl", epochs=15.0, pair_caption="other")
    out = tmp_path / "runs"
    results = {"average": {"global": {"recall@1": 50.0, "recall@5": 80.0, "recall@10": 90.0},
                           "local": {"recall@1": 60.0, "recall@5": 90.0, "recall@10": 95.0}}}

    def record(loss, seed, cfg):
        return {"loss": loss, "seed": seed, "checkpoint": str(out / f"{loss}-s{seed}"), "train_s": 3000.0,
                "final_temperature": 0.07, "results": results, "date": "2026-11-30T00:00:00Z",
                "train": portable_record(dataclasses.replace(cfg, seed=seed, out=str(out / f"{loss}-s{seed}")))}

    trained = []
    monkeypatch.setattr(edge_gcl.train, "train", lambda cfg: trained.append((cfg.loss, cfg.seed)) or 1 / 0)
    recorded = [record("gcl", 0, base), record("cl", 0, edge_gcl.train.with_loss(base, "cl"))]
    doc = run_losses(root=tmp_path, losses=["gcl", "cl"], seeds=[0], train_out=out, recipe=base, recorded=recorded,
                     log=lambda *_: None)
    assert trained == [] and [r["reused"] for r in doc["runs"]] == ["recorded", "recorded"]
    assert {(r["loss"], r["setting"], r["mean"]) for r in doc["rows"]} == {
        ("gcl", "global", 80.0), ("gcl", "local", 90.0), ("cl", "global", 80.0), ("cl", "local", 90.0)}
    # another recipe (10 epochs), or a record without its recipe: trained again
    for stale in ([record("gcl", 0, dataclasses.replace(base, epochs=10.0))],
                  [{k: v for k, v in record("gcl", 0, base).items() if k != "train"}]):
        with pytest.raises(ZeroDivisionError):
            run_losses(root=tmp_path, losses=["gcl"], seeds=[0], train_out=out, recipe=base, recorded=stale,
                       log=lambda *_: None)
        assert trained.pop() == ("gcl", 0)


def test_losses_result_merges_runs_recorded_meanwhile_and_refuses_a_damaged_file(tmp_path: Path, capsys):
    """Two sittings (or two processes, one loss each) share one result JSON: each save keeps the other's runs of
    other (loss, seed)s, and its own replace theirs. A file that is not a result JSON is named and left alone."""
    import json

    from benchmarks.recall import main, recorded_runs, with_recorded

    root = tmp_path / "bench"
    (root / "query").mkdir(parents=True)
    path = tmp_path / "losses.json"
    results = {"average": {"global": {"recall@5": 80.0}}}
    run = lambda loss, seed, r5=80.0: {"loss": loss, "seed": seed, "train": {}, "results": {"average": {"global": {"recall@5": r5}}}}  # noqa: E731
    assert recorded_runs(path, root) == []  # no file yet
    path.write_text(json.dumps({"benchmark": "recall-losses", "config": {"root": str(root)},
                                "runs": [run("cl", 0), run("gcl", 0, 70.0), {"loss": "pairwise", "seed": 0, "results": results}]}))
    merged = with_recorded([run("gcl", 0, 82.0)], path, root)
    assert [(r["loss"], r["results"]["average"]["global"]["recall@5"]) for r in merged] == [("gcl", 82.0), ("cl", 80.0)]
    assert with_recorded([run("gcl", 0)], path, tmp_path / "other-bench") == [run("gcl", 0)]  # another benchmark's runs
    assert with_recorded([run("gcl", 0)], path, root, lambda r: r["loss"] != "cl") == [run("gcl", 0)]  # another recipe's
    for damaged in ("{not json", json.dumps({"runs": "cl"}), "[1, 2]"):
        path.write_text(damaged)
        code = main(["--root", str(root), "--losses", "cl", "--seeds", "0", "--json", str(path)])
        err = capsys.readouterr().err
        assert code == 2 and f"error: {path}: not a readable result JSON" in err and "Traceback" not in err
        assert path.read_text() == damaged


def test_default_recipe_expands_the_recorded_paths_so_train_can_open_them(tmp_path: Path):
    """The losses mode trains from the default's record: its ${recipes}/ and ~/ paths become real paths."""
    import json

    from benchmarks.recall import default_recipe
    from edge_gcl.train import RECIPE_DIR, TrainConfig

    record = {"loss": "gcl", "data": ["d/captions.txt"], "split": ["d/splits.json:train", "all"],
              "exclude": ["${recipes}/flickr8k-extra-splits.json:heldout"], "cache_dir": "~/.cache/x", "unknown": 1}
    meta = tmp_path / "edge_gcl.json"
    meta.write_text(json.dumps({"train": record}))
    cfg = default_recipe(meta)
    assert isinstance(cfg, TrainConfig)
    assert cfg.exclude == [f"{RECIPE_DIR}/flickr8k-extra-splits.json:heldout"]
    assert Path(cfg.exclude[0].rpartition(":")[0]).is_file()
    assert cfg.cache_dir == str(Path.home() / ".cache" / "x")
    assert cfg.split == ["d/splits.json:train", "all"] and cfg.data == ["d/captions.txt"]


# ----------------------------------------------------------------------------- latency pieces


class _FakeEncoder:
    """Stands in for an OnnxEmbedder: records what the encode calls are given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[np.ndarray, ...]]] = []

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(("image", (pixels,)))
        return np.zeros((len(pixels), 4), np.float32)

    def encode_texts(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.calls.append(("text", (ids, mask)))
        return np.zeros((len(ids), 4), np.float32)


def test_encode_calls_run_the_embedders_public_encoders_on_the_given_tensors():
    px, ids, mask = np.ones((2, 3, 8, 8), np.float32), np.ones((2, 5), np.int64), np.zeros((2, 5), np.int64)
    for form in ("onnx", "qdq", "htp"):
        fake = _FakeEncoder()
        calls = encode_calls(form, fake, px, ids, mask)
        assert set(calls) == {"image", "text"} and not fake.calls  # built, not run
        calls["image"]()
        calls["text"]()
        assert [name for name, _ in fake.calls] == ["image", "text"]
        assert fake.calls[0][1][0] is px and fake.calls[1][1][0] is ids and fake.calls[1][1][1] is mask


def test_aihub_rows_from_a_profile(tmp_path: Path):
    from export.aihub import PROFILE_FORMAT, PROFILE_FORMAT_VERSION

    doc = {"format": PROFILE_FORMAT, "format_version": PROFILE_FORMAT_VERSION, "device": "Galaxy S24",
           "runtime": "qnn_context_binary",
           "towers": {"image": {"device": "Galaxy S24", "runtime": "qnn_context_binary", "inference_ms": 2.5,
                                "peak_memory_mb": 12.0, "layer_counts": {"NPU": 10, "GPU": 0, "CPU": 0}},
                      "text": {"inference_ms": None, "peak_memory_mb": None}}}
    (tmp_path / "aihub_profile.json").write_text(json.dumps(doc))
    rows = {r["tower"]: r for r in aihub_rows([tmp_path / "aihub_profile.json"])}
    assert rows["image"]["where"] == "Galaxy S24 (qnn_context_binary)"
    assert rows["image"]["items_per_s"] == pytest.approx(400.0) and rows["image"]["peak_rss_mb"] == 12.0
    assert rows["text"]["median_ms"] is None and rows["text"]["items_per_s"] is None


# ----------------------------------------------------------------------------- index end to end


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory: pytest.TempPathFactory) -> bindex.IndexBench:
    return bindex.run(sizes=[2000], dims=[32], dtypes=["float32", "int8"], approx_dtypes=["float32"], queries=12,
                      warmup=1, bandwidth_mb=8, photos=0, workdir=tmp_path_factory.mktemp("work"), log=lambda s: None)


def test_index_exact_search_equals_faiss_flat(small_bench: bindex.IndexBench):
    import faiss

    xb, xq = bindex.synthetic(2000, 12, 32, seed=0)
    flat = faiss.IndexFlatIP(32)
    flat.add(xb)
    expected = flat.search(xq, 10)[1]
    np.testing.assert_array_equal(small_bench.ids[("index-exact", 32, 2000, "float32")], expected)
    np.testing.assert_array_equal(small_bench.ids[("faiss-flat", 32, 2000, "float32")], expected)
    row = next(r for r in small_bench.rows if (r["method"], r["dtype"]) == ("index-exact", "float32"))
    assert row["recall@10"] == 1.0 and row["same_top10"] == 1.0 and row["exact"]
    assert row["bytes_scanned"] == 2000 * 32 * 4 and row["scan_dtype"] == "float32"  # from IndexStats
    assert row["x_floor"] == pytest.approx(row["median_ms"] / bindex.floor_ms(row["bytes_scanned"],
                                                                              small_bench.bandwidth["floor_gbps"]))
    assert row["x_copy_floor"] == pytest.approx(row["median_ms"] / bindex.floor_ms(row["bytes_scanned"],
                                                                                   small_bench.bandwidth["copy_gbps"]))
    assert row["x_copy_floor"] <= row["x_floor"]  # the copy bandwidth is never above the fastest


def test_index_approximate_recall_is_computed(small_bench: bindex.IndexBench):
    truth = small_bench.truth[(32, 2000)]
    for method in ("index-approx", "usearch-hnsw"):
        row = next(r for r in small_bench.rows if r["method"] == method)
        ids = small_bench.ids[(method, 32, 2000, "float32")]
        by_hand = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist(), strict=True)])
        assert row["recall@10"] == pytest.approx(by_hand)
        assert 0.5 < row["recall@10"] <= 1.0 and not row["exact"] and "x_floor" not in row
    int8 = next(r for r in small_bench.rows if (r["method"], r["dtype"]) == ("faiss-sq", "int8"))
    assert int8["bytes_scanned"] == 2000 * 32  # one byte per element
    ours = next(r for r in small_bench.rows if (r["method"], r["dtype"]) == ("index-exact", "int8"))
    assert (ours["bytes_scanned"], ours["scan_dtype"]) == (2000 * 32, "int8")  # scanned as stored
    assert {r["method"] for r in small_bench.rows} == set(bindex.METHODS)
    assert not any(r["method"] == "index-approx" and r["dtype"] == "int8" for r in small_bench.rows)


def test_index_main_writes_json_plot_and_the_report_renders_it(tmp_path: Path, capsys):
    out = tmp_path / "results"
    rc = bindex.main(["--sizes", "500,1000", "--dims", "16", "--dtypes", "float16", "--approx-dtypes", "float16",
                      "--queries", "5", "--warmup", "1", "--bandwidth-mb", "8", "--photos", "0",
                      "--workdir", str(tmp_path), "--json", str(out / "index.json"), "--plot", str(out / "index.png")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "index-exact" in printed and "faiss-sq" in printed
    doc = load_json(out / "index.json", "index")
    assert {r["n"] for r in doc["rows"]} == {500, 1000} and doc["bandwidth"]["floor_gbps"] > 0
    assert (out / "index.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = render(out, doc_dir=tmp_path)
    assert "### Index search" in md and "![Index search](results/index.png)" in md
    assert "| 16 | float16 | index-exact |" in md and "### Latency" not in md
    assert math.isfinite(doc["rows"][0]["median_ms"])
    # a second index run saved as index_million.json gets its own section, with the command that wrote it
    (out / "index_million.json").write_text((out / "index.json").read_text())
    md = render(out, doc_dir=tmp_path)
    assert md.index("### Index search\n") < md.index("### Index search at a million vectors")
    assert "`python -m benchmarks.index --million --json benchmarks/results/index_million.json" in md


def test_index_cache_is_built_once_and_reused_with_its_recorded_build_times(tmp_path: Path):
    cache = tmp_path / "cache"

    def once() -> bindex.IndexBench:
        return bindex.run(sizes=[1500], dims=[24], dtypes=["int8"], approx_dtypes=["int8"], queries=5, warmup=1,
                          bandwidth_mb=8, photos=0, workdir=tmp_path, cache=cache, log=lambda s: None)

    first, second = once(), once()
    folder = cache / "index-d24-int8-n1500-s0"
    assert {p.name for p in folder.iterdir()} >= {"index.sqlite", "index.vectors", "index.usearch", "bench-build.json"}
    assert (cache / "usearch-d24-int8-n1500-s0.usearch").is_file()
    for bench, cached in ((first, False), (second, True)):
        rows = {r["method"]: r for r in bench.rows if r["method"].startswith(("index", "usearch"))}
        assert {r["cached"] for r in rows.values()} == {cached} and bench.ingest[0]["cached"] is cached
        exact = rows["index-exact"]
        assert exact["open_from_file"] == 1500 and 0 < exact["open_imports_rss_mb"] <= exact["open_rss_mb"]
        assert exact["vectors_mb"] * 2**20 == 4096 + 1500 * (24 + 24)
    for method in ("index-approx", "usearch-hnsw"):  # reused: the build time recorded when it was built
        build = [next(r["build_s"] for r in b.rows if r["method"] == method) for b in (first, second)]
        assert build[0] == build[1] > 0
    assert first.ingest[0]["seconds"] == second.ingest[0]["seconds"]
    np.testing.assert_array_equal(first.ids[("index-exact", 24, 1500, "int8")],
                                  second.ids[("index-exact", 24, 1500, "int8")])


def test_sync_benchmark_finds_every_synthetic_file_unchanged(tmp_path: Path):
    row = bindex.sync_folder(120, workdir=tmp_path, per_folder=50)
    assert (row["files"], row["added"], row["unchanged"]) == (120, 120, 120)
    assert sorted(p.name for p in (tmp_path / "sync-photos").iterdir()) == [".complete", "0000", "0001", "0002"]
    assert row["sync_s"] > 0 and row["files_per_s"] == pytest.approx(120 / row["sync_s"])
    kept = tmp_path / "kept"
    bindex.sync_folder(30, workdir=tmp_path / "a", per_folder=50, files=kept)
    before = {p: p.stat().st_mtime_ns for p in kept.rglob("*.jpg")}
    again = bindex.sync_folder(30, workdir=tmp_path / "b", per_folder=50, files=kept)  # the files are reused
    assert again["added"] == again["unchanged"] == 30 and {p: p.stat().st_mtime_ns for p in before} == before


def test_million_preset_fills_only_the_flags_left_at_their_defaults(monkeypatch):
    seen = {}

    def fake_run(**kw):
        seen.update(kw)
        return bindex.IndexBench()

    monkeypatch.setattr(bindex, "run", fake_run)
    bindex.main(["--million", "--dims", "64", "--json", "", "--plot", ""])
    assert seen["sizes"] == [100_000, 1_000_000] and seen["dims"] == [64]  # --dims given: kept
    assert (seen["dtypes"], seen["approx_dtypes"], seen["approx_dims"]) == (["float16", "int8"], ["int8"], [512])
    assert (seen["usearch_max_n"], seen["sync_files"], seen["photos"]) == (100_000, 100_000, 0)
    assert seen["cache"] == "runs/bench-index-cache"


def test_gap_markdown_lists_each_task_and_model():
    rows = [{"task": "text -> image", "model": m, "positive": 0.5, "cos image": 0.1, "above image": 0.25,
             "above text": a} for m, a in (("gcl", 4.4), ("cl", 30.58))]
    text = gap_markdown({"rows": rows, "config": {"root": "runs/x"}})
    assert "| text -> image | gcl | 0.500 | 0.100 | 0.25 | 4.40 |" in text
    assert "| text -> image | cl | 0.500 | 0.100 | 0.25 | 30.58 |" in text and "`runs/x`" in text


def test_recipe_trials_read_a_trials_own_calibration(tmp_path: Path, monkeypatch) -> None:
    import benchmarks.recipe_trials as trials

    fit = {"cross_modal_offset": 0.08, "recall@5_with": 81.9, "recall@5_cross_validated": 81.6,
           "recall@5_with_per_task": {"mbeir_phone_task0_test": 80.8, "mbeir_phone_task1_test": 73.2}}
    (tmp_path / "calibration_fit.json").write_text(json.dumps({"offset_fit": fit}))
    monkeypatch.setattr(trials.subprocess, "run", lambda *a, **k: pytest.fail("calibrated again"))
    assert trials.calibrated(tmp_path, "runs/mbeir-phone-dev", log=lambda _: None) == {
        "offset": 0.08, "global_r5_offset": 81.9, "global_r5_offset_cv": 81.6, "t2i_r5_offset": 80.8}
    command = trials.calibrate_command(tmp_path, "root")
    assert command[1:5] == ["-m", "benchmarks.calibrate", "--root", "root"]
    assert command[-1] == str(tmp_path / "calibration_fit.json")  # not calibration.json: the index reads that


def test_recipe_trials_summary_is_the_mean_and_sample_std_over_each_trials_seeds() -> None:
    from benchmarks.recipe_trials import summarize_trials

    rows = [{"trial": "a", "seed": 1, "global_r5": 80.07, "t2i_r5": 71.72},
            {"trial": "b", "seed": 0, "global_r5": 81.48},
            {"trial": "a", "seed": 0, "global_r5": 79.88, "t2i_r5": 70.71},
            {"trial": "a", "seed": 2, "global_r5": 79.75, "t2i_r5": 70.10}]
    a, b = summarize_trials(rows)
    assert (a["trial"], a["seeds"], b["trial"], b["seeds"]) == ("a", "0,1,2", "b", "0")
    assert a["global_r5"] == "79.90 ± 0.16" and a["t2i_r5"] == "70.84 ± 0.82"  # std with n - 1
    assert b["global_r5"] == "81.48" and b["t2i_r5"] is None and a["local_r5"] is None


def test_recipe_trials_resolve_to_the_recipe_they_name(tmp_path: Path) -> None:
    """pairother-ep15 is the recipe itself; margin08 the recipe before it; f8k+extra+web the recipe before the margin
    (its three sources, no margin). Every trial names its base in full, so a new recipe does not change what it trains."""
    import dataclasses

    from benchmarks.recipe_trials import TRIALS, trial_commands
    from edge_gcl.cli import build_parser
    from edge_gcl.train import load_recipe, resolve_config

    def resolved(trial: str):
        train, _, _ = trial_commands(trial, 0, root="root", data_root=str(tmp_path))
        return dataclasses.replace(resolve_config(build_parser().parse_args(train[1:])), out="x", recipe=None)

    recipe = dataclasses.replace(load_recipe("default", data_root=tmp_path), out="x", recipe=None)
    assert resolved("pairother-ep15") == recipe
    margin = resolved("margin08")
    assert (margin.pair_caption, margin.epochs, margin.modality_margin) == ("same", 10, 0.08)
    assert dataclasses.replace(margin, pair_caption="other", epochs=15.0, modality_margin=0.0) == recipe
    before = resolved("f8k+extra+web")
    assert before.modality_margin == 0 and before.data == recipe.data
    assert dataclasses.replace(before, modality_margin=0.08, split=margin.split) == margin
    assert [s.rsplit(":", 1)[1] for s in before.split] == ["train", "train"]  # flickr8k and extra; web whole
    for flags in TRIALS.values():  # every trial names its caption, epochs and margin
        assert {"--pair-caption", "--epochs", "--modality-margin"} <= set(flags)


# ----------------------------------------------------------------------------- where results go (issue 34)


def test_a_harness_writes_under_runs_unless_told(tmp_path: Path, monkeypatch, capsys):
    """Run with no --json, a benchmark writes runs/benchmarks/ (from the clone's root), never the committed
    benchmarks/results/."""
    from benchmarks.common import RESULTS_DIR

    committed = {p.name: p.stat().st_mtime_ns for p in RESULTS_DIR.iterdir()}
    monkeypatch.chdir(tmp_path)
    assert bindex.main(["--sizes", "300", "--dims", "8", "--dtypes", "float16", "--approx-dtypes", "float16",
                        "--methods", "index-exact", "--queries", "3", "--warmup", "1", "--bandwidth-mb", "8",
                        "--photos", "0", "--workdir", str(tmp_path)]) == 0
    assert (tmp_path / "runs" / "benchmarks" / "index.json").is_file()
    assert (tmp_path / "runs" / "benchmarks" / "index.png").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in RESULTS_DIR.iterdir()} == committed


def test_the_report_rewrites_the_doc_only_from_the_committed_results(tmp_path: Path, monkeypatch, capsys):
    import benchmarks.report as report
    from benchmarks import index, ingest, latency, recall

    results = tmp_path / "benchmarks" / "results"
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir(parents=True)
    doc.write_text(f"# Results\n\n{START}\nold\n{END}\n")
    monkeypatch.setattr(report, "RESULTS_DIR", results)
    monkeypatch.setattr(report, "ensure_artifacts", lambda model, artifacts, log: artifacts)
    ran = []

    def fake(name):
        def main(argv):
            ran.append((name, argv))
            out = Path(argv[argv.index("--json") + 1])
            save_json(out, make_document("index", [{"dim": 8, "dtype": "float16", "method": "index-exact", "n": 300,
                                                    "median_ms": 0.1, "recall@10": 1.0, "exact": True}], config={}))
            return 0
        return main

    for module in (index, ingest, latency, recall):
        monkeypatch.setattr(module, "main", fake(module.__name__))
    monkeypatch.chdir(tmp_path)
    assert report.main(["--only", "index", "--doc", str(doc)]) == 0
    assert (tmp_path / "runs" / "benchmarks" / "index.json").is_file() and "old" in doc.read_text()
    assert "results in runs/benchmarks" in capsys.readouterr().out
    assert ran[-1][1][:2] == ["--artifacts", "runs/bench-artifacts"]  # no ./artifacts here
    assert report.main(["--only", "index", "--doc", str(doc), "--out", str(results)]) == 0
    text = doc.read_text()
    assert "old" not in text and "### Index search" in text and (results / "index.json").is_file()
    doc.write_text(f"# Results\n\n{START}\nold\n{END}\n")
    assert report.main(["--render-only", "--doc", str(doc)]) == 0 and "### Index search" in doc.read_text()


def test_the_report_uses_the_artifacts_the_set_up_built(tmp_path: Path, monkeypatch):
    """`python -m export.compile --target snapdragon` built ./artifacts from the default model: the report
    (and --smoke) run on it instead of exporting the same model again (issue 34: 3.8 of --smoke's 4.4 min)."""
    from benchmarks.report import built_artifacts

    monkeypatch.chdir(tmp_path)
    assert built_artifacts("default") is None
    (tmp_path / "artifacts").mkdir()
    manifest = {"format_version": 1, "model_id": "lite-1", "model_name": "lite", "embed_dim": 8, "image": {"size": 8},
                "text": {"context_length": 8}, "towers": {}, "files": {}, "extra": {"source_model": "default"}}
    (tmp_path / "artifacts" / "manifest.json").write_text(json.dumps(manifest))
    assert built_artifacts("default") == Path("artifacts")
    assert built_artifacts("runs/other-model") is None  # built from another model: not this report's

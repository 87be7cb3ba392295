"""`python -m benchmarks.recipe_trials`: train recipe variants and score them on the phone dev benchmark.

    python -m benchmarks.recipe_trials --trials f8k,f8k+extra,default --seeds 0
    python -m benchmarks.recipe_trials --collect          # table of the runs already in the results

Each trial is `edge-gcl train --recipe default` plus the flags below (the recipe's held-out lists
always apply), trained into `runs/trials/<trial>-s<seed>` and evaluated with `edge-gcl eval mbeir
--root <phone root> --model <run>`. Trials may run side by side (each saves under a file lock),
but they share 2 cores: compare train times only between trials run alike. Every finished trial is
appended to `benchmarks/results/recipe_trials.json` at once, with its commands, the wall time of
training (stem caching included when it happened in that run), the data it saw and the figures:
local / global average R@1 / R@5 and global text→image R@1 / R@5. Losing trials stay in the file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock

from benchmarks.common import (
    Col,
    default_out,
    format_table,
    machine_info,
    make_document,
    parse_list,
    save_json,
)

RESULTS = default_out("recipe_trials.json")  # benchmarks/results/recipe_trials.json: the committed ledger
F8K, EXTRA = "${data}/flickr8k", "${data}/flickr8k-extra"
CONFIGS = Path(__file__).parent / "trial_configs"
SPLITS = str(Path(__file__).resolve().parents[1] / "edge_gcl" / "recipes" / "flickr8k-extra-splits.json")

# trial -> flags after `edge-gcl train --recipe default` (${data} is --data-root)
TRIALS: dict[str, list[str]] = {
    "f8k": ["--data", f"{F8K}/captions.txt", "--split", f"{F8K}/splits.json:train"],
    "f8k+extra": ["--data", f"{F8K}/captions.txt", "--split", f"{F8K}/splits.json:train",
                  "--data", f"{EXTRA}/captions.txt", "--split", f"{SPLITS}:train"],
    # the recipe before the margin
    "f8k+extra+web": ["--data", f"{F8K}/captions.txt", "--split", f"{F8K}/splits.json:train",
                      "--data", f"{EXTRA}/captions.txt", "--split", f"{SPLITS}:train",
                      "--data", "${data}/web-captions/captions.txt"],
    # As run at commit a1c1e92, when the default recipe held all three sources (flickr8k-extra and web-captions
    # at 5 epochs: the step budget of f8k+extra's 10, 300 vs 290 steps).
    "default-5ep": ["--epochs", "5"],
    "b512": ["--batch-size", "512"],  # the recipe with twice the in-batch negatives (same epochs: half the steps)
    "hardneg32": ["--hard-negatives", "32"],  # batches of whole groups of ~32 photos with alike captions
    "hardneg4": ["--hard-negatives", "4"],  # softer: ~64 groups of ~4 alike photos per batch of 256
    "lite2": ["--model", "lite2"],
    "ep15": ["--epochs", "15"],  # the recipe trained 1.5 times longer (900 steps)
    "lite2-ep15": ["--model", "lite2", "--epochs", "15"],
    # Lite0 with twice the fine-tuned depth: top 4 image blocks and top 4 MiniLM layers (a new stem cache)
    "i4t4": ["--model", str(CONFIGS / "lite-i4-t4.json")],
    # GCL with a modality margin of 0.08 (the default's calibrated search offset), trained into the embeddings
    "margin08": ["--modality-margin", "0.08"],  # the recipe before pairother-ep15
    "margin25": ["--modality-margin", "0.25"],  # three times that margin (about 3 logits at the learned tau)
    # the photo+note fuses another caption of its photo (flickr8k's five; web-captions has one), as in the
    # benchmark, where a query's words are never the note of the photo+note it looks for
    "pairother": ["--pair-caption", "other"],
    # both: the other-caption photo+note, whose text->photo R@5 fell 1.0, with the margin that asks a text
    # query's photo to beat its notes
    "pairother+margin08": ["--pair-caption", "other", "--modality-margin", "0.08"],
    # the other-caption photo+note in batches of ~64 groups of ~4 photos with alike captions: a text query's
    # notes of like scenes, which outrank its photo more often under --pair-caption other, become negatives
    "pairother+hardneg4": ["--pair-caption", "other", "--hard-negatives", "4"],
    # the other-caption photo+note with the note<->photo positives weighing 2 against the other four's 1: a typed
    # query's photo must beat the notes of like scenes that outrank it more often under --pair-caption other
    "pairother+tpw2": ["--pair-caption", "other", "--text-photo-weight", "2"],
    # 5 -> 10 epochs raised text->photo R@5 by 8.7 points (trial default-5ep): under-trained still at 10?
    "pairother-ep15": ["--pair-caption", "other", "--epochs", "15"],  # now the recipe itself
    "lite2-f8k+extra": ["--model", "lite2", "--data", f"{F8K}/captions.txt", "--split", f"{F8K}/splits.json:train",
                        "--data", f"{EXTRA}/captions.txt", "--split", f"{SPLITS}:train"],
}


# Every trial above was run against the recipe as it stood before pairother-ep15 became it: the same caption in
# the photo+note, 10 epochs, no modality margin. Each trial names that base in full, so a row still trains what
# it trained whatever the recipe becomes (margin08 was the recipe from 2026-11-30 until pairother-ep15 replaced it).
TRIAL_BASE = ["--pair-caption", "same", "--epochs", "10", "--modality-margin", "0"]
TRIALS = {name: TRIAL_BASE + flags for name, flags in TRIALS.items()}


def trial_commands(trial: str, seed: int, *, root: str, data_root: str) -> tuple[list[str], list[str], Path]:
    """(train command, eval command, run folder) of one trial."""
    out = Path("runs/trials") / f"{trial}-s{seed}"
    flags = [f.replace("${data}", data_root) for f in TRIALS[trial]]
    train = ["edge-gcl", "train", "--recipe", "default", "--data-root", data_root, *flags, "--seed", str(seed),
             "--out", str(out)]
    evaluate = ["edge-gcl", "eval", "mbeir", "--root", root, "--model", str(out), "--json", str(out / "phone_dev.json")]
    return train, evaluate, out


def calibrate_command(out: Path, root: str) -> list[str]:
    """Fits the trial's own cross-modal offset (benchmarks.calibrate): the recipes compared as search ranks."""
    return [sys.executable, "-m", "benchmarks.calibrate", "--root", root, "--model", str(out),
            "--json", str(out / "calibration_fit.json")]


def calibrated(out: Path, root: str, log=print) -> dict[str, Any]:
    """The trial's figures with its own calibrated offset (running benchmarks.calibrate once)."""
    path = out / "calibration_fit.json"  # not calibration.json: that one the index would read as the model's
    if not path.is_file():
        command = calibrate_command(out, root)
        log("$ " + " ".join(command[1:]).replace("-m benchmarks", "python -m benchmarks", 1))
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    fit = json.loads(path.read_text())["offset_fit"]
    t2i = [v for t, v in fit["recall@5_with_per_task"].items() if t.endswith("task0_test")]
    return {"offset": fit["cross_modal_offset"], "global_r5_offset": fit["recall@5_with"],
            "global_r5_offset_cv": fit["recall@5_cross_validated"], "t2i_r5_offset": t2i[0] if t2i else None}


def summarize(eval_json: dict[str, Any]) -> dict[str, float]:
    """The figures a trial is judged by, from `edge-gcl eval mbeir --json`."""
    avg, head = eval_json["average"], eval_json["headline"]["text -> image"]
    return {"local_r1": avg["local"]["recall@1"], "local_r5": avg["local"]["recall@5"],
            "global_r1": avg["global"]["recall@1"], "global_r5": avg["global"]["recall@5"],
            "t2i_r1": head["recall@1"], "t2i_r5": head["recall@5"]}


def run_trial(trial: str, seed: int, *, root: str, data_root: str, log=print) -> dict[str, Any]:
    train, evaluate, out = trial_commands(trial, seed, root=root, data_root=data_root)
    out.mkdir(parents=True, exist_ok=True)
    log("$ " + " ".join(train))
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine slows training down
    t0 = time.time()
    with open(out / "train.out", "w") as f:
        subprocess.run(train, stdout=f, stderr=subprocess.STDOUT, check=True)
    train_s = time.time() - t0
    log("$ " + " ".join(evaluate))
    subprocess.run(evaluate, stdout=subprocess.DEVNULL, check=True)
    meta = json.loads((out / "edge_gcl.json").read_text())
    text = (out / "train.out").read_text(errors="replace")
    steps_s = re.search(r"done: \d+ steps in (\d+) s", text)
    return {"trial": trial, "seed": seed, "model": meta["model"]["name"],
            "image_backbone": meta["model"]["lite"]["image_backbone"], "photos": meta["data"]["photos"],
            "captions": meta["data"]["captions"], "steps": meta["step"], "train_s": round(train_s),
            "steps_s": int(steps_s.group(1)) if steps_s else None,
            "temperature": 1 / math.exp(_logit_scale(out)), "load_1m_before": load_before,
            **summarize(json.loads((out / "phone_dev.json").read_text())), **calibrated(out, root, log),
            "train_command": " ".join(train), "eval_command": " ".join(evaluate)}


def _logit_scale(out: Path) -> float:
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        return float(f.get_tensor("logit_scale"))


COLUMNS = [Col("trial"), Col("seed"), Col("image_backbone", "image tower"), Col("photos"), Col("steps"),
           Col("train_s", "train s"), Col("local_r1", "local R@1", ".2f"), Col("local_r5", "local R@5", ".2f"),
           Col("global_r1", "global R@1", ".2f"), Col("global_r5", "global R@5", ".2f"),
           Col("t2i_r1", "t→i R@1", ".2f"), Col("t2i_r5", "t→i R@5", ".2f"), Col("temperature", "τ", ".3f"),
           Col("offset", "offset", ".2f"), Col("global_r5_offset", "global R@5 +offset", ".2f"),
           Col("global_r5_offset_cv", "(cross-val.)", ".2f"), Col("t2i_r5_offset", "t→i R@5 +offset", ".2f")]


SUMMARY_KEYS = {"global_r5": "global avg R@5", "global_r1": "global avg R@1", "t2i_r5": "t→i R@5",
                "t2i_r1": "t→i R@1", "local_r5": "local avg R@5", "global_r5_offset": "global R@5 +offset",
                "global_r5_offset_cv": "(cross-val.)", "t2i_r5_offset": "t→i R@5 +offset"}


def summarize_trials(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trial: its seeds and each figure as "mean ± std" over them (sample std; a lone seed
    is its value), trials in the order they first appear."""
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_trial.setdefault(row["trial"], []).append(row)
    out = []
    for trial, runs in by_trial.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        summary: dict[str, Any] = {"trial": trial, "seeds": ",".join(str(r["seed"]) for r in runs)}
        for key in SUMMARY_KEYS:
            values = [r[key] for r in runs if r.get(key) is not None]
            if not values:
                summary[key] = None
            elif len(values) == 1:
                summary[key] = f"{values[0]:.2f}"
            else:
                mean = sum(values) / len(values)
                std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
                summary[key] = f"{mean:.2f} ± {std:.2f}"
        out.append(summary)
    return out


SUMMARY_COLUMNS = [Col("trial"), Col("seeds")] + [Col(k, h) for k, h in SUMMARY_KEYS.items()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.recipe_trials", description=__doc__.splitlines()[0])
    p.add_argument("--trials", default="", help=f"comma-separated, of: {', '.join(TRIALS)}")
    p.add_argument("--seeds", default="0")
    p.add_argument("--root", default="runs/mbeir-phone-dev", help="the phone dev benchmark's M-BEIR root "
                   "(edge-gcl bench build-mbeir --layout phone --out ...)")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--json", default=RESULTS, help="the trials' ledger: read, and each finished trial merged into "
                   "it (benchmarks/results/recipe_trials.json: the committed one)")
    p.add_argument("--collect", action="store_true", help="only print the table of the saved trials")
    p.add_argument("--calibrate", action="store_true",
                   help="fit the offset of saved trials that have none and whose run folder is here, then print")
    args = p.parse_args(argv)
    path = Path(args.json)
    doc = json.loads(path.read_text()) if path.is_file() else None
    rows = list(doc["rows"]) if doc else []
    if args.calibrate:
        found = {}
        for row in rows:
            out = Path("runs/trials") / f"{row['trial']}-s{row['seed']}"
            if "offset" not in row and (out / "model.safetensors").is_file():
                found[(row["trial"], row["seed"])] = calibrated(out, args.root)
        with FileLock(str(path) + ".lock"):  # merged into what is saved now: trials may have finished since
            doc = json.loads(path.read_text())
            rows = [r | found.get((r["trial"], r["seed"]), {}) for r in doc["rows"]]
            save_json(path, {**doc, "rows": rows})
        args.collect = True
    if not args.collect:
        if not (Path(args.root) / "query").is_dir():
            p.error(f"{args.root}: no phone benchmark there; build it with edge-gcl bench build-mbeir --layout phone")
        for trial in parse_list(args.trials):
            if trial not in TRIALS:
                p.error(f"unknown trial {trial!r}: expected one of {', '.join(TRIALS)}")
            for seed in parse_list(args.seeds, int):
                row = run_trial(trial, seed, root=args.root, data_root=args.data_root)
                with FileLock(str(path) + ".lock"):  # trials may run side by side: merge with what they saved
                    doc = json.loads(path.read_text()) if path.is_file() else None
                    rows = [r for r in (doc["rows"] if doc else []) if (r["trial"], r["seed"]) != (trial, seed)] + [row]
                    save_json(path, make_document("recipe-trials", rows, config={"root": args.root,
                                                                             "data_root": args.data_root},
                                                  machine=machine_info()))
                print(format_table([row], COLUMNS), flush=True)
    print(format_table(rows, COLUMNS, title=f"phone dev benchmark ({path})"))
    print(format_table(summarize_trials(rows), SUMMARY_COLUMNS, title="per trial, mean ± std over its seeds"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`edge-gcl`: the command line. This file is the CLI contract; each handler lives with its concern.

    edge-gcl train ...                    edge_gcl/train/ (loop.py)
    edge-gcl eval mbeir ...               edge_gcl/eval/cli.py
    edge-gcl eval mmeb|covr ...           edge_gcl/eval/cli.py
    edge-gcl bench build-mbeir ...        edge_gcl/eval/cli.py
    edge-gcl index add|sync|note|list|remove|reindex|repair|read-text|stats ...   edge_gcl/index/cli.py
    edge-gcl search "query" ...           edge_gcl/index/cli.py
    edge-gcl app --photos DIR             edge_gcl/app/server.py
    edge-gcl status                       edge_gcl/status.py

Handlers are imported only when their command runs, so `edge-gcl search` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .extras import missing_extra


def _handler(target: str):
    """The handler `module:function`, imported when its command runs. A module that an absent extra
    installs (torch for `train`, ...) is one line naming the extra, exit status 1, not a traceback."""

    def run(args: argparse.Namespace) -> int | None:
        module, func = target.split(":")
        try:
            return getattr(importlib.import_module(module), func)(args)
        except ModuleNotFoundError as e:
            line = missing_extra(e, what=_command(args))
            if line is None:
                raise
            print(f"edge-gcl: error: {line}", file=sys.stderr)
            return 1

    return run


def _command(args: argparse.Namespace) -> str:
    """`edge-gcl eval mbeir`, ...: the command words `args` was parsed from."""
    words = [args.command] + [getattr(args, f"{args.command}_command", None) or ""]
    return " ".join(["edge-gcl", *filter(None, words)])


MODALITY_CHOICES = ["all", "photo", "note", "photo+note"]  # the app's modality= takes the same
USER_HELP = """Search your photos and notes by words, by a photo, or both. Everything runs on this
device: nothing is uploaded."""
USER_EPILOG = """getting started:
  edge-gcl index add ~/Pictures          index a folder of photos (JPEG, PNG, HEIC, ...)
  edge-gcl search "dog on the beach"     search it (-k 20, --after 2024-06, --sort date, --all)
  edge-gcl index note "passport renewal receipt"
  edge-gcl index list                    what is indexed, newest first
  edge-gcl app --photos ~/Pictures       the same in your browser
  edge-gcl status                        which model and index these use, and what they run on

`edge-gcl COMMAND --help` lists a command's options. Training and evaluation: train, eval, bench."""


class _ShowDefaults(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help unless it says its default itself or has none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".strip()


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("edge-gcl")
    except (ImportError, PackageNotFoundError):
        from . import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-gcl", description=USER_HELP, epilog=USER_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"edge-gcl {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # --- train ---------------------------------------------------------------------------
    t = sub.add_parser("train", help="fine-tune a model with GCL (or the CL / pairwise baselines)",
                       description="Fine-tune a dual encoder with GCL on image-caption pairs: on the CPU, a GPU, or "
                       "several processes and machines under torchrun. Flags override --config, which overrides "
                       "--recipe. Details: docs/training.md.")
    t_what = t.add_argument_group("what to train")
    t_what.add_argument("--recipe", help="a named recipe (edge_gcl/recipes/NAME.json, e.g. default: the shipped model) "
                   "or a recipe JSON; --config and flags override it")
    t_what.add_argument("--data-root", help="the folder a recipe's ${data} names (default: ../shared/data)")
    t_what.add_argument("--config", help="JSON file of training options (flags override it)")
    t_what.add_argument("--model", help="model name, model config .json, checkpoint folder, HF CLIP folder or TinyCLIP .pt (default: lite)")
    t_what.add_argument("--loss", choices=["gcl", "cl", "pairwise"], help="default: gcl")
    t_data = t.add_argument_group("data", "image-caption pairs; bad rows are skipped and counted")
    t_data.add_argument("--data", action="append", help="captions.txt (Flickr CSV), COCO captions JSON or LLaVA "
                   "LCS-558K JSON; repeat for several sources")
    t_data.add_argument("--images", action="append", help="image folder of the matching --data (same order)")
    t_data.add_argument("--split", action="append", help="FILE:SPLIT restricting the --data source at the same "
                   "position, e.g. splits.json:train; repeat per source ('all' keeps a whole source)")
    t_data.add_argument("--exclude", action="append", help="FILE:SPLIT whose photos no source may contribute "
                   "(held-out lists); repeatable")
    t_sched = t.add_argument_group("schedule")
    t_sched.add_argument("--batch-size", type=int, help="photos per step (default: 256)")
    t_sched.add_argument("--steps", type=int, help="optimizer steps (default: --epochs worth; overrides --epochs)")
    t_sched.add_argument("--epochs", type=float, help="passes over the photos (default: 10)")
    t_sched.add_argument("--lr", type=float, help="peak learning rate of AdamW (default: 5e-4; the default model: 3e-4)")
    t_sched.add_argument("--weight-decay", type=float, help="on weight matrices (default: 0.05)")
    t_sched.add_argument("--schedule", choices=["cosine", "constant"], help="after warm-up (default: cosine)")
    t_sched.add_argument("--warmup", type=int, help="warm-up steps (default: 50; the default model: 30)")
    t_sched.add_argument("--temperature", type=float,
                   help="initial temperature tau, learnable (default: the model's; lite 0.07)")
    t_sched.add_argument("--temperature-lr-mult", type=float,
                   help="the temperature learns at lr x this, 0 keeps it fixed (default: 1; the default model: 50)")
    t_sched.add_argument("--seed", type=int, help="batches, captions and augmentations (default: 0)")
    t_run = t.add_argument_group("where and how it runs", "one process here, or one per GPU / CPU share under torchrun (docs/training-at-scale.md)")
    t_run.add_argument("--device", help="where to train: auto (CUDA when PyTorch sees a GPU, else the CPU), cpu, cuda, "
                   "cuda:N or mps; under torchrun each process takes cuda:LOCAL_RANK (default: auto)")
    t_run.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                   help="fp32, or autocast in bf16 / fp16 (fp16 with a gradient scaler); the loss and the "
                   "temperature stay fp32 (default: fp32)")
    t_run.add_argument("--workers", type=int, help="data loader processes decoding photos, on the fly for models "
                   "without cached stems and once for the lite stem cache (default: 2)")
    t_run.add_argument("--prefetch", type=int, help="batches each data loader process keeps ready (default: 4)")
    t_run.add_argument("--out", help="output folder: model, checkpoints, log (default: runs/train)")
    t_run.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: 500)")
    t_run.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    t_lite = t.add_argument_group("lite family", "frozen stems run once, their outputs cached")
    t_lite.add_argument("--image-views", type=int, help="lite: cached views per photo, centre + augmented (default: 3)")
    t_lite.add_argument("--cache-dir", help="where the lite stem caches and the photo checks are kept (default: ~/.cache/edge-gcl/features)")
    t_lite.add_argument("--hard-negatives", type=int, metavar="GROUP",
                   help="lite: build batches from whole groups of about GROUP photos with alike captions "
                        "(default: 0, random batches)")
    t_gcl = t.add_argument_group("GCL options")
    t_gcl.add_argument("--modality-margin", type=float, metavar="M",
                   help="gcl: cross-modal cosines lose M (half between a photo or note and a photo+note) in the "
                        "softmax, so positives must beat own-modality negatives by M (default: 0)")
    t_gcl.add_argument("--text-photo-weight", type=float, metavar="W",
                   help="gcl: the note<->photo positives weigh W against the other four's 1 (default: 1)")
    t_gcl.add_argument("--pair-caption", choices=("same", "other"),
                   help="the note fused into each sample's photo+note: the same caption as its text (CLIP-SF), or "
                        "another caption of its photo where it has one (default: same)")
    t.set_defaults(func=_handler("edge_gcl.train:cli_train"))

    # --- eval ----------------------------------------------------------------------------
    e = sub.add_parser("eval", help="evaluate a model").add_subparsers(dest="eval_command", required=True)
    m = e.add_parser("mbeir", formatter_class=_ShowDefaults, help="retrieval recall on an M-BEIR-layout benchmark (UniIR files)")
    m.add_argument("--root", required=True, help="M-BEIR root (query/, cand_pool/, qrels/)")
    m.add_argument("--model", default="default", help="model name, checkpoint folder or artifacts folder")
    m.add_argument("--setting", choices=["local", "global", "both"], default="both",
                   help="local: each task's own pool; global: the union pool of all tasks")
    m.add_argument("--k", type=int, nargs="+", default=[1, 5, 10], help="recall@k for each k")
    m.add_argument("--split", default="test", help="query/<split>/ and qrels/<split>/")
    m.add_argument("--json", dest="json_out", help="write the results JSON here")
    m.add_argument("--batch-size", type=int, default=32, help="items embedded at once")
    m.add_argument("--provider", choices=["cpu", "qnn"], default="cpu", help="for artifacts folders")
    m.add_argument("--device", default="auto", help="for PyTorch models: auto (CUDA when PyTorch sees a GPU, "
                   "else the CPU), cpu, cuda, cuda:N or mps")
    m.add_argument("--allow-missing-positives", action="store_true",
                   help="count a query with no positive in the pool as a miss (default: an error naming it)")
    m.add_argument("--cross-modal-offset", default="model", metavar="OFFSET",
                   help="added to a candidate's cosine when its modality differs from the query's, as the index "
                        "ranks: 'model' = the model's calibrated one (0 if none), 0 = plain GCL ranking")
    m.set_defaults(func=_handler("edge_gcl.eval.cli:cli_eval"))
    mm = e.add_parser("mmeb", formatter_class=_ShowDefaults, help="hit@1 on MMEB's retrieval tasks (TIGER-Lab/MMEB-eval files)")
    mm.add_argument("--root", required=True, help="MMEB-eval folder (<Task>/test-*.parquet per task)")
    mm.add_argument("--images", help="images.zip unzipped (default: <root>/eval_images if present, else <root>)")
    mm.add_argument("--model", default="default", help="model name, checkpoint folder or artifacts folder")
    mm.add_argument("--tasks", nargs="+", help="task folders (default: MMEB's 12 retrieval tasks present)")
    mm.add_argument("--k", type=int, nargs="+", default=[5, 10], help="local recall@k besides hit@1")
    mm.add_argument("--json", dest="json_out", help="write the results JSON here")
    mm.add_argument("--batch-size", type=int, default=32, help="items embedded at once")
    mm.add_argument("--provider", choices=["cpu", "qnn"], default="cpu", help="for artifacts folders")
    mm.add_argument("--device", default="auto", help="for PyTorch models: auto (CUDA when PyTorch sees a GPU, "
                   "else the CPU), cpu, cuda, cuda:N or mps")
    mm.set_defaults(func=_handler("edge_gcl.eval.cli:cli_eval_mmeb"))
    cv = e.add_parser("covr", formatter_class=_ShowDefaults, help="composed video retrieval recall on CoVR (WebVid-CoVR test csv + videos)")
    cv.add_argument("--root", required=True, help="CoVR work folder (annotation/, datasets/WebVid/8M/train/)")
    cv.add_argument("--annotation", help="test csv (default: <root>/annotation/webvid-covr/webvid8m-covr_test.csv)")
    cv.add_argument("--videos", help="folder of <pth>.mp4 or <pth>/ frame folders "
                    "(default: <root>/datasets/WebVid/8M/train)")
    cv.add_argument("--model", default="default", help="model name, checkpoint folder or artifacts folder")
    cv.add_argument("--pool", choices=["query", "mean"], default="query",
                    help="query: a target video is its frames weighted by softmax(scores / 0.1), the csv's "
                    "per-frame scores, as CoVR's emb_pool query; mean: --frames frames averaged evenly")
    cv.add_argument("--frames", type=int, default=15,
                    help="frames per target video when averaged evenly (--pool mean, or a row whose scores are [])")
    cv.add_argument("--k", type=int, nargs="+", default=[1, 5, 10, 50], help="recall@k for each k")
    cv.add_argument("--json", dest="json_out", help="write the results JSON here")
    cv.add_argument("--batch-size", type=int, default=32, help="items embedded at once")
    cv.add_argument("--provider", choices=["cpu", "qnn"], default="cpu", help="for artifacts folders")
    cv.add_argument("--device", default="auto", help="for PyTorch models: auto (CUDA when PyTorch sees a GPU, "
                   "else the CPU), cpu, cuda, cuda:N or mps")
    cv.set_defaults(func=_handler("edge_gcl.eval.cli:cli_eval_covr"))

    # --- bench ---------------------------------------------------------------------------
    b = sub.add_parser("bench", help="benchmark data").add_subparsers(dest="bench_command", required=True)
    bm = b.add_parser("build-mbeir", formatter_class=_ShowDefaults, help="turn captions folders into a mixed-modality M-BEIR benchmark")
    bm.add_argument("--layout", choices=["flickr8k-dev", "phone"], default="flickr8k-dev",
                    help="flickr8k-dev: one folder, text-heavy pool; phone: several folders, pool of about 1/4 "
                    "photos, 1/4 photo+note, 1/2 notes (edge_gcl/eval/build.py)")
    bm.add_argument("--captions", help="flickr8k-dev: captions.txt (image,caption CSV)")
    bm.add_argument("--images", help="flickr8k-dev: image folder (default: images/ beside captions.txt)")
    bm.add_argument("--splits", help="flickr8k-dev: splits.json to take the photos from (with --split)")
    bm.add_argument("--split", default=None, help="flickr8k-dev: e.g. dev")
    bm.add_argument("--source", action="append", metavar="CAPTIONS[:SPLITS_FILE:SPLIT]",
                    help="phone: a captions.txt and the split of it to use; repeatable (default: flickr8k dev + "
                    "flickr8k-extra heldout, under --data-root)")
    bm.add_argument("--data-root", help="phone: where the default sources live (default: ../shared/data)")
    bm.add_argument("--out", required=True, help="output M-BEIR root")
    bm.add_argument("--seed", type=int, default=0, help="which captions become queries and which candidates")
    bm.set_defaults(func=_handler("edge_gcl.eval.cli:cli_build"))

    # --- index / search ------------------------------------------------------------------
    def index_options(q: argparse.ArgumentParser, *, model: bool = True) -> None:
        q.add_argument("--index", metavar="DIR", help="the index folder (default: $EDGE_GCL_INDEX, else index/ in "
                       "edge-gcl's user data folder, e.g. ~/.local/share/edge-gcl/index)")
        if not model:
            return
        q.add_argument("--model", metavar="MODEL", help="artifacts folder (default: $EDGE_GCL_MODEL, else the one "
                       "`python -m export.compile` last built, else ./artifacts); or, with torch installed, "
                       "a PyTorch model: default, lite, a checkpoint folder")
        q.add_argument("--provider", choices=["cpu", "qnn"], default="cpu",
                       help="cpu: ONNX Runtime on the CPU; qnn: the Hexagon NPU (default: cpu)")
        q.add_argument("--form", choices=["float", "qdq", "ctx"],
                       help="which graphs of the artifacts folder run (default: float on cpu, ctx on qnn)")
        q.add_argument("--no-ocr", dest="ocr", action="store_false",
                       help="do not read the words in photos (default: read them, with the OCR graphs the "
                       "artifacts folder ships)")

    def modality_option(q: argparse.ArgumentParser) -> None:
        q.add_argument("-m", "--modality", action="append", choices=MODALITY_CHOICES, metavar="M",
                       help="only this kind of item: all, photo, note or photo+note; repeatable (default: all)")

    def date_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("--after", metavar="DATE", help="only photos taken on or after DATE: 2024, 2024-07, "
                       "2024-07-31 or 2024-07-31T18:30, local time (default: no limit)")
        q.add_argument("--before", metavar="DATE", help="only photos taken before DATE, same forms "
                       "(default: no limit; --after 2024 --before 2025 is the year 2024)")

    ix = sub.add_parser("index", help="add, sync, list and remove the photos and notes you search",
                        description="The index: your photos and notes, embedded on this device.").add_subparsers(
        dest="index_command", required=True, metavar="COMMAND"
    )
    a = ix.add_parser("add", help="add photos (files or folders; JPEG, PNG, HEIC, ...)")
    a.add_argument("paths", nargs="+", metavar="PATH", help="photo files and folders (folders: searched recursively)")
    a.add_argument("--no-recursive", dest="recursive", action="store_false",
                   help="only the photos directly in each folder (default: also subfolders)")
    index_options(a)
    a.set_defaults(func=_handler("edge_gcl.index.cli:cli_add"))
    s = ix.add_parser("sync", help="mirror a folder: add new photos, re-embed changed ones, drop deleted ones")
    s.add_argument("dir", metavar="DIR", help="the photo folder to mirror")
    index_options(s)
    s.set_defaults(func=_handler("edge_gcl.index.cli:cli_sync"))
    n = ix.add_parser("note", help="add a note, optionally attached to a photo")
    n.add_argument("text", nargs="?", help="the note's text; - reads it from standard input")
    n.add_argument("--file", help="read the note from this UTF-8 text file (default: the text argument)")
    n.add_argument("--photo", metavar="PATH", help="attach the note to this photo, replacing its note "
                   "(default: a note on its own)")
    n.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata to store with the note (search --where filters on it); repeatable (default: none)")
    index_options(n)
    n.set_defaults(func=_handler("edge_gcl.index.cli:cli_note"))
    ls = ix.add_parser("list", help="list what the index holds, newest first, with when each photo was taken")
    modality_option(ls)
    date_options(ls)
    ls.add_argument("-n", "--limit", type=int, metavar="N", help="show the N newest only (default: all)")
    ls.add_argument("--json", action="store_true", help="print the items as JSON (default: one line each)")
    index_options(ls, model=False)
    ls.set_defaults(func=_handler("edge_gcl.index.cli:cli_list"))
    r = ix.add_parser("remove", help="remove items by id or photo path (the files are not touched)")
    r.add_argument("ids", nargs="+", metavar="ID|PATH", help="an item id (see index list) or a photo's path")
    index_options(r, model=False)
    r.set_defaults(func=_handler("edge_gcl.index.cli:cli_remove"))
    ri = ix.add_parser("reindex", help="re-embed every item with another model (notes and dates kept)")
    index_options(ri)
    ri.set_defaults(func=_handler("edge_gcl.index.cli:cli_reindex"))
    rp = ix.add_parser("repair", help="rebuild a damaged index from what can still be read (the damaged file is kept)")
    index_options(rp)
    rp.set_defaults(func=_handler("edge_gcl.index.cli:cli_repair"))
    rt = ix.add_parser("read-text", help="read the words in the photos indexed before OCR (or with --no-ocr)")
    index_options(rt)
    rt.set_defaults(func=_handler("edge_gcl.index.cli:cli_read_text"))
    st = ix.add_parser("stats", help="what the index holds, as JSON")
    index_options(st, model=False)
    st.set_defaults(func=_handler("edge_gcl.index.cli:cli_stats"))

    ap = sub.add_parser("app", help="search your photos in the browser (on this machine, 127.0.0.1)",
                        description="Index a folder of photos (kept in sync while it runs) and serve a search page "
                        "on http://127.0.0.1:PORT: words, a photo, or both; notes; similar photos. Nothing leaves "
                        "this machine.")
    ap.add_argument("--photos", required=True, metavar="DIR", help="folder of photos (searched recursively)")
    index_options(ap)
    ap.add_argument("--reindex", action="store_true",
                    help="if the index was built with another model, re-embed it with this one, notes kept "
                    "(default: refuse)")
    ap.add_argument("--port", type=int, default=8765,
                    help="port on 127.0.0.1, 0: any free port (default: 8765)")
    ap.add_argument("--poll", type=float, default=10.0, metavar="SECONDS",
                    help="look for new, changed and deleted photos in --photos this often, 0: never "
                    "(default: 10)")
    ap.set_defaults(func=_handler("edge_gcl.app.server:cli_app"))

    stp = sub.add_parser("status", help="the default model and where it was recorded, the index, providers, versions",
                         description="What this install runs when no --model is given and why, where the index is, "
                         "the providers the towers can run on (CPU, QNN) and the versions. Loads nothing.")
    stp.add_argument("--model", metavar="MODEL", help="show this model instead of the default one")
    stp.add_argument("--index", metavar="DIR", help="show this index folder instead of the default one")
    stp.add_argument("--json", action="store_true", help="one JSON object (default: lines for a person)")
    stp.set_defaults(func=_handler("edge_gcl.status:cli_status"))

    q = sub.add_parser("search", help="search the index with words, a photo, or both",
                       description="Search the index with words, a photo (-i), or both. Each result shows its "
                       "cosine similarity to the query; results are ranked by it plus the model's cross-modal "
                       "offset for another kind of item than the query (the 'score' column, shown where it differs), "
                       "and those scoring under the model's cut-off are hidden (stderr says how many).")
    q.add_argument("query", nargs="?", help="what to look for, in words")
    q.add_argument("-i", "--image", metavar="PATH", help="a photo to search with (default: none; with words: both)")
    q.add_argument("-k", "--k", type=int, default=10, metavar="K", help="how many results at most (default: 10)")
    modality_option(q)
    date_options(q)
    q.add_argument("--sort", choices=["score", "date"], default="score",
                   help="score: best match first; date: newest first, of those above the cut-off (default: score)")
    q.add_argument("--min-score", type=float, metavar="S",
                   help="hide results scoring below S (cosine + cross-modal offset) (default: the model's calibrated "
                   "cut-off, recorded in its manifest; none if it has none)")
    q.add_argument("-a", "--all", action="store_true", help="show every result, none hidden (default: apply the cut-off)")
    q.add_argument("--cross-modal-offset", type=float, metavar="X",
                   help="added to the cosine of results of another modality than the query's; 0 ranks by plain "
                   "cosine (default: the model's calibrated one, recorded in its manifest; 0 if it has none)")
    q.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only items whose metadata has this value; repeatable (default: no filter)")
    q.add_argument("--json", action="store_true", help="print hits as JSON (default: one line each)")
    how = q.add_mutually_exclusive_group()
    how.add_argument("--exact", dest="approximate", action="store_const", const=False,
                     help="scan every stored vector (default: exact below 100,000 vectors, approximate above)")
    how.add_argument("--approximate", dest="approximate", action="store_const", const=True,
                     help="the HNSW graph, candidates re-scored exactly (default: from 100,000 vectors on)")
    index_options(q)
    q.set_defaults(func=_handler("edge_gcl.index.cli:cli_search"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edge-gcl index list | head`: the reader has all it wanted
        # Python would still flush stdout at exit and report that pipe too: point it at /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command that stopped the same way


if __name__ == "__main__":
    sys.exit(main())

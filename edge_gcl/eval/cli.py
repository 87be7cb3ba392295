"""Handlers of `edge-gcl eval mbeir|mmeb|covr` and `edge-gcl bench build-mbeir` (parsers: edge_gcl/cli.py).

Thin: arguments in, one library call (`edge_gcl.eval.mbeir`, `.mmeb`, `.covr`, `edge_gcl.eval.build`), tables out. Bad input
(a malformed or missing file, an unknown photo, a bad option value) is one line on stderr,
`edge-gcl: error: FILE[:LINE]: what is wrong`, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data import read_split
from .build import SHARED_DATA, Source, build_mbeir, build_phone_mbeir, phone_sources
from .mbeir import SETTINGS, check_root, evaluate_mbeir, format_table, headline


def _run(body: Callable[[], int | None]) -> int:
    try:
        return int(body() or 0)
    except (ValueError, OSError, KeyError) as e:  # MBEIRFormatError and ImageDecodeError are ValueErrors
        print(f"edge-gcl: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1


def cli_eval(args: argparse.Namespace) -> int:
    """`edge-gcl eval mbeir`: load the model, evaluate, print the tables, optionally write the JSON.

    The JSON is `evaluate_mbeir`'s result plus "headline": global text -> image and average R@1 / R@5.
    """

    def body() -> None:
        from ..runtime import load_embedder  # imported here: it pulls in the model runtime

        settings = SETTINGS if args.setting == "both" else (args.setting,)
        check_root(Path(args.root))  # before the model loads
        offset = _offset(args.cross_modal_offset)  # before the model loads, too
        check_device(args.device)
        embedder = load_embedder(args.model, provider=args.provider, device=args.device)
        if offset is None:
            from ..index import default_cross_modal_offset

            offset = default_cross_modal_offset(embedder)
        results: dict[str, Any] = evaluate_mbeir(
            embedder, args.root, split=args.split, settings=settings, ks=tuple(args.k), batch_size=args.batch_size,
            allow_missing_positives=args.allow_missing_positives, cross_modal_offset=offset)
        results["cross_modal_offset"] = offset
        print(format_table(results))
        print(f"ranked by cosine + cross-modal offset {offset:g}" if offset else "ranked by cosine (no cross-modal offset)")
        missing = results.get("missing_positives", {})
        for setting in settings if missing else ():
            n = sum(per_setting.get(setting, 0) for per_setting in missing.values())
            if n:
                print(f"{setting} pool: {n} {'query' if n == 1 else 'queries'} with no positive in the pool, "
                      f"counted as {'a miss' if n == 1 else 'misses'}")
        if args.json_out:
            top = headline(results)
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_text(json.dumps(results | ({"headline": top} if top else {}), indent=2) + "\n")

    return _run(body)


def check_device(spec: str | None) -> None:
    """Refuse a --device that is not here before any model loads (a no-op without torch: the runtime
    install runs artifacts folders, and `load_embedder` says --device is not theirs)."""
    import importlib.util

    if spec in (None, "auto") or importlib.util.find_spec("torch") is None:
        return
    from ..device import resolve_device

    resolve_device(spec)


def _offset(text: str) -> float | None:
    """--cross-modal-offset: 'model' (None: the model's calibrated one) or a finite number."""
    if text == "model":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise ValueError(f"--cross-modal-offset {text!r}: expected 'model' or a number (0: plain cosine)")
    return value


FLICKR_ONLY = ("captions", "images", "splits", "split")  # options of --layout flickr8k-dev


def _flickr_names(args: argparse.Namespace) -> list[str] | None:
    """--split picks photos from --splits (default: splits.json beside captions.txt)."""
    captions = Path(args.captions)
    if not args.split:
        if args.splits:
            raise ValueError(f"--splits {args.splits}: give --split too (e.g. --split dev)")
        return None
    splits = Path(args.splits) if args.splits else captions.parent / "splits.json"
    if not splits.is_file() and not splits.is_absolute() and (captions.parent / splits).is_file():
        splits = captions.parent / splits  # `--splits splits.json` names the file beside captions.txt
    return sorted(read_split(splits, args.split))


def cli_build(args: argparse.Namespace) -> int:
    """`edge-gcl bench build-mbeir`: write a benchmark (`--layout flickr8k-dev` or `phone`), print what it holds."""

    def body() -> None:
        if args.layout == "phone":
            given = [f"--{o}" for o in FLICKR_ONLY if getattr(args, o)]
            if given:
                raise ValueError(f"{', '.join(given)}: options of --layout flickr8k-dev; the phone layout takes "
                                 f"--source CAPTIONS:SPLITS_FILE:SPLIT (repeatable)")
            sources = ([Source.parse(s) for s in args.source] if args.source
                       else phone_sources(args.data_root or SHARED_DATA))
            stats = build_phone_mbeir(sources, args.out, seed=args.seed)
        else:
            if args.source or args.data_root:
                raise ValueError("--source, --data-root: options of --layout phone")
            if not args.captions:
                raise ValueError("--layout flickr8k-dev needs --captions (a captions.txt)")
            stats = build_mbeir(args.captions, args.images, args.out, names=_flickr_names(args), seed=args.seed)
        print(summary(stats))

    return _run(body)


def summary(stats: dict[str, Any]) -> str:
    """What a builder's stats say, as printed by `edge-gcl bench build-mbeir`."""
    head = f"M-BEIR benchmark in {stats['root']} (split {stats['split']}, seed {stats['seed']}): {stats['photos']} photos"
    if "pool_photos_by_modality" in stats:  # flickr8k-dev layout
        by_group = ", ".join(f"{n} {m}" for m, n in stats["pool_photos_by_modality"].items())
        head += (f", {stats['pool_photos']} pool-side ({by_group}), {stats['query_photos']} query-side, "
                 f"{len(stats['skipped'])} skipped")
    else:
        sources = ", ".join(f"{label} {s['photos']}" for label, s in stats["sources"].items())
        groups = ", ".join(f"{m} {n}" for m, n in stats["groups"].items())
        head = (head.replace("M-BEIR benchmark", f"M-BEIR benchmark ({stats['layout']} layout)")
                + f" ({sources}); groups kept: {groups}; {len(stats['skipped'])} skipped")
    lines = [head]
    width = max(len(s) for s in stats["tasks"])
    for stem, t in stats["tasks"].items():
        lines.append(f"  {stem:<{width}}  {t['task']:<20}  {t['queries']:>6} queries  {t['local_pool']:>6} local pool")
    mods = ", ".join(f"{n} {m}" for m, n in stats["global_pool_by_modality"].items())
    line = f"  global pool: {stats['global_pool']} candidates ({mods})"
    if "global_pool_fractions" in stats:
        line += " = " + " : ".join(f"{f:.3f}" for f in stats["global_pool_fractions"].values())
    lines.append(line)
    lines += [f"  skipped {name}: {why}" for name, why in stats["skipped"].items()]
    return "\n".join(lines)


def _write_json(path: str | None, results: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=2) + "\n")


def _check_options(args: argparse.Namespace) -> None:
    """--k (and --frames, --batch-size) before anything is read or loaded."""
    bad = [k for k in args.k if k < 1]
    if bad:
        raise ValueError(f"--k: must be positive integers, got {' '.join(map(str, args.k))}")
    for name in ("frames", "batch_size"):
        if getattr(args, name, 1) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    check_device(args.device)


def cli_eval_mmeb(args: argparse.Namespace) -> int:
    """`edge-gcl eval mmeb`: every task file is read and checked before the model loads."""

    def body() -> None:
        from ..runtime import load_embedder
        from . import mmeb

        _check_options(args)
        data = mmeb.read_mmeb(args.root, tasks=args.tasks, images=args.images)  # bad input fails before the model loads
        embedder = load_embedder(args.model, provider=args.provider, device=args.device)
        results = mmeb.evaluate_mmeb(embedder, data, ks=tuple(args.k), batch_size=args.batch_size)
        print(mmeb.format_table(results))
        _write_json(args.json_out, results)

    return _run(body)


def cli_eval_covr(args: argparse.Namespace) -> int:
    """`edge-gcl eval covr`: the CSV, the videos' presence and the decoder are checked before the model loads."""

    def body() -> None:
        from ..runtime import load_embedder
        from . import covr

        _check_options(args)
        root = Path(args.root)
        check_root(root)
        annotation = Path(args.annotation) if args.annotation else root / covr.ANNOTATION
        videos = Path(args.videos) if args.videos else root / covr.VIDEOS
        triplets = covr.read_annotation(annotation)
        check_root(videos)
        covr.check_decoder(covr.resolve_videos(triplets, videos, annotation))
        embedder = load_embedder(args.model, provider=args.provider, device=args.device)
        result = covr.evaluate_covr(embedder, root, annotation=annotation, videos=videos, frames=args.frames,
                                    frame_pool=args.pool, ks=tuple(args.k), batch_size=args.batch_size)
        print(covr.format_table(result))
        _write_json(args.json_out, result)

    return _run(body)

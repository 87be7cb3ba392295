"""`python -m export.compile`: a trained model -> artifacts a Snapdragon app loads.

    python -m export.compile --target snapdragon                     # the default model, default chip
    python -m export.compile --model runs/gcl --chipset "8 Elite" --precision w8a16 --out artifacts/
    python -m export.compile --target snapdragon --via aihub --device "Samsung Galaxy S24 (Family)"
    python -m export.compile --list-chipsets

The recipe, step by step (each timed and shown in the summary):
1. Load the model (name, checkpoint folder, HF CLIP folder or TinyCLIP .pt) and pick calibration
   photos/captions (`--calibration`, else the model's own training data) plus held-out ones.
2. Export both towers to float ONNX (dynamic batch) with the contract of `edge_gcl.manifest`,
   save the tokenizer beside them, and check PyTorch vs ONNX Runtime parity on real inputs.
3. Quantize each tower to QDQ (`w8a16` default, `w8a8`; `fp16` keeps float weights) at batch 1.
4. Compile each tower to an EPContext model for the chip's Hexagon NPU (QNN EP, HTP backend),
   failing loudly, naming the nodes, if any node would fall back to the CPU.
5. Verify: run the compiled models in HTP emulation on held-out inputs against the float model
   (cosine, max abs error). The fidelity gate: a tower whose lowest cosine is below
   `--min-fidelity` (0.98) fails the build (exit 1, naming the tower and a more faithful
   precision); `--skip-verify` skips the check and the manifest's `verification` says so.
   Then the OCR graphs (`export/ocr.py`: PP-OCR's detector, angle classifier and recogniser from
   the rapidocr wheel) go through the same quantize, compile and verify steps, gated on the
   recogniser's character accuracy against float (`--min-char-accuracy`, 0.95), and so does the
   text-meaning graph (`export/meaning.py`: the pretrained all-MiniLM-L6-v2 sentence encoder that
   compares a query with the text read in photos), gated on `--min-fidelity` like a tower;
   `--no-ocr` leaves them out.
6. Write `manifest.json` (contract, files with SHA-256, precision, chip, NPU share, fidelity, tool
   versions) and swap the finished folder into place (atomically on Linux; elsewhere a crash
   mid-swap is undone by the next build); a failed run leaves the old folder untouched.
   `--out` may only name a missing or empty folder or one this module built (its manifest's
   `made_by`): a file, the working folder, the project or another folder is refused before step 1.
With `--via aihub`, steps 4-5 run on Qualcomm AI Hub instead: compile there and profile on a
real device (inference ms, peak memory, layer placement), written into the manifest.

The terminal shows the steps, a line per tower as quantize and verify start and end, and the
summary; the quantizer's warnings and the QNN libraries' banner go to `build.log` in the folder
(`<out>-failed-build.log` beside it when a build fails), or to the terminal with `--verbose`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_gcl.embedding import l2_normalize, model_label
from edge_gcl.extras import require_or_exit
from edge_gcl.locations import environment, record_artifacts
from edge_gcl.manifest import MANIFEST_NAME, TOKENIZER_NAME, Manifest, TowerArtifacts, tower_specs
from edge_gcl.transform import ImageDecodeError, preprocess

from .chipsets import DEFAULT_TARGET, UnknownChipsetError, format_table, get_chipset

TOWERS = ("image", "text")
PARITY_ATOL = 1e-4  # PyTorch vs ONNX Runtime (CPU, float32), on L2-normalised embeddings
PRECISIONS = ("w8a8", "w8a16", "fp16")  # from the least to the most faithful
MIN_FIDELITY = 0.98  # the fidelity gate: lowest cosine, compiled tower vs float, a build may ship


@dataclass
class CompileResult:
    out: Path
    manifest: Manifest
    steps_s: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- step 1: inputs
@dataclass
class Samples:
    """Tower feeds at batch 1: `calibration` for quantization, `heldout` for fidelity."""

    calibration: dict[str, list[dict[str, np.ndarray]]]
    heldout: dict[str, list[dict[str, np.ndarray]]]
    source: dict[str, object]


def calibration_source(model, calibration: str | Path | None) -> tuple[Path, Path | None, set[str] | None]:
    """What to calibrate on: `--calibration DIR`, else the model's own training data (the first of its
    sources found here, restricted to that source's split and stripped of the held-out lists).

    Returns the captions file, its image folder (None: `images/` beside it) and the photo names to
    draw from (None: all). Relative paths recorded in a checkpoint resolve against the working
    directory, then against the project root (so `../shared/data/...` works from a clone);
    `${recipes}/` and `~/` (as checkpoints record them) expand first.
    """
    if calibration:
        folder = Path(calibration)
        captions = folder / "captions.txt" if folder.is_dir() else folder
        if not captions.is_file():
            raise FileNotFoundError(f"{calibration}: --calibration needs a folder with captions.txt and images/")
        return captions, None, None
    from edge_gcl.checkpoint import is_checkpoint, read_meta
    from edge_gcl.data import read_pairs, read_split

    if model.source is not None and is_checkpoint(model.source):
        train = read_meta(model.source).get("train", {})
        images = train.get("images", [])
        splits = train.get("split")
        for i, data in enumerate(train.get("data", [])):
            captions = _resolve(data)
            if captions is None:
                continue
            image_dir = _resolve(images[i]) if i < len(images) else None
            names = None
            if isinstance(splits, list):  # one FILE:SPLIT (or "all") per source, by order
                spec = splits[i] if i < len(splits) else None
                split_file, _, split = (spec if spec and spec != "all" else "").rpartition(":")
                if split_file and _resolve(split_file):
                    names = read_split(_resolve(split_file), split)
            else:  # older checkpoints: one FILE:SPLIT for the sources in that file's folder
                split_file, _, split = (splits or "").rpartition(":")
                if split_file and _resolve(split_file) and _resolve(split_file).parent == captions.parent:
                    names = read_split(_resolve(split_file), split)
            held_out: set[str] = set()
            for spec in train.get("exclude") or []:
                file, _, split = spec.rpartition(":")
                if _resolve(file):
                    held_out |= read_split(_resolve(file), split)
            if held_out:
                names = (names if names is not None else {p.name for p in read_pairs(captions, image_dir).images}) - held_out
            return captions, image_dir, names
    raise FileNotFoundError(
        "no calibration data: this model records no training data that exists here; "
        "give --calibration DIR (a folder with captions.txt and images/)"
    )


def _resolve(path: str | None) -> Path | None:
    if not path:
        return None
    from edge_gcl.train import expand_recorded

    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = (base / expand_recorded(path)).resolve()
        if candidate.exists():
            return candidate
    return None


def pick_samples(model, captions: Path, images: Path | None, names: set[str] | None, *, n_calibration: int,
                 n_heldout: int, seed: int = 0) -> Samples:
    from edge_gcl.data import read_pairs

    pairs = read_pairs(captions, images)
    if names is not None:
        pairs = pairs.subset(names)
    order = np.random.default_rng(seed).permutation(len(pairs))
    tok = model.tokenizer()
    chosen: list[tuple[np.ndarray, str]] = []
    for i in order:
        if len(chosen) == n_calibration + n_heldout:
            break
        try:
            chosen.append((preprocess(pairs.images[i], model.config.image), pairs.captions[i][0]))
        except ImageDecodeError:
            continue
    if len(chosen) < n_calibration + n_heldout:
        raise ValueError(f"{captions}: need {n_calibration + n_heldout} usable photos to calibrate, found {len(chosen)}")

    def feeds(rows):
        ids, mask = tok([text for _, text in rows])
        return {
            "image": [{"pixels": pixels[None]} for pixels, _ in rows],
            "text": [{"input_ids": ids[j : j + 1].astype(np.int32), "attention_mask": mask[j : j + 1].astype(np.int32)}
                     for j in range(len(rows))],
        }

    # The dataset-relative name ("flickr8k/captions.txt"), not this machine's absolute path.
    source = {"captions": f"{captions.parent.name}/{captions.name}", "photos": n_calibration,
              "heldout_photos": n_heldout, "seed": seed, "restricted_to_split": names is not None}
    return Samples(feeds(chosen[:n_calibration]), feeds(chosen[n_calibration:]), source)


def stack(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}


# ----------------------------------------------------------------------------- steps 2-5
def cosine_report(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    cos = np.sum(l2_normalize(reference) * l2_normalize(other), axis=1)
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "max_abs_error": float(np.abs(reference - other).max())}


class FidelityError(RuntimeError):
    """A compiled tower embeds too unlike the float model (cosine_min below the threshold)."""

    def __init__(self, failing: dict[str, float], min_fidelity: float, precision: str, n_heldout: int):
        self.failing, self.min_fidelity, self.precision = failing, min_fidelity, precision
        towers = ", ".join(f"{tower} tower cosine min {cos:.4f}" for tower, cos in failing.items())
        better = PRECISIONS[PRECISIONS.index(precision) + 1 :]
        hint = (f"try --precision {' or '.join(better)}" if better else
                "fp16 should not lose this much: check the model and the calibration data")
        super().__init__(
            f"fidelity below --min-fidelity {min_fidelity:g} at {precision} ({towers}, against the float model "
            f"on {n_heldout} held-out inputs): {hint}, or lower --min-fidelity. Nothing was replaced."
        )


def run(
    model_spec: str = "default",
    *,
    out: str | Path = "artifacts",
    chipset: str = DEFAULT_TARGET,
    precision: str = "w8a16",
    via: str = "local",
    device: str | None = None,
    calibration: str | Path | None = None,
    n_calibration: int = 64,
    n_heldout: int = 32,
    min_fidelity: float = MIN_FIDELITY,
    skip_compile: bool = False,
    skip_verify: bool = False,
    aihub_quantize: bool = False,
    aihub_poll_s: float = 10.0,
    verbose: bool = False,
    ocr: bool = True,
    min_char_accuracy: float | None = None,
    log=print,
) -> CompileResult:
    """The recipe of the module docstring; raises `FidelityError` when a tower fails the gate.

    `min_fidelity` is the lowest cosine (compiled tower vs float model, any held-out input) a build
    may ship. Unless `verbose`, the libraries' own output goes to `build.log` in the folder (kept
    beside `out` as `<out>-failed-build.log` when the build fails).
    """
    out = Path(out)
    check_out(out)  # before any work: a build must never destroy what it would replace
    chip = get_chipset(chipset)
    from edge_gcl.models import load_model

    from . import onnx_export
    from .buildlog import LOG_NAME, BuildLog
    from .quantize import quantize_tower

    if not 0.0 <= min_fidelity <= 1.0:
        raise ValueError(f"min_fidelity {min_fidelity}: a cosine threshold in [0, 1]")
    if via == "aihub":
        from .aihub import check_configured

        check_configured()  # at once: no work before we know AI Hub can be reached
    if out.parent.is_dir():
        recover_folder(out, log)
    failed_log = out.parent / f"{out.name}-failed-build.log"
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    _remove(stage)
    stage.mkdir(parents=True)
    build_log = BuildLog(None if verbose else stage / LOG_NAME)
    steps: dict[str, float] = {}
    t = time.perf_counter()

    def say(line: str) -> None:
        log(line)
        build_log.write(line)

    def done(step: str) -> None:
        nonlocal t
        steps[step] = time.perf_counter() - t
        say(f"  {step}: {steps[step]:.1f} s")
        t = time.perf_counter()

    try:
        with build_log:
            say(f"[1/6] loading {model_spec} and calibration data")
            model = load_model(model_spec).eval()
            captions, images, names = calibration_source(model, calibration)
            samples = pick_samples(model, captions, images, names, n_calibration=n_calibration,
                                   n_heldout=n_heldout)
            done("load")

            say("[2/6] exporting float ONNX towers")
            specs = tower_specs(model.config)
            towers: dict[str, TowerArtifacts] = {}
            parity = {}
            for tower in TOWERS:
                path = onnx_export.export_tower(model, tower, stage / f"{tower}_tower.onnx")
                towers[tower] = TowerArtifacts(specs[tower], {"float": path.name})
                feeds = stack(samples.heldout[tower])
                got = _run_cpu(path, feeds)
                ref = onnx_export.torch_reference(model, tower, feeds)
                parity[tower] = float(np.abs(got - ref).max())
                if parity[tower] > PARITY_ATOL:
                    raise RuntimeError(f"{tower} tower: ONNX differs from PyTorch by {parity[tower]:.2e} "
                                       f"(> {PARITY_ATOL})")
            model.tokenizer().save(stage / TOKENIZER_NAME)
            say(f"  PyTorch vs ONNX Runtime max abs error: image {parity['image']:.1e}, text {parity['text']:.1e}")
            done("export")

            say(f"[3/6] quantizing ({precision}, {n_calibration} calibration inputs per tower)")
            for tower in TOWERS:
                started = time.perf_counter()
                say(f"  {tower}: quantizing ...")
                fixed = onnx_export.fix_batch(stage / towers[tower].files["float"], stage / f".{tower}_b1.onnx")
                with build_log.native():
                    qdq = quantize_tower(fixed, stage / f"{tower}_tower_{precision}.onnx", kind=tower,
                                         precision=precision, calibration=samples.calibration[tower])
                fixed.unlink()
                towers[tower].files["qdq"] = qdq.name
                say(f"  {tower}: quantized in {time.perf_counter() - started:.1f} s")
            done("quantize")

            aihub_summary = None
            verification: dict[str, object] = {"checked": False}
            if via == "aihub":
                say(f"[4/6] compiling and profiling on AI Hub ({device or chip.name})")
                from .aihub import QuantizeOptions, compile_and_profile

                models, quantize = {tw: stage / towers[tw].files["qdq"] for tw in TOWERS}, None
                if aihub_quantize:  # upload the float towers (batch 1) and let AI Hub quantize them
                    hub_dir = stage / ".aihub-float"
                    hub_dir.mkdir()
                    models = {tw: onnx_export.fix_batch(stage / towers[tw].files["float"], hub_dir / f"{tw}_tower.onnx")
                              for tw in TOWERS}
                    quantize = QuantizeOptions(
                        calibration={tw: {name: [f[name] for f in samples.calibration[tw]] for name in
                                          samples.calibration[tw][0]} for tw in TOWERS},
                        activations="int16" if precision == "w8a16" else "int8")
                aihub_summary = compile_and_profile(
                    models, quantize=quantize,
                    device=device or f"chipset:{chip.aihub_chipset}",
                    input_specs={tw: {s.name: (tuple(1 if isinstance(d, str) else d for d in s.shape), s.dtype)
                                      for s in specs[tw].inputs} for tw in TOWERS},
                    out_dir=stage, poll_s=aihub_poll_s, log=say)
                if aihub_quantize:
                    shutil.rmtree(stage / ".aihub-float")
                verification["reason"] = "--via aihub: compiled on AI Hub, not run here against the float model"
                done("aihub")
            elif skip_compile:
                verification["reason"] = "--skip-compile: nothing was compiled"
            else:
                from .qnn import compile_context, run_on_htp

                say(f"[4/6] compiling for {chip.name} (Hexagon {chip.htp_arch}) with the QNN HTP backend")
                for tower in TOWERS:
                    with build_log.native():
                        report = compile_context(stage / towers[tower].files["qdq"],
                                                 stage / f"{tower}_tower_{precision}_ctx.onnx",
                                                 chipset=chip, fp16=precision == "fp16")
                    towers[tower].files["ctx"] = report.ctx_path.name
                    if report.bin_path is not None:
                        towers[tower].files["ctx_bin"] = report.bin_path.name
                    towers[tower].npu_node_share = report.npu_share
                    say(f"  {tower}: {report.npu_nodes}/{report.total_nodes} nodes on the NPU "
                        f"({report.npu_share:.0%})")
                done("compile")

                if skip_verify:
                    verification["reason"] = "--skip-verify: the compiled towers were not run; fidelity unknown"
                else:
                    say(f"[5/6] verifying in HTP emulation on {n_heldout} held-out inputs "
                        f"(gate: cosine min >= {min_fidelity:g})")
                    for tower in TOWERS:
                        started = time.perf_counter()
                        say(f"  {tower}: running {n_heldout} inputs ...")
                        ref = _run_cpu(stage / towers[tower].files["float"], stack(samples.heldout[tower]))
                        with build_log.native():
                            got = np.concatenate([
                                next(iter(run_on_htp(stage / towers[tower].files["ctx"], f).values()))
                                for f in samples.heldout[tower]
                            ])
                        towers[tower].fidelity = f = cosine_report(ref, got)
                        say(f"  {tower}: cosine min {f['cosine_min']:.4f} mean {f['cosine_mean']:.4f}, "
                            f"max abs error {f['max_abs_error']:.4f} ({time.perf_counter() - started:.1f} s)")
                    done("verify")
                    failing = {tw: towers[tw].fidelity["cosine_min"] for tw in TOWERS
                               if towers[tw].fidelity["cosine_min"] < min_fidelity}
                    if failing:
                        raise FidelityError(failing, min_fidelity, precision, n_heldout)
                    verification = {"checked": True, "min_fidelity": min_fidelity, "heldout_inputs": n_heldout,
                                    "on": f"QNN HTP backend, {platform.machine()}"}

            ocr_extra = None
            if ocr:
                from .ocr import MIN_CHAR_ACCURACY, build_ocr

                say("[OCR] the words in photos: quantizing, compiling and verifying the PP-OCR graphs")
                built = build_ocr(
                    stage, precision=precision, chip=chip, photos=_photos(captions, images, names, 24),
                    skip_compile=skip_compile or via == "aihub", skip_verify=skip_verify or via == "aihub",
                    min_char_accuracy=MIN_CHAR_ACCURACY if min_char_accuracy is None else min_char_accuracy,
                    say=say, native=build_log.native,
                )  # fmt: skip
                towers.update(built.towers)
                ocr_extra = built.extra
                from edge_gcl.ocr.meaning import TOWER as MEANING

                from .meaning import build_meaning

                towers[MEANING], ocr_extra["meaning"] = build_meaning(
                    stage, precision=precision, chip=chip, texts=_captions(captions, images, names, 36),
                    skip_compile=skip_compile or via == "aihub", skip_verify=skip_verify or via == "aihub",
                    say=say, native=build_log.native,
                )  # fmt: skip
                fidelity = towers[MEANING].fidelity
                if fidelity and fidelity["cosine_min"] < min_fidelity:
                    raise FidelityError({"text-meaning": fidelity["cosine_min"]}, min_fidelity, precision,
                                        ocr_extra["meaning"]["fidelity"]["heldout_texts"])
                done("ocr")

            say("[6/6] writing the manifest")
            from edge_gcl.models.base import weights_id

            manifest = Manifest(
                made_by=MADE_BY,
                model_id=weights_id(model),  # = TorchEmbedder(model).model_id: indexes built either way agree
                model_name=model.config.name,
                embed_dim=model.config.embed_dim,
                image=model.config.image,
                text=dataclasses.replace(model.config.text, tokenizer_file=TOKENIZER_NAME),
                towers=towers,
                precision=precision,
                chipset=dataclasses.asdict(chip),
                calibration=samples.source,
                verification=verification,
                tools=_tool_versions(),
                extra={"onnx_parity_max_abs_error": parity, "source_model": _model_name(model_spec),
                       **_calibration(model_spec, weights_id(model)),
                       **({"aihub": aihub_summary} if aihub_summary else {}),
                       **({"ocr": ocr_extra} if ocr_extra else {})},
            )
            manifest.save(stage)
            done("manifest")
        _replace_folder(stage, out)
    except BaseException:
        if (stage / LOG_NAME).is_file():
            os.replace(stage / LOG_NAME, failed_log)
            log(f"  build log: {failed_log}")
        _remove(stage)
        raise
    _remove(failed_log)  # an earlier failure's log no longer describes this folder
    return CompileResult(out, manifest, steps)


def _photos(captions: Path, images: Path | None, names: set[str] | None, n: int) -> list[Path]:
    """The first `n` calibration photos (sorted by name), for the OCR graphs' calibration."""
    from edge_gcl.data import read_pairs

    pairs = read_pairs(captions, images)
    if names is not None:
        pairs = pairs.subset(names)
    return sorted(Path(p) for p in pairs.images)[:n]


def _captions(captions: Path, images: Path | None, names: set[str] | None, n: int) -> list[str]:
    """The first caption of the first `n` calibration photos (sorted by name): texts to calibrate and
    verify the text-meaning graph on."""
    from edge_gcl.data import read_pairs

    pairs = read_pairs(captions, images)
    if names is not None:
        pairs = pairs.subset(names)
    order = sorted(range(len(pairs)), key=lambda i: str(pairs.images[i]))[:n]
    return [pairs.captions[i][0] for i in order]


def _cosine(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a cosine threshold in [0, 1]")
    return value


def _calibration(model_spec: str, model_id: str) -> dict[str, float]:
    """{"min_score", "cross_modal_offset"} when the model's folder holds a calibration.json calibrated for
    these very weights (benchmarks/calibrate.py; the index's default relevance cut-off and cross-modal
    offset, `edge_gcl.index.default_min_score` and `default_cross_modal_offset`); else {}."""
    from edge_gcl.index.search import calibration

    return calibration(model_id, model_spec)


def _model_name(model_spec: str) -> str:
    """`--model` as recorded: a name as given, a checkpoint folder or file by its own name only."""
    return Path(model_spec).name if Path(model_spec).exists() else model_spec


def _run_cpu(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


class OutputFolderError(ValueError):
    """`--out` names something a build must not replace; nothing was touched."""


MADE_BY = "export.compile"  # the manifest's made_by: a folder this module built, which a later build may replace
# what a build leaves in its folder besides the files its manifest lists (AI Hub's summary, the libraries' log)
BUILD_EXTRAS = frozenset({MANIFEST_NAME, "build.log", "aihub_profile.json"})
# Files a build writes that an older manifest may not list: the towers' and OCR graphs' ONNX files, their
# external data and EPContext binaries, and the build's own temporaries. Nothing else (an `images/` folder, a
# `textbook.pdf`, a `.notes` file) may be in a folder a rebuild replaces.
BUILD_FILE = re.compile(r"\.?(?:image|text)_(?:tower|b\d+)[\w.-]*\.(?:onnx|data|bin)|\.?ocr_[a-z]+[\w.-]*\.(?:onnx|data|bin|txt)")


def check_out(out: Path) -> None:
    """Refuse an `--out` the build would destroy, before any work: a build replaces `out` whole, so it may only
    be missing, an empty folder, or an artifacts folder this module built (its manifest says so) holding
    nothing else. The working folder, the project and the folders above them, a file, a link or another
    folder (a thesis, photos) are refused naming what is there."""
    here, resolved = Path.cwd().resolve(), out.resolve()
    guarded = {here, *here.parents, Path(__file__).resolve().parents[1], *Path(__file__).resolve().parents[1].parents,
               Path.home().resolve()}
    if resolved in guarded:
        raise OutputFolderError(
            f"--out {out}: {resolved} is the working folder, the project, your home or a folder above them; "
            "a build replaces its --out whole: give a folder of its own, e.g. --out artifacts")
    if not os.path.lexists(out):
        return
    if out.is_symlink():
        raise OutputFolderError(f"--out {out}: a symbolic link; give the folder itself (a build replaces --out whole)")
    if not out.is_dir():
        raise OutputFolderError(f"--out {out}: a file, not an artifacts folder; a build would replace it: "
                                "give another --out")
    names = {p.name for p in out.iterdir()}
    if not names:
        return
    try:
        manifest = Manifest.load(out)
    except (OSError, ValueError, TypeError):
        manifest = None
    legacy = manifest is not None and manifest.made_by is None and "onnx" in manifest.tools  # built before made_by
    if manifest is None or not (manifest.made_by == MADE_BY or legacy):
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise OutputFolderError(f"--out {out}: a folder export.compile did not build (it holds {shown}); a build "
                                "replaces --out whole: give another --out, or an empty or missing folder")
    others = sorted(n for n in names - set(manifest.files) - BUILD_EXTRAS if not BUILD_FILE.fullmatch(n))
    if others:
        raise OutputFolderError(f"--out {out}: besides the build it holds {', '.join(others[:3])}"
                                f"{', ...' if len(others) > 3 else ''}, which a rebuild would delete: move "
                                f"{'them' if len(others) > 1 else 'it'} out first, or give another --out")


def _replace_folder(stage: Path, out: Path) -> None:
    """Put the finished `stage` at `out`, never leaving `out` missing.

    Linux: one renameat2(RENAME_EXCHANGE) swaps the two folders atomically (a reader sees the old
    build or the new one), then the old build, now at `stage`, is deleted. Elsewhere (or on a file
    system without the exchange), two renames: `out` -> `.<out>.old`, `stage` -> `out`; a crash
    between them leaves the old build at `.<out>.old`, which `recover_folder` (the first thing every
    build does) moves back.
    """
    if not os.path.lexists(out):
        stage.rename(out)
        return
    if _exchange(stage, out):
        _remove(stage)
        return
    old = _old_folder(out)
    _remove(old)
    out.rename(old)
    stage.rename(out)
    _remove(old)


def recover_folder(out: Path, log=print) -> None:
    """Undo what an interrupted build left beside `out`.

    A `.<out>.old` with no `out` is the previous build, moved aside by a replace that was cut short:
    it goes back to `out`. A `.<out>.old` beside `out` is a finished replace's leftover, and a
    `.<out>.partial-<pid>` whose process is gone a killed build's staging folder: both are deleted.
    """
    old = _old_folder(out)
    if os.path.lexists(old):
        if os.path.lexists(out):
            _remove(old)
        else:
            old.rename(out)
            log(f"  {out}: put back the previous build (a replace was interrupted)")
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rpartition("-")[2]
        if pid.isdigit() and not _running(int(pid)):
            _remove(stale)


def _old_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where that is unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # old kernel or a file system without it
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    tools = {}
    for name in ("edge-gcl", "torch", "onnx", "onnxruntime", "onnxruntime-qnn", "qai-hub"):
        try:
            tools[name] = version(name)
        except PackageNotFoundError:
            pass
    return tools


def summary_table(result: CompileResult) -> str:
    m = result.manifest
    rows = [("tower", "form", "file", "size MB", "NPU share", "cosine min", "cosine mean", "max abs err")]
    for tower, art in m.towers.items():
        for form, name in art.files.items():
            size = m.files.get(name, {}).get("size_bytes", 0) / 1e6
            fid = art.fidelity if form == "ctx" and art.fidelity else {}
            share = f"{art.npu_node_share:.0%}" if form == "ctx" and art.npu_node_share is not None else ""
            rows.append((tower, form, name, f"{size:.1f}", share,
                         *(f"{fid[k]:.4f}" if k in fid else "" for k in ("cosine_min", "cosine_mean", "max_abs_error"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    chip = m.chipset or {}
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"model {model_label(m.extra.get('source_model') or m.model_name, m.model_id)}, precision {m.precision}, chip {chip.get('name', '-')} "
                 f"(Hexagon {chip.get('htp_arch', '-')}), folder {result.out}")
    lines.append("time per step: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.steps_s.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.compile", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="model name, checkpoint folder, HF CLIP folder or .pt")
    p.add_argument("--target", choices=["snapdragon"], default="snapdragon", help="the platform (default chip: "
                   f"{DEFAULT_TARGET})")
    p.add_argument("--chipset", default=DEFAULT_TARGET, help="compile target; see --list-chipsets")
    p.add_argument("--precision", choices=["w8a16", "w8a8", "fp16"], default="w8a16")
    p.add_argument("--via", choices=["local", "aihub"], default="local",
                   help="local: QNN EP HTP backend on this machine; aihub: Qualcomm AI Hub")
    p.add_argument("--device", help="AI Hub device for --via aihub, e.g. 'Samsung Galaxy S24 (Family)'")
    p.add_argument("--aihub-quantize", action="store_true",
                   help="with --via aihub: upload float towers and quantize them on AI Hub (same calibration data)")
    p.add_argument("--out", default="artifacts", help="output folder: missing, empty or one export.compile built "
                   "(replaced only when the build succeeds)")
    p.add_argument("--calibration", help="Flickr-style folder (captions.txt + images/); default: the training data")
    p.add_argument("--calibration-size", type=int, default=64, help="photos and captions to calibrate on")
    p.add_argument("--heldout-size", type=int, default=32, help="other photos and captions to measure fidelity on")
    p.add_argument("--skip-compile", action="store_true", help="stop after quantization (no EPContext)")
    p.add_argument("--min-fidelity", type=_cosine, default=MIN_FIDELITY, metavar="COSINE",
                   help="fail the build if a compiled tower's lowest cosine against the float model, on the "
                        f"held-out inputs, is below this (default {MIN_FIDELITY})")
    p.add_argument("--skip-verify", action="store_true",
                   help="do not run the compiled towers in HTP emulation (no fidelity gate; the manifest says so)")
    p.add_argument("--verbose", action="store_true",
                   help="show the quantizer's and the QNN libraries' own output (default: into build.log)")
    p.add_argument("--no-ocr", dest="ocr", action="store_false",
                   help="leave the OCR graphs (the words in photos) out of the artifacts")
    p.add_argument("--min-char-accuracy", type=_cosine, metavar="ACC",
                   help="fail the build if the compiled OCR recogniser's character accuracy against float, on held-out "
                        "lines, is below this (default 0.95)")
    p.add_argument("--list-chipsets", action="store_true")
    args = p.parse_args(argv)
    if args.list_chipsets:
        print(format_table())
        return 0
    require_or_exit("export", what="python -m export.compile", clone=True)  # one line, not a traceback
    from .aihub import AIHubError, AIHubNotConfigured
    from .ocr import OcrFidelityError

    try:
        result = run(args.model, out=args.out, chipset=args.chipset, precision=args.precision, via=args.via,
                     device=args.device, calibration=args.calibration, n_calibration=args.calibration_size,
                     n_heldout=args.heldout_size, min_fidelity=args.min_fidelity, aihub_quantize=args.aihub_quantize,
                     skip_compile=args.skip_compile, skip_verify=args.skip_verify, verbose=args.verbose,
                     ocr=args.ocr, min_char_accuracy=args.min_char_accuracy)
    except (AIHubError, FidelityError, OcrFidelityError, OutputFolderError, UnknownChipsetError) as e:  # say what to do
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, AIHubNotConfigured) else 1
    # The build succeeded: `args.out` holds it.
    print(summary_table(result))
    record = record_artifacts(args.out)  # what `edge-gcl index/search/app` run when no --model is given
    print(f"edge-gcl index, search and app in this environment ({environment()}) now run "
          f"{Path(args.out).resolve()} by default (recorded in {record})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

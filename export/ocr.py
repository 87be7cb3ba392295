"""The OCR graphs in an artifacts folder: PP-OCR's detector, angle classifier and recogniser (the
rapidocr wheel's float ONNX models) quantized and compiled beside the towers, so the runtime
install reads the words in photos with no OCR package at all.

`build_ocr(stage, ...)`, step by step (export.compile runs it after each tower step):

1. Copy the float graphs and write the dictionary (`edge_gcl.ocr.contract`): the CPU's float form.
2. Pin each graph's input to its fixed shape (`OcrConfig.input_shape`: gate and det are the detector
   at two sizes) and let ONNX Runtime's basic optimizations fold BatchNormalization into the convs
   and the shape arithmetic into constants (the HTP takes neither a standalone BatchNormalization
   nor a Shape op).
3. Quantize each with the towers' recipe (`export.quantize.quantize_tower`: QDQ, the precision of
   the build; settings by architecture), calibrated on drawn text (`text_images`, `line_crops`:
   lines of words and codes in the fonts at hand, pasted onto the calibration photos) and on the
   photos themselves.
4. Compile each for the chip's HTP (`export.qnn.compile_context`: every node on the NPU or a
   `NPUPlacementError` naming the ones that would fall back).
5. The fidelity gate, in HTP emulation (or QDQ on the CPU with --skip-compile): the recogniser's
   character accuracy against the float recogniser on held-out line crops, the classifier's
   agreement, and the detector's text-mask IoU on held-out images. A character accuracy under
   `min_char_accuracy` (0.95) fails the build like a tower's cosine does.

Backend-specific code stays in `export.qnn`; the runtime reads what this writes through
`edge_gcl.ocr.artifacts`.
"""

from __future__ import annotations

import glob
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from PIL import Image, ImageDraw, ImageFont

from edge_gcl.manifest import TensorSpec, TowerArtifacts, TowerSpec
from edge_gcl.metrics import char_accuracy
from edge_gcl.ocr.artifacts import TOWER_PREFIX
from edge_gcl.ocr.contract import (
    DEFAULT_CONFIG,
    DICTIONARY_NAME,
    GRAPHS,
    OcrConfig,
    package_files,
    read_dictionary,
    write_dictionary,
)
from edge_gcl.ocr.engine import cls_input, det_input, rec_inputs

MIN_CHAR_ACCURACY = 0.95  # recogniser, quantized/compiled vs float, on held-out line crops
FLOAT_FILES = {"gate": "ocr_det.onnx", "det": "ocr_det.onnx", "cls": "ocr_cls.onnx", "rec": "ocr_rec.onnx"}
SOURCE = {"gate": "det", "det": "det", "cls": "cls", "rec": "rec"}
WORDS = """invoice receipt total gate boarding seat flight platform coach ticket menu café crème espresso
lease agreement tenant landlord rent parking exit emergency floor street avenue market pharmacy
paracetamol croissant baguette password network calendar dentist meeting revenue review sale reward
lost cat answers zurich genève münchen kraków quai rue calle straße délai reçu €""".split()


class OcrFidelityError(RuntimeError):
    """The quantized or compiled OCR graphs read text too unlike the float ones."""


@dataclass
class OcrBuild:
    towers: dict[str, TowerArtifacts]  # "ocr_gate", "ocr_det", "ocr_cls", "ocr_rec"
    extra: dict[str, Any]  # manifest extra["ocr"]


# ----------------------------------------------------------------------------- drawn text
def _fonts() -> list[str]:
    found = sorted(glob.glob("/usr/share/fonts/truetype/*/*.ttf"))
    if not found:
        import matplotlib

        found = sorted(glob.glob(str(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVu*.ttf")))
    return [f for f in found if not any(x in f for x in ("Math", "Symbol", "ExtraLight"))]


def _phrase(rng: np.random.Generator) -> str:
    words = [str(w) for w in rng.choice(WORDS, int(rng.integers(1, 6)))]
    if rng.random() < 0.5:
        words.append(f"{rng.integers(0, 9999):0{int(rng.integers(1, 5))}d}")
    if rng.random() < 0.3:
        words.append("".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ0123456789"), int(rng.integers(3, 8)))))
    return " ".join(words if rng.random() < 0.7 else [w.upper() for w in words])


def text_images(photos: Sequence[Path], n: int, *, seed: int) -> list[Image.Image]:
    """`n` photos (cycled) each with a card of 2-6 drawn lines pasted on it, upright."""
    rng = np.random.default_rng(seed)
    fonts = _fonts()
    out = []
    for i in range(n):
        with Image.open(photos[i % len(photos)]) as img:
            photo = img.convert("RGB")
        scale = 960 / max(photo.size)
        photo = photo.resize((round(photo.width * scale), round(photo.height * scale)))
        font = ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], int(rng.integers(18, 44)))
        lines = [_phrase(rng) for _ in range(int(rng.integers(2, 7)))]
        d = ImageDraw.Draw(photo)
        x, y = int(rng.integers(0, photo.width // 3)), int(rng.integers(0, photo.height // 3))
        width = max(d.textlength(line, font=font) for line in lines) + 20
        height = len(lines) * font.size * 1.4 + 20
        d.rectangle((x, y, x + width, y + height), fill=tuple(int(v) for v in rng.integers(200, 256, 3)))
        for j, line in enumerate(lines):
            d.text((x + 10, y + 10 + j * font.size * 1.4), line, fill=tuple(int(v) for v in rng.integers(0, 60, 3)), font=font)
        out.append(photo)
    return out


def line_crops(n: int, *, seed: int) -> list[Image.Image]:
    """`n` single lines of drawn text, tightly cropped, as the detector's boxes cut them."""
    rng = np.random.default_rng(seed)
    fonts = _fonts()
    out = []
    for _ in range(n):
        font = ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], int(rng.integers(20, 48)))
        text = _phrase(rng)
        w = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)) + 16
        bg = tuple(int(v) for v in rng.integers(180, 256, 3))
        img = Image.new("RGB", (w, int(font.size * 1.5)), bg)
        ImageDraw.Draw(img).text((8, font.size * 0.15), text, fill=tuple(int(v) for v in rng.integers(0, 70, 3)), font=font)
        out.append(img)
    return out


def feeds(graph: str, config: OcrConfig, images: Sequence[Image.Image], lines: Sequence[Image.Image]) -> list[dict[str, np.ndarray]]:
    """Batch-1 feeds of `graph` (input "x") from photos (gate, det) or line crops (cls, rec)."""
    if graph in ("gate", "det"):
        size = config.gate_size if graph == "gate" else config.det_size
        return [{"x": det_input(img, size)[0]} for img in images]
    if graph == "cls":
        return [{"x": cls_input(c, config.rec_height, config.cls_width)[None]} for c in lines]
    return [{"x": piece[None]} for c in lines for piece, _ in rec_inputs(c, config.rec_height, config.rec_width)]


# ----------------------------------------------------------------------------- graphs
def fold_batchnorm(model: onnx.ModelProto) -> int:
    """Fold each BatchNormalization that follows a Conv (whose output nothing else reads) into the
    Conv's weights and bias, in place; returns how many. The HTP takes no standalone BatchNormalization
    (the classifier's paddle2onnx export keeps 35 of them)."""
    from onnx import numpy_helper

    constants = [n for n in model.graph.node if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"]
    for node in constants:  # paddle2onnx writes the BN statistics as Constant nodes: make them initializers
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        model.graph.initializer.append(tensor)
        model.graph.node.remove(node)
    inits = {t.name: t for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    producer = {out: node for node in model.graph.node for out in node.output}
    folded = []
    for bn in model.graph.node:
        conv = producer.get(bn.input[0]) if bn.op_type == "BatchNormalization" else None
        if conv is None or conv.op_type != "Conv" or readers.get(bn.input[0], 0) != 1:
            continue
        if not all(n in inits for n in bn.input[1:5]) or conv.input[1] not in inits:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)  # (O, I/g, kh, kw)
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0])
        scale = gamma / np.sqrt(var + eps)
        new_w = (w * scale[:, None, None, None]).astype(np.float32)
        new_b = ((b - mean) * scale + beta).astype(np.float32)
        w_name, b_name = f"{conv.name or conv.output[0]}_folded_w", f"{conv.name or conv.output[0]}_folded_b"
        model.graph.initializer.extend([numpy_helper.from_array(new_w, w_name), numpy_helper.from_array(new_b, b_name)])
        del conv.input[1:]
        conv.input.extend([w_name, b_name])
        conv.output[0] = bn.output[0]
        folded.append(bn)
    for bn in folded:
        model.graph.node.remove(bn)
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return len(folded)


def fixed_graph(src: Path, dst: Path, shape: Sequence[int]) -> Path:
    """`src` with its input pinned to `shape` (shapes inferred again) and BatchNormalization folded
    into the convs (`fold_batchnorm`), for quantization and the HTP."""
    model = onnx.load(str(src))
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, shape, strict=True):
        dim.Clear()
        dim.dim_value = int(value)
    for out in model.graph.output:
        for dim in out.type.tensor_type.shape.dim:
            dim.Clear()
    del model.graph.value_info[:]
    fold_batchnorm(model)
    onnx.save(onnx.shape_inference.infer_shapes(model), str(dst))
    return dst


def spec(graph: str, config: OcrConfig, output: str, batch: int | str) -> TowerSpec:
    shape = config.input_shape(graph, batch=batch)
    if graph in ("gate", "det"):
        out_shape: tuple[int | str, ...] = (1, 1, shape[2], shape[3])
    elif graph == "cls":
        out_shape = (batch, 2)
    else:
        out_shape = (batch, config.rec_width // 8, "classes")
    return TowerSpec(inputs=(TensorSpec("x", shape, "float32"),), outputs=(TensorSpec(output, out_shape, "float32"),))


# ----------------------------------------------------------------------------- fidelity
def _decode(probs: np.ndarray, characters: list[str]) -> str:
    ids = probs.argmax(-1)
    keep = np.r_[True, ids[1:] != ids[:-1]] & (ids != 0)
    return "".join(characters[i] for i in ids[keep] if i < len(characters))


def measure_fidelity(
    run_float: Callable[[str, dict[str, np.ndarray]], np.ndarray],
    run_built: Callable[[str, dict[str, np.ndarray]], np.ndarray],
    config: OcrConfig,
    characters: list[str],
    images: Sequence[Image.Image],
    lines: Sequence[Image.Image],
) -> dict[str, float]:
    """The built graphs against the float ones on held-out inputs: recogniser character accuracy
    (the gate), classifier agreement, detector text-mask IoU at both sizes."""
    out: dict[str, float] = {}
    rec_feeds = feeds("rec", config, images, lines)
    ref = [_decode(run_float("rec", f)[0], characters) for f in rec_feeds]
    got = [_decode(run_built("rec", f)[0], characters) for f in rec_feeds]
    out["rec_char_accuracy"] = char_accuracy(ref, got)
    out["rec_pieces"] = len(rec_feeds)
    cls_feeds = feeds("cls", config, images, lines)
    agree = [run_float("cls", f)[0].argmax() == run_built("cls", f)[0].argmax() for f in cls_feeds]
    out["cls_agreement"] = float(np.mean(agree))
    for graph in ("gate", "det"):
        ious = []
        for f in feeds(graph, config, images, lines):
            a, b = run_float(graph, f)[0, 0] > config.threshold, run_built(graph, f)[0, 0] > config.threshold
            ious.append(float((a & b).sum() / max((a | b).sum(), 1)))
        out[f"{graph}_mask_iou"] = float(np.mean(ious))
    return out


# ----------------------------------------------------------------------------- the recipe
def float_graphs(folder: Path, config: OcrConfig) -> dict[str, TowerArtifacts]:
    """Step 1: the wheel's float graphs and the dictionary copied into `folder`; their manifest entries."""
    source = package_files()
    for graph in ("det", "cls", "rec"):
        shutil.copyfile(getattr(source, graph), folder / FLOAT_FILES[graph])
    write_dictionary(source.rec, folder / DICTIONARY_NAME)
    towers: dict[str, TowerArtifacts] = {}
    for graph in GRAPHS:
        output = onnx.load(str(folder / FLOAT_FILES[graph]), load_external_data=False).graph.output[0].name
        towers[f"{TOWER_PREFIX}{graph}"] = TowerArtifacts(spec(graph, config, output, 1), {"float": FLOAT_FILES[graph]})
    towers[f"{TOWER_PREFIX}rec"].files["dictionary"] = DICTIONARY_NAME
    return towers


def add_float_graphs(folder: Path, config: OcrConfig = DEFAULT_CONFIG) -> Path:
    """Put the float OCR graphs into an existing artifacts folder and its manifest (no quantization:
    what a CPU runtime needs; tests give their tiny artifacts OCR this way)."""
    from edge_gcl.manifest import Manifest

    manifest = Manifest.load(folder)
    manifest.towers.update(float_graphs(Path(folder), config))
    manifest.extra["ocr"] = {"config": config.to_dict(), "fidelity": {"checked": False, "reason": "float graphs only"}}
    manifest.save(folder)
    return Path(folder)


def build_ocr(
    stage: Path,
    *,
    precision: str,
    chip: Any,
    photos: Sequence[Path],
    config: OcrConfig = DEFAULT_CONFIG,
    n_calibration: int = 16,
    n_heldout: int = 2,
    n_heldout_lines: int = 12,
    skip_compile: bool = False,
    skip_verify: bool = False,
    min_char_accuracy: float = MIN_CHAR_ACCURACY,
    say: Callable[[str], None] = print,
    native: Callable[[], Any] | None = None,
) -> OcrBuild:
    """Steps 1-5 of the module docstring into `stage`; returns the manifest entries. Raises
    `OcrFidelityError` when the recogniser's character accuracy is under `min_char_accuracy`."""
    import contextlib

    from .quantize import quantize_tower

    native = native or contextlib.nullcontext
    source = package_files()
    started = time.perf_counter()
    # 1. float graphs and the dictionary
    towers = float_graphs(stage, config)
    characters = ["", *read_dictionary(stage / DICTIONARY_NAME), " "]
    images = text_images(photos, n_calibration + n_heldout, seed=0)
    lines = line_crops(n_calibration + n_heldout_lines, seed=1)
    # 2-3. fixed shapes, QDQ
    if precision != "fp16":
        say(f"  OCR: quantizing the detector ({config.gate_size} and {config.det_size} px), classifier, recogniser ({precision})")
    for graph in GRAPHS:
        t = stage / f"{TOWER_PREFIX}{graph}"
        fixed = fixed_graph(stage / FLOAT_FILES[graph], Path(f"{t}_fixed.onnx"), config.input_shape(graph))
        calib = feeds(graph, config, images[:n_calibration], lines[:n_calibration])
        if graph in ("gate", "det"):  # and text-free photos, which most are
            calib += [{"x": det_input(Image.open(p).convert("RGB"), config.input_shape(graph)[2])[0]} for p in photos[:8]]
        with native():
            qdq = quantize_tower(fixed, Path(f"{t}_{precision}.onnx"), kind="image", precision=precision, calibration=calib)
        fixed.unlink()
        towers[f"{TOWER_PREFIX}{graph}"].files["qdq"] = qdq.name
    say(f"  OCR: quantized in {time.perf_counter() - started:.1f} s")
    # 4. EPContext
    compiled = not skip_compile
    if compiled:
        from .qnn import compile_context

        for graph in GRAPHS:
            t = stage / f"{TOWER_PREFIX}{graph}"
            with native():
                report = compile_context(stage / towers[f"{TOWER_PREFIX}{graph}"].files["qdq"], Path(f"{t}_{precision}_ctx.onnx"),
                                         chipset=chip, fp16=precision == "fp16")
            art = towers[f"{TOWER_PREFIX}{graph}"]
            art.files["ctx"] = report.ctx_path.name
            if report.bin_path is not None:
                art.files["ctx_bin"] = report.bin_path.name
            art.npu_node_share = report.npu_share
            say(f"  OCR {graph}: {report.npu_nodes}/{report.total_nodes} nodes on the NPU ({report.npu_share:.0%})")
    # 5. fidelity
    extra: dict[str, Any] = {"config": config.to_dict(), "models": {g: Path(getattr(source, g)).name for g in ("det", "cls", "rec")},
                             "source": "rapidocr wheel (PP-OCRv6 small det/rec, PP-OCR mobile v2 cls)"}
    if skip_verify:
        extra["fidelity"] = {"checked": False, "reason": "--skip-verify"}
        return OcrBuild(towers, extra)
    from .qnn import run_on_cpu, run_on_htp

    form = "ctx" if compiled else "qdq"
    say(f"  OCR: verifying the {form} graphs against float on {n_heldout_lines} held-out lines and {n_heldout} photos"
        + (" (HTP emulation)" if compiled else " (QDQ on the CPU)"))
    t0 = time.perf_counter()

    def run_float(graph: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        return next(iter(run_on_cpu(stage / FLOAT_FILES[graph], feed).values()))

    def run_built(graph: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        path = stage / towers[f"{TOWER_PREFIX}{graph}"].files[form]
        with native():
            return next(iter((run_on_htp(path, feed) if compiled else run_on_cpu(path, feed)).values()))

    fid = measure_fidelity(run_float, run_built, config, characters, images[n_calibration:], lines[n_calibration:])
    fid.update(checked=True, form=form, min_char_accuracy=min_char_accuracy)
    extra["fidelity"] = fid
    say(f"  OCR: recogniser character accuracy {fid['rec_char_accuracy']:.4f} vs float, classifier agreement "
        f"{fid['cls_agreement']:.2f}, detector mask IoU gate {fid['gate_mask_iou']:.3f} det {fid['det_mask_iou']:.3f} "
        f"({time.perf_counter() - t0:.1f} s)")
    for graph in GRAPHS:
        towers[f"{TOWER_PREFIX}{graph}"].fidelity = {k: v for k, v in fid.items() if isinstance(v, float) and k.startswith(graph)}
    if fid["rec_char_accuracy"] < min_char_accuracy:
        raise OcrFidelityError(
            f"OCR recogniser at {precision}: character accuracy {fid['rec_char_accuracy']:.4f} against the float model on "
            f"{fid['rec_pieces']} held-out line pieces, under {min_char_accuracy:g}; try --precision w8a16 or fp16. "
            "Nothing was replaced."
        )
    return OcrBuild(towers, extra)

"""The OCR graphs' I/O contract and settings, in one place: `export.compile` writes it into the
manifest, `OcrEngine` reads it back.

Graphs (PP-OCRv6 small detector and recogniser, PP-OCR mobile v2 angle classifier, as the
rapidocr 3.x wheel ships them):

    gate  x (1, 3, G, G) float32 BGR in [-1, 1]  -> (1, 1, G, G) text probability   the cheap pass
    det   x (1, 3, S, S)                          -> (1, 1, S, S)                     the detector
    cls   x (B, 3, 48, 192)                       -> (B, 2) P(0 deg), P(180 deg)       angle classifier
    rec   x (B, 3, 48, W)                         -> (B, W / 8, C) character probs     C = dictionary + 2

"gate" and "det" are the same detector at two fixed sizes (one float graph with dynamic size serves
both on the CPU; the NPU gets one compiled graph per size). The dictionary (one character a line;
index 0 of the recogniser's classes is the CTC blank, the last a space) ships beside the graphs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

GRAPHS = ("gate", "det", "cls", "rec")
DICTIONARY_NAME = "ocr_dictionary.txt"
# the rapidocr 3.x wheel's models (the `[export]` extra): what export.compile quantizes and compiles
PACKAGE_MODELS = {
    "det": "PP-OCRv6_det_small.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    "rec": "PP-OCRv6_rec_small.onnx",
}


@dataclass(frozen=True)
class OcrConfig:
    """Sizes and thresholds. The defaults were chosen on the dev half of `python -m benchmarks.ocr`
    (docs/ocr.md gives the figures)."""

    det_size: int = 640  # the detector's fixed square input (the photo letterboxed into it)
    gate_size: int = 320  # the cheap first pass; 0: none (always detect at det_size)
    threshold: float = 0.3  # DB: a pixel is text above this probability
    box_threshold: float = 0.5  # a region is kept if its mean probability is at least this
    unclip_ratio: float = 1.6  # DB: grow each region by area * ratio / perimeter
    # a region whose short side is over this share of the detector's input is not a line of text:
    # PP-OCR's detector also lights up flat areas (sky, walls); 41 of 100 flickr8k photos passed a
    # 320 px gate without this, 4 with it, and 49 of 50 drawn text photos either way (dev)
    max_box_height: float = 0.25
    # an image more than this many times longer than wide (or wider than long) is detected in about
    # square tiles: a 1080 x 2340 screenshot letterboxed whole into 640 px shrinks 34 px text to 9 px
    tile_ratio: float = 1.5
    rec_height: int = 48
    rec_width: int = 320  # the recogniser's fixed width; longer lines are cut between words
    cls_width: int = 192
    cls_threshold: float = 0.9  # turn a line by 180 degrees when the classifier is this sure
    min_line_score: float = 0.5  # drop recognised pieces whose mean confidence is lower
    max_lines: int = 200  # at most this many text regions per photo (largest first)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OcrConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def input_shape(self, graph: str, *, batch: int | str = 1) -> tuple[int | str, ...]:
        """The fixed input shape of `graph` (what the QDQ and EPContext graphs are built for)."""
        return {
            "gate": (1, 3, self.gate_size, self.gate_size),
            "det": (1, 3, self.det_size, self.det_size),
            "cls": (batch, 3, self.rec_height, self.cls_width),
            "rec": (batch, 3, self.rec_height, self.rec_width),
        }[graph]


DEFAULT_CONFIG = OcrConfig()


@dataclass(frozen=True)
class OcrFiles:
    gate: Path
    det: Path
    cls: Path
    rec: Path
    dictionary: Path  # one character a line, or the recogniser .onnx (its "character" metadata)


def package_dir() -> Path:
    """Where the rapidocr wheel keeps its models (found without importing rapidocr, which pulls OpenCV)."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the PP-OCR models ship in the rapidocr wheel: pip install 'edge-gcl[export]' "
            "(or name an artifacts folder built by `python -m export.compile`, which holds them)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def package_files() -> OcrFiles:
    folder = package_dir()
    paths = {g: folder / name for g, name in PACKAGE_MODELS.items()}
    for g, p in paths.items():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: the {g} model is missing from the rapidocr wheel")
    return OcrFiles(gate=paths["det"], det=paths["det"], cls=paths["cls"], rec=paths["rec"], dictionary=paths["rec"])


def read_dictionary(path: Path) -> list[str]:
    """The recogniser's characters, in class order (without the blank and the space)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
        text = meta.custom_metadata_map.get("character")
        if text is None:
            raise ValueError(f"{path}: no 'character' metadata (not a PP-OCR recogniser)")
    else:
        text = path.read_text(encoding="utf-8")
    chars = text.split("\n")
    if chars and chars[-1] == "":
        chars = chars[:-1]
    return chars


def write_dictionary(rec_model: Path, out: Path) -> Path:
    out.write_text("\n".join(read_dictionary(rec_model)) + "\n", encoding="utf-8")
    return out

"""Image decoding and preprocessing with Pillow + numpy, shared by training and the device runtime.

No torch here: the on-device runtime imports this module, so a photo becomes exactly the same
tensor in training, in evaluation and in the app.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from .config import ImagePreprocess

try:  # HEIC / HEIF (the iPhone's default, common on Android): decoded by libheif through pillow-heif
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORT = True
except ImportError:  # a base dependency; a trimmed install says what is missing (load_image)
    HEIF_SUPPORT = False
HEIF_EXTENSIONS = (".heic", ".heif")

# Photos above this many pixels are refused (decompression bombs); 100 MP covers real cameras.
MAX_IMAGE_PIXELS = 100_000_000
# What decoding one photo may take in memory: its pixels as decoded (after a JPEG's reduced-scale decoding or a
# HEIC's thumbnail) x the bytes Pillow keeps per pixel (4 for RGB), plus the RGB copy and an EXIF rotation's copy
# (`decode_bytes`). 128 MiB: a 33 MP RGB PNG; a camera JPEG of any size decodes at a reduced scale far below it,
# and a phone's HEIC over about 14 MP is read from its embedded thumbnail. The default artifacts on the CPU (float
# towers, OCR graphs and the text-meaning encoder) take a process to about 450 MB, and a decode costs up to the
# budget rounded up to Pillow's 64 MiB blocks, so a process stays under 600 MB whatever a photo holds (256 MiB
# kept it there before the OCR graphs joined the model: 690 MB with them). Photos decoded at once in threads
# (ingest, the app's thumbnails) share the same budget, so together they stay under it too.
MAX_DECODE_BYTES = 128 * 2**20
STRIP_PIXELS = 1 << 20  # modes other than RGB are converted this many pixels at a time (bounded temporaries)
# A resize whose intermediate (short side to the output size, long side in proportion) would exceed this many
# times the output's pixels crops first: a 40000 x 2 photo would otherwise make a 4.5M x 224 image (3 GB).
# Ordinary photos (up to 8:1) take the plain path, so their pixels are exactly what they always were.
MAX_RESIZE_RATIO = 8

# Pillow keeps an image in blocks of this size. Above glibc's largest mmap threshold (32 MiB) a block is mapped on
# its own and goes back to the system when freed; at Pillow's default 16 MiB, a large photo's blocks stayed in
# the malloc arena of the thread that decoded it, so each decoding thread kept ~150 MB after use (three 40 MP
# thumbnails in three threads: 454 MB peak, 314 MB with 64 MiB blocks). Smaller images take only what they need.
# PILLOW_BLOCK_SIZE, if set, wins.
if "PILLOW_BLOCK_SIZE" not in os.environ:
    Image.core.set_block_size(64 * 2**20)

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class ImageDecodeError(ValueError):
    """A photo that cannot be used; the message starts with the input's name."""


class _DecodeBudget:
    """Bytes of photo decoding in flight in this process: a decode waits until its bytes fit under the limit
    (one that alone is over it is refused before it starts, `decoded`)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self.peak_bytes = 0  # the most in flight at once (tests read it)
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, n_bytes: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self.used_bytes == 0 or self.used_bytes + n_bytes <= self.limit_bytes)
            self.used_bytes += n_bytes
            self.peak_bytes = max(self.peak_bytes, self.used_bytes)
        try:
            yield
        finally:
            with self._cond:
                self.used_bytes -= n_bytes
                self._cond.notify_all()


DECODING = _DecodeBudget(MAX_DECODE_BYTES)


def load_image(
    source: str | Path | bytes | Image.Image, *, draft_size: int | None = None, max_pixels: int = 0
) -> Image.Image:
    """Open a photo as an upright RGB image, or raise ImageDecodeError naming it.

    Reads what Pillow reads plus HEIC/HEIF (pillow-heif; libheif applies the file's rotation and
    mirroring, and reports orientation 1 so it is not applied twice). Handles EXIF rotation, palette/alpha/CMYK/16-bit modes (alpha is composited on white), and
    refuses truncated files, decompression bombs (over `max_pixels`, default MAX_IMAGE_PIXELS, or
    over MAX_DECODE_BYTES of memory to decode, `decode_bytes`) and
    what is not a regular file (a FIFO would block). `draft_size` lets JPEG decode at a reduced
    scale that still covers that many pixels on each side (much faster for camera photos), and a
    HEIC use its embedded thumbnail when one covers them (a phone's HEIC usually has one; pillow-heif
    takes it only when it is a scaled copy: same aspect, crop, rotation and colour profile).
    The decoding memory is reserved from the process's budget (`DECODING`) while it decodes; `decoded`
    keeps it reserved while the caller uses the image.
    """
    with decoded(source, draft_size=draft_size, max_pixels=max_pixels) as img:
        return img


@contextmanager
def decoded(
    source: str | Path | bytes | Image.Image, *, draft_size: int | None = None, max_pixels: int = 0
) -> Iterator[Image.Image]:
    """`load_image` as a context: the decoding memory stays reserved in `DECODING` until the block ends, so
    photos decoded at once in several threads (ingest, the app's thumbnails) never hold more than
    MAX_DECODE_BYTES between them. Resize or copy what you keep inside the block."""
    if isinstance(source, Image.Image):  # the caller's image is left as it is
        yield _to_rgb(ImageOps.exif_transpose(source) if _orientation(source) not in (None, 1) else source)
        return
    with ExitStack() as budget:
        yield _decode(source, draft_size=draft_size, max_pixels=max_pixels or MAX_IMAGE_PIXELS, budget=budget)


def _decode(source: str | Path | bytes, *, draft_size: int | None, max_pixels: int, budget: ExitStack) -> Image.Image:
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        _check_regular_file(source, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
            with fp:
                img = Image.open(fp)
                if img.width * img.height > max_pixels:
                    raise ImageDecodeError(f"{name}: {img.width}x{img.height} is over {max_pixels:,} pixels")
                if draft_size and img.format in ("JPEG", "HEIF"):  # HEIF: an embedded thumbnail that covers it
                    img.draft("RGB", (draft_size, draft_size))
                cost = decode_bytes(img)
                if cost > DECODING.limit_bytes and img.format == "HEIF" and _largest_thumbnail_within(img, DECODING.limit_bytes):
                    cost = decode_bytes(img)  # a phone's 48 MP HEIC: read from its thumbnail, not refused
                if cost > DECODING.limit_bytes:
                    raise ImageDecodeError(
                        f"{name}: {img.width}x{img.height} ({img.mode}) would take {cost / 2**20:,.0f} MB to decode, "
                        f"over the {DECODING.limit_bytes / 2**20:,.0f} MB limit"
                    )
                budget.enter_context(DECODING.reserve(cost))
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                img.load()
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"{name}: is a directory") from None
    except PermissionError:
        raise ImageDecodeError(f"{name}: permission denied") from None
    except UnidentifiedImageError:
        if not HEIF_SUPPORT and name.lower().endswith(HEIF_EXTENSIONS):
            raise ImageDecodeError(f"{name}: HEIC/HEIF needs pillow-heif (pip install pillow-heif)") from None
        raise ImageDecodeError(f"{name}: not a supported image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"{name}: refused as a decompression bomb ({e})") from None
    except MemoryError:
        raise ImageDecodeError(f"{name}: out of memory while decoding") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({e})") from None
    try:  # in place: no copy of a photo that needs no turning (exif_transpose copies it otherwise)
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # a broken EXIF block should not lose the photo
        pass
    return _to_rgb(img)


def _largest_thumbnail_within(img: Image.Image, limit_bytes: int) -> bool:
    """Point an opened HEIC at its largest embedded thumbnail whose decoding fits `limit_bytes`; False when it
    has none (or was drafted already). A 48 MP phone HEIC takes about 400 MB to decode whole, over the
    budget, while its thumbnail is still larger than the image tower's input."""
    try:
        frame = img._heif_file[img.tell()]  # pillow-heif's own handle: the thumbnails' sizes
        thumbnails = [frame.get_thumbnail(i) for i in range(len(frame.info.get("thumbnails", [])))]
        sizes = sorted((t.size for t in thumbnails), key=lambda wh: wh[0] * wh[1], reverse=True)
    except Exception:  # another pillow-heif, or none: refused as before
        return False
    per_pixel = decode_bytes(img) / max(1, img.width * img.height)
    for w, h in sizes:
        if w * h * per_pixel <= limit_bytes and img.draft("RGB", (w, h)) is not None:
            return True
    return False


def _orientation(img: Image.Image) -> int | None:
    try:
        return img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block: exif_transpose skips it too
        return None


def _pixel_bytes(mode: str) -> int:
    """Bytes Pillow keeps per pixel of `mode` (3-band modes such as RGB take 4)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def decode_bytes(img: Image.Image) -> int:
    """The memory decoding an opened (not yet loaded) image takes, at its current (drafted) size: the decoded
    pixels, a copy when its EXIF orientation turns it, and the RGB image when it is in another mode (made
    STRIP_PIXELS at a time); a HEIC's decoder also holds its YUV planes and an RGB buffer of its own (a 24 MP
    HEIC took 8.3 bytes a pixel at its peak: counted as 9)."""
    pixels = img.width * img.height
    per_pixel = _pixel_bytes(img.mode)
    # a PNG's EXIF after its pixels is only found by decoding them: counted as not turned
    rotated = not (img.format == "PNG" and "exif" not in img.info) and _orientation(img) not in (None, 1)
    total = per_pixel * (2 if rotated else 1) + (0 if img.mode == "RGB" else 4) + (5 if img.format == "HEIF" else 0)
    return pixels * total


def _check_regular_file(path: str | Path, name: str) -> None:
    """Refuse what is not a regular file before opening it: reading a FIFO or a device would block
    or never end."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageDecodeError(f"{name}: no such file") from None
    except PermissionError:
        raise ImageDecodeError(f"{name}: permission denied") from None
    except OSError as e:
        raise ImageDecodeError(f"{name}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ImageDecodeError(f"{name}: is a directory")
    if not stat.S_ISREG(mode):
        raise ImageDecodeError(f"{name}: not a regular file (a pipe, socket or device)")


def _to_rgb(img: Image.Image) -> Image.Image:
    """An RGB image of `img`, converted STRIP_PIXELS at a time: every conversion is per pixel, so strips give
    the same pixels as the whole while the temporaries stay small (an 80 MP RGBA PNG took 15 bytes a pixel)."""
    if img.mode == "RGB":
        return img
    high = None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # scaled by the whole image's maximum
        high = float(img.getextrema()[1]) if img.width and img.height else 1.0
    if img.width * img.height <= STRIP_PIXELS:
        return _strip_to_rgb(img, high)
    out = Image.new("RGB", img.size)
    rows = max(1, STRIP_PIXELS // img.width)
    for top in range(0, img.height, rows):
        strip = img.crop((0, top, img.width, min(top + rows, img.height)))
        out.paste(_strip_to_rgb(strip, high), (0, top))
    return out


def _strip_to_rgb(img: Image.Image, high: float | None) -> Image.Image:
    if high is not None:
        a = np.asarray(img, dtype=np.float64)
        a8 = np.clip(a / max(high, 1.0) * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(a8, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize_and_crop(img: Image.Image, cfg: ImagePreprocess) -> Image.Image:
    """Resize (short side to cfg.size, then centre crop; or squash) to a cfg.size square."""
    s = cfg.size
    resample = _RESAMPLE[cfg.interpolation]
    if cfg.resize == "squash":
        return img.resize((s, s), resample)
    w, h = img.size
    scale = s / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    left, top = (nw - s) // 2, (nh - s) // 2
    if nw * nh > MAX_RESIZE_RATIO * s * s:  # a thin photo: resize only the centre square, its cost bounded by s x s
        sx, sy = w / nw, h / nh
        return img.resize((s, s), resample, box=(left * sx, top * sy, (left + s) * sx, (top + s) * sy))
    img = img.resize((nw, nh), resample)
    return img.crop((left, top, left + s, top + s))


def to_array(img: Image.Image, cfg: ImagePreprocess) -> np.ndarray:
    """A cfg.size square RGB image -> (3, S, S) float32, normalised with cfg.mean / cfg.std."""
    x = np.asarray(img, dtype=np.float32) / 255.0  # (S, S, 3) in [0, 1]
    x = (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, S, S)


def preprocess(source: str | Path | bytes | Image.Image, cfg: ImagePreprocess) -> np.ndarray:
    """Photo -> (3, S, S) float32: the image tower's input, identical in training and on device. The decoded
    photo's memory stays reserved (`decoded`) until it is resized to S x S."""
    with decoded(source, draft_size=cfg.size) as img:
        return to_array(resize_and_crop(img, cfg), cfg)


def random_resized_crop(
    img: Image.Image, cfg: ImagePreprocess, rng: np.random.Generator, *, scale: tuple[float, float] = (0.5, 1.0)
) -> Image.Image:
    """Training augmentation: a random crop of `scale` of the area (aspect 3/4..4/3) resized to S x S."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return img.resize((cfg.size, cfg.size), _RESAMPLE[cfg.interpolation], box=(x0, y0, x0 + cw, y0 + ch))
    return resize_and_crop(img, cfg)

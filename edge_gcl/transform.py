"""Image decoding and preprocessing with Pillow + numpy, shared by training and the device runtime.

No torch here: the on-device runtime imports this module, so a photo becomes exactly the same
tensor in training, in evaluation and in the app.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

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

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class ImageDecodeError(ValueError):
    """A photo that cannot be used; the message starts with the input's name."""


def load_image(
    source: str | Path | bytes | Image.Image, *, draft_size: int | None = None, max_pixels: int = 0
) -> Image.Image:
    """Open a photo as an upright RGB image, or raise ImageDecodeError naming it.

    Reads what Pillow reads plus HEIC/HEIF (pillow-heif; libheif applies the file's rotation and
    mirroring, and reports orientation 1 so it is not applied twice). Handles EXIF rotation, palette/alpha/CMYK/16-bit modes (alpha is composited on white), and
    refuses truncated files, decompression bombs (over `max_pixels`, default MAX_IMAGE_PIXELS) and
    what is not a regular file (a FIFO would block). `draft_size` lets JPEG decode at a reduced
    scale that still covers that many pixels on each side (much faster for camera photos), and a
    HEIC use its embedded thumbnail when one covers them (a phone's HEIC usually has one; pillow-heif
    takes it only when it is a scaled copy: same aspect, crop, rotation and colour profile).
    """
    max_pixels = max_pixels or MAX_IMAGE_PIXELS
    if isinstance(source, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(source) or source)
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
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({e})") from None
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block should not lose the photo
        pass
    return _to_rgb(img)


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
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = a.max() if a.size else 1.0
        a8 = np.clip(a / max(hi, 1.0) * 255.0, 0, 255).astype(np.uint8)
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
    img = img.resize((nw, nh), resample)
    left, top = (nw - s) // 2, (nh - s) // 2
    return img.crop((left, top, left + s, top + s))


def to_array(img: Image.Image, cfg: ImagePreprocess) -> np.ndarray:
    """A cfg.size square RGB image -> (3, S, S) float32, normalised with cfg.mean / cfg.std."""
    x = np.asarray(img, dtype=np.float32) / 255.0  # (S, S, 3) in [0, 1]
    x = (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, S, S)


def preprocess(source: str | Path | bytes | Image.Image, cfg: ImagePreprocess) -> np.ndarray:
    """Photo -> (3, S, S) float32: the image tower's input, identical in training and on device."""
    return to_array(resize_and_crop(load_image(source, draft_size=cfg.size), cfg), cfg)


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

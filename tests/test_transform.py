from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edge_gcl.config import ImagePreprocess
from edge_gcl.transform import ImageDecodeError, load_image, preprocess

pytestmark = pytest.mark.runtime  # runs in the torch-free install too (tests/test_runtime_install.py)

CFG = ImagePreprocess(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_preprocess_shape_and_normalisation(tmp_path):
    path = _save(Image.new("RGB", (64, 48), (255, 0, 128)), tmp_path / "a.png")
    x = preprocess(path, CFG)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 16, 16], [1.0, -1.0, 128 / 255 * 2 - 1], atol=1e-6)


def test_centre_crop_keeps_the_middle(tmp_path):
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, 20:60] = 255  # white band in the middle half of a wide photo
    x = preprocess(_save(Image.fromarray(a), tmp_path / "w.png"), CFG)
    assert x[:, :, 2:30].min() > 0.9  # the crop is the white band, not the black sides


def test_modes_are_converted(tmp_path):
    cmyk = _save(Image.new("CMYK", (40, 40), (0, 255, 0, 0)), tmp_path / "c.jpg")
    rgba = _save(Image.new("RGBA", (40, 40), (0, 0, 0, 0)), tmp_path / "t.png")  # transparent -> white
    i16 = _save(Image.fromarray(np.full((40, 40), 60000, np.uint16)), tmp_path / "g.png")
    assert load_image(cmyk).mode == "RGB"
    assert np.asarray(load_image(rgba)).min() == 255
    assert preprocess(i16, CFG).shape == (3, 32, 32)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 30), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "r.jpg"
    img.save(path, exif=exif.tobytes())
    assert load_image(path).size == (30, 60)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "not a supported image"), (b"hello, not an image", "not a supported image")],
)
def test_bad_files_name_the_input(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=f"bad.jpg: {message}"):
        load_image(path)


def test_truncated_and_missing(tmp_path):
    good = _save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), tmp_path / "g.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        load_image(cut)
    with pytest.raises(ImageDecodeError, match="nope.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")


def test_decompression_bomb_is_refused(tmp_path):
    path = _save(Image.new("1", (12000, 12000)), tmp_path / "bomb.png")  # 144 MP, a few KB on disk
    with pytest.raises(ImageDecodeError, match="bomb.png"):
        load_image(path)

"""Bad input, file by file: each kind is converted correctly or refused with its reason."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from neural.common import UserError
from pipelines.images import BadImageError, load_image, load_image_and_hash, sha256_file


def _gradient(w=32, h=24):
    x = np.linspace(0, 255, w, dtype=np.float64)[None, :].repeat(h, 0)
    return np.stack([x, x[::-1, ::-1] * 0 + 40, 255 - x], -1).astype(np.uint8)


def _reason(path, **kw) -> str:
    with pytest.raises(BadImageError) as info:
        load_image(path, **kw)
    err = info.value
    assert isinstance(err, UserError)
    assert "\n" not in str(err) and str(path) in str(err)
    return err.reason


def test_rgb_png_round_trips(tmp_path):
    arr = _gradient()
    Image.fromarray(arr).save(tmp_path / "a.png")
    im = load_image(tmp_path / "a.png")
    assert im.mode == "RGB" and im.size == (32, 24)
    assert np.array_equal(np.asarray(im), arr)


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "nope.jpg") == "file not found"


def test_directory(tmp_path):
    assert "directory" in _reason(tmp_path)


def test_zero_bytes(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert _reason(tmp_path / "empty.png") == "empty file (0 bytes)"


def test_not_an_image(tmp_path):
    (tmp_path / "notes.jpg").write_text("these are not pixels\n" * 20)
    assert "not an image" in _reason(tmp_path / "notes.jpg")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(tmp_path, fmt):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, fmt)
    data = buf.getvalue()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    # The header is intact, so only a full decode finds the problem.
    with Image.open(path) as header_only:
        assert header_only.size == (200, 200)
    reason = _reason(path)
    assert "truncated" in reason or "corrupt" in reason


def test_pixel_limit_checked_before_decoding(tmp_path):
    Image.new("RGB", (400, 300), "red").save(tmp_path / "big.png")
    reason = _reason(tmp_path / "big.png", max_pixels=100_000)
    assert "400x300" in reason and "120,000" in reason and "100,000" in reason
    assert load_image(tmp_path / "big.png", max_pixels=120_000).size == (400, 300)


def test_decompression_bomb_header(tmp_path):
    # Tiny files that claim 12000x12000 / 20000x20000 pixels: refused from the header alone.
    Image.new("1", (12000, 12000)).save(tmp_path / "bomb.png", optimize=True)
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    assert "above the limit of 40,000,000" in _reason(tmp_path / "bomb.png")
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png", optimize=True)
    assert "decompression bomb" in _reason(tmp_path / "huge.png")  # PIL's own guard, same one line


def test_cmyk_jpeg_to_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)  # pure red in CMYK
    with Image.open(tmp_path / "cmyk.jpg") as raw:
        assert raw.mode == "CMYK"
    px = np.asarray(load_image(tmp_path / "cmyk.jpg")).astype(int)
    assert px.shape == (16, 16, 3)
    r, g, b = px[8, 8]
    assert r > 230 and g < 25 and b < 25


def test_16bit_png_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, 0)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode in ("I;16", "I")
    px = np.asarray(load_image(tmp_path / "deep.png"))
    assert px.dtype == np.uint8 and px.shape == (4, 4, 3)
    # round(v * 255 / 65535); PIL's convert("L") would clip everything above 255 to 255.
    assert px[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()


def test_alpha_png_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red channel
    rgba[:, :2, 3] = 255  # left half opaque
    rgba[:, 2:, 3] = 0  # right half transparent
    rgba[0, 0, 3] = 128  # one pixel half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    px = np.asarray(load_image(tmp_path / "alpha.png")).astype(int)
    assert px[1, 0].tolist() == [200, 0, 0]
    assert px[1, 3].tolist() == [255, 255, 255]
    assert px[0, 0, 0] == pytest.approx(228, abs=1) and px[0, 0, 1] == pytest.approx(127, abs=1)


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.info["transparency"] = 0
    im.save(tmp_path / "pal.png", transparency=0)
    px = np.asarray(load_image(tmp_path / "pal.png")).astype(int)
    assert px[0, 0].tolist() == [255, 255, 255]  # transparent index -> white, not black
    assert px[2, 2].tolist() == [10, 200, 30]


def test_grayscale_to_rgb(tmp_path):
    Image.fromarray(np.full((5, 6), 77, np.uint8), "L").save(tmp_path / "gray.png")
    im = load_image(tmp_path / "gray.png")
    assert im.mode == "RGB" and (np.asarray(im) == 77).all()


def test_animated_gif_is_skipped_with_reason(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    reason = _reason(tmp_path / "anim.gif")
    assert "animated" in reason and "3 frames" in reason


def test_still_gif_is_fine(tmp_path):
    im = Image.new("P", (8, 8), 3)
    im.putpalette([0, 0, 0] * 3 + [90, 60, 30] + [0] * 756)
    im.save(tmp_path / "still.gif")
    assert np.asarray(load_image(tmp_path / "still.gif"))[0, 0].tolist() == [90, 60, 30]


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)


def test_hash_is_of_the_file(tmp_path):
    Image.new("RGB", (8, 8), "green").save(tmp_path / "g.png")
    im, digest = load_image_and_hash(tmp_path / "g.png")
    assert digest == sha256_file(tmp_path / "g.png") and im.size == (8, 8)

"""Bad-input-safe image loading: every file becomes an 8-bit RGB image or a
:class:`BadImageError` with a one-line reason.

Conversions (all exact, no colour management):

* grayscale (``L``, ``1``)            -> RGB by channel replication;
* 16-bit (``I;16*``, ``I``)            -> 8-bit by ``round(v * 255 / 65535)``
  (PIL's own ``convert("L")`` clips at 255 instead of scaling);
* alpha / palette with transparency     -> RGB composited on white;
* CMYK (and YCbCr)                      -> RGB with PIL's conversion;
* EXIF orientation is applied, so boxes refer to the image as displayed.

Refused with a reason: missing file, zero bytes, not an image, truncated or
corrupt data (the whole image is decoded to find out), more pixels than
``max_pixels`` (checked from the header, before decoding: decompression bombs),
animated images (GIF/WebP/multi-page TIFF with more than one frame). An animated
image is a short video, not a photo; picking a frame would be a silent
substitute, so it is skipped and the reason says how to use one frame.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from neural.common import UserError, sha256_file  # noqa: F401  (re-exported)

DEFAULT_MAX_PIXELS = 40_000_000

_WHITE = (255, 255, 255)


class BadImageError(UserError):
    """An image file that cannot be used; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes; missing, unreadable or empty files raise :class:`BadImageError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except IsADirectoryError:
        raise BadImageError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise BadImageError(path, "permission denied") from None
    except OSError as exc:
        raise BadImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise BadImageError(path, "empty file (0 bytes)")
    return data


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``data`` (the bytes of an image file) to an 8-bit RGB image."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below replaces PIL's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image (unrecognised file format)") from None
    except Image.DecompressionBombError as exc:
        raise BadImageError(path, f"image above the pixel limit, refused as a decompression bomb ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt header can raise anything inside PIL
        raise BadImageError(path, f"corrupt image header ({type(exc).__name__}: {exc})") from None

    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise BadImageError(path, f"invalid image size {width}x{height}")
        if width * height > max_pixels:
            raise BadImageError(
                path,
                f"image is {width}x{height} = {width * height:,} pixels, above the limit of "
                f"{max_pixels:,}, refused unread as a possible decompression bomb (raise max_pixels, "
                "or emologic query --max-pixels, to accept it)",
            )
        n_frames = getattr(im, "n_frames", 1)
        if getattr(im, "is_animated", False) and n_frames > 1:
            raise BadImageError(
                path,
                f"animated image ({im.format}, {n_frames} frames); emologic reads still images "
                "- save the frame you want as PNG",
            )
        try:
            im.load()  # force the full decode: truncated data fails here, not later
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError/SyntaxError/ValueError/...
            msg = str(exc) or type(exc).__name__
            kind = "truncated" if "truncated" in msg.lower() else "corrupt"
            raise BadImageError(path, f"{kind} image data ({im.format}: {msg})") from None
        try:
            oriented = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - a broken EXIF block does not make the pixels wrong
            oriented = im
        rgb = to_rgb(oriented, path)
        if rgb is im:  # leaving the ``with`` closes ``im``; hand out an independent image
            rgb = im.copy()
    return rgb


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load ``path`` as an 8-bit RGB ``PIL.Image`` or raise :class:`BadImageError`."""
    return decode_image(read_image_bytes(path), path, max_pixels)


def load_image_and_hash(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str]:
    """:func:`load_image` plus the sha256 of the file, from a single read."""
    data = read_image_bytes(path)
    return decode_image(data, path, max_pixels), sha256_bytes(data)


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _sixteen_bit_to_rgb(im: Image.Image, path) -> Image.Image:
    arr = np.asarray(im).astype(np.int64)  # I;16 / I;16B / I (int32) alike
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 65535:
        raise BadImageError(path, f"integer pixel values {lo}..{hi} outside the 16-bit range")
    gray = np.rint(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def to_rgb(im: Image.Image, path: str | os.PathLike = "<image>") -> Image.Image:
    """Convert a decoded image of any supported mode to 8-bit RGB (see module doc)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("L", "1", "CMYK", "YCbCr"):
        return im.convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_rgb(im, path)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_white(im.convert("RGBA"))
    if mode == "P":
        if "transparency" in im.info:
            return _composite_on_white(im.convert("RGBA"))
        return im.convert("RGB")
    if mode == "F":
        raise BadImageError(path, "floating-point image (mode F) has no defined 8-bit range")
    try:
        return im.convert("RGB")
    except ValueError:
        raise BadImageError(path, f"unsupported colour mode {mode!r}") from None

"""Real photos from scikit-image for the data-set tests, and variants of them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def photo(name: str) -> Image.Image:
    """A photo shipped with scikit-image, or a variant of one: ``<photo>[_flip|_gray|_half|_crop|_large]``.

    astronaut: one large smiling face; camera: a man with a camera (grayscale);
    chelsea: a cat; coffee, rocket, coins, moon, clock, motorcycle: no face."""
    from skimage import data

    base, _, variant = name.partition("_")
    arrays = {
        "astronaut": data.astronaut, "camera": data.camera, "chelsea": data.chelsea, "coffee": data.coffee,
        "rocket": data.rocket, "coins": data.coins, "moon": data.moon, "clock": data.clock,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
    }
    image = Image.fromarray(np.ascontiguousarray(arrays[base]()))
    w, h = image.size
    if variant == "flip":
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if variant == "gray":
        return image.convert("L")
    if variant == "half":
        return image.resize((w // 2, h // 2), Image.Resampling.LANCZOS)
    if variant == "crop":  # the upper middle: for the astronaut, her head and shoulders
        return image.crop((w // 10, 0, w * 7 // 10, h * 6 // 10))
    if variant == "large":  # a camera-sized photo: searched downscaled by MTCNN
        return image.resize((w * 4, h * 4), Image.Resampling.BICUBIC)
    if variant:
        raise ValueError(f"unknown variant {variant!r} of {base}")
    return image


def write_photo(path: str | Path, name: str) -> Path:
    """Write :func:`photo` ``name`` to ``path`` (JPEG or PNG by suffix); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = photo(name)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=92)
    else:
        image.save(path)
    return path

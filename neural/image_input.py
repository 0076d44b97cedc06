"""What the image networks read, as numpy arrays: torch-free, so that the served
query (:mod:`experiments.query.served`) prepares images exactly as training did
without importing torch. The torch side wraps these (``neural.scene.preprocess``;
the cache scales face crops the same way, ``cache/image_kind.py``).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def scene_pixels(pil_image: Image.Image, size: int = 224) -> np.ndarray:
    """A PIL image -> float32 [3, size, size], resized (no crop) and ImageNet-normalised.

    Alpha is composited on white; 16-bit and float grayscale are rescaled to
    8 bits before conversion (PIL would otherwise clip them). The arithmetic is
    torchvision's ``to_tensor`` then ``normalize``, in float32 (same numbers).
    """
    img = pil_image
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size else 0.0
        scale = 255.0 / top if top > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    return np.ascontiguousarray((x - mean) / std)


def face_pixels(crops: np.ndarray) -> np.ndarray:
    """uint8 face crops [n, S, S] -> float32 [n, 1, S, S] in [-1, 1] (the face net's scaling)."""
    return (np.asarray(crops, np.float32) / np.float32(127.5) - np.float32(1.0))[:, None]

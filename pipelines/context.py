"""Observable context of an image, used to condition source selection.

A context is a short key: ``n0`` for no face, else ``n{k}_{bucket}`` with ``k``
the number of detected faces (1..3) and ``bucket`` the size bucket of the
largest face (``small`` or ``large``). Face size is the relative side length
``sqrt(box area / image area)``; faces at or above ``threshold`` are ``large``.

The synthetic generator draws its labels with the same function, and the logic
programs declare one annotated disjunction per key, so the three always agree.
"""
from __future__ import annotations

import math

import numpy as np

from neural.common import MAX_FACES

SIZE_BUCKETS: tuple[str, ...] = ("small", "large")
DEFAULT_LARGE_FACE = 0.3

CONTEXTS: tuple[str, ...] = ("n0",) + tuple(
    f"n{k}_{b}" for k in range(1, MAX_FACES + 1) for b in SIZE_BUCKETS
)


def relative_face_size(box, width: float, height: float) -> float:
    """sqrt(box area / image area) for a box ``(x1, y1, x2, y2)`` in pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return math.sqrt(area / (float(width) * float(height)))


def context_key(n_faces: int, largest_size: float | None, threshold: float = DEFAULT_LARGE_FACE) -> str:
    """The context key for ``n_faces`` faces whose largest has relative size ``largest_size``."""
    if not 0 <= n_faces <= MAX_FACES:
        raise ValueError(f"n_faces must be in 0..{MAX_FACES}, got {n_faces}")
    if n_faces == 0:
        return "n0"
    bucket = "large" if largest_size is not None and largest_size >= threshold else "small"
    return f"n{n_faces}_{bucket}"


def context_codes(boxes: np.ndarray, mask: np.ndarray, image_size: np.ndarray,
                  threshold: float = DEFAULT_LARGE_FACE) -> np.ndarray:
    """Context of each image as an index into :data:`CONTEXTS`: [B] int64 (numpy, no torch).

    boxes: [B, 3, 4] (x1, y1, x2, y2) pixels, NaN where absent
    mask:  [B, 3] bool, slot exists
    image_size: [B, 2] (width, height)
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    size = np.asarray(image_size, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    wh = np.maximum(boxes[..., 2:] - boxes[..., :2], 0)  # [B, 3, 2]; NaN where absent
    area = wh[..., 0] * wh[..., 1] / (size[:, 0] * size[:, 1])[:, None]
    largest = np.where(mask, np.sqrt(area), -1.0).max(axis=1)  # [B]; -1 without faces
    n = mask.sum(axis=1)
    # CONTEXTS = n0, n1_small, n1_large, n2_small, ...
    return np.where(n == 0, 0, 1 + 2 * (n - 1) + (largest >= threshold)).astype(np.int64)


def batch_context_codes(
    face_boxes,
    face_mask,
    image_size,
    threshold: float = DEFAULT_LARGE_FACE,
):
    """:func:`context_codes` of a batch's tensors, as a [B] long tensor on the mask's device."""
    import torch

    # numpy: a dozen small operations, a few times cheaper than torch's
    codes = context_codes(face_boxes.detach().cpu().numpy(), face_mask.cpu().numpy(), image_size.cpu().numpy(),
                          threshold)
    return torch.from_numpy(codes).to(face_mask.device)


def batch_context_keys(
    face_boxes,
    face_mask,
    image_size,
    threshold: float = DEFAULT_LARGE_FACE,
) -> list[str]:
    """Context keys of a batch (vectorised :func:`context_key`); arguments as
    :func:`batch_context_codes`."""
    return [CONTEXTS[i] for i in batch_context_codes(face_boxes, face_mask, image_size, threshold).tolist()]

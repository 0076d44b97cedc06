"""In-memory labelled face crops: what the face emotion recogniser trains on.

A split is uint8 [N, 64, 64] grayscale crops with EMOTIONS-index labels -- 4 KiB
a crop, so even FER2013's 35k crops take 140 MiB and epochs never touch the disk.
Reading them from a folder or CSV (which needs the image loader) is
:mod:`pipelines.face_crops`; this module holds only the types and the tensor
conversions the trainer and the query share.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from neural.common import N_EMOTIONS, UserError
from neural.face import FACE_SIZE


class FaceDataError(UserError, ValueError):
    """A face-crop data set that cannot be read (missing, empty, bad header, bad label)."""


@dataclass
class FaceCrops:
    """One split: ``images`` uint8 [N, 64, 64] grayscale, ``labels`` int64 [N] (EMOTIONS index)."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self, n_classes: int = N_EMOTIONS) -> np.ndarray:
        return np.bincount(self.labels.numpy(), minlength=n_classes)


@dataclass
class FaceCropData:
    source: str
    splits: dict[str, FaceCrops]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def split(self, name: str) -> FaceCrops:
        if name not in self.splits or not len(self.splits[name]):
            have = ", ".join(f"{k} ({len(v)})" for k, v in sorted(self.splits.items())) or "none"
            raise FaceDataError(f"{self.source}: no face crops in split {name!r}; splits found: {have}")
        return self.splits[name]

    def describe(self) -> str:
        parts = [f"{k}: {len(v)}" for k, v in sorted(self.splits.items())]
        text = f"{self.source}: " + ", ".join(parts)
        if self.skipped:
            text += f"; skipped {len(self.skipped)} unreadable file(s), e.g. {self.skipped[0][0]}: {self.skipped[0][1]}"
        return text


def crop_to_uint8(image: Image.Image, size: int = FACE_SIZE) -> np.ndarray:
    """Any PIL image -> uint8 [size, size] grayscale (bilinear resize)."""
    gray = image.convert("L")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def to_model_input(crops: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W] -> float [N, 1, H, W] in [-1, 1] (the face net's scaling)."""
    return crops.to(torch.float32).div(127.5).sub(1.0).unsqueeze(1)

"""The image pipeline's configuration: what a cache holds and how faces are found.

Kept apart from :mod:`pipelines.pipeline` (which runs torch) so that code that only
reads a configuration -- the served query (:mod:`experiments.query.served`) -- does
not import torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from neural.common import MAX_FACES, UserError, strict_config
from pipelines.feature_registry import get_feature
from pipelines.faces import DEFAULT_MTCNN_MAX_SIDE, list_detectors
from pipelines.images import DEFAULT_MAX_PIXELS

VA_BACKBONES = ("scene", "clip")

#: Keys that change how fast a cache is built, never what is in it.
NON_SEMANTIC_KEYS = frozenset({"batch_size"})


class PipelineConfigError(UserError):
    pass


@dataclass(frozen=True)
class PipelineConfig:
    face_source: str = "annotations"  # "annotations" | "mtcnn"
    max_faces: int = MAX_FACES
    min_face_size: int = 20  # mtcnn: smallest face side in pixels
    face_prob_threshold: float = 0.9  # mtcnn: keep faces with at least this probability
    mtcnn_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # mtcnn: P/R/O-net stage thresholds
    mtcnn_max_side: int = DEFAULT_MTCNN_MAX_SIDE  # mtcnn: search larger photos downscaled to this long side
    crop_margin: float = 0.2  # square side = max(box w, h) * (1 + margin)
    crop_size: int = 64
    scene_size: int = 128
    scene_weights: str | None = None  # file/URL of scene backbone weights; None = seeded random init
    scene_seed: int = 0
    store_scene_layer3: bool = False
    va_backbone: str = "scene"  # "scene" (VA features are the scene features) | "clip"
    clip_model: str = "openai/clip-vit-base-patch32"  # va_backbone="clip": hub name or local directory
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 32
    #: registered features (pipelines.feature_registry) computed besides the built-in ones, e.g. a plug-in's
    features: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "mtcnn_thresholds", tuple(float(t) for t in self.mtcnn_thresholds))
        features = (self.features,) if isinstance(self.features, str) else self.features
        object.__setattr__(self, "features", tuple(sorted(set(features))))  # a set: order cannot change a key
        for name in self.features:
            get_feature(name)  # an unknown (or not loaded) feature is one line naming the registered ones
        problems = []
        if self.face_source not in list_detectors():
            problems.append(f"face_source {self.face_source!r} is not one of {', '.join(list_detectors())}")
        if self.va_backbone not in VA_BACKBONES:
            problems.append(f"va_backbone {self.va_backbone!r} is not one of {', '.join(VA_BACKBONES)}")
        if not 0 <= self.max_faces <= MAX_FACES:
            problems.append(f"max_faces must be in 0..{MAX_FACES}, got {self.max_faces}")
        if len(self.mtcnn_thresholds) != 3:
            problems.append(f"mtcnn_thresholds needs 3 values, got {len(self.mtcnn_thresholds)}")
        for key in ("crop_size", "scene_size", "max_pixels", "batch_size", "min_face_size", "mtcnn_max_side"):
            if getattr(self, key) < 1:
                problems.append(f"{key} must be positive, got {getattr(self, key)}")
        if not 0.0 <= self.face_prob_threshold <= 1.0:
            problems.append(f"face_prob_threshold must be in [0, 1], got {self.face_prob_threshold}")
        if self.crop_margin < 0:
            problems.append(f"crop_margin must be >= 0, got {self.crop_margin}")
        if problems:
            raise PipelineConfigError("invalid pipeline config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mtcnn_thresholds"] = list(self.mtcnn_thresholds)
        d["features"] = list(self.features)
        if not self.features:
            d.pop("features")  # manifests and checkpoints without registered features read as before they existed
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PipelineConfig":
        return strict_config(cls, d, PipelineConfigError, "pipeline config key(s)", "known keys")

    def semantic_dict(self) -> dict[str, Any]:
        """The keys that determine the cached tensors (compared when loading a cache).

        Drops ``batch_size`` and knobs of components that are not in use (detector
        knobs with ``face_source="annotations"``, ``clip_model`` with ``va_backbone="scene"``); ``features``
        only when there are some (:meth:`to_dict`), so caches built before them keep their keys.
        """
        d = {k: v for k, v in self.to_dict().items() if k not in NON_SEMANTIC_KEYS}
        if self.face_source == "annotations":
            for k in ("min_face_size", "face_prob_threshold", "mtcnn_thresholds", "mtcnn_max_side"):
                d.pop(k)
        if self.va_backbone != "clip":
            d.pop("clip_model")
        return d

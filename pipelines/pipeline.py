"""Image -> tensors for a list of samples: load safely, find faces, crop, extract features.

    cfg = PipelineConfig(face_source="mtcnn", scene_size=224)
    pipe = ImagePipeline(cfg)
    done, skipped = pipe.process(samples)      # list[ProcessedSample], list[Skip]

A sample is anything with ``sample_id``, ``image_path``, ``label`` and
``annotations`` (``pipelines.datasets.base.Sample``). Bad input is never an
exception here: it becomes a :class:`Skip` with a one-line reason. Configuration
errors (unknown face source, a data set without boxes for ``annotations``) raise
:class:`~neural.common.UserError`.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from neural.common import N_EMOTIONS
from neural.provenance import DOMAIN_PHOTOS, Provenance
# the config is torch-free (pipelines/config.py) and re-exported here, where its users have always found it
from pipelines.config import NON_SEMANTIC_KEYS, VA_BACKBONES, PipelineConfig, PipelineConfigError  # noqa: F401
from pipelines.feature_registry import get_feature
from pipelines.faces import FaceError, Faces, crop_faces, detector_from_config
from pipelines.images import BadImageError, load_image_and_hash

def feature_provenance(cfg: PipelineConfig, identity: dict[str, str] | None = None) -> dict[str, dict[str, Provenance]]:
    """Where the knowledge of each cached whole-image feature comes from:
    ``{"scene": {"scene backbone": ...}, "va": {"va backbone": ...}, "light": {"light feature": ...}}``
    (registered features by their spec's provenance; face crops are pixels and have none).
    ``identity``: the cache manifest's record of the weights that made them."""
    from neural.scene import backbone_provenance

    identity = identity or {}
    scene = backbone_provenance(cfg.scene_weights, cfg.scene_seed, identity.get("scene_backbone"))
    if cfg.va_backbone == "clip":
        va = Provenance.pretrained_weights("clip", f"CLIP image encoder ({cfg.clip_model})",
                                           f"{DOMAIN_PHOTOS} (CLIP image-text pairs)", None)
    else:
        va = scene
    out = {"scene": {"scene backbone": scene}, "va": {"va backbone": va}}
    for name in cfg.features:
        out[name] = {f"{name} feature": get_feature(name).provenance_for(cfg)}
    return out


def config_differences(built: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``"key: cache=X, requested=Y"`` for every key whose value differs."""
    out = []
    for key in sorted(set(built) | set(wanted)):
        a, b = built.get(key, "<absent>"), wanted.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: cache={a!r}, requested={b!r}")
    return out


@dataclass
class ProcessedSample:
    sample_id: str
    sha256: str  # of the source image file
    image_path: str
    image_size: tuple[int, int]  # (width, height)
    label: int | None
    annotations: dict
    faces: np.ndarray  # [n, S, S] uint8 grayscale crops, largest face first
    boxes: np.ndarray  # [n, 4] float32 (x1, y1, x2, y2) pixels
    probs: np.ndarray  # [n] float32
    #: "scene": [512]; "scene_layer3": [256, h, w] if configured; "va": [D] only when
    #: va_backbone != "scene" (otherwise the VA features *are* the scene features);
    #: each of ``cfg.features``: its registered per-sample shape.
    features: dict = field(default_factory=dict)  # name -> tensor (or numpy array: the served query)
    faces_found: int | None = None  # faces the detector found; the largest max_faces are kept (None: n_faces)

    @property
    def n_faces(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class Skip:
    sample_id: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.sample_id, "reason": self.reason}


def _check_label(label) -> str | None:
    if label is None:
        return None
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        return f"label {label!r} is not an emotion index"
    if not 0 <= int(label) < N_EMOTIONS:
        return f"label {label} outside the vocabulary (0..{N_EMOTIONS - 1})"
    return None


class ImagePipeline:
    """Turns samples into :class:`ProcessedSample` tensors (see module doc)."""

    def __init__(self, cfg: PipelineConfig | None = None, workers: int | None = None, device: str = "cpu",
                 scene=None, detector_runtime: str = "torch"):
        """``scene``: another extractor of the scene features (``images -> {"scene": [B, 512], ...}``,
        e.g. the served query's ONNX backbone, numpy arrays); ``detector_runtime``: MTCNN's, "torch"
        (facenet-pytorch) or "onnx" (same boxes, no torch: ``pipelines/mtcnn_onnx.py``). Neither
        changes what is computed, so neither is part of the config."""
        self.cfg = cfg or PipelineConfig()
        self.workers = workers or min(4, os.cpu_count() or 1)
        # where MTCNN and the backbones run; not part of the config: the cache holds CPU tensors either way
        self.device = device
        self.detector = detector_from_config(self.cfg, device, runtime=detector_runtime)
        if scene is None:
            from pipelines.features import SceneFeatures

            scene = SceneFeatures(self.cfg.scene_size, self.cfg.scene_weights, self.cfg.scene_seed,
                                  self.cfg.store_scene_layer3, device)
        self.scene = scene
        self.va = None
        if self.cfg.va_backbone == "clip":
            from pipelines.features import CLIPImageEmbeddings

            self.va = CLIPImageEmbeddings(self.cfg.clip_model, device)
        self.extra = {name: get_feature(name).build(self.cfg, device) for name in self.cfg.features}

    @property
    def identity(self) -> dict[str, str]:
        """Which weights produced the features (recorded in the cache manifest)."""
        return {
            "scene_backbone": self.scene.weights_id,
            "va_backbone": self.va.weights_id if self.va is not None else "scene",
            "face_detector": self.cfg.face_source,
            # only present when configured, so manifests of caches without registered features keep their identity
            **{f"feature:{name}": str(ex.weights_id) for name, ex in self.extra.items()},
        }

    def _load(self, sample):
        try:
            image, digest = load_image_and_hash(sample.image_path, self.cfg.max_pixels)
            return image, digest, None
        except BadImageError as exc:
            return None, None, exc.reason

    def process(self, samples: Sequence) -> tuple[list[ProcessedSample], list[Skip]]:
        """Process one batch of samples (all features computed in one backbone call)."""
        samples = list(samples)
        if not samples:
            return [], []
        with ThreadPoolExecutor(self.workers) as pool:  # PIL decodes without the GIL
            loaded = list(pool.map(self._load, samples))

        skipped: list[Skip] = []
        kept = []  # (sample, image, sha256)
        for sample, (image, digest, reason) in zip(samples, loaded):
            label_problem = _check_label(sample.label)
            if reason is None and label_problem:
                reason = label_problem
            if reason is not None:
                skipped.append(Skip(str(sample.sample_id), reason))
            else:
                kept.append((sample, image, digest))
        if not kept:
            return [], skipped

        detections = self.detector.detect([im for _, im, _ in kept], [s for s, _, _ in kept])
        ready = []
        for (sample, image, digest), faces in zip(kept, detections):
            if isinstance(faces, FaceError):
                skipped.append(Skip(str(sample.sample_id), str(faces)))
            else:
                ready.append((sample, image, digest, faces))
        if not ready:
            return [], skipped

        images = [im for _, im, _, _ in ready]
        feats = self.scene(images)  # {"scene": [B, 512], ...}
        if self.va is not None:
            feats["va"] = self.va(images)  # [B, D]
        for name, extractor in self.extra.items():
            feats[name] = get_feature(name).check_output(extractor(images), len(images))  # [B, *shape]

        out = []
        for i, (sample, image, digest, faces) in enumerate(ready):
            faces: Faces
            out.append(
                ProcessedSample(
                    sample_id=str(sample.sample_id),
                    sha256=digest,
                    image_path=str(sample.image_path),
                    image_size=image.size,
                    label=None if sample.label is None else int(sample.label),
                    annotations=dict(getattr(sample, "annotations", None) or {}),
                    faces=crop_faces(image, faces.boxes, self.cfg.crop_margin, self.cfg.crop_size),
                    boxes=faces.boxes,
                    probs=faces.probs,
                    # a copy of the row, not a view that keeps the whole batch alive (tensor or numpy)
                    features={k: v[i].clone() if hasattr(v, "clone") else v[i].copy() for k, v in feats.items()},
                    faces_found=faces.n_found,
                )
            )
        return out, skipped

    def iter_process(self, samples: Iterable, progress: bool = False, desc: str = "images") -> Iterator[tuple[list[ProcessedSample], list[Skip]]]:
        """:meth:`process` over ``samples`` in chunks of ``cfg.batch_size``."""
        return process_in_chunks(self.process, samples, self.cfg.batch_size, progress, desc, "img")


def process_in_chunks(process, samples: Iterable, chunk_size: int, progress: bool, desc: str, unit: str) -> Iterator:
    """``process(chunk)`` over ``samples`` in chunks, with an optional tqdm bar (shared by the pipelines)."""
    samples = list(samples)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(samples), desc=desc, unit=unit, leave=False)
    try:
        for start in range(0, len(samples), chunk_size):
            chunk = samples[start:start + chunk_size]
            yield process(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()

"""The ``image`` cache kind: how :class:`pipelines.pipeline.ImagePipeline` output is stored.

Shard layout (``k`` samples, ``F`` faces in the shard) -- see ``cache.store``::

    scene [k, 512] f32, va [k, D] f32 (va_backbone != "scene"), scene_layer3 [k, 256, h, w] f32
    faces [F, S, S] u8, face_offsets [k + 1] i64, boxes [F, 4] f32, probs [F] f32
    image_size [k, 2] i64, labels [k] i64 (-1 unknown)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cache.kinds import CacheKind, ProblemFn, register_cache_kind
from pipelines.pipeline import ImagePipeline, PipelineConfig, ProcessedSample


def shard_tensors(items: Sequence[ProcessedSample], cfg: PipelineConfig) -> dict[str, torch.Tensor]:
    crop_size = cfg.crop_size
    counts = [p.n_faces for p in items]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    faces = [p.faces for p in items if p.n_faces]
    tensors = {
        name: torch.stack([p.features[name] for p in items]).float()
        for name in items[0].features  # "scene" [k, 512], "va" [k, D], "scene_layer3" [k, 256, h, w]
    }
    tensors.update(
        faces=torch.from_numpy(np.concatenate(faces) if faces else np.zeros((0, crop_size, crop_size), np.uint8)),
        face_offsets=torch.from_numpy(offsets),
        boxes=torch.from_numpy(np.concatenate([p.boxes for p in items]).astype(np.float32).reshape(-1, 4)),
        probs=torch.from_numpy(np.concatenate([p.probs for p in items]).astype(np.float32).reshape(-1)),
        image_size=torch.tensor([list(p.image_size) for p in items], dtype=torch.int64).reshape(-1, 2),
        labels=torch.tensor([-1 if p.label is None else p.label for p in items], dtype=torch.int64),
    )
    return tensors


def manifest_entry(p: ProcessedSample) -> dict:
    return {"image_path": p.image_path, "image_size": list(p.image_size), "n_faces": p.n_faces}


def expected_shapes(cfg: PipelineConfig, k: int, tensors: dict) -> dict[str, tuple[tuple, torch.dtype]]:
    """name -> (shape with None for a free dim, dtype) for a shard of k samples."""
    f = tensors["faces"].shape[0] if "faces" in tensors else 0
    S = cfg.crop_size
    out = {
        "scene": ((k, 512), torch.float32),
        "faces": ((f, S, S), torch.uint8),
        "face_offsets": ((k + 1,), torch.int64),
        "boxes": ((f, 4), torch.float32),
        "probs": ((f,), torch.float32),
        "image_size": ((k, 2), torch.int64),
        "labels": ((k,), torch.int64),
    }
    if cfg.va_backbone != "scene":
        out["va"] = ((k, None), torch.float32)
    if cfg.store_scene_layer3:
        out["scene_layer3"] = ((k, 256, None, None), torch.float32)
    return out


def check_shard(tensors: dict, k: int, name: str, problem: ProblemFn) -> None:
    off = tensors.get("face_offsets")
    n_faces_total = tensors["faces"].shape[0] if "faces" in tensors else 0
    if off is not None and off.shape == (k + 1,) and not (
        off[0] == 0 and bool((off[1:] >= off[:-1]).all()) and off[-1] == n_faces_total
    ):
        problem("shape", name, "face offsets are not a valid partition of the faces")


def check_entry(e: dict, sid: str, row: int, tensors: dict, problem: ProblemFn) -> None:
    off = tensors.get("face_offsets")
    face_rows = slice(0, 0)
    if off is not None and row + 1 < len(off):
        start, end = int(off[row]), int(off[row + 1])
        face_rows = slice(start, end)
        if end - start != e.get("n_faces"):
            problem("shape", sid, f"{end - start} faces stored, the manifest says {e.get('n_faces')}")
    labels = tensors.get("labels")
    if labels is not None and row < len(labels):
        want = -1 if e.get("label") is None else e.get("label")
        if int(labels[row]) != want:
            problem("shape", sid, f"stored label {int(labels[row])}, the manifest says {want}")
    for key in ("scene", "va", "scene_layer3"):
        t = tensors.get(key)
        if t is not None and row < len(t) and t.is_floating_point() and not bool(torch.isfinite(t[row]).all()):
            problem("nonfinite", sid, f"{key} contains NaN or inf")
    for key in ("boxes", "probs"):
        t = tensors.get(key)
        if t is not None and t.is_floating_point() and not bool(torch.isfinite(t[face_rows]).all()):
            problem("nonfinite", sid, f"{key} of its faces contain NaN or inf")


IMAGE_KIND = register_cache_kind(CacheKind(
    name="image",
    config_cls=PipelineConfig,
    make_pipeline=ImagePipeline,
    source_path=lambda sample: Path(sample.image_path),
    source_key="image_path",
    shard_tensors=shard_tensors,
    manifest_entry=manifest_entry,
    expected_shapes=expected_shapes,
    check_shard=check_shard,
    check_entry=check_entry,
))

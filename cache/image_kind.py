"""The ``image`` cache kind: how :class:`pipelines.pipeline.ImagePipeline` output is
stored, checked, and served back as :class:`cache.batch.ImageBatch`.

Shard layout (``k`` samples, ``F`` faces in the shard) -- see ``cache.store``::

    scene [k, 512] f32, va [k, D] f32 (va_backbone != "scene"), scene_layer3 [k, 256, h, w] f32
    <name> [k, *shape] f32 for each registered feature in cfg.features (pipelines.feature_registry)
    faces [F, S, S] u8, face_offsets [k + 1] i64, boxes [F, 4] f32, probs [F] f32
    image_size [k, 2] i64, labels [k] i64 (-1 unknown)

Reading: every shard is loaded into memory once (checked against the sha256 in
the manifest). Faces stay ragged; a batch pads them to the three slots with NaN
rows where a face does not exist, and ``face_mask`` says which exist.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cache.batch import ImageBatch
from cache.kinds import CacheKind, ProblemFn, register_cache_kind
from cache.store import CacheError, checked_shard_bytes, entries_by_shard, read_shard_bytes
from neural.common import MAX_FACES
from pipelines.feature_registry import get_feature
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
    for name in cfg.features:
        out[name] = ((k, *get_feature(name).shape), torch.float32)
    return out


#: tensors laid out per face, not per sample
_PER_SHARD_KEYS = ("faces", "face_offsets", "boxes", "probs")


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
    for key, t in tensors.items():  # the whole-image features: built-in and registered
        if key in _PER_SHARD_KEYS or key in ("image_size", "labels"):
            continue
        if row < len(t) and t.is_floating_point() and not bool(torch.isfinite(t[row]).all()):
            problem("nonfinite", sid, f"{key} contains NaN or inf")
    for key in ("boxes", "probs"):
        t = tensors.get(key)
        if t is not None and t.is_floating_point() and not bool(torch.isfinite(t[face_rows]).all()):
            problem("nonfinite", sid, f"{key} of its faces contain NaN or inf")


class ImageRows:
    """Per-sample tensors in one flat layout; ``batch(positions)`` pads the faces."""

    def __init__(self, ids, features, faces, counts, boxes, probs, image_size, labels, annotations, va_is_scene):
        self.ids: list[str] = ids
        self.features: dict[str, torch.Tensor] = features  # name -> [N, ...]
        self.faces = faces  # [F, S, S] uint8
        self.counts = counts  # [N] long
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])  # [N + 1]
        self.boxes = boxes  # [F, 4] float32
        self.probs = probs  # [F] float32
        self.annotations: list[dict] = annotations
        self.va_is_scene = va_is_scene
        #: per-sample tensors a caller may ask the split for by name
        self.columns = {"labels": labels, "image_size": image_size, "n_faces": counts}  # [N], [N, 2], [N]

    def batch(self, pos: torch.Tensor, sample_ids: list[str]) -> ImageBatch:
        B, S = len(pos), self.faces.shape[-1]
        slots = torch.arange(MAX_FACES)
        counts = self.counts[pos]  # [B]
        mask = slots[None, :] < counts[:, None]  # [B, 3]
        flat = (self.offsets[pos][:, None] + slots[None, :])[mask]  # [n present] index into faces

        tensors = {name: t[pos] for name, t in self.features.items()}
        if self.va_is_scene:
            tensors["va"] = tensors["scene"]  # the VA features ARE the scene features
        crops = torch.full((B, MAX_FACES, 1, S, S), float("nan"))
        crops[mask] = self.faces[flat].float().div(127.5).sub(1.0).unsqueeze(1)  # [-1, 1]
        for k in range(MAX_FACES):
            tensors[f"face{k + 1}"] = crops[:, k]  # [B, 1, S, S], NaN where absent
        boxes = torch.full((B, MAX_FACES, 4), float("nan"))
        boxes[mask] = self.boxes[flat]
        probs = torch.full((B, MAX_FACES), float("nan"))
        probs[mask] = self.probs[flat]

        anns = [self.annotations[i] for i in pos.tolist()]
        keys = list(dict.fromkeys(k for a in anns for k in a))
        return ImageBatch(
            sample_ids=list(sample_ids),
            tensors=tensors,
            face_mask=mask,
            face_boxes=boxes,
            face_probs=probs,
            image_size=self.columns["image_size"][pos].clone(),
            labels=self.columns["labels"][pos].clone(),
            meta={k: [a.get(k) for a in anns] for k in keys},
        )


_RAGGED_KEYS = ("faces", "counts", "boxes", "probs", "image_size", "labels")


def _gather_rows(tensors: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """The given rows of one shard, faces included (ragged -> ragged)."""
    r = torch.tensor(rows, dtype=torch.long)
    off = tensors["face_offsets"]
    starts, ends = off[r], off[r + 1]
    face_idx = torch.cat([torch.arange(a, b) for a, b in zip(starts.tolist(), ends.tolist())] or [torch.zeros(0, dtype=torch.long)])
    out = {k: v[r] for k, v in tensors.items() if k not in _PER_SHARD_KEYS}
    out.update(
        faces=tensors["faces"][face_idx],
        counts=ends - starts,
        boxes=tensors["boxes"][face_idx],
        probs=tensors["probs"][face_idx],
    )
    return out


def read_rows(directories: list[Path], manifests: list[dict], cfg: PipelineConfig, check_hashes: bool) -> ImageRows:
    """Every cached sample of the given split directories, in memory."""
    ids, annotations, parts = [], [], []
    for directory, manifest in zip(directories, manifests):
        shards = {
            info["name"]: read_shard_bytes(checked_shard_bytes(directory, info, check_hashes))
            for info in manifest["shards"]
        }
        by_shard = entries_by_shard(directory, manifest, {name: sh[1] for name, sh in shards.items()})
        for name, entries in by_shard.items():
            parts.append(_gather_rows(shards[name][0], [e["row"] for e in entries]))
            ids += [e["id"] for e in entries]
            annotations += [e["annotations"] for e in entries]
    if not parts:
        raise CacheError(f"{', '.join(map(str, directories))}: the cache holds no samples")
    feature_names = [k for k in parts[0] if k not in _RAGGED_KEYS]
    return ImageRows(
        ids=ids,
        features={k: torch.cat([p[k] for p in parts]) for k in feature_names},
        annotations=annotations,
        va_is_scene=cfg.va_backbone == "scene",
        **{k: torch.cat([p[k] for p in parts]) for k in _RAGGED_KEYS},
    )


def collate(items: Sequence[ProcessedSample], cfg: PipelineConfig) -> ImageBatch:
    """An :class:`ImageBatch` straight from :meth:`ImagePipeline.process` output (no cache)."""
    S = cfg.crop_size
    faces = [torch.from_numpy(p.faces) for p in items if p.n_faces]
    rows = ImageRows(
        ids=[p.sample_id for p in items],
        features={k: torch.stack([p.features[k] for p in items]) for k in items[0].features},
        faces=torch.cat(faces) if faces else torch.zeros((0, S, S), dtype=torch.uint8),
        counts=torch.tensor([p.n_faces for p in items], dtype=torch.long),
        boxes=torch.from_numpy(np.concatenate([p.boxes for p in items]).reshape(-1, 4).astype(np.float32)),
        probs=torch.from_numpy(np.concatenate([p.probs for p in items]).reshape(-1).astype(np.float32)),
        image_size=torch.tensor([list(p.image_size) for p in items], dtype=torch.long),
        labels=torch.tensor([-1 if p.label is None else p.label for p in items], dtype=torch.long),
        annotations=[p.annotations for p in items],
        va_is_scene=cfg.va_backbone == "scene",
    )
    return rows.batch(torch.arange(len(items)), rows.ids)


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
    read_rows=read_rows,
    collate=collate,
))

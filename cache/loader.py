"""Serve cached tensors as :class:`cache.batch.Batch` objects, by sample id.

    split = CachedSplit("cache/", "train", expected_cfg=cfg)
    batch = split.batch(["img_0003", "img_0001"])     # rows in exactly this order
    for batch in split.batches(64, shuffle=True, seed=0): ...

Everything is loaded into memory once (shards are checked against the sha256
recorded in the manifest). Faces are stored ragged; a batch pads them to the
three slots with NaN rows where a face does not exist, and ``face_mask`` says
which exist. :func:`collate` builds the same batch straight from pipeline output
(``emologic query`` on new images, no cache).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from cache.batch import Batch
from cache.build import check_config
from cache.store import MANIFEST, CacheError, read_manifest, read_shard_bytes
from neural.errors import UserError
from neural.vocabulary import MAX_FACES
from pipelines.pipeline import PipelineConfig, ProcessedSample


class UnknownSampleError(UserError, KeyError):
    def __str__(self) -> str:
        return self.args[0]


class _RaggedTable:
    """Per-sample tensors in one flat layout; ``batch(positions)`` pads the faces."""

    def __init__(self, ids, features, faces, counts, boxes, probs, image_size, labels, annotations):
        self.ids: list[str] = ids
        self.features: dict[str, torch.Tensor] = features  # name -> [N, ...]
        self.faces = faces  # [F, S, S] uint8
        self.counts = counts  # [N] long
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])  # [N + 1]
        self.boxes = boxes  # [F, 4] float32
        self.probs = probs  # [F] float32
        self.image_size = image_size  # [N, 2] long
        self.labels = labels  # [N] long, -1 unknown
        self.annotations: list[dict] = annotations

    def batch(self, pos: torch.Tensor, sample_ids: list[str], va_is_scene: bool) -> Batch:
        B, S = len(pos), self.faces.shape[-1]
        slots = torch.arange(MAX_FACES)
        counts = self.counts[pos]  # [B]
        mask = slots[None, :] < counts[:, None]  # [B, 3]
        flat = (self.offsets[pos][:, None] + slots[None, :])[mask]  # [n present] index into faces

        tensors = {name: t[pos] for name, t in self.features.items()}
        if va_is_scene:
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
        return Batch(
            sample_ids=list(sample_ids),
            tensors=tensors,
            face_mask=mask,
            face_boxes=boxes,
            face_probs=probs,
            image_size=self.image_size[pos].clone(),
            labels=self.labels[pos].clone(),
            meta={k: [a.get(k) for a in anns] for k in keys},
        )


def collate(items: Sequence[ProcessedSample], cfg: PipelineConfig) -> Batch:
    """A :class:`Batch` straight from :meth:`ImagePipeline.process` output."""
    if not items:
        raise ValueError("collate: no samples")
    S = cfg.crop_size
    faces = [torch.from_numpy(p.faces) for p in items if p.n_faces]
    table = _RaggedTable(
        ids=[p.sample_id for p in items],
        features={k: torch.stack([p.features[k] for p in items]) for k in items[0].features},
        faces=torch.cat(faces) if faces else torch.zeros((0, S, S), dtype=torch.uint8),
        counts=torch.tensor([p.n_faces for p in items], dtype=torch.long),
        boxes=torch.from_numpy(np.concatenate([p.boxes for p in items]).reshape(-1, 4).astype(np.float32)),
        probs=torch.from_numpy(np.concatenate([p.probs for p in items]).reshape(-1).astype(np.float32)),
        image_size=torch.tensor([list(p.image_size) for p in items], dtype=torch.long),
        labels=torch.tensor([-1 if p.label is None else p.label for p in items], dtype=torch.long),
        annotations=[p.annotations for p in items],
    )
    return table.batch(torch.arange(len(items)), table.ids, cfg.va_backbone == "scene")


def split_dirs(cache_dir: str | os.PathLike, split: str | Sequence[str] | None) -> list[Path]:
    """Directories of ``split`` (a name, several names, or ``None`` = every split)."""
    root = Path(cache_dir)
    if split is None:
        if (root / MANIFEST).is_file():
            return [root]
        found = sorted(p.parent for p in root.glob(f"*/{MANIFEST}"))
        if not found:
            raise CacheError(f"{root}: no cache here (no */{MANIFEST}); build one with `emologic cache build`")
        return found
    names = [split] if isinstance(split, str) else list(split)
    dirs = [root / n for n in names]
    for d in dirs:
        if not (d / MANIFEST).is_file():
            have = ", ".join(sorted(p.parent.name for p in root.glob(f"*/{MANIFEST}"))) or "none"
            raise CacheError(f"{root}: no cached split {d.name!r} (cached splits: {have})")
    return dirs


class CachedSplit:
    """The cached tensors of one split (or several: ``split=("train", "val")``; ``None``: all).

    ``expected_cfg`` (a :class:`PipelineConfig` or its dict) and ``expected_identity``
    (e.g. ``{"scene_backbone": weights_id}``) make loading refuse a cache built
    otherwise, with :class:`CacheConfigMismatch` naming what differs.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        split: str | Sequence[str] | None = None,
        expected_cfg: PipelineConfig | dict | None = None,
        expected_identity: dict | None = None,
    ):
        self.directories = split_dirs(cache_dir, split)
        self.manifests = [read_manifest(d) for d in self.directories]
        first = self.manifests[0]
        self.config = PipelineConfig.from_dict(first["config"])
        self.identity: dict = first.get("identity", {})
        for d, m in zip(self.directories, self.manifests):
            # every split must match what the caller expects, and the first split
            check_config(m, self.config if expected_cfg is None else expected_cfg, expected_identity, d)
            check_config(m, self.config, self.identity, d)
        self.skipped: list[tuple[str, str]] = [(s["id"], s["reason"]) for m in self.manifests for s in m["skipped"]]
        self._table = self._load()
        self._pos = {sid: i for i, sid in enumerate(self._table.ids)}
        if len(self._pos) != len(self._table.ids):
            raise CacheError(f"{cache_dir}: a sample id is cached in more than one of the requested splits")

    # ------------------------------------------------------------------ loading
    def _load(self) -> _RaggedTable:
        ids, annotations, parts = [], [], []
        for directory, manifest in zip(self.directories, self.manifests):
            shards = {info["name"]: self._read_shard(directory, info) for info in manifest["shards"]}
            by_shard: dict[str, list[dict]] = {}
            for e in manifest["samples"]:
                shard_ids = shards[e["shard"]][1] if e["shard"] in shards else []
                if e["row"] >= len(shard_ids) or shard_ids[e["row"]] != e["id"]:
                    raise CacheError(
                        f"{directory}: sample {e['id']!r} is not in shard {e['shard']} where the manifest "
                        "puts it; run `emologic cache verify`"
                    )
                by_shard.setdefault(e["shard"], []).append(e)
            for name, entries in by_shard.items():
                parts.append(_gather_rows(shards[name][0], [e["row"] for e in entries]))
                ids += [e["id"] for e in entries]
                annotations += [e["annotations"] for e in entries]
        if not parts:
            raise CacheError(f"{', '.join(map(str, self.directories))}: the cache holds no samples")
        feature_names = [k for k in parts[0] if k not in _RAGGED_KEYS]
        return _RaggedTable(
            ids=ids,
            features={k: torch.cat([p[k] for p in parts]) for k in feature_names},
            annotations=annotations,
            **{k: torch.cat([p[k] for p in parts]) for k in _RAGGED_KEYS},
        )

    @staticmethod
    def _read_shard(directory: Path, info: dict):
        path = directory / info["name"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CacheError(f"{path}: shard listed in the manifest is missing; run `emologic cache verify`") from None
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise CacheError(f"{path}: shard changed after it was written (sha256 differs); run `emologic cache verify`")
        return read_shard_bytes(data)

    # ------------------------------------------------------------------ access
    @property
    def sample_ids(self) -> list[str]:
        return list(self._table.ids)

    def __len__(self) -> int:
        return len(self._table.ids)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._pos

    def positions(self, sample_ids: Sequence[str]) -> torch.Tensor:
        missing = [s for s in sample_ids if s not in self._pos]
        if missing:
            skipped = dict(self.skipped)
            why = "; ".join(f"{s}: skipped ({skipped[s]})" for s in missing[:3] if s in skipped)
            raise UnknownSampleError(
                f"{len(missing)} sample id(s) not in this cache, e.g. {missing[:3]}" + (f" - {why}" if why else "")
            )
        return torch.tensor([self._pos[s] for s in sample_ids], dtype=torch.long)

    def batch(self, sample_ids: Sequence[str]) -> Batch:
        """The batch of exactly these samples, in this order."""
        sample_ids = [str(s) for s in sample_ids]
        return self._table.batch(self.positions(sample_ids), sample_ids, self.config.va_backbone == "scene")

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0,
                sample_ids: Sequence[str] | None = None) -> Iterator[Batch]:
        """Batches over ``sample_ids`` (default: all), in order or shuffled by ``seed``."""
        ids = list(self._table.ids if sample_ids is None else sample_ids)
        if shuffle:
            g = torch.Generator().manual_seed(seed)
            ids = [ids[i] for i in torch.randperm(len(ids), generator=g).tolist()]
        for start in range(0, len(ids), batch_size):
            yield self.batch(ids[start : start + batch_size])

    def labels(self, sample_ids: Sequence[str] | None = None) -> torch.Tensor:
        """[N] long labels (-1 unknown) of ``sample_ids`` (default: all)."""
        if sample_ids is None:
            return self._table.labels.clone()
        return self._table.labels[self.positions(list(sample_ids))]

    def annotations(self, sample_id: str) -> dict:
        return self._table.annotations[self.positions([sample_id])[0]]


_RAGGED_KEYS = ("faces", "counts", "boxes", "probs", "image_size", "labels")


def _gather_rows(tensors: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """The given rows of one shard, faces included (ragged -> ragged)."""
    r = torch.tensor(rows, dtype=torch.long)
    off = tensors["face_offsets"]
    starts, ends = off[r], off[r + 1]
    face_idx = torch.cat([torch.arange(a, b) for a, b in zip(starts.tolist(), ends.tolist())] or [torch.zeros(0, dtype=torch.long)])
    out = {k: v[r] for k, v in tensors.items() if k not in ("faces", "face_offsets", "boxes", "probs")}
    out.update(
        faces=tensors["faces"][face_idx],
        counts=ends - starts,
        boxes=tensors["boxes"][face_idx],
        probs=tensors["probs"][face_idx],
    )
    return out

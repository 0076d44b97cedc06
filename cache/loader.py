"""Serve cached tensors as :class:`cache.batch.Batch` (images) or
:class:`cache.batch.ClipBatch` (clips) objects, by sample id.

    split = CachedSplit("cache/", "train", expected_cfg=cfg)
    batch = split.batch(["img_0003", "img_0001"])     # rows in exactly this order
    for batch in split.batches(64, shuffle=True, seed=0): ...

    clips = CachedClipSplit("cache/meld", "train")
    batch = clips.batch(["train/dia0_utt0"])          # ClipBatch

Both check the manifests (kind, config, identity) the same way and are
addressed by sample id only. Images: everything is loaded into memory once
(shards are checked against the sha256 recorded in the manifest). Faces are
stored ragged; a batch pads them to the three slots with NaN rows where a face
does not exist, and ``face_mask`` says which exist. Clips: shards are
hash-checked when opened, then memory-mapped; a batch reads only its rows of
video and audio (MELD's 13.7k clips are ~9 GB at 16 x 112 x 112). :func:`collate`
and :func:`collate_clips` build the same batches straight from pipeline output
(new inputs, no cache).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import numpy as np
import torch

from cache.batch import _CLIP_TENSORS, Batch, ClipBatch
from cache.kinds import get_cache_kind, kind_of_manifest
from cache.store import MANIFEST, CacheError, check_config, read_manifest, read_shard_bytes
from neural.errors import UserError
from neural.files import sha256_file
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


class _CachedSplits:
    """What every cached-split reader shares: manifests, kind and config checks, ids.

    Subclasses set ``kind_name`` and implement ``_load() -> (ids, annotations, labels)``
    and ``batch(sample_ids)``.
    """

    kind_name: ClassVar[str]

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        split: str | Sequence[str] | None = None,
        expected_cfg=None,
        expected_identity: dict | None = None,
    ):
        self.directories = split_dirs(cache_dir, split)
        self.manifests = [read_manifest(d) for d in self.directories]
        for d, m in zip(self.directories, self.manifests):
            kind = kind_of_manifest(m)
            if kind.name != self.kind_name:
                reader = {"image": "CachedSplit", "clip": "CachedClipSplit"}.get(kind.name, "its reader")
                raise CacheError(f"{d}: a {kind.name} cache, not a {self.kind_name} cache; read it with {reader}")
        self.kind = get_cache_kind(self.kind_name)
        first = self.manifests[0]
        self.config = self.kind.config_cls.from_dict(first["config"])
        self.identity: dict = first.get("identity", {})
        for d, m in zip(self.directories, self.manifests):
            # every split must match what the caller expects, and the first split
            check_config(m, self.config if expected_cfg is None else expected_cfg, expected_identity, d)
            check_config(m, self.config, self.identity, d)
        self.skipped: list[tuple[str, str]] = [(s["id"], s["reason"]) for m in self.manifests for s in m["skipped"]]
        #: the source file's sha256 of every cached sample, by id
        self.hashes: dict[str, str] = {e["id"]: e["sha256"] for m in self.manifests for e in m["samples"]}
        ids, self._annotations, self._labels = self._load()
        self._ids: list[str] = ids
        self._pos = {sid: i for i, sid in enumerate(ids)}
        if len(self._pos) != len(ids):
            raise CacheError(f"{cache_dir}: a sample id is cached in more than one of the requested splits")

    def _load(self) -> tuple[list[str], list[dict], torch.Tensor]:
        raise NotImplementedError

    def batch(self, sample_ids: Sequence[str]):
        raise NotImplementedError

    @staticmethod
    def _entries_by_shard(directory: Path, manifest: dict, shard_ids: dict[str, list[str]]) -> dict[str, list[dict]]:
        """The manifest's entries grouped by shard, each checked to be where the manifest puts it."""
        by_shard: dict[str, list[dict]] = {}
        for e in manifest["samples"]:
            ids = shard_ids.get(e["shard"], [])
            if e["row"] >= len(ids) or ids[e["row"]] != e["id"]:
                raise CacheError(
                    f"{directory}: sample {e['id']!r} is not in shard {e['shard']} where the manifest "
                    "puts it; run `emologic cache verify`"
                )
            by_shard.setdefault(e["shard"], []).append(e)
        return by_shard

    # ------------------------------------------------------------------ access
    @property
    def sample_ids(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

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

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0,
                sample_ids: Sequence[str] | None = None) -> Iterator:
        """Batches over ``sample_ids`` (default: all), in order or shuffled by ``seed``."""
        ids = list(self._ids if sample_ids is None else sample_ids)
        if shuffle:
            g = torch.Generator().manual_seed(seed)
            ids = [ids[i] for i in torch.randperm(len(ids), generator=g).tolist()]
        for start in range(0, len(ids), batch_size):
            yield self.batch(ids[start : start + batch_size])

    def labels(self, sample_ids: Sequence[str] | None = None) -> torch.Tensor:
        """[N] long labels (-1 unknown) of ``sample_ids`` (default: all)."""
        if sample_ids is None:
            return self._labels.clone()
        return self._labels[self.positions(list(sample_ids))]

    def annotations(self, sample_id: str) -> dict:
        return self._annotations[self.positions([sample_id])[0]]

    def content_digest(self) -> str:
        """sha256 over what the cached samples are: ids, labels, source-file hashes and
        annotations (order-free). Equal digests: trained on the same data."""
        labels = self._labels.tolist()
        rows = sorted((sid, labels[i], self.hashes[sid], self._annotations[i]) for i, sid in enumerate(self._ids))
        return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()

    def check_samples(self, samples: Sequence, hashes: dict[str, str] | None = None, where: str = "") -> None:
        """Refuse (:class:`CacheError`, one line naming the sample) unless this cache holds
        exactly ``samples`` (data-set samples; those the cache skipped excepted), with
        their labels and, where ``hashes`` gives one, their source files' sha256."""
        where = where or ", ".join(map(str, self.directories))
        skipped = dict(self.skipped)
        wanted = {str(s.sample_id): s for s in samples if str(s.sample_id) not in skipped}
        extra = [sid for sid in self._ids if sid not in wanted]
        if extra:
            raise CacheError(f"{where}: the cache holds sample {extra[0]!r}, which the data set does not put "
                             f"in this split ({len(extra)} such); rebuild the cache")
        missing = [sid for sid in wanted if sid not in self._pos]
        if missing:
            raise CacheError(f"{where}: sample {missing[0]!r} of the data set is not in the cache "
                             f"({len(missing)} missing); rebuild the cache")
        labels = self._labels.tolist()
        for sid, s in wanted.items():
            cached = labels[self._pos[sid]]
            label = -1 if s.label is None else int(s.label)
            if cached != label:
                raise CacheError(f"{where}: sample {sid!r} has label {label} in the data set, {cached} in the "
                                 "cache; rebuild the cache")
            if hashes and sid in hashes and hashes[sid] != self.hashes[sid]:
                raise CacheError(f"{where}: the file of sample {sid!r} changed since it was cached; rebuild the cache")


class CachedSplit(_CachedSplits):
    """The cached image tensors of one split (or several: ``split=("train", "val")``; ``None``: all).

    ``expected_cfg`` (a :class:`PipelineConfig` or its dict) and ``expected_identity``
    (e.g. ``{"scene_backbone": weights_id}``) make loading refuse a cache built
    otherwise, with :class:`CacheConfigMismatch` naming what differs.
    """

    kind_name = "image"
    config: PipelineConfig

    def _load(self) -> tuple[list[str], list[dict], torch.Tensor]:
        ids, annotations, parts = [], [], []
        for directory, manifest in zip(self.directories, self.manifests):
            shards = {info["name"]: self._read_shard(directory, info) for info in manifest["shards"]}
            by_shard = self._entries_by_shard(directory, manifest, {name: sh[1] for name, sh in shards.items()})
            for name, entries in by_shard.items():
                parts.append(_gather_rows(shards[name][0], [e["row"] for e in entries]))
                ids += [e["id"] for e in entries]
                annotations += [e["annotations"] for e in entries]
        if not parts:
            raise CacheError(f"{', '.join(map(str, self.directories))}: the cache holds no samples")
        feature_names = [k for k in parts[0] if k not in _RAGGED_KEYS]
        self._table = _RaggedTable(
            ids=ids,
            features={k: torch.cat([p[k] for p in parts]) for k in feature_names},
            annotations=annotations,
            **{k: torch.cat([p[k] for p in parts]) for k in _RAGGED_KEYS},
        )
        return ids, annotations, self._table.labels

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

    def batch(self, sample_ids: Sequence[str]) -> Batch:
        """The batch of exactly these samples, in this order."""
        sample_ids = [str(s) for s in sample_ids]
        return self._table.batch(self.positions(sample_ids), sample_ids, self.config.va_backbone == "scene")


#: Clip tensors read per batch from the memory-mapped shards; the rest is loaded once.
_CLIP_LAZY = ("video", "audio")


class CachedClipSplit(_CachedSplits):
    """The cached clips of one split (or several, or ``None``: all), served as :class:`ClipBatch`.

    ``expected_cfg`` (a :class:`~pipelines.clips.ClipPipelineConfig` or its dict) and
    ``expected_identity`` (e.g. ``{"tokenizer": tokenizer_identity(tok)}``) refuse a
    cache built otherwise. Shards are hash-checked when opened (``check_hashes``)
    and memory-mapped: ``batch`` reads only the video and audio rows it returns.
    """

    kind_name = "clip"

    def __init__(self, cache_dir, split=None, expected_cfg=None, expected_identity=None, check_hashes: bool = True):
        self.check_hashes = check_hashes
        super().__init__(cache_dir, split, expected_cfg, expected_identity)

    def _load(self) -> tuple[list[str], list[dict], torch.Tensor]:
        from safetensors import safe_open

        ids, annotations, small = [], [], []
        self._handles: list = []  # open shards (memory-mapped)
        where: list[tuple[int, int]] = []  # per sample: (handle index, row)
        for directory, manifest in zip(self.directories, self.manifests):
            opened: dict[str, tuple[int, dict[str, torch.Tensor]]] = {}
            shard_ids: dict[str, list[str]] = {}
            for info in manifest["shards"]:
                path = directory / info["name"]
                if not path.is_file():
                    raise CacheError(f"{path}: shard listed in the manifest is missing; run `emologic cache verify`")
                if self.check_hashes and sha256_file(path) != info["sha256"]:
                    raise CacheError(f"{path}: shard changed after it was written (sha256 differs); run `emologic cache verify`")
                handle = safe_open(str(path), framework="pt")
                shard_ids[info["name"]] = json.loads((handle.metadata() or {}).get("sample_ids", "[]"))
                tensors = {k: handle.get_tensor(k) for k in handle.keys() if k not in _CLIP_LAZY}  # noqa: SIM118 (not a dict)
                opened[info["name"]] = (len(self._handles), tensors)
                self._handles.append(handle)
            for name, entries in self._entries_by_shard(directory, manifest, shard_ids).items():
                h, tensors = opened[name]
                rows = torch.tensor([e["row"] for e in entries], dtype=torch.long)
                small.append({k: v[rows] for k, v in tensors.items()})
                where += [(h, e["row"]) for e in entries]
                ids += [e["id"] for e in entries]
                annotations += [e["annotations"] for e in entries]
        if not small:
            raise CacheError(f"{', '.join(map(str, self.directories))}: the cache holds no samples")
        self._small = {k: torch.cat([p[k] for p in small]) for k in small[0]}  # name -> [N, ...]
        self._where = where
        return ids, annotations, self._small["labels"]

    def _rows(self, name: str, pos: list[int]) -> torch.Tensor:
        """[B, ...] rows of a lazily read tensor (``video`` or ``audio``)."""
        return torch.cat([self._handles[h].get_slice(name)[r : r + 1] for h, r in (self._where[i] for i in pos)])

    def batch(self, sample_ids: Sequence[str]) -> ClipBatch:
        """The batch of exactly these clips, in this order."""
        sample_ids = [str(s) for s in sample_ids]
        pos = self.positions(sample_ids)
        plist = pos.tolist()
        tensors = {k: v[pos] for k, v in self._small.items()}
        tensors.update(video=self._rows("video", plist), audio=self._rows("audio", plist))
        return ClipBatch(sample_ids, *(tensors[k] for k in _CLIP_TENSORS),
                         annotations=[self._annotations[i] for i in plist])

    def sentiments(self, sample_ids: Sequence[str] | None = None) -> torch.Tensor:
        """[N] long sentiments (index into SENTIMENTS, -1 unknown) of ``sample_ids`` (default: all)."""
        if sample_ids is None:
            return self._small["sentiments"].clone()
        return self._small["sentiments"][self.positions(list(sample_ids))]

    def audio_present(self, sample_ids: Sequence[str] | None = None) -> torch.Tensor:
        """[N] bool: which clips have audio."""
        if sample_ids is None:
            return self._small["audio_present"].clone()
        return self._small["audio_present"][self.positions(list(sample_ids))]


def collate_clips(items: Sequence, cfg) -> ClipBatch:
    """A :class:`ClipBatch` straight from :meth:`ClipPipeline.process` output (no cache)."""
    if not items:
        raise ValueError("collate_clips: no samples")
    from cache.clip_kind import shard_tensors

    tensors = shard_tensors(list(items), cfg)
    return ClipBatch([p.sample_id for p in items], *(tensors[k] for k in _CLIP_TENSORS),
                     annotations=[p.annotations for p in items])


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

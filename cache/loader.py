"""Serve cached tensors as batches (:mod:`cache.batch`), by sample id, for every cache kind.

    split = CachedSplit("cache/", "train", expected_cfg=cfg)
    batch = split.batch(["img_0003", "img_0001"])     # rows in exactly this order: an ImageBatch
    for batch in split.batches(64, shuffle=True, seed=0): ...

    clips = CachedSplit("cache/meld", "train")
    batch = clips.batch(["train/dia0_utt0"])          # a ClipBatch
    clips.column("sentiments")                        # [N] per-sample tensor by name

One reader for every kind: it checks the manifests (kind, config, identity),
addresses samples by id only, and leaves to the kind (:mod:`cache.kinds`) only
how its shards are read back and what its batch holds -- images are loaded into
memory once, clips memory-mapped (``cache.image_kind``, ``cache.clip_kind``).
:func:`collate` builds the same batches straight from pipeline output (new
inputs, no cache).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import torch

from cache.batch import Batch
from cache.kinds import get_cache_kind, kind_of_config, kind_of_manifest
from cache.store import MANIFEST, CacheError, check_config, read_manifest
from neural.common import UserError


class UnknownSampleError(UserError, KeyError):
    def __str__(self) -> str:
        return self.args[0]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def collate(items: Sequence, cfg) -> Batch:
    """The batch of ``cfg``'s kind straight from its pipeline's ``process`` output."""
    if not items:
        raise ValueError("collate: no samples")
    return kind_of_config(cfg).collate(list(items), cfg)


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
    """The cached samples of one split (or several: ``split=("train", "val")``; ``None``: all),
    of any kind, served as that kind's batch.

    ``expected_cfg`` (a pipeline config or its dict) and ``expected_identity`` (e.g.
    ``{"scene_backbone": weights_id}``) make loading refuse a cache built otherwise,
    with :class:`CacheConfigMismatch` naming what differs; ``kind`` (a kind name)
    refuses a cache of another kind. ``check_hashes``: shards are checked against the
    sha256 the manifest recorded when they are opened.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        split: str | Sequence[str] | None = None,
        expected_cfg=None,
        expected_identity: dict | None = None,
        check_hashes: bool = True,
        kind: str | None = None,
    ):
        self.directories = split_dirs(cache_dir, split)
        self.manifests = [read_manifest(d) for d in self.directories]
        kinds = [kind_of_manifest(m) for m in self.manifests]
        wanted = kind or kinds[0].name
        for d, k in zip(self.directories, kinds):
            if k.name != wanted:
                raise CacheError(f"{d}: {_article(k.name)} {k.name} cache, not {_article(wanted)} {wanted} cache")
        self.kind = get_cache_kind(wanted)
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
        self._rows = self.kind.read_rows(self.directories, self.manifests, self.config, check_hashes)
        ids, self._annotations, self._labels = self._rows.ids, self._rows.annotations, self._rows.columns["labels"]
        self._ids: list[str] = ids
        self._pos = {sid: i for i, sid in enumerate(ids)}
        if len(self._pos) != len(ids):
            raise CacheError(f"{cache_dir}: a sample id is cached in more than one of the requested splits")

    def batch(self, sample_ids: Sequence[str]) -> Batch:
        """The batch of exactly these samples, in this order."""
        sample_ids = [str(s) for s in sample_ids]
        return self._rows.batch(self.positions(sample_ids), sample_ids)

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

    def column(self, name: str, sample_ids: Sequence[str] | None = None) -> torch.Tensor:
        """The per-sample tensor ``name`` of ``sample_ids`` (default: all), e.g. ``labels``;
        which names exist is the kind's (clips: ``sentiments``, ``audio_present``, ...)."""
        columns = self._rows.columns
        if name not in columns:
            raise KeyError(f"the {self.kind.name} cache has no per-sample {name!r}; it has {', '.join(sorted(columns))}")
        if sample_ids is None:
            return columns[name].clone()
        return columns[name][self.positions(list(sample_ids))]

    def labels(self, sample_ids: Sequence[str] | None = None) -> torch.Tensor:
        """[N] long labels (-1 unknown) of ``sample_ids`` (default: all)."""
        return self.column("labels", sample_ids)

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

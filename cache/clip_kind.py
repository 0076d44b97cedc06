"""The ``clip`` cache kind: how :class:`pipelines.clips.ClipPipeline` output is stored,
checked, and served back as :class:`cache.batch.ClipBatch`.

Shard layout (``k`` clips; T, S, n_mels, L, M from the :class:`ClipPipelineConfig`)::

    video           [k, T, 3, S, S]     uint8
    audio           [k, n_mels, L]      float32   log-mel; NaN rows where audio_present is False
    audio_present   [k]                 bool
    audio_frames    [k]                 int64     log-mel frames holding audio (0 without audio)
    input_ids       [k, M]              int64     M = max_tokens
    attention_mask  [k, M]              int64
    labels          [k]                 int64     emotion index, -1 unknown
    sentiments      [k]                 int64     index into SENTIMENTS, -1 unknown

A clip without audio stores NaN, not zeros or silence: nothing reads it as audio
by accident. Manifest entries add ``clip_path``, ``sentiment``, ``audio_present``,
``audio_frames``, ``n_tokens`` and ``decode`` (what decoding found: duration, fps, ...).

Reading: shards are hash-checked when opened, then memory-mapped; a batch reads
only its rows of video and audio (MELD's 13.7k clips are ~9 GB at 16 x 112 x 112).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cache.batch import ClipBatch
from cache.kinds import CacheKind, ProblemFn, register_cache_kind
from cache.store import CacheError, checked_shard, entries_by_shard, to_json_value
from pipelines.clips import ClipPipeline, ClipPipelineConfig, ProcessedClip


def shard_tensors(items: Sequence[ProcessedClip], cfg: ClipPipelineConfig) -> dict[str, torch.Tensor]:
    absent = np.full((cfg.n_mels, cfg.audio_frames), np.nan, np.float32)
    return {
        "video": torch.from_numpy(np.stack([p.video for p in items])),  # [k, T, 3, S, S]
        "audio": torch.from_numpy(np.stack([absent if p.audio is None else p.audio for p in items]).astype(np.float32)),
        "audio_present": torch.tensor([p.audio_present for p in items], dtype=torch.bool),
        "audio_frames": torch.tensor([p.audio_frames for p in items], dtype=torch.int64),
        "input_ids": torch.from_numpy(np.stack([p.input_ids for p in items]).astype(np.int64)),
        "attention_mask": torch.from_numpy(np.stack([p.attention_mask for p in items]).astype(np.int64)),
        "labels": torch.tensor([-1 if p.label is None else p.label for p in items], dtype=torch.int64),
        "sentiments": torch.tensor([-1 if p.sentiment is None else p.sentiment for p in items], dtype=torch.int64),
    }


def manifest_entry(p: ProcessedClip) -> dict:
    return {
        "clip_path": p.clip_path,
        "sentiment": p.sentiment,
        "audio_present": p.audio_present,
        "audio_frames": p.audio_frames,
        "n_tokens": int(p.attention_mask.sum()),
        "decode": to_json_value(p.info),
    }


def expected_shapes(cfg: ClipPipelineConfig, k: int, tensors: dict) -> dict[str, tuple[tuple, torch.dtype]]:
    T, S, M = cfg.frames, cfg.frame_size, cfg.max_tokens
    return {
        "video": ((k, T, 3, S, S), torch.uint8),
        "audio": ((k, cfg.n_mels, cfg.audio_frames), torch.float32),
        "audio_present": ((k,), torch.bool),
        "audio_frames": ((k,), torch.int64),
        "input_ids": ((k, M), torch.int64),
        "attention_mask": ((k, M), torch.int64),
        "labels": ((k,), torch.int64),
        "sentiments": ((k,), torch.int64),
    }


def check_shard(tensors: dict, k: int, name: str, problem: ProblemFn) -> None:
    mask = tensors.get("attention_mask")
    if mask is not None and mask.dim() == 2 and not bool(((mask == 0) | (mask == 1)).all()):
        problem("shape", name, "attention_mask holds values other than 0 and 1")


def check_entry(e: dict, sid: str, row: int, tensors: dict, problem: ProblemFn) -> None:
    def stored(key):
        t = tensors.get(key)
        return None if t is None or row >= len(t) else t[row]

    for key, entry_key in (("labels", "label"), ("sentiments", "sentiment")):
        t = stored(key)
        want = -1 if e.get(entry_key) is None else e.get(entry_key)
        if t is not None and int(t) != want:
            problem("shape", sid, f"stored {entry_key} {int(t)}, the manifest says {want}")
    present, frames, audio = stored("audio_present"), stored("audio_frames"), stored("audio")
    if present is not None and bool(present) != bool(e.get("audio_present")):
        problem("shape", sid, f"stored audio_present {bool(present)}, the manifest says {e.get('audio_present')}")
    if frames is not None and int(frames) != e.get("audio_frames"):
        problem("shape", sid, f"stored audio_frames {int(frames)}, the manifest says {e.get('audio_frames')}")
    if audio is not None and present is not None:
        if bool(present) and not bool(torch.isfinite(audio).all()):
            problem("nonfinite", sid, "audio (log-mel) contains NaN or inf")
        if not bool(present) and not bool(torch.isnan(audio).all()):
            problem("shape", sid, "audio is marked absent but its row is not NaN")
    mask = stored("attention_mask")
    if mask is not None and int(mask.sum()) != e.get("n_tokens"):
        problem("shape", sid, f"{int(mask.sum())} tokens stored, the manifest says {e.get('n_tokens')}")


#: Clip tensors read per batch from the memory-mapped shards; the rest is loaded once.
_LAZY = ("video", "audio")


class ClipRows:
    """Open, memory-mapped shards: the small per-clip tensors in memory (``columns``),
    video and audio read per batch."""

    def __init__(self, ids, annotations, columns, handles, where):
        self.ids: list[str] = ids
        self.annotations: list[dict] = annotations
        self.columns: dict[str, torch.Tensor] = columns  # name -> [N, ...]: labels, sentiments, audio_present, ...
        self._handles = handles  # open safetensors shards
        self._where: list[tuple[int, int]] = where  # per sample: (handle index, row)

    def _lazy(self, name: str, pos: list[int]) -> torch.Tensor:
        """[B, ...] rows of a lazily read tensor (``video`` or ``audio``)."""
        return torch.cat([self._handles[h].get_slice(name)[r : r + 1] for h, r in (self._where[i] for i in pos)])

    def batch(self, pos: torch.Tensor, sample_ids: list[str]) -> ClipBatch:
        plist = pos.tolist()
        tensors = {k: v[pos] for k, v in self.columns.items()}
        tensors.update({name: self._lazy(name, plist) for name in _LAZY})
        return ClipBatch(list(sample_ids), annotations=[self.annotations[i] for i in plist], **tensors)


def read_rows(directories: list[Path], manifests: list[dict], cfg: ClipPipelineConfig, check_hashes: bool) -> ClipRows:
    from safetensors import safe_open

    ids, annotations, small, handles, where = [], [], [], [], []
    for directory, manifest in zip(directories, manifests):
        opened: dict[str, tuple[int, dict[str, torch.Tensor]]] = {}
        shard_ids: dict[str, list[str]] = {}
        for info in manifest["shards"]:
            handle = safe_open(str(checked_shard(directory, info, check_hashes)), framework="pt")
            shard_ids[info["name"]] = json.loads((handle.metadata() or {}).get("sample_ids", "[]"))
            tensors = {k: handle.get_tensor(k) for k in handle.keys() if k not in _LAZY}  # noqa: SIM118 (not a dict)
            opened[info["name"]] = (len(handles), tensors)
            handles.append(handle)
        for name, entries in entries_by_shard(directory, manifest, shard_ids).items():
            h, tensors = opened[name]
            rows = torch.tensor([e["row"] for e in entries], dtype=torch.long)
            small.append({k: v[rows] for k, v in tensors.items()})
            where += [(h, e["row"]) for e in entries]
            ids += [e["id"] for e in entries]
            annotations += [e["annotations"] for e in entries]
    if not small:
        raise CacheError(f"{', '.join(map(str, directories))}: the cache holds no samples")
    columns = {k: torch.cat([p[k] for p in small]) for k in small[0]}
    return ClipRows(ids, annotations, columns, handles, where)


def collate(items: Sequence[ProcessedClip], cfg: ClipPipelineConfig) -> ClipBatch:
    """A :class:`ClipBatch` straight from :meth:`ClipPipeline.process` output (no cache)."""
    tensors = shard_tensors(list(items), cfg)
    return ClipBatch([p.sample_id for p in items], annotations=[p.annotations for p in items], **tensors)


CLIP_KIND = register_cache_kind(CacheKind(
    name="clip",
    config_cls=ClipPipelineConfig,
    # decoding, tokenising and log-mel run no network: the clip encoders run in the clip harness (its --device)
    make_pipeline=lambda cfg, device="cpu": ClipPipeline(cfg),
    source_path=lambda sample: Path(getattr(sample, "path", None) or sample.image_path),
    source_key="clip_path",
    shard_tensors=shard_tensors,
    manifest_entry=manifest_entry,
    expected_shapes=expected_shapes,
    check_shard=check_shard,
    check_entry=check_entry,
    read_rows=read_rows,
    collate=collate,
))

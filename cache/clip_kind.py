"""The ``clip`` cache kind: how :class:`pipelines.clips.ClipPipeline` output is stored.

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
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cache.kinds import CacheKind, ProblemFn, register_cache_kind
from cache.store import to_json_value
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
))

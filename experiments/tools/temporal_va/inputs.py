"""What a temporal V/A model reads: TSN-style frame sampling, the model inputs of
each path (cached features for Path B, augmented frames for Path A), and the
Path B feature cache."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from experiments.tools.temporal_va.config import TemporalVAConfig
from neural.common import UserError
from pipelines.datasets.afewva import AfewVADataset, Clip


# --------------------------------------------------------------------------- sampling


def sample_indices(n: int, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """[num_frames] sorted frame positions: one per equal segment, random (rng) or the segment centre.

    Clips shorter than ``num_frames`` repeat frames.
    """
    edges = np.linspace(0, n, num_frames + 1)
    width = edges[1:] - edges[:-1]
    offset = rng.random(num_frames) if rng is not None else np.full(num_frames, 0.5)
    return np.minimum(np.floor(edges[:-1] + offset * width).astype(np.int64), n - 1)


def coverage_windows(n: int, num_frames: int) -> list[np.ndarray]:
    """Samplings (one frame per segment, shifted by 0, 1, ...) that together cover all ``n`` frames."""
    starts = np.floor(np.arange(num_frames) * n / num_frames).astype(np.int64)
    ends = np.maximum(np.floor(np.arange(1, num_frames + 1) * n / num_frames).astype(np.int64) - 1, starts)
    return [np.minimum(starts + j, ends) for j in range(int(math.ceil(n / num_frames)))]


# --------------------------------------------------------------------------- model inputs


#: ``inputs(clip, positions, rng)`` -> one clip's model input [T, ...]; rng given = training (augment).
Inputs = Callable[[Clip, np.ndarray, "np.random.Generator | None"], torch.Tensor]


class FeatureInputs:
    """Path B: cached per-frame features, clip id -> [n_frames, D]."""

    def __init__(self, features: dict[str, torch.Tensor]):
        self.features = features
        self.dim = int(next(iter(features.values())).shape[1])

    def __call__(self, clip: Clip, idx: np.ndarray, rng=None) -> torch.Tensor:
        return self.features[clip.clip_id][torch.as_tensor(idx)]  # [T, D]


class FrameInputs:
    """Path A: frames read from disk, resized to ``size``, in [0, 1]; augmented when given an rng.

    Augmentation (the same for every frame of one view): random crop of 70-100 %
    of the area resized back, horizontal flip, brightness and contrast jitter.
    """

    def __init__(self, size: int):
        self.size = int(size)

    def load(self, path: Path) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        with Image.open(path) as im:
            im = im.convert("RGB").resize((self.size, self.size), Image.BICUBIC)
            return pil_to_tensor(im).float().div(255)  # [3, S, S]

    def __call__(self, clip: Clip, idx: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        frames = torch.stack([self.load(clip.image_paths[i]) for i in idx])  # [T, 3, S, S]
        return frames if rng is None else self.augment(frames, rng)

    def augment(self, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        S = self.size
        side = max(2, int(round(S * math.sqrt(rng.uniform(0.7, 1.0)))))
        y0, x0 = (int(v) for v in rng.integers(0, S - side + 1, 2))
        out = F.interpolate(frames[:, :, y0:y0 + side, x0:x0 + side], size=(S, S), mode="bilinear", align_corners=False)
        if rng.random() < 0.5:
            out = out.flip(-1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.8, 1.2)
        return out.clamp(0, 1)


def sample_batch(clips: Sequence[Clip], inputs: Inputs, num_frames: int, rng: np.random.Generator | None):
    """(x [B, T, ...], y [B, T, 2]) with one sampling per clip."""
    xs, ys = [], []
    for clip in clips:
        idx = sample_indices(len(clip), num_frames, rng)
        xs.append(inputs(clip, idx, rng))
        ys.append(torch.from_numpy(clip.targets[idx]))
    return torch.stack(xs), torch.stack(ys)


# --------------------------------------------------------------------------- Path B feature cache


def resolve_backbone(cfg: TemporalVAConfig) -> str:
    """``"clip"`` or ``"scene"``; ``auto`` takes CLIP only when it is on this machine (no download)."""
    if cfg.backbone != "auto":
        return cfg.backbone
    if Path(cfg.clip_model).expanduser().is_dir():
        return "clip"
    try:
        from transformers import CLIPConfig

        CLIPConfig.from_pretrained(cfg.clip_model, local_files_only=True)
        return "clip"
    except (OSError, ValueError, ImportError):
        print(f"va-temporal: CLIP {cfg.clip_model!r} is not on this machine; Path B uses the scene backbone "
              "(give --clip-model DIR or --backbone clip to download)")
        return "scene"


def feature_pipeline_config(cfg: TemporalVAConfig, backbone: str | None = None):
    """The cache pipeline config of Path B: frame features only (no faces)."""
    from pipelines.pipeline import PipelineConfig

    backbone = backbone or resolve_backbone(cfg)
    return PipelineConfig(max_faces=0, scene_size=cfg.frame_size, va_backbone=backbone,
                          clip_model=cfg.clip_model, batch_size=32)


def extract_features(dataset: AfewVADataset, cache_dir: str | Path, pcfg, shard_size: int = 256,
                     on_shard=None, progress: bool = False):
    """Cache the features of every frame (resuming a partial build) and write ``index.json``.

    Returns the :class:`cache.build.BuildReport`. The index lists, per clip, its
    split and frame sample ids in frame order, and the frames the cache skipped.
    """
    from cache.build import build_cache
    from cache.store import write_json

    report = build_cache(dataset, cache_dir, pcfg, progress=progress, shard_size=shard_size, on_shard=on_shard)
    skipped = {s.sample_id: s.reason for s in report.skipped}
    index = {
        "feature": "va",
        "pipeline": pcfg.to_dict(),
        "clips": {c.clip_id: {"split": c.split, "frames": [s for s in c.sample_ids if s not in skipped]}
                  for c in dataset.clips_of()},
        "skipped": [{"id": k, "reason": v} for k, v in skipped.items()],
    }
    write_json(Path(cache_dir) / "index.json", index)
    return report


def load_features(cache_dir: str | Path, dataset: AfewVADataset, pcfg) -> tuple[dict[str, torch.Tensor], dict[str, Clip]]:
    """(clip id -> [n, D] features, clip id -> clip restricted to its cached frames)."""
    from cache.loader import CachedSplit

    cached = CachedSplit(cache_dir, None, expected_cfg=pcfg)
    features, clips = {}, {}
    for clip in dataset.clips_of():
        keep = [i for i, sid in enumerate(clip.sample_ids) if sid in cached]
        if not keep:
            continue
        clip = clip if len(keep) == len(clip) else clip.subset(keep)
        features[clip.clip_id] = cached.batch(list(clip.sample_ids)).tensors["va"].float()  # [n, D]
        clips[clip.clip_id] = clip
    if not features:
        raise UserError(f"{cache_dir}: no frame of the data set is in the feature cache")
    return features, clips

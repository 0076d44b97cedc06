"""The configuration of a temporal V/A run (``emologic va-temporal``'s options)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from experiments.runs import config_fingerprint
from neural.common import UserError
from neural.temporal_va import TemporalHeadConfig


DEFAULT_CLIP = "openai/clip-vit-base-patch32"
PATHS = ("A", "B")
STAGES = {"A": ("pretrain", "finetune", "all", "evaluate"), "B": ("train", "all", "evaluate")}
BACKBONES = ("auto", "clip", "scene")
#: Config keys that do not change what a training stage computes (allowed to differ on resume).
_NOT_IN_FINGERPRINT = {"stage", "out", "device", "amp", "mc_samples", "checkpoint", "epochs", "epochs_pretrain",
                       "epochs_finetune", "max_plot_clips", "progress"}


@dataclass
class TemporalVAConfig:
    data: str
    out: str
    path: str = "B"  # "A": CLIP + LoRA end to end; "B": cached features + temporal head
    stage: str = "all"  # A: pretrain|finetune|all|evaluate; B: train|all|evaluate
    seed: int = 0
    num_frames: int = 8  # frames sampled per clip
    batch_size: int = 4  # clips per batch
    # Path B features
    backbone: str = "auto"  # auto: CLIP if clip_model is a local dir or in the local HF cache, else scene
    clip_model: str = DEFAULT_CLIP
    frame_size: int = 112  # scene backbone input size
    epochs: int = 40
    lr: float = 1e-3
    weight_decay: float = 1e-2
    ccc_weight: float = 1.0
    # temporal head
    d_model: int = 64
    n_layers: int = 1
    n_heads: int = 4
    dropout: float = 0.2
    # Path A
    epochs_pretrain: int = 5
    epochs_finetune: int = 10
    lr_lora: float = 1e-4
    lora_r: int = 8
    lora_alpha: int = 16
    temperature: float = 0.1
    checkpoint: str | None = None  # finetune: stage-1 checkpoint; evaluate: checkpoint to evaluate
    # evaluation / machine
    mc_samples: int = 5
    max_plot_clips: int = 6
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 + loss scaling)
    progress: bool = False

    def validate(self) -> None:
        if self.path not in PATHS:
            raise UserError(f"--path must be one of {', '.join(PATHS)}, got {self.path!r}")
        if self.stage not in STAGES[self.path]:
            raise UserError(f"Path {self.path} has stages {', '.join(STAGES[self.path])}, not {self.stage!r}")
        if self.backbone not in BACKBONES:
            raise UserError(f"--backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.checkpoint and self.stage not in ("finetune", "evaluate"):
            raise UserError("--checkpoint is used by --stage finetune (stage-1 weights) and --stage evaluate only")
        for key in ("num_frames", "batch_size", "frame_size", "d_model", "n_layers", "n_heads", "lora_r"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be positive, got {getattr(self, key)}")
        if self.path == "A" and self.stage in ("pretrain", "all") and self.batch_size < 2:
            raise UserError("contrastive pretraining needs --batch-size >= 2 (the other clips are the negatives)")
        if self.mc_samples < 1:
            raise UserError(f"mc_samples must be >= 1, got {self.mc_samples}")

    def fingerprint(self, **extra) -> str:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in _NOT_IN_FINGERPRINT}
        d["data"] = str(Path(self.data).expanduser().resolve())
        return config_fingerprint({**d, **extra})

    def head_config(self, in_dim: int) -> TemporalHeadConfig:
        return TemporalHeadConfig(in_dim=in_dim, d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers,
                                  ff_dim=2 * self.d_model, dropout=self.dropout, max_frames=max(64, self.num_frames),
                                  n_samples=max(2, self.mc_samples))

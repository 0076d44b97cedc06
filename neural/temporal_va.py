"""Temporal valence/arousal over video frames (source 001): a transformer head, CLIP + LoRA.

* ``temporal_va_head`` (:class:`TemporalVAHead`): per-frame features [B, T, D]
  -> standardised per feature (training statistics) -> Linear(D, d) + learned position embedding -> pre-norm
  transformer encoder -> two regression heads (valence, arousal) per frame
  [B, T, 2]; a projector of the mean-pooled sequence gives the L2-normalised
  clip embedding [B, P] used by contrastive pretraining. Path B trains it on
  cached backbone features.
* ``temporal_va_clip`` (:class:`TemporalCLIPVA`): CLIP's image encoder with LoRA
  adapters (``peft``) on the attention projections, CLIP's frozen visual
  projection, and a ``TemporalVAHead``. Input: frames [B, T, 3, S, S] in [0, 1]
  (S = the model's ``image_size``); CLIP normalisation happens inside. Path A.

MC dropout (as in ``neural.va``): the frame encoder runs once in eval mode, the
head's dropout is sampled ``n`` times. :func:`clip_va` reduces the samples to a
(mean, variance) per clip -- the variance over MC passes of the clip-averaged
prediction -- and :func:`clip_va_predicate_input` feeds it to the ``va_valence``
/ ``va_arousal`` bin adapters of the logic.

Checkpoints (:func:`save_checkpoint` / :func:`load_checkpoint`) use the registry's
format (``config.json`` + ``weights.safetensors``); for the CLIP model only the
trainable tensors (LoRA, head) are stored, with a fingerprint of the frozen CLIP
weights that loading checks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from neural.common import UserError, atomic_write_bytes
from neural.registry import build_from_checkpoint, register
from neural.va import _load_clip, va_predicate_input

#: transformers.image_utils.OPENAI_CLIP_MEAN / _STD (what CLIPImageProcessor uses)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TRAINER_FILE = "trainer.pt"


@dataclass
class TemporalHeadConfig:
    in_dim: int = 512
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    ff_dim: int = 256
    dropout: float = 0.1
    max_frames: int = 64
    proj_dim: int = 64  # contrastive embedding size
    n_samples: int = 5  # MC-dropout passes


@register("temporal_va_head", TemporalHeadConfig)
class TemporalVAHead(nn.Module):
    """[B, T, in_dim] frame features -> [B, T, 2] (valence, arousal) per frame."""

    def __init__(self, config: TemporalHeadConfig):
        super().__init__()
        if config.d_model % config.n_heads:
            raise UserError(f"d_model={config.d_model} must be divisible by n_heads={config.n_heads}")
        self.config = config
        d = config.d_model
        # per-feature standardisation of the input, set from training features (set_input_stats)
        self.register_buffer("feature_mean", torch.zeros(config.in_dim))
        self.register_buffer("feature_std", torch.ones(config.in_dim))
        self.in_proj = nn.Linear(config.in_dim, d)
        self.position = nn.Embedding(config.max_frames, d)
        nn.init.normal_(self.position.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(d, config.n_heads, config.ff_dim, config.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        self.valence_head = self._regressor()
        self.arousal_head = self._regressor()
        self.projector = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, config.proj_dim))

    def _regressor(self) -> nn.Sequential:
        d = self.config.d_model
        return nn.Sequential(nn.Linear(d, d // 2), nn.GELU(), nn.Dropout(self.config.dropout), nn.Linear(d // 2, 1))

    @torch.no_grad()
    def set_input_stats(self, features: torch.Tensor) -> None:
        """Standardise inputs with the mean and std of ``features`` [N, in_dim] (training frames)."""
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(features.std(dim=0).clamp_min(1e-6))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, T, in_dim] -> [B, T, d_model]
        if x.dim() != 3 or x.shape[-1] != self.config.in_dim:
            raise ValueError(f"expected [B, T, {self.config.in_dim}] frame features, got {tuple(x.shape)}")
        T = x.shape[1]
        if T > self.config.max_frames:
            raise ValueError(f"{T} frames, the head was built for at most max_frames={self.config.max_frames}")
        x = (x - self.feature_mean) / self.feature_std
        h = self.in_proj(x) + self.position.weight[:T]
        return self.norm(self.encoder(self.dropout(h)))

    def regress(self, h: torch.Tensor) -> torch.Tensor:
        # h: [B, T, d_model] -> [B, T, 2]
        h = self.dropout(h)
        return torch.cat([self.valence_head(h), self.arousal_head(h)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, T, in_dim] -> [B, T, 2]
        return self.regress(self.encode(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, T, in_dim] -> [B, proj_dim], unit length
        return F.normalize(self.projector(self.encode(x).mean(dim=1)), dim=-1)

    @torch.no_grad()
    def mc_samples(self, x: torch.Tensor, n_samples: int | None = None) -> torch.Tensor:
        """[n, B, T, 2] predictions with dropout active (MC dropout)."""
        n = self.config.n_samples if n_samples is None else n_samples
        if n < 2:
            raise ValueError(f"MC dropout needs n_samples >= 2 for a variance, got {n}")
        was_training = self.training
        self.train(True)  # no BatchNorm in the head: train mode only switches dropout on
        try:
            return torch.stack([self(x) for _ in range(n)])
        finally:
            self.train(was_training)

    def mc_predict(self, x: torch.Tensor, n_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per frame: (mean [B, T, 2], unbiased variance [B, T, 2]) over MC-dropout passes."""
        s = self.mc_samples(x, n_samples)
        return s.mean(dim=0), s.var(dim=0)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)

    @property
    def base_weights_id(self) -> str | None:
        return None


# --------------------------------------------------------------------------- Path A


@dataclass
class TemporalCLIPConfig:
    clip_model: str = "openai/clip-vit-base-patch32"  # hub name or local directory
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: tuple = ("q_proj", "v_proj")
    head: TemporalHeadConfig = field(default_factory=TemporalHeadConfig)

    def __post_init__(self):
        if isinstance(self.head, dict):  # from config.json
            self.head = TemporalHeadConfig(**self.head)
        self.lora_targets = tuple(self.lora_targets)


def _fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@register("temporal_va_clip", TemporalCLIPConfig)
class TemporalCLIPVA(nn.Module):
    """[B, T, 3, S, S] frames in [0, 1] -> CLIP + LoRA per frame -> temporal head -> [B, T, 2]."""

    def __init__(self, config: TemporalCLIPConfig):
        super().__init__()
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:
            raise UserError("Path A (CLIP + LoRA) needs peft: pip install peft") from None
        self.config = config
        clip = _load_clip(config.clip_model)
        proj = clip.config.projection_dim
        if config.head.in_dim != proj:
            raise UserError(f"head in_dim={config.head.in_dim} but CLIP {config.clip_model!r} has projection_dim={proj}")
        self.image_size = int(clip.config.vision_config.image_size)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=list(config.lora_targets), bias="none")
        # only the image tower is kept; inject_adapter_in_model freezes everything but the adapters
        self.vision = inject_adapter_in_model(lora, clip.vision_model)
        self.projection = clip.visual_projection
        for p in self.projection.parameters():
            p.requires_grad = False
        self.head = TemporalVAHead(config.head)
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self._frozen_keys = frozenset(
            k for k, p in self.named_parameters() if not p.requires_grad
        ) | frozenset(k for k, _ in self.named_buffers() if k in self.state_dict())
        self.base_weights_id = _fingerprint({k: v for k, v in self.state_dict().items() if k in self._frozen_keys})
        self.train(False)

    def train(self, mode: bool = True) -> "TemporalCLIPVA":
        super().train(mode)
        self.projection.train(False)
        return self

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.vision.named_parameters() if "lora_" in n]

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: [B, T, 3, S, S] in [0, 1] -> [B, T, projection_dim]
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"expected frames [B, T, 3, S, S], got {tuple(frames.shape)}")
        B, T = frames.shape[:2]
        x = (frames.flatten(0, 1) - self.pixel_mean) / self.pixel_std  # [B*T, 3, S, S]
        pooled = self.vision(pixel_values=x).pooler_output  # [B*T, hidden]
        return self.projection(pooled).view(B, T, -1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: [B, T, 3, S, S] -> [B, T, 2]
        return self.head(self.frame_features(frames))

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: [B, T, 3, S, S] -> [B, proj_dim], unit length
        return self.head.embed(self.frame_features(frames))

    @torch.no_grad()
    def mc_samples(self, frames: torch.Tensor, n_samples: int | None = None) -> torch.Tensor:
        """[n, B, T, 2]: the encoder once in eval mode, the head's dropout sampled n times."""
        was_training = self.training
        self.train(False)
        try:
            feats = self.frame_features(frames)
        finally:
            self.train(was_training)
        return self.head.mc_samples(feats, n_samples)

    def mc_predict(self, frames: torch.Tensor, n_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.mc_samples(frames, n_samples)
        return s.mean(dim=0), s.var(dim=0)

    def param_groups(self, lr: float, lora_lr: float = 1e-4) -> list[dict]:
        """Head at ``lr``, LoRA adapters at ``lora_lr``; CLIP's own weights stay frozen."""
        return [{"params": list(self.head.parameters()), "lr": lr},
                {"params": self.lora_parameters(), "lr": lora_lr}]

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The tensors that training changes (LoRA + head), not CLIP's frozen weights."""
        return {k: v for k, v in self.state_dict().items() if k not in self._frozen_keys}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = set(missing) - self._frozen_keys
        if missing or unexpected:
            raise UserError(
                f"checkpoint does not fit this model (missing: {', '.join(sorted(missing)[:5]) or '-'}; "
                f"unexpected: {', '.join(sorted(unexpected)[:5]) or '-'})"
            )


# --------------------------------------------------------------------------- logic plug-in


def clip_va(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MC samples [n, B, T, 2] -> per clip (mean [B, 2], variance over passes of the frame mean [B, 2])."""
    if samples.dim() != 4 or samples.shape[-1] != 2 or samples.shape[0] < 2:
        raise ValueError(f"expected MC samples [n >= 2, B, T, 2], got {tuple(samples.shape)}")
    per_pass = samples.mean(dim=2)  # [n, B, 2]: the clip's prediction in each pass
    return per_pass.mean(dim=0), per_pass.var(dim=0)


def clip_va_predicate_input(model: nn.Module, x: torch.Tensor, n_samples: int | None = None) -> torch.Tensor:
    """[B, 4] = (mean_v, mean_a, var_v, var_a) per clip for the ``va_valence``/``va_arousal`` adapters.

    ``x`` is what ``model`` takes: [B, T, D] features (head) or [B, T, 3, S, S] frames (CLIP).
    """
    return va_predicate_input(*clip_va(model.mc_samples(x, n_samples)))


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(model: nn.Module, directory: str | os.PathLike, trainer: dict | None = None) -> Path:
    """``config.json`` + ``weights.safetensors`` (+ ``trainer.pt``: optimizer, epoch, history) atomically.

    ``trainer.pt`` is written first and ``config.json`` last, so a directory with
    a ``config.json`` always has weights that belong to it.
    """
    from safetensors.torch import save

    directory = Path(directory)
    if trainer is not None:
        buf = io.BytesIO()
        torch.save(trainer, buf)
        atomic_write_bytes(directory / TRAINER_FILE, buf.getvalue())
    state = {k: v.detach().contiguous().cpu() for k, v in model.checkpoint_state().items()}
    atomic_write_bytes(directory / "weights.safetensors", save(state))
    meta = {"network": model.registry_name, "config": dataclasses.asdict(model.config),
            "base_weights": model.base_weights_id}
    atomic_write_bytes(directory / "config.json", json.dumps(meta, indent=2).encode())
    return directory


def load_checkpoint(directory: str | os.PathLike, map_location: str = "cpu",
                    with_trainer: bool = False):
    """The model saved by :func:`save_checkpoint` (and its trainer state when ``with_trainer``)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    try:
        model, meta = build_from_checkpoint(directory)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    if meta.get("base_weights") != model.base_weights_id:
        raise UserError(
            f"{directory} was trained on other frozen CLIP weights ({meta.get('base_weights')}) than "
            f"{meta['config'].get('clip_model')!r} has now ({model.base_weights_id})"
        )
    model.load_checkpoint_state(load_file(str(directory / "weights.safetensors"), device=map_location))
    if not with_trainer:
        return model
    trainer_path = directory / TRAINER_FILE
    trainer = torch.load(trainer_path, map_location=map_location, weights_only=True) if trainer_path.is_file() else None
    return model, trainer

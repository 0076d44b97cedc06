"""The training recipe of the multimodal fusion net (source 003), on cached frozen features.

The source trains :class:`~neural.multimodal.MultimodalFusionNet` with

* class-weighted cross-entropy (inverse class frequency) with label smoothing,
  one per head, summed -- :func:`class_weights`, :func:`recipe_loss`;
* differential learning rates: text / video / audio encoder (their trainable
  projections), fusion layer, heads -- :func:`param_groups`, :func:`make_optimizer`;
* gradient clipping -- :func:`clip_gradients`;
* ReduceLROnPlateau on the validation loss -- :func:`make_scheduler`;
* accuracy and weighted precision per head, logged to TensorBoard --
  :func:`head_metrics`, :func:`neural.multimodal_training.train_fusion`.

The frozen encoders (BERT-family text model, R3D-18 trunk, audio conv stack) do
not learn, so :func:`~neural.multimodal_training.train_fusion` never runs them: it trains
``net.forward_features`` on ``net.frozen_features(...)`` computed once per clip
(``[N, F]``, see :mod:`neural.multimodal`): an epoch on 2,000 clips (batch 32,
plus 500 validation clips) takes about 0.3 s of one CPU core.

The optimizer, scheduler, clipping and loss are separate functions so that the
``joint`` regime (logic + networks) reuses the same optimizer/scheduler/clipping
with the logic's loss instead of :func:`recipe_loss`.

Defaults: the learning rates are the source's (section 6: 8e-6 text, 8e-5 video
and audio, 5e-4 fusion and heads). The source names label smoothing, clipping and
the plateau scheduler without values; the defaults here (smoothing 0.05, clip
norm 1.0, factor 0.1, patience 2, weight decay 1e-5) are those of the public
training code the source describes. AdamW instead of the source's Adam so that
the weight decay is decoupled from the adaptive step.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neural.common import UserError, strict_config
from neural.multimodal import HEADS

#: parameter groups of the differential learning rates, in optimizer order
GROUPS: tuple[str, ...] = ("text", "video", "audio", "fusion", "heads")


class RecipeConfigError(UserError, ValueError):
    """An invalid multimodal training configuration."""


@dataclass
class RecipeConfig:
    """Every switch of the fusion-net recipe; saved next to the results of a run."""

    epochs: int = 20
    batch_size: int = 32
    # differential learning rates (the source's values); frozen parameters get none
    lr_text: float = 8e-6  # text projection (BERT frozen)
    lr_video: float = 8e-5  # video fc (R3D-18 trunk frozen)
    lr_audio: float = 8e-5  # audio projection (conv stack frozen)
    lr_fusion: float = 5e-4
    lr_heads: float = 5e-4  # emotion and sentiment classifiers
    weight_decay: float = 1e-5  # AdamW, every group
    class_weighted: bool = True  # inverse-frequency class weights in both heads' CE
    label_smoothing: float = 0.05
    grad_clip_norm: float | None = 1.0  # max global L2 norm; None: no clipping
    plateau_factor: float = 0.1  # ReduceLROnPlateau on the validation loss
    plateau_patience: int = 2
    seed: int = 0  # shuffling and dropout
    #: torch intra-op threads while training on CPU (restored afterwards; None: leave
    #: torch's setting). The fusion MLP's batches are too small for threads to pay:
    #: measured on 2 busy cores, 1 thread was as fast as 2 in wall time at a third of
    #: the CPU; one thread also keeps the numbers independent of the core count.
    torch_threads: int | None = 1

    def __post_init__(self) -> None:
        self.validate()

    def lr(self, group: str) -> float:
        """The learning rate of parameter group ``group`` (one of :data:`GROUPS`)."""
        if group not in GROUPS:
            raise ValueError(f"unknown parameter group {group!r}; known: {', '.join(GROUPS)}")
        return getattr(self, f"lr_{group}")

    def validate(self) -> None:
        def bad(msg: str) -> RecipeConfigError:
            return RecipeConfigError(f"multimodal recipe config: {msg}")

        if self.epochs < 1:
            raise bad(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise bad(f"batch_size must be >= 2 (the fusion layer has BatchNorm), got {self.batch_size}")
        for group in GROUPS:
            if not self.lr(group) > 0:
                raise bad(f"lr_{group} must be > 0, got {self.lr(group)}")
        if self.weight_decay < 0:
            raise bad(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise bad(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise bad(f"grad_clip_norm must be > 0 (or None to turn clipping off), got {self.grad_clip_norm}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise bad(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.plateau_patience < 0:
            raise bad(f"plateau_patience must be >= 0, got {self.plateau_patience}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise bad(f"torch_threads must be >= 1 (or None), got {self.torch_threads}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RecipeConfig:
        return strict_config(cls, values, RecipeConfigError, "multimodal recipe option(s)", "known")


# --------------------------------------------------------------------------- #
# loss
# --------------------------------------------------------------------------- #
def as_labels(labels, name: str = "labels") -> torch.Tensor:
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor, got {t.dtype} {tuple(t.shape)}")
    return t.long()


def class_weights(labels, n_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights [n_classes] (the source's ``1 / class_counts``).

    Normalised to mean 1 over the classes present: the weighted-mean
    cross-entropy does not depend on the scale, and mean 1 keeps per-sample
    weighted losses elsewhere (the logic's NLL) on the unweighted scale. A class
    with no example gets weight 0 instead of the source's ``1 / 0 = inf``: it is
    never a target in training, and an infinite weight would make every loss NaN.
    """
    from neural.facetrain.recipe import class_weights as _inverse_frequency

    y = as_labels(labels)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"class_weights: labels must lie in [0, {n_classes}), got [{int(y.min())}, {int(y.max())}]")
    counts = torch.bincount(y, minlength=n_classes).numpy()
    return _inverse_frequency(counts, alpha=1.0)


def head_loss(
    logits: torch.Tensor,  # [B, C]
    labels: torch.Tensor,  # [B]
    weight: torch.Tensor | None,  # [C] or None
    label_smoothing: float,
) -> torch.Tensor:
    """Class-weighted cross-entropy with label smoothing of one head (a scalar)."""
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=torch.float32)
    return F.cross_entropy(logits.float(), labels, weight=weight, label_smoothing=label_smoothing)


def head_losses(
    out: Mapping[str, torch.Tensor],
    emotion_labels: torch.Tensor,  # [B]
    sentiment_labels: torch.Tensor,  # [B]
    weights: Mapping[str, torch.Tensor] | None,
    cfg: RecipeConfig,
) -> dict[str, torch.Tensor]:
    """``{"emotion": loss, "sentiment": loss}`` from the net's output dict (its ``*_logits``)."""
    labels = {"emotion": emotion_labels, "sentiment": sentiment_labels}
    return {
        head: head_loss(out[f"{head}_logits"], labels[head], None if weights is None else weights[head],
                        cfg.label_smoothing)
        for head in HEADS
    }


def recipe_loss(
    out: Mapping[str, torch.Tensor],
    emotion_labels: torch.Tensor,  # [B]
    sentiment_labels: torch.Tensor,  # [B]
    weights: Mapping[str, torch.Tensor] | None,
    cfg: RecipeConfig,
) -> torch.Tensor:
    """The source's training loss: emotion CE + sentiment CE (each class-weighted and smoothed).

    ``out`` is the dict of ``forward``/``forward_features``; ``weights`` maps
    ``"emotion"``/``"sentiment"`` to :func:`class_weights` (``None``: unweighted).
    """
    parts = head_losses(out, emotion_labels, sentiment_labels, weights, cfg)
    return parts["emotion"] + parts["sentiment"]


# --------------------------------------------------------------------------- #
# metrics
# --------------------------------------------------------------------------- #
def head_metrics(probs: torch.Tensor, labels) -> dict[str, float]:
    """Accuracy and weighted precision (sklearn) of one head's ``probs`` (or logits) [N, C]."""
    from sklearn.metrics import accuracy_score, precision_score

    y_true = as_labels(labels).cpu().numpy()
    y_pred = probs.detach().argmax(dim=-1).cpu().numpy()
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_precision": float(precision_score(y_true, y_pred, average="weighted", zero_division=0)),
    }


# --------------------------------------------------------------------------- #
# optimisation: groups, optimizer, scheduler, clipping
# --------------------------------------------------------------------------- #
def _group_modules(net: nn.Module) -> dict[str, list[nn.Module]]:
    # The source's grouping: whole encoders (only their trainable parameters
    # survive the filter below), fusion layer, both classifiers.
    return {
        "text": [net.text_encoder],
        "video": [net.video_encoder],
        "audio": [net.audio_encoder],
        "fusion": [net.fusion_layer],
        "heads": [net.emotion_classifier, net.sentiment_classifier],
    }


def param_groups(net: nn.Module, cfg: RecipeConfig) -> list[dict]:
    """AdamW parameter groups with the differential learning rates: ``[{"name", "params", "lr"}]``.

    Frozen parameters (``requires_grad=False``) are left out; every trainable
    parameter of ``net`` is in exactly one group (checked: a trainable parameter
    outside the known modules raises). Empty groups are dropped.
    """
    groups, seen = [], set()
    for name, modules in _group_modules(net).items():
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"name": name, "params": params, "lr": cfg.lr(name)})
    stray = [n for n, p in net.named_parameters() if p.requires_grad and id(p) not in seen]
    if stray:
        raise ValueError(f"trainable parameters outside the recipe's groups {GROUPS}: {stray[:5]}")
    return groups


def make_optimizer(net: nn.Module, cfg: RecipeConfig, extra_groups: Iterable[dict] = ()) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (plus ``extra_groups``, e.g. the logic's rule parameters)."""
    groups = param_groups(net, cfg) + [dict(g) for g in extra_groups]
    if not groups:
        raise ValueError("make_optimizer: the network has no trainable parameter")
    # foreach: one fused kernel per op across tensors (torch only defaults to it on CUDA)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, foreach=True)


def make_scheduler(opt: torch.optim.Optimizer, cfg: RecipeConfig) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """ReduceLROnPlateau on a loss (``mode="min"``): call ``sched.step(val_loss)`` once per epoch."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )


def clip_gradients(params: nn.Module | Iterable[torch.Tensor], cfg: RecipeConfig) -> float:
    """Clip the global L2 gradient norm to ``cfg.grad_clip_norm``; returns the norm before clipping."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    max_norm = cfg.grad_clip_norm if cfg.grad_clip_norm is not None else float("inf")
    return float(nn.utils.clip_grad_norm_(params, max_norm))

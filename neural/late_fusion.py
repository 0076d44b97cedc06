"""Purely neural late-fusion baseline on the same per-source outputs as the logic.

Input: the scene distribution [B, 7] and up to three face distributions
[B, 3, 7] with NaN rows where a face is absent, plus the presence mask [B, 3].

Masking is explicit: an absent face contributes a row of zeros (selected with
``torch.where``, so its NaNs never reach the arithmetic or the gradient) and the
mask itself is an input feature, so the network can tell "no face" from "a face
with a flat distribution". A present face whose row is not finite raises: that
would be a silent dummy.

Features [B, 7 + 3*7 + 3] -> Linear(hidden) -> ReLU -> Linear(7) -> softmax.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neural.registry import register
from neural.common import MAX_FACES, N_EMOTIONS


@dataclass
class LateFusionConfig:
    n_classes: int = N_EMOTIONS
    max_faces: int = MAX_FACES
    hidden: int = 64


@register("late_fusion", LateFusionConfig)
class LateFusionNet(nn.Module):
    """(scene_probs [B, 7], face_probs [B, 3, 7], face_mask [B, 3]) -> probs [B, 7]."""

    def __init__(self, config: LateFusionConfig):
        super().__init__()
        self.config = config
        k, f = config.n_classes, config.max_faces
        self.net = nn.Sequential(nn.Linear(k + f * k + f, config.hidden), nn.ReLU(), nn.Linear(config.hidden, k))

    def features(self, scene_probs: torch.Tensor, face_probs: torch.Tensor, face_mask: torch.Tensor) -> torch.Tensor:
        k, f = self.config.n_classes, self.config.max_faces
        b = scene_probs.shape[0]
        if scene_probs.shape != (b, k) or face_probs.shape != (b, f, k) or face_mask.shape != (b, f):
            raise ValueError(
                f"expected scene [B, {k}], faces [B, {f}, {k}], mask [B, {f}]; got "
                f"{tuple(scene_probs.shape)}, {tuple(face_probs.shape)}, {tuple(face_mask.shape)}"
            )
        mask = face_mask.bool()
        present_ok = torch.isfinite(face_probs).all(dim=-1) | ~mask  # [B, 3]
        if not bool(present_ok.all()):
            raise ValueError("a face marked present has non-finite probabilities")
        faces = torch.where(mask[..., None], face_probs, torch.zeros((), dtype=face_probs.dtype))  # [B, 3, 7]
        return torch.cat([scene_probs, faces.flatten(1), mask.to(scene_probs.dtype)], dim=1)  # [B, 31]

    def logits(self, scene_probs: torch.Tensor, face_probs: torch.Tensor, face_mask: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(scene_probs, face_probs, face_mask))  # [B, 7]

    def forward(self, scene_probs: torch.Tensor, face_probs: torch.Tensor, face_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(scene_probs, face_probs, face_mask), dim=-1)  # [B, 7]

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": list(self.parameters()), "lr": lr}]

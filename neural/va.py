"""Valence/arousal regressor with MC-dropout uncertainty (source 000) and bin adapters.

``VARegressor`` is the source's ``SceneEmotionRegressor``: frozen backbone
features -> one shared dropout -> two heads (valence, arousal), each
``Linear(d, 256) -> LayerNorm -> ReLU -> dropout -> Linear(256, 128) -> LayerNorm
-> ReLU -> dropout -> Linear(128, 1)``, the same dropout module reused as in the
source. Backbones:

* ``clip``: ``CLIPModel.from_pretrained(clip_model).get_image_features`` on
  CLIP ``pixel_values`` [B, 3, 224, 224]; ``feature_dim`` must equal the model's
  ``projection_dim`` (512 for ViT-B/32);
* ``scene``: no backbone module; the input is the cached 512-d scene feature
  (``neural.scene.SceneBackbone``), for machines without CLIP weights.

The bin adapters ``va_valence`` / ``va_arousal`` turn (mean, variance) into a
distribution over three bins for the logic: the Gaussian mass of
N(mean, var + min_std^2) in (-inf, e0], (e0, e1], (e1, inf).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from neural.common import UserError
from neural.registry import register

VALENCE_BINS: tuple[str, ...] = ("negative", "neutral", "positive")
AROUSAL_BINS: tuple[str, ...] = ("low", "medium", "high")
BACKBONES = ("scene", "clip")


@dataclass
class VARegressorConfig:
    backbone: str = "scene"  # "scene" (cached 512-d features) | "clip" (pixel_values)
    clip_model: str = "openai/clip-vit-base-patch32"  # hub name or local directory
    feature_dim: int = 512
    dropout: float = 0.3
    n_samples: int = 5  # MC-dropout samples
    # No CLIP fine-tuning option: the harness trains on cached CLIP embeddings (one
    # ViT pass per image, ever); unfreezing would need pixels through the ViT every
    # epoch. The backbone stays frozen, as in the source's first phase.


def _load_clip(name_or_path: str):
    try:
        from transformers import CLIPModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        raise UserError("the clip backbone needs transformers: pip install transformers") from None
    try:
        return CLIPModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot load CLIP model {name_or_path!r} ({str(exc).splitlines()[0]}); give a local "
            "directory with clip_model=..., or use backbone='scene' on machines without CLIP weights"
        ) from None


@register("va_regressor", VARegressorConfig)
class VARegressor(nn.Module):
    """Features (or CLIP pixel_values) -> [B, 2] = (valence, arousal)."""

    def __init__(self, config: VARegressorConfig):
        super().__init__()
        if config.backbone not in BACKBONES:
            raise UserError(f"unknown VA backbone {config.backbone!r}; known: {', '.join(BACKBONES)}")
        self.config = config
        self.backbone = None
        if config.backbone == "clip":
            self.backbone = _load_clip(config.clip_model)
            proj = self.backbone.config.projection_dim
            if proj != config.feature_dim:
                raise UserError(
                    f"feature_dim={config.feature_dim} but CLIP model {config.clip_model!r} has "
                    f"projection_dim={proj}; set feature_dim={proj}"
                )
            for p in self.backbone.parameters():
                p.requires_grad = False
        # Input standardisation, fitted on the training features (fit_input_scaling) and
        # saved with the weights: backbone features (a random-init ResNet's especially)
        # sit far from zero with small spread, and the signal is in that spread.
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))
        self.dropout = nn.Dropout(config.dropout)
        self.valence_head = self._head()
        self.arousal_head = self._head()
        self.train(False)

    def _head(self) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(self.config.feature_dim, 256), nn.LayerNorm(256), nn.ReLU(), self.dropout,
            nn.Linear(256, 128), nn.LayerNorm(128), nn.ReLU(), self.dropout,
            nn.Linear(128, 1),
        )

    def train(self, mode: bool = True) -> "VARegressor":
        super().train(mode)
        if self.backbone is not None:
            self.backbone.train(False)
        return self

    @torch.no_grad()
    def fit_input_scaling(self, feats: torch.Tensor) -> None:
        """Standardise inputs with the mean and std of ``feats`` [N, d] (backbone features)."""
        self.feature_mean.copy_(feats.mean(0))
        self.feature_std.copy_(feats.std(0).clamp_min(1e-6) if len(feats) > 1 else torch.ones_like(feats[0]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, d] cached features or [B, 3, H, W] pixel_values -> [B, d] backbone features."""
        if self.backbone is None:
            if x.dim() != 2 or x.shape[1] != self.config.feature_dim:
                raise ValueError(
                    f"VARegressor(backbone='scene') expects [B, {self.config.feature_dim}] features, "
                    f"got {tuple(x.shape)}"
                )
            return x
        out = self.backbone.get_image_features(pixel_values=x)
        # transformers 5 returns a model output whose pooler_output is the projection
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def _standardised(self, x: torch.Tensor) -> torch.Tensor:
        return (self.features(x) - self.feature_mean) / self.feature_std

    def _heads(self, feats: torch.Tensor) -> torch.Tensor:
        # feats: [B, d] -> [B, 2]
        feats = self.dropout(feats)
        return torch.cat([self.valence_head(feats), self.arousal_head(feats)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, 512] features or [B, 3, H, W] pixel_values -> [B, 2] (valence, arousal)
        return self._heads(self._standardised(x))

    @torch.no_grad()
    def mc_predict(self, x: torch.Tensor, n_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """MC dropout: (mean [B, 2], unbiased variance [B, 2]) over ``n_samples`` passes.

        Dropout is active in the heads whatever the module's mode; the frozen
        backbone runs once in eval mode (it is deterministic there, so sampling
        only the dropout path is the same distribution at 1/n the cost).
        """
        return self.mc_predict_with_grad(x, n_samples)

    def mc_predict_with_grad(self, x: torch.Tensor, n_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`mc_predict` keeping the autograd graph: the mean and the variance of
        the ``n`` dropout passes are differentiable in the heads' parameters (each
        pass is an ordinary dropout forward), so a loss on the Gaussian bin mass
        trains the heads through both."""
        n = self.config.n_samples if n_samples is None else n_samples
        if n < 2:
            raise ValueError(f"mc_predict needs n_samples >= 2 for a variance, got {n}")
        was_training = self.training
        feats = self._standardised(x)
        self.dropout.train(True)
        try:
            preds = torch.stack([self._heads(feats) for _ in range(n)])  # [n, B, 2]
        finally:
            self.train(was_training)
        return preds.mean(dim=0), preds.var(dim=0)

    def param_groups(self, lr: float) -> list[dict]:
        """The two heads at ``lr`` (the CLIP backbone, when there is one, stays frozen)."""
        return [{"params": list(self.valence_head.parameters()) + list(self.arousal_head.parameters()), "lr": lr}]


# --- bin adapters ----------------------------------------------------------------

@dataclass
class VABinsConfig:
    edges: tuple = (-1 / 3, 1 / 3)  # two increasing bin edges in normalised units
    min_std: float = 0.05  # floor on the predictive std: var + min_std^2

    def __post_init__(self):
        self.edges = tuple(float(e) for e in self.edges)  # JSON gives a list back
        if len(self.edges) != 2 or not self.edges[0] < self.edges[1] or not all(map(math.isfinite, self.edges)):
            raise UserError(f"VA bin edges must be two increasing finite numbers, got {self.edges}")
        if not self.min_std > 0:
            raise UserError(f"min_std must be > 0, got {self.min_std}")


class _VABins(nn.Module):
    """[B, 4] (mean_v, mean_a, var_v, var_a) -> [B, 3] Gaussian mass per bin."""

    column: int  # 0 valence, 1 arousal
    bins: tuple[str, ...]

    def __init__(self, config: VABinsConfig):
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, 4] -> [B, 3], rows sum to 1
        if x.dim() != 2 or x.shape[1] != 4:
            raise ValueError(f"expected [B, 4] = (mean_v, mean_a, var_v, var_a), got {tuple(x.shape)}")
        mean = x[:, self.column]
        std = torch.sqrt(x[:, 2 + self.column].clamp_min(0) + self.config.min_std ** 2)
        edges = torch.tensor(self.config.edges, dtype=x.dtype, device=x.device)
        cdf = torch.special.ndtr((edges[None, :] - mean[:, None]) / std[:, None])  # [B, 2]
        return torch.stack([cdf[:, 0], cdf[:, 1] - cdf[:, 0], 1 - cdf[:, 1]], dim=1)

    def param_groups(self, lr: float) -> list[dict]:
        """Parameter-free: nothing to optimise."""
        return []


@register("va_valence", VABinsConfig)
class ValenceBins(_VABins):
    column = 0
    bins = VALENCE_BINS


@register("va_arousal", VABinsConfig)
class ArousalBins(_VABins):
    column = 1
    bins = AROUSAL_BINS


def va_predicate_input(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """(mean [B, 2], var [B, 2]) from :meth:`VARegressor.mc_predict` -> [B, 4] adapter input."""
    if mean.shape != var.shape or mean.dim() != 2 or mean.shape[1] != 2:
        raise ValueError(f"expected mean and var of shape [B, 2], got {tuple(mean.shape)} and {tuple(var.shape)}")
    return torch.cat([mean, var], dim=1)

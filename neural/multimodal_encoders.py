"""The three encoders of the multimodal fusion net (source 003), each a frozen
pretrained trunk under a trainable projection to 128 dimensions:

| encoder       | input                                   | frozen trunk                  | output   |
|---------------|-----------------------------------------|-------------------------------|----------|
| text          | input_ids, attention_mask [B, seq_len]  | BERT-family model (pooled)    | [B, 128] |
| video         | video [B, 3, T, H, W]                   | R3D-18 (all but its new fc)   | [B, 128] |
| audio         | log-mel [B, 64, L] (or [B, 1, 64, L])   | conv stack                    | [B, 128] |

:class:`neural.multimodal.MultimodalFusionNet` fuses them.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from neural.common import UserError
from neural.provenance import DOMAIN_CLIPS, Provenance

log = logging.getLogger(__name__)

PROJ_DIM = 128
MIN_AUDIO_FRAMES = 8  # conv3 -> pool2 -> conv3 needs at least 8 frames


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad = False
    module.train(False)


class TextEncoder(nn.Module):
    """Frozen BERT pooled output [B, hidden] -> Linear -> [B, 128]."""

    def __init__(self, name_or_path: str):
        super().__init__()
        try:
            from transformers import AutoModel
        except ImportError:  # pragma: no cover - transformers is a dependency
            raise UserError("the text encoder needs transformers: pip install transformers") from None
        try:
            self.bert = AutoModel.from_pretrained(name_or_path)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"cannot load text model {name_or_path!r} ({str(exc).splitlines()[0]}); offline, use "
                "text_model=str(neural.multimodal.packaged_minilm_path()) or another local BERT directory"
            ) from None
        _freeze(self.bert)
        self.provenance = Provenance.pretrained_weights(
            "text_model", f"text encoder {Path(str(name_or_path)).name}", "text", None)
        self.projection = nn.Linear(self.bert.config.hidden_size, PROJ_DIM)

    @property
    def feature_dim(self) -> int:
        return self.bert.config.hidden_size

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Frozen part: [B, seq_len] x2 -> pooled [CLS] output [B, hidden]."""
        pooled = self.bert(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        if pooled is None:
            raise UserError(f"text model {type(self.bert).__name__} has no pooler; use a BERT-family model")
        return pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # [B, seq_len] x2 -> pooled [B, hidden] -> [B, 128]
        return self.projection(self.features(input_ids, attention_mask))


class VideoEncoder(nn.Module):
    """Frozen R3D-18 trunk with a trainable fc: [B, 3, T, H, W] -> [B, 128]."""

    feature_dim = 512  # the R3D-18 trunk's pooled output (``fc.in_features``)

    def __init__(self, weights: str | None):
        super().__init__()
        from torchvision.models.video import r3d_18

        self.backbone = r3d_18(weights=None)
        if weights:
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise UserError(f"cannot load video weights {weights} ({type(exc).__name__}: {exc})") from None
            state = {k: v for k, v in state.get("state_dict", state).items() if not k.startswith("fc.")}
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise UserError(f"{weights}: not an r3d_18 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
        else:
            msg = ("MultimodalFusionNet: NO VIDEO WEIGHTS given -- the frozen R3D-18 trunk is a random init; "
                   "video features carry no video knowledge. Pass video_weights=<r3d_18 state dict file> for "
                   "real video features")
            warnings.warn(msg, UserWarning, stacklevel=3)
            log.warning(msg)
        self.provenance = (Provenance.pretrained_weights("kinetics400", f"R3D-18 Kinetics-400 ({Path(weights).name})",
                                                         DOMAIN_CLIPS, None)
                           if weights else Provenance.random_init())
        _freeze(self.backbone)
        num_features = self.backbone.fc.in_features  # 512
        self.backbone.fc = nn.Sequential(nn.Linear(num_features, PROJ_DIM), nn.ReLU(), nn.Dropout(0.2))

    def frozen_modules(self) -> list[nn.Module]:
        return [m for name, m in self.backbone.named_children() if name != "fc"]

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """Frozen trunk: [B, 3, T, H, W] -> pooled [B, 512] (torchvision's VideoResNet.forward up to ``fc``)."""
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, T, H, W], got {tuple(video.shape)}")
        b = self.backbone
        x = b.layer4(b.layer3(b.layer2(b.layer1(b.stem(video)))))
        return b.avgpool(x).flatten(1)  # [B, 512, 1, 1, 1] -> [B, 512]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        # [B, 3, T, H, W] -> [B, 512] -> fc -> [B, 128]
        return self.backbone.fc(self.features(video))


class AudioEncoder(nn.Module):
    """Frozen Conv1d stack on log-mel [B, 64, L] -> [B, 128, 1] -> projection [B, 128]."""

    feature_dim = 128  # channels of the last conv, average-pooled over time

    def __init__(self, n_mels: int):
        super().__init__()
        self.n_mels = n_mels
        self.conv_layers = nn.Sequential(
            nn.Conv1d(n_mels, 64, 3), nn.BatchNorm1d(64), nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(64, 128, 3), nn.BatchNorm1d(128), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
        )
        _freeze(self.conv_layers)
        self.provenance = Provenance.random_init()  # the source's audio stack has no published weights
        # frozen at a random init, like a scene backbone without Places365 weights: say so as loudly
        msg = ("MultimodalFusionNet: NO AUDIO WEIGHTS exist for the source's audio conv stack -- it is frozen at "
               "a random init; audio features carry no audio knowledge (only the projection after it learns)")
        warnings.warn(msg, UserWarning, stacklevel=3)
        log.warning(msg)
        self.projection = nn.Sequential(nn.Linear(128, PROJ_DIM), nn.ReLU(), nn.Dropout(0.2))

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Frozen conv stack: log-mel [B, 64, L] (or [B, 1, 64, L]) -> [B, 128]."""
        # [B, 1, 64, L] -> [B, 64, L] (the source's layout) ; [B, 64, L] as is
        if audio.dim() == 4 and audio.shape[1] == 1:
            audio = audio.squeeze(1)
        if audio.dim() != 3 or audio.shape[1] != self.n_mels or audio.shape[2] < MIN_AUDIO_FRAMES:
            raise ValueError(
                f"audio must be log-mel [B, {self.n_mels}, L>={MIN_AUDIO_FRAMES}], got {tuple(audio.shape)}"
            )
        return self.conv_layers(audio).squeeze(-1)  # [B, 128, 1] -> [B, 128]

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        # [B, 64, L] -> [B, 128] -> projection -> [B, 128]
        return self.projection(self.features(audio))

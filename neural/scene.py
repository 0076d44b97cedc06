"""Scene pipeline: a Places365 ResNet-18 without its classifier + Scene2EmotionNet.

``SceneBackbone`` gives a 512-d feature per image. It loads the published
Places365 checkpoint format (``resnet18_places365.pth.tar``: a dict whose
``state_dict`` has ``module.``-prefixed keys and a 365-class ``fc``) from a file
or an http(s) URL. Without weights it uses a seeded random init and says so
loudly: features are then reproducible but carry no scene knowledge.

The backbone is frozen by default. ``unfreeze_layer4=True`` makes the last
block trainable with its own learning rate (``layer4_lr``, 1e-5 as the seed
notes suggest); ``layer3_features`` / ``from_layer3`` split the forward pass so
a cache of layer3 maps makes that cheap. Frozen parts always run in eval mode
(their BatchNorm statistics never move); an unfrozen layer4 follows ``train()``.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from neural.common import N_EMOTIONS, UserError, sha256_file
from neural.image_input import IMAGENET_MEAN, IMAGENET_STD, scene_pixels  # noqa: F401 (re-exported)
from neural.provenance import DOMAIN_PHOTOS, Provenance
from neural.registry import register

log = logging.getLogger(__name__)

FEATURE_DIM = 512
LAYER3_CHANNELS = 256


class SceneWeightsError(UserError):
    """The scene backbone's weights could not be loaded."""


@dataclass
class SceneBackboneConfig:
    weights: str | None = None  # Places365 checkpoint: file path or http(s) URL
    seed: int = 0  # random init when weights is None
    unfreeze_layer4: bool = False
    layer4_lr: float = 1e-5


def _read_checkpoint(weights: str) -> tuple[object, str]:
    """(loaded checkpoint object, sha256 of its file) from a path or URL."""
    if weights.startswith(("http://", "https://")):
        from urllib.parse import urlparse

        from neural.common import cache_dir

        model_dir = cache_dir() / "hub"
        try:
            ckpt = torch.hub.load_state_dict_from_url(
                weights, model_dir=str(model_dir), map_location="cpu", weights_only=True,
                progress=False,
            )
        except Exception as exc:  # network errors come in many types
            raise SceneWeightsError(
                f"could not fetch scene weights from {weights} ({exc}); download the file "
                "and pass its path instead"
            ) from None
        path = model_dir / os.path.basename(urlparse(weights).path)
        return ckpt, sha256_file(path)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise SceneWeightsError(f"scene weights file not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]  # torch's messages run to many lines; one is enough
        raise SceneWeightsError(
            f"{path}: not a loadable torch checkpoint of tensors ({type(exc).__name__}: {first})"
        ) from None
    return ckpt, sha256_file(path)


def places365_backbone_state(ckpt: object, source: str) -> dict[str, torch.Tensor]:
    """Backbone state dict from a Places365 checkpoint (or a plain state dict).

    Strips ``module.`` prefixes (DataParallel) and drops the classifier ``fc.*``.
    """
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SceneWeightsError(f"{source}: no state_dict of tensors in this checkpoint")
    out = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if not key.startswith("fc."):
            out[key] = value
    return out


def backbone_provenance(weights: str | None, seed: int, weights_id: str | None = None) -> Provenance:
    """Provenance of the scene backbone: Places365 weights (``weights_id``: their
    sha256, as the cache manifest records it) or a seeded random init."""
    if not weights:
        return Provenance.random_init(seed)
    return Provenance.pretrained_weights("places365", f"Places365 ResNet-18 ({Path(str(weights)).name})",
                                         f"{DOMAIN_PHOTOS} (Places365 scenes)", weights_id)


@register("scene_backbone", SceneBackboneConfig)
class SceneBackbone(nn.Module):
    """ResNet-18 trunk: [B, 3, H, W] ImageNet-normalised -> [B, 512]."""

    def __init__(self, config: SceneBackboneConfig):
        super().__init__()
        from torchvision.models import resnet18

        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            net = resnet18(weights=None, num_classes=365)
        # keep torchvision's names (conv1, bn1, layer1..4) so checkpoints map 1:1
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.avgpool = net.avgpool

        if config.weights:
            ckpt, digest = _read_checkpoint(config.weights)
            state = places365_backbone_state(ckpt, config.weights)
            missing, unexpected = self.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise SceneWeightsError(
                    f"{config.weights}: not a ResNet-18 checkpoint "
                    f"(missing: {', '.join(missing[:5]) or '-'}; unexpected: {', '.join(unexpected[:5]) or '-'})"
                )
            self.weights_id = digest
        else:
            self.weights_id = f"random-init-seed{config.seed}"
            msg = (
                "SceneBackbone: NO PLACES365 WEIGHTS given -- using a random init "
                f"(seed {config.seed}); scene features carry no scene knowledge. Pass "
                "weights=<resnet18_places365.pth.tar path or URL> for real features."
            )
            warnings.warn(msg, UserWarning, stacklevel=2)
            log.warning(msg)

        self.provenance = backbone_provenance(config.weights, config.seed, self.weights_id)
        for p in self.parameters():
            p.requires_grad = False
        if config.unfreeze_layer4:
            for p in self.layer4.parameters():
                p.requires_grad = True
        self.train(False)

    def train(self, mode: bool = True) -> "SceneBackbone":
        super().train(mode)
        for name, child in self.named_children():
            if not (name == "layer4" and self.config.unfreeze_layer4):
                child.train(False)  # frozen parts keep their BatchNorm statistics
        return self

    def layer3_features(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, 3, H, W] -> [B, 256, H/16, W/16]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def from_layer3(self, f: torch.Tensor) -> torch.Tensor:
        # f: [B, 256, h, w] -> [B, 512]
        return torch.flatten(self.avgpool(self.layer4(f)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, 3, H, W] -> [B, 512]
        return self.from_layer3(self.layer3_features(x))

    def param_groups(self, lr: float | None = None) -> list[dict]:
        """Optimizer groups: layer4 at ``config.layer4_lr`` when unfrozen, else none.

        ``lr`` (the caller's base rate) is not used: the only trainable block has
        its own rate. It is accepted so every network offers ``param_groups(lr)``.
        """
        if not self.config.unfreeze_layer4:
            return []
        return [{"params": list(self.layer4.parameters()), "lr": self.config.layer4_lr}]


def preprocess(pil_image, size: int = 224) -> torch.Tensor:
    """A PIL image -> [3, size, size], resized (no crop) and ImageNet-normalised
    (:func:`neural.image_input.scene_pixels`, as a tensor)."""
    return torch.from_numpy(scene_pixels(pil_image, size))


@dataclass
class Scene2EmotionConfig:
    in_dim: int = FEATURE_DIM
    hidden: int = 64
    n_classes: int = N_EMOTIONS


@register("scene2emotion", Scene2EmotionConfig)
class Scene2EmotionNet(nn.Module):
    """Scene features [B, 512] -> Linear 64 -> ReLU -> Linear 7 -> softmax [B, 7]."""

    def __init__(self, config: Scene2EmotionConfig):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.in_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.n_classes)
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in_dim] -> [B, n_classes]
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, in_dim] -> probabilities [B, n_classes] (the logic consumes distributions)
        return torch.softmax(self.logits(x), dim=-1)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": list(self.parameters()), "lr": lr}]


def uniform_scene_head() -> Scene2EmotionNet:
    """A scene head that knows nothing, and says so: its last layer is zero, so
    it outputs softmax(0) = the uniform distribution over the emotions for any
    input, exactly. The untrained program (``emologic query --prior``) reads
    the scene through it, so a random backbone injects no noise and a photo is
    answered by the sources that know something, in proportion to their trust."""
    head = Scene2EmotionNet(Scene2EmotionConfig())
    last = head.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    head.provenance = Provenance("untrained", "no scene knowledge: untrained head (last layer zero), "
                                              "outputs the uniform distribution")
    return head.eval()

"""Backbone features of whole images: the frozen scene backbone and the VA backbone.

Both are batched and run under ``torch.inference_mode``. Each extractor has a
``weights_id`` that the cache records, so features of different weights never mix.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from PIL import Image

from neural.common import UserError


class SceneFeatures:
    """Scene backbone (``neural`` registry name ``scene_backbone``) on RGB images.

    ``__call__(images) -> {"scene": [B, 512], "scene_layer3": [B, 256, h, w] (optional)}``
    """

    def __init__(self, size: int = 128, weights: str | None = None, seed: int = 0, layer3: bool = False,
                 device: str = "cpu"):
        from neural.registry import get_network
        from neural.scene import preprocess

        self.size = int(size)
        self.layer3 = bool(layer3)
        self._preprocess = preprocess
        self.net = get_network("scene_backbone", weights=weights, seed=seed).eval()
        self.weights_id = str(self.net.weights_id)  # of the weights as loaded, before any move
        self.device = torch.device(device)
        self.net = self.net.to(self.device, memory_format=torch.channels_last)

    def __call__(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        x = torch.stack([self._preprocess(im, self.size) for im in images])  # [B, 3, S, S]
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = {"scene": self.net(x).float().contiguous()}  # [B, 512]
            if self.layer3:
                out["scene_layer3"] = self.net.layer3_features(x).float().contiguous()  # [B, 256, h, w]
        return {k: v.cpu() for k, v in out.items()}  # cached on disk: back to the CPU


def parameter_fingerprint(module: torch.nn.Module) -> str:
    """sha256 (16 hex digits) over a module's state dict: names and bytes."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class CLIPImageEmbeddings:
    """CLIP-the-model image embeddings (``transformers``) as valence/arousal features
    (named apart from anything "clip" in emologic, where a clip is a video clip).

    ``model`` is a hub name or a local directory of a ``CLIPModel`` with its
    image-processor config. The features are ``CLIPModel.get_image_features`` --
    the same ones ``neural.va.VARegressor(backbone="clip")`` computes from pixel
    values, so its heads can run on the cached features.
    ``__call__(images) -> [B, projection_dim]``.
    """

    def __init__(self, model: str, device: str = "cpu"):
        try:
            from transformers import CLIPImageProcessor, CLIPModel
        except ImportError as exc:
            raise UserError("va_backbone='clip' needs transformers: pip install transformers") from exc
        try:
            self.model = CLIPModel.from_pretrained(model).eval()
            self.processor = CLIPImageProcessor.from_pretrained(model)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"cannot load CLIP model {model!r} ({first}); give a local directory with clip_model"
            ) from None
        self.weights_id = f"clip:{model}:{parameter_fingerprint(self.model)}"
        self.device = torch.device(device)
        self.model = self.model.to(self.device)

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixel_values = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=pixel_values.to(self.device))
        # transformers 5 returns a model output whose pooler_output is the projection
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return out.float().cpu().contiguous()  # [B, D]

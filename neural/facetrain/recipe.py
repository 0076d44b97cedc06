"""The parts of the training recipe, each small and testable on its own.

* :func:`class_weights` -- inverse(freq ** alpha), normalised to mean 1;
* :class:`ModelEMA` -- exponential moving average of the weights;
* :func:`mix_batch` -- MixUp or CutMix (never both: the config forbids it);
* :func:`mixed_loss` -- cross-entropy with label smoothing and class weights on
  the two mixed targets;
* :func:`lr_factor` -- linear warm-up then cosine decay;
* :func:`set_backbone_trainable` -- the frozen-backbone warm-up.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def class_weights(counts, alpha: float) -> torch.Tensor:
    """``w_c = 1 / freq_c ** alpha`` over the classes present, normalised to mean 1.

    ``freq_c = count_c / total``. A class with no training example gets weight 0
    (it never is a target; giving it a weight would only matter through label
    smoothing). ``alpha = 0`` gives all present classes weight 1, ``alpha = 1``
    full inverse frequency.
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("class_weights: no class has a training example")
    freq = counts / counts.sum()
    w = np.zeros_like(freq)
    w[present] = freq[present] ** -alpha
    w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


class ModelEMA:
    """Shadow copy of a model whose floating-point state follows ``ema = d * ema + (1 - d) * w``.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates
    (TensorFlow's ``num_updates`` rule), so short runs are not dominated by the
    random initial weights. Integer buffers (``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        model_state = model.state_dict()
        for name, shadow in self.module.state_dict().items():
            value = model_state[name].detach()
            if shadow.dtype.is_floating_point:
                shadow.mul_(d).add_(value.to(shadow.dtype), alpha=1.0 - d)
            else:
                shadow.copy_(value)


def _rand_box(h: int, w: int, lam: float, gen: torch.Generator) -> tuple[int, int, int, int]:
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy = int(torch.randint(h, (1,), generator=gen))
    cx = int(torch.randint(w, (1,), generator=gen))
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    return y1, y2, x1, x2


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, mode: str, alpha: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """MixUp or CutMix of a batch ``x`` [B, C, H, W], ``y`` [B].

    Returns ``(mixed x, y_a, y_b, lam)``: the loss is ``lam * L(y_a) + (1 - lam) * L(y_b)``.
    ``mode`` is ``"mixup"`` or ``"cutmix"``; for CutMix ``lam`` is the exact
    fraction of pixels kept after clipping the box to the image.
    """
    lam = float(np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen))).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    if mode == "mixup":
        return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam
    if mode == "cutmix":
        h, w = x.shape[-2:]
        y1, y2, x1, x2 = _rand_box(h, w, lam, gen)
        mixed = x.clone()
        mixed[..., y1:y2, x1:x2] = x[perm][..., y1:y2, x1:x2]
        lam = 1.0 - (y2 - y1) * (x2 - x1) / float(h * w)
        return mixed, y, y[perm], lam
    raise ValueError(f"unknown mix mode {mode!r}; use mixup or cutmix")


def mixed_loss(
    logits: torch.Tensor,
    y_a: torch.Tensor,
    y_b: torch.Tensor | None = None,
    lam: float = 1.0,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)``, smoothed and class-weighted."""
    logits = logits.float()
    loss = F.cross_entropy(logits, y_a, weight=weight, label_smoothing=label_smoothing)
    if y_b is not None and lam < 1.0:
        loss = lam * loss + (1.0 - lam) * F.cross_entropy(logits, y_b, weight=weight, label_smoothing=label_smoothing)
    return loss


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rates at optimizer ``step`` (0-based).

    Linear warm-up from ``1 / warmup_steps`` to 1 over ``warmup_steps``, then
    cosine decay from 1 to ``min_ratio`` at ``total_steps``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_backbone_trainable(modules: list[nn.Module], trainable: bool) -> None:
    """Freeze or unfreeze the backbone: ``requires_grad`` and BatchNorm statistics.

    Frozen BatchNorm layers are switched to eval mode (call this after
    ``model.train()``) so that the warm-up leaves every backbone tensor --
    running statistics included -- exactly as it was.
    """
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(trainable)
        if not trainable:
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

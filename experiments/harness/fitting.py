"""Fitting a network on cached tensors in stage 0, and BatchNorm handling while a trained network trains on.

:func:`fit_classifier` is the one supervised loop of stage 0 (the scene head, the face net, the
networks of registered features); :func:`train_feature_head` is a classifier on a cached
whole-image feature -- the scene head, and any network of the program that reads a registered
feature (a plug-in's) -- trained and measured the same way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from experiments.metrics import classification_metrics
from neural.provenance import mark_trained
from neural.common import EMOTIONS


def seeded(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1000 + salt)


def train_mode(net: nn.Module, training: bool = True) -> nn.Module:
    """``net.train(training)`` with every BatchNorm kept in eval mode (statistics frozen).

    Used whenever a network that already has its BatchNorm statistics is trained
    further -- the FER2013 net fine-tuned in stage 0, every network trained through
    the logic. The affine parameters still learn; the statistics stay those of
    the data the network was made on (real faces for FER2013), so a short run on a
    new domain cannot drag them away, and a network gives the same output for a
    query whether it sees it in a batch (compiled engine) or alone (DeepProbLog).
    """
    net.train(training)
    for bn in batchnorms(net):
        bn.eval()
    return net


def fit_classifier(net, inputs, targets, epochs, lr, batch_size, seed, logits_fn, weights=None, augment=None,
                   freeze_bn=False, device="cpu"):
    # trains on ``device``, hands the network back on the CPU (where it is evaluated, saved and shared)
    net.to(device)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    g = seeded(seed, 17)
    train_mode(net) if freeze_bn else net.train()
    for _ in range(epochs):
        order = torch.randperm(len(targets), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = inputs[idx].to(device)
            if augment is not None:
                x = augment(x, g)
            loss = F.cross_entropy(logits_fn(x), targets[idx].to(device),
                                   weight=None if weights is None else weights.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    net.eval().cpu()


def batchnorms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> None:
    """Set BatchNorm running statistics to the exact mean/variance over ``inputs``.

    mini-XCEPTION's BatchNorm keeps Keras' momentum (0.01): after a short
    training run its running statistics are far from the data and the network
    is near chance in eval mode. A pass with a cumulative average fixes that.
    """
    bns = batchnorms(net)
    if not bns:
        return
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over all batches
        m.train()
    for start in range(0, len(inputs), batch_size):
        net(inputs[start:start + batch_size])
    for m, (momentum, training) in zip(bns, saved):
        m.momentum = momentum
        m.train(training)


def all_rows(split, key: str) -> torch.Tensor:
    """The cached tensor ``key`` of every sample of ``split``: [N, ...]."""
    return split.batch(split.sample_ids).tensors[key]


def train_feature_head(net: nn.Module, pre, val, feature: str, y_pre: torch.Tensor, y_val: torch.Tensor, cfg,
                       seed: int) -> dict:
    """Train ``net`` (a fresh network) in stage 0 as a classifier of ``y_pre`` on the cached
    ``feature`` of the pretrain split; its validation metrics on ``y_val``.

    ``net.logits`` where it has one (exact cross-entropy), else the log of its
    distribution. Rows whose target is unknown (-1) are left out."""
    logits = getattr(net, "logits", None) or (lambda x: net(x).clamp_min(1e-12).log())
    x_pre, known = all_rows(pre, feature), y_pre >= 0
    if not bool(known.all()):
        x_pre, y_pre = x_pre[known], y_pre[known]
    fit_classifier(net, x_pre, y_pre, cfg.head_epochs, cfg.stage0_lr, 128, seed, logits, device=cfg.device)
    mark_trained(net, "trained in stage 0", cfg.dataset)
    with torch.no_grad():
        p = net(all_rows(val, feature))
    known = y_val >= 0
    return classification_metrics(p[known], y_val[known], len(EMOTIONS))

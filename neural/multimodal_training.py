"""Training the multimodal fusion net on cached frozen features, and its checkpoints.

:func:`train_fusion` runs the source-003 recipe (:mod:`neural.multimodal_recipe`:
loss, optimizer, scheduler, clipping, metrics) on ``net.frozen_features(...)``
computed once per clip (``[N, F]``); it never runs the frozen encoders.
:func:`save_trainable` / :func:`load_trainable` store only the parameters that
learn (projections, fusion, heads), not the frozen encoders.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from itertools import chain
from typing import Any

import torch
from torch import nn

from neural.common import UserError
from neural.multimodal import HEADS
from neural.multimodal_recipe import (
    RecipeConfig,
    as_labels,
    class_weights,
    clip_gradients,
    head_losses,
    head_metrics,
    make_optimizer,
    make_scheduler,
)

FeatureSet = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # feats [N, F], emotion [N], sentiment [N]


def _check_set(net: nn.Module, data: FeatureSet, name: str, device: torch.device) -> FeatureSet:
    if len(data) != 3:
        raise ValueError(f"{name} must be (features [N, F], emotion labels [N], sentiment labels [N])")
    feats, emo, sent = data
    feats = torch.as_tensor(feats)
    emo, sent = as_labels(emo, f"{name} emotion labels"), as_labels(sent, f"{name} sentiment labels")
    if feats.dim() != 2 or feats.shape[1] != net.feature_dim:
        raise ValueError(f"{name} features must be [N, {net.feature_dim}] (net.frozen_features), got {tuple(feats.shape)}")
    if not len(feats) == len(emo) == len(sent):
        raise ValueError(f"{name}: {len(feats)} feature rows but {len(emo)} emotion / {len(sent)} sentiment labels")
    if len(feats) == 0:
        raise ValueError(f"{name} is empty")
    for labels, n, what in ((emo, net.config.n_emotions, "emotion"), (sent, net.config.n_sentiments, "sentiment")):
        if int(labels.min()) < 0 or int(labels.max()) >= n:
            raise ValueError(f"{name} {what} labels must lie in [0, {n})")
    return feats.to(device=device, dtype=torch.float32), emo.to(device), sent.to(device)


@torch.no_grad()
def evaluate_fusion(
    net: nn.Module,
    data: FeatureSet,
    weights: Mapping[str, torch.Tensor] | None,
    cfg: RecipeConfig,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Loss (the recipe's, over the whole set) and per-head metrics in eval mode.

    Keys: ``loss``, ``emotion/loss``, ``sentiment/loss``, ``emotion/accuracy``,
    ``emotion/weighted_precision``, ``sentiment/accuracy``, ``sentiment/weighted_precision``.
    """
    device = next(net.parameters()).device
    feats, emo, sent = _check_set(net, data, "evaluation set", device)
    was_training = net.training
    net.eval()
    chunks = [net.forward_features(feats[i:i + batch_size]) for i in range(0, len(feats), batch_size)]
    net.train(was_training)
    out = {k: torch.cat([c[k] for c in chunks]) for k in ("emotion_logits", "sentiment_logits")}
    parts = head_losses(out, emo, sent, weights, cfg)
    result = {"loss": float(parts["emotion"] + parts["sentiment"])}
    for head, labels in (("emotion", emo), ("sentiment", sent)):
        result[f"{head}/loss"] = float(parts[head])
        result.update({f"{head}/{k}": v for k, v in head_metrics(out[f"{head}_logits"], labels).items()})
    return result


def _trainable_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of what training can change: trainable parameters and buffers outside the frozen modules."""
    frozen = {id(t) for m in getattr(net, "frozen_modules", list)() for t in m.buffers()}
    params = ((n, p) for n, p in net.named_parameters() if p.requires_grad)
    buffers = ((n, b) for n, b in net.named_buffers() if id(b) not in frozen)
    return {n: t.detach().clone() for n, t in chain(params, buffers)}


@torch.no_grad()
def _load_trainable_state(net: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    tensors = dict(chain(net.named_parameters(), net.named_buffers()))
    for name, value in state.items():
        tensors[name].copy_(value)


def save_trainable(net: nn.Module, path) -> None:
    """Write what training can change in ``net`` (trainable parameters, buffers outside the
    frozen modules) to a safetensors file, atomically: a checkpoint of a trained fusion
    net relative to the one it started from (a few MB instead of the frozen encoders' hundreds)."""
    from safetensors.torch import save

    from neural.common import atomic_write_bytes

    atomic_write_bytes(path, save({k: v.contiguous().cpu() for k, v in _trainable_state(net).items()}))


def load_trainable(net: nn.Module, path) -> nn.Module:
    """Load a :func:`save_trainable` file into ``net`` (built like the one it was saved from)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    expected = _trainable_state(net)
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in state):
        raise UserError(f"{path}: not the trainable state of this fusion net (other tensors or shapes)")
    _load_trainable_state(net, state)
    return net


def _train_one_epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    data: FeatureSet,
    weights: Mapping[str, torch.Tensor] | None,
    cfg: RecipeConfig,
    gen: torch.Generator,
) -> dict[str, float]:
    """One pass of shuffled mini-batches; returns the ``train/*`` entries (running loss and metrics)."""
    feats, emo, sent = data
    params = [p for g in opt.param_groups for p in g["params"]]
    net.train()
    order = torch.randperm(len(feats), generator=gen).to(feats.device)
    sums = {"loss": 0.0, "emotion/loss": 0.0, "sentiment/loss": 0.0}
    logits: dict[str, list[torch.Tensor]] = {"emotion": [], "sentiment": []}
    used, grad_norm = [], 0.0
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        if len(idx) < 2:
            continue  # BatchNorm cannot train on one sample
        out = net.forward_features(feats[idx])  # [b, F] -> {emotion [b, 7], sentiment [b, 3], *_logits}
        parts = head_losses(out, emo[idx], sent[idx], weights, cfg)
        loss = parts["emotion"] + parts["sentiment"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = max(grad_norm, clip_gradients(params, cfg))
        opt.step()
        sums["loss"] += float(loss.detach()) * len(idx)
        for head in HEADS:
            sums[f"{head}/loss"] += float(parts[head].detach()) * len(idx)
            logits[head].append(out[f"{head}_logits"].detach())
        used.append(idx)
    rows = torch.cat(used)
    entry = {f"train/{k}": v / len(rows) for k, v in sums.items()}
    for head, labels in (("emotion", emo), ("sentiment", sent)):
        entry.update({f"train/{head}/{k}": v for k, v in head_metrics(torch.cat(logits[head]), labels[rows]).items()})
    entry["train/grad_norm"] = grad_norm  # the largest pre-clip norm of the epoch
    return entry


def train_fusion(
    net: nn.Module,
    train: FeatureSet,
    val: FeatureSet,
    cfg: RecipeConfig | None = None,
    tb=None,
    log: Callable[[str], None] | None = print,
    tb_prefix: str = "multimodal",
) -> dict[str, Any]:
    """Stage 0 of the fusion net: the source's recipe on cached frozen features.

    ``train`` and ``val`` are ``(feats [N, F], emotion [N], sentiment [N])`` with
    ``feats`` from ``net.frozen_features``. Per epoch: shuffled mini-batches of
    ``net.forward_features``, :func:`recipe_loss` with class weights from the
    training labels, backward, :func:`clip_gradients`, AdamW step; then the
    validation loss drives ReduceLROnPlateau, and the weights with the lowest
    validation loss are kept (restored at the end, ``net`` left in eval mode).

    Logged per epoch to ``tb`` (a ``SummaryWriter`` or anything with
    ``add_scalar(tag, value, step)``) under ``{tb_prefix}/``: ``train/loss``,
    ``train/{head}/loss|accuracy|weighted_precision`` (running, dropout on),
    ``val/loss``, ``val/{head}/loss|accuracy|weighted_precision``,
    ``train/grad_norm`` (largest pre-clip norm) and ``lr/{group}``.

    Deterministic in ``cfg.seed`` (shuffling and dropout draw from a forked RNG;
    the global RNG is left untouched). On CPU it trains with
    ``cfg.torch_threads`` torch threads and restores the previous setting. A
    final batch of one sample is skipped: the fusion layer's BatchNorm cannot
    train on it.

    Returns ``{"history": [per-epoch dict with the keys above and "epoch"],
    "best_epoch", "best": that epoch's dict, "class_weights", "seconds",
    "epochs_per_s", "n_train", "config"}``.
    """
    cfg = cfg or RecipeConfig()
    device = next(net.parameters()).device
    x_tr, emo_tr, sent_tr = _check_set(net, train, "train", device)
    val = _check_set(net, val, "val", device)
    n_classes = {"emotion": net.config.n_emotions, "sentiment": net.config.n_sentiments}
    weights = None
    if cfg.class_weighted:
        weights = {"emotion": class_weights(emo_tr.cpu(), n_classes["emotion"]).to(device),
                   "sentiment": class_weights(sent_tr.cpu(), n_classes["sentiment"]).to(device)}

    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = float("inf"), 0, None
    threads = torch.get_num_threads()
    if cfg.torch_threads is not None and device.type == "cpu":
        torch.set_num_threads(cfg.torch_threads)
    t0 = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)  # dropout
            gen = torch.Generator().manual_seed(cfg.seed)  # shuffling
            opt = make_optimizer(net, cfg)
            sched = make_scheduler(opt, cfg)
            for epoch in range(1, cfg.epochs + 1):
                entry: dict[str, float] = {"epoch": epoch}
                entry.update(_train_one_epoch(net, opt, (x_tr, emo_tr, sent_tr), weights, cfg, gen))
                entry.update({f"val/{k}": v for k, v in evaluate_fusion(net, val, weights, cfg).items()})
                entry.update({f"lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(opt.param_groups)})
                sched.step(entry["val/loss"])
                history.append(entry)
                if tb is not None:
                    for key, value in entry.items():
                        if key != "epoch":
                            tb.add_scalar(f"{tb_prefix}/{key}", value, epoch)
                if entry["val/loss"] < best_loss:
                    best_loss, best_epoch, best_state = entry["val/loss"], epoch, _trainable_state(net)
                if log is not None:
                    log(f"[multimodal] epoch {epoch}/{cfg.epochs} train loss {entry['train/loss']:.4f} "
                        f"val loss {entry['val/loss']:.4f} emotion acc {entry['val/emotion/accuracy']:.3f} "
                        f"prec {entry['val/emotion/weighted_precision']:.3f} sentiment acc "
                        f"{entry['val/sentiment/accuracy']:.3f} prec {entry['val/sentiment/weighted_precision']:.3f}")
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    if best_state is not None:
        _load_trainable_state(net, best_state)
    net.eval()
    if tb is not None and hasattr(tb, "flush"):
        tb.flush()
    return {
        "history": history,
        "best_epoch": best_epoch,
        "best": history[best_epoch - 1] if best_epoch else {},
        "class_weights": {k: v.tolist() for k, v in weights.items()} if weights else None,
        "seconds": seconds,
        "epochs_per_s": cfg.epochs / seconds if seconds > 0 else float("inf"),
        "n_train": len(x_tr),
        "config": cfg.to_dict(),
    }

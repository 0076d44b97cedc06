"""The training recipe of the multimodal fusion net (source 003), on cached frozen features.

The source trains :class:`~neural.multimodal.MultimodalFusionNet` with

* class-weighted cross-entropy (inverse class frequency) with label smoothing,
  one per head, summed -- :func:`class_weights`, :func:`recipe_loss`;
* differential learning rates: text / video / audio encoder (their trainable
  projections), fusion layer, heads -- :func:`param_groups`, :func:`make_optimizer`;
* gradient clipping -- :func:`clip_gradients`;
* ReduceLROnPlateau on the validation loss -- :func:`make_scheduler`;
* accuracy and weighted precision per head, logged to TensorBoard --
  :func:`head_metrics`, :func:`train_fusion`.

The frozen encoders (BERT-family text model, R3D-18 trunk, audio conv stack) do
not learn, so :func:`train_fusion` never runs them: it trains
``net.forward_features`` on ``net.frozen_features(...)`` computed once per clip
(``[N, F]``, see :mod:`neural.multimodal`): an epoch on 2,000 clips (batch 32,
plus 500 validation clips) takes about 0.3 s of one CPU core.

The optimizer, scheduler, clipping and loss are separate functions so that the
``joint`` regime (logic + networks) reuses the same optimizer/scheduler/clipping
with the logic's loss instead of :func:`recipe_loss`.

Defaults: the learning rates are the source's (section 6: 8e-6 text, 8e-5 video
and audio, 5e-4 fusion and heads). The source names label smoothing, clipping and
the plateau scheduler without values; the defaults here (smoothing 0.05, clip
norm 1.0, factor 0.1, patience 2, weight decay 1e-5) are those of the public
training code the source describes. AdamW instead of the source's Adam so that
the weight decay is decoupled from the adaptive step.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neural.configs import strict_config
from neural.errors import UserError
from neural.multimodal import HEADS

#: parameter groups of the differential learning rates, in optimizer order
GROUPS: tuple[str, ...] = ("text", "video", "audio", "fusion", "heads")

FeatureSet = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # feats [N, F], emotion [N], sentiment [N]


class RecipeConfigError(UserError, ValueError):
    """An invalid multimodal training configuration."""


@dataclass
class RecipeConfig:
    """Every switch of the fusion-net recipe; saved next to the results of a run."""

    epochs: int = 20
    batch_size: int = 32
    # differential learning rates (the source's values); frozen parameters get none
    lr_text: float = 8e-6  # text projection (BERT frozen)
    lr_video: float = 8e-5  # video fc (R3D-18 trunk frozen)
    lr_audio: float = 8e-5  # audio projection (conv stack frozen)
    lr_fusion: float = 5e-4
    lr_heads: float = 5e-4  # emotion and sentiment classifiers
    weight_decay: float = 1e-5  # AdamW, every group
    class_weighted: bool = True  # inverse-frequency class weights in both heads' CE
    label_smoothing: float = 0.05
    grad_clip_norm: float | None = 1.0  # max global L2 norm; None: no clipping
    plateau_factor: float = 0.1  # ReduceLROnPlateau on the validation loss
    plateau_patience: int = 2
    seed: int = 0  # shuffling and dropout
    #: torch intra-op threads while training on CPU (restored afterwards; None: leave
    #: torch's setting). The fusion MLP's batches are too small for threads to pay:
    #: measured on 2 busy cores, 1 thread was as fast as 2 in wall time at a third of
    #: the CPU; one thread also keeps the numbers independent of the core count.
    torch_threads: int | None = 1

    def __post_init__(self) -> None:
        self.validate()

    def lr(self, group: str) -> float:
        """The learning rate of parameter group ``group`` (one of :data:`GROUPS`)."""
        if group not in GROUPS:
            raise ValueError(f"unknown parameter group {group!r}; known: {', '.join(GROUPS)}")
        return getattr(self, f"lr_{group}")

    def validate(self) -> None:
        def bad(msg: str) -> RecipeConfigError:
            return RecipeConfigError(f"multimodal recipe config: {msg}")

        if self.epochs < 1:
            raise bad(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise bad(f"batch_size must be >= 2 (the fusion layer has BatchNorm), got {self.batch_size}")
        for group in GROUPS:
            if not self.lr(group) > 0:
                raise bad(f"lr_{group} must be > 0, got {self.lr(group)}")
        if self.weight_decay < 0:
            raise bad(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise bad(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise bad(f"grad_clip_norm must be > 0 (or None to turn clipping off), got {self.grad_clip_norm}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise bad(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.plateau_patience < 0:
            raise bad(f"plateau_patience must be >= 0, got {self.plateau_patience}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise bad(f"torch_threads must be >= 1 (or None), got {self.torch_threads}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RecipeConfig:
        return strict_config(cls, values, RecipeConfigError, "multimodal recipe option(s)", "known")


# --------------------------------------------------------------------------- #
# loss
# --------------------------------------------------------------------------- #
def _as_labels(labels, name: str = "labels") -> torch.Tensor:
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor, got {t.dtype} {tuple(t.shape)}")
    return t.long()


def class_weights(labels, n_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights [n_classes] (the source's ``1 / class_counts``).

    Normalised to mean 1 over the classes present: the weighted-mean
    cross-entropy does not depend on the scale, and mean 1 keeps per-sample
    weighted losses elsewhere (the logic's NLL) on the unweighted scale. A class
    with no example gets weight 0 instead of the source's ``1 / 0 = inf``: it is
    never a target in training, and an infinite weight would make every loss NaN.
    """
    from neural.facetrain.recipe import class_weights as _inverse_frequency

    y = _as_labels(labels)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"class_weights: labels must lie in [0, {n_classes}), got [{int(y.min())}, {int(y.max())}]")
    counts = torch.bincount(y, minlength=n_classes).numpy()
    return _inverse_frequency(counts, alpha=1.0)


def head_loss(
    logits: torch.Tensor,  # [B, C]
    labels: torch.Tensor,  # [B]
    weight: torch.Tensor | None,  # [C] or None
    label_smoothing: float,
) -> torch.Tensor:
    """Class-weighted cross-entropy with label smoothing of one head (a scalar)."""
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=torch.float32)
    return F.cross_entropy(logits.float(), labels, weight=weight, label_smoothing=label_smoothing)


def head_losses(
    out: Mapping[str, torch.Tensor],
    emotion_labels: torch.Tensor,  # [B]
    sentiment_labels: torch.Tensor,  # [B]
    weights: Mapping[str, torch.Tensor] | None,
    cfg: RecipeConfig,
) -> dict[str, torch.Tensor]:
    """``{"emotion": loss, "sentiment": loss}`` from the net's output dict (its ``*_logits``)."""
    labels = {"emotion": emotion_labels, "sentiment": sentiment_labels}
    return {
        head: head_loss(out[f"{head}_logits"], labels[head], None if weights is None else weights[head],
                        cfg.label_smoothing)
        for head in HEADS
    }


def recipe_loss(
    out: Mapping[str, torch.Tensor],
    emotion_labels: torch.Tensor,  # [B]
    sentiment_labels: torch.Tensor,  # [B]
    weights: Mapping[str, torch.Tensor] | None,
    cfg: RecipeConfig,
) -> torch.Tensor:
    """The source's training loss: emotion CE + sentiment CE (each class-weighted and smoothed).

    ``out`` is the dict of ``forward``/``forward_features``; ``weights`` maps
    ``"emotion"``/``"sentiment"`` to :func:`class_weights` (``None``: unweighted).
    """
    parts = head_losses(out, emotion_labels, sentiment_labels, weights, cfg)
    return parts["emotion"] + parts["sentiment"]


# --------------------------------------------------------------------------- #
# metrics
# --------------------------------------------------------------------------- #
def head_metrics(probs: torch.Tensor, labels) -> dict[str, float]:
    """Accuracy and weighted precision (sklearn) of one head's ``probs`` (or logits) [N, C]."""
    from sklearn.metrics import accuracy_score, precision_score

    y_true = _as_labels(labels).cpu().numpy()
    y_pred = probs.detach().argmax(dim=-1).cpu().numpy()
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_precision": float(precision_score(y_true, y_pred, average="weighted", zero_division=0)),
    }


# --------------------------------------------------------------------------- #
# optimisation: groups, optimizer, scheduler, clipping
# --------------------------------------------------------------------------- #
def _group_modules(net: nn.Module) -> dict[str, list[nn.Module]]:
    # The source's grouping: whole encoders (only their trainable parameters
    # survive the filter below), fusion layer, both classifiers.
    return {
        "text": [net.text_encoder],
        "video": [net.video_encoder],
        "audio": [net.audio_encoder],
        "fusion": [net.fusion_layer],
        "heads": [net.emotion_classifier, net.sentiment_classifier],
    }


def param_groups(net: nn.Module, cfg: RecipeConfig) -> list[dict]:
    """AdamW parameter groups with the differential learning rates: ``[{"name", "params", "lr"}]``.

    Frozen parameters (``requires_grad=False``) are left out; every trainable
    parameter of ``net`` is in exactly one group (checked: a trainable parameter
    outside the known modules raises). Empty groups are dropped.
    """
    groups, seen = [], set()
    for name, modules in _group_modules(net).items():
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"name": name, "params": params, "lr": cfg.lr(name)})
    stray = [n for n, p in net.named_parameters() if p.requires_grad and id(p) not in seen]
    if stray:
        raise ValueError(f"trainable parameters outside the recipe's groups {GROUPS}: {stray[:5]}")
    return groups


def make_optimizer(net: nn.Module, cfg: RecipeConfig, extra_groups: Iterable[dict] = ()) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (plus ``extra_groups``, e.g. the logic's rule parameters)."""
    groups = param_groups(net, cfg) + [dict(g) for g in extra_groups]
    if not groups:
        raise ValueError("make_optimizer: the network has no trainable parameter")
    # foreach: one fused kernel per op across tensors (torch only defaults to it on CUDA)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, foreach=True)


def make_scheduler(opt: torch.optim.Optimizer, cfg: RecipeConfig) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """ReduceLROnPlateau on a loss (``mode="min"``): call ``sched.step(val_loss)`` once per epoch."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )


def clip_gradients(params: nn.Module | Iterable[torch.Tensor], cfg: RecipeConfig) -> float:
    """Clip the global L2 gradient norm to ``cfg.grad_clip_norm``; returns the norm before clipping."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    max_norm = cfg.grad_clip_norm if cfg.grad_clip_norm is not None else float("inf")
    return float(nn.utils.clip_grad_norm_(params, max_norm))


# --------------------------------------------------------------------------- #
# training on cached features
# --------------------------------------------------------------------------- #
def _check_set(net: nn.Module, data: FeatureSet, name: str, device: torch.device) -> FeatureSet:
    if len(data) != 3:
        raise ValueError(f"{name} must be (features [N, F], emotion labels [N], sentiment labels [N])")
    feats, emo, sent = data
    feats = torch.as_tensor(feats)
    emo, sent = _as_labels(emo, f"{name} emotion labels"), _as_labels(sent, f"{name} sentiment labels")
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

    from neural.files import atomic_write_bytes

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

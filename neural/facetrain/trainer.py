"""The training loop of the face emotion recogniser (recipe of seed document 002).

``train_face(cfg, data, out_dir)`` runs the whole recipe and writes, in ``out_dir``:

* ``checkpoint/`` (:mod:`neural.facetrain.checkpoint`) -- the best epoch's (EMA) weights as a registered network
  (``weights.safetensors`` + ``config.json``: rebuilds itself, see
  :func:`neural.facetrain.backbones.load_face_predicate`) and
  ``checkpoint.json`` (epoch, monitored metric, the full ``FaceTrainConfig``,
  the history); the directory is replaced atomically;
* ``train_config.json`` (resolved config), ``history.json``;
* ``loss.png``, ``metrics.png``, ``lr.png``.

Stage 1 (``freeze_backbone_epochs``): backbone frozen (no gradients, BatchNorm
statistics fixed, its learning rate 0), only the head trains. Stage 2: all
parameters, backbone at ``lr_backbone``, head at ``lr_head``. Both base rates
follow one per-step schedule: linear warm-up over ``warmup_epochs``, then
cosine decay to ``min_lr_ratio``. Validation uses the EMA weights (when on);
the checkpoint holds the weights that were validated.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neural.face_data import FaceCropData, FaceCrops, to_model_input
from neural.facetrain.backbones import backbone_modules, build_face_model, split_parameters
from neural.facetrain.checkpoint import atomic_json, json_history, save_checkpoint
from neural.cluster import torch_device
from neural.facetrain.config import FaceTrainConfig, FaceTrainConfigError
from neural.facetrain.recipe import (
    ModelEMA,
    class_weights,
    lr_factor,
    mix_batch,
    mixed_loss,
    set_backbone_trainable,
)
from neural.common import EMOTIONS, N_EMOTIONS

HISTORY_KEYS = (
    "epoch", "phase", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1",
    "lr_backbone", "lr_head", "epoch_times", "step_lr_backbone", "step_lr_head",
)


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    best_epoch: int
    best_metric: float
    history: dict
    stopped_early: bool
    pretrained_loaded: bool
    test: dict | None = None
    class_weights: list[float] | None = None
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- setup

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (None: full precision)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise FaceTrainConfigError("amp='fp16' needs a CUDA device; use amp='bf16' or 'off' on CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def train_transform():
    """Per-crop augmentation of uint8 [1, 64, 64] crops (the seed's set, for faces)."""
    import torchvision.transforms.v2 as T

    return T.Compose([
        T.RandomResizedCrop(64, scale=(0.75, 1.0), ratio=(0.9, 1.1), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomRotation(15),
        T.ColorJitter(brightness=0.2, contrast=0.2),
        T.RandomErasing(p=0.25, scale=(0.02, 0.12), value=0),
    ])


class CropDataset(torch.utils.data.Dataset):
    """uint8 crops -> (float [1, 64, 64] in [-1, 1], label)."""

    def __init__(self, crops: FaceCrops, transform=None):
        self.crops, self.transform = crops, transform

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int):
        img = self.crops.images[i].unsqueeze(0)  # uint8 [1, 64, 64]
        if self.transform is not None:
            img = self.transform(img)
        return img.to(torch.float32) / 127.5 - 1.0, self.crops.labels[i]


def make_train_loader(crops: FaceCrops, cfg: FaceTrainConfig) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(cfg.seed)
    return torch.utils.data.DataLoader(
        CropDataset(crops, train_transform() if cfg.augment else None),
        batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=0,
        drop_last=len(crops) > cfg.batch_size,  # no batch of 1 through BatchNorm
    )


def concat_splits(data: FaceCropData, names) -> FaceCrops:
    parts = [data.split(n) for n in names]
    return FaceCrops(
        torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
        [path for p in parts for path in p.paths],
    )


# --------------------------------------------------------------------------- one epoch / evaluation

@torch.no_grad()
def evaluate(model: nn.Module, crops: FaceCrops, device: torch.device, batch_size: int = 256) -> dict:
    """Plain (unsmoothed, unweighted) cross-entropy, accuracy and macro-F1 of ``model`` on ``crops``."""
    from sklearn.metrics import f1_score

    was_training = model.training
    model.eval()
    losses, preds = [], []
    for i in range(0, len(crops), batch_size):
        x = to_model_input(crops.images[i : i + batch_size]).to(device)
        y = crops.labels[i : i + batch_size].to(device)
        logits = model.logits(x).float()
        losses.append(F.cross_entropy(logits, y, reduction="sum").item())
        preds.append(logits.argmax(1).cpu())
    model.train(was_training)
    pred = torch.cat(preds).numpy()
    true = crops.labels.numpy()
    return {
        "loss": sum(losses) / len(crops),
        "accuracy": float((pred == true).mean()),
        "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0)),
        "pred": pred,
    }


@dataclass
class _State:
    """What one epoch needs besides the model."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None
    weight: torch.Tensor | None
    mix_gen: torch.Generator
    step: int
    warmup_steps: int
    total_steps: int


def train_one_epoch(
    model: nn.Module, loader, cfg: FaceTrainConfig, state: _State, frozen: bool,
    device: torch.device, amp_dtype: torch.dtype | None, history: dict,
) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean training loss, training accuracy)."""
    model.train()
    set_backbone_trainable(backbone_modules(model), not frozen)
    mix_mode = "mixup" if cfg.use_mixup else "cutmix" if cfg.use_cutmix else None
    mix_alpha = cfg.mixup_alpha if cfg.use_mixup else cfg.cutmix_alpha
    params = [p for g in state.optimizer.param_groups for p in g["params"]]
    total_loss, correct, seen = 0.0, 0.0, 0
    for x, y in loader:
        f = lr_factor(state.step, state.warmup_steps, state.total_steps, cfg.min_lr_ratio)
        backbone_group, head_group = state.optimizer.param_groups
        backbone_group["lr"] = 0.0 if frozen else cfg.lr_backbone * f
        head_group["lr"] = cfg.lr_head * f
        history["step_lr_backbone"].append(backbone_group["lr"])
        history["step_lr_head"].append(head_group["lr"])

        x, y = x.to(device), y.to(device)  # [B, 1, 64, 64], [B]
        y_b, lam = None, 1.0
        if mix_mode and float(torch.rand(1, generator=state.mix_gen)) < cfg.mix_prob:
            x, y, y_b, lam = mix_batch(x, y, mix_mode, mix_alpha, state.mix_gen)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model.logits(x)  # [B, 7]
        loss = mixed_loss(logits, y, y_b, lam, state.weight, cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise FaceTrainConfigError(
                f"training loss became {loss.item()} at step {state.step}; lower the learning rates or turn amp off"
            )
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        if cfg.grad_clip_norm is not None:
            state.scaler.unscale_(state.optimizer)
            nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], cfg.grad_clip_norm)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        if state.ema is not None:
            state.ema.update(model)
        state.step += 1

        pred = logits.detach().argmax(1)
        hits = (pred == y).float() * lam + ((pred == y_b).float() * (1.0 - lam) if y_b is not None else 0.0)
        total_loss += loss.item() * len(y)
        correct += hits.sum().item()
        seen += len(y)
    return total_loss / max(seen, 1), correct / max(seen, 1)


# --------------------------------------------------------------------------- main

def format_epoch_line(rec: dict, epochs: int) -> str:
    return (
        f"epoch {rec['epoch']:>3}/{epochs} {rec['phase']:<8}| "
        f"train loss {rec['train_loss']:.4f} acc {rec['train_acc']:.3f} | "
        f"val loss {rec['val_loss']:.4f} acc {rec['val_acc']:.3f} F1 {rec['val_macro_f1']:.3f} | "
        f"lr backbone {rec['lr_backbone']:.2e} head {rec['lr_head']:.2e} | "
        f"{rec['epoch_time']:.1f}s | {rec['status']}"
    )


def train_face(
    cfg: FaceTrainConfig,
    data: FaceCropData,
    out_dir: str | os.PathLike,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train the face recogniser with the recipe ``cfg`` on ``data``; see the module doc."""
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = torch_device(cfg.device)
    amp_dtype = autocast_dtype(cfg.amp, device)

    train = concat_splits(data, cfg.train_splits)
    val = data.split(cfg.val_split)
    test = data.splits.get(cfg.test_split) if cfg.test_split else None

    model, pretrained_loaded = build_face_model(cfg)
    model.to(device)
    if cfg.bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = cfg.bn_momentum
    backbone_params, head_params = split_parameters(model)
    optimizer = torch.optim.AdamW(
        [{"params": backbone_params, "lr": cfg.lr_backbone, "name": "backbone"},
         {"params": head_params, "lr": cfg.lr_head, "name": "head"}],
        weight_decay=cfg.weight_decay,
    )
    counts = train.class_counts(N_EMOTIONS)
    weight = class_weights(counts, cfg.class_weight_alpha).to(device) if cfg.use_class_weights else None
    loader = make_train_loader(train, cfg)
    steps_per_epoch = len(loader)
    state = _State(
        optimizer=optimizer,
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        ema=ModelEMA(model, cfg.ema_decay) if cfg.use_ema else None,
        weight=weight,
        mix_gen=torch.Generator().manual_seed(cfg.seed + 1),
        step=0,
        warmup_steps=cfg.warmup_epochs * steps_per_epoch,
        total_steps=cfg.epochs * steps_per_epoch,
    )

    atomic_json(out / "train_config.json", {
        "config": cfg.to_dict(), "device": str(device), "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
        "data": data.describe(), "train_size": len(train), "val_size": len(val),
        "class_counts": dict(zip(EMOTIONS, counts.tolist())),
        "class_weights": weight.tolist() if weight is not None else None,
        "pretrained_loaded": pretrained_loaded,
    })
    log(f"train-face: {cfg.backbone} on {device}"
        f"{' (' + str(amp_dtype).replace('torch.', '') + ' autocast)' if amp_dtype else ''}; "
        f"train {len(train)} crops, val {len(val)}; {steps_per_epoch} steps/epoch")

    history: dict = {k: [] for k in HISTORY_KEYS}
    best_metric, best_epoch, best_state, wait, stopped_early = -float("inf"), 0, None, 0, False
    eval_model = lambda: state.ema.module if state.ema is not None else model  # noqa: E731
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        frozen = epoch <= cfg.freeze_backbone_epochs
        train_loss, train_acc = train_one_epoch(model, loader, cfg, state, frozen, device, amp_dtype, history)
        metrics = evaluate(eval_model(), val, device)
        elapsed = time.perf_counter() - t0
        value = metrics[cfg.monitor]
        if value > best_metric + cfg.min_delta:
            best_metric, best_epoch, wait, status = value, epoch, 0, "best"
        else:
            wait += 1
            status = f"no gain {wait}/{cfg.patience}" if cfg.patience else "no gain"
        rec = {
            "epoch": epoch, "phase": "frozen" if frozen else "finetune",
            "train_loss": train_loss, "train_acc": train_acc, "val_loss": metrics["loss"],
            "val_acc": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"],
            "lr_backbone": history["step_lr_backbone"][-1], "lr_head": history["step_lr_head"][-1],
            "epoch_time": elapsed, "status": status,
        }
        for key in HISTORY_KEYS:
            if key in rec:
                history[key].append(rec[key])
        history["epoch_times"].append(elapsed)
        if status == "best":
            best_state = {k: v.detach().cpu().clone() for k, v in eval_model().state_dict().items()}
            save_checkpoint(eval_model(), out, {
                "epoch": epoch, "metric": cfg.monitor, "value": value, "config": cfg.to_dict(),
                "history": json_history(history), "ema": cfg.use_ema, "labels": list(EMOTIONS),
                "pretrained_loaded": pretrained_loaded, "complete": False,
            })
        log(format_epoch_line(rec, cfg.epochs))
        atomic_json(out / "history.json", json_history(history))
        # Early stopping only once the backbone is trainable: the warm-up always runs out.
        if cfg.patience and wait >= cfg.patience and not frozen:
            stopped_early = True
            log(f"early stop: no {cfg.monitor} gain > {cfg.min_delta} for {cfg.patience} epochs")
            break

    best_model = eval_model()
    best_model.load_state_dict(best_state)
    test_metrics = None
    if test is not None and len(test):
        m = evaluate(best_model, test, device)
        test_metrics = {k: m[k] for k in ("loss", "accuracy", "macro_f1")} | {"size": len(test)}
        log(f"test ({cfg.test_split}, best epoch {best_epoch}): loss {m['loss']:.4f} "
            f"acc {m['accuracy']:.3f} F1 {m['macro_f1']:.3f}")
    info = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    info.update(history=json_history(history), stopped_early=stopped_early, test=test_metrics, complete=True,
                total_time=sum(history["epoch_times"]))
    atomic_json(out / "checkpoint" / "checkpoint.json", info)

    from neural.facetrain.plots import plot_history

    plot_history(history, out)
    log(f"best {cfg.monitor} {best_metric:.4f} at epoch {best_epoch}; checkpoint {out / 'checkpoint'}")
    return TrainResult(
        out_dir=out, checkpoint=out / "checkpoint", best_epoch=best_epoch, best_metric=best_metric,
        history=history, stopped_early=stopped_early, pretrained_loaded=pretrained_loaded,
        test=test_metrics, class_weights=weight.tolist() if weight is not None else None,
    )

"""Training a temporal V/A model: the losses (MSE + CCC, symmetric InfoNCE) and
the resumable, seeded training loop with its best and last checkpoints."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from experiments.runs import atomic_write_json
from experiments.tools.temporal_va.config import TemporalVAConfig
from experiments.tools.temporal_va.evaluate import predict_clips, score_predictions
from experiments.tools.temporal_va.inputs import Inputs, sample_batch
from neural.common import UserError
from neural.temporal_va import TRAINER_FILE, save_checkpoint
from pipelines.datasets.afewva import Clip


# --------------------------------------------------------------------------- losses


def ccc_torch(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """CCC of two 1-D tensors (population moments), differentiable."""
    mp, mt = pred.mean(), true.mean()
    cov = ((pred - mp) * (true - mt)).mean()
    return 2 * cov / (pred.var(unbiased=False) + true.var(unbiased=False) + (mp - mt) ** 2 + 1e-8)


def regression_loss(pred: torch.Tensor, true: torch.Tensor, ccc_weight: float = 1.0) -> torch.Tensor:
    # pred, true: [B, T, 2] -> MSE + ccc_weight * mean over dimensions of (1 - CCC)
    pred, true = pred.float().reshape(-1, 2), true.float().reshape(-1, 2)
    ccc_term = sum(1 - ccc_torch(pred[:, k], true[:, k]) for k in range(2)) / 2
    return F.mse_loss(pred, true) + ccc_weight * ccc_term


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of z1 and z2 [B, P] are a positive pair, other rows negatives."""
    logits = z1.float() @ z2.float().T / temperature  # [B, B]
    target = torch.arange(len(z1), device=z1.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# --------------------------------------------------------------------------- training


def _amp(device: torch.device, enabled: bool) -> tuple[Callable, torch.amp.GradScaler | None]:
    """(autocast context factory, grad scaler or None): mixed precision on CUDA only."""
    if not (enabled and device.type == "cuda"):
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def _epoch_seed(cfg: TemporalVAConfig, stage: str, epoch: int) -> list[int]:
    return [cfg.seed, sum(map(ord, stage)), epoch]


def fit(model, stage: str, kind: str, train_clips: Sequence[Clip], val_clips: Sequence[Clip], inputs: Inputs,
        cfg: TemporalVAConfig, epochs: int, param_groups: list[dict], device: torch.device, ckpt_dir: Path,
        init_from: str | None = None) -> list[dict]:
    """Train ``model`` for ``epochs`` (resuming from ``ckpt_dir/last``); keeps ``ckpt_dir/best``.

    ``kind``: ``"regression"`` (score: validation mean CCC) or ``"contrastive"``
    (score: minus the validation InfoNCE; the training loss when there are fewer
    than two validation clips). Returns the history, one dict per epoch.
    """
    from safetensors.torch import load_file

    if len(train_clips) < (2 if kind == "contrastive" else 1):
        raise UserError(f"{stage}: {len(train_clips)} training clip(s) is too few")
    model.to(device)
    fingerprint = cfg.fingerprint(stage=stage, init_from=init_from)
    opt = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
    autocast, scaler = _amp(device, cfg.amp)
    last, best_dir = ckpt_dir / "last", ckpt_dir / "best"
    start, history, best = 0, [], -math.inf
    if (last / "config.json").is_file():
        trainer = torch.load(last / TRAINER_FILE, map_location="cpu", weights_only=True)
        if trainer["fingerprint"] != fingerprint:
            raise UserError(f"{last} was trained with another config; use a new --out or delete {ckpt_dir}")
        model.load_checkpoint_state(load_file(str(last / "weights.safetensors"), device=str(device)))
        opt.load_state_dict(trainer["optimizer"])
        if scaler is not None and trainer.get("scaler"):
            scaler.load_state_dict(trainer["scaler"])
        start, history, best = trainer["epoch"], trainer["history"], trainer["best"]
        if start < epochs:
            print(f"va-temporal: {stage}: resuming after epoch {start} from {last}")
    for epoch in range(start, epochs):
        rng = np.random.default_rng(_epoch_seed(cfg, stage, epoch))
        torch.manual_seed(int(rng.integers(2**31)))
        model.train()
        order = rng.permutation(len(train_clips))
        losses = []
        for b in range(0, len(order), cfg.batch_size):
            clips = [train_clips[i] for i in order[b:b + cfg.batch_size]]
            if kind == "contrastive" and len(clips) < 2:
                continue  # a lone clip has no negatives
            with autocast():
                loss = _loss(model, kind, clips, inputs, cfg, rng, device)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            losses.append(float(loss.detach()))
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}
        if kind == "regression" and val_clips:
            m = score_predictions(predict_clips(model, val_clips, inputs, cfg.num_frames, device))
            row.update(val_ccc_valence=m["valence"]["ccc"], val_ccc_arousal=m["arousal"]["ccc"], score=m["mean_ccc"])
        elif kind == "contrastive" and len(val_clips) >= 2:
            model.eval()
            with torch.no_grad(), autocast():
                vrng = np.random.default_rng([cfg.seed, 7919])
                row["val_loss"] = float(_loss(model, kind, list(val_clips)[:max(2, cfg.batch_size)], inputs, cfg, vrng, device))
            row["score"] = -row["val_loss"]
        else:
            row["score"] = -row["train_loss"]
        history.append(row)
        if not row["score"] <= best:  # NaN-safe "better": the first epoch always counts
            best = row["score"]
            save_checkpoint(model, best_dir)
        save_checkpoint(model, last, trainer={
            "epoch": epoch + 1, "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "history": history, "best": best, "fingerprint": fingerprint, "init_from": init_from,
        })
        print(f"va-temporal: {stage} epoch {epoch + 1}/{epochs} " + " ".join(
            f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))
    atomic_write_json(Path(cfg.out) / f"history_{stage}.json", history)
    return history


def _loss(model, kind: str, clips: list[Clip], inputs: Inputs, cfg: TemporalVAConfig, rng, device) -> torch.Tensor:
    if kind == "regression":
        x, y = sample_batch(clips, inputs, cfg.num_frames, rng)
        return regression_loss(model(x.to(device)), y.to(device), cfg.ccc_weight)
    # two views per clip: independent samplings + augmentations; in-batch negatives
    v1, _ = sample_batch(clips, inputs, cfg.num_frames, rng)
    v2, _ = sample_batch(clips, inputs, cfg.num_frames, rng)
    return info_nce(model.embed(v1.to(device)), model.embed(v2.to(device)), cfg.temperature)

"""Temporal valence/arousal on AFEW-VA (source 001): Path B on cached features, Path A end to end.

    cfg = TemporalVAConfig(data="data/afewva", out="runs/va", path="B")
    results = run(cfg)            # extract -> train -> evaluate; returns evaluation_results

Path B: every frame goes once through the frame backbone (CLIP when available,
the scene backbone otherwise) into the verified tensor cache (``cache.build``:
manifest, sha256 per shard and per frame, resume, atomic writes) plus an
``index.json`` of clips -> frame ids; a :class:`~neural.temporal_va.TemporalVAHead`
is trained on the cached features.

Path A: :class:`~neural.temporal_va.TemporalCLIPVA` (CLIP + LoRA + temporal head).
Stage 1 (``pretrain``) is contrastive: the two views of a clip are two
independent temporal samplings of it (different frames of each segment) with
independent augmentations (crop, flip, brightness/contrast); the other clips of
the batch are the negatives (symmetric InfoNCE). Stage 2 (``finetune``)
starts from the stage-1 checkpoint and trains the regression heads and the LoRA
adapters on valence/arousal.

Temporal sampling (TSN-style): a clip is cut into ``num_frames`` equal segments
and one frame is drawn per segment (random in training, the centre for
validation); evaluation covers every frame with shifted samplings and averages.
Loss: MSE + ``ccc_weight`` x mean(1 - CCC) over the two dimensions.

Layout of ``out``::

    config.json                     resolved config + command
    cache/<split>/..., cache/index.json   Path B frame features
    checkpoints/<stage>/{last,best}/      stage = pathB | pretrain | finetune
    history_<stage>.json
    evaluation/evaluation_results.json, predictions.csv (per frame), clips.csv (per clip), trajectories.png

Training resumes from ``checkpoints/<stage>/last`` when it exists (same config
apart from epochs and evaluation options; otherwise it refuses). Seeded: the
same config gives the same numbers, resumed or not.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from experiments.runs import atomic_write_json, atomic_write_text, config_fingerprint, write_resolved_config
from experiments.va_metrics import va_metrics
from neural.errors import UserError
from neural.temporal_va import (
    TRAINER_FILE,
    TemporalHeadConfig,
    clip_va,
    load_checkpoint,
    save_checkpoint,
)
from pipelines.datasets.afewva import AfewVADataset, Clip, load_afewva

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
PATHS = ("A", "B")
STAGES = {"A": ("pretrain", "finetune", "all", "evaluate"), "B": ("train", "all", "evaluate")}
BACKBONES = ("auto", "clip", "scene")
#: Config keys that do not change what a training stage computes (allowed to differ on resume).
_NOT_IN_FINGERPRINT = {"stage", "out", "device", "amp", "mc_samples", "checkpoint", "epochs", "epochs_pretrain",
                       "epochs_finetune", "max_plot_clips", "progress"}


@dataclass
class TemporalVAConfig:
    data: str
    out: str
    path: str = "B"  # "A": CLIP + LoRA end to end; "B": cached features + temporal head
    stage: str = "all"  # A: pretrain|finetune|all|evaluate; B: train|all|evaluate
    seed: int = 0
    num_frames: int = 8  # frames sampled per clip
    batch_size: int = 4  # clips per batch
    # Path B features
    backbone: str = "auto"  # auto: CLIP if clip_model is a local dir or in the local HF cache, else scene
    clip_model: str = DEFAULT_CLIP
    frame_size: int = 112  # scene backbone input size
    epochs: int = 40
    lr: float = 1e-3
    weight_decay: float = 1e-2
    ccc_weight: float = 1.0
    # temporal head
    d_model: int = 64
    n_layers: int = 1
    n_heads: int = 4
    dropout: float = 0.2
    # Path A
    epochs_pretrain: int = 5
    epochs_finetune: int = 10
    lr_lora: float = 1e-4
    lora_r: int = 8
    lora_alpha: int = 16
    temperature: float = 0.1
    checkpoint: str | None = None  # finetune: stage-1 checkpoint; evaluate: checkpoint to evaluate
    # evaluation / machine
    mc_samples: int = 5
    max_plot_clips: int = 6
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 + loss scaling)
    progress: bool = False

    def validate(self) -> None:
        if self.path not in PATHS:
            raise UserError(f"--path must be one of {', '.join(PATHS)}, got {self.path!r}")
        if self.stage not in STAGES[self.path]:
            raise UserError(f"Path {self.path} has stages {', '.join(STAGES[self.path])}, not {self.stage!r}")
        if self.backbone not in BACKBONES:
            raise UserError(f"--backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.checkpoint and self.stage not in ("finetune", "evaluate"):
            raise UserError("--checkpoint is used by --stage finetune (stage-1 weights) and --stage evaluate only")
        for key in ("num_frames", "batch_size", "frame_size", "d_model", "n_layers", "n_heads", "lora_r"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be positive, got {getattr(self, key)}")
        if self.path == "A" and self.stage in ("pretrain", "all") and self.batch_size < 2:
            raise UserError("contrastive pretraining needs --batch-size >= 2 (the other clips are the negatives)")
        if self.mc_samples < 1:
            raise UserError(f"mc_samples must be >= 1, got {self.mc_samples}")

    def fingerprint(self, **extra) -> str:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in _NOT_IN_FINGERPRINT}
        d["data"] = str(Path(self.data).expanduser().resolve())
        return config_fingerprint({**d, **extra})

    def head_config(self, in_dim: int) -> TemporalHeadConfig:
        return TemporalHeadConfig(in_dim=in_dim, d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers,
                                  ff_dim=2 * self.d_model, dropout=self.dropout, max_frames=max(64, self.num_frames),
                                  n_samples=max(2, self.mc_samples))


# --------------------------------------------------------------------------- sampling


def sample_indices(n: int, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """[num_frames] sorted frame positions: one per equal segment, random (rng) or the segment centre.

    Clips shorter than ``num_frames`` repeat frames.
    """
    edges = np.linspace(0, n, num_frames + 1)
    width = edges[1:] - edges[:-1]
    offset = rng.random(num_frames) if rng is not None else np.full(num_frames, 0.5)
    return np.minimum(np.floor(edges[:-1] + offset * width).astype(np.int64), n - 1)


def coverage_windows(n: int, num_frames: int) -> list[np.ndarray]:
    """Samplings (one frame per segment, shifted by 0, 1, ...) that together cover all ``n`` frames."""
    starts = np.floor(np.arange(num_frames) * n / num_frames).astype(np.int64)
    ends = np.maximum(np.floor(np.arange(1, num_frames + 1) * n / num_frames).astype(np.int64) - 1, starts)
    return [np.minimum(starts + j, ends) for j in range(int(math.ceil(n / num_frames)))]


# --------------------------------------------------------------------------- model inputs

#: ``inputs(clip, positions, rng)`` -> one clip's model input [T, ...]; rng given = training (augment).
Inputs = Callable[[Clip, np.ndarray, "np.random.Generator | None"], torch.Tensor]


class FeatureInputs:
    """Path B: cached per-frame features, clip id -> [n_frames, D]."""

    def __init__(self, features: dict[str, torch.Tensor]):
        self.features = features
        self.dim = int(next(iter(features.values())).shape[1])

    def __call__(self, clip: Clip, idx: np.ndarray, rng=None) -> torch.Tensor:
        return self.features[clip.clip_id][torch.as_tensor(idx)]  # [T, D]


class FrameInputs:
    """Path A: frames read from disk, resized to ``size``, in [0, 1]; augmented when given an rng.

    Augmentation (the same for every frame of one view): random crop of 70-100 %
    of the area resized back, horizontal flip, brightness and contrast jitter.
    """

    def __init__(self, size: int):
        self.size = int(size)

    def load(self, path: Path) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        with Image.open(path) as im:
            im = im.convert("RGB").resize((self.size, self.size), Image.BICUBIC)
            return pil_to_tensor(im).float().div(255)  # [3, S, S]

    def __call__(self, clip: Clip, idx: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        frames = torch.stack([self.load(clip.image_paths[i]) for i in idx])  # [T, 3, S, S]
        return frames if rng is None else self.augment(frames, rng)

    def augment(self, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        S = self.size
        side = max(2, int(round(S * math.sqrt(rng.uniform(0.7, 1.0)))))
        y0, x0 = (int(v) for v in rng.integers(0, S - side + 1, 2))
        out = F.interpolate(frames[:, :, y0:y0 + side, x0:x0 + side], size=(S, S), mode="bilinear", align_corners=False)
        if rng.random() < 0.5:
            out = out.flip(-1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.8, 1.2)
        return out.clamp(0, 1)


def _batch(clips: Sequence[Clip], inputs: Inputs, num_frames: int, rng: np.random.Generator | None):
    """(x [B, T, ...], y [B, T, 2]) with one sampling per clip."""
    xs, ys = [], []
    for clip in clips:
        idx = sample_indices(len(clip), num_frames, rng)
        xs.append(inputs(clip, idx, rng))
        ys.append(torch.from_numpy(clip.targets[idx]))
    return torch.stack(xs), torch.stack(ys)


# --------------------------------------------------------------------------- Path B feature cache


def resolve_backbone(cfg: TemporalVAConfig) -> str:
    """``"clip"`` or ``"scene"``; ``auto`` takes CLIP only when it is on this machine (no download)."""
    if cfg.backbone != "auto":
        return cfg.backbone
    if Path(cfg.clip_model).expanduser().is_dir():
        return "clip"
    try:
        from transformers import CLIPConfig

        CLIPConfig.from_pretrained(cfg.clip_model, local_files_only=True)
        return "clip"
    except (OSError, ValueError, ImportError):
        print(f"va-temporal: CLIP {cfg.clip_model!r} is not on this machine; Path B uses the scene backbone "
              "(give --clip-model DIR or --backbone clip to download)")
        return "scene"


def feature_pipeline_config(cfg: TemporalVAConfig, backbone: str | None = None):
    """The cache pipeline config of Path B: frame features only (no faces)."""
    from pipelines.pipeline import PipelineConfig

    backbone = backbone or resolve_backbone(cfg)
    return PipelineConfig(max_faces=0, scene_size=cfg.frame_size, va_backbone=backbone,
                          clip_model=cfg.clip_model, batch_size=32)


def extract_features(dataset: AfewVADataset, cache_dir: str | Path, pcfg, shard_size: int = 256,
                     on_shard=None, progress: bool = False):
    """Cache the features of every frame (resuming a partial build) and write ``index.json``.

    Returns the :class:`cache.build.BuildReport`. The index lists, per clip, its
    split and frame sample ids in frame order, and the frames the cache skipped.
    """
    from cache.build import build_cache
    from cache.store import write_json

    report = build_cache(dataset, cache_dir, pcfg, progress=progress, shard_size=shard_size, on_shard=on_shard)
    skipped = {s.sample_id: s.reason for s in report.skipped}
    index = {
        "feature": "va",
        "pipeline": pcfg.to_dict(),
        "clips": {c.clip_id: {"split": c.split, "frames": [s for s in c.sample_ids if s not in skipped]}
                  for c in dataset.clips_of()},
        "skipped": [{"id": k, "reason": v} for k, v in skipped.items()],
    }
    write_json(Path(cache_dir) / "index.json", index)
    return report


def load_features(cache_dir: str | Path, dataset: AfewVADataset, pcfg) -> tuple[dict[str, torch.Tensor], dict[str, Clip]]:
    """(clip id -> [n, D] features, clip id -> clip restricted to its cached frames)."""
    from cache.loader import CachedSplit

    cached = CachedSplit(cache_dir, None, expected_cfg=pcfg)
    features, clips = {}, {}
    for clip in dataset.clips_of():
        keep = [i for i, sid in enumerate(clip.sample_ids) if sid in cached]
        if not keep:
            continue
        clip = clip if len(keep) == len(clip) else clip.subset(keep)
        features[clip.clip_id] = cached.batch(list(clip.sample_ids)).tensors["va"].float()  # [n, D]
        clips[clip.clip_id] = clip
    if not features:
        raise UserError(f"{cache_dir}: no frame of the data set is in the feature cache")
    return features, clips


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


# --------------------------------------------------------------------------- prediction


@dataclass
class ClipPrediction:
    clip: Clip
    mean: np.ndarray  # [n, 2] per-frame prediction (MC mean)
    var: np.ndarray  # [n, 2] per-frame MC variance (0 without MC)
    clip_mean: np.ndarray  # [2]
    clip_var: np.ndarray  # [2] MC variance of the clip-averaged prediction


@torch.no_grad()
def predict_clips(model, clips: Sequence[Clip], inputs: Inputs, num_frames: int, device,
                  mc_samples: int = 1, batch_size: int = 16) -> list[ClipPrediction]:
    """Per-frame predictions over all frames of each clip (shifted samplings, averaged)."""
    model.eval()
    out = []
    for clip in clips:
        windows = coverage_windows(len(clip), num_frames)
        n_pass = mc_samples if mc_samples >= 2 else 1
        acc = torch.zeros(n_pass, len(clip), 2)
        count = torch.zeros(len(clip))
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            x = torch.stack([inputs(clip, w, None) for w in chunk]).to(device)  # [W, T, ...]
            s = model.mc_samples(x, n_pass) if n_pass >= 2 else model(x)[None]  # [n, W, T, 2]
            s = s.float().cpu()
            for wi, w in enumerate(chunk):
                pos = torch.as_tensor(w)
                acc.index_add_(1, pos, s[:, wi])
                count.index_add_(0, pos, torch.ones(len(w)))
        frames = acc / count[None, :, None]  # [n, len, 2]
        if n_pass >= 2:
            cm, cv = clip_va(frames[:, None])  # [1, 2] each
            var = frames.var(dim=0)
        else:
            cm, cv = frames.mean(dim=1), torch.zeros(1, 2)
            var = torch.zeros(len(clip), 2)
        out.append(ClipPrediction(clip, frames.mean(dim=0).numpy(), var.numpy(), cm[0].numpy(), cv[0].numpy()))
    return out


def score_predictions(preds: Sequence[ClipPrediction]) -> dict:
    return va_metrics(np.concatenate([p.mean for p in preds]), np.concatenate([p.clip.targets for p in preds]))


# --------------------------------------------------------------------------- training


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return device


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
        x, y = _batch(clips, inputs, cfg.num_frames, rng)
        return regression_loss(model(x.to(device)), y.to(device), cfg.ccc_weight)
    # two views per clip: independent samplings + augmentations; in-batch negatives
    v1, _ = _batch(clips, inputs, cfg.num_frames, rng)
    v2, _ = _batch(clips, inputs, cfg.num_frames, rng)
    return info_nce(model.embed(v1.to(device)), model.embed(v2.to(device)), cfg.temperature)


# --------------------------------------------------------------------------- evaluation


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def plot_trajectories(preds: Sequence[ClipPrediction], path: Path, max_clips: int = 6) -> Path:
    """Predicted (with +-1 MC std) vs true valence and arousal over the frames of a few clips."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(preds)[:max(1, max_clips)]
    fig, axes = plt.subplots(len(shown), 2, figsize=(9, 2.2 * len(shown)), squeeze=False, sharey=True)
    for row, p in zip(axes, shown):
        t = np.asarray(p.clip.frames)
        for k, (ax, name) in enumerate(zip(row, ("valence", "arousal"))):
            std = np.sqrt(p.var[:, k])
            ax.plot(t, p.clip.targets[:, k], color="black", label="true")
            ax.plot(t, p.mean[:, k], color="tab:blue", label="predicted")
            ax.fill_between(t, p.mean[:, k] - std, p.mean[:, k] + std, color="tab:blue", alpha=0.2)
            ax.set_title(f"clip {p.clip.clip_id}: {name}", fontsize=9)
            ax.set_ylim(-1.1, 1.1)
    axes[0, 0].legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("frame")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def evaluate(model, clips: Sequence[Clip], inputs: Inputs, cfg: TemporalVAConfig, out_dir: Path,
             train_mean: np.ndarray, device: torch.device, checkpoint: str) -> dict:
    """Metrics vs the mean predictor, per-frame and per-clip CSVs, trajectory plots, evaluation_results.json."""
    from neural.registry import get_network
    from neural.va import va_predicate_input

    if not clips:
        raise UserError("no clips to evaluate (the test split is empty; use more clips)")
    model.to(device)
    preds = predict_clips(model, clips, inputs, cfg.num_frames, device, cfg.mc_samples, cfg.batch_size)
    truth = np.concatenate([p.clip.targets for p in preds])
    metrics = va_metrics(np.concatenate([p.mean for p in preds]), truth)
    baseline = va_metrics(np.broadcast_to(train_mean, truth.shape), truth)

    frame_rows = [[p.clip.clip_id, f, sid, *p.clip.targets[i], *p.mean[i], *p.var[i]]
                  for p in preds for i, (f, sid) in enumerate(zip(p.clip.frames, p.clip.sample_ids))]
    atomic_write_text(out_dir / "predictions.csv", _csv_text(
        ["clip", "frame", "sample_id", "valence_true", "arousal_true", "valence_pred", "arousal_pred",
         "valence_var", "arousal_var"], frame_rows))
    # the logic's view of each clip: (mean, MC variance) -> the bin adapters
    pred_input = va_predicate_input(torch.tensor(np.stack([p.clip_mean for p in preds])),
                                    torch.tensor(np.stack([p.clip_var for p in preds])))
    valence_bins, arousal_bins = get_network("va_valence")(pred_input), get_network("va_arousal")(pred_input)
    clip_rows = [[p.clip.clip_id, p.clip.split, len(p.clip), *p.clip.targets.mean(axis=0), *p.clip_mean, *p.clip_var,
                  *valence_bins[i].tolist(), *arousal_bins[i].tolist()] for i, p in enumerate(preds)]
    atomic_write_text(out_dir / "clips.csv", _csv_text(
        ["clip", "split", "n_frames", "valence_true", "arousal_true", "valence_pred", "arousal_pred",
         "valence_var", "arousal_var", "p_valence_negative", "p_valence_neutral", "p_valence_positive",
         "p_arousal_low", "p_arousal_medium", "p_arousal_high"], clip_rows))
    plot_trajectories(preds, out_dir / "trajectories.png", cfg.max_plot_clips)
    results = {
        "path": cfg.path, "checkpoint": checkpoint, "split": "test", "n_clips": len(preds),
        "n_frames": int(truth.shape[0]), "metrics": metrics, "mean_predictor": baseline,
        "train_mean": [float(v) for v in train_mean], "mc_samples": cfg.mc_samples,
        "config": dataclasses.asdict(cfg),
    }
    atomic_write_json(out_dir / "evaluation_results.json", results)
    return results


# --------------------------------------------------------------------------- Path A model


def new_clip_model(cfg: TemporalVAConfig):
    from neural.registry import get_network
    from neural.temporal_va import TemporalCLIPConfig

    if cfg.backbone == "scene":
        raise UserError("Path A fine-tunes CLIP; --backbone scene is for Path B")
    from transformers import CLIPConfig

    try:
        proj = CLIPConfig.from_pretrained(cfg.clip_model).projection_dim
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load CLIP {cfg.clip_model!r} ({str(exc).splitlines()[0]}); Path A needs CLIP "
                        "weights: give --clip-model DIR (a local CLIP model directory)") from None
    config = TemporalCLIPConfig(clip_model=cfg.clip_model, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                head=cfg.head_config(proj))
    return get_network("temporal_va_clip", **dataclasses.asdict(config))


def finetune_init(cfg: TemporalVAConfig) -> tuple[object, str]:
    """(the stage-1 model to fine-tune, the checkpoint it came from)."""
    source = Path(cfg.checkpoint) if cfg.checkpoint else Path(cfg.out) / "checkpoints" / "pretrain" / "best"
    if not (source / "config.json").is_file():
        raise UserError(f"no stage-1 checkpoint at {source}; run --stage pretrain first or give --checkpoint")
    model = load_checkpoint(source)
    if model.registry_name != "temporal_va_clip":
        raise UserError(f"{source} is a {model.registry_name} checkpoint, not a Path A (temporal_va_clip) one")
    return model, str(source)


# --------------------------------------------------------------------------- driver


def run(cfg: TemporalVAConfig, argv: Sequence[str] = ()) -> dict | None:
    """Run the configured path and stage; returns the evaluation results when it evaluates."""
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_resolved_config(out, dataclasses.asdict(cfg), list(argv))
    dataset = load_afewva(cfg.data, seed=cfg.seed)
    if dataset.skipped:
        print(dataset.skip_report(limit=10))
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    if cfg.path == "B":
        pcfg = feature_pipeline_config(cfg)
        report = extract_features(dataset, out / "cache", pcfg, progress=cfg.progress)
        print("va-temporal: feature cache: " + report.summary().replace("\n", "\n  "))
        features, clips = load_features(out / "cache", dataset, pcfg)
        inputs: Inputs = FeatureInputs(features)
        ckpt = out / "checkpoints" / "pathB"
        if cfg.stage in ("train", "all"):
            from neural.registry import get_network

            model = get_network("temporal_va_head", **dataclasses.asdict(cfg.head_config(inputs.dim)))
            model.set_input_stats(torch.cat([features[c.clip_id] for c in _split(clips, "train")]))
            fit(model, "pathB", "regression", _split(clips, "train"), _split(clips, "val"), inputs, cfg, cfg.epochs,
                model.param_groups(cfg.lr), device, ckpt)
        eval_default = ckpt / "best"
    else:
        clips = dataset.clips
        inputs = None
        if cfg.stage in ("pretrain", "all"):
            model = new_clip_model(cfg)
            inputs = FrameInputs(model.image_size)
            fit(model, "pretrain", "contrastive", _split(clips, "train"), _split(clips, "val"), inputs, cfg,
                cfg.epochs_pretrain, model.param_groups(cfg.lr, cfg.lr_lora), device, out / "checkpoints" / "pretrain")
        if cfg.stage in ("finetune", "all"):
            model, source = finetune_init(cfg)
            inputs = FrameInputs(model.image_size)
            fit(model, "finetune", "regression", _split(clips, "train"), _split(clips, "val"), inputs, cfg,
                cfg.epochs_finetune, model.param_groups(cfg.lr, cfg.lr_lora), device, out / "checkpoints" / "finetune",
                init_from=source)
        eval_default = out / "checkpoints" / "finetune" / "best"

    if cfg.stage not in ("evaluate", "all"):
        return None
    source = Path(cfg.checkpoint) if cfg.stage == "evaluate" and cfg.checkpoint else eval_default
    if not (source / "config.json").is_file():
        raise UserError(f"no checkpoint to evaluate at {source}; train first or give --checkpoint")
    model = load_checkpoint(source)
    if cfg.path == "A":
        inputs = FrameInputs(model.image_size)
    train_mean = np.concatenate([c.targets for c in _split(clips, "train")]).mean(axis=0)
    results = evaluate(model, _split(clips, "test"), inputs, cfg, out / "evaluation", train_mean, device, str(source))
    print(format_results(results))
    return results


def _split(clips: dict[str, Clip], split: str) -> list[Clip]:
    return [c for c in clips.values() if c.split == split]


def format_results(results: dict) -> str:
    lines = [f"test: {results['n_clips']} clips, {results['n_frames']} frames (checkpoint {results['checkpoint']})",
             f"{'':10s} {'CCC':>7s} {'RMSE':>7s} {'Pearson':>8s}   mean predictor: {'CCC':>6s} {'RMSE':>7s}"]
    for dim in ("valence", "arousal"):
        m, b = results["metrics"][dim], results["mean_predictor"][dim]
        lines.append(f"{dim:10s} {m['ccc']:7.3f} {m['rmse']:7.3f} {m['pearson']:8.3f}   {'':16s}{b['ccc']:6.3f} {b['rmse']:7.3f}")
    return "\n".join(lines)

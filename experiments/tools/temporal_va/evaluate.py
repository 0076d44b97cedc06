"""Predictions over every frame of a clip, their metrics against the mean
predictor, the per-frame and per-clip CSVs and the trajectory plots."""
from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from experiments.runs import atomic_write_json, atomic_write_text
from experiments.tools.temporal_va.config import TemporalVAConfig
from experiments.tools.temporal_va.inputs import Inputs, coverage_windows
from experiments.va_metrics import va_metrics
from neural.common import UserError
from neural.temporal_va import clip_va
from pipelines.datasets.afewva import Clip


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

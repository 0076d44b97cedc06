"""``emologic va-temporal``: temporal valence/arousal on AFEW-VA (Path A: CLIP + LoRA; Path B: cached features)."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from experiments.cli import command

_HELP = {
    "seed": "seed of splits, sampling and initialisation",
    "num_frames": "frames sampled per clip (one per equal segment)",
    "batch_size": "clips per batch",
    "backbone": "Path B frame features: auto (CLIP if on this machine, else scene), clip, scene",
    "clip_model": "CLIP hub name or local directory",
    "frame_size": "Path B, scene backbone: input size in pixels",
    "epochs": "Path B: training epochs",
    "lr": "learning rate of the temporal and regression heads",
    "weight_decay": "AdamW weight decay",
    "ccc_weight": "loss = MSE + ccc_weight * (1 - CCC)",
    "d_model": "temporal transformer width",
    "n_layers": "temporal transformer layers",
    "n_heads": "temporal transformer attention heads",
    "dropout": "dropout of the temporal head (also the MC-dropout rate)",
    "epochs_pretrain": "Path A: contrastive pretraining epochs",
    "epochs_finetune": "Path A: regression fine-tuning epochs",
    "lr_lora": "Path A: learning rate of the LoRA adapters",
    "lora_r": "Path A: LoRA rank",
    "lora_alpha": "Path A: LoRA alpha",
    "temperature": "Path A: InfoNCE temperature",
    "checkpoint": "finetune: stage-1 checkpoint (default OUT/checkpoints/pretrain/best); evaluate: checkpoint to evaluate",
    "mc_samples": "MC-dropout passes at evaluation (1: none)",
    "max_plot_clips": "clips shown in trajectories.png",
    "device": "auto, cpu, cuda or cuda:N",
}


def _configure(p: argparse.ArgumentParser) -> None:
    from experiments.tools.temporal_va.config import TemporalVAConfig

    p.add_argument("--data", required=True, help="AFEW-VA root: one folder per clip with frames and <clip>.json")
    p.add_argument("--out", required=True, help="output directory (cache, checkpoints, evaluation)")
    p.add_argument("--path", choices=("A", "B"), default="B", help="A: CLIP + LoRA end to end; B: cached features (default)")
    p.add_argument("--stage", choices=("pretrain", "finetune", "train", "all", "evaluate"), default="all",
                   help="A: pretrain|finetune|all|evaluate; B: train|all|evaluate (default: all)")
    p.add_argument("--synthetic", action="store_true", help="first generate a small synthetic AFEW-VA in --data (if absent)")
    p.add_argument("--clips", type=int, default=40, help="--synthetic: number of clips (default: 40)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on CUDA")
    p.add_argument("--progress", action="store_true", help="progress bars while caching features")
    defaults = {f.name: f.default for f in dataclasses.fields(TemporalVAConfig)}
    for name, text in _HELP.items():
        default = defaults[name]
        flag = "--" + name.replace("_", "-")
        kind = str if default is None else type(default)
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")


@command(
    "va-temporal",
    help="Temporal valence/arousal on AFEW-VA frames: cached features + temporal head (B) or CLIP + LoRA (A)",
    example="emologic va-temporal --synthetic --data data/afewva-synth --path B --out runs/va-temporal",
    configure=_configure,
)
def run(args: argparse.Namespace) -> int:
    from experiments.tools.temporal_va.config import TemporalVAConfig
    from experiments.tools.temporal_va.run import run as run_temporal
    from pipelines.datasets.afewva_synthetic import AfewVASyntheticConfig, ensure_afewva_synthetic

    if args.synthetic:
        ensure_afewva_synthetic(args.data, AfewVASyntheticConfig(n_clips=args.clips))
    fields = {f.name for f in dataclasses.fields(TemporalVAConfig)}
    cfg = TemporalVAConfig(**{k: v for k, v in vars(args).items() if k in fields})
    run_temporal(cfg, sys.argv)
    return 0

"""A temporal V/A run: the Path A model (CLIP + LoRA + temporal head) and the
driver that extracts, trains and evaluates the configured path and stage."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from experiments.runs import write_resolved_config
from experiments.tools.temporal_va.config import TemporalVAConfig
from experiments.tools.temporal_va.evaluate import evaluate
from experiments.tools.temporal_va.inputs import (FeatureInputs, FrameInputs, Inputs, extract_features,
                                                  feature_pipeline_config, load_features)
from experiments.tools.temporal_va.train import fit
from neural.cluster import torch_device
from neural.common import UserError
from neural.temporal_va import load_checkpoint
from pipelines.datasets.afewva import Clip, load_afewva


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
    device = torch_device(cfg.device)
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

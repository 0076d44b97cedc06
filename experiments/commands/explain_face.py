"""``emologic explain-face``: Grad-CAM / Grad-CAM++ panels of the face predicate."""
from __future__ import annotations

import argparse
from pathlib import Path

from experiments.cli import command


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a train-face output directory (or its checkpoint/)")
    p.add_argument("images", nargs="+", help="face crops (or whole images with --detect)")
    p.add_argument("--out", required=True, help="directory for the PNG panels")
    p.add_argument("--labels", nargs="+", help="true emotion of each image, in order; "
                   "default: the parent folder's name when it is an emotion (DIR/<split>/<emotion>/x.png)")
    p.add_argument("--detect", action="store_true", help="find faces in whole images with MTCNN and explain each")


def _labels(args: argparse.Namespace) -> list[int | None]:
    from neural.vocabulary import EMOTIONS, emotion_index

    if args.labels is not None:
        return [emotion_index(name.lower()) for name in args.labels]
    return [EMOTIONS.index(Path(p).parent.name) if Path(p).parent.name in EMOTIONS else None for p in args.images]


@command(
    "explain-face",
    help="Grad-CAM and Grad-CAM++ heat maps of the face net for face crops or images",
    example="emologic explain-face runs/face faces/test/happy/0001.png --labels happy --out cams/",
    configure=_args,
)
def run(args: argparse.Namespace) -> int:
    from neural.facetrain.backbones import load_face_predicate
    from neural.gradcam import explain_files

    model = load_face_predicate(args.checkpoint)
    for exp in explain_files(model, args.images, args.out, _labels(args), detect=args.detect):
        from neural.vocabulary import EMOTIONS

        true = EMOTIONS[exp.true] if exp.true is not None else "?"
        print(f"{exp.name}: predicted {EMOTIONS[exp.pred]} ({exp.probs[exp.pred]:.2f}), true {true} -> {exp.panel}")
    return 0

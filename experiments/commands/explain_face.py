"""``emologic explain-face``: Grad-CAM / Grad-CAM++ of the face predicate, on face crops or photos."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.cli import command

#: The ``checkpoint`` value that names the real FER2013 weights.
FER2013 = "fer2013"


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=f"the face predicate: {FER2013} (mini-XCEPTION's FER2013 weights), a "
                   "train-face output directory, or a saved face_emotion network "
                   "(e.g. runs/latest/checkpoints/seed0/joint/networks/face_emotion)")
    p.add_argument("images", nargs="+", help="face crops, or photos with --detect")
    p.add_argument("--out", required=True, help="directory for the PNG panels, photo overlays and explanations.json")
    p.add_argument("--labels", nargs="+", help="true emotion of each image, in order; "
                   "default: the parent folder's name when it is an emotion (DIR/<split>/<emotion>/x.png)")
    p.add_argument("--detect", action="store_true",
                   help="photos: find up to three faces with MTCNN, explain each, draw the heat on the photo")
    p.add_argument("--json", action="store_true", help="print explanations.json instead of one line per face")


def _labels(args: argparse.Namespace) -> list[int | None]:
    from neural.common import EMOTIONS, emotion_index

    if args.labels is not None:
        return [emotion_index(name.lower()) for name in args.labels]
    return [EMOTIONS.index(Path(p).parent.name) if Path(p).parent.name in EMOTIONS else None for p in args.images]


def load_model(checkpoint: str):
    """The face predicate named on the command line."""
    if checkpoint == FER2013:
        from neural.fer_weights import pretrained_face_net

        return pretrained_face_net()
    from neural.facetrain.backbones import load_face_predicate

    return load_face_predicate(checkpoint)


@command(
    "explain-face",
    help="Grad-CAM and Grad-CAM++ heat maps of the face net for face crops or photos",
    example="emologic explain-face fer2013 photo.jpg --detect --out cams/\n"
            "  emologic explain-face runs/face faces/test/happy/0001.png --labels happy --out cams/",
    configure=_args,
)
def run(args: argparse.Namespace) -> int:
    from experiments.tools.face_explain import explain_files, record
    from neural.common import EMOTIONS

    exps = explain_files(load_model(args.checkpoint), args.images, args.out, _labels(args), detect=args.detect)
    if args.json:
        print(json.dumps([record(e) for e in exps], indent=2))
        return 0
    for exp in exps:
        true = EMOTIONS[exp.true] if exp.true is not None else "?"
        share = exp.heat_in_box()
        on_face = f", {share:.0%} of the Grad-CAM heat on the face box" if share is not None else ""
        photo = f"; photo -> {exp.overlay}" if exp.overlay else ""
        print(f"{exp.name}: predicted {EMOTIONS[exp.pred]} ({exp.probs[exp.pred]:.2f}), true {true}{on_face} "
              f"-> {exp.panel}{photo}")
    return 0

"""Grad-CAM and Grad-CAM++ heat maps of the face predicate (the ``grad-cam`` package).

For each face crop: the crop, its Grad-CAM and its Grad-CAM++ heat map for the
predicted class, side by side in one PNG panel titled with the predicted label
(and its probability) and the true label when known.

The target layer is the backbone's last convolutional block
(:attr:`neural.facetrain.backbones.BackboneSpec.cam_layer`): mini-XCEPTION's
last residual block (4x4 maps, upsampled), ResNet-50's ``layer4[-1]``,
ConvNeXt's last stage, EfficientNet's ``conv_head``; for ViT the last block's
``norm1`` with its patch tokens reshaped to a grid.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neural.errors import UserError
from neural.vocabulary import EMOTIONS


class GradCamError(UserError):
    """Grad-CAM could not run (missing package, bad input)."""


def _import_grad_cam():
    try:
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise GradCamError("explain-face needs the grad-cam package: pip install grad-cam") from None
    return GradCAM, GradCAMPlusPlus, ClassifierOutputTarget


class _Logits(nn.Module):
    """Grad-CAM scores the model's outputs: give it logits, not probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x)


@dataclass
class Explanation:
    crop: np.ndarray  # float [64, 64] in [0, 1]
    probs: np.ndarray  # [7]
    pred: int
    true: int | None
    gradcam: np.ndarray  # [64, 64] in [0, 1]
    gradcam_pp: np.ndarray  # [64, 64] in [0, 1]
    name: str
    panel: Path | None = None


def explain(model: nn.Module, crops: torch.Tensor, names: list[str], labels: list[int | None] | None = None) -> list[Explanation]:
    """Heat maps for ``crops`` [N, 1, 64, 64] in [-1, 1] (targets: the predicted classes)."""
    from neural.facetrain.backbones import spec_of_model

    GradCAM, GradCAMPlusPlus, ClassifierOutputTarget = _import_grad_cam()
    model = model.cpu().eval()
    spec = spec_of_model(model)
    layer, reshape = spec.cam_layer(model), spec.cam_reshape(model)
    with torch.no_grad():
        probs = model(crops).numpy()
    preds = probs.argmax(1)
    targets = [ClassifierOutputTarget(int(p)) for p in preds]
    wrapped = _Logits(model)
    maps = {}
    for key, cls in (("gradcam", GradCAM), ("gradcam_pp", GradCAMPlusPlus)):
        with cls(model=wrapped, target_layers=[layer], reshape_transform=reshape) as cam:
            maps[key] = cam(input_tensor=crops.clone(), targets=targets)  # [N, 64, 64] in [0, 1]
    labels = labels or [None] * len(crops)
    return [
        Explanation(
            crop=((crops[i, 0].numpy() + 1.0) / 2.0).clip(0, 1), probs=probs[i], pred=int(preds[i]), true=labels[i],
            gradcam=maps["gradcam"][i], gradcam_pp=maps["gradcam_pp"][i], name=names[i],
        )
        for i in range(len(crops))
    ]


def save_panel(exp: Explanation, path: str | os.PathLike) -> Path:
    """One PNG: crop | Grad-CAM overlay | Grad-CAM++ overlay, titled predicted vs true."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.repeat(exp.crop[..., None], 3, axis=2).astype(np.float32)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
    axes[0].imshow(exp.crop, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("crop", fontsize=9)
    axes[1].imshow(show_cam_on_image(rgb, exp.gradcam, use_rgb=True))
    axes[1].set_title("Grad-CAM", fontsize=9)
    axes[2].imshow(show_cam_on_image(rgb, exp.gradcam_pp, use_rgb=True))
    axes[2].set_title("Grad-CAM++", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    true = EMOTIONS[exp.true] if exp.true is not None else "?"
    mark = "" if exp.true is None else ("  [correct]" if exp.true == exp.pred else "  [wrong]")
    fig.suptitle(f"{exp.name}: predicted {EMOTIONS[exp.pred]} ({exp.probs[exp.pred]:.2f}) | true {true}{mark}", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def load_crops(paths: list[str], detect: bool = False, margin: float = 0.2) -> tuple[torch.Tensor, list[str], list[str]]:
    """Face crops [N, 1, 64, 64] in [-1, 1] from image files, their names and their source files.

    Without ``detect`` each file is one face crop (any size, converted to 64x64
    grayscale). With ``detect`` MTCNN finds up to three faces per image and each
    is cropped like the image pipeline does; an image without faces is an error.
    """
    from neural.face_data import crop_to_uint8, to_model_input
    from pipelines.faces import crop_faces, get_detector
    from pipelines.images import load_image

    crops, names, sources = [], [], []
    detector = get_detector("mtcnn") if detect else None
    for p in paths:
        image = load_image(p)
        stem = Path(p).stem
        if detector is None:
            crops.append(crop_to_uint8(image))
            names.append(stem)
            sources.append(p)
            continue
        faces = detector.detect([image])[0]
        if not len(faces):
            raise GradCamError(f"{p}: no face found (pass face crops without --detect)")
        for k, crop in enumerate(crop_faces(image, faces.boxes, margin)):
            crops.append(crop)
            names.append(f"{stem}_face{k + 1}")
            sources.append(p)
    return to_model_input(torch.from_numpy(np.stack(crops))), names, sources


def explain_files(
    model: nn.Module, paths: list[str], out_dir: str | os.PathLike,
    labels: list[int | None] | None = None, detect: bool = False,
) -> list[Explanation]:
    """Explain the faces in ``paths`` and write one panel per face to ``out_dir/<name>_cam.png``.

    ``labels`` (one per file, or None) are the true labels shown in the panels.
    """
    if labels is not None and len(labels) != len(paths):
        raise GradCamError(f"got {len(labels)} label(s) for {len(paths)} image(s); give one per image")
    crops, names, sources = load_crops(paths, detect)
    per_file = dict(zip(paths, labels)) if labels is not None else {}
    exps = explain(model, crops, names, [per_file.get(s) for s in sources])
    out = Path(out_dir)
    for exp in exps:
        exp.panel = save_panel(exp, out / f"{exp.name}_cam.png")
    return exps

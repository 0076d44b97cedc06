"""Grad-CAM and Grad-CAM++ heat maps of the face predicate (the ``grad-cam`` package).

For each face crop: the crop, its Grad-CAM and its Grad-CAM++ heat map for the
predicted class, side by side in one PNG panel titled with the predicted label
(and its probability) and the true label when known. Files and photos (faces
found by MTCNN, heat put back on the photo) are :mod:`experiments.tools.face_explain`.

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

from neural.common import EMOTIONS, UserError


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
    target: int = -1  # the class the heat maps explain (the predicted one)
    panel: Path | None = None
    # where the crop came from, when it was cut from a photo (pixels of the photo)
    source: str | None = None
    box: np.ndarray | None = None  # [4] the detector's face box (x1, y1, x2, y2)
    region: tuple[float, float, float, float] | None = None  # the square the crop shows
    overlay: Path | None = None  # the photo with the heat maps of its faces

    def box_mask(self) -> np.ndarray | None:
        """[64, 64] bool: the crop pixels whose centre lies inside the face box (None without a box)."""
        if self.box is None or self.region is None:
            return None
        h, w = self.crop.shape
        left, top, right, bottom = self.region
        sx, sy = w / (right - left), h / (bottom - top)
        x1, y1, x2, y2 = ((self.box[0] - left) * sx, (self.box[1] - top) * sy,
                          (self.box[2] - left) * sx, (self.box[3] - top) * sy)
        yy, xx = np.mgrid[:h, :w] + 0.5
        return (xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)

    def heat_in_box(self, which: str = "gradcam") -> float | None:
        """The fraction of a heat map (``gradcam`` or ``gradcam_pp``) that lies on the face box.

        The crop has a margin around the box (the box covers about 55 % of it with
        the pipeline's margin 0.2), so a map that ignores the face scores about that."""
        mask = self.box_mask()
        if mask is None:
            return None
        heat = getattr(self, which)
        total = float(heat.sum())
        return float(heat[mask].sum()) / total if total > 0 else 0.0


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
    classes = [int(p) for p in preds]  # what each map explains: the predicted class
    targets = [ClassifierOutputTarget(c) for c in classes]
    wrapped = _Logits(model)
    maps = {}
    for key, cls in (("gradcam", GradCAM), ("gradcam_pp", GradCAMPlusPlus)):
        with cls(model=wrapped, target_layers=[layer], reshape_transform=reshape) as cam:
            maps[key] = cam(input_tensor=crops.clone(), targets=targets)  # [N, 64, 64] in [0, 1]
    labels = labels or [None] * len(crops)
    return [
        Explanation(
            crop=((crops[i, 0].numpy() + 1.0) / 2.0).clip(0, 1), probs=probs[i], pred=int(preds[i]), true=labels[i],
            gradcam=maps["gradcam"][i], gradcam_pp=maps["gradcam_pp"][i], name=names[i], target=classes[i],
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

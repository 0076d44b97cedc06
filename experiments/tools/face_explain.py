"""Grad-CAM of the face predicate on image files (``emologic explain-face``).

Two kinds of input:

- face crops (any size; each file is one face, read as 64x64 grayscale);
- photos (``detect=True``): MTCNN, with the image pipeline's settings, finds up
  to three faces, each is cropped as the pipeline crops it and explained, and
  its heat map is put back where its crop came from: one overlay per photo with
  the heat, the face boxes and what the face net read in each.

Every face gets a panel (:func:`neural.gradcam.save_panel`), and the run writes
``explanations.json``: per face the predicted and explained class, the
probabilities, and for a photo the face box and the share of the Grad-CAM heat
that lies on it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from experiments.runs import atomic_write_json
from neural.gradcam import Explanation, GradCamError, explain, save_panel
from neural.common import EMOTIONS


@dataclass
class Crops:
    """Face crops cut from files, with where each came from."""

    crops: torch.Tensor  # [N, 1, 64, 64] in [-1, 1]
    names: list[str]
    sources: list[str]
    boxes: list[np.ndarray | None]  # the face box in its photo (detect mode)
    regions: list[tuple[float, float, float, float] | None]  # the square of the photo each crop shows


def load_crops(paths: list[str], detect: bool = False) -> Crops:
    """Face crops from image files: each file one crop, or (``detect``) up to three
    faces per photo found and cropped like the image pipeline does; a photo
    without faces is an error."""
    from neural.face_data import crop_to_uint8, to_model_input
    from pipelines.faces import crop_faces, detector_from_config, square_box
    from pipelines.images import load_image
    from pipelines.pipeline import PipelineConfig

    cfg = PipelineConfig(face_source="mtcnn")
    detector = detector_from_config(cfg) if detect else None
    crops, names, sources, boxes, regions = [], [], [], [], []
    for p in paths:
        image = load_image(p)
        stem = Path(p).stem
        if detector is None:
            crops.append(crop_to_uint8(image))
            names.append(stem)
            sources.append(str(p))
            boxes.append(None)
            regions.append(None)
            continue
        faces = detector.detect([image])[0]
        if not len(faces):
            raise GradCamError(f"{p}: no face found (pass face crops without --detect)")
        face_crops = crop_faces(image, faces.boxes, cfg.crop_margin, cfg.crop_size)  # uint8 [n, 64, 64]
        for k, (crop, box) in enumerate(zip(face_crops, faces.boxes)):
            crops.append(crop)
            names.append(f"{stem}_face{k + 1}")
            sources.append(str(p))
            boxes.append(np.asarray(box, np.float32))
            regions.append(square_box(box, *image.size, cfg.crop_margin))
    return Crops(to_model_input(torch.from_numpy(np.stack(crops))), names, sources, boxes, regions)


def photo_heat(faces: list[Explanation], size: tuple[int, int], which: str = "gradcam") -> np.ndarray:
    """[H, W] float in [0, 1]: each face's heat map resized into the square its crop
    came from (the maximum where squares overlap), zero elsewhere in the photo."""
    width, height = size
    heat = np.zeros((height, width), np.float32)
    for exp in faces:
        left, top, right, bottom = exp.region
        x1, y1 = int(round(left)), int(round(top))
        x2, y2 = max(x1 + 1, int(round(right))), max(y1 + 1, int(round(bottom)))
        x2, y2 = min(x2, width), min(y2, height)
        patch = Image.fromarray(getattr(exp, which).astype(np.float32), mode="F").resize(
            (x2 - x1, y2 - y1), Image.Resampling.BILINEAR)
        heat[y1:y2, x1:x2] = np.maximum(heat[y1:y2, x1:x2], np.asarray(patch))
    return heat.clip(0.0, 1.0)


def save_photo_overlay(path: str | os.PathLike, faces: list[Explanation], out: str | os.PathLike) -> Path:
    """The photo with its faces' Grad-CAM heat blended in, each face box drawn and
    labelled with what the face net read there."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from pipelines.images import load_image

    image = load_image(path)
    rgb = np.asarray(image, np.float32) / 255.0
    heat = photo_heat(faces, image.size)
    blended = show_cam_on_image(rgb, heat, use_rgb=True, image_weight=0.5)  # uint8 [H, W, 3]
    # only the faces' squares carry heat: elsewhere the photo is shown as it is
    inside = np.zeros(heat.shape, bool)
    for exp in faces:
        left, top, right, bottom = (int(round(v)) for v in exp.region)
        inside[top:bottom, left:right] = True
    picture = Image.fromarray(np.where(inside[..., None], blended, np.asarray(image)))
    draw = ImageDraw.Draw(picture)
    line = max(2, round(max(image.size) / 300))
    for k, exp in enumerate(faces, 1):
        x1, y1, x2, y2 = (float(v) for v in exp.box)
        draw.rectangle((x1, y1, x2, y2), outline=(255, 255, 255), width=line)
        label = f"face{k}: {EMOTIONS[exp.pred]} {exp.probs[exp.pred]:.2f}"
        draw.text((x1 + line, y2 + line), label, fill=(255, 255, 255))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    picture.save(tmp)
    os.replace(tmp, out)
    return out


def record(exp: Explanation) -> dict:
    """One face's explanation as JSON."""
    share = {k: exp.heat_in_box(k) for k in ("gradcam", "gradcam_pp")}
    return {
        "name": exp.name,
        "image": exp.source,
        "predicted": EMOTIONS[exp.pred],
        "p": round(float(exp.probs[exp.pred]), 4),
        "explained_class": EMOTIONS[exp.target],
        "true": EMOTIONS[exp.true] if exp.true is not None else None,
        "probs": {e: round(float(p), 4) for e, p in zip(EMOTIONS, exp.probs)},
        "box": None if exp.box is None else [round(float(v), 1) for v in exp.box],
        "heat_in_face_box": None if exp.box is None else {k: round(v, 4) for k, v in share.items()},
        "panel": str(exp.panel) if exp.panel else None,
        "overlay": str(exp.overlay) if exp.overlay else None,
    }


def explain_files(
    model: torch.nn.Module, paths: list[str], out_dir: str | os.PathLike,
    labels: list[int | None] | None = None, detect: bool = False,
) -> list[Explanation]:
    """Explain the faces in ``paths``: one panel per face (``out_dir/<name>_cam.png``),
    with ``detect`` one overlay per photo (``out_dir/<stem>_photo_cam.png``, also
    set as each face's ``overlay``), and ``out_dir/explanations.json``.

    ``labels`` (one per file, or None) are the true labels shown in the panels.
    """
    if labels is not None and len(labels) != len(paths):
        raise GradCamError(f"got {len(labels)} label(s) for {len(paths)} image(s); give one per image")
    crops = load_crops(paths, detect)
    per_file = dict(zip(map(str, paths), labels)) if labels is not None else {}
    exps = explain(model, crops.crops, crops.names, [per_file.get(s) for s in crops.sources])
    out = Path(out_dir)
    for exp, source, box, region in zip(exps, crops.sources, crops.boxes, crops.regions):
        exp.source, exp.box, exp.region = source, box, region
        exp.panel = save_panel(exp, out / f"{exp.name}_cam.png")
    if detect:
        for source in dict.fromkeys(crops.sources):
            faces = [e for e in exps if e.source == source]
            overlay = save_photo_overlay(source, faces, out / f"{Path(source).stem}_photo_cam.png")
            for exp in faces:
                exp.overlay = overlay
    atomic_write_json(out / "explanations.json", [record(e) for e in exps])
    return exps

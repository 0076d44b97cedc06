"""Labelled face-crop data sets from disk, for training the face emotion recogniser.

Two layouts are read (labels must be names from :data:`neural.common.EMOTIONS`):

* a folder ``root/<split>/<emotion>/*.png`` (any image format PIL reads), e.g.
  ``faces/train/happy/0001.png``; every sub-directory of ``root`` is a split;
* a CSV file with the columns ``path,label,split`` (relative paths are resolved
  against the CSV's directory).

Every crop is decoded once (:func:`pipelines.images.load_image`: any mode, size
limits, clear errors), converted to grayscale, resized to 64x64 and kept in
memory (:class:`neural.face_data.FaceCropData`). A file that cannot be decoded is
a recorded skip (``FaceCropData.skipped``), not a crash; an unknown label is a
one-line error.

:func:`export_synthetic_face_crops` writes the synthetic benchmark's annotated
faces into the folder layout, labelled with each face's own expression.
"""
from __future__ import annotations

import csv
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from neural.face import FACE_SIZE
from neural.face_data import FaceCropData, FaceCrops, FaceDataError, crop_to_uint8
from neural.common import EMOTIONS, VocabularyError, emotion_index
from pipelines.datasets.synthetic import load_synthetic_dir
from pipelines.faces import crop_faces
from pipelines.images import BadImageError, load_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _label(raw: str, where: str) -> int:
    try:
        return emotion_index(raw.strip().lower())
    except VocabularyError as exc:
        raise FaceDataError(f"{where}: {exc}") from None


def _load_items(items: list[tuple[str, int, str]], source: str, size: int) -> FaceCropData:
    """items = (path, label index, split) -> decoded crops grouped by split."""

    by_split: dict[str, tuple[list[np.ndarray], list[int], list[str]]] = {}
    skipped: list[tuple[str, str]] = []
    for path, label, split in items:
        try:
            arr = crop_to_uint8(load_image(path), size)
        except (BadImageError, FileNotFoundError, OSError) as exc:
            skipped.append((str(path), str(exc)))
            continue
        imgs, labels, paths = by_split.setdefault(split, ([], [], []))
        imgs.append(arr)
        labels.append(label)
        paths.append(str(path))
    splits = {
        name: FaceCrops(torch.from_numpy(np.stack(imgs)), torch.tensor(labels, dtype=torch.int64), paths)
        for name, (imgs, labels, paths) in by_split.items()
    }
    if not splits:
        reason = f"; first problem: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise FaceDataError(f"{source}: no readable face crops{reason}")
    return FaceCropData(source, splits, skipped)


def load_face_folder(root: str | os.PathLike, size: int = FACE_SIZE) -> FaceCropData:
    """Read ``root/<split>/<emotion>/*``; emotion folders must be EMOTIONS names."""
    root = Path(root)
    if not root.is_dir():
        raise FaceDataError(f"{root}: not a directory of face crops")
    items: list[tuple[str, int, str]] = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            label = _label(label_dir.name, f"{label_dir} (expected {root}/<split>/<emotion>/)")
            for f in sorted(label_dir.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    items.append((str(f), label, split_dir.name))
    if not items:
        raise FaceDataError(
            f"{root}: no images found; expected the layout {root}/<split>/<emotion>/*.png "
            f"with <emotion> one of {', '.join(EMOTIONS)}"
        )
    return _load_items(items, str(root), size)


def load_face_csv(path: str | os.PathLike, size: int = FACE_SIZE) -> FaceCropData:
    """Read a CSV with the columns ``path,label,split`` (relative paths: against the CSV's folder)."""
    path = Path(path)
    if not path.is_file():
        raise FaceDataError(f"{path}: CSV file not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("path", "label", "split") if c not in header]
        if missing:
            raise FaceDataError(f"{path}: missing column(s) {', '.join(missing)}; the header must contain path,label,split")
        items = []
        for lineno, row in enumerate(reader, 2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if not row["path"] or not row["split"]:
                raise FaceDataError(f"{path}:{lineno}: empty path or split")
            file = Path(row["path"]).expanduser()
            file = file if file.is_absolute() else path.parent / file
            items.append((str(file), _label(row["label"], f"{path}:{lineno}"), row["split"]))
    if not items:
        raise FaceDataError(f"{path}: no rows")
    return _load_items(items, str(path), size)


def load_face_data(source: str | os.PathLike, size: int = FACE_SIZE) -> FaceCropData:
    """A folder (``root/<split>/<emotion>/``) or a ``.csv`` file of labelled crops."""
    source = Path(source)
    if source.is_dir():
        return load_face_folder(source, size)
    if source.suffix.lower() == ".csv" or source.is_file():
        return load_face_csv(source, size)
    raise FaceDataError(f"{source}: no such folder or CSV file")


def _atomic_png(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(array, "L").save(fh, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def export_synthetic_face_crops(
    synthetic_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    margin: float = 0.2,
    size: int = FACE_SIZE,
) -> dict[str, dict[str, int]]:
    """Write every annotated face of a synthetic set to ``out_dir/<split>/<emotion>/<id>_f<k>.png``.

    Crops are made exactly as the image pipeline makes them
    (:func:`pipelines.faces.crop_faces`, same ``margin``); the label is the
    face's own expression (``annotations["face_emotions"]``), not the image's.
    Returns ``{split: {emotion: count}}``.
    """
    dataset = load_synthetic_dir(synthetic_root)
    out = Path(out_dir)
    counts: dict[str, Counter] = {}
    for sample in dataset:
        boxes = sample.annotations.get("boxes") or []
        if not boxes:
            continue
        crops = crop_faces(load_image(sample.image_path), boxes, margin, size)
        for k, (crop, emotion) in enumerate(zip(crops, sample.annotations["face_emotions"])):
            folder = out / sample.split / emotion
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_png(folder / f"{sample.sample_id}_f{k + 1}.png", crop)
            counts.setdefault(sample.split, Counter())[emotion] += 1
    if not counts:
        raise FaceDataError(f"{synthetic_root}: the synthetic set has no faces to export")
    return {split: dict(sorted(c.items())) for split, c in sorted(counts.items())}

"""Face boxes and 64x64 grayscale face crops.

Detectors are registered by name (``get_detector(name, **cfg)``):

* ``mtcnn``: facenet-pytorch MTCNN (weights ship in the wheel; run by torch, or
  by onnxruntime with ``runtime="onnx"``), every face
  with probability >= ``prob_threshold`` and a side (after clipping the box to
  the image) >= ``min_face_size`` pixels; a photo whose long side exceeds
  ``max_side`` is searched at that size and its boxes scaled back;
* ``annotations``: the boxes a data set recorded in ``sample.annotations["boxes"]``
  (probability 1.0).

Both return at most ``max_faces`` faces sorted by box area, largest first.
No face is ever invented: an image without faces has ``n = 0``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from neural.common import MAX_FACES, UserError


class FaceError(UserError):
    """A sample whose face information is unusable (recorded as a skip)."""


@dataclass
class Faces:
    boxes: np.ndarray  # [n, 4] float32, pixels (x1, y1, x2, y2), largest area first
    probs: np.ndarray  # [n] float32 detection probability
    found: int | None = None  # faces detected before the largest max_faces were kept (None: n)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def n_found(self) -> int:
        """How many faces the detector found (``len(self)`` of them are kept)."""
        return len(self.boxes) if self.found is None else self.found

    @classmethod
    def none(cls) -> "Faces":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


def box_areas(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def select_largest(boxes, probs, max_faces: int) -> Faces:
    """Keep the ``max_faces`` largest boxes, largest first (stable for equal areas)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    probs = np.asarray(probs, np.float32).reshape(-1)
    order = np.argsort(-box_areas(boxes), kind="stable")[:max_faces]
    return Faces(boxes[order].copy(), probs[order].copy(), len(boxes))


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


# --------------------------------------------------------------------------- registry

_DETECTORS: dict[str, Callable[..., "FaceDetector"]] = {}


def register_detector(name: str):
    def deco(cls):
        _DETECTORS[name] = cls
        cls.name = name
        return cls

    return deco


def list_detectors() -> list[str]:
    return sorted(_DETECTORS)


def detector_class(name: str):
    if name not in _DETECTORS:
        raise UserError(f"unknown face source {name!r}; known face sources: {', '.join(list_detectors())}")
    return _DETECTORS[name]


def get_detector(name: str, **cfg) -> "FaceDetector":
    """Build detector ``name`` from its keyword arguments."""
    return detector_class(name)(**cfg)


def detector_from_config(cfg, device: str = "cpu", runtime: str = "torch") -> "FaceDetector":
    """The detector a :class:`pipelines.pipeline.PipelineConfig` asks for, its network (if any) on
    ``device``, run by ``runtime`` (MTCNN: "torch" or "onnx", see :class:`MTCNNFaces`)."""
    return detector_class(cfg.face_source).from_config(cfg, device=device, runtime=runtime)


class FaceDetector:
    name: str

    def detect(self, images: Sequence[Image.Image], samples: Sequence) -> list[Faces | FaceError]:
        """Faces of each image (``samples[i]`` is the data set sample of ``images[i]``).

        A per-image problem is returned in place as a :class:`FaceError` so that
        one bad sample does not lose the batch.
        """
        raise NotImplementedError


@register_detector("annotations")
class AnnotationFaces(FaceDetector):
    """Boxes recorded by the data set, ``annotations["boxes"] = [[x1, y1, x2, y2], ...]``."""

    def __init__(self, max_faces: int = MAX_FACES):
        self.max_faces = max_faces

    @classmethod
    def from_config(cls, cfg, device: str = "cpu", runtime: str = "torch") -> "AnnotationFaces":
        # min_face_size / face_prob_threshold tune a detector; recorded boxes are the truth
        # (no network: neither device nor runtime applies).
        return cls(max_faces=cfg.max_faces)

    def detect(self, images, samples):
        out: list[Faces | FaceError] = []
        for image, sample in zip(images, samples):
            if self.max_faces == 0:  # no faces wanted (e.g. per-frame video features): no boxes needed
                out.append(Faces.none())
                continue
            annotations = getattr(sample, "annotations", None) or {}
            if "boxes" not in annotations:
                raise UserError(
                    f"face_source='annotations' needs annotations['boxes'], but sample "
                    f"{sample.sample_id!r} has none; use face_source='mtcnn' for this data set"
                )
            try:
                boxes = np.asarray(annotations["boxes"], dtype=np.float32).reshape(-1, 4)
            except (TypeError, ValueError):
                out.append(FaceError(f"annotations['boxes'] is not a list of [x1, y1, x2, y2]: {annotations['boxes']!r}"))
                continue
            w, h = image.size
            bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            outside = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= w) | (boxes[:, 1] >= h)
            if (bad | outside).any():
                out.append(FaceError(f"invalid face box {boxes[bad | outside][0].tolist()} for a {w}x{h} image"))
                continue
            boxes = clip_boxes(boxes, w, h)
            out.append(select_largest(boxes, np.ones(len(boxes), np.float32), self.max_faces))
        return out


#: Long side (pixels) at which MTCNN searches a photo. MTCNN's first stage runs on
#: the whole image at scale 12 / min_face_size: a 4000x4000 camera photo took 6.8 s
#: and 0.7 GB there (one CPU thread), and a batch of 32 such photos of one size
#: would need ~20 GB (4 took 2.8 GB). Searched at 1280 px (0.7 s), the smallest face
#: found is min_face_size / 1280 of the long side (1.6 %, 62 px of 4000); crops
#: are still cut from the full-resolution photo.
DEFAULT_MTCNN_MAX_SIDE = 1280
#: Pixels (after downscaling) per MTCNN batch: the batch's float tensor and its
#: first-stage maps grow with it (16 photos of 1280x1280 peaked at +1 GB).
MTCNN_BATCH_PIXELS = 8_000_000


#: How MTCNN's networks run: facenet-pytorch itself, or its networks exported to ONNX
#: (``pipelines.mtcnn_onnx``: the same boxes without importing torch, for fast queries).
MTCNN_RUNTIMES = ("onnx", "torch")


@register_detector("mtcnn")
class MTCNNFaces(FaceDetector):
    """facenet-pytorch MTCNN on CPU; images of equal size are detected as one batch
    (at most ``batch_size`` images and :data:`MTCNN_BATCH_PIXELS` pixels).

    ``runtime="onnx"`` runs the same detector with onnxruntime and numpy
    (:class:`pipelines.mtcnn_onnx.OnnxMTCNN`); it does not import torch once the
    ONNX files are exported (the first use exports them, with torch)."""

    def __init__(
        self,
        max_faces: int = MAX_FACES,
        min_face_size: int = 20,
        prob_threshold: float = 0.9,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        batch_size: int = 16,
        max_side: int = DEFAULT_MTCNN_MAX_SIDE,
        device: str = "cpu",
        runtime: str = "torch",
    ):
        if runtime not in MTCNN_RUNTIMES:
            raise UserError(f"unknown MTCNN runtime {runtime!r}; known runtimes: {', '.join(MTCNN_RUNTIMES)}")
        if runtime == "onnx" and str(device) != "cpu":
            raise UserError(f"MTCNN runtime 'onnx' runs on the CPU, not on {device!r}; use runtime='torch' there")
        self.max_faces = max_faces
        self.min_face_size = int(min_face_size)
        self.prob_threshold = float(prob_threshold)
        self.batch_size = max(1, int(batch_size))
        self.max_side = max(1, int(max_side))
        self.runtime = runtime
        # self.mtcnn.detect(images) -> (boxes or None, probs) per image, facenet's contract either way
        self.mtcnn = self._onnx(thresholds) if runtime == "onnx" else self._facenet(thresholds, device)

    def _facenet(self, thresholds, device):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise UserError("face_source='mtcnn' needs facenet-pytorch: pip install facenet-pytorch==2.5.3") from exc
        return MTCNN(
            keep_all=True,
            select_largest=True,
            min_face_size=self.min_face_size,
            thresholds=list(thresholds),
            device=device,  # P/R/O-nets run there; facenet-pytorch returns boxes as numpy either way
        )

    def _onnx(self, thresholds):
        from pipelines.mtcnn_onnx import OnnxMTCNN

        return OnnxMTCNN(min_face_size=self.min_face_size, thresholds=thresholds)

    @classmethod
    def from_config(cls, cfg, device: str = "cpu", runtime: str = "torch") -> "MTCNNFaces":
        # runtime is not in the config: both runtimes find the same faces
        return cls(
            device=device,
            runtime=runtime,
            max_faces=cfg.max_faces,
            min_face_size=cfg.min_face_size,
            prob_threshold=cfg.face_prob_threshold,
            thresholds=cfg.mtcnn_thresholds,
            batch_size=cfg.batch_size,
            max_side=cfg.mtcnn_max_side,
        )

    def search_size(self, width: int, height: int) -> tuple[int, int]:
        """The size MTCNN searches an image of ``width`` x ``height`` at (long side <= ``max_side``)."""
        scale = self.max_side / max(width, height)
        if scale >= 1.0:
            return width, height
        return max(1, round(width * scale)), max(1, round(height * scale))

    def _one_batch(self, images: list[Image.Image]) -> list[Faces]:
        w, h = images[0].size
        sw, sh = self.search_size(w, h)
        if min(sw, sh) < self.min_face_size:  # MTCNN's image pyramid is empty: no face can fit
            return [Faces.none() for _ in images]
        if (sw, sh) != (w, h):
            # PIL's resize widens its filter with the reduction (antialiased); reducing_gap=3
            # first box-reduces by an integer factor (fast), then filters the rest
            images = [im.resize((sw, sh), Image.Resampling.BILINEAR, reducing_gap=3.0) for im in images]
        batch_boxes, batch_probs = self.mtcnn.detect(list(images))
        to_original = np.array([w / sw, h / sh, w / sw, h / sh], np.float32)
        out = []
        for boxes, probs in zip(batch_boxes, batch_probs):
            if boxes is None:
                out.append(Faces.none())
                continue
            boxes = clip_boxes(np.asarray(boxes, np.float32) * to_original, w, h)
            probs = np.asarray(probs, np.float32).reshape(-1)
            sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            # MTCNN's min_face_size only bounds its image pyramid; regressed boxes can
            # come out smaller, so the limit is applied to the final boxes as well.
            keep = (probs >= self.prob_threshold) & (sides >= self.min_face_size)
            out.append(select_largest(boxes[keep], probs[keep], self.max_faces))
        return out

    def detect(self, images, samples=None):
        results: list[Faces | FaceError | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(im.size, []).append(i)
        for (w, h), idx in by_size.items():
            sw, sh = self.search_size(w, h)
            step = max(1, min(self.batch_size, MTCNN_BATCH_PIXELS // (sw * sh)))
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                for i, faces in zip(chunk, self._one_batch([images[i] for i in chunk])):
                    results[i] = faces
        return results


# --------------------------------------------------------------------------- crops

def square_box(box, width: int, height: int, margin: float) -> tuple[float, float, float, float]:
    """The square around ``box`` with side ``max(w, h) * (1 + margin)``, moved (not
    cut) to lie inside the image; only a square larger than the image is clipped."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1.0 + margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0

    def place(center: float, limit: int) -> tuple[float, float]:
        if side >= limit:
            return 0.0, float(limit)
        lo = min(max(center - side / 2.0, 0.0), limit - side)
        return lo, lo + side

    left, right = place(cx, width)
    top, bottom = place(cy, height)
    return left, top, right, bottom


def crop_faces(image: Image.Image, boxes, margin: float = 0.2, size: int = 64) -> np.ndarray:
    """Grayscale square crops of ``boxes`` (with ``margin``), resized to ``size``.

    Returns uint8 ``[n, size, size]`` (the face net scales with ``x / 127.5 - 1``).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    out = np.empty((len(boxes), size, size), np.uint8)
    if not len(boxes):
        return out
    gray = image.convert("L")
    w, h = gray.size
    for i, box in enumerate(boxes):
        region = square_box(box, w, h, margin)
        out[i] = np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR, box=region))
    return out

"""MTCNN face detection without torch: onnxruntime for the three networks, numpy for the rest.

``OnnxMTCNN(...).detect(images)`` gives the boxes and probabilities of
``facenet_pytorch.MTCNN(keep_all=True, select_largest=True).detect(images)``
(facenet-pytorch 2.5.3), because :func:`detect_face` repeats facenet's
``detect_face`` step by step, with its float32 arithmetic and its quirks:

* ``imresample`` is torch's ``F.interpolate(mode="area")``, i.e. adaptive average
  pooling: window ``[floor(i*n/m), ceil((i+1)*n/m))``, window sum divided by its
  height, then by its width, in float32 (bit-identical on the integer pixels
  facenet feeds it);
* the first-stage NMS (0.5 per scale, 0.7 across scales) and the second stage's
  are torchvision's ``batched_nms`` (IoU without "+1", stable descending sort,
  ``IoU > threshold`` in double; the coordinate-offset trick up to 1000 boxes,
  per-image NMS beyond, as torchvision switches); the last is facenet's own
  ``batched_nms_numpy`` with 'Min' overlap and "+1" areas;
* ``pad`` truncates boxes to int32 before cropping and clamps x, y to >= 1 and
  the far edges to the image (so a crop starts one pixel up-left of the box);
* a box whose crop would be empty is dropped (facenet raises an IndexError there).

The one difference left is the networks' float rounding (onnxruntime vs torch,
~1e-6 on the probabilities); it moves a box only when a probability sits within
that of a threshold or two scores tie.

Images: a list of RGB ``PIL.Image`` of one size (one batch, as facenet takes them).
This module must not import torch, torchvision or facenet_pytorch, even indirectly:
it is the fast path of ``emologic query`` (importing torch alone takes 5 s here).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from neural.common import UserError
from neural.mtcnn_onnx import CROP_SIZES, INPUT_NAME, NETS, mtcnn_onnx_dir

#: facenet's ``fixed_batch_process``: RNet/ONet crops per network run (bounds memory).
CROP_BATCH = 512
#: torchvision's ``batched_nms`` runs per image above this many box coordinates (1000 boxes) on the CPU.
VANILLA_NMS_NUMEL = 4000


def default_threads() -> int:
    """onnxruntime threads: the cores this process may use, at most 4 (MTCNN's small
    convolutions gain little beyond that)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


# --------------------------------------------------------------------------- facenet's helpers in numpy

def integral_image(x: np.ndarray) -> np.ndarray:
    """[B, C, H, W] -> [B, C, H + 1, W + 1] sums over ``x[:, :, :i, :j]`` (summed-area table).

    Integer input sums in int32 (int64 when the total could overflow): exact, so
    every window sum below equals torch's float32 one on the detector's uint8
    pixels. Other input sums in float64 after rounding to float32, torch's precision.
    """
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        fits = int(np.abs(x).max(initial=0)) * x.shape[2] * x.shape[3] < 2**31
        acc = np.int32 if fits else np.int64
    else:
        x, acc = x.astype(np.float32), np.float64
    b, c, h, w = x.shape
    rows = np.zeros((b, c, h + 1, w), acc)
    if b * c * w >= 1024:
        # one vectorised add per row: numpy's cumsum along a non-last axis of a large
        # image is ~10x slower (66 vs 7 ms on 1280x960)
        for r in range(h):
            np.add(rows[:, :, r], x[:, :, r], out=rows[:, :, r + 1])
    else:
        np.cumsum(x, axis=2, dtype=acc, out=rows[:, :, 1:])
    table = np.zeros((b, c, h + 1, w + 1), acc)
    np.cumsum(rows, axis=3, out=table[..., 1:])
    return table


def _windows(n_in: np.ndarray, n_out: int, start: np.ndarray):
    """Adaptive pooling windows ``[floor(i*n/m), ceil((i+1)*n/m))`` of each region
    (``n_in``, ``start``: [R]) -> first and end index, [R, m]."""
    i = np.arange(n_out)[None, :]
    n_in, start = np.asarray(n_in)[:, None], np.asarray(start)[:, None]
    return start + (i * n_in) // n_out, start + ((i + 1) * n_in + n_out - 1) // n_out


def area_resample(table: np.ndarray, images, top, left, height, width, size: tuple[int, int]) -> np.ndarray:
    """``imresample`` of R regions at once: region r is ``[top:top+height, left:left+width]``
    (each [R]) of image ``images[r]`` of the :func:`integral_image` ``table``
    [B, C, H+1, W+1] -> float32 [R, C, oh, ow]."""
    y0, y1 = _windows(height, int(size[0]), top)  # [R, oh]
    x0, x1 = _windows(width, int(size[1]), left)  # [R, ow]
    b = np.asarray(images)[:, None, None]
    y0, y1, x0, x1 = y0[:, :, None], y1[:, :, None], x0[:, None, :], x1[:, None, :]
    # advanced indices around the channel slice: the result is [R, oh, ow, C]
    sums = table[b, :, y1, x1] - table[b, :, y0, x1] - table[b, :, y1, x0] + table[b, :, y0, x0]
    # torch's kernel divides the window sum by its height, then by its width, in float32
    kh = (y1 - y0).astype(np.float32)[..., None]
    kw = (x1 - x0).astype(np.float32)[..., None]
    return (sums.astype(np.float32) / kh / kw).transpose(0, 3, 1, 2)


def resample_images(table: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``imresample`` of the whole images whose :func:`integral_image` is ``table``
    -> float32 [B, C, oh, ow]. The windows are the same for every row (column), so
    the sums take rows, then columns, of the table (4x faster than :func:`area_resample`)."""
    h, w = table.shape[2] - 1, table.shape[3] - 1
    (y0, y1), (x0, x1) = _windows([h], int(size[0]), [0]), _windows([w], int(size[1]), [0])
    y0, y1, x0, x1 = y0[0], y1[0], x0[0], x1[0]
    rows = np.take(table, y1, axis=2) - np.take(table, y0, axis=2)  # [B, C, oh, W + 1]
    sums = np.take(rows, x1, axis=3) - np.take(rows, x0, axis=3)  # [B, C, oh, ow]
    kh = (y1 - y0).astype(np.float32)[:, None]
    kw = (x1 - x0).astype(np.float32)[None, :]
    return sums.astype(np.float32) / kh / kw  # torch's order: by the height, then by the width


def imresample(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torch ``F.interpolate(x, size, mode="area")`` (adaptive average pooling) on
    [B, C, H, W] -> float32 [B, C, oh, ow]; bit-identical on integer pixels."""
    return resample_images(integral_image(x), size)


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x - np.float32(127.5)) * np.float32(0.0078125)


def generate_bounding_box(reg: np.ndarray, probs: np.ndarray, scale: float, thresh: float):
    """facenet's ``generateBoundingBox``: PNet cells with ``prob >= thresh`` as boxes.

    ``reg`` [B, 4, h, w], ``probs`` [B, h, w] -> boxes [n, 9] (x1, y1, x2, y2, score,
    4 regressions), image index [n]; cells in row-major (image, y, x) order.
    """
    stride, cellsize = 2, 12
    mask = probs >= np.float32(thresh)
    image_inds, ys, xs = np.nonzero(mask)
    score = probs[mask]
    offsets = reg[image_inds, :, ys, xs]  # [n, 4]
    bb = np.stack([xs, ys], axis=1).astype(np.float32)
    scale32 = np.float32(scale)  # torch divides a float32 tensor by the scale rounded to float32
    q1 = np.floor((stride * bb + 1) / scale32)
    q2 = np.floor((stride * bb + cellsize) / scale32)
    boxes = np.concatenate([q1, q2, score[:, None], offsets], axis=1).astype(np.float32)
    return boxes, image_inds.astype(np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision's CPU ``nms``: greedy by score (stable descending sort), IoU with
    areas ``(x2 - x1) * (y2 - y1)`` in float32, suppress when IoU > ``threshold``."""
    boxes = np.asarray(boxes, np.float32)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    remaining = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    keep = []
    zero = np.float32(0)
    while remaining.size:
        i, rest = remaining[0], remaining[1:]
        keep.append(i)
        w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        # torchvision compares the float IoU with the double threshold; NaN (0/0) never suppresses
        remaining = rest[~(iou.astype(np.float64) > threshold)]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision's ``batched_nms`` on the CPU: kept indices, highest score first."""
    if boxes.size > VANILLA_NMS_NUMEL:
        keep_mask = np.zeros(len(scores), bool)
        for image in np.unique(idxs):
            members = np.nonzero(idxs == image)[0]
            keep_mask[members[nms(boxes[members], scores[members], threshold)]] = True
        kept = np.nonzero(keep_mask)[0]
        # torch's unstable sort orders equal scores its own way; stable is the closest we can say
        return kept[np.argsort(-scores[kept], kind="stable")]
    if boxes.size == 0:
        return np.zeros(0, np.int64)
    # per-image offsets in float32, as torchvision adds them (they round the coordinates the same way)
    offsets = idxs.astype(np.float32) * (boxes.max() + np.float32(1))
    return nms(boxes + offsets[:, None], scores, threshold)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet's ``nms_numpy(..., 'Min')``, line for line (same sort, same int16 picks)."""
    x1, y1, x2, y2 = (boxes[:, k].copy() for k in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    pick = np.zeros_like(scores, dtype=np.int16)
    counter = 0
    while order.size > 0:
        i = order[-1]
        pick[counter] = i
        counter += 1
        idx = order[0:-1]
        w = np.maximum(0.0, np.minimum(x2[i], x2[idx]) - np.maximum(x1[i], x1[idx]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[idx]) - np.maximum(y1[i], y1[idx]) + 1)
        o = w * h / np.minimum(area[i], area[idx])
        order = order[np.where(o <= threshold)]
    return pick[:counter].astype(np.int64)


def batched_nms_min(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, threshold: float) -> np.ndarray:
    """facenet's ``batched_nms_numpy`` with 'Min' overlap (per-image float32 offsets)."""
    if boxes.size == 0:
        return np.zeros(0, np.int64)
    offsets = idxs.astype(np.float32) * (boxes.max() + np.float32(1))
    return nms_min(boxes + offsets[:, None], scores, threshold)


def bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """facenet's ``bbreg``: move the edges by ``reg`` times the side (with facenet's "+1")."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = np.stack([boxes[:, 0] + reg[:, 0] * w, boxes[:, 1] + reg[:, 1] * h,
                             boxes[:, 2] + reg[:, 2] * w, boxes[:, 3] + reg[:, 3] * h], axis=1)
    return boxes


def rerec(boxes: np.ndarray) -> np.ndarray:
    """facenet's ``rerec``: the square with the box's centre and its longer side."""
    boxes = boxes.copy()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * np.float32(0.5) - side * np.float32(0.5)
    boxes[:, 1] = boxes[:, 1] + h * np.float32(0.5) - side * np.float32(0.5)
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def pad(boxes: np.ndarray, w: int, h: int):
    """facenet's ``pad``: int32-truncated (y, ey, x, ex), x and y clamped to >= 1, ex <= w, ey <= h."""
    b = np.trunc(boxes).astype(np.int32)
    x, y, ex, ey = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    x[x < 1] = 1
    y[y < 1] = 1
    ex[ex > w] = w
    ey[ey > h] = h
    return y, ey, x, ex


def crops(table: np.ndarray, boxes: np.ndarray, image_inds: np.ndarray, side: int):
    """The crops facenet cuts for RNet/ONet (``imgs[i, :, y-1:ey, x-1:ex]``), resized to
    ``side`` and normalised, from the images' :func:`integral_image`; and which boxes had one."""
    h, w = table.shape[2] - 1, table.shape[3] - 1
    y, ey, x, ex = pad(boxes, w, h)
    valid = (ey > y - 1) & (ex > x - 1)
    y, ey, x, ex = y[valid], ey[valid], x[valid], ex[valid]
    out = area_resample(table, image_inds[valid], y - 1, x - 1, ey - y + 1, ex - x + 1, (side, side))
    return _normalise(np.ascontiguousarray(out)), valid


# --------------------------------------------------------------------------- the detector

def _session(path: Path, threads: int):
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise UserError("the ONNX face detector needs onnxruntime: pip install onnxruntime") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # idle pool threads sleep instead of spinning: between MTCNN's many short runs the numpy steps
    # (and, on a shared machine, other processes) need those cores; with 2 threads on a loaded
    # 2-core host spinning made a 1280x960 detect 742 ms instead of 507 ms
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # warnings about unused initialisers are not the user's business
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
        raise UserError(f"cannot load the MTCNN network {path}: {str(exc).splitlines()[0]}") from exc


class OnnxMTCNN:
    """facenet-pytorch's ``MTCNN(keep_all=True, select_largest=True)`` on onnxruntime."""

    def __init__(self, min_face_size: int = 20, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, model_dir: str | os.PathLike | None = None, threads: int | None = None):
        if len(thresholds) != 3:
            raise UserError(f"MTCNN needs 3 stage thresholds, got {len(thresholds)}")
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.threads = int(threads) if threads else default_threads()
        directory = Path(model_dir) if model_dir is not None else mtcnn_onnx_dir(export=True)
        self.sessions = {net: _session(directory / f"{net}.onnx", self.threads) for net in NETS}

    def _run(self, net: str, data: np.ndarray) -> list[np.ndarray]:
        if net == "pnet":
            return self.sessions[net].run(None, {INPUT_NAME: data})
        parts = [self.sessions[net].run(None, {INPUT_NAME: data[i : i + CROP_BATCH]})
                 for i in range(0, len(data), CROP_BATCH)]
        return [np.concatenate(outs) for outs in zip(*parts)]

    def _refine(self, net: str, table, boxes, image_inds, threshold: float):
        """RNet/ONet on the boxes' crops: the boxes it passes (x1, y1, x2, y2, its score),
        their image indices and its box regressions."""
        data, valid = crops(table, boxes, image_inds, CROP_SIZES[net])
        boxes, image_inds = boxes[valid], image_inds[valid]
        if len(data):
            out = self._run(net, data)
            reg, score = out[0], out[-1][:, 1]  # outputs: reg, [landmarks,] prob
        else:
            reg, score = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        ipass = score > np.float32(threshold)
        return np.concatenate([boxes[ipass, :4], score[ipass, None]], axis=1), image_inds[ipass], reg[ipass]

    def detect_face(self, imgs: np.ndarray) -> list[np.ndarray]:
        """facenet's ``detect_face`` on [B, 3, H, W] pixels (uint8, or float32 holding them): per image, rows
        (x1, y1, x2, y2, prob) in facenet's order (its final NMS's)."""
        batch, _, h, w = imgs.shape
        table = integral_image(imgs)  # every resample below (pyramid, crops) reads its windows from it
        m = 12.0 / self.min_face_size
        minl = min(h, w) * m
        scales, scale = [], m
        while minl >= 12:
            scales.append(scale)
            scale *= self.factor
            minl *= self.factor

        # First stage: PNet over the pyramid, NMS 0.5 per scale, then 0.7 across scales.
        stage1, stage1_inds = [np.zeros((0, 9), np.float32)], [np.zeros(0, np.int64)]
        for scale in scales:
            data = _normalise(resample_images(table, (int(h * scale + 1), int(w * scale + 1))))
            reg, probs = self._run("pnet", data)
            boxes, inds = generate_bounding_box(reg, probs[:, 1], scale, self.thresholds[0])
            pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.5)
            stage1.append(boxes[pick])
            stage1_inds.append(inds[pick])
        boxes, image_inds = np.concatenate(stage1), np.concatenate(stage1_inds)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds = boxes[pick], image_inds[pick]
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        boxes = np.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                          boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]], axis=1)
        boxes = rerec(boxes)

        # Second stage: RNet on 24x24 crops, threshold, NMS 0.7, regression, square.
        if len(boxes):
            boxes, image_inds, reg = self._refine("rnet", table, boxes, image_inds, self.thresholds[1])
            pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds = rerec(bbreg(boxes[pick], reg[pick])), image_inds[pick]

        # Third stage: ONet on 48x48 crops, threshold, regression, 'Min' NMS 0.7.
        if len(boxes):
            boxes, image_inds, reg = self._refine("onet", table, boxes, image_inds, self.thresholds[2])
            boxes = bbreg(boxes, reg)
            pick = batched_nms_min(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds = boxes[pick], image_inds[pick]
        return [boxes[image_inds == b] for b in range(batch)]

    def detect(self, images: Sequence[Image.Image]):
        """Boxes and probabilities of each image, largest box first (facenet's order).

        Returns ``(batch_boxes, batch_probs)``: per image float32 [n, 4] (x1, y1, x2, y2)
        and [n], or ``None`` and ``None`` without a face (facenet gives ``[None]`` as
        the probabilities there). All images must have one size.
        """
        images = list(images)
        if not images:
            return [], []
        if any(im.size != images[0].size for im in images):
            raise UserError("OnnxMTCNN.detect takes a batch of images of one size; group them by size first")
        # an image smaller than min_face_size has an empty pyramid (facenet raises there): no face
        pixels = np.stack([np.asarray(im if im.mode == "RGB" else im.convert("RGB"), np.uint8) for im in images])
        imgs = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))  # uint8 [B, 3, H, W]: exact window sums
        batch_boxes, batch_probs = [], []
        for box in self.detect_face(imgs):
            if not len(box):
                batch_boxes.append(None)
                batch_probs.append(None)
                continue
            order = np.argsort((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))[::-1]  # facenet's select_largest
            box = box[order]
            batch_boxes.append(box[:, :4])
            batch_probs.append(box[:, 4])
        return batch_boxes, batch_probs

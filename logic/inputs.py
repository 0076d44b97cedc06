"""Batches of given network outputs, for engine benchmarks and tests.

The networks are replaced by :mod:`logic.given` stand-ins, so a batch carries
the distributions themselves; the face boxes are laid out so that each sample
falls in the context its ``(n_faces, large)`` pair names.
"""
from __future__ import annotations

import torch

from cache.batch import ImageBatch
from logic.given import given_networks  # noqa: F401 - part of this module's API
from neural.common import FACE_SLOTS
from pipelines.context import DEFAULT_LARGE_FACE

IMAGE = 128


def face_boxes(n_faces: int, large: bool) -> torch.Tensor:
    """[3, 4] boxes, largest first, NaN for absent slots; the largest face is
    above the size threshold iff ``large``."""
    boxes = torch.full((3, 4), float("nan"), dtype=torch.float64)
    side0 = IMAGE * (DEFAULT_LARGE_FACE + 0.1 if large else DEFAULT_LARGE_FACE - 0.1)
    for j in range(n_faces):
        side = side0 * (0.9 ** j)
        boxes[j] = torch.tensor([j * 2.0, 0.0, j * 2.0 + side, side])
    return boxes


def make_batch(layout, outputs: dict[str, torch.Tensor], labels=None, requires_grad=False) -> ImageBatch:
    """A batch whose tensor sources hold network outputs directly.

    layout: list of (n_faces, large) per sample
    outputs: source -> [B, K] distributions (face rows of absent faces are ignored
             and replaced by NaN, as the cache does)
    """
    n = len(layout)
    mask = torch.zeros(n, 3, dtype=torch.bool)
    boxes = torch.stack([face_boxes(k, large) for k, large in layout])
    for i, (k, _) in enumerate(layout):
        mask[i, :k] = True
    tensors = {}
    for name, x in outputs.items():
        x = x.clone().to(torch.float64)
        if name in FACE_SLOTS:
            x[~mask[:, FACE_SLOTS.index(name)]] = float("nan")
        tensors[name] = x.requires_grad_(requires_grad)
    labels = torch.full((n,), -1, dtype=torch.long) if labels is None else torch.as_tensor(labels)
    return ImageBatch(
        sample_ids=[f"img{i}" for i in range(n)],
        tensors=tensors,
        face_mask=mask,
        face_boxes=boxes,
        face_probs=torch.where(mask, 1.0, float("nan")),
        image_size=torch.tensor([[IMAGE, IMAGE]] * n, dtype=torch.float64),
        labels=labels,
    )


def random_outputs(program, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random distributions for every tensor source the program reads: ``[n, width]``,
    one distribution per network reading the source, side by side (see :func:`given_networks`)."""
    return {name: torch.cat([torch.softmax(2 * torch.randn(n, k, generator=generator, dtype=torch.float64), -1)
                             for k in src.widths], 1)
            for name, src in program.sources.items()}


def random_rule_probs(program, generator: torch.Generator) -> list[float]:
    probs = [0.0] * program.n_params
    for g in program.groups:
        w = torch.rand(len(g.params), generator=generator, dtype=torch.float64) + 0.05
        w = w / w.sum()
        for i, v in zip(g.params, w.tolist()):
            probs[i] = v
    return probs


#: every context: 0-3 faces, both size buckets
ALL_LAYOUTS = [(0, False), (1, False), (1, True), (2, False), (2, True), (3, False), (3, True)]

"""The batch the cache serves and every downstream stage reads.

Face slots that do not exist are *absent*: their rows in the padded tensors are
NaN (never zeros), and ``face_mask`` says which slots exist. Anything that reads
an absent slot poisons its result with NaN, so a dummy face can never pass
silently; the logic only evaluates face predicates on existing slots.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from neural.vocabulary import FACE_SLOTS
from pipelines.context import DEFAULT_LARGE_FACE, batch_context_keys


@dataclass
class Batch:
    sample_ids: list[str]
    #: source name -> tensor. "scene": [B, 512] backbone features; "face1".."face3":
    #: [B, 1, 64, 64] grayscale crops in [-1, 1] (NaN where absent); "va": [B, D]
    #: valence/arousal backbone features; other keys as the pipeline config adds them.
    tensors: dict[str, torch.Tensor]
    face_mask: torch.Tensor  # [B, 3] bool
    face_boxes: torch.Tensor  # [B, 3, 4] float, pixels (x1, y1, x2, y2), NaN where absent
    face_probs: torch.Tensor  # [B, 3] float detection probability, NaN where absent
    image_size: torch.Tensor  # [B, 2] (width, height)
    labels: torch.Tensor  # [B] long, index into EMOTIONS; -1 where unknown
    meta: dict[str, list] = field(default_factory=dict)  # per-sample annotations

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def n_faces(self) -> torch.Tensor:  # [B] long
        return self.face_mask.sum(dim=1)

    def contexts(self, threshold: float = DEFAULT_LARGE_FACE) -> list[str]:
        return batch_context_keys(self.face_boxes, self.face_mask, self.image_size, threshold)

    def present(self, source: str) -> torch.Tensor:
        """[B] bool: whether ``source`` exists for each sample (the scene always does)."""
        if source in FACE_SLOTS:
            return self.face_mask[:, FACE_SLOTS.index(source)]
        return torch.ones(len(self), dtype=torch.bool)

    def select(self, index) -> "Batch":
        """The sub-batch at ``index`` (a list/tensor of positions or a bool mask)."""
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        pos = idx.tolist()
        return Batch(
            sample_ids=[self.sample_ids[i] for i in pos],
            tensors={k: v[idx] for k, v in self.tensors.items()},
            face_mask=self.face_mask[idx],
            face_boxes=self.face_boxes[idx],
            face_probs=self.face_probs[idx],
            image_size=self.image_size[idx],
            labels=self.labels[idx],
            meta={k: [v[i] for i in pos] for k, v in self.meta.items()},
        )

    def to(self, device) -> "Batch":
        return Batch(
            self.sample_ids,
            {k: v.to(device) for k, v in self.tensors.items()},
            self.face_mask.to(device),
            self.face_boxes.to(device),
            self.face_probs.to(device),
            self.image_size.to(device),
            self.labels.to(device),
            self.meta,
        )

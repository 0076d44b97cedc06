"""The batches the cache serves and every downstream stage reads.

:class:`Batch` is what every kind shares: sample ids, labels, and row-wise
``select``/``to`` over whatever the kind stores. A kind's batch is a dataclass
subclass that only *declares* its fields (and the views derived from them):

* :class:`ImageBatch`: face slots that do not exist are *absent*: their rows in
  the padded tensors are NaN (never zeros), and ``face_mask`` says which slots
  exist. Anything that reads an absent slot poisons its result with NaN, so a
  dummy face can never pass silently; the logic only evaluates face predicates
  on existing slots.
* :class:`ClipBatch` (video clips) treats missing audio the same way.

Every field of a batch is per sample (dim 0 = the batch), so ``select`` and
``to`` are written once, over the dataclass fields: a tensor is indexed or moved,
a ``{name: tensor}`` dict likewise per entry, a list is indexed, a
``{name: list}`` dict per entry.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from neural.common import FACE_SLOTS
from pipelines.context import DEFAULT_LARGE_FACE, batch_context_codes, batch_context_keys


def _pick(value, idx: torch.Tensor, pos: list[int]):
    if isinstance(value, torch.Tensor):
        return value[idx]
    if isinstance(value, dict):
        return {k: _pick(v, idx, pos) for k, v in value.items()}
    if isinstance(value, list):
        return [value[i] for i in pos]
    raise TypeError(f"a batch field must be per sample (tensor, list or dict of them), not {type(value).__name__}")


def _move(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    return value  # lists (ids, annotations) stay where Python keeps them


class Batch:
    """What every batch has: ``sample_ids``, ``labels`` ([B] long, index into EMOTIONS,
    -1 where unknown) and row-wise selection and device moves. Subclasses are
    dataclasses whose every field is per sample."""

    sample_ids: list[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.sample_ids)

    def select(self, index):
        """The sub-batch at ``index`` (a list/tensor of positions or a bool mask)."""
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        pos = idx.tolist()
        return type(self)(**{f.name: _pick(getattr(self, f.name), idx, pos) for f in dataclasses.fields(self)})

    def to(self, device):
        return type(self)(**{f.name: _move(getattr(self, f.name), device) for f in dataclasses.fields(self)})


@dataclass
class ImageBatch(Batch):
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

    @property
    def n_faces(self) -> torch.Tensor:  # [B] long
        return self.face_mask.sum(dim=1)

    def contexts(self, threshold: float = DEFAULT_LARGE_FACE) -> list[str]:
        return batch_context_keys(self.face_boxes, self.face_mask, self.image_size, threshold)

    def context_codes(self, threshold: float = DEFAULT_LARGE_FACE) -> torch.Tensor:
        """[B] long: index of each image's context in ``pipelines.context.CONTEXTS``."""
        return batch_context_codes(self.face_boxes, self.face_mask, self.image_size, threshold)

    def present(self, source: str) -> torch.Tensor:
        """[B] bool: whether ``source`` exists for each sample (the scene always does)."""
        if source in FACE_SLOTS:
            return self.face_mask[:, FACE_SLOTS.index(source)]
        return torch.ones(len(self), dtype=torch.bool)

    def with_tensors(self, tensors: dict[str, torch.Tensor]) -> "ImageBatch":
        """The same images with other source tensors (e.g. frozen network outputs)."""
        return dataclasses.replace(self, tensors=tensors)


@dataclass
class ClipBatch(Batch):
    """A batch of video clips with their audio and text (the ``clip`` cache kind).

    Audio that does not exist is *absent*, as faces are in :class:`ImageBatch`: its
    rows are NaN (never silence), ``audio_present`` says which exist, and
    :meth:`audio_or` makes any stand-in an explicit choice of the reader.
    """

    sample_ids: list[str]
    video: torch.Tensor  # [B, T, 3, S, S] uint8 RGB frames, frames first (as stored)
    audio: torch.Tensor  # [B, n_mels, L] float32 log-mel; NaN rows where audio_present is False
    audio_present: torch.Tensor  # [B] bool
    audio_frames: torch.Tensor  # [B] long: log-mel frames holding audio (the rest is padding)
    input_ids: torch.Tensor  # [B, max_tokens] long, the text model's tokens
    attention_mask: torch.Tensor  # [B, max_tokens] long
    labels: torch.Tensor  # [B] long, index into EMOTIONS; -1 where unknown
    sentiments: torch.Tensor  # [B] long, index into neural.common.SENTIMENTS; -1 where unknown
    annotations: list[dict] = field(default_factory=list)  # per sample: utterance, speaker, ...

    def video_input(self) -> torch.Tensor:
        """[B, 3, T, S, S] float in [0, 1]: torchvision's video layout (``MultimodalFusionNet``)."""
        return self.video.permute(0, 2, 1, 3, 4).float().div(255.0)

    def audio_or(self, fill: float) -> torch.Tensor:
        """[B, n_mels, L] with absent audio replaced by ``fill`` (e.g. the log floor: silence)."""
        return torch.where(self.audio_present[:, None, None], self.audio, torch.as_tensor(fill, dtype=self.audio.dtype))

"""What decides a synthetic benchmark set: :class:`SyntheticConfig` and the known
answer it is generated from, the context-conditioned source table
(:data:`DEFAULT_SOURCE_TABLE`). :mod:`pipelines.datasets.synthetic` generates the set.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from neural.common import MAX_FACES, SOURCES
from pipelines.context import CONTEXTS, DEFAULT_LARGE_FACE
from pipelines.datasets.base import DatasetError
from pipelines.splits import DEFAULT_SPLIT_FRACTIONS, SplitError, check_fractions

#: Bumped whenever drawing or sampling changes, so an old set on disk is not reused.
GENERATOR_VERSION = 3

#: P(source | context): more faces spread the trust, a large face wins more often;
#: the image's mood (valence/arousal, ``va``: see :mod:`pipelines.datasets.synthetic_va`)
#: decides most often where no face can.
DEFAULT_SOURCE_TABLE: dict[str, dict[str, float]] = {
    "n0": {"scene": 0.7, "va": 0.3},
    "n1_small": {"scene": 0.5, "face1": 0.3, "va": 0.2},
    "n1_large": {"scene": 0.15, "face1": 0.7, "va": 0.15},
    "n2_small": {"scene": 0.4, "face1": 0.25, "face2": 0.15, "va": 0.2},
    "n2_large": {"scene": 0.1, "face1": 0.6, "face2": 0.15, "va": 0.15},
    "n3_small": {"scene": 0.35, "face1": 0.25, "face2": 0.15, "face3": 0.05, "va": 0.2},
    "n3_large": {"scene": 0.1, "face1": 0.55, "face2": 0.15, "face3": 0.05, "va": 0.15},
}

#: Relative face size sqrt(box area / image area) range of all faces.
MIN_FACE, MAX_FACE = 0.14, 0.5
#: Largest admissible overlap: intersection / area of the smaller face.
MAX_OVERLAP = 0.1


@dataclass
class SyntheticConfig:
    n_images: int = 2400
    image_size: int = 128
    seed: int = 0
    split_fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SPLIT_FRACTIONS))
    #: context -> {source: P(source | context)}; a row lists only sources that exist.
    source_table: dict[str, dict[str, float]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_SOURCE_TABLE))
    #: P(0 faces), P(1), P(2), P(3)
    face_count_probs: tuple[float, ...] = (0.2, 0.3, 0.3, 0.2)
    #: P(the largest face is at or above large_face_threshold), for images with faces
    large_face_prob: float = 0.5
    large_face_threshold: float = DEFAULT_LARGE_FACE
    #: P(a face shows the scene's emotion); otherwise its expression is uniform
    face_scene_agreement: float = 0.3
    #: strength in [0, 1] of the face-style shift in the pretrain split
    domain_shift: float = 0.6
    #: standard deviation of valence/arousal around the mood's circumplex centre
    va_noise: float = 0.15

    def __post_init__(self) -> None:
        self.face_count_probs = tuple(float(p) for p in self.face_count_probs)
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> DatasetError:
            return DatasetError(f"synthetic config: {msg}")

        if not isinstance(self.n_images, int) or self.n_images < 1:
            raise bad(f"n_images must be a positive integer, got {self.n_images!r}")
        if not isinstance(self.image_size, int) or self.image_size < 32:
            raise bad(f"image_size must be an integer >= 32, got {self.image_size!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad(f"seed must be a non-negative integer, got {self.seed!r}")
        try:
            check_fractions(self.split_fractions)
        except SplitError as exc:
            raise bad(f"split_fractions: {exc}") from None
        if len(self.face_count_probs) != MAX_FACES + 1 or not _is_distribution(self.face_count_probs):
            raise bad(f"face_count_probs must be {MAX_FACES + 1} probabilities summing to 1, got {self.face_count_probs}")
        missing = [c for c in CONTEXTS if c not in self.source_table]
        unknown = [c for c in self.source_table if c not in CONTEXTS]
        if missing or unknown:
            raise bad(
                f"source_table must have one row per context ({', '.join(CONTEXTS)}); "
                f"missing: {', '.join(missing) or 'none'}, unknown: {', '.join(unknown) or 'none'}"
            )
        for ctx, row in self.source_table.items():
            existing = sources_of(ctx)
            absent = [s for s, p in row.items() if s not in existing and p != 0]
            if absent:
                raise bad(f"source_table[{ctx!r}] gives probability to {', '.join(absent)}, which do not exist there ({', '.join(existing)} do)")
            if not _is_distribution([row.get(s, 0.0) for s in existing]):
                raise bad(f"source_table[{ctx!r}] must be probabilities over {', '.join(existing)} summing to 1, got {row}")
        for name in ("large_face_prob", "face_scene_agreement", "domain_shift"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise bad(f"{name} must be in [0, 1], got {value!r}")
        if not MIN_FACE < self.large_face_threshold < MAX_FACE:
            raise bad(f"large_face_threshold must be in ({MIN_FACE}, {MAX_FACE}), got {self.large_face_threshold!r}")
        if not 0.0 <= self.va_noise <= 1.0:
            raise bad(f"va_noise must be in [0, 1], got {self.va_noise!r}")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON values (what config.json stores)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SyntheticConfig":
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise DatasetError(
                f"unknown synthetic option(s) {', '.join(unknown)}; known options: root, {', '.join(known)}"
            )
        return cls(**values)

    def digest(self) -> str:
        """Short hash of the config and generator version (names default roots)."""
        blob = json.dumps({"version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


#: The image's mood, a source in every context (a table row may leave it out: probability 0).
VA_SOURCE = "va"


def sources_of(context: str) -> tuple[str, ...]:
    """The sources that exist in a context: the scene, one per face, and the mood."""
    n_faces = 0 if context == "n0" else int(context[1])
    return SOURCES[: 1 + n_faces] + (VA_SOURCE,)


def _is_distribution(probs) -> bool:
    p = [float(v) for v in probs]
    return all(v >= 0 and math.isfinite(v) for v in p) and abs(sum(p) - 1.0) <= 1e-6

"""AFEW-VA: video clips with per-frame valence and arousal, in the source's layout.

::

    root/
      001/
        00000.png  00001.png  ...        frames (png or jpg)
        001.json                          {"frames": {"00000": {"valence": v, "arousal": a, ...}, ...}}
      002/ ...

Valence and arousal are in -10..10 on disk and divided by 10 (to [-1, 1]) here.
Every frame is a :class:`Sample` with id ``"<clip>/<frame file stem>"`` (so the
tensor cache works per frame) and ``annotations = {"clip", "frame", "valence",
"arousal"}``; :attr:`AfewVADataset.clips` groups them back into clips in frame
order. AFEW-VA has no official split: clips are assigned to ``train/val/test``
with :func:`pipelines.splits.assign_splits` on the clip id (seeded), so all
frames of a clip share a split.

Nothing is fatal per clip or frame: a clip without its JSON, an unreadable JSON,
a frame without annotation, an annotation without its frame, a value outside
-10..10, a clip with fewer than ``min_frames`` usable frames -- each is left out
and listed in ``Dataset.skipped`` with its reason.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.datasets.base import Dataset, DatasetError, Sample, register_dataset
from pipelines.splits import assign_splits, check_fractions

#: Annotations on disk are in [-RAW_RANGE, RAW_RANGE].
RAW_RANGE = 10.0
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_CLIP_SPLITS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}


@dataclass(frozen=True)
class Clip:
    """The usable frames of one clip, in frame order."""

    clip_id: str
    split: str
    sample_ids: tuple[str, ...]
    frames: tuple[int, ...]  # frame numbers
    image_paths: tuple[Path, ...]
    targets: np.ndarray  # [n, 2] float32 (valence, arousal) in [-1, 1]

    def __len__(self) -> int:
        return len(self.sample_ids)

    def subset(self, keep: list[int]) -> "Clip":
        """The clip restricted to the frames at positions ``keep``."""
        return Clip(
            self.clip_id, self.split, tuple(self.sample_ids[i] for i in keep), tuple(self.frames[i] for i in keep),
            tuple(self.image_paths[i] for i in keep), self.targets[keep],
        )


class AfewVADataset(Dataset):
    """Frame samples of AFEW-VA plus :attr:`clips` (clip id -> :class:`Clip`)."""

    def __init__(self, samples, skipped, clips: dict[str, Clip], split_names, source):
        super().__init__("afewva", samples, skipped, split_names, source)
        self.clips = clips

    def clips_of(self, split: str | None = None) -> list[Clip]:
        """The clips of ``split`` (all when None), sorted by clip id."""
        if split is not None and split not in self.split_names:
            raise DatasetError(f"afewva has no split {split!r}; its splits: {', '.join(self.split_names)}")
        return [c for c in self.clips.values() if split is None or c.split == split]


def _frame_number(stem: str) -> int | None:
    return int(stem) if stem.isdigit() else None


def _read_annotations(path: Path) -> dict[int, tuple[object, object]]:
    """``{frame number: (raw valence, raw arousal)}`` of a clip's JSON; raises ValueError."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable JSON ({exc})") from None
    frames = doc.get("frames") if isinstance(doc, dict) else None
    if not isinstance(frames, dict):
        raise ValueError('no "frames" object')
    out = {}
    for key, entry in frames.items():
        number = _frame_number(str(key))
        if number is None or not isinstance(entry, dict):
            continue  # reported below as "frame without annotation" if its image exists
        out[number] = (entry.get("valence"), entry.get("arousal"))
    return out


def _check_value(raw: object) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    value = float(raw)
    return value if math.isfinite(value) and abs(value) <= RAW_RANGE else None


def load_afewva(
    root: str | Path,
    split_fractions: dict[str, float] | None = None,
    seed: int = 0,
    min_frames: int = 2,
) -> AfewVADataset:
    """Read an AFEW-VA directory (see the module doc); bad clips and frames are skipped."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"AFEW-VA root {root} is not a directory (expected one folder per clip)")
    fractions = check_fractions(split_fractions or DEFAULT_CLIP_SPLITS)
    skipped: list[tuple[str, str]] = []
    found: dict[str, list[tuple[int, str, Path, float, float]]] = {}
    for clip_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        clip = clip_dir.name
        ann_path = clip_dir / f"{clip}.json"
        if not ann_path.is_file():
            skipped.append((clip, f"no annotations: {ann_path} not found"))
            continue
        try:
            annotations = _read_annotations(ann_path)
        except ValueError as exc:
            skipped.append((clip, f"bad annotations: {ann_path}: {exc}"))
            continue
        images: dict[int, Path] = {}
        for p in sorted(clip_dir.iterdir()):
            number = _frame_number(p.stem)
            if p.suffix.lower() in FRAME_EXTENSIONS and number is not None:
                images.setdefault(number, p)
        frames = []
        for number, path in sorted(images.items()):
            sid = f"{clip}/{path.stem}"
            if number not in annotations:
                skipped.append((sid, f"no annotation: frame {number} is not in {ann_path.name}"))
                continue
            v, a = (_check_value(x) for x in annotations[number])
            if v is None or a is None:
                skipped.append((sid, f"bad annotation: valence/arousal {annotations[number]} not numbers in -10..10"))
                continue
            frames.append((number, sid, path, v / RAW_RANGE, a / RAW_RANGE))
        for number in sorted(set(annotations) - set(images)):
            skipped.append((f"{clip}/{number:05d}", f"image missing: frame {number} of {ann_path.name} has no image"))
        if len(frames) < min_frames:
            skipped.append((clip, f"too few frames: {len(frames)} usable, at least {min_frames} needed"))
            continue
        found[clip] = frames
    if not found:
        raise DatasetError(f"no usable AFEW-VA clips under {root} ({len(skipped)} skipped; layout: <clip>/<clip>.json + frames)")

    clip_ids = sorted(found)
    splits = assign_splits(clip_ids, [None] * len(clip_ids), fractions, seed)
    samples, clips = [], {}
    for clip in clip_ids:
        frames = found[clip]
        for number, sid, path, v, a in frames:
            samples.append(Sample(sid, path, None, splits[clip], {"clip": clip, "frame": number, "valence": v, "arousal": a}))
        clips[clip] = Clip(
            clip, splits[clip], tuple(f[1] for f in frames), tuple(f[0] for f in frames), tuple(f[2] for f in frames),
            np.array([[f[3], f[4]] for f in frames], dtype=np.float32),
        )
    return AfewVADataset(samples, skipped, clips, tuple(fractions), str(root))


@register_dataset("afewva")
def afewva_dataset(root: str | Path, split_fractions: dict[str, float] | None = None, seed: int = 0,
                   min_frames: int = 2) -> AfewVADataset:
    """AFEW-VA (or the synthetic set in its layout) at ``root``; see :func:`load_afewva`."""
    return load_afewva(root, split_fractions, seed, min_frames)

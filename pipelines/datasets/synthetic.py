"""The built-in synthetic benchmark: generated images with a known answer.

Each image has a scene of one of seven categories (own palette and texture,
own emotion prior) and 0-3 faces, each with its own expression, drawn so that
the real FER2013 recogniser reads it (``emologic bench faces`` measures how well). The
label comes from exactly one source -- the scene or one face -- drawn from a
known table conditioned on the image's context (number of faces, size bucket of
the largest face; :func:`pipelines.context.context_key`, the same function the
logic uses). Everything is recorded: boxes, per-face and scene emotions, the
true source, the context, valence and arousal.

Generation runs in three steps so that splits never depend on drawing:
1. draw all latent content from ``(seed, image index)`` streams;
2. assign splits with :func:`pipelines.splits.assign_splits`, stratified by label;
3. render each image with its split's face style (``pretrain`` faces use the
   domain-shifted style of strength ``domain_shift``).

On disk: ``root/images/<sample_id>.png``, ``root/annotations.jsonl`` (one JSON
object per sample, split included) and ``root/config.json`` (written last; its
presence marks a complete set). Same config -> byte-identical annotations.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from neural.files import atomic_write_bytes
from neural.processes import die_with_parent
from neural.vocabulary import EMOTIONS, FACE_SLOTS, MAX_FACES, SOURCES
from pipelines.context import CONTEXTS, DEFAULT_LARGE_FACE, context_key, relative_face_size
from pipelines.datasets.base import Dataset, DatasetError, Sample, register_dataset
from pipelines.datasets.synthetic_draw import (
    FACE_ASPECT,
    SCENES,
    SUPERSAMPLE,
    blur_regions,
    draw_face,
    draw_scene,
    face_style,
)
from pipelines.splits import DEFAULT_SPLIT_FRACTIONS, SplitError, assign_splits, check_fractions

#: Bumped whenever drawing or sampling changes, so an old set on disk is not reused.
GENERATOR_VERSION = 2

#: P(source | context): more faces spread the trust, a large face wins more often.
DEFAULT_SOURCE_TABLE: dict[str, dict[str, float]] = {
    "n0": {"scene": 1.0},
    "n1_small": {"scene": 0.65, "face1": 0.35},
    "n1_large": {"scene": 0.2, "face1": 0.8},
    "n2_small": {"scene": 0.5, "face1": 0.3, "face2": 0.2},
    "n2_large": {"scene": 0.15, "face1": 0.65, "face2": 0.2},
    "n3_small": {"scene": 0.4, "face1": 0.3, "face2": 0.2, "face3": 0.1},
    "n3_large": {"scene": 0.1, "face1": 0.6, "face2": 0.2, "face3": 0.1},
}

#: Circumplex centre (valence, arousal) of each emotion, both in [-1, 1].
VA_CENTRES: dict[str, tuple[float, float]] = {
    "angry": (-0.6, 0.6),
    "disgust": (-0.7, 0.2),
    "fear": (-0.5, 0.8),
    "happy": (0.8, 0.4),
    "sad": (-0.7, -0.5),
    "surprise": (0.3, 0.8),
    "neutral": (0.0, -0.3),
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
    #: standard deviation of valence/arousal around the label's circumplex centre
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
            existing = _sources_of(ctx)
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


def _sources_of(context: str) -> tuple[str, ...]:
    """The sources that exist in a context: the scene and one per face."""
    n_faces = 0 if context == "n0" else int(context[1])
    return SOURCES[: 1 + n_faces]


def _is_distribution(probs) -> bool:
    p = [float(v) for v in probs]
    return all(v >= 0 and math.isfinite(v) for v in p) and abs(sum(p) - 1.0) <= 1e-6


# --------------------------------------------------------------------------- latent content


def _place_faces(n: int, rng: np.random.Generator, cfg: SyntheticConfig) -> list[list[int]]:
    """Up to ``n`` integer boxes [x1, y1, x2, y2] with limited overlap, largest first."""
    if n == 0:
        return []
    size = cfg.image_size
    thr = cfg.large_face_threshold
    if rng.random() < cfg.large_face_prob:
        largest = rng.uniform(thr + 0.01, MAX_FACE)
    else:
        largest = rng.uniform(MIN_FACE, thr - 0.01)
    rel_sizes = [largest] + sorted(rng.uniform(MIN_FACE, min(largest, 0.34), n - 1), reverse=True)
    boxes: list[list[int]] = []
    for rel in rel_sizes:
        while rel >= MIN_FACE * 0.85:
            w = rel * size / math.sqrt(FACE_ASPECT)
            h = w * FACE_ASPECT
            for _ in range(40):
                x1 = int(round(rng.uniform(1, size - w - 1)))
                y1 = int(round(rng.uniform(1, size - h - 1)))
                box = [x1, y1, x1 + int(round(w)), y1 + int(round(h))]
                if all(_overlap(box, other) <= MAX_OVERLAP for other in boxes):
                    boxes.append(box)
                    break
            else:
                rel *= 0.9  # no room: try the face a bit smaller (the largest always fits)
                continue
            break
    boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
    return boxes


def _overlap(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _draw_latent(index: int, cfg: SyntheticConfig) -> dict[str, Any]:
    """Everything about image ``index`` except its split and pixels."""
    rng = np.random.default_rng([cfg.seed, index, 0])
    category = int(rng.integers(len(SCENES)))
    scene_emotion = EMOTIONS[int(rng.choice(len(EMOTIONS), p=SCENES[category].prior()))]
    n_faces = int(rng.choice(MAX_FACES + 1, p=np.asarray(cfg.face_count_probs) / sum(cfg.face_count_probs)))
    boxes = _place_faces(n_faces, rng, cfg)
    face_emotions = [
        scene_emotion if rng.random() < cfg.face_scene_agreement else EMOTIONS[int(rng.integers(len(EMOTIONS)))]
        for _ in boxes
    ]
    sizes = [relative_face_size(b, cfg.image_size, cfg.image_size) for b in boxes]
    context = context_key(len(boxes), max(sizes) if sizes else None, cfg.large_face_threshold)
    sources = _sources_of(context)
    probs = np.array([cfg.source_table[context].get(s, 0.0) for s in sources], dtype=np.float64)
    true_source = sources[int(rng.choice(len(sources), p=probs / probs.sum()))]
    label = scene_emotion if true_source == "scene" else face_emotions[FACE_SLOTS.index(true_source)]
    va = np.clip(np.asarray(VA_CENTRES[label]) + rng.normal(0.0, cfg.va_noise, 2), -1.0, 1.0)
    return {
        "sample_id": f"syn{cfg.seed}-{index:05d}",
        "label": label,
        "boxes": boxes,
        "face_emotions": face_emotions,
        "scene_category": SCENES[category].name,
        "scene_emotion": scene_emotion,
        "true_source": true_source,
        "context": context,
        "valence": round(float(va[0]), 4),
        "arousal": round(float(va[1]), 4),
    }


def render_image(latent: dict[str, Any], index: int, split: str, cfg: SyntheticConfig) -> bytes:
    """The PNG bytes of one image, drawn in the face style of its split."""
    rng = np.random.default_rng([cfg.seed, index, 1])
    style = face_style(cfg.domain_shift if split == "pretrain" else 0.0)
    category = [s.name for s in SCENES].index(latent["scene_category"])
    canvas = draw_scene(category, cfg.image_size, rng, SUPERSAMPLE)
    draw = ImageDraw.Draw(canvas)
    for box, emotion in zip(latent["boxes"], latent["face_emotions"]):
        draw_face(draw, box, emotion, style, rng, SUPERSAMPLE)
    img = blur_regions(canvas.reduce(SUPERSAMPLE), latent["boxes"], style.blur)
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0.0, rng.uniform(2.0, 7.0), (cfg.image_size, cfg.image_size, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# --------------------------------------------------------------------------- on disk


def _render_chunk(args: tuple[SyntheticConfig, Path, list[tuple[int, dict[str, Any], str]]]) -> None:
    cfg, images, jobs = args
    for index, latent, split in jobs:
        atomic_write_bytes(images / f"{latent['sample_id']}.png", render_image(latent, index, split, cfg))


def generate_synthetic(root: str | Path, cfg: SyntheticConfig | None = None, workers: int | None = None) -> Path:
    """Generate the benchmark into ``root`` (overwriting any set there); returns ``root``.

    ``workers`` processes render the images (default: up to 2, one per CPU);
    the output does not depend on it.
    """
    cfg = cfg or SyntheticConfig()
    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    (root / "config.json").unlink(missing_ok=True)  # incomplete until rewritten at the end

    latents = [_draw_latent(i, cfg) for i in range(cfg.n_images)]
    splits = assign_splits(
        [lat["sample_id"] for lat in latents], [lat["label"] for lat in latents], cfg.split_fractions, cfg.seed
    )
    jobs = [(i, lat, splits[lat["sample_id"]]) for i, lat in enumerate(latents)]
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    if workers == 1 or len(jobs) < 200:
        _render_chunk((cfg, images, jobs))
    else:
        chunks = [(cfg, images, jobs[k :: workers * 4]) for k in range(workers * 4)]
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        # the workers die with this process (a killed generator must not leave them rendering)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            list(pool.map(_render_chunk, chunks))

    lines = []
    for lat in latents:
        record = {
            "sample_id": lat["sample_id"],
            "image": f"images/{lat['sample_id']}.png",
            "split": splits[lat["sample_id"]],
            "label": lat["label"],
            **{k: v for k, v in lat.items() if k not in ("sample_id", "label")},
        }
        lines.append(json.dumps(record))
    atomic_write_bytes(root / "annotations.jsonl", ("\n".join(lines) + "\n").encode())
    meta = {"generator_version": GENERATOR_VERSION, "config": cfg.to_dict()}
    atomic_write_bytes(root / "config.json", json.dumps(meta, indent=2).encode())
    return root


def read_synthetic_config(root: str | Path) -> SyntheticConfig | None:
    """The config of the complete set at ``root``, or None if there is none."""
    path = Path(root) / "config.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
        version, values = meta["generator_version"], meta["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is not a synthetic-set config ({exc}); delete {Path(root)} to regenerate it") from None
    if version != GENERATOR_VERSION:
        raise DatasetError(
            f"synthetic set at {root} was made by generator version {version}, this is version "
            f"{GENERATOR_VERSION}; delete it (or choose another root) to regenerate"
        )
    return SyntheticConfig.from_dict(values)


def config_differences(on_disk: SyntheticConfig, wanted: SyntheticConfig) -> list[str]:
    """``"key: on disk X, requested Y"`` for every option that differs."""
    a, b = on_disk.to_dict(), wanted.to_dict()
    return [f"{k}: on disk {a[k]!r}, requested {b[k]!r}" for k in a if a[k] != b[k]]


def ensure_synthetic(root: str | Path, cfg: SyntheticConfig | None = None) -> Path:
    """Generate the set at ``root`` if absent, reuse it if its config matches, refuse otherwise."""
    cfg = cfg or SyntheticConfig()
    existing = read_synthetic_config(root)
    if existing is None:
        return generate_synthetic(root, cfg)
    diffs = config_differences(existing, cfg)
    if diffs:
        raise DatasetError(
            f"synthetic set at {root} was generated with a different config ({'; '.join(diffs)}); "
            "choose another root or delete it to regenerate"
        )
    return Path(root)


def load_synthetic_dir(root: str | Path) -> Dataset:
    """The data set stored at ``root`` (must be complete); missing images are skipped."""
    root = Path(root)
    cfg = read_synthetic_config(root)
    if cfg is None:
        raise DatasetError(f"no synthetic set at {root} (config.json missing); generate one with ensure_synthetic()")
    ann_path = root / "annotations.jsonl"
    if not ann_path.is_file():
        raise DatasetError(f"{ann_path} is missing; delete {root} to regenerate the synthetic set")
    samples, skipped = [], []
    for lineno, line in enumerate(ann_path.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
            sid, rel, split, label = rec.pop("sample_id"), rec.pop("image"), rec.pop("split"), rec.pop("label")
        except (json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise DatasetError(f"{ann_path}:{lineno}: not a synthetic annotation ({exc}); delete {root} to regenerate") from None
        path = root / rel
        if not path.is_file():
            skipped.append((sid, f"image missing: {path}"))
            continue
        rec["image_size"] = [cfg.image_size, cfg.image_size]
        samples.append(Sample(sid, path, EMOTIONS.index(label), split, rec))
    notes = [f"regenerate the set by deleting {root}"] if skipped else []
    return Dataset("synthetic", samples, skipped, tuple(cfg.split_fractions), str(root), notes)


def default_root(cfg: SyntheticConfig) -> Path:
    """``$EMOLOGIC_DATA/synthetic-<config digest>`` (``EMOLOGIC_DATA`` defaults to ``./data``)."""
    return Path(os.environ.get("EMOLOGIC_DATA", "data")) / f"synthetic-{cfg.digest()}"


@register_dataset("synthetic")
def synthetic_dataset(root: str | Path | None = None, **options: Any) -> Dataset:
    """Load (generating if needed) the synthetic benchmark.

    ``options`` are :class:`SyntheticConfig` fields. With a ``root`` that already
    holds a set, options not given are taken from it and the given ones must
    match; without a ``root`` each config gets its own directory (:func:`default_root`).
    """
    if root is not None and (existing := read_synthetic_config(root)) is not None:
        cfg = SyntheticConfig.from_dict({**existing.to_dict(), **options})
    else:
        cfg = SyntheticConfig.from_dict(options)
    root = Path(root) if root is not None else default_root(cfg)
    ensure_synthetic(root, cfg)
    return load_synthetic_dir(root)

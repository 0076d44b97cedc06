"""The built-in synthetic benchmark: generated images with a known answer.

Each image has a scene of one of seven categories (own palette and texture,
own emotion prior) and 0-3 faces, each with its own expression, drawn so that
the real FER2013 recogniser reads it (``emologic bench faces`` measures how well). The
label comes from exactly one source -- the scene, one face, or the image's mood
rendered as valence/arousal cues in the scene (:mod:`pipelines.datasets.synthetic_va`)
-- drawn from a known table conditioned on the image's context (number of faces,
size bucket of the largest face; :func:`pipelines.context.context_key`, the same
function the logic uses). Everything is recorded: boxes, per-face, scene and mood
emotions, the true source, the context, valence and arousal.

Generation runs in three steps so that splits never depend on drawing:
1. draw all latent content from ``(seed, image index)`` streams;
2. assign splits with :func:`pipelines.splits.assign_splits`, stratified by label;
3. render each image with its split's face style (``pretrain`` faces use the
   domain-shifted style of strength ``domain_shift``).

On disk: ``root/images/<sample_id>.png``, ``root/annotations.jsonl`` (one JSON
object per sample, split included), ``root/truth.json`` (the source and circumplex
tables and every image's valence/arousal, :func:`truth_of`) and ``root/config.json`` (written last; its
presence marks a complete set). Same config -> byte-identical annotations.

The config and the source table are :mod:`pipelines.datasets.synthetic_config`;
drawing is :mod:`pipelines.datasets.synthetic_draw` and
:mod:`pipelines.datasets.synthetic_va`.
"""
from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from neural.common import EMOTIONS, FACE_SLOTS, MAX_FACES, atomic_write_bytes
from neural.processes import die_with_parent
from pipelines.context import context_key, relative_face_size
from pipelines.datasets.base import Dataset, DatasetError, Sample, register_dataset
from pipelines.datasets.synthetic_config import (
    GENERATOR_VERSION,
    MAX_FACE,
    MAX_OVERLAP,
    MIN_FACE,
    VA_SOURCE,
    SyntheticConfig,
    sources_of,
)
from pipelines.datasets.synthetic_draw import (
    FACE_ASPECT,
    SCENES,
    SUPERSAMPLE,
    blur_regions,
    draw_face,
    draw_scene,
    face_style,
)
from pipelines.datasets.synthetic_va import VA_CENTRES, circumplex_table, draw_mood, va_tint  # noqa: F401
from pipelines.splits import assign_splits


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
    sources = sources_of(context)
    probs = np.array([cfg.source_table[context].get(s, 0.0) for s in sources], dtype=np.float64)
    true_source = sources[int(rng.choice(len(sources), p=probs / probs.sum()))]
    mood, valence, arousal = draw_mood(rng, cfg.va_noise)
    if true_source == "scene":
        label = scene_emotion
    elif true_source == VA_SOURCE:
        label = mood
    else:
        label = face_emotions[FACE_SLOTS.index(true_source)]
    return {
        "sample_id": f"syn{cfg.seed}-{index:05d}",
        "label": label,
        "boxes": boxes,
        "face_emotions": face_emotions,
        "scene_category": SCENES[category].name,
        "scene_emotion": scene_emotion,
        "true_source": true_source,
        "context": context,
        "va_emotion": mood,
        "valence": valence,
        "arousal": arousal,
    }


def render_image(latent: dict[str, Any], index: int, split: str, cfg: SyntheticConfig) -> bytes:
    """The PNG bytes of one image, drawn in the face style of its split."""
    rng = np.random.default_rng([cfg.seed, index, 1])
    style = face_style(cfg.domain_shift if split == "pretrain" else 0.0)
    category = [s.name for s in SCENES].index(latent["scene_category"])
    # the mood is rendered in the scene before the faces are drawn: faces stay as FER2013 reads them
    canvas = va_tint(draw_scene(category, cfg.image_size, rng, SUPERSAMPLE), latent["valence"], latent["arousal"])
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
    atomic_write_bytes(root / TRUTH_FILE, json.dumps(truth_of(cfg, latents), indent=1).encode())
    meta = {"generator_version": GENERATOR_VERSION, "config": cfg.to_dict()}
    atomic_write_bytes(root / "config.json", json.dumps(meta, indent=2).encode())
    return root


TRUTH_FILE = "truth.json"


def truth_of(cfg: SyntheticConfig, latents: list[dict[str, Any]]) -> dict[str, Any]:
    """What the logic should recover: the source table, the circumplex table
    (:func:`~pipelines.datasets.synthetic_va.circumplex_table`) and every image's
    mood, valence and arousal."""
    return {
        "source_table": cfg.source_table,
        "circumplex": circumplex_table(cfg.va_noise),
        "va_centres": {e: list(c) for e, c in VA_CENTRES.items()},
        "va_noise": cfg.va_noise,
        "va": {lat["sample_id"]: {"va_emotion": lat["va_emotion"], "valence": lat["valence"],
                                  "arousal": lat["arousal"]} for lat in latents},
    }


def read_truth(root: str | Path) -> dict[str, Any]:
    """``truth.json`` of the complete set at ``root``."""
    path = Path(root) / TRUTH_FILE
    if read_synthetic_config(root) is None or not path.is_file():
        raise DatasetError(f"no synthetic set with {TRUTH_FILE} at {root}; delete it to regenerate")
    return json.loads(path.read_text())


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

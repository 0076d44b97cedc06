"""A synthetic AFEW-VA in the real layout: clips of a schematic face following a smooth V/A trajectory.

Each clip has its own person (skin tone, hair: one drawing stream per clip,
reused for every frame), background colour and trajectory. Per frame, valence
and arousal are a base level plus two slow sinusoids, clipped to [-1, 1] and
stored as integers in -10..10 like AFEW-VA. The face is drawn with
:func:`pipelines.datasets.synthetic_draw.draw_face`: the expression is the
emotion whose circumplex centre (``synthetic.VA_CENTRES``) is nearest to the
frame's (valence, arousal), and the face style varies continuously with them
(arousal widens the eyes and lifts the brows, valence widens the mouth), so
both discrete and continuous cues carry the answer. The head drifts slowly and
each frame gets pixel noise.

On disk: ``root/<clip>/<00000.png ...>``, ``root/<clip>/<clip>.json`` and
``root/synthetic_config.json`` (written last; it marks a complete set).
"""
from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from neural.common import atomic_write_bytes
from pipelines.datasets.base import DatasetError
from pipelines.datasets.synthetic import VA_CENTRES
from pipelines.datasets.synthetic_draw import FACE_ASPECT, SUPERSAMPLE, FaceStyle, draw_face

GENERATOR_VERSION = 2
CONFIG_FILE = "synthetic_config.json"


@dataclass
class AfewVASyntheticConfig:
    n_clips: int = 40
    min_frames: int = 16
    max_frames: int = 32
    image_size: int = 64
    seed: int = 0
    noise: float = 4.0  # pixel noise standard deviation (0..255 scale)

    def __post_init__(self) -> None:
        if self.n_clips < 1:
            raise DatasetError(f"n_clips must be positive, got {self.n_clips}")
        if not 2 <= self.min_frames <= self.max_frames:
            raise DatasetError(f"need 2 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.image_size < 32:
            raise DatasetError(f"image_size must be >= 32, got {self.image_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def va_trajectory(n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, 2] smooth (valence, arousal) in [-1, 1]: base level plus two slow sinusoids each."""
    t = np.arange(n) / n
    out = np.empty((n, 2))
    for k in range(2):
        base = rng.uniform(-0.6, 0.6)
        wave = sum(
            rng.uniform(0.15, 0.4) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 2 * np.pi))
            for _ in range(2)
        )
        out[:, k] = np.clip(base + wave, -1, 1)
    return out


def nearest_expression(valence: float, arousal: float) -> str:
    return min(VA_CENTRES, key=lambda e: (VA_CENTRES[e][0] - valence) ** 2 + (VA_CENTRES[e][1] - arousal) ** 2)


def render_frame(valence: float, arousal: float, person_seed: list[int], background: tuple[int, int, int],
                 offset: tuple[float, float], size: int, noise: float, noise_rng: np.random.Generator) -> bytes:
    """PNG bytes of one frame of a clip (``person_seed`` fixes who is drawn)."""
    # arousal opens the eyes and lifts the brows, valence widens the mouth: strong
    # enough to read at 48 px on the shaded faces, whose features are subtler than ink strokes
    style = FaceStyle(eye_scale=1.0 + 0.5 * arousal, brow_lift=0.04 * arousal, mouth_scale=1.0 + 0.4 * valence)
    canvas = Image.new("RGB", (size * SUPERSAMPLE, size * SUPERSAMPLE), background)
    w = 0.6 * size
    h = w * FACE_ASPECT
    cx, cy = size / 2 + offset[0], size / 2 + offset[1]
    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    draw_face(ImageDraw.Draw(canvas), box, nearest_expression(valence, arousal), style,
              np.random.default_rng(person_seed), SUPERSAMPLE)
    img = np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32)
    img = img + noise_rng.normal(0.0, noise, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def generate_afewva_synthetic(root: str | Path, cfg: AfewVASyntheticConfig | None = None) -> Path:
    """Write the set into ``root`` (overwriting clips of the same names); returns ``root``."""
    cfg = cfg or AfewVASyntheticConfig()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / CONFIG_FILE).unlink(missing_ok=True)  # incomplete until rewritten at the end
    for c in range(cfg.n_clips):
        rng = np.random.default_rng([cfg.seed, c])
        clip = f"{c + 1:03d}"
        n = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
        va = va_trajectory(n, rng)
        raw = np.rint(va * 10).astype(int)  # AFEW-VA stores integers in -10..10
        background = tuple(int(x) for x in rng.integers(40, 216, 3))
        drift = np.cumsum(rng.normal(0, 0.4, (n, 2)), axis=0).clip(-3, 3)
        for i in range(n):
            png = render_frame(raw[i, 0] / 10, raw[i, 1] / 10, [cfg.seed, c, 1], background, tuple(drift[i]),
                               cfg.image_size, cfg.noise, np.random.default_rng([cfg.seed, c, 2, i]))
            atomic_write_bytes(root / clip / f"{i:05d}.png", png)
        doc = {"video_id": clip, "actor": f"synthetic-{c:03d}",
               "frames": {f"{i:05d}": {"valence": int(raw[i, 0]), "arousal": int(raw[i, 1])} for i in range(n)}}
        atomic_write_bytes(root / clip / f"{clip}.json", json.dumps(doc, indent=1).encode())
    meta = {"generator_version": GENERATOR_VERSION, "config": cfg.to_dict()}
    atomic_write_bytes(root / CONFIG_FILE, json.dumps(meta, indent=2).encode())
    return root


def ensure_afewva_synthetic(root: str | Path, cfg: AfewVASyntheticConfig | None = None) -> Path:
    """Generate the set at ``root`` unless a complete one with this config is there; refuse another config."""
    cfg = cfg or AfewVASyntheticConfig()
    path = Path(root) / CONFIG_FILE
    if not path.is_file():
        if Path(root).is_dir() and any(p.is_dir() for p in Path(root).iterdir()):
            # real data, or a generation that was interrupted: never write over it
            raise DatasetError(
                f"{root} holds clip folders but no {CONFIG_FILE}: it is not a (complete) synthetic set; "
                "give an empty or new directory, or delete it to regenerate"
            )
        return generate_afewva_synthetic(root, cfg)
    try:
        meta = json.loads(path.read_text())
        on_disk = meta["config"]
        version = meta["generator_version"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a synthetic AFEW-VA config ({exc}); delete {root} to regenerate") from None
    wanted = cfg.to_dict()
    diffs = [f"{k}: on disk {on_disk.get(k)!r}, requested {v!r}" for k, v in wanted.items() if on_disk.get(k) != v]
    if version != GENERATOR_VERSION:
        diffs.append(f"generator version: on disk {version}, this is {GENERATOR_VERSION}")
    if diffs:
        raise DatasetError(
            f"synthetic AFEW-VA at {root} was generated otherwise ({'; '.join(diffs)}); choose another "
            "directory or delete it to regenerate"
        )
    return Path(root)

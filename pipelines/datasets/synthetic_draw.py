"""Drawing for the synthetic benchmark: scene textures; faces come from
:mod:`pipelines.datasets.synthetic_faces` (re-exported here).

Everything is drawn on a canvas ``SUPERSAMPLE`` times the image size and
box-filtered down, so thin strokes survive at small face sizes. All randomness
comes from the ``numpy.random.Generator`` passed in, so a drawing is a pure
function of its arguments.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from neural.common import EMOTIONS
from pipelines.datasets.synthetic_faces import EXPRESSIONS, FaceStyle, draw_face, face_style  # noqa: F401  (re-exported)

SUPERSAMPLE = 2
#: Head height / head width of every face (the box is the head ellipse's box).
FACE_ASPECT = 1.2

RGB = tuple[int, int, int]


# --------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class SceneSpec:
    name: str
    texture: str
    palette: tuple[RGB, ...]
    #: Most likely scene emotion (prior 0.5) and the runner-up (0.2); the other
    #: five share the remaining 0.3.
    emotion: str
    secondary: str

    def prior(self) -> np.ndarray:
        """[7] probability of each emotion in this scene, in EMOTIONS order."""
        p = np.full(len(EMOTIONS), 0.3 / (len(EMOTIONS) - 2))
        p[EMOTIONS.index(self.emotion)] = 0.5
        p[EMOTIONS.index(self.secondary)] = 0.2
        return p


SCENES: tuple[SceneSpec, ...] = (
    SceneSpec("park", "dots", ((120, 190, 235), (70, 150, 60), (250, 220, 60), (245, 245, 245)), "happy", "surprise"),
    SceneSpec("rainy_street", "rain", ((95, 105, 125), (60, 65, 80), (170, 180, 200)), "sad", "neutral"),
    SceneSpec("fire", "flames", ((150, 20, 10), (250, 150, 30), (255, 230, 120)), "angry", "fear"),
    SceneSpec("dark_forest", "trunks", ((15, 35, 20), (60, 40, 25), (40, 70, 40)), "fear", "sad"),
    SceneSpec("dump", "blotches", ((110, 100, 40), (80, 60, 35), (150, 140, 90)), "disgust", "angry"),
    SceneSpec("party", "confetti", ((90, 20, 110), (20, 30, 90), (255, 60, 160)), "surprise", "happy"),
    SceneSpec("office", "grid", ((215, 205, 185), (150, 150, 160), (120, 110, 100)), "neutral", "sad"),
)


def _c(arr) -> tuple[int, int, int]:
    """A colour as the int triple PIL wants."""
    return tuple(int(v) for v in np.clip(arr, 0, 255))  # type: ignore[return-value]


def _jitter(color: RGB, rng: np.random.Generator, sd: float = 12.0) -> np.ndarray:
    return np.clip(np.asarray(color, dtype=np.float32) + rng.normal(0, sd, 3), 0, 255)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two colours; t [H, W] in [0, 1] -> [H, W, 3]."""
    t = t[..., None]
    return a * (1 - t) + b * t


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """[size, size] in [0, 1]: a random ``cells`` x ``cells`` grid, bilinearly upsampled."""
    grid = Image.fromarray(rng.random((cells, cells)).astype(np.float32), mode="F")
    return np.asarray(grid.resize((size, size), Image.BILINEAR))


def draw_scene(category: int, size: int, rng: np.random.Generator, scale: int = 1) -> Image.Image:
    """An RGB scene of category ``category`` (index into SCENES), ``size * scale`` pixels square.

    The texture is computed at ``size`` and upsampled; shapes on top are drawn at full scale.
    """
    spec = SCENES[category]
    pal = [_jitter(c, rng) for c in spec.palette]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # [S, S] each, in [0, 1)
    tex = spec.texture
    if tex == "dots":  # sky over grass, flowers drawn below
        horizon = rng.uniform(0.3, 0.5)
        arr = np.where((yy < horizon)[..., None], pal[0], pal[1]) * (0.85 + 0.3 * yy[..., None])
    elif tex == "rain":  # slanted streaks over a dull gradient
        angle, freq = rng.uniform(1.1, 1.4), rng.uniform(14, 22)
        streak = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 6.3))
        arr = _mix(_mix(pal[0], pal[1], yy), pal[2], 0.6 * (streak > 0.75))
    elif tex == "flames":  # dark red bottom to orange top, flickering
        flick = _smooth_noise(rng, size, 6) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 6) * xx + rng.uniform(0, 6.3)))
        arr = _mix(pal[0], pal[1], np.clip(1 - yy + 0.5 * flick - 0.25, 0, 1))
        arr = _mix(arr, pal[2], np.clip(flick - 0.75, 0, 1) * 2)
    elif tex == "trunks":  # vertical tree trunks in a dark wood
        wobble = 0.02 * _smooth_noise(rng, size, 3)
        trunk = np.sin(2 * np.pi * rng.uniform(4, 8) * (xx + wobble) + rng.uniform(0, 6.3)) > 0.55
        arr = np.where(trunk[..., None], pal[1], _mix(pal[0], pal[2], _smooth_noise(rng, size, 5)))
    elif tex == "blotches":  # muddy low-frequency blotches with speckles
        arr = _mix(pal[0], pal[1], _smooth_noise(rng, size, int(rng.integers(4, 8))))
        arr = _mix(arr, pal[2], (rng.random((size, size)) < 0.04).astype(np.float32))
    elif tex == "confetti":  # radial glow, confetti drawn below
        r = np.hypot(xx - rng.uniform(0.3, 0.7), yy - rng.uniform(0.3, 0.7))
        arr = _mix(pal[0], pal[1], np.clip(r * 1.4, 0, 1))
    elif tex == "grid":  # tiles / office windows
        freq, line = rng.uniform(5, 9), rng.uniform(0.06, 0.12)
        on_line = ((xx * freq) % 1 < line) | ((yy * freq + rng.uniform(0, 1)) % 1 < line)
        arr = _mix(pal[0], pal[1], on_line.astype(np.float32) * 0.8)
    else:  # pragma: no cover - SCENES is a constant
        raise ValueError(f"unknown texture {tex!r}")
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if scale != 1:
        img = img.resize((size * scale, size * scale), Image.BILINEAR)
    if tex in ("dots", "confetti"):
        draw = ImageDraw.Draw(img)
        n = int(rng.integers(25, 50)) if tex == "dots" else int(rng.integers(50, 90))
        for _ in range(n):
            x, y = rng.uniform(0, size, 2)
            if tex == "dots":
                y = size * rng.uniform(0.45, 1.0)
                r = size * rng.uniform(0.008, 0.02)
                color = pal[2] if rng.random() < 0.6 else pal[3]
                draw.ellipse([scale * (x - r), scale * (y - r), scale * (x + r), scale * (y + r)], fill=_c(color))
            else:
                r = size * rng.uniform(0.006, 0.014)
                color = rng.integers(80, 256, 3)
                draw.rectangle([scale * (x - r), scale * (y - r / 2), scale * (x + r), scale * (y + r / 2)], fill=_c(color))
    return img


# --------------------------------------------------------------------------- faces


def blur_regions(img: Image.Image, boxes, radius: float) -> Image.Image:
    """``img`` with each box (grown by 10 %) Gaussian-blurred by ``radius`` pixels."""
    if radius <= 0:
        return img
    for x1, y1, x2, y2 in boxes:
        mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
        region = (
            max(0, int(x1 - mx)),
            max(0, int(y1 - my)),
            min(img.width, int(x2 + mx) + 1),
            min(img.height, int(y2 + my) + 1),
        )
        img.paste(img.crop(region).filter(ImageFilter.GaussianBlur(radius)), region[:2])
    return img

"""The synthetic benchmark's valence/arousal source: its latent, its visible cue, its truth.

Every image has a *mood* emotion, drawn uniformly and independently of the
scene and the faces. Its valence and arousal are the mood's circumplex centre
(:data:`VA_CENTRES`) plus Gaussian noise (``va_noise``), clipped to [-1, 1].
They are rendered in the scene -- never in the faces, which FER2013 must read
unchanged -- as cues a backbone can see (:func:`va_tint`):

* valence: colour temperature (warm for positive, cool for negative);
* arousal: saturation and brightness (vivid and bright for high, dull and dim for low).

When the context's source table draws the ``va`` source, the image's label is
its mood. The generator's circumplex table is then the exact posterior over
the mood given the valence and arousal *bins* the logic sees
(:func:`circumplex_table`): with a uniform mood prior,

    P(E | v-bin, a-bin) ∝ P(v in v-bin | E) P(a in a-bin | E),

each factor a Gaussian mass (clipping to [-1, 1] moves mass to the outermost
bins' far ends, so it does not change any bin's mass). That is what the
program's learnable ``circumplex/3`` table converges to when the regressor is
exact, so the learned table has a known answer.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from neural.va import AROUSAL_BINS, VALENCE_BINS, VABinsConfig
from neural.common import EMOTIONS

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

#: The bin edges of the logic's V/A adapters (``neural.va.VABinsConfig``), which the truth is stated in.
BIN_EDGES: tuple[float, float] = VABinsConfig().edges

#: Strength of the rendered cues (multiplicative, at |valence| = |arousal| = 1).
WARMTH, SATURATION, BRIGHTNESS = 0.35, 0.7, 0.3


def draw_mood(rng: np.random.Generator, va_noise: float) -> tuple[str, float, float]:
    """(mood emotion, valence, arousal) of one image."""
    mood = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
    va = np.clip(np.asarray(VA_CENTRES[mood]) + rng.normal(0.0, va_noise, 2), -1.0, 1.0)
    return mood, round(float(va[0]), 4), round(float(va[1]), 4)


def va_tint(img: Image.Image, valence: float, arousal: float) -> Image.Image:
    """The scene with its mood rendered: colour temperature from valence, saturation
    and brightness from arousal (RGB in, RGB out, same size)."""
    arr = np.asarray(img, dtype=np.float32) / 255.0  # [H, W, 3]
    grey = arr.mean(axis=2, keepdims=True)
    arr = grey + (arr - grey) * (1.0 + SATURATION * arousal)
    arr = arr * (1.0 + BRIGHTNESS * arousal)
    arr = arr * np.array([1.0 + WARMTH * valence, 1.0, 1.0 - WARMTH * valence], dtype=np.float32)
    return Image.fromarray((np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB")


def _bin_masses(centre: float, noise: float) -> list[float]:
    """Mass of N(centre, noise^2) in (-inf, e0], (e0, e1], (e1, inf)."""
    if noise == 0:
        k = sum(centre > e for e in BIN_EDGES)
        return [float(i == k) for i in range(3)]
    cdf = [0.5 * (1.0 + math.erf((e - centre) / (noise * math.sqrt(2.0)))) for e in BIN_EDGES]
    return [cdf[0], cdf[1] - cdf[0], 1.0 - cdf[1]]


def circumplex_table(va_noise: float) -> dict[str, dict[str, dict[str, float]]]:
    """The generator's P(emotion | valence bin, arousal bin): ``{v: {a: {emotion: p}}}``.

    A bin pair no mood reaches (only with ``va_noise=0``) gets a uniform row.
    """
    masses = {e: (_bin_masses(c[0], va_noise), _bin_masses(c[1], va_noise)) for e, c in VA_CENTRES.items()}
    table: dict[str, dict[str, dict[str, float]]] = {}
    for i, v in enumerate(VALENCE_BINS):
        table[v] = {}
        for j, a in enumerate(AROUSAL_BINS):
            w = {e: masses[e][0][i] * masses[e][1][j] for e in EMOTIONS}
            total = sum(w.values())
            table[v][a] = {e: (w[e] / total if total > 0 else 1.0 / len(EMOTIONS)) for e in EMOTIONS}
    return table


def bin_probabilities(va_noise: float) -> dict[str, dict[str, float]]:
    """P(valence bin, arousal bin) under the uniform mood prior: ``{v: {a: p}}`` (weights of the table's rows)."""
    masses = {e: (_bin_masses(c[0], va_noise), _bin_masses(c[1], va_noise)) for e, c in VA_CENTRES.items()}
    return {v: {a: sum(masses[e][0][i] * masses[e][1][j] for e in EMOTIONS) / len(EMOTIONS)
                for j, a in enumerate(AROUSAL_BINS)} for i, v in enumerate(VALENCE_BINS)}


def circumplex_error(learned: dict, truth: dict, weights: dict | None = None) -> dict[str, float]:
    """Error of a learned ``{v: {a: {emotion: p}}}`` table against the truth:
    ``mae`` (mean |difference| over all cells), ``max`` and, with ``weights``
    (:func:`bin_probabilities`), ``weighted_mae``: each row weighted by how often its bins occur
    (a row almost no image reaches cannot be learned and should not dominate)."""
    diffs, weighted, wsum = [], 0.0, 0.0
    for v, row in truth.items():
        for a, dist in row.items():
            d = [abs(learned[v][a][e] - p) for e, p in dist.items()]
            diffs += d
            if weights is not None:
                weighted += weights[v][a] * sum(d) / len(d)
                wsum += weights[v][a]
    out = {"mae": float(np.mean(diffs)), "max": float(np.max(diffs))}
    if weights is not None:
        out["weighted_mae"] = weighted / wsum
    return out

"""Parametric faces for the synthetic benchmarks, drawn so that FER2013 reads them.

A face is drawn in the coordinates of its box: ``u`` across (0 left, 1 right),
``v`` down (0 forehead, 1 chin), like a face detector's box; hair, ears and neck
reach a little beyond it, as on a photo. Each expression is a set of parameter
ranges (:data:`EXPRESSIONS`) for the action units FER2013 relies on (brows,
lids, cheeks, mouth corners and opening, teeth, wrinkles); every face draws its
own values in those ranges, on a random person (skin tone, hair, proportions).
The ranges were tuned with FER2013 itself as the oracle (``emologic bench faces``).

The person is drawn from the generator first, the expression after, so the same
generator state gives the same person with any expression (the clip benchmarks
rely on that). A drawing is a pure function of its arguments.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

from neural.common import EMOTIONS

RGB = tuple[int, int, int]

#: Per expression: (lo, hi) of each parameter, drawn uniformly per face. Lengths
#: are in box heights (v) or widths (u); "+" is down for vertical offsets.
#:   brow_in/brow_out: inner/outer eyebrow end offset; brow_arch: middle lift;
#:   eye_open: lid opening / eye width; lid_low: lower lid raised (squint);
#:   mouth_w: half width; corner: mouth-corner offset (- up: smile);
#:   mouth_open: lips apart; teeth: share of the opening showing upper teeth;
#:   cheeks: cheek raise and nasolabial folds; lip_raise: upper-lip raise;
#:   forehead / glabella / nose: depth of horizontal forehead lines, vertical
#:   lines between the brows, lines across the nose bridge.
_P = ("brow_in", "brow_out", "brow_arch", "eye_open", "lid_low", "mouth_w", "corner",
      "mouth_open", "teeth", "cheeks", "lip_raise", "forehead", "glabella", "nose")
EXPRESSIONS: dict[str, dict[str, tuple[float, float]]] = {
    "angry": dict(brow_in=(0.075, 0.1), brow_out=(-0.03, -0.015), brow_arch=(-0.01, 0.0), eye_open=(0.35, 0.6),
                  lid_low=(0.0, 0.15), mouth_w=(0.15, 0.2), corner=(0.02, 0.04), mouth_open=(0.0, 0.09),
                  teeth=(0.4, 0.7), cheeks=(0.0, 0.0), lip_raise=(0.0, 0.0),
                  forehead=(0.0, 0.0), glabella=(0.6, 1.0), nose=(0.0, 0.0)),
    "disgust": dict(brow_in=(0.02, 0.03), brow_out=(0.02, 0.03), brow_arch=(0.0, 0.01), eye_open=(0.2, 0.3),
                    lid_low=(0.25, 0.4), mouth_w=(0.13, 0.16), corner=(0.08, 0.1), mouth_open=(0.0, 0.0),
                    teeth=(0.0, 0.0), cheeks=(0.9, 1.0), lip_raise=(0.03, 0.045),
                    forehead=(0.0, 0.0), glabella=(0.0, 0.0), nose=(0.7, 1.0)),
    "fear": dict(brow_in=(-0.08, -0.06), brow_out=(-0.01, 0.01), brow_arch=(-0.01, 0.0), eye_open=(0.75, 0.95),
                 lid_low=(0.0, 0.0), mouth_w=(0.25, 0.3), corner=(0.02, 0.05), mouth_open=(0.02, 0.04),
                 teeth=(0.0, 0.0), cheeks=(0.0, 0.0), lip_raise=(0.0, 0.0),
                 forehead=(0.6, 1.0), glabella=(0.0, 0.0), nose=(0.0, 0.0)),
    "happy": dict(brow_in=(-0.015, 0.0), brow_out=(-0.015, 0.0), brow_arch=(0.0, 0.015), eye_open=(0.28, 0.4),
                  lid_low=(0.25, 0.4), mouth_w=(0.24, 0.28), corner=(-0.08, -0.06), mouth_open=(0.06, 0.1),
                  teeth=(0.6, 0.85), cheeks=(0.8, 1.0), lip_raise=(0.0, 0.0),
                  forehead=(0.0, 0.0), glabella=(0.0, 0.0), nose=(0.0, 0.0)),
    "sad": dict(brow_in=(-0.05, -0.035), brow_out=(0.025, 0.04), brow_arch=(-0.01, 0.0), eye_open=(0.3, 0.4),
                lid_low=(0.0, 0.05), mouth_w=(0.14, 0.18), corner=(0.05, 0.07), mouth_open=(0.0, 0.0),
                teeth=(0.0, 0.0), cheeks=(0.0, 0.0), lip_raise=(0.0, 0.0),
                forehead=(0.0, 0.0), glabella=(0.0, 0.0), nose=(0.0, 0.0)),
    "surprise": dict(brow_in=(-0.09, -0.07), brow_out=(-0.08, -0.06), brow_arch=(0.03, 0.05), eye_open=(0.85, 1.0),
                     lid_low=(0.0, 0.0), mouth_w=(0.1, 0.13), corner=(0.0, 0.01), mouth_open=(0.14, 0.2),
                     teeth=(0.0, 0.1), cheeks=(0.0, 0.0), lip_raise=(0.0, 0.0),
                     forehead=(0.6, 1.0), glabella=(0.0, 0.0), nose=(0.0, 0.0)),
    "neutral": dict(brow_in=(0.01, 0.02), brow_out=(0.0, 0.01), brow_arch=(0.005, 0.015), eye_open=(0.45, 0.55),
                    lid_low=(0.0, 0.05), mouth_w=(0.17, 0.21), corner=(-0.02, -0.01), mouth_open=(0.0, 0.0),
                    teeth=(0.0, 0.0), cheeks=(0.0, 0.0), lip_raise=(0.0, 0.0),
                    forehead=(0.0, 0.0), glabella=(0.0, 0.0), nose=(0.0, 0.0)),
}
assert set(EXPRESSIONS) == set(EMOTIONS) and all(tuple(r) == _P for r in EXPRESSIONS.values())


@dataclass(frozen=True)
class FaceStyle:
    """How faces are rendered; the ``pretrain`` split uses a shifted style."""

    skin_shift: float = 0.0  # 0: natural skin tones, 1: pale blue-grey tones
    stroke: float = 1.0  # thickness of brows, lids and lines
    contrast: float = 1.0  # 1: dark features; lower pulls them toward the skin colour
    eye_scale: float = 1.0  # multiplies the eyes' size and lid opening
    brow_lift: float = 0.0  # extra eyebrow height, in head heights
    mouth_scale: float = 1.0  # multiplies the mouth width
    blur: float = 0.0  # Gaussian blur radius on the face, in output pixels
    shading: float = 1.0  # 1: shaded skin; 0: flat


def face_style(shift: float) -> FaceStyle:
    """The face style at domain-shift strength ``shift`` (0: standard, 1: fully shifted)."""
    s = float(shift)
    return FaceStyle(
        skin_shift=s,
        stroke=1.0 - 0.4 * s,
        contrast=1.0 - 0.6 * s,
        eye_scale=1.0 + 0.3 * s,
        brow_lift=0.03 * s,
        mouth_scale=1.0 - 0.2 * s,
        blur=1.0 * s,
        shading=1.0 - 0.8 * s,
    )


_SKIN_STANDARD = (np.array([240, 208, 180], np.float32), np.array([105, 70, 48], np.float32))
_SKIN_SHIFTED = (np.array([214, 222, 236], np.float32), np.array([132, 140, 160], np.float32))
_HAIR = ((28, 22, 18), (70, 45, 25), (120, 80, 40), (190, 160, 90), (110, 110, 110), (140, 55, 25))
_LIP = np.array([150, 70, 70], np.float32)


def _c(arr) -> RGB:
    """A colour as the int triple PIL wants."""
    return tuple(np.clip(arr, 0, 255).astype(np.int64).tolist())  # type: ignore[return-value]


_S9 = np.linspace(-1.0, 1.0, 9)
_RING = np.linspace(0, 2 * np.pi, 16, endpoint=False)
_SKULL = np.linspace(np.pi, 2 * np.pi, 17)


def _curve(cx: float, half: float, corner_y: float, mid_y: float) -> np.ndarray:
    """[9, 2] points (u, v) of a parabola from (cx - half, corner_y) over (cx, mid_y) to (cx + half, corner_y)."""
    return np.stack([cx + half * _S9, corner_y + (mid_y - corner_y) * (1 - _S9**2)], axis=1)


class _Pen:
    """Draws in box coordinates with the face's colours: ``u`` across, ``v`` down the box."""

    def __init__(self, draw: ImageDraw.ImageDraw, box, scale: int, skin: np.ndarray, style: FaceStyle):
        self.draw = draw
        self.x1, self.y1, x2, y2 = (v * scale for v in box)
        self.w, self.h = x2 - self.x1, y2 - self.y1
        self.origin, self.size = np.array([self.x1, self.y1]), np.array([self.w, self.h])
        self.skin, self.k, self.stroke = skin, style.contrast, style.stroke
        self.dark = skin * (1 - 0.75 * self.k)  # brows and lid lines; features fade toward the skin as k drops

    def pts(self, uv) -> list[float]:
        """[n, 2] box coordinates -> flat canvas coordinates, as PIL takes them."""
        return (np.asarray(uv, dtype=np.float64) * self.size + self.origin).ravel().tolist()

    def rect(self, u0, v0, u1, v1) -> list[float]:
        return [self.x1 + u0 * self.w, self.y1 + v0 * self.h, self.x1 + u1 * self.w, self.y1 + v1 * self.h]

    def shade(self, f: float) -> RGB:
        """The skin darkened to ``f``, scaled by the style's contrast."""
        return _c(self.skin * (1 - (1 - f) * self.k))

    def toward_skin(self, color) -> RGB:
        """``color`` pulled toward the skin as the style's contrast drops."""
        return _c(np.asarray(color, np.float64) * self.k + self.skin * (1 - self.k))

    def width(self, f: float) -> int:
        """Line width: ``f`` times the base stroke."""
        return max(1, int(0.03 * self.h * self.stroke * f))


@dataclass(frozen=True)
class _Person:
    """Who is drawn: everything about a face that does not depend on its expression."""

    skin: np.ndarray
    hair: np.ndarray
    hair_kind: int  # 0 short, 1 long, 2 receding
    hairline: float
    eye_v: float
    eye_du: float  # eye centre distance from the midline (u)
    brow_v: float
    mouth_v: float
    light: float  # horizontal offset of the light
    iris: float  # iris darkness

    @classmethod
    def sample(cls, rng: np.random.Generator, style: FaceStyle) -> "_Person":
        t = rng.random()
        skin_std = _SKIN_STANDARD[0] * (1 - t) + _SKIN_STANDARD[1] * t
        skin_alt = _SKIN_SHIFTED[0] * (1 - t) + _SKIN_SHIFTED[1] * t
        skin = skin_std * (1 - style.skin_shift) + skin_alt * style.skin_shift + rng.normal(0, 6, 3)
        hair = np.asarray(_HAIR[int(rng.integers(len(_HAIR)))], np.float32) + rng.normal(0, 8, 3)
        hair_kind = int(rng.integers(3))
        hairline = rng.uniform(0.0, 0.1) + (0.08 if hair_kind == 2 else 0.0)
        eye_v, eye_du = 0.4 + rng.normal(0, 0.012), 0.2 + rng.normal(0, 0.01)
        brow_v = eye_v - 0.12 + rng.normal(0, 0.008)
        mouth_v = 0.79 + rng.normal(0, 0.012)
        light = rng.uniform(-0.12, 0.12)
        iris = 0.35 + 0.45 * rng.random()
        return cls(skin, hair, hair_kind, hairline, eye_v, eye_du, brow_v, mouth_v, light, iris)


def draw_face(
    draw: ImageDraw.ImageDraw,
    box: tuple[float, float, float, float],
    expression: str,
    style: FaceStyle,
    rng: np.random.Generator,
    scale: int = 2,
) -> None:
    """Draw one face with ``expression`` in ``box`` (output pixels) on a canvas ``scale`` x larger.

    The person is drawn from ``rng`` first, so the same generator state gives
    the same person with any expression.
    """
    person = _Person.sample(rng, style)
    ex = {k: rng.uniform(*EXPRESSIONS[expression][k]) for k in _P}
    pen = _Pen(draw, box, scale, person.skin, style)
    _head(pen, person, style)
    _wrinkles(pen, person, ex)
    for side in (-1, 1):
        _eye_and_brow(pen, person, ex, style, side)
    _nose(pen, person, ex)
    _mouth(pen, person, ex, style)


def _head(pen: _Pen, p: _Person, style: FaceStyle) -> None:
    """Hair behind, neck, ears, the shaded head, hair on top."""
    d, rect = pen.draw, pen.rect
    if p.hair_kind == 1:
        d.rounded_rectangle(rect(-0.12, -0.32, 1.12, 1.05), radius=0.3 * pen.w, fill=_c(p.hair * 0.8))
    d.rectangle(rect(0.28, 0.85, 0.72, 1.35), fill=pen.shade(0.7))
    for u0 in (-0.07, 0.95):
        d.ellipse(rect(u0, 0.36, u0 + 0.12, 0.62), fill=pen.shade(0.8))
    n_rings = 7 if style.shading > 0 else 1
    for r in range(n_rings):  # concentric ellipses: darker at the rim, centred toward the light
        f = r / max(1, n_rings - 1)
        tone = 0.72 + 0.34 * f * style.shading if n_rings > 1 else 0.95
        u0 = 0.2 * f + p.light * f
        d.ellipse(rect(u0, -0.28 + 0.22 * f, 1 - 0.4 * f + u0, 1.0 - 0.132 * f),
                  fill=_c(np.minimum(p.skin * (1 - (1 - tone) * pen.k), 250)))
    skull = np.stack([0.5 + 0.55 * np.cos(_SKULL), 0.38 + 0.72 * np.sin(_SKULL)], 1)
    hl = _curve(0.5, 0.4, p.hairline + 0.12, p.hairline)  # the hairline, temple to temple
    cap = np.concatenate([[[-0.05, 0.42]], skull, [[1.05, 0.42], [0.93, 0.4], [0.9, p.hairline + 0.12]], hl[::-1],
                          [[0.07, 0.4]]])
    d.polygon(pen.pts(cap), fill=_c(p.hair))


def _wrinkles(pen: _Pen, p: _Person, ex: dict) -> None:
    """Forehead lines (brows raised) and vertical lines between the brows (brows drawn down)."""
    if ex["forehead"] > 0.05:
        for j in range(3):
            v = p.brow_v - 0.07 - 0.045 * j + ex["brow_in"] * 0.5
            pen.draw.line(pen.pts(_curve(0.5, 0.2, v + 0.01, v)), fill=pen.shade(1 - 0.2 * ex["forehead"]),
                          width=pen.width(0.5))
    if ex["glabella"] > 0.05:
        for side in (-1, 1):
            pen.draw.line(pen.pts([(0.5 + side * 0.03, p.brow_v - 0.02), (0.5 + side * 0.025, p.brow_v + 0.07)]),
                          fill=pen.shade(1 - 0.3 * ex["glabella"]), width=pen.width(0.6))


def _eye_and_brow(pen: _Pen, p: _Person, ex: dict, style: FaceStyle, side: int) -> None:
    """One eye (socket, white, iris, pupil, lids) and its eyebrow; ``side`` -1 left, 1 right."""
    d, pts, shade, width = pen.draw, pen.pts, pen.shade, pen.width
    ew = 0.095 * style.eye_scale  # eye half width (u)
    open_v = ex["eye_open"] * style.eye_scale * 0.13  # lid opening (v)
    eye_v, cu = p.eye_v, 0.5 + side * p.eye_du
    d.ellipse(pen.rect(cu - 0.13, eye_v - 0.1, cu + 0.13, eye_v + 0.08), fill=shade(0.9))  # socket shadow
    upper = _curve(cu, ew, eye_v, eye_v - open_v * 0.75)
    lower = _curve(cu, ew, eye_v, eye_v + open_v * 0.25 - ex["lid_low"] * 0.03)
    lower[:, 1] = np.maximum(lower[:, 1], upper[:, 1])
    d.polygon(pts(np.concatenate([upper, lower[::-1]])), fill=pen.toward_skin(np.full(3, 235.0)))
    # iris: a disc, each point clamped between the lids (so the lids cover it)
    ri = 0.05 * style.eye_scale
    iu = cu + ri * np.cos(_RING)
    iv = eye_v - open_v * 0.25 + ri * pen.w / pen.h * np.sin(_RING)
    ub = np.interp(iu, upper[:, 0], upper[:, 1])
    iv = np.clip(iv, ub, np.maximum(np.interp(iu, lower[:, 0], lower[:, 1]), ub))
    d.polygon(pts(np.stack([iu, iv], 1)), fill=_c(p.skin * 0.35 * p.iris * pen.k + p.skin * (1 - pen.k) * 0.9))
    if open_v > 0.02:
        pv, pr = np.clip(eye_v - open_v * 0.25, eye_v - open_v * 0.7, eye_v + 0.01), 0.022
        x, y, w = pen.x1 + cu * pen.w, pen.y1 + pv * pen.h, pen.w
        d.ellipse([x - pr * w, y - pr * w, x + pr * w, y + pr * w], fill=_c(pen.dark * 0.4))
    d.line(pts(upper), fill=_c(pen.dark), width=width(0.9), joint="curve")  # upper lid and lashes
    d.line(pts(lower), fill=shade(0.6), width=width(0.4))
    if ex["lid_low"] > 0.2:  # cheek pushed up under the eye, crow's feet
        d.line(pts(_curve(cu, ew * 1.1, eye_v + 0.03, eye_v + 0.055)), fill=shade(0.75), width=width(0.5))
        for dv in (-0.02, 0.015):
            d.line(pts([(cu + side * (ew + 0.02), eye_v + dv), (cu + side * (ew + 0.07), eye_v + 2 * dv)]),
                   fill=shade(0.75), width=width(0.4))
    # eyebrow: a band tapering from the inner end over the arch to the outer end
    by = p.brow_v - style.brow_lift
    iu_, iv_ = 0.5 + side * 0.07, by + ex["brow_in"]
    ou_, ov_ = 0.5 + side * 0.33, by + ex["brow_out"]
    mu_, mv_ = 0.5 + side * 0.2, (iv_ + ov_) / 2 - ex["brow_arch"]
    th = 0.045 * style.stroke
    band = [(iu_, iv_ - th / 2), (mu_, mv_ - th / 2), (ou_, ov_ - th / 4),
            (ou_, ov_ + th / 4), (mu_, mv_ + th / 2), (iu_, iv_ + th / 2)]
    d.polygon(pts(band), fill=_c(pen.dark * 0.8 + p.hair * 0.2 * pen.k))


def _nose(pen: _Pen, p: _Person, ex: dict) -> None:
    """Bridge shadow (away from the light), tip, nostrils, and a wrinkled bridge in disgust."""
    d, shade, rect = pen.draw, pen.shade, pen.rect
    nv = p.mouth_v - 0.16
    side = 1 if p.light < 0 else -1
    d.line(pen.pts([(0.5 + side * 0.05, p.eye_v + 0.02), (0.5 + side * 0.07, nv - 0.03)]), fill=shade(0.82),
           width=pen.width(0.7))
    d.ellipse(rect(0.42, nv - 0.04, 0.58, nv + 0.03), fill=shade(0.85))
    d.ellipse(rect(0.45, nv - 0.05, 0.55, nv), fill=shade(1.0))
    for s2 in (-1, 1):
        d.ellipse(rect(0.5 + s2 * 0.045 - 0.025, nv - 0.005, 0.5 + s2 * 0.045 + 0.025, nv + 0.02), fill=shade(0.45))
    if ex["nose"] > 0.05:
        for j in range(3):
            v = p.eye_v + 0.03 * j
            d.line(pen.pts(_curve(0.5, 0.06, v + 0.01, v)), fill=shade(1 - 0.35 * ex["nose"]), width=pen.width(0.5))


def _mouth(pen: _Pen, p: _Person, ex: dict, style: FaceStyle) -> None:
    """Nasolabial folds, lips, the open mouth and its upper teeth."""
    d, pts = pen.draw, pen.pts
    mw = ex["mouth_w"] * style.mouth_scale
    cy = p.mouth_v + ex["corner"]
    if ex["cheeks"] > 0.2:  # folds from the nose wings to past the mouth corners
        nv = p.mouth_v - 0.16
        for s2 in (-1, 1):
            fold = [(0.5 + s2 * 0.1, nv - 0.01), (0.5 + s2 * (mw + 0.05), cy - 0.02), (0.5 + s2 * (mw + 0.06), cy + 0.05)]
            d.line(pts(fold), fill=pen.shade(1 - 0.3 * ex["cheeks"]), width=pen.width(0.6), joint="curve")
    op = ex["mouth_open"]
    top_mid, bot_mid = p.mouth_v - op / 2 - ex["lip_raise"], p.mouth_v + op / 2
    lip = _c(_LIP * 0.35 * pen.k + p.skin * (1 - 0.35 * pen.k) * 0.85)
    d.polygon(pts(np.concatenate([_curve(0.5, mw, cy, top_mid - 0.035), _curve(0.5, mw, cy, bot_mid + 0.045)[::-1]])),
              fill=lip)
    d.polygon(pts(_curve(0.5, mw * 0.8, cy + 0.045, bot_mid + 0.08)), fill=pen.shade(0.85))  # under the lower lip
    upper_in = _curve(0.5, mw * 0.92, cy, top_mid)
    if op > 0.005:
        d.polygon(pts(np.concatenate([upper_in, _curve(0.5, mw * 0.92, cy, bot_mid)[::-1]])), fill=_c(pen.dark * 0.5))
        if ex["teeth"] > 0:  # upper teeth: from the upper lip down, never past the lower lip
            tu = _curve(0.5, mw * 0.85, cy, top_mid + 0.003)
            tl = np.minimum(tu[:, 1] + (bot_mid - top_mid) * ex["teeth"] + 0.01, _curve(0.5, mw * 0.85, cy, bot_mid)[:, 1])
            d.polygon(pts(np.concatenate([tu, np.stack([tu[:, 0], tl], 1)[::-1]])),
                      fill=pen.toward_skin(np.full(3, 225.0)))
    else:
        d.line(pts(upper_in), fill=_c(pen.dark * 0.6), width=pen.width(0.7), joint="curve")

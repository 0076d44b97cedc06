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

from neural.vocabulary import EMOTIONS

RGB = tuple[int, int, int]

#: Per expression: (lo, hi) of each parameter, drawn uniformly per face. Lengths
#: are in box heights (v) or widths (u); "+" is down for vertical offsets.
#:   brow_in/brow_out: inner/outer eyebrow end offset; brow_arch: middle lift;
#:   eye_open: lid opening / eye width; lid_low: lower lid raised (squint);
#:   mouth_w: half width; corner: mouth-corner offset (- up: smile);
#:   mouth_open: lips apart; teeth: share of the opening showing upper teeth;
#:   cheeks: cheek raise and nasolabial folds; wrinkle: nose / forehead /
#:   glabella lines, by expression; lip_raise: upper-lip raise.
_P = ("brow_in", "brow_out", "brow_arch", "eye_open", "lid_low", "mouth_w", "corner",
      "mouth_open", "teeth", "cheeks", "wrinkle", "lip_raise")
EXPRESSIONS: dict[str, dict[str, tuple[float, float]]] = {
    "angry": dict(brow_in=(0.075, 0.1), brow_out=(-0.03, -0.015), brow_arch=(-0.01, 0.0), eye_open=(0.35, 0.6),
                  lid_low=(0.0, 0.15), mouth_w=(0.15, 0.2), corner=(0.02, 0.04), mouth_open=(0.0, 0.09),
                  teeth=(0.4, 0.7), cheeks=(0.0, 0.0), wrinkle=(0.6, 1.0), lip_raise=(0.0, 0.0)),
    "disgust": dict(brow_in=(0.02, 0.03), brow_out=(0.02, 0.03), brow_arch=(0.0, 0.01), eye_open=(0.2, 0.3),
                    lid_low=(0.25, 0.4), mouth_w=(0.13, 0.16), corner=(0.08, 0.1), mouth_open=(0.0, 0.0),
                    teeth=(0.0, 0.0), cheeks=(0.9, 1.0), wrinkle=(0.7, 1.0), lip_raise=(0.03, 0.045)),
    "fear": dict(brow_in=(-0.08, -0.06), brow_out=(-0.01, 0.01), brow_arch=(-0.01, 0.0), eye_open=(0.75, 0.95),
                 lid_low=(0.0, 0.0), mouth_w=(0.25, 0.3), corner=(0.02, 0.05), mouth_open=(0.02, 0.04),
                 teeth=(0.0, 0.0), cheeks=(0.0, 0.0), wrinkle=(0.6, 1.0), lip_raise=(0.0, 0.0)),
    "happy": dict(brow_in=(-0.015, 0.0), brow_out=(-0.015, 0.0), brow_arch=(0.0, 0.015), eye_open=(0.28, 0.4),
                  lid_low=(0.25, 0.4), mouth_w=(0.24, 0.28), corner=(-0.08, -0.06), mouth_open=(0.06, 0.1),
                  teeth=(0.6, 0.85), cheeks=(0.8, 1.0), wrinkle=(0.0, 0.0), lip_raise=(0.0, 0.0)),
    "sad": dict(brow_in=(-0.05, -0.035), brow_out=(0.025, 0.04), brow_arch=(-0.01, 0.0), eye_open=(0.3, 0.4),
                lid_low=(0.0, 0.05), mouth_w=(0.14, 0.18), corner=(0.05, 0.07), mouth_open=(0.0, 0.0),
                teeth=(0.0, 0.0), cheeks=(0.0, 0.0), wrinkle=(0.0, 0.3), lip_raise=(0.0, 0.0)),
    "surprise": dict(brow_in=(-0.09, -0.07), brow_out=(-0.08, -0.06), brow_arch=(0.03, 0.05), eye_open=(0.85, 1.0),
                     lid_low=(0.0, 0.0), mouth_w=(0.1, 0.13), corner=(0.0, 0.01), mouth_open=(0.14, 0.2),
                     teeth=(0.0, 0.1), cheeks=(0.0, 0.0), wrinkle=(0.6, 1.0), lip_raise=(0.0, 0.0)),
    "neutral": dict(brow_in=(0.01, 0.02), brow_out=(0.0, 0.01), brow_arch=(0.005, 0.015), eye_open=(0.45, 0.55),
                    lid_low=(0.0, 0.05), mouth_w=(0.17, 0.21), corner=(-0.02, -0.01), mouth_open=(0.0, 0.0),
                    teeth=(0.0, 0.0), cheeks=(0.0, 0.0), wrinkle=(0.0, 0.0), lip_raise=(0.0, 0.0)),
}
assert set(EXPRESSIONS) == set(EMOTIONS) and all(tuple(r) == _P for r in EXPRESSIONS.values())


@dataclass(frozen=True)
class FaceStyle:
    """How faces are rendered; the ``pretrain`` split uses a shifted style."""

    skin_shift: float = 0.0  # 0: natural skin tones, 1: pale blue-grey tones
    stroke: float = 1.0  # thickness of brows, lids and lines
    contrast: float = 1.0  # 1: dark features; lower pulls them toward the skin colour
    eye_scale: float = 1.0  # multiplies the lid opening
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
        contrast=1.0 - 0.45 * s,
        eye_scale=1.0 + 0.3 * s,
        brow_lift=0.03 * s,
        mouth_scale=1.0 - 0.2 * s,
        blur=0.8 * s,
        shading=1.0 - 0.8 * s,
    )


_SKIN_STANDARD = (np.array([240, 208, 180], np.float32), np.array([105, 70, 48], np.float32))
_SKIN_SHIFTED = (np.array([214, 222, 236], np.float32), np.array([132, 140, 160], np.float32))
_HAIR = ((28, 22, 18), (70, 45, 25), (120, 80, 40), (190, 160, 90), (110, 110, 110), (140, 55, 25))
_LIP = np.array([150, 70, 70], np.float32)


def _c(arr) -> RGB:
    return tuple(int(v) for v in np.clip(arr, 0, 255))  # type: ignore[return-value]


def _curve(cx: float, half: float, corner_y: float, mid_y: float, n: int = 9) -> np.ndarray:
    """[n, 2] points of a parabola from (cx - half, corner_y) over (cx, mid_y) to (cx + half, corner_y)."""
    s = np.linspace(-1.0, 1.0, n)
    return np.stack([cx + half * s, corner_y + (mid_y - corner_y) * (1 - s**2)], axis=1)


def _pts(a: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in a]


def draw_face(
    draw: ImageDraw.ImageDraw,
    box: tuple[float, float, float, float],
    expression: str,
    style: FaceStyle,
    rng: np.random.Generator,
    scale: int = 2,
) -> None:
    """Draw one face with ``expression`` in ``box`` (output pixels) on a canvas ``scale`` x larger."""
    x1, y1, x2, y2 = (v * scale for v in box)
    w, h = x2 - x1, y2 - y1

    def P(u, v):  # box coordinates -> canvas pixels (arrays or scalars)
        return x1 + np.asarray(u) * w, y1 + np.asarray(v) * h

    def X(u):
        return x1 + u * w

    def Y(v):
        return y1 + v * h

    # -- the person: drawn first, so it does not depend on the expression ---------
    t = rng.random()
    skin_std = _SKIN_STANDARD[0] * (1 - t) + _SKIN_STANDARD[1] * t
    skin_alt = _SKIN_SHIFTED[0] * (1 - t) + _SKIN_SHIFTED[1] * t
    skin = skin_std * (1 - style.skin_shift) + skin_alt * style.skin_shift + rng.normal(0, 6, 3)
    hair = np.asarray(_HAIR[int(rng.integers(len(_HAIR)))], np.float32) + rng.normal(0, 8, 3)
    hair_kind = int(rng.integers(3))  # 0 short, 1 long, 2 receding
    hairline = rng.uniform(0.0, 0.1) + (0.08 if hair_kind == 2 else 0.0)
    eye_v, eye_du = 0.4 + rng.normal(0, 0.012), 0.2 + rng.normal(0, 0.01)
    brow_v = eye_v - 0.12 + rng.normal(0, 0.008)
    mouth_v = 0.79 + rng.normal(0, 0.012)
    light = rng.uniform(-0.12, 0.12)  # horizontal offset of the light
    iris = 0.35 + 0.45 * rng.random()  # iris darkness
    ex = {k: rng.uniform(*EXPRESSIONS[expression][k]) for k in _P}

    k = style.contrast
    dark = skin * 0.25 * k + skin * (1 - k)  # brows and lid lines

    def shade(f: float) -> RGB:  # skin darkened by (1 - f), scaled by the style's contrast
        return _c(skin * (1 - (1 - f) * k))

    sw = max(1.0, 0.03 * h * style.stroke)  # base stroke width (canvas px)

    # -- hair behind, neck, ears, head ---------------------------------------------
    if hair_kind == 1:
        draw.rounded_rectangle([X(-0.12), Y(-0.32), X(1.12), Y(1.05)], radius=0.3 * w, fill=_c(hair * 0.8))
    draw.rectangle([X(0.28), Y(0.85), X(0.72), Y(1.35)], fill=shade(0.7))
    for u0 in (-0.07, 0.95):
        draw.ellipse([X(u0), Y(0.36), X(u0 + 0.12), Y(0.62)], fill=shade(0.8))
    n_rings = 7 if style.shading > 0 else 1
    for r in range(n_rings):  # shaded skin: darker at the rim, lit toward the light side
        f = r / max(1, n_rings - 1)
        inset_u, inset_v = 0.2 * f, 0.22 * f
        off = light * f
        tone = 0.72 + (0.34 * f) * style.shading if n_rings > 1 else 0.95
        draw.ellipse([X(inset_u + off), Y(-0.28 + inset_v), X(1 - inset_u + off), Y(1.0 - inset_v * 0.6)],
                     fill=_c(np.minimum(skin * (1 - (1 - tone) * k), 250)))
    # hair on top: between the skull's outline and the hairline, down to the temples
    a = np.linspace(np.pi, 2 * np.pi, 17)
    skull = np.stack([0.5 + 0.55 * np.cos(a), 0.38 + 0.72 * np.sin(a)], 1)
    hl = _curve(0.5, 0.4, hairline + 0.12, hairline)
    cap = np.concatenate([[[-0.05, 0.42]], skull, [[1.05, 0.42], [0.93, 0.4], [0.9, hairline + 0.12]], hl[::-1],
                          [[0.07, 0.4]]])
    draw.polygon(_pts(np.stack(P(*cap.T), 1)), fill=_c(hair))
    # -- forehead / glabella wrinkles -------------------------------------------------
    if expression in ("surprise", "fear") and ex["wrinkle"] > 0:
        for j in range(3):
            v = brow_v - 0.07 - 0.045 * j + ex["brow_in"] * 0.5
            draw.line(_pts(np.stack(P(*_curve(0.5, 0.2, v + 0.01, v).T), 1)), fill=shade(1 - 0.2 * ex["wrinkle"]),
                      width=max(1, int(sw * 0.5)))
    if expression == "angry":
        for side in (-1, 1):
            draw.line([(X(0.5 + side * 0.03), Y(brow_v - 0.02)), (X(0.5 + side * 0.025), Y(brow_v + 0.07))],
                      fill=shade(1 - 0.3 * ex["wrinkle"]), width=max(1, int(sw * 0.6)))

    # -- eyes and brows ------------------------------------------------------------------
    ew = 0.095  # eye half width (u)
    open_v = ex["eye_open"] * style.eye_scale * 0.13  # lid opening height (v)
    for side in (-1, 1):
        cu = 0.5 + side * eye_du
        # socket shadow, deeper under low brows
        draw.ellipse([X(cu - 0.13), Y(eye_v - 0.1), X(cu + 0.13), Y(eye_v + 0.08)], fill=shade(0.9))
        upper = _curve(cu, ew, eye_v, eye_v - open_v * 0.75)
        lower = _curve(cu, ew, eye_v, eye_v + open_v * 0.25 - ex["lid_low"] * 0.03)
        lower[:, 1] = np.maximum(lower[:, 1], upper[:, 1])
        white = _c(np.full(3, 235.0) * k + skin * (1 - k))
        draw.polygon(_pts(np.stack(P(*np.concatenate([upper, lower[::-1]]).T), 1)), fill=white)
        # iris: a disc clipped between the lids (point-wise clamp)
        a = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ri = 0.05
        iu = cu + ri * np.cos(a) * (w and 1)
        iv = eye_v - open_v * 0.25 + ri * w / h * np.sin(a)
        ub = np.interp(iu, upper[:, 0], upper[:, 1])
        lb = np.interp(iu, lower[:, 0], lower[:, 1])
        iv = np.clip(iv, ub, np.maximum(lb, ub))
        draw.polygon(_pts(np.stack(P(iu, iv), 1)), fill=_c(skin * 0.35 * iris * k + skin * (1 - k) * 0.9))
        pr = 0.022
        pv = np.clip(eye_v - open_v * 0.25, eye_v - open_v * 0.7, eye_v + 0.01)
        if open_v > 0.02:
            draw.ellipse([X(cu - pr), Y(pv) - pr * w, X(cu + pr), Y(pv) + pr * w], fill=_c(dark * 0.4))
        # upper lid line with lashes, lower lid
        draw.line(_pts(np.stack(P(*upper.T), 1)), fill=_c(dark), width=max(1, int(sw * 0.9)), joint="curve")
        draw.line(_pts(np.stack(P(*lower.T), 1)), fill=shade(0.6), width=max(1, int(sw * 0.4)))
        if ex["lid_low"] > 0.2:  # raised cheek under the eye, crow's feet
            bag = _curve(cu, ew * 1.1, eye_v + 0.03, eye_v + 0.055)
            draw.line(_pts(np.stack(P(*bag.T), 1)), fill=shade(0.75), width=max(1, int(sw * 0.5)))
            for d in (-0.02, 0.015):
                draw.line([(X(cu + side * (ew + 0.02)), Y(eye_v + d)), (X(cu + side * (ew + 0.07)), Y(eye_v + 2 * d))],
                          fill=shade(0.75), width=max(1, int(sw * 0.4)))
        # eyebrow: a thick tapered band from the inner to the outer end
        by = brow_v - style.brow_lift
        inner = (0.5 + side * 0.07, by + ex["brow_in"])
        outer = (0.5 + side * 0.33, by + ex["brow_out"])
        mid = (0.5 + side * 0.2, (inner[1] + outer[1]) / 2 - ex["brow_arch"])
        th = 0.045 * style.stroke
        band = [P(inner[0], inner[1] - th / 2), P(mid[0], mid[1] - th / 2), P(outer[0], outer[1] - th / 4),
                P(outer[0], outer[1] + th / 4), P(mid[0], mid[1] + th / 2), P(inner[0], inner[1] + th / 2)]
        draw.polygon([(float(a), float(b)) for a, b in band], fill=_c(dark * 0.8 + hair * 0.2 * k))

    # -- nose --------------------------------------------------------------------------
    nv = mouth_v - 0.16
    side = 1 if light < 0 else -1  # shadow on the side away from the light
    draw.line([(X(0.5 + side * 0.05), Y(eye_v + 0.02)), (X(0.5 + side * 0.07), Y(nv - 0.03))],
              fill=shade(0.82), width=max(1, int(sw * 0.7)))
    draw.ellipse([X(0.42), Y(nv - 0.04), X(0.58), Y(nv + 0.03)], fill=shade(0.85))
    draw.ellipse([X(0.45), Y(nv - 0.05), X(0.55), Y(nv + 0.0)], fill=shade(1.0))
    for s2 in (-1, 1):
        draw.ellipse([X(0.5 + s2 * 0.045 - 0.025), Y(nv - 0.005), X(0.5 + s2 * 0.045 + 0.025), Y(nv + 0.02)],
                     fill=shade(0.45))
    if expression == "disgust":  # wrinkled nose bridge
        for j in range(3):
            v = eye_v + 0.0 + 0.03 * j
            draw.line(_pts(np.stack(P(*_curve(0.5, 0.06, v + 0.01, v).T), 1)), fill=shade(1 - 0.35 * ex["wrinkle"]),
                      width=max(1, int(sw * 0.5)))

    # -- cheeks and mouth ---------------------------------------------------------------
    mw = ex["mouth_w"] * style.mouth_scale
    cy = mouth_v + ex["corner"]
    if ex["cheeks"] > 0.2:  # nasolabial folds from the nose wings to past the mouth corners
        for s2 in (-1, 1):
            fold = [(X(0.5 + s2 * 0.1), Y(nv - 0.01)), (X(0.5 + s2 * (mw + 0.05)), Y(cy - 0.02)),
                    (X(0.5 + s2 * (mw + 0.06)), Y(cy + 0.05))]
            draw.line(fold, fill=shade(1 - 0.3 * ex["cheeks"]), width=max(1, int(sw * 0.6)), joint="curve")
    op = ex["mouth_open"]
    top_mid = mouth_v - op / 2 - ex["lip_raise"]
    bot_mid = mouth_v + op / 2
    lip = _c(_LIP * 0.35 * k + skin * (1 - 0.35 * k) * 0.85)
    upper_out = _curve(0.5, mw, cy, top_mid - 0.035)
    lower_out = _curve(0.5, mw, cy, bot_mid + 0.045)
    draw.polygon(_pts(np.stack(P(*np.concatenate([upper_out, lower_out[::-1]]).T), 1)), fill=lip)
    draw.polygon(_pts(np.stack(P(*_curve(0.5, mw * 0.8, cy + 0.045, bot_mid + 0.08).T), 1)), fill=shade(0.85))
    upper_in = _curve(0.5, mw * 0.92, cy, top_mid)
    lower_in = _curve(0.5, mw * 0.92, cy, bot_mid)
    if op > 0.005:
        draw.polygon(_pts(np.stack(P(*np.concatenate([upper_in, lower_in[::-1]]).T), 1)), fill=_c(dark * 0.5))
        if ex["teeth"] > 0:  # upper teeth: from the upper lip down, never past the lower lip
            depth = (bot_mid - top_mid) * ex["teeth"] + 0.01
            tu = _curve(0.5, mw * 0.85, cy, top_mid + 0.003)
            tl = np.minimum(tu[:, 1] + depth, _curve(0.5, mw * 0.85, cy, bot_mid)[:, 1])
            teeth = np.concatenate([tu, np.stack([tu[:, 0], tl], 1)[::-1]])
            draw.polygon(_pts(np.stack(P(*teeth.T), 1)), fill=_c(np.full(3, 225.0) * k + skin * (1 - k)))
    else:
        draw.line(_pts(np.stack(P(*upper_in.T), 1)), fill=_c(dark * 0.6), width=max(1, int(sw * 0.7)), joint="curve")

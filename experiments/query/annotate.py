"""Annotated pictures of query answers: face boxes, each source's own top
emotion and the final answer drawn on the image (``emologic query --annotate``)."""
from __future__ import annotations

import io
import math
from pathlib import Path

from experiments.query.results import is_uniform
from neural.common import atomic_write_bytes
from pipelines.images import DEFAULT_MAX_PIXELS

#: Annotated pictures are upscaled by an integer factor until their short side reaches this.
ANNOTATE_MIN_SIDE = 384


_SLOT_COLOURS = {"face1": (255, 140, 0), "face2": (0, 200, 255), "face3": (255, 60, 200)}


def annotation_scale(width: int, height: int) -> int:
    """Integer upscaling that makes small images legible once text is drawn on them."""
    return max(1, math.ceil(ANNOTATE_MIN_SIDE / max(1, min(width, height))))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: scalable default font
    except TypeError:
        return ImageFont.load_default()


def _label(draw, xy, text: str, font, fill, anchor_bottom: bool = False) -> None:
    """``text`` on a dark box at ``xy`` (its top-left, or bottom-left with ``anchor_bottom``)."""
    x, y = xy
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (b - t) // 5)
    w, h = r - l + 2 * pad, b - t + 2 * pad
    if anchor_bottom:
        y -= h
    draw.rectangle([x, y, x + w, y + h], fill=(0, 0, 0))
    draw.text((x + pad - l, y + pad - t), text, font=font, fill=fill)


def _said(result, source: str) -> str:
    if source not in result.source_probs:
        return "?"
    flag = "" if result.knows(source) else " (no pretrained knowledge)"
    if is_uniform(result.source_probs[source]):
        return "uniform" + flag
    emotion, p = result.sources[source]
    return f"{emotion} {p:.2f}{flag}"


def annotate_image(result, out_dir: Path, taken: set[str] | None = None,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> Path:
    """Write ``out_dir/<image stem>.png`` for a :class:`~experiments.query.results.QueryResult`:
    the image with its face boxes, each source's own top emotion and the final
    answer drawn on it. Returns the path."""
    from PIL import ImageDraw

    from pipelines.images import load_image

    image = load_image(result.input, max_pixels)  # RGB, EXIF-oriented like the boxes
    scale = annotation_scale(*image.size)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), resample=3)  # bicubic
    draw = ImageDraw.Draw(image)
    font = _font(max(11, min(image.size) // 28))
    line = max(2, min(image.size) // 160)
    for face in result.faces:
        x1, y1, x2, y2 = (v * scale for v in face.box)
        colour = _SLOT_COLOURS.get(face.slot, (255, 255, 0))
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        said = _said(result, face.slot)
        _label(draw, (x1, max(0.0, y1)), f"{face.slot} {said}", font, colour, anchor_bottom=y1 > 20)
    if "scene" in result.sources:
        _label(draw, (0, 0), f"scene {_said(result, 'scene')}", font, (255, 255, 255))
    answer, p = result.top[0]
    trusted = result.trusted
    answer = f"{answer} {p:.2f}" if result.decided else "no emotion preferred"
    _label(draw, (0, image.height), f"{answer} | trusted {trusted} {result.posterior[trusted]:.0%}",
           font, (120, 255, 120), anchor_bottom=True)

    stem = Path(result.input).stem or "image"
    name, n = f"{stem}.png", 2
    taken = taken if taken is not None else set()
    while name in taken:
        name, n = f"{stem}-{n}.png", n + 1
    taken.add(name)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return atomic_write_bytes(out_dir / name, buf.getvalue())

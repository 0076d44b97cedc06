"""Rendering for the synthetic MELD-like clips: face frames, an emotional tone, MP4 muxing.

Everything here is a pure function of its arguments and the
``numpy.random.Generator`` passed in; what a clip shows and sounds like (its
expression, intensity, pitch, level) is decided by the caller
(:mod:`pipelines.datasets.synthetic_clips`) and recorded in its truth file.

* Video: one schematic face (:func:`pipelines.datasets.synthetic_draw.draw_face`,
  unchanged) per clip, drawn twice from the same person stream -- once neutral,
  once with the clip's expression -- and cross-faded from the first to the second
  over the frames (onset and ramp drawn per clip), so the expression *moves* from
  neutral to the emotion. The head drifts by a pixel or two and each frame gets
  pixel noise.
* Audio: a voiced-sounding tone (fundamental plus two harmonics) whose
  fundamental, level, pitch glide and vibrato follow the emotion (:data:`TONES`),
  with an onset delay, an attack/release envelope and white noise.
* Container: MP4 with H.264 (``libx264``) video when PyAV's ffmpeg has that
  encoder, else MPEG-4 part 2, and an AAC audio track -- what MELD's clips hold.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image, ImageDraw

from neural.common import EMOTIONS, UserError
from pipelines.datasets.synthetic_draw import (
    FACE_ASPECT,
    SUPERSAMPLE,
    FaceStyle,
    draw_face,
)

# --------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class ToneSpec:
    """The voice of one emotion: a tone around ``f0_hz`` at peak level ``level``.

    ``glide`` is the ratio of the pitch at the end of the clip to the pitch at
    the start (> 1 rising, < 1 falling); ``vibrato`` is the relative depth of a
    pitch wobble at ``vibrato_hz``.
    """

    f0_hz: float
    level: float  # peak amplitude, full scale 1.0
    glide: float
    vibrato: float
    vibrato_hz: float


#: Pitch and energy per emotion, after the usual prosody findings: anger loud
#: and high, sadness low, quiet and falling, fear high, quiet and trembling,
#: surprise high with a steep rise, joy fairly loud and rising, disgust low-ish
#: and falling, neutral mid, quiet and flat. The clip's own pitch and level are
#: these times log-normal jitter (``SyntheticClipsConfig.pitch_jitter`` /
#: ``energy_jitter``), so neighbouring emotions overlap: informative, not perfect.
TONES: dict[str, ToneSpec] = {
    "angry": ToneSpec(f0_hz=260.0, level=0.70, glide=1.00, vibrato=0.02, vibrato_hz=6.0),
    "disgust": ToneSpec(f0_hz=150.0, level=0.40, glide=0.85, vibrato=0.01, vibrato_hz=4.0),
    "fear": ToneSpec(f0_hz=330.0, level=0.30, glide=1.05, vibrato=0.05, vibrato_hz=9.0),
    "happy": ToneSpec(f0_hz=230.0, level=0.50, glide=1.20, vibrato=0.02, vibrato_hz=5.0),
    "sad": ToneSpec(f0_hz=110.0, level=0.12, glide=0.90, vibrato=0.01, vibrato_hz=3.0),
    "surprise": ToneSpec(f0_hz=300.0, level=0.55, glide=1.50, vibrato=0.01, vibrato_hz=5.0),
    "neutral": ToneSpec(f0_hz=170.0, level=0.25, glide=1.00, vibrato=0.0, vibrato_hz=0.0),
}
assert set(TONES) == set(EMOTIONS)

#: Relative amplitudes of the fundamental and its harmonics.
HARMONICS = (1.0, 0.5, 0.25)
ATTACK_S, RELEASE_S = 0.04, 0.10
MAX_ONSET_S = 0.1


def synth_tone(
    f0_hz: float,
    level: float,
    spec: ToneSpec,
    duration_s: float,
    sample_rate: int,
    noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """[n] float32 mono waveform in [-1, 1], ``n = round(duration_s * sample_rate)``.

    ``f0_hz`` and ``level`` are the clip's (already jittered) starting pitch and
    peak level; glide and vibrato come from ``spec``. The tone starts after a
    random delay of up to 0.1 s; white noise of standard deviation ``noise`` is
    added throughout.
    """
    n = round(duration_s * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    f = f0_hz * spec.glide ** (t / max(duration_s, 1e-9))
    f = f * (1.0 + spec.vibrato * np.sin(2 * np.pi * spec.vibrato_hz * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(f) / sample_rate + rng.uniform(0, 2 * np.pi)
    wave = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(HARMONICS)) / sum(HARMONICS)
    onset = rng.uniform(0.0, min(MAX_ONSET_S, duration_s / 4))
    env = np.clip((t - onset) / ATTACK_S, 0.0, 1.0) * np.clip((duration_s - t) / RELEASE_S, 0.0, 1.0)
    out = level * env * wave + rng.normal(0.0, noise, n)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def tone_features(wave: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """(dominant frequency in Hz, RMS) of a waveform: what a listener would call pitch and energy.

    Used by the tests to check that decoded audio still follows :data:`TONES`.
    """
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    freqs = np.fft.rfftfreq(len(wave), 1.0 / sample_rate)
    spectrum[freqs < 50] = 0.0  # ignore DC and rumble
    return float(freqs[int(np.argmax(spectrum))]), float(np.sqrt(np.mean(wave**2)))


# --------------------------------------------------------------------------- video


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def expression_weights(frames: int, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """[frames] blend weight of the expressive face per frame: 0 (neutral) rising to ``intensity``.

    The change starts in the first quarter of the clip and is complete between
    half and four fifths of the way through it.
    """
    t = np.linspace(0.0, 1.0, frames) if frames > 1 else np.ones(1)
    start, end = rng.uniform(0.0, 0.25), rng.uniform(0.5, 0.8)
    return intensity * _smoothstep((t - start) / (end - start))


def render_face_frames(
    expression: str,
    intensity: float,
    frames: int,
    size: int,
    pixel_noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """[frames, size, size, 3] uint8 RGB: one random person turning from neutral to ``expression``.

    Skin tone, hair, face size and position, background and drift come from ``rng``.
    """
    margin = max(2, size // 16)  # room for the drift
    full = size + 2 * margin
    background = rng.integers(30, 226, 3).astype(np.float32)
    shade = rng.uniform(-25, 25)
    w = rng.uniform(0.5, 0.66) * size
    h = w * FACE_ASPECT
    cx = full / 2 + rng.uniform(-1, 1) * (size - w) / 2 * 0.8
    cy = full / 2 + rng.uniform(-1, 1) * (size - h) / 2 * 0.8
    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    person = [int(v) for v in rng.integers(0, 2**31, 2)]  # same person in both drawings

    def draw(expr: str) -> np.ndarray:
        canvas = Image.new("RGB", (full * SUPERSAMPLE, full * SUPERSAMPLE), tuple(int(v) for v in background))
        draw_face(ImageDraw.Draw(canvas), box, expr, FaceStyle(), np.random.default_rng(person), SUPERSAMPLE)
        return np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32)  # [full, full, 3]

    neutral = draw("neutral")
    shown = neutral if expression == "neutral" else draw(expression)
    gradient = np.linspace(-shade, shade, full, dtype=np.float32)[:, None, None]  # lighting, top to bottom
    neutral, shown = neutral + gradient, shown + gradient

    alpha = expression_weights(frames, intensity, rng)
    drift = np.clip(np.cumsum(rng.integers(-1, 2, (frames, 2)), axis=0), -margin, margin) + margin
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        dy, dx = int(drift[i, 0]), int(drift[i, 1])
        frame = (1 - alpha[i]) * neutral[dy : dy + size, dx : dx + size] + alpha[i] * shown[dy : dy + size, dx : dx + size]
        frame = frame + rng.normal(0.0, pixel_noise, frame.shape)
        out[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- container


def _av():
    """The PyAV module, or a one-line error saying how to get it."""
    try:
        import av
    except ImportError:
        raise UserError("writing synthetic clips needs PyAV: pip install av (its wheels bundle ffmpeg)") from None
    return av


def video_codec() -> str:
    """``"libx264"`` if PyAV's ffmpeg can encode H.264 (MELD's codec), else ``"mpeg4"``."""
    av = _av()
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - PyAV raises its own UnknownCodecError subclasses
        return "mpeg4"


def encode_clip(
    video: np.ndarray,
    audio: np.ndarray,
    fps: float,
    sample_rate: int,
    codec: str,
) -> bytes:
    """MP4 bytes holding ``video`` [T, H, W, 3] uint8 (``codec``, yuv420p) and ``audio`` [n] float32 (AAC, mono).

    One encoder thread and fixed settings, so the bytes are a function of the
    inputs and of the encoder build.
    """
    av = _av()
    buf = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(buf, "w", format="mp4") as container:
        # mbtree off: on these tiny frames x264's macroblock-tree pass (its SIMD code)
        # made the same input encode differently from run to run; without it the
        # output is reproducible (measured: 0 of 288 repeats differ, vs ~1 in 3 with it)
        options = {"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0"} if codec == "libx264" else {}
        vs = container.add_stream(codec, rate=rate, options=options)
        vs.width, vs.height = int(video.shape[2]), int(video.shape[1])
        vs.pix_fmt = "yuv420p"
        vs.codec_context.thread_count = 1
        if codec != "libx264":
            vs.bit_rate = 1_000_000
        # the fast AAC coder: half the time of the default, same pitch and level after decoding
        au = container.add_stream("aac", rate=sample_rate, layout="mono", options={"aac_coder": "fast"})
        au.bit_rate = 48_000
        for i, rgb in enumerate(video):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(vs.encode(frame))
        container.mux(vs.encode())
        chunk = 1024  # AAC frame size
        for start in range(0, len(audio), chunk):
            samples = np.ascontiguousarray(audio[start : start + chunk], dtype=np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            container.mux(au.encode(frame))
        container.mux(au.encode())
    return buf.getvalue()


def decode_clip(data_or_path) -> tuple[np.ndarray, np.ndarray, int]:
    """(video [T, H, W, 3] uint8, audio [n] float32 mono, sample rate) of an MP4 (bytes or path).

    A minimal reader for checks and tests; the data-set reader is ``pipelines.datasets.meld``.
    """
    av = _av()
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, (bytes, bytearray)) else str(data_or_path)
    with av.open(src) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if isinstance(src, io.BytesIO):
        src.seek(0)
    with av.open(src) as container:
        rate = container.streams.audio[0].codec_context.sample_rate
        chunks = [f.to_ndarray().astype(np.float32).mean(axis=0) for f in container.decode(audio=0)]
    video = np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return video, audio, int(rate)


"""Video clip -> tensors: frames, log-mel audio and tokenized text, for a list of samples.

    cfg = ClipPipelineConfig(frames=16, frame_size=112)
    pipe = ClipPipeline(cfg)
    done, skipped = pipe.process(samples)      # list[ProcessedClip], list[Skip]

A clip sample is anything with ``sample_id``, ``path`` (or ``image_path``),
``label`` and ``annotations`` holding the ``"utterance"`` (and optionally a
``"sentiment"`` index into :data:`neural.common.SENTIMENTS`), e.g. the
samples of the ``meld`` data set. It mirrors :class:`pipelines.pipeline.ImagePipeline`:
bad input is never an exception here but a :class:`~pipelines.pipeline.Skip`
with a one-line reason; configuration errors raise
:class:`~neural.common.UserError`.

What one clip becomes (T = ``frames``, S = ``frame_size``, L = :attr:`ClipPipelineConfig.audio_frames`):

* ``video [T, 3, S, S] uint8``: T frames picked uniformly over the (capped)
  clip, each resized whole to S x S (FFmpeg's swscale, area interpolation);
* ``audio [n_mels, L] float32``: the mono ``sample_rate`` waveform (FFmpeg's
  resampler), zero-padded/cropped to ``max_seconds``; power STFT (``torch.stft``,
  Hann window); mel filterbank (``transformers.audio_utils.mel_filter_bank``,
  HTK scale); natural log of max(mel, ``log_floor``);
* ``audio_frames``: the log-mel frames that hold audio (the rest is padding);
* ``input_ids``, ``attention_mask`` ``[max_tokens] int64``: the text model's
  ``AutoTokenizer``, padded/truncated.

Bad input (each a :class:`Skip` with its reason, never a dummy tensor):

* missing / unreadable / corrupt file, no video stream, no decodable frame,
  frames larger than ``max_frame_pixels`` -> skipped;
* empty or whitespace-only utterance -> skipped (``"empty utterance"``): text is
  one of the three inputs, and ``[CLS] [SEP]`` would be a silent stand-in;
* no audio stream (or an audio stream without samples): ``no_audio="keep"``
  (default) keeps the clip with ``audio = None`` and ``audio_present = False``
  -- the cache stores NaN rows and the batch carries the flag, so the absence is
  visible and can never pass as silence; ``no_audio="skip"`` skips it;
* long clips: only the first ``max_seconds`` are decoded (frames and audio).

Decoding (PyAV, frame selection, log-mel) is :mod:`pipelines.clip_decode`; this
module holds the config, the checks on each sample and the batching.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from neural.common import UserError, sha256_file, strict_config
from pipelines.clip_decode import BadClipError, ClipDecoder
from pipelines.pipeline import NON_SEMANTIC_KEYS, Skip, _check_label, process_in_chunks

#: What a clip without an audio stream becomes (see the module docstring).
NO_AUDIO_POLICIES = ("keep", "skip")


class ClipPipelineConfigError(UserError):
    pass


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass(frozen=True)
class ClipPipelineConfig:
    """Everything that determines the cached clip tensors (``batch_size`` only sets speed)."""

    frames: int = field(default=16, metadata=_help("video frames per clip, picked uniformly over the clip"))
    frame_size: int = field(default=112, metadata=_help("side of the square frames in pixels"))
    sample_rate: int = field(default=16000, metadata=_help("audio is resampled to mono at this rate (Hz)"))
    n_mels: int = field(default=64, metadata=_help("mel bands of the log-mel spectrogram"))
    n_fft: int = field(default=1024, metadata=_help("STFT size in samples"))
    win_length: int = field(default=1024, metadata=_help("STFT (Hann) window length in samples, <= n_fft"))
    hop_length: int = field(default=512, metadata=_help("STFT hop in samples"))
    f_min: float = field(default=0.0, metadata=_help("lowest mel filter frequency (Hz)"))
    f_max: float | None = field(default=None, metadata=_help("highest mel filter frequency (Hz); default sample_rate / 2", type=float))
    log_floor: float = field(default=1e-10, metadata=_help("log-mel = log(max(mel power, log_floor))"))
    max_seconds: float = field(default=10.0, metadata=_help("decode at most this many seconds of a clip (audio padded/cropped to it)"))
    max_frame_pixels: int = field(default=7680 * 4320, metadata=_help("refuse clips whose frames have more pixels than this"))
    max_tokens: int = field(default=64, metadata=_help("text tokens per utterance (padded/truncated)"))
    text_model: str | None = field(default=None, metadata=_help(
        "tokenizer: hub name or local directory of the text model; default the packaged MiniLM", type=str))
    no_audio: str = field(default="keep", metadata=_help("clip without audio: keep (audio_present=False, NaN audio) or skip"))
    batch_size: int = field(default=16, metadata=_help("clips per tokenizer batch / work chunk"))

    def __post_init__(self):
        problems = []
        for key in ("frames", "frame_size", "sample_rate", "n_mels", "n_fft", "win_length", "hop_length",
                    "max_frame_pixels", "max_tokens", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{key} must be a positive integer, got {value!r}")
        if not problems:
            if self.win_length > self.n_fft:
                problems.append(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
            nyquist = self.sample_rate / 2
            f_max = nyquist if self.f_max is None else self.f_max
            if not 0 <= self.f_min < f_max <= nyquist:
                problems.append(f"need 0 <= f_min < f_max <= sample_rate / 2 = {nyquist:g}, got f_min={self.f_min}, f_max={f_max}")
            if self.max_tokens < 2:
                problems.append(f"max_tokens must be >= 2 ([CLS] and [SEP]), got {self.max_tokens}")
        if not (isinstance(self.max_seconds, (int, float)) and math.isfinite(self.max_seconds) and self.max_seconds > 0):
            problems.append(f"max_seconds must be a positive number, got {self.max_seconds!r}")
        if not (isinstance(self.log_floor, (int, float)) and self.log_floor > 0):
            problems.append(f"log_floor must be positive, got {self.log_floor!r}")
        if self.no_audio not in NO_AUDIO_POLICIES:
            problems.append(f"no_audio {self.no_audio!r} is not one of {', '.join(NO_AUDIO_POLICIES)}")
        if problems:
            raise ClipPipelineConfigError("invalid clip pipeline config: " + "; ".join(problems))

    @property
    def max_samples(self) -> int:
        """Audio samples kept per clip (``max_seconds * sample_rate``)."""
        return round(self.max_seconds * self.sample_rate)

    @property
    def audio_frames(self) -> int:
        """L, the log-mel frames of every clip (``torch.stft`` with ``center=True``)."""
        return 1 + self.max_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipPipelineConfig":
        return strict_config(cls, d, ClipPipelineConfigError, "clip pipeline config key(s)", "known keys")

    def semantic_dict(self) -> dict[str, Any]:
        """The keys that determine the cached tensors (compared when loading a cache).

        Drops ``batch_size``, and ``text_model``: what the tokens depend on is the
        tokenizer itself, which the cache identity records by content (so a
        bert-base-uncased cache and a MiniLM cache, same vocabulary, are one).
        """
        return {k: v for k, v in self.to_dict().items() if k not in NON_SEMANTIC_KEYS | {"text_model"}}


@dataclass
class ProcessedClip:
    sample_id: str
    sha256: str  # of the clip file
    clip_path: str
    label: int | None
    sentiment: int | None  # index into SENTIMENTS
    annotations: dict
    video: np.ndarray  # [T, 3, S, S] uint8
    audio: np.ndarray | None  # [n_mels, L] float32 log-mel; None: the clip has no audio
    audio_frames: int  # log-mel frames holding audio (0 without audio)
    input_ids: np.ndarray  # [max_tokens] int64
    attention_mask: np.ndarray  # [max_tokens] int64
    #: what decoding found: duration, fps, frames decoded, video size, source audio rate, ...
    info: dict = field(default_factory=dict)

    @property
    def audio_present(self) -> bool:
        return self.audio is not None



def tokenizer_identity(tokenizer) -> str:
    """``"<class>:<sha256 of the vocabulary and casing>"`` -- what the cached tokens depend on."""
    payload = json.dumps(
        [sorted(tokenizer.get_vocab().items()), getattr(tokenizer, "do_lower_case", None)], ensure_ascii=False
    )
    return f"{type(tokenizer).__name__}:{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


class ClipPipeline:
    """Turns clip samples into :class:`ProcessedClip` tensors (see the module docstring)."""

    def __init__(self, cfg: ClipPipelineConfig | None = None, workers: int | None = None):
        self.cfg = cfg or ClipPipelineConfig()
        self.decoder = ClipDecoder(self.cfg)
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.tokenizer = self._load_tokenizer()

    def _load_tokenizer(self):
        from transformers import AutoTokenizer

        name = self.cfg.text_model
        if name is None:
            from neural.multimodal import packaged_minilm_path

            name = str(packaged_minilm_path())
        try:
            return AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"cannot load the tokenizer of text model {name!r} ({str(exc).splitlines()[0]}); offline, "
                "leave text_model unset (the packaged MiniLM) or give a local BERT directory"
            ) from None

    @property
    def identity(self) -> dict[str, str]:
        """What else produced the tensors (recorded in the cache manifest): the tokenizer, by content."""
        return {"tokenizer": tokenizer_identity(self.tokenizer)}

    # ------------------------------------------------------------------ batches
    def _load(self, sample):
        path = getattr(sample, "path", None) or sample.image_path
        try:
            digest = sha256_file(path) if Path(path).is_file() else None
            video, audio, audio_frames, info = self.decoder.decode(path)
            return (video, audio, audio_frames, info, digest), None
        except BadClipError as exc:
            return None, exc.reason

    def process(self, samples: Sequence) -> tuple[list[ProcessedClip], list[Skip]]:
        """Process one batch of clip samples (decoded in threads, tokenized in one call)."""
        samples = list(samples)
        if not samples:
            return [], []
        skipped: list[Skip] = []
        todo = []
        for s in samples:  # cheap checks first: a bad row costs no decoding
            ann = dict(getattr(s, "annotations", None) or {})
            text = ann.get("utterance")
            reason = _check_label(s.label) or _check_sentiment(ann.get("sentiment"))
            if reason is None and (not isinstance(text, str) or not text.strip()):
                reason = "empty utterance: no text to tokenize" + ("" if text is None else f" ({text!r})")
            if reason is None:
                todo.append((s, ann))
            else:
                skipped.append(Skip(str(s.sample_id), reason))
        if not todo:
            return [], skipped
        with ThreadPoolExecutor(self.workers) as pool:  # FFmpeg decodes without the GIL
            loaded = list(pool.map(self._load, [s for s, _ in todo]))

        ready = []
        for (s, ann), (result, reason) in zip(todo, loaded):
            if reason is None and result[1] is None and self.cfg.no_audio == "skip":
                reason = f"no audio: {result[3]['audio']} (no_audio=skip)"
            if reason is not None:
                skipped.append(Skip(str(s.sample_id), reason))
            else:
                ready.append((s, ann, result))
        order = {str(s.sample_id): i for i, s in enumerate(samples)}
        skipped.sort(key=lambda sk: order[sk.sample_id])  # in input order
        if not ready:
            return [], skipped

        tokens = self.tokenizer(
            [ann["utterance"].strip() for _, ann, _ in ready], padding="max_length", truncation=True,
            max_length=self.cfg.max_tokens, return_tensors="np",
        )  # input_ids, attention_mask: [B, max_tokens]
        out = []
        for i, (s, ann, (video, audio, audio_frames, info, digest)) in enumerate(ready):
            sentiment = ann.get("sentiment")
            out.append(ProcessedClip(
                sample_id=str(s.sample_id),
                sha256=digest,
                clip_path=str(getattr(s, "path", None) or s.image_path),
                label=None if s.label is None else int(s.label),
                sentiment=None if sentiment is None else int(sentiment),
                annotations=ann,
                video=video,
                audio=audio,
                audio_frames=audio_frames,
                input_ids=tokens["input_ids"][i].astype(np.int64),
                attention_mask=tokens["attention_mask"][i].astype(np.int64),
                info=info,
            ))
        return out, skipped

    def iter_process(self, samples: Iterable, progress: bool = False, desc: str = "clips") -> Iterator[tuple[list[ProcessedClip], list[Skip]]]:
        """:meth:`process` over ``samples`` in chunks of ``cfg.batch_size``."""
        return process_in_chunks(self.process, samples, self.cfg.batch_size, progress, desc, "clip")



def _check_sentiment(sentiment) -> str | None:
    from neural.common import SENTIMENTS

    if sentiment is None:
        return None
    if isinstance(sentiment, (bool, np.bool_)) or not isinstance(sentiment, (int, np.integer)):
        return f"sentiment {sentiment!r} is not a sentiment index"
    if not 0 <= int(sentiment) < len(SENTIMENTS):
        return f"sentiment {sentiment} outside 0..{len(SENTIMENTS) - 1} ({', '.join(SENTIMENTS)})"
    return None

"""Video clip -> tensors: frames, log-mel audio and tokenized text, for a list of samples.

    cfg = ClipPipelineConfig(frames=16, frame_size=112)
    pipe = ClipPipeline(cfg)
    done, skipped = pipe.process(samples)      # list[ProcessedClip], list[Skip]

A clip sample is anything with ``sample_id``, ``path`` (or ``image_path``),
``label`` and ``annotations`` holding the ``"utterance"`` (and optionally a
``"sentiment"`` index into :data:`neural.vocabulary.SENTIMENTS`), e.g. the
samples of the ``meld`` data set. It mirrors :class:`pipelines.pipeline.ImagePipeline`:
bad input is never an exception here but a :class:`~pipelines.pipeline.Skip`
with a one-line reason; configuration errors raise
:class:`~neural.errors.UserError`.

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
import torch

from neural.configs import strict_config
from neural.errors import UserError
from neural.files import sha256_file
from pipelines.pipeline import NON_SEMANTIC_KEYS, Skip, _check_label, process_in_chunks

#: What a clip without an audio stream becomes (see the module docstring).
NO_AUDIO_POLICIES = ("keep", "skip")
#: A stream's packets this far past ``max_seconds`` end its decoding: interleaving
#: and decoder delay (B-frames, audio priming) are far shorter.
DEMUX_SLACK_SECONDS = 2.0


class ClipPipelineConfigError(UserError):
    pass


class BadClipError(UserError):
    """A clip that cannot be used; ``reason`` is the one-line skip reason."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


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


def _import_av():
    try:
        import av
    except ImportError:
        raise UserError("decoding video clips needs PyAV: pip install av") from None
    return av


def tokenizer_identity(tokenizer) -> str:
    """``"<class>:<sha256 of the vocabulary and casing>"`` -- what the cached tokens depend on."""
    payload = json.dumps(
        [sorted(tokenizer.get_vocab().items()), getattr(tokenizer, "do_lower_case", None)], ensure_ascii=False
    )
    return f"{type(tokenizer).__name__}:{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


class LogMel:
    """Waveform [N] float32 (N = max_samples) -> log-mel [n_mels, L] float32."""

    def __init__(self, cfg: ClipPipelineConfig):
        from transformers.audio_utils import mel_filter_bank

        self.cfg = cfg
        fb = mel_filter_bank(
            num_frequency_bins=cfg.n_fft // 2 + 1,
            num_mel_filters=cfg.n_mels,
            min_frequency=cfg.f_min,
            max_frequency=cfg.sample_rate / 2 if cfg.f_max is None else cfg.f_max,
            sampling_rate=cfg.sample_rate,
            norm=None,
            mel_scale="htk",
        )  # [n_fft // 2 + 1, n_mels]
        self.filters = torch.from_numpy(fb.T.astype(np.float32)).contiguous()  # [n_mels, F]
        self.window = torch.hann_window(cfg.win_length)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        spec = torch.stft(
            torch.from_numpy(wave), cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
            window=self.window, center=True, pad_mode="constant", return_complex=True,
        ).abs().pow(2)  # [F, L] power
        mel = self.filters @ spec  # [n_mels, L]
        return mel.clamp_min(cfg.log_floor).log().numpy()


class ClipPipeline:
    """Turns clip samples into :class:`ProcessedClip` tensors (see the module docstring)."""

    def __init__(self, cfg: ClipPipelineConfig | None = None, workers: int | None = None):
        self.cfg = cfg or ClipPipelineConfig()
        self.av = _import_av()
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.tokenizer = self._load_tokenizer()
        self.log_mel = LogMel(self.cfg)

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

    # ------------------------------------------------------------------ decoding
    def decode(self, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, int, dict]:
        """``(video [T, 3, S, S] uint8, log-mel [n_mels, L] or None, audio frames, info)`` of one clip.

        Frames ``round(linspace(0, n - 1, T))`` of the ``n`` decoded (within
        ``max_seconds``) are kept; only those are converted and resized (half the
        cost of a 720p clip), which needs ``n`` beforehand: the container's frame
        count when the clip is within the cap. When that count is missing or wrong,
        the frames still come out exact -- every frame is converted, or the video
        is decoded a second time. Raises :class:`BadClipError` for a clip that cannot be used.
        """
        cfg = self.cfg
        path = Path(path)
        if not path.is_file():
            raise BadClipError(f"clip missing: {path}" if not path.exists() else f"not a file: {path}")
        if path.stat().st_size == 0:
            raise BadClipError(f"unreadable clip: {path} is empty (0 bytes)")
        frames, n, wave, info = self._open_and_demux(path, wanted=None, audio=True)
        if n == 0:
            raise BadClipError(f"no video frames: no frame of {path} could be decoded")
        index = _uniform_indices(n, cfg.frames)  # [T], repeats when n < T
        if any(i not in frames for i in index):  # the frame count was unknown or wrong: decode again
            frames, n_again, _, _ = self._open_and_demux(path, wanted=set(index.tolist()), audio=False)
            if n_again != n or any(i not in frames for i in index):
                raise BadClipError(f"unreadable clip: {path} (decoding it twice gave {n} and {n_again} frames)")
            info["decoded_twice"] = True
        video = np.stack([frames[i] for i in index]).transpose(0, 3, 1, 2)  # [T, S, S, 3] -> [T, 3, S, S]
        info["n_frames_decoded"] = n

        if wave is None or wave.size == 0:
            info["audio"] = "no audio stream" if wave is None else "audio stream without samples"
            return np.ascontiguousarray(video), None, 0, info
        n_audio = min(wave.size, cfg.max_samples)
        info["audio_seconds"] = round(n_audio / cfg.sample_rate, 4)
        padded = np.zeros(cfg.max_samples, np.float32)
        padded[:n_audio] = wave[:n_audio]
        mel = self.log_mel(padded)  # [max_samples] -> [n_mels, L]
        audio_frames = min(cfg.audio_frames, 1 + n_audio // cfg.hop_length)
        return np.ascontiguousarray(video), mel, audio_frames, info

    def _open_and_demux(self, path: Path, wanted: set[int] | None, audio: bool):
        av = self.av
        try:
            with av.open(str(path)) as container:
                return self._demux(container, path, wanted, audio)
        except BadClipError:
            raise
        except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
            detail = getattr(exc, "strerror", None) or (str(exc).splitlines() or [""])[0]
            raise BadClipError(f"unreadable clip: {path} ({type(exc).__name__}: {detail})") from None

    def _demux(self, container, path: Path, wanted: set[int] | None, audio: bool):
        """Decode the first ``max_seconds`` of video and (if ``audio``) audio in one pass.

        Returns ``(frames {index: [S, S, 3] uint8}, frames decoded, mono waveform or
        None (no audio stream), info)``. ``wanted``: the frame indices to convert;
        None: predict them from the container's frame count (all when unknown).
        """
        av, cfg = self.av, self.cfg
        if not container.streams.video:
            raise BadClipError(f"no video stream: {path} holds no video")
        vstream = container.streams.video[0]
        width, height = vstream.codec_context.width, vstream.codec_context.height
        if width and height and width * height > cfg.max_frame_pixels:
            raise BadClipError(f"frames too large: {width}x{height} pixels in {path} (max_frame_pixels={cfg.max_frame_pixels})")
        astream = container.streams.audio[0] if (audio and container.streams.audio) else None
        rate = float(vstream.average_rate) if vstream.average_rate else None
        duration = (float(vstream.duration * vstream.time_base) if vstream.duration and vstream.time_base
                    else container.duration / av.time_base if container.duration else None)
        info: dict[str, Any] = {
            "video_size": [width, height],
            "fps": round(rate, 4) if rate else None,
            "duration": round(duration, 4) if duration else None,
        }
        if wanted is None and vstream.frames and duration is not None and duration <= cfg.max_seconds:
            wanted = set(_uniform_indices(vstream.frames, cfg.frames).tolist())  # checked by the caller
        frames: dict[int, np.ndarray] = {}
        n = 0
        chunks: list[np.ndarray] = []
        resampler = None
        if astream is not None:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=cfg.sample_rate)
            info["source_sample_rate"] = astream.codec_context.sample_rate
        done = {"video": False, "audio": astream is None}
        streams = [vstream] + ([astream] if astream is not None else [])
        for packet in container.demux(*streams):
            kind = packet.stream.type
            if not done[kind] and packet.pts is not None and packet.time_base is not None:
                # a packet well past the cap: every frame before the cap has been presented
                done[kind] = float(packet.pts * packet.time_base) >= cfg.max_seconds + DEMUX_SLACK_SECONDS
            if all(done.values()):
                break
            if done[kind]:
                continue
            for frame in packet.decode():
                t = frame.time
                if kind == "video":
                    if t is None:  # no timestamp: count frames at the stream's rate
                        t = n / rate if rate else 0.0
                    if t >= cfg.max_seconds:
                        done["video"] = True
                        break
                    if wanted is None or n in wanted:
                        frames[n] = frame.to_ndarray(width=cfg.frame_size, height=cfg.frame_size,
                                                     format="rgb24", interpolation="AREA")  # [S, S, 3]
                    n += 1
                else:
                    if t is not None and t >= cfg.max_seconds:
                        done["audio"] = True
                        break
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))  # packed mono float32
        if resampler is not None:
            for out in resampler.resample(None):  # flush the resampler's buffer
                chunks.append(out.to_ndarray().reshape(-1))
        wave = None if astream is None else (np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32))
        return frames, n, wave, info

    # ------------------------------------------------------------------ batches
    def _load(self, sample):
        path = getattr(sample, "path", None) or sample.image_path
        try:
            digest = sha256_file(path) if Path(path).is_file() else None
            video, audio, audio_frames, info = self.decode(path)
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


def _uniform_indices(n: int, t: int) -> np.ndarray:
    """[t] indices spread uniformly over ``n`` frames, first and last included (repeats when n < t)."""
    return np.linspace(0, n - 1, t).round().astype(np.int64)


def _check_sentiment(sentiment) -> str | None:
    from neural.vocabulary import SENTIMENTS

    if sentiment is None:
        return None
    if isinstance(sentiment, (bool, np.bool_)) or not isinstance(sentiment, (int, np.integer)):
        return f"sentiment {sentiment!r} is not a sentiment index"
    if not 0 <= int(sentiment) < len(SENTIMENTS):
        return f"sentiment {sentiment} outside 0..{len(SENTIMENTS) - 1} ({', '.join(SENTIMENTS)})"
    return None

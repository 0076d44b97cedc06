"""Decoding one video clip (PyAV / FFmpeg): uniformly spaced frames and a log-mel spectrogram.

:class:`ClipDecoder` turns a file into ``(video [T, 3, S, S] uint8, log-mel
[n_mels, L] float32 or None, audio frames, info)`` following a
:class:`~pipelines.clips.ClipPipelineConfig` (see :mod:`pipelines.clips` for what
each tensor is); a clip that cannot be used raises :class:`BadClipError` with the
one-line reason the pipeline records as a skip.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from neural.common import UserError

if TYPE_CHECKING:  # the config module imports this one
    from pipelines.clips import ClipPipelineConfig

#: A stream's packets this far past ``max_seconds`` end its decoding: interleaving
#: and decoder delay (B-frames, audio priming) are far shorter.
DEMUX_SLACK_SECONDS = 2.0


class BadClipError(UserError):
    """A clip that cannot be used; ``reason`` is the one-line skip reason."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def _import_av():
    try:
        import av
    except ImportError:
        raise UserError("decoding video clips needs PyAV: pip install av") from None
    return av


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


class ClipDecoder:
    """Decodes clips as ``cfg`` says (frames, frame size, sample rate, cap in seconds, log-mel)."""

    def __init__(self, cfg: ClipPipelineConfig):
        self.cfg = cfg
        self.av = _import_av()
        self.log_mel = LogMel(cfg)

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



def _uniform_indices(n: int, t: int) -> np.ndarray:
    """[t] indices spread uniformly over ``n`` frames, first and last included (repeats when n < t)."""
    return np.linspace(0, n - 1, t).round().astype(np.int64)

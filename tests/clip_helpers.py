"""Tiny video clips and a tiny MELD directory for the clip tests, written with PyAV.

Frame ``i`` of a clip is flat gray ``level(i)`` (so tests can tell which frames were
picked); the audio is a 440 Hz tone, AAC, mono 16 kHz.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

#: MELD CSV header, as published.
MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
               "Season", "Episode", "StartTime", "EndTime"]


def level(i: int) -> int:
    """Gray level of frame ``i``."""
    return (20 + 30 * i) % 256


def write_clip(path: Path, n_frames: int = 8, fps: int = 8, size: int = 32, audio: bool = True,
               audio_seconds: float | None = None, tone_hz: float = 440.0) -> Path:
    """An mp4 (MPEG-4 part 2 video, AAC audio) of ``n_frames`` flat frames and a tone."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    sr = 16000
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=sr, layout="mono") if audio else None
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), level(i), np.uint8), format="rgb24")
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            seconds = n_frames / fps if audio_seconds is None else audio_seconds
            t = np.arange(int(sr * seconds)) / sr
            wave = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            step = sound.codec_context.frame_size or 1024
            for pts in range(0, len(wave), step):
                chunk = wave[pts : pts + step]
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
                frame.sample_rate, frame.pts = sr, pts
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, MELD_HEADER)
        writer.writeheader()
        for i, row in enumerate(rows, 1):
            writer.writerow({"Sr No.": i, "Speaker": "Chandler", "Season": 1, "Episode": 1,
                             "StartTime": "00:00:01,000", "EndTime": "00:00:02,000", **row})
    return path


def row(dia, utt, emotion="neutral", sentiment="neutral", text=None) -> dict:
    return {"Dialogue_ID": dia, "Utterance_ID": utt, "Emotion": emotion, "Sentiment": sentiment,
            "Utterance": f"Utterance {dia}-{utt}, how you doin'?" if text is None else text}


#: The train rows of :func:`write_meld`: two per emotion, so the train part splits stratified.
TRAIN_EMOTIONS = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]


def write_meld(root: Path, n_frames: int = 8) -> dict[str, str]:
    """A MELD directory with every case the tests need; returns ``{sample id: what it is}``.

    train: 14 good clips (2 per emotion), one row whose clip is missing, one with an
    emotion outside the mapping, one with a bad Dialogue_ID, one with an empty utterance;
    dev: a good clip and a clip without audio; test: a good clip and a corrupt file.
    """
    cases: dict[str, str] = {}
    train = []
    for k, emotion in enumerate(TRAIN_EMOTIONS):
        for utt in range(2):
            sentiment = {"joy": "positive", "neutral": "neutral"}.get(emotion, "negative")
            train.append(row(k, utt, emotion, sentiment))
            write_clip(root / "train_splits" / f"dia{k}_utt{utt}.mp4", n_frames=n_frames)
            cases[f"train/dia{k}_utt{utt}"] = "good"
    train.append(row(20, 0))
    cases["train/dia20_utt0"] = "clip missing"
    train.append(row(21, 0, emotion="excited"))
    write_clip(root / "train_splits" / "dia21_utt0.mp4", n_frames=n_frames)
    cases["train/dia21_utt0"] = "label outside vocabulary"
    train.append(row("x", 0))
    train.append(row(22, 0, text="   "))
    write_clip(root / "train_splits" / "dia22_utt0.mp4", n_frames=n_frames)
    cases["train/dia22_utt0"] = "empty utterance"
    write_csv(root / "train_sent_emo.csv", train)

    write_csv(root / "dev_sent_emo.csv", [row(0, 0, "joy", "positive"), row(0, 1, "anger", "negative")])
    write_clip(root / "dev_splits_complete" / "dia0_utt0.mp4", n_frames=n_frames)
    write_clip(root / "dev_splits_complete" / "dia0_utt1.mp4", n_frames=n_frames, audio=False)
    cases["dev/dia0_utt0"] = "good"
    cases["dev/dia0_utt1"] = "no audio"

    write_csv(root / "test_sent_emo.csv", [row(0, 0, "sadness", "negative"), row(1, 0, "fear", "negative")])
    write_clip(root / "output_repeated_splits_test" / "dia0_utt0.mp4", n_frames=n_frames)
    good = (root / "output_repeated_splits_test" / "dia0_utt0.mp4").read_bytes()
    (root / "output_repeated_splits_test" / "dia1_utt0.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + good[200:400])
    cases["test/dia0_utt0"] = "good"
    cases["test/dia1_utt0"] = "corrupt"
    return cases

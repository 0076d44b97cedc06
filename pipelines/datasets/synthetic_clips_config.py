"""What decides a synthetic clips set: its config, MELD's layout and label strings,
and the generator's known answer (the polarity table) and vocabulary of cues.

See :mod:`pipelines.datasets.synthetic_clips` for how a set is generated.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


from neural.common import EMOTIONS, SENTIMENTS
from pipelines.datasets.base import DatasetError


#: Bumped whenever sampling or drawing changes, so an old set on disk is not reused.
GENERATOR_VERSION = 2

#: MELD's label string of each emologic emotion (MELD says joy/sadness/anger).
MELD_EMOTION_LABELS: dict[str, str] = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "joy",
    "sad": "sadness",
    "surprise": "surprise",
    "neutral": "neutral",
}
assert set(MELD_EMOTION_LABELS) == set(EMOTIONS)

#: MELD's CSV columns, in MELD's order.
MELD_COLUMNS: tuple[str, ...] = (
    "Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment",
    "Dialogue_ID", "Utterance_ID", "Season", "Episode", "StartTime", "EndTime",
)

#: split -> (CSV file, clip directory), as in the MELD.Raw release.
MELD_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "dev": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}

#: P(sentiment | emotion), sentiments in MELD's order (negative, neutral,
#: positive). Happy is mostly positive; angry, disgust, fear and sad mostly
#: negative; neutral mostly neutral; surprise splits between positive and
#: negative (as in MELD, where surprise carries either polarity). No row is
#: one-hot, so every entry is something to estimate.
DEFAULT_POLARITY_TABLE: dict[str, dict[str, float]] = {
    "angry": {"negative": 0.85, "neutral": 0.10, "positive": 0.05},
    "disgust": {"negative": 0.80, "neutral": 0.15, "positive": 0.05},
    "fear": {"negative": 0.75, "neutral": 0.15, "positive": 0.10},
    "happy": {"negative": 0.05, "neutral": 0.15, "positive": 0.80},
    "sad": {"negative": 0.85, "neutral": 0.10, "positive": 0.05},
    "surprise": {"negative": 0.40, "neutral": 0.15, "positive": 0.45},
    "neutral": {"negative": 0.10, "neutral": 0.80, "positive": 0.10},
}

#: Emotion words: each names its emotion and nothing else (never a sentiment phrase).
EMOTION_WORDS: dict[str, tuple[str, ...]] = {
    "angry": ("angry", "furious", "mad", "livid"),
    "disgust": ("disgusted", "revolted", "sickened", "repulsed"),
    "fear": ("scared", "terrified", "afraid", "frightened"),
    "happy": ("happy", "thrilled", "delighted", "overjoyed"),
    "sad": ("sad", "heartbroken", "miserable", "gloomy"),
    "surprise": ("surprised", "stunned", "astonished", "startled"),
    "neutral": ("calm", "composed", "unbothered", "indifferent"),
}
#: Sentence frames for an emotion word ``{w}``.
EMOTION_TEMPLATES: tuple[str, ...] = (
    "I feel {w}.",
    "Honestly, I'm {w}.",
    "I can't believe how {w} I am.",
    "I'm so {w} right now.",
)
#: Sentiment phrases: each states a polarity without naming an emotion.
SENTIMENT_PHRASES: dict[str, tuple[str, ...]] = {
    "negative": ("This is terrible.", "What an awful day.", "That went really badly.", "It's a total disaster."),
    "neutral": ("It is what it is.", "Nothing special, really.", "It's an ordinary day.", "That's about average."),
    "positive": ("This is wonderful.", "What a great day.", "That went really well.", "It's absolutely perfect."),
}
#: Lines without any cue: said when the sentence carries neither word, and sometimes before one.
FILLERS: tuple[str, ...] = (
    "So we're meeting at eight?",
    "Did you move the chair?",
    "I was going to call you about Thursday.",
    "The train leaves at noon.",
    "Can you pass me the menu?",
    "We need more coffee filters.",
    "He said the store closes at nine.",
    "Let me check the schedule.",
)
#: P(a filler line precedes a cue), independent of every label.
FILLER_PREFIX_PROB = 0.25
SPEAKERS: tuple[str, ...] = ("Avery", "Blake", "Casey", "Devon", "Emery", "Harper")
assert set(EMOTION_WORDS) == set(EMOTIONS) and set(SENTIMENT_PHRASES) == set(SENTIMENTS)

AAC_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def _uniform_prior() -> dict[str, float]:
    return {e: 1.0 / len(EMOTIONS) for e in EMOTIONS}


@dataclass
class SyntheticClipsConfig:
    """Everything that decides a generated set; stored in ``truth.json`` and compared on reuse."""

    n_clips: int = 600
    seed: int = 0
    #: share of the clips in each MELD split (MELD itself: about 0.73 / 0.08 / 0.19)
    split_fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "dev": 0.1, "test": 0.2})
    frames: int = 8  # video frames per clip
    frame_size: int = 64  # square, even (yuv420p)
    fps: float = 8.0  # frames / fps is the clip duration, audio included
    sample_rate: int = 16000
    #: P(emotion); uniform by default so every row of the polarity table is well estimated
    emotion_prior: dict[str, float] = field(default_factory=_uniform_prior)
    #: P(sentiment | emotion), see DEFAULT_POLARITY_TABLE
    polarity_table: dict[str, dict[str, float]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_POLARITY_TABLE))
    #: "stratified" (quota per split and emotion) or "iid"
    label_sampling: str = "stratified"
    p_emotion_word: float = 0.5  # P(the sentence names the emotion)
    p_sentiment_word: float = 0.4  # P(the sentence carries a phrase of the sentiment)
    face_confusion: float = 0.15  # P(the face shows another, uniformly drawn, expression)
    #: final strength of the expression (blend weight over the neutral face), drawn uniformly in this range
    expression_intensity: tuple[float, float] = (0.6, 1.0)
    pixel_noise: float = 4.0  # standard deviation per pixel, 0..255 scale
    pitch_jitter: float = 0.1  # standard deviation of log f0 around the emotion's pitch
    energy_jitter: float = 0.25  # standard deviation of log level around the emotion's level
    audio_noise: float = 0.01  # standard deviation of the added white noise, full scale 1
    max_utterances: int = 6  # per dialogue

    def __post_init__(self) -> None:
        self.expression_intensity = tuple(float(v) for v in self.expression_intensity)  # type: ignore[assignment]
        self.validate()

    @property
    def duration_s(self) -> float:
        """Length of every clip (video and audio), ``frames / fps``."""
        return self.frames / self.fps

    def validate(self) -> None:
        """Raise a one-line :class:`DatasetError` naming the first bad option."""

        def bad(msg: str) -> DatasetError:
            return DatasetError(f"synthetic clips config: {msg}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.n_clips) or self.n_clips < 1:
            raise bad(f"n_clips must be a positive integer, got {self.n_clips!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise bad(f"seed must be a non-negative integer, got {self.seed!r}")
        if set(self.split_fractions) != set(MELD_SPLITS) or not _is_distribution(self.split_fractions.values()):
            raise bad(f"split_fractions must give {', '.join(MELD_SPLITS)} fractions summing to 1, got {self.split_fractions}")
        if not is_int(self.frames) or self.frames < 1:
            raise bad(f"frames must be a positive integer, got {self.frames!r}")
        if not is_int(self.frame_size) or self.frame_size < 32 or self.frame_size % 2:
            raise bad(f"frame_size must be an even integer >= 32, got {self.frame_size!r}")
        if not isinstance(self.fps, (int, float)) or not 0 < self.fps <= 120:
            raise bad(f"fps must be in (0, 120], got {self.fps!r}")
        if self.sample_rate not in AAC_SAMPLE_RATES:
            raise bad(f"sample_rate must be one AAC supports ({', '.join(map(str, AAC_SAMPLE_RATES))}), got {self.sample_rate!r}")
        if set(self.emotion_prior) != set(EMOTIONS) or not _is_distribution(self.emotion_prior.values()):
            raise bad(f"emotion_prior must give all of {', '.join(EMOTIONS)} probabilities summing to 1, got {self.emotion_prior}")
        if set(self.polarity_table) != set(EMOTIONS):
            raise bad(f"polarity_table must have one row per emotion ({', '.join(EMOTIONS)}), got {sorted(self.polarity_table)}")
        for emotion, row in self.polarity_table.items():
            if set(row) != set(SENTIMENTS) or not _is_distribution(row.values()):
                raise bad(f"polarity_table[{emotion!r}] must give {', '.join(SENTIMENTS)} probabilities summing to 1, got {row}")
        if self.label_sampling not in ("stratified", "iid"):
            raise bad(f"label_sampling must be 'stratified' or 'iid', got {self.label_sampling!r}")
        for name in ("p_emotion_word", "p_sentiment_word", "face_confusion"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise bad(f"{name} must be in [0, 1], got {value!r}")
        lo_hi = self.expression_intensity
        if len(lo_hi) != 2 or not 0.0 < lo_hi[0] <= lo_hi[1] <= 1.0:
            raise bad(f"expression_intensity must be (low, high) with 0 < low <= high <= 1, got {lo_hi!r}")
        for name in ("pixel_noise", "pitch_jitter", "energy_jitter", "audio_noise"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < math.inf:
                raise bad(f"{name} must be a finite number >= 0, got {value!r}")
        if not is_int(self.max_utterances) or self.max_utterances < 1:
            raise bad(f"max_utterances must be a positive integer, got {self.max_utterances!r}")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON values (what ``truth.json`` stores)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def digest(self) -> str:
        """Short hash of the config and generator version (names default roots)."""
        blob = json.dumps({"version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SyntheticClipsConfig:
        """The config from :meth:`to_dict`'s output; unknown keys are refused, never ignored."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise DatasetError(f"unknown synthetic clips option(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**values)


def _is_distribution(probs: Iterable[Any]) -> bool:
    try:
        p = [float(v) for v in probs]
    except (TypeError, ValueError):
        return False
    return all(v >= 0 and math.isfinite(v) for v in p) and abs(sum(p) - 1.0) <= 1e-6

"""Synthetic multimodal clips in MELD's layout, with a known polarity table.

What it is for: the default run and the tests of the multimodal (video + audio
+ text -> emotion, sentiment) part of emologic, where MELD cannot be shipped.
Its one known answer is the **polarity table** P(sentiment | emotion)
(:data:`DEFAULT_POLARITY_TABLE`): a program that learns such a table can be
checked against it.

How a clip is made (all randomness from ``(seed, split, dialogue, utterance)``
streams, so the labels and texts never depend on rendering):

1. **Labels.** Each split gets its share of the clips; the emotions follow
   ``emotion_prior`` and each clip's sentiment is drawn from the polarity table's
   row of the clip's *true* emotion -- nothing else. With ``label_sampling =
   "stratified"`` (default) the draw is a quota draw: within every (split,
   emotion) the sentiment counts are the table's proportions rounded (largest
   remainder, random tie-break) and the order is shuffled, so the empirical table
   of every split is as close to the true one as its counts allow and a short
   training run can recover it within a small tolerance. ``"iid"`` draws every
   label independently instead.
2. **Emotion evidence** (independent of the sentiment given the emotion): the
   face's expression (the true emotion, or with probability ``face_confusion``
   another one), the tone's pitch and energy (:data:`~pipelines.datasets.
   synthetic_clips_draw.TONES`, jittered), and with probability
   ``p_emotion_word`` an emotion word in the sentence (:data:`EMOTION_WORDS`).
3. **Direct sentiment evidence:** with probability ``p_sentiment_word`` the
   sentence carries a phrase of the clip's sentiment (:data:`SENTIMENT_PHRASES`),
   so a sentiment head reading the clip is informative but imperfect. A sentence
   with neither cue is a neutral filler line; an utterance is never empty.
4. **Dialogues.** Within a split the shuffled clips are cut into dialogues of 1
   to ``max_utterances`` utterances between two speakers, with a season, an
   episode and consecutive start/end times, as in MELD.

On disk, exactly MELD's layout (so the MELD reader needs no special case)::

    root/train_sent_emo.csv  dev_sent_emo.csv  test_sent_emo.csv
    root/train_splits/dia{D}_utt{U}.mp4
    root/dev_splits_complete/dia{D}_utt{U}.mp4
    root/output_repeated_splits_test/dia{D}_utt{U}.mp4
    root/truth.json

The CSVs have MELD's columns and label strings (``joy``, ``sadness``,
``anger``, ...); Dialogue_IDs restart at 0 in every split, Sr No. is 1-based per
file. ``truth.json`` is written first (config, polarity table, every clip's
labels and cues), the clips next, the CSVs last; generation resumes where it
stopped and a complete set is left untouched. Same config -> byte-identical
CSVs and truth; decoded clips are identical for the same encoder build.

As a data set (``get_dataset("synthetic_clips", root=..., n_clips=...)``) the
set is generated when missing and read back with the ``meld`` reader, so it
goes through exactly the code real MELD goes through.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neural.files import atomic_write_bytes
from neural.vocabulary import SENTIMENTS
from neural.vocabulary import EMOTIONS
from pipelines.datasets.base import DatasetError, register_dataset
from pipelines.datasets.synthetic_clips_draw import (
    TONES,
    encode_clip,
    render_face_frames,
    synth_tone,
    video_codec,
)

#: Bumped whenever sampling or drawing changes, so an old set on disk is not reused.
GENERATOR_VERSION = 2

TRUTH_FILE = "truth.json"

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


# --------------------------------------------------------------------------- labels and metadata


@dataclass(frozen=True)
class ClipPlan:
    """Everything about one clip except its pixels and samples (those are drawn by :func:`render_clip`)."""

    split: str
    dialogue_id: int
    utterance_id: int
    speaker: str
    emotion: str  # emologic's name (EMOTIONS)
    sentiment: str  # SENTIMENTS
    utterance: str
    emotion_word: str | None  # the emotion word in the sentence, if any
    sentiment_phrase: str | None  # the sentiment phrase in the sentence, if any
    face_expression: str  # what the face shows (the emotion unless confused)
    intensity: float  # final blend weight of the expression
    f0_hz: float  # starting pitch of the tone
    level: float  # peak level of the tone
    season: int
    episode: int
    start_ms: int
    end_ms: int

    @property
    def file(self) -> str:
        """The clip's path relative to the set's root, as MELD names it."""
        return f"{MELD_SPLITS[self.split][1]}/dia{self.dialogue_id}_utt{self.utterance_id}.mp4"

    @property
    def meld_emotion(self) -> str:
        return MELD_EMOTION_LABELS[self.emotion]

    def truth(self) -> dict[str, Any]:
        """The clip's record in ``truth.json``."""
        return {
            "split": self.split,
            "dialogue_id": self.dialogue_id,
            "utterance_id": self.utterance_id,
            "file": self.file,
            "speaker": self.speaker,
            "emotion": self.emotion,
            "meld_emotion": self.meld_emotion,
            "sentiment": self.sentiment,
            "utterance": self.utterance,
            "cues": {"emotion_word": self.emotion_word, "sentiment_phrase": self.sentiment_phrase},
            "face_expression": self.face_expression,
            "intensity": self.intensity,
            "tone": {"f0_hz": self.f0_hz, "level": self.level},
        }

    def csv_row(self, sr_no: int) -> list[Any]:
        """The clip's row in its split's CSV (``MELD_COLUMNS`` order)."""
        return [
            sr_no, self.utterance, self.speaker, self.meld_emotion, self.sentiment,
            self.dialogue_id, self.utterance_id, self.season, self.episode,
            _timestamp(self.start_ms), _timestamp(self.end_ms),
        ]


def _timestamp(ms: int) -> str:
    """MELD's SRT-style time, ``hh:mm:ss,mmm``."""
    s, ms = divmod(int(ms), 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def _quota(n: int, probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer counts summing to ``n`` closest to ``n * probs`` (largest remainder, random tie-break)."""
    raw = n * np.asarray(probs, dtype=np.float64) / float(np.sum(probs))
    counts = np.floor(raw + 1e-9).astype(int)
    left = n - int(counts.sum())
    if left > 0:
        order = np.lexsort((rng.random(len(raw)), -(raw - counts)))  # largest remainder first
        counts[order[:left]] += 1
    return counts


def _split_sizes(cfg: SyntheticClipsConfig) -> dict[str, int]:
    rng = np.random.default_rng([cfg.seed, 0])
    counts = _quota(cfg.n_clips, np.array([cfg.split_fractions[s] for s in MELD_SPLITS]), rng)
    return dict(zip(MELD_SPLITS, (int(c) for c in counts)))


def _draw_labels(n: int, cfg: SyntheticClipsConfig, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``n`` (emotion, sentiment) pairs in random order: sentiment from the table row of the emotion."""
    prior = np.array([cfg.emotion_prior[e] for e in EMOTIONS])
    rows = {e: np.array([cfg.polarity_table[e][s] for s in SENTIMENTS]) for e in EMOTIONS}
    labels: list[tuple[str, str]] = []
    if cfg.label_sampling == "stratified":
        for e, n_e in zip(EMOTIONS, _quota(n, prior, rng)):
            for s, n_es in zip(SENTIMENTS, _quota(int(n_e), rows[e], rng)):
                labels += [(e, s)] * int(n_es)
        order = rng.permutation(len(labels))
        return [labels[i] for i in order]
    for k in rng.choice(len(EMOTIONS), size=n, p=prior / prior.sum()):
        e = EMOTIONS[int(k)]
        labels.append((e, SENTIMENTS[int(rng.choice(len(SENTIMENTS), p=rows[e] / rows[e].sum()))]))
    return labels


def _sentence(emotion: str, sentiment: str, cfg: SyntheticClipsConfig, rng: np.random.Generator) -> tuple[str, str | None, str | None]:
    """(utterance, emotion word or None, sentiment phrase or None); every choice but the cue's content is label-free."""
    has_word = rng.random() < cfg.p_emotion_word
    has_phrase = rng.random() < cfg.p_sentiment_word
    word = str(rng.choice(EMOTION_WORDS[emotion])) if has_word else None
    phrase = str(rng.choice(SENTIMENT_PHRASES[sentiment])) if has_phrase else None
    template = EMOTION_TEMPLATES[int(rng.integers(len(EMOTION_TEMPLATES)))]
    filler = FILLERS[int(rng.integers(len(FILLERS)))]
    parts = []
    if word is not None:
        parts.append(template.format(w=word))
    if phrase is not None:
        parts.append(phrase)
    if len(parts) == 2 and rng.random() < 0.5:
        parts.reverse()
    if not parts or rng.random() < FILLER_PREFIX_PROB:
        parts.insert(0, filler)
    return " ".join(parts), word, phrase


def _clip_metadata(split: str, dia: int, utt: int, emotion: str, sentiment: str,
                   cfg: SyntheticClipsConfig) -> dict[str, Any]:
    """Sentence, face and tone parameters of one clip, from its own stream."""
    rng = np.random.default_rng([cfg.seed, 2, list(MELD_SPLITS).index(split), dia, utt])
    utterance, word, phrase = _sentence(emotion, sentiment, cfg, rng)
    face = emotion
    if rng.random() < cfg.face_confusion:
        others = [e for e in EMOTIONS if e != emotion]
        face = others[int(rng.integers(len(others)))]
    lo, hi = cfg.expression_intensity
    tone = TONES[emotion]
    return {
        "utterance": utterance,
        "emotion_word": word,
        "sentiment_phrase": phrase,
        "face_expression": face,
        "intensity": round(float(rng.uniform(lo, hi)), 4),
        "f0_hz": round(float(tone.f0_hz * math.exp(rng.normal(0.0, cfg.pitch_jitter))), 3),
        "level": round(float(min(0.95, tone.level * math.exp(rng.normal(0.0, cfg.energy_jitter)))), 4),
    }


def plan_clips(config: SyntheticClipsConfig | None = None) -> list[ClipPlan]:
    """Labels and metadata of every clip, in split order (train, dev, test), then dialogue, utterance.

    Cheap (no rendering): what ``truth.json`` and the CSVs are made from.
    """
    cfg = config or SyntheticClipsConfig()
    duration_ms = round(1000 * cfg.duration_s)
    plans: list[ClipPlan] = []
    for split_index, (split, n) in enumerate(_split_sizes(cfg).items()):
        rng = np.random.default_rng([cfg.seed, 1, split_index])
        labels = _draw_labels(n, cfg, rng)
        pos, dia = 0, 0
        while pos < n:
            length = min(n - pos, int(rng.integers(1, cfg.max_utterances + 1)))
            cast = [SPEAKERS[int(i)] for i in rng.choice(len(SPEAKERS), size=2, replace=False)]
            season, episode = int(rng.integers(1, 11)), int(rng.integers(1, 25))
            clock = int(rng.integers(60_000, 1_300_000))
            for utt in range(length):
                emotion, sentiment = labels[pos]
                meta = _clip_metadata(split, dia, utt, emotion, sentiment, cfg)
                speaker = cast[int(rng.integers(2))]
                plans.append(ClipPlan(split=split, dialogue_id=dia, utterance_id=utt, speaker=speaker,
                                      emotion=emotion, sentiment=sentiment, season=season, episode=episode,
                                      start_ms=clock, end_ms=clock + duration_ms, **meta))
                clock += duration_ms + int(rng.integers(200, 1500))
                pos += 1
            dia += 1
    return plans


def empirical_polarity_table(records: Iterable[Any]) -> dict[str, dict[str, float]]:
    """Observed P(sentiment | emotion) of clips (:class:`ClipPlan`s or truth records).

    An emotion without clips gets no row. This, over the clips a table was
    learned from, is what the learned table converges to; a subset cut out of a
    split after generation (the meld reader halves train into pretrain/train)
    drifts from :data:`DEFAULT_POLARITY_TABLE` by sampling noise (about 0.1 at
    600 clips, 0.05 at 2000), which stratification cannot remove.
    """
    counts: dict[str, Counter] = {}
    for r in records:
        emotion, sentiment = (r["emotion"], r["sentiment"]) if isinstance(r, Mapping) else (r.emotion, r.sentiment)
        counts.setdefault(emotion, Counter())[sentiment] += 1
    return {
        e: {s: round(counts[e][s] / sum(counts[e].values()), 6) for s in SENTIMENTS}
        for e in EMOTIONS
        if e in counts
    }


def polarity_table_error(table: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]]) -> float:
    """Largest absolute difference between two polarity tables over the rows both have."""
    return max(
        (abs(float(table[e][s]) - float(reference[e][s])) for e in reference if e in table for s in SENTIMENTS),
        default=0.0,
    )


# --------------------------------------------------------------------------- rendering


def render_clip(plan: ClipPlan, config: SyntheticClipsConfig, codec: str | None = None) -> bytes:
    """MP4 bytes of one clip: the face turning to ``plan.face_expression`` and the emotion's tone.

    ``codec`` defaults to :func:`~pipelines.datasets.synthetic_clips_draw.video_codec`.
    """
    cfg = config
    rng = np.random.default_rng([cfg.seed, 3, list(MELD_SPLITS).index(plan.split), plan.dialogue_id, plan.utterance_id])
    video = render_face_frames(plan.face_expression, plan.intensity, cfg.frames, cfg.frame_size, cfg.pixel_noise, rng)
    audio = synth_tone(plan.f0_hz, plan.level, TONES[plan.emotion], cfg.duration_s, cfg.sample_rate, cfg.audio_noise, rng)
    return encode_clip(video, audio, cfg.fps, cfg.sample_rate, codec or video_codec())


# --------------------------------------------------------------------------- on disk


def _csv_bytes(plans: list[ClipPlan]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MELD_COLUMNS)
    for sr_no, plan in enumerate(plans, 1):
        writer.writerow(plan.csv_row(sr_no))
    return buf.getvalue().encode("utf-8")


def _truth_doc(cfg: SyntheticClipsConfig, plans: list[ClipPlan], codec: str) -> dict[str, Any]:
    return {
        "generator": "emologic synthetic_clips",
        "generator_version": GENERATOR_VERSION,
        "config": cfg.to_dict(),
        "emotions": list(EMOTIONS),
        "sentiments": list(SENTIMENTS),
        "meld_emotion_labels": dict(MELD_EMOTION_LABELS),
        "polarity_table": copy.deepcopy(cfg.polarity_table),
        "empirical_polarity_table": {
            **{split: empirical_polarity_table(p for p in plans if p.split == split) for split in MELD_SPLITS},
            "all": empirical_polarity_table(plans),
        },
        "encoding": {"container": "mp4", "video_codec": codec, "audio_codec": "aac"},
        "clips": [p.truth() for p in plans],
    }


def _truth_bytes(doc: dict[str, Any]) -> bytes:
    """``doc`` as indented JSON with one line per clip (easy to grep and diff)."""
    head = json.dumps({k: v for k, v in doc.items() if k != "clips"}, indent=1)
    clips = ",\n".join("  " + json.dumps(c) for c in doc["clips"])
    return (head[:-2] + ',\n "clips": [\n' + clips + "\n ]\n}\n").encode("utf-8")


def read_truth(root: str | Path) -> dict[str, Any] | None:
    """The ``truth.json`` of the set at ``root`` (None if there is none); refuses a foreign or old one."""
    path = Path(root) / TRUTH_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        version, _ = doc["generator_version"], doc["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is not a synthetic-clips truth file ({exc}); delete {root} to regenerate") from None
    if version != GENERATOR_VERSION:
        raise DatasetError(
            f"synthetic clips at {root} were made by generator version {version}, this is version "
            f"{GENERATOR_VERSION}; delete the directory (or choose another) to regenerate"
        )
    return doc


def generate_clips(root: str | Path, config: SyntheticClipsConfig | None = None) -> Path:
    """Write the synthetic clips into ``root`` in MELD's layout (plus ``truth.json``); returns ``root``.

    Idempotent and resumable: on a directory this generator filled with the same
    config, only what is missing is written (nothing, if it is complete). A
    directory made with another config, or holding MELD files this generator did
    not write (real MELD, say), is refused with a :class:`DatasetError`.
    """
    cfg = config or SyntheticClipsConfig()
    root = Path(root)
    truth = read_truth(root)
    plans = plan_clips(cfg)
    if truth is None:
        meld_names = [n for split in MELD_SPLITS.values() for n in split if (root / n).exists()]
        if meld_names:
            raise DatasetError(
                f"{root} holds {', '.join(meld_names)} but no {TRUTH_FILE}: it is not a synthetic clips set "
                "(real MELD?); give an empty or new directory"
            )
        codec = video_codec()
        atomic_write_bytes(root / TRUTH_FILE, _truth_bytes(_truth_doc(cfg, plans, codec)))
    else:
        on_disk, wanted = truth["config"], cfg.to_dict()
        diffs = [f"{k}: on disk {on_disk.get(k)!r}, requested {v!r}" for k, v in wanted.items() if on_disk.get(k) != v]
        diffs += [f"{k}: on disk {on_disk[k]!r}, unknown here" for k in on_disk if k not in wanted]
        if diffs:
            raise DatasetError(
                f"synthetic clips at {root} were generated with another config ({'; '.join(diffs)}); "
                "choose another directory or delete it to regenerate"
            )
        codec = truth.get("encoding", {}).get("video_codec") or video_codec()
        if codec not in (video_codec(), "mpeg4"):
            raise DatasetError(
                f"synthetic clips at {root} were encoded with {codec}, which this PyAV cannot encode; "
                "finish the set where it was started, or delete it to regenerate"
            )
    for csv_name, clip_dir in MELD_SPLITS.values():
        (root / clip_dir).mkdir(parents=True, exist_ok=True)
    for plan in plans:
        path = root / plan.file
        if not path.is_file():
            atomic_write_bytes(path, render_clip(plan, cfg, codec))
    for split, (csv_name, _) in MELD_SPLITS.items():
        data = _csv_bytes([p for p in plans if p.split == split])
        path = root / csv_name
        if not path.is_file() or path.read_bytes() != data:
            atomic_write_bytes(path, data)
    return root


# --------------------------------------------------------------------------- as a data set


def default_root(cfg: SyntheticClipsConfig) -> Path:
    """``$EMOLOGIC_DATA/synthetic-clips-<config digest>`` (``EMOLOGIC_DATA`` defaults to ``./data``)."""
    return Path(os.environ.get("EMOLOGIC_DATA", "data")) / f"synthetic-clips-{cfg.digest()}"


@register_dataset("synthetic_clips")
def synthetic_clips_dataset(root: str | Path | None = None, pretrain_fraction: float = 0.5, **options: Any):
    """The synthetic clips as a MELD data set (modality ``clip``), generated first if missing.

    ``options`` are :class:`SyntheticClipsConfig` fields. With a ``root`` that
    already holds a set, options not given are taken from its ``truth.json`` and
    the given ones must match (:func:`generate_clips` refuses otherwise); without
    a ``root`` each config gets its own directory (:func:`default_root`). The
    set is read with the ``meld`` reader: MELD's train part is cut into
    ``pretrain``/``train`` (``pretrain_fraction``, seeded by the config's seed),
    dev is ``val``. The generator's polarity table is in ``truth.json``
    (:func:`read_truth`).
    """
    from pipelines.datasets.meld import MeldDataset, meld_dataset

    existing = read_truth(root) if root is not None else None
    base = existing["config"] if existing is not None else {}
    cfg = SyntheticClipsConfig.from_dict({**base, **options})
    root = Path(root) if root is not None else default_root(cfg)
    generate_clips(root, cfg)
    ds = meld_dataset(root, pretrain_fraction=pretrain_fraction, seed=cfg.seed)
    return MeldDataset("synthetic_clips", ds.samples, ds.skipped, ds.split_names, ds.source, ds.notes)

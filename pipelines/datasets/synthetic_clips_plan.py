"""The labels and metadata of every synthetic clip, drawn before any pixel or sample.

:func:`plan_clips` draws each clip's emotion, sentiment, sentence, speaker and
dialogue position (:class:`ClipPlan`) from ``(seed, split, dialogue, utterance)``
streams, so the labels and texts never depend on rendering; the empirical
polarity table of a set of plans is what a learned table is checked against.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from neural.common import EMOTIONS, SENTIMENTS
from pipelines.datasets.synthetic_clips_draw import TONES

from pipelines.datasets.synthetic_clips_config import (
    EMOTION_TEMPLATES,
    EMOTION_WORDS,
    FILLERS,
    FILLER_PREFIX_PROB,
    MELD_EMOTION_LABELS,
    MELD_SPLITS,
    SENTIMENT_PHRASES,
    SPEAKERS,
    SyntheticClipsConfig,
)


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

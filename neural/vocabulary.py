"""The shared vocabulary: the seven basic emotions in the face recogniser's order.

mini-XCEPTION (FER2013) outputs its classes in exactly this order, so every
distribution in emologic uses it too. Data sets with another label set map to it
through a mapping file (``pipelines/mappings/``), never through code.
"""
from __future__ import annotations

from neural.errors import UserError

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
N_EMOTIONS = len(EMOTIONS)

#: Face slots, largest face first. At most three faces are used per image.
FACE_SLOTS: tuple[str, ...] = ("face1", "face2", "face3")
MAX_FACES = len(FACE_SLOTS)

#: The sources an image's emotion can come from (the seed program's four).
SOURCES: tuple[str, ...] = ("scene",) + FACE_SLOTS

#: Sentiment polarity of a clip (MELD's three classes), the fusion net's order.
SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")

_INDEX = {name: i for i, name in enumerate(EMOTIONS)}


class VocabularyError(UserError, ValueError):
    """A label outside the seven-emotion vocabulary."""


def emotion_index(name: str) -> int:
    """Index of ``name`` in :data:`EMOTIONS`; raises with the vocabulary listed."""
    try:
        return _INDEX[name]
    except (KeyError, TypeError):
        raise VocabularyError(
            f"unknown emotion {name!r}; the vocabulary is: {', '.join(EMOTIONS)}"
        ) from None


def check_emotions(names) -> list[int]:
    """Indices of every name in ``names``; the first unknown one raises."""
    return [emotion_index(n) for n in names]


def sentiment_index(name: str) -> int:
    """Index of ``name`` in :data:`SENTIMENTS`; raises with the sentiments listed."""
    if name not in SENTIMENTS:
        raise VocabularyError(f"unknown sentiment {name!r}; the sentiments are: {', '.join(SENTIMENTS)}")
    return SENTIMENTS.index(name)

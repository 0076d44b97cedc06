"""Neural predicates of emologic: the networks behind the programs' ``nn(...)`` atoms.

Every network is registered by name (``neural.registry``) and carries a ``Config``
dataclass that is saved next to its weights, so a checkpoint rebuilds itself.
This package depends on nothing else in emologic.
"""
from neural.common import EMOTIONS, FACE_SLOTS, SOURCES, VocabularyError, emotion_index

__all__ = ["EMOTIONS", "FACE_SLOTS", "SOURCES", "VocabularyError", "emotion_index"]

"""Project-wide helpers, the bottom of every import: errors, the vocabulary, atomic files, configs.

Every package (neural, pipelines, cache, logic, experiments) may import this module; it imports nothing
from emologic, so imports run one way: common <- neural <- pipelines <- cache <- logic <- experiments.

* ``UserError``: base of every user-facing error. The CLI prints one as one line (exit code 2), never a
  traceback; anything else is a bug and keeps its traceback.
* The vocabulary: the seven basic emotions in the face recogniser's order (mini-XCEPTION's), face slots,
  sentiments. Data sets with another label set map to it through a mapping file, never through code.
* Atomic writes and content hashes shared by every stage; the user cache directory.
* ``strict_config``: config dataclasses from plain dicts (JSON files, checkpoints, CLI).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping


# -- errors: Base class of every user-facing error in emologic.
class UserError(Exception):
    """An error caused by the user's input, data or environment."""


# -- vocabulary: The shared vocabulary: the seven basic emotions in the face recogniser's order.
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


# -- files: File helpers shared by every stage: atomic writes and content hashes.
def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (best effort: not every OS can open directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync,
    rename); creates the parent directory. A reader sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """Content hash of a file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    """The user cache directory: ``$EMOLOGIC_CACHE`` or ``~/.cache/emologic``."""
    env = os.environ.get("EMOLOGIC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emologic"


# -- configs: Building config dataclasses from plain dicts (JSON files, checkpoints, CLI).
def strict_config(cls, values: Mapping[str, Any], error: type[Exception], what: str, known: str = "known keys"):
    """``cls(**values)``; a key that is not a field of ``cls`` raises ``error`` with
    one line naming it and the known ones: ``unknown {what} a, b; {known}: ...``."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise error(f"unknown {what} {', '.join(unknown)}; {known}: {', '.join(sorted(fields))}")
    return cls(**values)

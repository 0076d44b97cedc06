"""Compiled circuits on disk, so that a new process does not compile again.

Grounding and knowledge-compiling a program takes about a second per program
(context_selection: 1.2-2.7 s; va_selection longer), which dominated the first
answer of ``emologic query``. :func:`load_or_build` keeps each compiled
structure (a :class:`~logic.engines.compiled.CompiledFamilies`: KLay's torch module, ProbLog
terms, tensors) as a pickle under ``<cache>/compiled/`` (``$EMOLOGIC_CACHE``,
default ``~/.cache/emologic``), named by a key over

* what is compiled: the program text and the compile options (contexts,
  emotions, network domains, queries), and
* the compiler: the source of the modules that translate, compile and lay out
  the circuit, and the versions of ProbLog, PySDD, KLay, torch and Python,

so a changed program, option or compiler builds a new entry. Writes are atomic
(temp file + rename); an entry that cannot be read back (truncated, corrupt,
from an incompatible library) is ignored, rebuilt and overwritten.

Pickle runs code from the file it loads. The cache directory is the user's own
(like torch's hub cache), written only by this module; do not point
``$EMOLOGIC_CACHE`` at files from elsewhere.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import pickle
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The modules whose code decides what a compiled structure contains.
COMPILER_MODULES = ("logic/program.py", "logic/sources.py", "logic/engines/base.py", "logic/engines/circuit.py",
                    "logic/engines/compiled.py", "logic/engines/cone.py", "logic/engines/compile_cache.py")
COMPILER_LIBRARIES = ("problog", "pysdd", "klaycircuits", "torch")
SUBDIR = "compiled"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


@functools.lru_cache(maxsize=1)
def compiler_fingerprint() -> str:
    """sha256 over the compiler's source files and library versions (see module doc)."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for rel in COMPILER_MODULES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    for dist in COMPILER_LIBRARIES:
        h.update(f"{dist}={_version(dist)}".encode())
    h.update(f"python={sys.version_info[0]}.{sys.version_info[1]}".encode())
    return h.hexdigest()


def cache_key(text: str, options) -> str:
    """The entry key of ``text`` (a program) compiled with ``options`` (anything
    ``repr``-stable: tuples of strings and numbers, ProbLog terms)."""
    payload = json.dumps([compiler_fingerprint(), text, repr(options)])
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_directory() -> Path:
    from neural.common import cache_dir

    return cache_dir() / SUBDIR


def entry_path(name: str, key: str) -> Path:
    return cache_directory() / f"{name}-{key[:24]}.pkl"


def _read(path: Path, key: str, kind: type):
    """The stored object, or None when the entry is absent or unusable (logged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("compiled-program cache %s unreadable (%s); compiling", path, exc)
        return None
    try:
        stored = pickle.loads(data)
        ok = isinstance(stored, dict) and stored.get("key") == key and isinstance(stored.get("compiled"), kind)
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle can raise almost anything
        log.warning("compiled-program cache %s is corrupt (%s: %s); compiling again", path, type(exc).__name__, exc)
        return None
    if not ok:
        log.warning("compiled-program cache %s holds something else; compiling again", path)
        return None
    return stored["compiled"]


class _TermPickler(pickle.Pickler):
    """Pickles ProbLog terms without their cached hash.

    ``problog.logic.Term`` caches its hash, which hashes strings, and Python
    salts string hashes per process: a cached hash pickled in one process is
    wrong in the next, so every dict keyed by terms (the compiled roots) would
    miss on lookup with freshly made terms. Without it, the unpickled term
    hashes itself again in the loading process."""

    def reducer_override(self, obj):
        from problog.logic import Term

        if not isinstance(obj, Term) or getattr(obj, "_Term__hash", None) is None:
            return NotImplemented
        reduced = list(obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL))
        if len(reduced) > 2 and isinstance(reduced[2], dict):
            reduced[2] = {**reduced[2], "_Term__hash": None}
        return tuple(reduced)


def _dumps(obj) -> bytes:
    buf = io.BytesIO()
    _TermPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def load_or_build(name: str, text: str, options, build: Callable[[], T], kind: type) -> T:
    """The compiled structure of ``text`` with ``options``: from the disk cache
    when there is a usable entry, else ``build()`` (then stored).

    ``name`` only makes file names readable (the program's name); ``kind`` is the
    type ``build`` returns, checked on load."""
    key = cache_key(text, options)
    path = entry_path(name, key)
    found = _read(path, key, kind)
    if found is not None:
        return found
    compiled = build()
    from neural.common import atomic_write_bytes

    try:
        data = _dumps({"key": key, "compiled": compiled})
        atomic_write_bytes(path, data)
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be written costs speed, not correctness
        log.warning("could not store the compiled program in %s (%s: %s)", path, type(exc).__name__, exc)
    return compiled

"""Building config dataclasses from plain dicts (JSON files, checkpoints, CLI)."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


def strict_config(cls, values: Mapping[str, Any], error: type[Exception], what: str, known: str = "known keys"):
    """``cls(**values)``; a key that is not a field of ``cls`` raises ``error`` with
    one line naming it and the known ones: ``unknown {what} a, b; {known}: ...``."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise error(f"unknown {what} {', '.join(unknown)}; {known}: {', '.join(sorted(fields))}")
    return cls(**values)

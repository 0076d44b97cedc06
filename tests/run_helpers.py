"""Shared helpers of the harness tests."""
from __future__ import annotations


def numbers(obj):
    """Every number in a JSON-like object (to check results are finite)."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj

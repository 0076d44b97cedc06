"""Deterministic, stratified splits computed from sample ids.

A sample's split depends only on the seed, its ``sample_id`` and the ids and
labels of the other samples -- never on row order. Within each label, samples
are ranked by ``sha256(f"{seed}:{sample_id}")`` and the ranked list is cut into
consecutive runs whose lengths follow the fractions. Each split gets
``floor(f * n)`` or ``floor(f * n) + 1`` samples of every label (so per label it
is within one sample of ``f * n``); the leftover samples of a label go to the
splits that are furthest below their target over all labels seen so far, so the
split totals stay close to their fractions as well.

Adding or removing samples can move other samples across a split boundary
(the cut points move, and the leftovers of later labels may go elsewhere). Data sets whose image files come and go
(FindingEmo downloads) therefore assign splits over all annotated rows, before
dropping the ones whose image is missing.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Mapping, Sequence

from neural.common import UserError

#: The four splits of the training harness: stage-0 pretraining of the networks,
#: training of the logic (and jointly the networks), validation, test.
DEFAULT_SPLIT_FRACTIONS: dict[str, float] = {"pretrain": 0.35, "train": 0.35, "val": 0.1, "test": 0.2}


class SplitError(UserError, ValueError):
    """Bad split fractions or sample ids."""


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """``fractions`` as a plain dict; raises unless they are >= 0 and sum to 1."""
    if not fractions:
        raise SplitError("split fractions are empty; give e.g. " + _fmt(DEFAULT_SPLIT_FRACTIONS))
    out: dict[str, float] = {}
    for name, f in fractions.items():
        if not isinstance(name, str) or not name:
            raise SplitError(f"split names must be non-empty strings, got {name!r}")
        try:
            value = float(f)
        except (TypeError, ValueError):
            raise SplitError(f"split fraction of {name!r} is not a number: {f!r}") from None
        if not math.isfinite(value) or value < 0:
            raise SplitError(f"split fraction of {name!r} must be >= 0, got {f!r}")
        out[name] = value
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise SplitError(f"split fractions must sum to 1, got {total:g} ({_fmt(out)})")
    return out


def _fmt(fractions: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in fractions.items())


def _rank_key(seed: int, sample_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{sample_id}".encode("utf-8")).digest()


def assign_splits(
    sample_ids: Sequence[str],
    labels: Sequence[Hashable | None],
    fractions: Mapping[str, float],
    seed: int = 0,
) -> dict[str, str]:
    """Map every sample id to a split name, stratified by label.

    ``labels[i]`` is the label of ``sample_ids[i]`` (any hashable; ``None`` is a
    group of its own). ``fractions`` maps split names to fractions summing to 1.
    The result is the same for any order of the input rows.
    """
    fractions = check_fractions(fractions)
    if len(sample_ids) != len(labels):
        raise ValueError(f"{len(sample_ids)} sample ids but {len(labels)} labels")
    groups: dict[Hashable | None, list[str]] = {}
    seen: set[str] = set()
    for sid, label in zip(sample_ids, labels):
        if sid in seen:
            raise SplitError(f"duplicate sample id {sid!r}; sample ids must be unique")
        seen.add(sid)
        groups.setdefault(label, []).append(sid)

    names = list(fractions)
    assigned_total = {name: 0 for name in names}
    n_seen = 0
    result: dict[str, str] = {}
    # Labels in a fixed order (independent of row order), unlabelled last.
    for label in sorted(groups, key=lambda lab: (lab is None, type(lab).__name__, str(lab))):
        ids = sorted(groups[label], key=lambda sid: _rank_key(seed, sid))
        n = len(ids)
        n_seen += n
        # round() absorbs float noise such as 0.29 * 100 = 28.999999999999996
        counts = {name: math.floor(round(fractions[name] * n, 9)) for name in names}
        leftover = n - sum(counts.values())
        # Give the leftover samples (one each, at most) to the splits furthest
        # below their overall target; ties go to the split named first.
        deficit = {name: fractions[name] * n_seen - (assigned_total[name] + counts[name]) for name in names}
        candidates = [name for name in names if fractions[name] > 0]
        for name in sorted(candidates, key=lambda nm: (-deficit[nm], names.index(nm)))[:leftover]:
            counts[name] += 1
        start = 0
        for name in names:
            for sid in ids[start : start + counts[name]]:
                result[sid] = name
            start += counts[name]
            assigned_total[name] += counts[name]
    return {sid: result[sid] for sid in sample_ids}

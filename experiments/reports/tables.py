"""Reading a run's ``results`` dict and writing tables: what every report section shares.

The ``results`` dict is what the harness writes to ``results.json``::

    {"dataset", "program", "engine", "seeds": [int],
     "regimes": {regime: {
         "per_seed": {str(seed): {
             "metrics": {accuracy, macro_f1, nll, ece, n},
             "source_probs": {ctx: {src: p}},
             "source_table_mae", "posterior_agreement", "dec_factor_agreement": float | None,
             "drift": {module: {l2, rel_l2, frac_changed, n_params}},
             "wall_time_s": float,
             "history": [{epoch, train_loss, val_accuracy, val_nll, source_probs}]}},
         "summary": {metric: {"mean", "std"}}}},
     "truth_source_table": {ctx: {src: p}} | None,
     "timings": {phase: seconds},
     "stage0": {network: {metric: value}}}

Any key may be absent (a regime without logic has no source probabilities or
logic drift; FindingEmo has no truth table): the helpers return ``None`` and
the sections leave the matching rows out, never filling them with invented
numbers. Means and standard deviations are over seeds; the std (ddof=1) is
shown only when there is more than one seed.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from experiments.metrics import mean_std
from experiments.regimes import regime_names
from neural.common import SOURCES


#: The regimes in the order they are reported; others follow alphabetically.
REGIMES: tuple[str, ...] = regime_names()
#: Main-table metrics: (key in ``metrics``, column title, lower is better).
MAIN_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("accuracy", "accuracy", False),
    ("macro_f1", "macro-F1", False),
    ("nll", "NLL", True),
    ("ece", "ECE", True),
)
DASH = "—"


# --------------------------------------------------------------------------- #
# Reading the results
# --------------------------------------------------------------------------- #
def ordered_regimes(results: Mapping) -> list[str]:
    """Regimes present in ``results``: the known ones in :data:`REGIMES` order, then the rest."""
    present = list((results.get("regimes") or {}).keys())
    return [r for r in REGIMES if r in present] + sorted(r for r in present if r not in REGIMES)


def dig(d: Any, path: Iterable[str]) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def seed_results(regime: Mapping) -> dict[str, Mapping]:
    return dict(regime.get("per_seed") or {})


def _seed_values(regime: Mapping, path: tuple[str, ...]) -> dict[str, float]:
    """``{seed: value}`` for the numeric values at ``path`` in each seed's result."""
    out = {}
    for seed, res in seed_results(regime).items():
        v = dig(res, path)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[seed] = float(v)
    return out


def stat(regime: Mapping, path: tuple[str, ...]) -> tuple[float, float, int] | None:
    """``(mean, std, n_seeds)`` of the value at ``path`` (e.g. ``("metrics", "nll")``).

    Computed from ``per_seed`` when it has values; otherwise taken from the
    regime's ``summary`` (flat ``{metric: {mean, std}}`` or nested like the
    per-seed results). ``None`` when neither has it.
    """
    values = list(_seed_values(regime, path).values())
    if values:
        mean, std = mean_std(values)
        return mean, std, len(values)
    summary = regime.get("summary") or {}
    for candidate in (dig(summary, path), summary.get(path[-1])):
        if isinstance(candidate, Mapping) and candidate.get("mean") is not None:
            n = int(candidate.get("n", len(seed_results(regime)) or 1))
            return float(candidate["mean"]), float(candidate.get("std") or 0.0), n
    return None


def paired_difference(results: Mapping, a: str, b: str, path: tuple[str, ...]) -> tuple[float, float, int] | None:
    """Mean ± std over seeds of ``a - b`` at ``path``, pairing runs with the same seed."""
    regimes = results.get("regimes") or {}
    if a not in regimes or b not in regimes:
        return None
    va, vb = _seed_values(regimes[a], path), _seed_values(regimes[b], path)
    diffs = [va[s] - vb[s] for s in va if s in vb]
    if not diffs:
        return None
    mean, std = mean_std(diffs)
    return mean, std, len(diffs)


def mean_table(regime: Mapping, key: str) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per-seed ``{outer: {inner: number}}`` tables (source probs, drift) -> mean/std per cell."""
    cells: dict[str, dict[str, list[float]]] = {}
    for res in seed_results(regime).values():
        table = res.get(key) or {}
        for outer, row in table.items():
            for inner, v in (row or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    cells.setdefault(str(outer), {}).setdefault(inner, []).append(float(v))
    return {o: {i: (*mean_std(vs), len(vs)) for i, vs in row.items()} for o, row in cells.items()}


def mean_row(regime: Mapping, key: str) -> dict[str, tuple[float, float, int]]:
    """Per-seed ``{name: number}`` rows (e.g. sentiment sources) -> mean/std per entry."""
    cells: dict[str, list[float]] = {}
    for res in seed_results(regime).values():
        for name, v in (res.get(key) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                cells.setdefault(name, []).append(float(v))
    return {name: (*mean_std(vs), len(vs)) for name, vs in cells.items()}


def seed_count(results: Mapping) -> int:
    seeds = results.get("seeds")
    if seeds:
        return len(seeds)
    return max((len(seed_results(r)) for r in (results.get("regimes") or {}).values()), default=0)


def test_count(results: Mapping) -> int | None:
    for name in ordered_regimes(results):
        s = stat(results["regimes"][name], ("metrics", "n"))
        if s is not None:
            return int(round(s[0]))
    return None


def is_clip(results: Mapping) -> bool:
    return results.get("modality") == "clip"


def single(value: Any) -> tuple[float, float, int] | None:
    return (float(value), 0.0, 1) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def stage0_note(results: Mapping) -> str:
    """What the ± covers: stage 0 is retrained per seed, or shared (then its variation is not in the ±)."""
    if seed_count(results) < 2 or "stage0_shared" not in results:
        return ""
    if results["stage0_shared"]:
        return " (stage 0 SHARED by all seeds: ± leaves out its variation; --stage0-per-seed includes it)"
    return " (stage 0 retrained per seed)"


def context_sort_key(ctx: str):
    """Numeric contexts ("0", "1", "2") in numeric order, then named ones alphabetically."""
    try:
        return (0, float(ctx), ctx)
    except ValueError:
        return (1, 0.0, ctx)


def source_sort_key(src: str):
    """Sources in vocabulary order (scene, face1, face2, face3), then any others."""
    return (SOURCES.index(src), src) if src in SOURCES else (len(SOURCES), src)


# --------------------------------------------------------------------------- #
# Formatting
# --------------------------------------------------------------------------- #
def fmt_number(x: float | None, digits: int = 3) -> str:
    """``0.812``; ``nan``/``inf`` spelled out; ``None`` as a dash."""
    if x is None:
        return DASH
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def fmt_stat(s: tuple[float, float, int] | None, digits: int = 3, signed: bool = False) -> str:
    """``mean ± std`` (std only with more than one seed); a dash when missing."""
    if s is None:
        return DASH
    mean, std, n = s
    text = fmt_number(mean, digits)
    if signed and text[0].isdigit():
        text = "+" + text
    return f"{text} ± {fmt_number(std, digits)}" if n > 1 else text


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[Any]], align: list[str] | None = None) -> list[str]:
    """Lines of a GitHub-flavoured Markdown table (``align``: ``"l"``/``"r"`` per column)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a plain-text table with aligned columns (first left, others right)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row):
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))
        ).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]

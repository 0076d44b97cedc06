"""The report's valence/arousal section and console lines (programs with a V/A source).

Reads what :mod:`experiments.harness.va_source` put in ``results.json``: stage-0 V/A
metrics (val, test), each regime's test V/A metrics and circumplex table, its
error against the generator's, and the learned trust in the ``va`` source per
context against the generator's (synthetic).
"""
from __future__ import annotations

from typing import Any, Mapping

from experiments.reports.tables import (DASH, context_sort_key, fmt_number, fmt_stat, markdown_table, ordered_regimes,
                                        stat)

SOURCE = "va"
_METRICS = (("ccc", "CCC"), ("rmse", "RMSE"), ("pearson", "r"))
_DIMS = ("valence", "arousal")


def _has_va(results: Mapping) -> bool:
    return "va_regressor" in (results.get("stage0") or {}) or any(
        stat(results["regimes"][r], ("va", "test", "mean_ccc")) for r in ordered_regimes(results))


def _metric_cells(get) -> list[str]:
    return [get(d, m) for m, _ in _METRICS for d in _DIMS]


def _header(first: str) -> list[str]:
    return [first, *(f"{t} {d[0]}" for _, t in _METRICS for d in _DIMS)]


def _top(dist: Mapping[str, float], k: int = 2) -> str:
    best = sorted(dist.items(), key=lambda kv: -kv[1])[:k]
    return ", ".join(f"{e} {p:.2f}" for e, p in best)


def _first_seed(results: Mapping, regime: str) -> Mapping:
    per_seed = results["regimes"][regime].get("per_seed") or {}
    return next(iter(per_seed.values()), {})


def va_trust_rows(results: Mapping) -> list[list[str]]:
    """Per context: the generator's P(va | context) and each regime's learned one (mean ± std over seeds)."""
    truth = {str(c): row for c, row in (results.get("truth_source_table") or {}).items()}
    regimes = [r for r in ordered_regimes(results) if stat(results["regimes"][r], ("va", "test", "mean_ccc"))]
    contexts = sorted({c for r in regimes for c in (_first_seed(results, r).get("source_probs") or {})},
                      key=context_sort_key)
    rows = []
    for ctx in contexts:
        p = truth.get(ctx, {}).get(SOURCE)
        row = [ctx, fmt_number(float(p)) if p is not None else DASH]
        row += [fmt_stat(stat(results["regimes"][r], ("source_probs", ctx, SOURCE))) for r in regimes]
        rows.append(row)
    return rows


def section_va(results: Mapping) -> list[str]:
    if not _has_va(results):
        return []
    lines = ["## The valence/arousal source", ""]
    s0 = (results.get("stage0") or {}).get("va_regressor") or {}
    if s0:
        rows = [[split, *_metric_cells(lambda d, m, split=split: fmt_number(s0[split][d][m]))]
                for split in ("val", "test") if split in s0]
        lines += ["Stage-0 regressor, scored by its MC-dropout mean (v valence, a arousal):", ""]
        lines += markdown_table(_header("split"), rows) + [""]
    regimes = ordered_regimes(results)
    rows = []
    for r in regimes:
        reg = results["regimes"][r]
        if stat(reg, ("va", "test", "mean_ccc")) is None:
            continue
        cells = _metric_cells(lambda d, m, reg=reg: fmt_stat(stat(reg, ("va", "test", d, m))))
        cells += [fmt_stat(stat(reg, ("va", "circumplex_error", k))) for k in ("mae", "weighted_mae")]
        rows.append([r, *cells])
    if rows:
        lines += ["Per regime, on test (joint trains the V/A heads through the logic; the others keep stage 0's), "
                  "and the learned circumplex table P(emotion | valence bin, arousal bin) against the generator's "
                  "(MAE over all cells; weighted: each row by how often its bins occur):", ""]
        lines += markdown_table(_header("regime") + ["circumplex MAE", "weighted MAE"], rows) + [""]
    truth = results.get("truth_circumplex")
    # late_fusion has no logic, so no V/A results ("va": None)
    tables = {r: (_first_seed(results, r).get("va") or {}).get("circumplex") for r in regimes}
    tables = {r: t for r, t in tables.items() if t}
    if tables:
        rows = []
        for v, row in (truth or next(iter(tables.values()))).items():
            for a in row:
                rows.append([f"{v} / {a}", _top(truth[v][a]) if truth else DASH,
                             *(_top(t[v][a]) for t in tables.values())])
        lines += ["Circumplex table, two most likely emotions per bin pair (first seed):", ""]
        lines += markdown_table(["valence / arousal", "truth", *tables], rows, ["l"] * (2 + len(tables))) + [""]
    trust = va_trust_rows(results)
    if trust:
        names = [r for r in regimes if stat(results["regimes"][r], ("va", "test", "mean_ccc"))]
        lines += ["Trust in the V/A source per context, P(va | context):", ""]
        lines += markdown_table(["context", "truth", *names], trust) + [""]
    return lines


def va_summary_lines(results: Mapping) -> list[str]:
    """Console lines: stage-0 CCC, each regime's circumplex error and V/A trust against the generator's."""
    if not _has_va(results):
        return []
    lines = []
    s0 = ((results.get("stage0") or {}).get("va_regressor") or {}).get("test")
    if s0:
        lines.append(f"stage-0 V/A (test): CCC valence {s0['valence']['ccc']:.3f}, arousal {s0['arousal']['ccc']:.3f}, "
                     f"RMSE {s0['valence']['rmse']:.3f}/{s0['arousal']['rmse']:.3f}")
    for r in ordered_regimes(results):
        reg = results["regimes"][r]
        ccc = stat(reg, ("va", "test", "mean_ccc"))
        err: Any = stat(reg, ("va", "circumplex_error", "weighted_mae"))
        if ccc is not None:
            lines.append(f"{r}: V/A mean CCC {fmt_stat(ccc)}"
                         + (f", circumplex-table weighted MAE vs generator {fmt_stat(err)}" if err else ""))
    rows = va_trust_rows(results)
    if rows:
        lines.append("P(va | context), truth -> " + ", ".join(
            r for r in ordered_regimes(results) if stat(results["regimes"][r], ("va", "test", "mean_ccc"))) + ":")
        lines += ["  " + f"{row[0]:<9} {row[1]:>6}  " + "  ".join(row[2:]) for row in rows]
    return lines

"""Reading learned rule parameters: tables for people, programs for ProbLog."""
from __future__ import annotations

from collections import defaultdict

from logic.program import Program


def tables_by_functor(rule_table: dict[str, dict[str, float]], program: Program) -> dict[str, tuple[list[str], list]]:
    """Group a ``{group key: {option: p}}`` table by the disjunction's functor:
    ``{functor: (columns, [(group key, {option: p}), ...])}``, in program order."""
    out: dict[str, tuple[list[str], list]] = {}
    columns: dict[str, dict[str, None]] = defaultdict(dict)
    rows: dict[str, list] = defaultdict(list)
    for g in program.groups:
        probs = rule_table.get(g.key)
        if probs is None:
            continue
        for o in g.options:
            columns[g.functor][o] = None
        rows[g.functor].append((g.key, probs))
    for functor in rows:
        out[functor] = (list(columns[functor]), rows[functor])
    return out


def render_tables(rule_table: dict[str, dict[str, float]], program: Program, digits: int = 3) -> list[str]:
    lines = []
    for functor, (cols, rows) in tables_by_functor(rule_table, program).items():
        key_width = max(len("rule"), *(len(k) for k, _ in rows))
        widths = [max(len(c), digits + 2) for c in cols]
        lines.append("  ".join(["rule".ljust(key_width)] + [c.rjust(w) for c, w in zip(cols, widths)]))
        for key, probs in rows:
            cells = [(f"{probs[c]:.{digits}f}" if c in probs else "-").rjust(w) for c, w in zip(cols, widths)]
            lines.append("  ".join([key.ljust(key_width)] + cells))
        lines.append("")
    return lines


def render_sources(source_probs: dict[str, dict[str, float]], truth: dict | None = None, digits: int = 3) -> list[str]:
    """P(source | context) per context, with the generator's truth when known."""
    sources = list(dict.fromkeys(s for row in source_probs.values() for s in row))
    header = ["context"] + sources + (["truth"] if truth else [])
    rows = []
    for ctx, row in source_probs.items():
        cells = [ctx] + [f"{row[s]:.{digits}f}" if s in row else "-" for s in sources]
        if truth:
            t = truth.get(ctx, {})
            cells.append(" ".join(f"{s}={t[s]:.2f}" for s in sources if s in t))
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]


def render_polarity(table: dict[str, dict[str, float]], references: dict[str, dict] | None = None,
                    digits: int = 3) -> list[str]:
    """A learned polarity table P(sentiment | emotion) as an emotion x sentiment table;
    each of ``references`` (``{title: table}``, e.g. the generator's) adds one column of
    ``negative / neutral / positive`` for comparison."""
    references = {k: v for k, v in (references or {}).items() if v}
    sentiments = list(dict.fromkeys(s for row in table.values() for s in row))
    header = ["emotion"] + sentiments + list(references)
    rows = []
    for emotion, row in table.items():
        cells = [emotion] + [f"{row[s]:.{digits}f}" if s in row else "-" for s in sentiments]
        for ref in references.values():
            r = ref.get(emotion)
            cells.append(" / ".join(f"{r[s]:.2f}" for s in sentiments if s in r) if r else "-")
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(r):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return [line(r).rstrip() for r in [header] + rows]


def render_row(probs: dict[str, float], digits: int = 3) -> list[str]:
    """One distribution (e.g. the sentiment sources) as a two-line table: names, then probabilities."""
    widths = [max(len(k), digits + 2) for k in probs]
    return ["  ".join(k.rjust(w) for k, w in zip(probs, widths)),
            "  ".join(f"{v:.{digits}f}".rjust(w) for v, w in zip(probs.values(), widths))]

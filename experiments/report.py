"""``report.md`` and the console summary of a joint-vs-frozen run.

Both read the ``results`` dict the harness writes to ``results.json``::

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
logic drift; FindingEmo has no truth table): the matching rows or sections are
left out, never filled with invented numbers. Means and standard deviations are
over seeds; the std (ddof=1) is shown only when there is more than one seed.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from experiments.metrics import mean_std
from neural.vocabulary import EMOTIONS, SENTIMENTS, SOURCES

#: The regimes in the order they are reported; others follow alphabetically.
REGIMES: tuple[str, ...] = ("frozen", "joint", "uniform_rules", "late_fusion")
#: Main-table metrics: (key in ``metrics``, column title, lower is better).
MAIN_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("accuracy", "accuracy", False),
    ("macro_f1", "macro-F1", False),
    ("nll", "NLL", True),
    ("ece", "ECE", True),
)
#: Source-recovery measures: (per-seed key, title).
RECOVERY: tuple[tuple[str, str], ...] = (
    ("source_table_mae", "source-table MAE (lower is better)"),
    ("posterior_agreement", "posterior = true source"),
    ("dec_factor_agreement", "agreement with dec_factors"),
)
DASH = "—"


# --------------------------------------------------------------------------- #
# Reading the results
# --------------------------------------------------------------------------- #
def ordered_regimes(results: Mapping) -> list[str]:
    """Regimes present in ``results``: the known ones in :data:`REGIMES` order, then the rest."""
    present = list((results.get("regimes") or {}).keys())
    return [r for r in REGIMES if r in present] + sorted(r for r in present if r not in REGIMES)


def _dig(d: Any, path: Iterable[str]) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def _per_seed(regime: Mapping) -> dict[str, Mapping]:
    return dict(regime.get("per_seed") or {})


def _seed_values(regime: Mapping, path: tuple[str, ...]) -> dict[str, float]:
    """``{seed: value}`` for the numeric values at ``path`` in each seed's result."""
    out = {}
    for seed, res in _per_seed(regime).items():
        v = _dig(res, path)
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
    for candidate in (_dig(summary, path), summary.get(path[-1])):
        if isinstance(candidate, Mapping) and candidate.get("mean") is not None:
            n = int(candidate.get("n", len(_per_seed(regime)) or 1))
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
    for res in _per_seed(regime).values():
        table = res.get(key) or {}
        for outer, row in table.items():
            for inner, v in (row or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    cells.setdefault(str(outer), {}).setdefault(inner, []).append(float(v))
    return {o: {i: (*mean_std(vs), len(vs)) for i, vs in row.items()} for o, row in cells.items()}


def mean_row(regime: Mapping, key: str) -> dict[str, tuple[float, float, int]]:
    """Per-seed ``{name: number}`` rows (e.g. sentiment sources) -> mean/std per entry."""
    cells: dict[str, list[float]] = {}
    for res in _per_seed(regime).values():
        for name, v in (res.get(key) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                cells.setdefault(name, []).append(float(v))
    return {name: (*mean_std(vs), len(vs)) for name, vs in cells.items()}


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


# --------------------------------------------------------------------------- #
# Sections
# --------------------------------------------------------------------------- #
def _main_rows(results: Mapping) -> tuple[list[str], list[list[str]]]:
    header = ["regime"] + [title for _, title, _ in MAIN_METRICS] + ["wall time (s)"]
    rows = []
    for name in ordered_regimes(results):
        reg = results["regimes"][name]
        row = [name] + [fmt_stat(stat(reg, ("metrics", key))) for key, _, _ in MAIN_METRICS]
        row.append(fmt_stat(stat(reg, ("wall_time_s",)), digits=1))
        rows.append(row)
    return header, rows


def _n_seeds(results: Mapping) -> int:
    seeds = results.get("seeds")
    if seeds:
        return len(seeds)
    return max((len(_per_seed(r)) for r in (results.get("regimes") or {}).values()), default=0)


def _n_test(results: Mapping) -> int | None:
    for name in ordered_regimes(results):
        s = stat(results["regimes"][name], ("metrics", "n"))
        if s is not None:
            return int(round(s[0]))
    return None


def _joint_vs_frozen(results: Mapping) -> list[tuple[str, tuple[float, float, int]]]:
    out = []
    for key, title, lower_better in MAIN_METRICS:
        d = paired_difference(results, "joint", "frozen", ("metrics", key))
        if d is not None:
            out.append((f"{title}{' (lower is better)' if lower_better else ''}", d))
    return out


def _section_main(results: Mapping) -> list[str]:
    n_test = _n_test(results)
    where = f"test split, n = {n_test}" if n_test is not None else "test split"
    n_seeds = _n_seeds(results)
    lines = [f"## Main results ({where}; mean ± std over {n_seeds} seed{'s' if n_seeds != 1 else ''}{_stage0_note(results)})", ""]
    header, rows = _main_rows(results)
    if not rows:
        return lines + ["No regime has results.", ""]
    lines += markdown_table(header, rows) + [""]
    if _is_clip(results):
        lines += [("These are the program's emotion query P(emotion | clip); sentiment and the joint "
                   "(emotion, sentiment) NLL follow below."), ""]
    diffs = _joint_vs_frozen(results)
    if diffs:
        lines += ["Paired difference joint − frozen (same seeds):", ""]
        lines += markdown_table(["metric", "joint − frozen"], [[t, fmt_stat(d, signed=True)] for t, d in diffs])
        lines.append("")
    return lines


def _section_stage0(results: Mapping) -> list[str]:
    stage0 = results.get("stage0") or {}
    if not stage0:
        return []
    preferred = [k for k, _, _ in MAIN_METRICS] + ["n"]
    keys: list[str] = []
    for metrics in stage0.values():
        for k, v in (metrics or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in keys:
                keys.append(k)
    keys = [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]
    rows = []
    for net, metrics in stage0.items():
        metrics = metrics or {}
        row = [net]
        for k in keys:
            v = metrics.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row.append(str(v) if k == "n" and float(v).is_integer() else fmt_number(float(v)))
            else:
                row.append(DASH)
        rows.append(row)
    return ["## Stage-0 networks (validation)", ""] + markdown_table(["network", *keys], rows) + [""]


def _section_face_reading(results: Mapping) -> list[str]:
    """Per-class recall of the face predicate on the labelled faces: FER2013 unchanged, and after stage 0."""
    reading = results.get("face_reading")
    if not reading:
        return []
    emotions = list(next(iter(next(iter(reading.values())).values()))["per_class_recall"])
    rows = []
    for who, per_split in reading.items():
        for split, rep in per_split.items():
            rows.append([f"{who}, {split} ({rep['n_faces']} faces)",
                         *(fmt_number(rep["per_class_recall"][e]) for e in emotions), fmt_number(rep["macro_recall"])])
    return (["## How the face predicate reads the data set's faces (recall per class)", "",
             "FER2013 as published (zero-shot), and the run's stage-0 face net (FER2013 fine-tuned on the "
             "pretrain split's faces, which carry a domain shift).", ""]
            + markdown_table(["face net, split", *emotions, "macro"], rows) + [""])


def _section_provenance(results: Mapping) -> list[str]:
    """Where each source's networks got their knowledge, per regime (first seed)."""
    from neural.provenance import describe_source, grouped_sources

    rows = []
    for regime in ordered_regimes(results):
        per_seed = _per_seed(results["regimes"][regime])
        provenance = next(iter(per_seed.values()), {}).get("provenance") if per_seed else None
        for names, record in grouped_sources(provenance or {}):
            rows.append([regime, ", ".join(names), "yes" if record["pretrained"] else "**no**",
                         describe_source(record)])
    if not rows:
        return []
    return (["## Where each source's knowledge came from", "",
             "Per regime after training. A source with no pretrained knowledge learned only from this run's "
             "data; its answers on other images carry nothing else.", ""]
            + markdown_table(["regime", "source", "pretrained knowledge", "networks"], rows, align=["l"] * 4) + [""])


def _section_sources(results: Mapping) -> list[str]:
    truth = results.get("truth_source_table") or {}
    truth = {str(c): row for c, row in truth.items()}
    tables = {}
    for name in ordered_regimes(results):
        t = mean_table(results["regimes"][name], "source_probs")
        if t:
            tables[name] = t
    if not tables:
        return []
    contexts = set(truth)
    for t in tables.values():
        contexts |= set(t)
    header = ["context", "source"] + (["truth"] if truth else []) + list(tables)
    rows = []
    for ctx in sorted(contexts, key=context_sort_key):
        sources = set(truth.get(ctx, {}))
        for t in tables.values():
            sources |= set(t.get(ctx, {}))
        for src in sorted(sources, key=source_sort_key):
            row = [ctx, src]
            if truth:
                p = truth.get(ctx, {}).get(src)
                row.append(fmt_number(float(p)) if p is not None else DASH)
            row += [fmt_stat(t.get(ctx, {}).get(src)) for t in tables.values()]
            rows.append(row)
    lines = ["## Learned source probabilities per context (test; mean over seeds)", ""]
    if truth:
        lines += ["`truth` is the synthetic generator's table.", ""]
    return lines + markdown_table(header, rows, ["l", "l"] + ["r"] * (len(header) - 2)) + [""]


def _section_recovery(results: Mapping) -> list[str]:
    columns = []
    for key, title in RECOVERY:
        if any(stat(results["regimes"][r], (key,)) is not None for r in ordered_regimes(results)):
            columns.append((key, title))
    if not columns:
        return []
    rows = []
    for name in ordered_regimes(results):
        reg = results["regimes"][name]
        cells = [fmt_stat(stat(reg, (key,))) for key, _ in columns]
        if any(c != DASH for c in cells):
            rows.append([name, *cells])
    lines = ["## Which source does the program trust?", ""]
    return lines + markdown_table(["regime", *(t for _, t in columns)], rows) + [""]


def _section_drift(results: Mapping) -> list[str]:
    rows = []
    for name in ordered_regimes(results):
        table = mean_table(results["regimes"][name], "drift")
        modules = sorted((m for m in table if m != "total"), key=str) + (["total"] if "total" in table else [])
        for module in modules:
            d = table[module]
            n = d.get("n_params")
            rows.append([
                name,
                module,
                fmt_stat(d.get("l2"), digits=4),
                fmt_stat(d.get("rel_l2"), digits=4),
                fmt_stat(d.get("frac_changed")),
                str(int(round(n[0]))) if n else DASH,
            ])
    if not rows:
        return []
    header = ["regime", "module", "L2 from stage 0", "relative L2", "fraction changed", "parameters"]
    lines = [
        "## What training changed in the networks (parameter drift from stage 0)",
        "",
        "L2 = ‖θ_after − θ_stage0‖₂ over the module's parameters; relative L2 divides by ‖θ_stage0‖₂; "
        "fraction changed counts parameters with any change at all (exact comparison).",
        "",
    ]
    return lines + markdown_table(header, rows, ["l", "l", "r", "r", "r", "r"]) + [""]


# --------------------------------------------------------------------------- #
# Clip runs (the fusion net under clip_sentiment.pl)
# --------------------------------------------------------------------------- #
#: Clip-run columns: (path in a seed's result, title).
CLIP_COLUMNS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("metrics", "accuracy"), "emotion acc"),
    (("metrics", "weighted_precision"), "emotion w-precision"),
    (("sentiment_metrics", "accuracy"), "sentiment acc"),
    (("sentiment_metrics", "weighted_precision"), "sentiment w-precision"),
    (("sentiment_metrics", "nll"), "sentiment NLL"),
    (("joint_nll",), "joint NLL"),
)
#: Polarity-table error columns: (reference key, measure, title).
POLARITY_ERRORS: tuple[tuple[str, str, str], ...] = (
    ("generator", "max_abs", "max |Δ| vs generator"),
    ("generator", "mean_abs", "mean |Δ| vs generator"),
    ("empirical_train", "max_abs", "max |Δ| vs train clips"),
    ("empirical_train", "mean_abs", "mean |Δ| vs train clips"),
)


def _is_clip(results: Mapping) -> bool:
    return results.get("modality") == "clip"


def _one(value: Any) -> tuple[float, float, int] | None:
    return (float(value), 0.0, 1) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _section_clip_heads(results: Mapping) -> list[str]:
    if not _is_clip(results):
        return []
    rows = []
    ref = results.get("stage0_test")
    if ref:
        rows.append(["stage-0 net alone (no logic)"] + [fmt_stat(_one(_dig(ref, path))) for path, _ in CLIP_COLUMNS])
    for name in ordered_regimes(results):
        reg = results["regimes"][name]
        rows.append([name] + [fmt_stat(stat(reg, path)) for path, _ in CLIP_COLUMNS])
    lines = [
        "## Emotion and sentiment (test)",
        "",
        ("Joint NLL = mean −log P(emotion = label, sentiment = label | clip), the loss both regimes train; "
         "w-precision is the support-weighted precision. The stage-0 net's two heads are independent: "
         "P(E, S) = P(E) P(S)."),
        "",
    ]
    lines += markdown_table(["", *(t for _, t in CLIP_COLUMNS)], rows) + [""]
    diffs = [(t, paired_difference(results, "joint", "frozen", path)) for path, t in CLIP_COLUMNS[2:]]
    diffs = [(t, d) for t, d in diffs if d is not None]
    if diffs:
        lines += ["Paired difference joint − frozen (same seeds): "
                  + ", ".join(f"{t} {fmt_stat(d, signed=True)}" for t, d in diffs), ""]
    return lines


def _polarity_cell(row: Mapping | None, digits: int = 2) -> str:
    if not row:
        return DASH
    values = []
    for s in SENTIMENTS:
        v = row.get(s)
        if isinstance(v, tuple):  # (mean, std, n) from mean_table
            v = v[0]
        values.append(fmt_number(float(v), digits) if v is not None else DASH)
    return " / ".join(values)


def _section_polarity(results: Mapping) -> list[str]:
    if not _is_clip(results):
        return []
    start = results.get("rule_init") or {}
    columns: list[tuple[str, Mapping]] = []
    if results.get("truth_polarity_table"):
        columns.append(("generator", results["truth_polarity_table"]))
    train_table = (results.get("empirical_polarity_table") or {}).get("train")
    if train_table:
        columns.append(("train clips (observed)", train_table))
    if start.get("polarity_table"):
        columns.append((f"start ({start.get('kind', '?')})", start["polarity_table"]))
    for name in ordered_regimes(results):
        t = mean_table(results["regimes"][name], "polarity_table")
        if t:
            columns.append((name + (" (mean over seeds)" if _n_seeds(results) > 1 else ""), t))
    if not columns:
        return []
    rows = [[e] + [_polarity_cell(table.get(e)) for _, table in columns] for e in EMOTIONS]
    lines = [
        "## Learned polarity table P(sentiment | emotion)",
        "",
        (f"Each cell is {' / '.join(SENTIMENTS)}. `train clips` is the table observed in the clips the "
         "rules were trained on: with the sentiment source fixed to the emotion, it is the maximum-likelihood "
         "table; a learned P(head source) > 0 lets the sentiment head explain some clips and moves the table "
         "away from it (usually sharper: the head takes the rarer sentiments)."),
        "",
    ]
    lines += markdown_table(["emotion", *(c for c, _ in columns)], rows, ["l"] + ["r"] * len(columns)) + [""]

    err_cols = [(ref, m, t) for ref, m, t in POLARITY_ERRORS
                if _dig(start, ("polarity_error", ref, m)) is not None
                or any(stat(results["regimes"][r], ("polarity_error", ref, m)) for r in ordered_regimes(results))]
    if err_cols:
        rows = [[f"start ({start.get('kind', '?')})"] + [fmt_stat(_one(_dig(start, ("polarity_error", ref, m))))
                                                         for ref, m, _ in err_cols]] if start else []
        for name in ordered_regimes(results):
            reg = results["regimes"][name]
            rows.append([name] + [fmt_stat(stat(reg, ("polarity_error", ref, m))) for ref, m, _ in err_cols])
        lines += ["Polarity-table error (over every cell):", ""]
        lines += markdown_table(["", *(t for *_, t in err_cols)], rows) + [""]

    rows = []
    if start.get("sentiment_sources"):
        rows.append([f"start ({start.get('kind', '?')})"]
                    + [fmt_number(float(start["sentiment_sources"].get(k, float("nan")))) for k in ("head", "emotion")])
    for name in ordered_regimes(results):
        t = mean_row(results["regimes"][name], "sentiment_sources")
        if t:
            rows.append([name] + [fmt_stat(t.get(k)) for k in ("head", "emotion")])
    if rows:
        lines += [("Sentiment sources: P(the sentiment head gives the sentiment), P(the emotion, through the "
                   "polarity table, gives it):"), ""]
        lines += markdown_table(["", "head", "emotion"], rows) + [""]
    return lines


def _section_skipped(results: Mapping) -> list[str]:
    """What the data set and the cache left out, counted by reason and listed (the
    first ten; results.json lists all): ``skipped.images`` or ``skipped.clips``."""
    skipped = results.get("skipped") or {}
    if not skipped.get("n"):
        return []
    unit = "image" if "images" in skipped else "clip"
    items = skipped.get(f"{unit}s") or []
    rows = [[reason, str(n)] for reason, n in (skipped.get("by_reason") or {}).items()]
    lines = [f"## Left out ({skipped['n']} {unit}{'s' if skipped['n'] != 1 else ''})", ""]
    lines += markdown_table(["reason", f"{unit}s"], rows) + [""]
    shown = items[:10]
    lines += [f"- `{sid}`: {reason}" for sid, reason in shown]
    if len(items) > len(shown):
        lines.append(f"- ... and {len(items) - len(shown)} more (results.json lists all)")
    return lines + [""]


def _section_timings(results: Mapping) -> list[str]:
    timings = {k: float(v) for k, v in (results.get("timings") or {}).items() if v is not None}
    if not timings:
        return []
    total = sum(timings.values())
    rows = [[phase, f"{s:.1f}", f"{100 * s / total:.0f}%" if total > 0 else DASH] for phase, s in timings.items()]
    rows.append(["**total**", f"**{total:.1f}**", ""])
    return ["## Time per phase", ""] + markdown_table(["phase", "seconds", "share"], rows) + [""]


def _section_plots(plots: Mapping[str, str] | None) -> list[str]:
    if not plots:
        return []
    lines = ["## Plots", ""]
    for title, path in plots.items():
        lines += [f"![{title}]({path})", ""]
    return lines


def render_report(
    results: Mapping, command: str, config: Mapping | Any, plots: Mapping[str, str] | None = None
) -> str:
    """The Markdown of ``report.md``.

    Sections: main table (accuracy, macro-F1, NLL, ECE, wall time per regime;
    mean ± std over seeds) with the paired joint − frozen difference; stage-0
    networks; learned source probabilities per context (with the generator's
    truth); source recovery (table MAE, posterior and dec_factors agreement);
    parameter drift per module; time per phase; optional ``plots``
    (``{title: path relative to report.md}``); and last the exact command and
    the resolved config. Sections without data are left out.
    """
    n_seeds = _n_seeds(results)
    seeds = results.get("seeds")
    lines = [
        "# emologic: joint vs frozen",
        "",
        f"- dataset: `{results.get('dataset', DASH)}`",
        f"- program: `{results.get('program', DASH)}`",
        f"- engine: `{results.get('engine', DASH)}`",
        f"- seeds: {', '.join(map(str, seeds)) if seeds else DASH} ({n_seeds})",
        "",
    ]
    for section in (
        _section_main,
        _section_clip_heads,
        _section_stage0,
        _section_face_reading,
        _section_provenance,
        _section_sources,
        _section_polarity,
        _section_recovery,
        _section_drift,
        _section_skipped,
        _section_timings,
    ):
        lines += section(results)
    lines += _section_plots(plots)
    config_text = json.dumps(config, indent=2, sort_keys=True, default=str)
    lines += [
        "## Reproduce",
        "",
        "```bash",
        command,
        "```",
        "",
        "Resolved config:",
        "",
        "```json",
        config_text,
        "```",
        "",
    ]
    return "\n".join(lines)


def _stage0_note(results: Mapping) -> str:
    """What the ± covers: stage 0 is retrained per seed, or shared (then its variation is not in the ±)."""
    if _n_seeds(results) < 2 or "stage0_shared" not in results:
        return ""
    if results["stage0_shared"]:
        return " (stage 0 SHARED by all seeds: ± leaves out its variation; --stage0-per-seed includes it)"
    return " (stage 0 retrained per seed)"


def summary_lines(results: Mapping) -> list[str]:
    """The console summary printed at the end of a run: the main table in plain text.

    Followed by the paired joint − frozen differences and, when present, the
    frozen and joint regimes' source-table error.
    """
    n_seeds = _n_seeds(results)
    n_test = _n_test(results)
    title = (
        f"{results.get('dataset', '?')} / {results.get('engine', '?')}: "
        f"test{f' n={n_test}' if n_test is not None else ''}, "
        f"mean ± std over {n_seeds} seed{'s' if n_seeds != 1 else ''}{_stage0_note(results)}"
    )
    header, rows = _main_rows(results)
    if not rows:
        return [title, "no regime has results"]
    lines = [title, *text_table(header, rows)]
    diffs = _joint_vs_frozen(results)
    if diffs:
        lines.append(
            "joint − frozen: " + ", ".join(f"{t.split(' (')[0]} {fmt_stat(d, signed=True)}" for t, d in diffs)
        )
    for name in ("frozen", "joint"):
        reg = (results.get("regimes") or {}).get(name)
        s = stat(reg, ("source_table_mae",)) if reg else None
        if s is not None:
            lines.append(f"{name}: source-table MAE vs generator {fmt_stat(s)}")
    reading = results.get("face_reading")
    if reading:
        lines.append("face predicate on the test faces, macro recall: " + ", ".join(
            f"{who} {fmt_number(per_split['test']['macro_recall'])}" for who, per_split in reading.items()))
    if _is_clip(results):
        lines += _clip_summary_lines(results)
    return lines


def _clip_summary_lines(results: Mapping) -> list[str]:
    lines = []
    ref = results.get("stage0_test")
    header = ["", *(t for _, t in CLIP_COLUMNS[2:])]
    rows = []
    if ref:
        rows.append(["stage-0 net"] + [fmt_stat(_one(_dig(ref, p))) for p, _ in CLIP_COLUMNS[2:]])
    for name in ordered_regimes(results):
        rows.append([name] + [fmt_stat(stat(results["regimes"][name], p)) for p, _ in CLIP_COLUMNS[2:]])
    lines += text_table(header, rows)
    start = results.get("rule_init") or {}
    for name in [f"start ({start.get('kind', '?')})"] + ordered_regimes(results):
        parts = []
        for ref_key, title in (("generator", "generator"), ("empirical_train", "train clips")):
            if name.startswith("start"):
                mx = _one(_dig(start, ("polarity_error", ref_key, "max_abs")))
                mn = _one(_dig(start, ("polarity_error", ref_key, "mean_abs")))
            else:
                reg = results["regimes"][name]
                mx = stat(reg, ("polarity_error", ref_key, "max_abs"))
                mn = stat(reg, ("polarity_error", ref_key, "mean_abs"))
            if mx is not None:
                parts.append(f"vs {title} max {fmt_stat(mx)} mean {fmt_stat(mn)}")
        if parts:
            lines.append(f"{name}: polarity-table |Δ| " + "; ".join(parts))
    return lines

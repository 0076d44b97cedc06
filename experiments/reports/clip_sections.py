"""The report sections of clip runs (the fusion net under clip_sentiment.pl):
emotion and sentiment heads against the stage-0 net, the learned polarity table
P(sentiment | emotion) with its error, and the console lines that summarise them."""
from __future__ import annotations

from collections.abc import Mapping

from experiments.reports.tables import (DASH, dig, fmt_number, fmt_stat, is_clip, markdown_table, mean_row,
                                        mean_table, ordered_regimes, paired_difference, seed_count, single, stat,
                                        text_table)
from neural.common import EMOTIONS, SENTIMENTS


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


def section_clip_heads(results: Mapping) -> list[str]:
    if not is_clip(results):
        return []
    rows = []
    ref = results.get("stage0_test")
    if ref:
        rows.append(["stage-0 net alone (no logic)"] + [fmt_stat(single(dig(ref, path))) for path, _ in CLIP_COLUMNS])
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


def section_polarity(results: Mapping) -> list[str]:
    if not is_clip(results):
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
            columns.append((name + (" (mean over seeds)" if seed_count(results) > 1 else ""), t))
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
                if dig(start, ("polarity_error", ref, m)) is not None
                or any(stat(results["regimes"][r], ("polarity_error", ref, m)) for r in ordered_regimes(results))]
    if err_cols:
        rows = [[f"start ({start.get('kind', '?')})"] + [fmt_stat(single(dig(start, ("polarity_error", ref, m))))
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


def clip_summary_lines(results: Mapping) -> list[str]:
    lines = []
    ref = results.get("stage0_test")
    header = ["", *(t for _, t in CLIP_COLUMNS[2:])]
    rows = []
    if ref:
        rows.append(["stage-0 net"] + [fmt_stat(single(dig(ref, p))) for p, _ in CLIP_COLUMNS[2:]])
    for name in ordered_regimes(results):
        rows.append([name] + [fmt_stat(stat(results["regimes"][name], p)) for p, _ in CLIP_COLUMNS[2:]])
    lines += text_table(header, rows)
    start = results.get("rule_init") or {}
    for name in [f"start ({start.get('kind', '?')})"] + ordered_regimes(results):
        parts = []
        for ref_key, title in (("generator", "generator"), ("empirical_train", "train clips")):
            if name.startswith("start"):
                mx = single(dig(start, ("polarity_error", ref_key, "max_abs")))
                mn = single(dig(start, ("polarity_error", ref_key, "mean_abs")))
            else:
                reg = results["regimes"][name]
                mx = stat(reg, ("polarity_error", ref_key, "max_abs"))
                mn = stat(reg, ("polarity_error", ref_key, "mean_abs"))
            if mx is not None:
                parts.append(f"vs {title} max {fmt_stat(mx)} mean {fmt_stat(mn)}")
        if parts:
            lines.append(f"{name}: polarity-table |Δ| " + "; ".join(parts))
    return lines

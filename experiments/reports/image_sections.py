"""The report sections of programs that choose among sources per context (the
image programs): how the face predicate reads the data set's faces, the learned
source probabilities per context against the generator's truth, and which
source the program trusts (source recovery)."""
from __future__ import annotations

from collections.abc import Mapping

from experiments.reports.tables import (DASH, context_sort_key, fmt_number, fmt_stat, markdown_table, mean_table,
                                        ordered_regimes, source_sort_key, stat)


#: Source-recovery measures: (per-seed key, title).
RECOVERY: tuple[tuple[str, str], ...] = (
    ("source_table_mae", "source-table MAE (lower is better)"),
    ("posterior_agreement", "posterior = true source"),
    ("dec_factor_agreement", "agreement with dec_factors"),
)


def section_face_reading(results: Mapping) -> list[str]:
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


def section_sources(results: Mapping) -> list[str]:
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


def section_recovery(results: Mapping) -> list[str]:
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

"""``report.md`` and the console summary of a joint-vs-frozen run.

Both read the ``results`` dict the harness writes to ``results.json`` (its
layout: :mod:`experiments.reports.tables`). The sections live by what they
describe: :mod:`~experiments.reports.sections` (every run),
:mod:`~experiments.reports.image_sections` (sources per context),
:mod:`~experiments.reports.clip_sections` (sentiment and polarity) and
:mod:`~experiments.reports.va_sections` (the valence/arousal source). Sections
without data are left out, never filled with invented numbers.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from experiments.reports.clip_sections import clip_summary_lines, section_clip_heads, section_polarity
from experiments.reports.image_sections import section_face_reading, section_recovery, section_sources
from experiments.reports.sections import (joint_vs_frozen, main_rows, section_drift, section_main, section_plots,
                                          section_provenance, section_skipped, section_stage0, section_timings)
from experiments.reports.tables import (DASH, fmt_number, fmt_stat, is_clip, seed_count, stage0_note, stat,
                                        test_count, text_table)
from experiments.reports.va_sections import section_va, va_summary_lines


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
    n_seeds = seed_count(results)
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
        section_main,
        section_clip_heads,
        section_stage0,
        section_face_reading,
        section_provenance,
        section_sources,
        section_polarity,
        section_recovery,
        section_va,
        section_drift,
        section_skipped,
        section_timings,
    ):
        lines += section(results)
    lines += section_plots(plots)
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


def summary_lines(results: Mapping) -> list[str]:
    """The console summary printed at the end of a run: the main table in plain text.

    Followed by the paired joint − frozen differences and, when present, the
    frozen and joint regimes' source-table error.
    """
    n_seeds = seed_count(results)
    n_test = test_count(results)
    title = (
        f"{results.get('dataset', '?')} / {results.get('engine', '?')}: "
        f"test{f' n={n_test}' if n_test is not None else ''}, "
        f"mean ± std over {n_seeds} seed{'s' if n_seeds != 1 else ''}{stage0_note(results)}"
    )
    header, rows = main_rows(results)
    if not rows:
        return [title, "no regime has results"]
    lines = [title, *text_table(header, rows)]
    diffs = joint_vs_frozen(results)
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
    if is_clip(results):
        lines += clip_summary_lines(results)
    return lines + va_summary_lines(results)

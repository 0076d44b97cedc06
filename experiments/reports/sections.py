"""The report sections every run has, image or clip: the main table (with the
paired joint − frozen difference), stage-0 networks, where each source's
knowledge came from, parameter drift, what was left out, time per phase, plots.

Each section is a function of the ``results`` dict (:mod:`experiments.reports.tables`)
returning Markdown lines, empty when the run has no data for it.
"""
from __future__ import annotations

from collections.abc import Mapping

from experiments.reports.tables import (DASH, MAIN_METRICS, fmt_number, fmt_stat, is_clip, markdown_table, mean_table,
                                        ordered_regimes, paired_difference, seed_count, seed_results, stage0_note,
                                        stat, test_count)


def main_rows(results: Mapping) -> tuple[list[str], list[list[str]]]:
    header = ["regime"] + [title for _, title, _ in MAIN_METRICS] + ["wall time (s)"]
    rows = []
    for name in ordered_regimes(results):
        reg = results["regimes"][name]
        row = [name] + [fmt_stat(stat(reg, ("metrics", key))) for key, _, _ in MAIN_METRICS]
        row.append(fmt_stat(stat(reg, ("wall_time_s",)), digits=1))
        rows.append(row)
    return header, rows


def joint_vs_frozen(results: Mapping) -> list[tuple[str, tuple[float, float, int]]]:
    out = []
    for key, title, lower_better in MAIN_METRICS:
        d = paired_difference(results, "joint", "frozen", ("metrics", key))
        if d is not None:
            out.append((f"{title}{' (lower is better)' if lower_better else ''}", d))
    return out


def section_main(results: Mapping) -> list[str]:
    n_test = test_count(results)
    where = f"test split, n = {n_test}" if n_test is not None else "test split"
    n_seeds = seed_count(results)
    lines = [f"## Main results ({where}; mean ± std over {n_seeds} seed{'s' if n_seeds != 1 else ''}{stage0_note(results)})", ""]
    header, rows = main_rows(results)
    if not rows:
        return lines + ["No regime has results.", ""]
    lines += markdown_table(header, rows) + [""]
    if is_clip(results):
        lines += [("These are the program's emotion query P(emotion | clip); sentiment and the joint "
                   "(emotion, sentiment) NLL follow below."), ""]
    diffs = joint_vs_frozen(results)
    if diffs:
        lines += ["Paired difference joint − frozen (same seeds):", ""]
        lines += markdown_table(["metric", "joint − frozen"], [[t, fmt_stat(d, signed=True)] for t, d in diffs])
        lines.append("")
    return lines


def section_stage0(results: Mapping) -> list[str]:
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


def section_provenance(results: Mapping) -> list[str]:
    """Where each source's networks got their knowledge, per regime (first seed)."""
    from neural.provenance import describe_source, grouped_sources

    rows = []
    for regime in ordered_regimes(results):
        per_seed = seed_results(results["regimes"][regime])
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


def section_drift(results: Mapping) -> list[str]:
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


def section_skipped(results: Mapping) -> list[str]:
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


def section_timings(results: Mapping) -> list[str]:
    timings = {k: float(v) for k, v in (results.get("timings") or {}).items() if v is not None}
    if not timings:
        return []
    total = sum(timings.values())
    rows = [[phase, f"{s:.1f}", f"{100 * s / total:.0f}%" if total > 0 else DASH] for phase, s in timings.items()]
    rows.append(["**total**", f"**{total:.1f}**", ""])
    return ["## Time per phase", ""] + markdown_table(["phase", "seconds", "share"], rows) + [""]


def section_plots(plots: Mapping[str, str] | None) -> list[str]:
    if not plots:
        return []
    lines = ["## Plots", ""]
    for title, path in plots.items():
        lines += [f"![{title}]({path})", ""]
    return lines

"""PNG plots of a joint-vs-frozen run (matplotlib, Agg backend: no display needed).

Each function draws one figure from the ``results`` dict (schema in
:mod:`experiments.reports.tables`), writes it to ``path`` and returns the path. Missing
data gives a figure that says so instead of an exception, so a partial run
still produces its plots.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless, deterministic
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.reports.tables import context_sort_key, mean_table, ordered_regimes, source_sort_key  # noqa: E402

DPI = 110


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)  # atomic: a crash never leaves half a PNG
    return path


def _empty(path: str | os.PathLike, title: str, message: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _save(fig, path)


def _regime_colors(names: Sequence[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _mean_history(regime: Mapping, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(epochs, mean, std)`` of ``history[*][key]`` across seeds, aligned by epoch."""
    by_epoch: dict[int, list[float]] = {}
    for res in (regime.get("per_seed") or {}).values():
        for row in res.get("history") or []:
            v = row.get(key)
            if isinstance(v, (int, float)) and "epoch" in row:
                by_epoch.setdefault(int(row["epoch"]), []).append(float(v))
    epochs = sorted(by_epoch)
    mean = np.array([np.mean(by_epoch[e]) for e in epochs])
    std = np.array([np.std(by_epoch[e]) for e in epochs])
    return np.array(epochs), mean, std


def plot_training_curves(results: Mapping, path: str | os.PathLike) -> Path:
    """Train loss and validation accuracy per epoch, one line per regime (mean over seeds, ±1 std band)."""
    regimes = ordered_regimes(results)
    panels = [("train_loss", "train loss"), ("val_accuracy", "validation accuracy")]
    curves = {
        name: {key: _mean_history(results["regimes"][name], key) for key, _ in panels} for name in regimes
    }
    if not any(len(c[key][0]) for c in curves.values() for key, _ in panels):
        return _empty(path, "Training curves", "no training history")
    colors = _regime_colors(regimes)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels):
        for name in regimes:
            epochs, mean, std = curves[name][key]
            if len(epochs):
                ax.plot(epochs, mean, marker="o", ms=3, color=colors[name], label=name)
                ax.fill_between(epochs, mean - std, mean + std, color=colors[name], alpha=0.15)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small")
    fig.suptitle("Training curves (mean over seeds)")
    return _save(fig, path)


def plot_source_trajectories(
    results: Mapping, path: str | os.PathLike, regimes: Sequence[str] = ("frozen", "joint")
) -> Path:
    """Learned source probability per context over epochs (mean over seeds).

    One panel per context, one colour per source; ``regimes`` are told apart by
    line style (frozen solid, joint dotted...), the generator's truth is dashed.
    """
    truth = {str(c): row for c, row in (results.get("truth_source_table") or {}).items()}
    present = [r for r in regimes if r in (results.get("regimes") or {})]
    # series[(regime, ctx, src)] = {epoch: [p over seeds]}
    series: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    for name in present:
        for res in (results["regimes"][name].get("per_seed") or {}).values():
            for row in res.get("history") or []:
                for ctx, probs in (row.get("source_probs") or {}).items():
                    for src, p in (probs or {}).items():
                        series.setdefault((name, str(ctx), src), {}).setdefault(int(row["epoch"]), []).append(float(p))
    if not series:
        return _empty(path, "Source probabilities", "no source-probability history")
    contexts = sorted({c for _, c, _ in series} | set(truth), key=context_sort_key)
    sources = sorted({s for _, _, s in series} | {s for row in truth.values() for s in row}, key=source_sort_key)
    src_colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(sources)}
    styles = ["-", ":", "-.", (0, (1, 3))]
    ncols = min(len(contexts), 3)
    nrows = -(-len(contexts) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False, sharey=True)
    for ax, ctx in zip(axes.flat, contexts):
        for i, name in enumerate(present):
            for src in sources:
                points = series.get((name, ctx, src))
                if points:
                    epochs = sorted(points)
                    ax.plot(epochs, [np.mean(points[e]) for e in epochs], linestyle=styles[i % len(styles)],
                            color=src_colors[src], label=f"{src} ({name})")
        for src, p in truth.get(ctx, {}).items():
            ax.axhline(float(p), linestyle="--", color=src_colors[src], alpha=0.7, label=f"{src} (truth)")
        ax.set_title(f"context {ctx}")
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(contexts):]:
        ax.set_axis_off()
    axes[0, 0].set_ylabel("P(source)")
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize="small")
    styles_note = ", ".join(f"{name} {'solid' if i == 0 else 'dotted' if i == 1 else 'dash-dot'}"
                            for i, name in enumerate(present[:3]))
    fig.suptitle(f"Source probabilities per context ({styles_note}; truth dashed)")
    fig.tight_layout()
    return _save(fig, path)


def plot_confusions(confusions: Mapping[str, Any], labels: Sequence[str], path: str | os.PathLike) -> Path:
    """Row-normalised confusion matrices (true class in rows), one panel per regime, counts annotated."""
    if not confusions:
        return _empty(path, "Confusion matrices", "no confusion matrices")
    names = list(confusions)
    k = len(labels)
    fig, axes = plt.subplots(1, len(names), figsize=(0.55 * k * len(names) + 1.5, 0.55 * k + 1.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        cm = np.asarray(confusions[name], dtype=float)
        if cm.shape != (k, k):
            raise ValueError(f"confusion of {name!r} has shape {cm.shape}, expected ({k}, {k})")
        rows = cm.sum(axis=1, keepdims=True)
        norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
        ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_title(name)
    axes[0, 0].set_ylabel("true")
    fig.suptitle("Confusion matrices (colour: row-normalised; numbers: counts)")
    fig.tight_layout()
    return _save(fig, path)


def plot_drift(results: Mapping, path: str | os.PathLike) -> Path:
    """Grouped bars per module: fraction of parameters changed and relative L2, per regime (mean over seeds)."""
    tables = {}
    for name in ordered_regimes(results):
        t = mean_table(results["regimes"][name], "drift")
        if t:
            tables[name] = t
    if not tables:
        return _empty(path, "Parameter drift", "no drift recorded")
    modules = sorted({m for t in tables.values() for m in t if m != "total"})
    if any("total" in t for t in tables.values()):
        modules.append("total")
    colors = _regime_colors(list(tables))
    width = 0.8 / len(tables)
    x = np.arange(len(modules))
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.9 * len(modules) + 2), 6.4), sharex=True)
    for ax, (key, title) in zip(axes, [("frac_changed", "fraction of parameters changed"),
                                       ("rel_l2", "relative L2 from stage 0")]):
        for i, (name, t) in enumerate(tables.items()):
            heights = [t.get(m, {}).get(key, (0.0, 0.0, 0))[0] for m in modules]
            heights = [h if np.isfinite(h) else 0.0 for h in heights]
            xs = x + (i - (len(tables) - 1) / 2) * width
            ax.bar(xs, heights, width, color=colors[name], label=name)
            for xi, h in zip(xs, heights):
                if h == 0.0:  # an invisible bar: say "exactly zero" (the frozen regime)
                    ax.text(xi, 0, "0", ha="center", va="bottom", fontsize=8, color=colors[name])
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(fontsize="small")
    axes[1].set_xticks(x, modules, rotation=30, ha="right")
    fig.suptitle("What training changed per module")
    fig.tight_layout()
    return _save(fig, path)

"""The three training plots of the recipe: loss, accuracy/macro-F1, learning rates (PNG)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402

DPI = 110


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _shade_frozen(ax, history: dict) -> None:
    frozen = [e for e, phase in zip(history["epoch"], history["phase"]) if phase == "frozen"]
    if frozen:
        ax.axvspan(min(frozen) - 0.5, max(frozen) + 0.5, color="0.9", label="frozen backbone")


def plot_history(history: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``loss.png``, ``metrics.png`` and ``lr.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    epochs = history["epoch"]
    paths = []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    _shade_frozen(ax, history)
    ax.plot(epochs, history["train_loss"], "o-", label="train (smoothed, weighted, mixed)")
    ax.plot(epochs, history["val_loss"], "o-", label="validation (plain cross-entropy)")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "loss.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    _shade_frozen(ax, history)
    ax.plot(epochs, history["train_acc"], "o-", label="train accuracy")
    ax.plot(epochs, history["val_acc"], "o-", label="validation accuracy")
    ax.plot(epochs, history["val_macro_f1"], "o-", label="validation macro-F1")
    ax.set(xlabel="epoch", ylabel="score", title="Accuracy and macro-F1", ylim=(0, 1))
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "metrics.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = range(1, len(history["step_lr_head"]) + 1)
    ax.plot(steps, history["step_lr_head"], label="head")
    ax.plot(steps, history["step_lr_backbone"], label="backbone (0 while frozen)")
    ax.set(xlabel="optimizer step", ylabel="learning rate", title="Learning-rate schedule")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "lr.png"))
    return paths

"""report.md, the console summary and the plots, from a small fake results dict."""
import copy
import math

import numpy as np
import pytest
from PIL import Image

from experiments.reports.plots import plot_confusions, plot_drift, plot_source_trajectories, plot_training_curves
from experiments.reports.render import render_report, summary_lines
from experiments.reports.tables import fmt_stat, paired_difference, stat
from neural.common import EMOTIONS

TRUTH = {"1": {"scene": 0.3, "face1": 0.7}, "2": {"scene": 0.2, "face1": 0.5, "face2": 0.3}}


def _seed(acc, nll, probs, drift=None, mae=None, post=None, wall=10.0):
    history = [
        {"epoch": e, "train_loss": 2.0 - 0.5 * e, "val_accuracy": acc - 0.1 + 0.05 * e, "val_nll": nll + 0.1,
         "source_probs": {c: {s: (1 - e / 2) / len(row) + e / 2 * p for s, p in row.items()}
                          for c, row in probs.items()}}
        for e in range(3)
    ]
    out = {
        "metrics": {"accuracy": acc, "macro_f1": acc - 0.1, "nll": nll, "ece": 0.05, "n": 200},
        "source_probs": probs,
        "source_table_mae": mae,
        "posterior_agreement": post,
        "dec_factor_agreement": None,
        "wall_time_s": wall,
        "history": history,
    }
    if drift is not None:
        out["drift"] = drift
    return out


ZERO = {"l2": 0.0, "rel_l2": 0.0, "frac_changed": 0.0, "n_params": 100}


def fake_results():
    learned = {"1": {"scene": 0.35, "face1": 0.65}, "2": {"scene": 0.25, "face1": 0.45, "face2": 0.30}}
    moved = {"face.block1": {"l2": 0.5, "rel_l2": 0.01, "frac_changed": 0.9, "n_params": 100},
             "total": {"l2": 0.5, "rel_l2": 0.01, "frac_changed": 0.45, "n_params": 200}}
    frozen_drift = {"face.block1": ZERO, "total": {**ZERO, "n_params": 200}}
    return {
        "dataset": "synthetic",
        "program": "source_selection.pl",
        "engine": "compiled",
        "seeds": [0, 1],
        "regimes": {
            # late_fusion listed first: the report must still order frozen, joint, ...
            "late_fusion": {"per_seed": {"0": _seed(0.55, 1.2, {}), "1": _seed(0.65, 1.0, {})}},
            "frozen": {"per_seed": {"0": _seed(0.5, 1.0, learned, frozen_drift, 0.04, 0.8),
                                    "1": _seed(0.7, 0.8, learned, frozen_drift, 0.06, 0.9)}},
            "joint": {"per_seed": {"0": _seed(0.6, 0.9, learned, moved, 0.1, 0.7, wall=20.0),
                                   "1": _seed(0.9, 0.6, learned, moved, 0.2, 0.8, wall=30.0)}},
        },
        "truth_source_table": TRUTH,
        "timings": {"data": 30.0, "cache": 60.0, "train": 90.0},
        "stage0": {"face": {"accuracy": 0.8, "nll": 0.7, "n": 150}, "scene": {"accuracy": 0.4}},
    }


def test_stat_and_paired_difference():
    r = fake_results()
    mean, std, n = stat(r["regimes"]["frozen"], ("metrics", "accuracy"))
    assert (mean, n) == (pytest.approx(0.6), 2) and std == pytest.approx(math.sqrt(0.02))
    mean, std, n = paired_difference(r, "joint", "frozen", ("metrics", "accuracy"))  # 0.1 and 0.2
    assert mean == pytest.approx(0.15) and std == pytest.approx(math.sqrt(0.005)) and n == 2
    assert stat(r["regimes"]["late_fusion"], ("source_table_mae",)) is None
    # a summary-only regime (no per_seed) is read from its summary
    assert stat({"summary": {"accuracy": {"mean": 0.4, "std": 0.1}}}, ("metrics", "accuracy"))[:2] == (0.4, 0.1)


def test_fmt_stat():
    assert fmt_stat((0.6, 0.14142, 2)) == "0.600 ± 0.141"
    assert fmt_stat((0.6, 0.0, 1)) == "0.600"
    assert fmt_stat((0.15, 0.07, 2), signed=True) == "+0.150 ± 0.070"
    assert fmt_stat((-0.15, 0.07, 2), signed=True) == "-0.150 ± 0.070"
    assert fmt_stat((float("nan"), 0.0, 1)) == "nan"
    assert fmt_stat(None) == "—"


def test_render_report_tables():
    md = render_report(fake_results(), "python experiments/joint_vs_frozen.py --seeds 0 1", {"epochs": 3})
    lines = md.splitlines()
    rows = [ln for ln in lines if ln.startswith("| frozen |") or ln.startswith("| joint |")
            or ln.startswith("| late_fusion |")]
    # main table first: frozen, joint, late_fusion in that order, mean ± std over 2 seeds
    assert rows[0] == "| frozen | 0.600 ± 0.141 | 0.500 ± 0.141 | 0.900 ± 0.141 | 0.050 ± 0.000 | 10.0 ± 0.0 |"
    assert rows[1].startswith("| joint | 0.750 ± 0.212 |") and rows[1].endswith("| 25.0 ± 7.1 |")
    assert rows[2].startswith("| late_fusion | 0.600 ± 0.071 |")
    assert "| accuracy | +0.150 ± 0.071 |" in md  # paired joint − frozen
    assert "test split, n = 200" in md
    # source table: truth column and per-regime means; late_fusion has no column
    assert "| context | source | truth | frozen | joint |" in md
    assert "| 2 | face2 | 0.300 | 0.300 ± 0.000 | 0.300 ± 0.000 |" in md
    # recovery: MAE and posterior agreement columns, no dec_factors column (all None)
    assert "| frozen | 0.050 ± 0.014 | 0.850 ± 0.071 |" in md
    assert "dec_factors" not in md
    # drift: the frozen regime's exact zeros
    assert "| frozen | face.block1 | 0.0000 ± 0.0000 | 0.0000 ± 0.0000 | 0.000 ± 0.000 | 100 |" in md
    assert "| joint | total | 0.5000 ± 0.0000 | 0.0100 ± 0.0000 | 0.450 ± 0.000 | 200 |" in md
    # timings, stage 0, and last the command and config
    assert "| cache | 60.0 | 33% |" in md
    assert "| network | accuracy | nll | n |" in md  # only the metrics some network has
    assert "| face | 0.800 | 0.700 | 150 |" in md and "| scene | 0.400 | — | — |" in md
    assert md.index("## Reproduce") > md.index("## Time per phase")
    assert "```bash\npython experiments/joint_vs_frozen.py --seeds 0 1\n```" in md
    assert md.rstrip().endswith('"epochs": 3\n}\n```')


def test_render_report_sparse_results():
    r = {"dataset": "findingemo", "seeds": [0],
         "regimes": {"late_fusion": {"per_seed": {"0": {"metrics": {"accuracy": 0.3, "nll": 2.0}}}}}}
    md = render_report(r, "cmd", {}, plots={"curves": "curves.png"})
    assert "| late_fusion | 0.300 | — | 2.000 | — | — |" in md
    for absent in ("source probabilities", "drift", "Time per phase", "Stage-0", "trust"):
        assert absent not in md
    assert "![curves](curves.png)" in md
    assert "no regime has results" in summary_lines({"regimes": {}})[-1]


def test_summary_lines():
    lines = summary_lines(fake_results())
    assert lines[0] == "synthetic / compiled: test n=200, mean ± std over 2 seeds"
    assert lines[1].split() == ["regime", "accuracy", "macro-F1", "NLL", "ECE", "wall", "time", "(s)"]
    assert lines[3].split()[:4] == ["frozen", "0.600", "±", "0.141"]
    assert lines[4].startswith("joint")
    widths = {len(ln) for ln in lines[1:3]}
    assert len(widths) == 1  # header and rule aligned
    assert any(ln.startswith("joint − frozen: accuracy +0.150 ± 0.071") for ln in lines)
    assert "frozen: source-table MAE vs generator 0.050 ± 0.014" in lines


def _assert_png(path):
    assert path.exists() and path.stat().st_size > 1000
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_plots_write_pngs(tmp_path):
    r = fake_results()
    _assert_png(plot_training_curves(r, tmp_path / "curves.png"))
    _assert_png(plot_source_trajectories(r, tmp_path / "sources.png"))
    _assert_png(plot_drift(r, tmp_path / "drift.png"))
    rng = np.random.default_rng(0)
    cms = {"frozen": rng.integers(0, 9, (7, 7)), "joint": rng.integers(0, 9, (7, 7))}
    cms["joint"][3] = 0  # a class with no samples: row normalisation must not divide by 0
    _assert_png(plot_confusions(cms, EMOTIONS, tmp_path / "confusion.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png", "curves.png", "drift.png", "sources.png"]


def test_plots_without_data(tmp_path):
    r = {"regimes": {"late_fusion": {"per_seed": {"0": {"metrics": {"accuracy": 0.3}}}}}}
    for fn, name in [(plot_training_curves, "a.png"), (plot_source_trajectories, "b.png"), (plot_drift, "c.png")]:
        _assert_png(fn(copy.deepcopy(r), tmp_path / name))
    _assert_png(plot_confusions({}, EMOTIONS, tmp_path / "d.png"))
    with pytest.raises(ValueError, match="shape"):
        plot_confusions({"x": np.zeros((3, 3))}, EMOTIONS, tmp_path / "e.png")

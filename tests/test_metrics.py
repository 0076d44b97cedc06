"""Metrics on tiny hand-computed examples."""
import math

import numpy as np
import pytest
import torch

from experiments.metrics import (
    aggregate_seeds,
    classification_metrics,
    confusion,
    dec_factor_agreement,
    dec_factor_kind,
    expected_calibration_error,
    mean_std,
    posterior_agreement,
    source_table_error,
)

# Four samples, three classes. Predictions 0, 1, 2, 0; labels 0, 2, 2, 1.
PROBS = [
    [0.70, 0.20, 0.10],  # y=0 correct, conf 0.70 -> bin 10 (0.667, 0.733]
    [0.10, 0.62, 0.28],  # y=2 wrong,   conf 0.62 -> bin 9  (0.600, 0.667]
    [0.18, 0.18, 0.64],  # y=2 correct, conf 0.64 -> bin 9
    [0.50, 0.25, 0.25],  # y=1 wrong,   conf 0.50 -> bin 7  (0.467, 0.533]
]
LABELS = [0, 2, 2, 1]


def test_classification_metrics_by_hand():
    m = classification_metrics(torch.tensor(PROBS), torch.tensor(LABELS), n_classes=3)
    assert m["n"] == 4
    assert m["accuracy"] == pytest.approx(0.5)
    # NLL = -(ln .70 + ln .28 + ln .64 + ln .25) / 4
    assert m["nll"] == pytest.approx(0.8655555, abs=1e-6)
    # ECE = 1/4*|1-.70| + 2/4*|0.5-0.63| + 1/4*|0-.50| = .075 + .065 + .125
    assert m["ece"] == pytest.approx(0.265, abs=1e-9)
    # F1: class 0 = 2/3 (P=.5, R=1), class 1 = 0, class 2 = 2/3 (P=1, R=.5)
    assert m["macro_f1"] == pytest.approx(4 / 9)
    assert all(isinstance(m[k], float) for k in ("accuracy", "macro_f1", "nll", "ece"))


def test_macro_f1_counts_absent_classes_as_zero():
    probs = np.hstack([np.array(PROBS), np.zeros((4, 1))])  # class 3: never present nor predicted
    m = classification_metrics(probs, np.array(LABELS), n_classes=4)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0 + 2 / 3 + 0) / 4)


def test_nll_is_clamped_and_perfect_predictions():
    m = classification_metrics([[1.0, 0.0], [0.0, 1.0]], [1, 1], n_classes=2)
    assert m["nll"] == pytest.approx(-math.log(1e-12) / 2)
    perfect = classification_metrics([[1.0, 0.0], [0.0, 1.0]], [0, 1], n_classes=2)
    assert perfect["accuracy"] == 1.0 and perfect["nll"] == 0.0 and perfect["ece"] == 0.0


def test_ece_single_bin_and_top_bin():
    # all confidences 0.8 (bin 11), accuracy 1/2 -> ECE = |0.5 - 0.8|
    probs = [[0.8, 0.2], [0.8, 0.2]]
    assert expected_calibration_error(probs, [0, 1]) == pytest.approx(0.3)
    # confidence exactly 1.0 goes in the last bin, not past it
    assert expected_calibration_error([[1.0, 0.0]], [1]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "probs, labels, msg",
    [
        ([[2.0, -1.0]], [0], "non-negative"),
        ([[0.2, 0.2]], [0], "sum to 1"),
        ([[0.5, 0.5]], [2], "0..1"),
        ([0.5, 0.5], [0], r"\[N, K\]"),
        (np.zeros((0, 2)), [], "empty"),
    ],
)
def test_bad_inputs_raise(probs, labels, msg):
    with pytest.raises(ValueError, match=msg):
        classification_metrics(probs, labels, n_classes=2)


def test_wrong_class_count_raises():
    with pytest.raises(ValueError, match="n_classes=7"):
        classification_metrics(PROBS, LABELS)


def test_confusion_rows_true_columns_predicted():
    cm = confusion(PROBS, LABELS, 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [1, 0, 0], [0, 1, 1]])


def test_source_table_error():
    truth = {1: {"scene": 0.4, "face1": 0.6}, 2: {"scene": 0.2, "face1": 0.5, "face2": 0.3}}
    learned = {"1": {"scene": 0.5, "face1": 0.5}, "2": {"scene": 0.2, "face1": 0.8}}  # face2 absent -> 0
    err = source_table_error(learned, truth)
    assert err["per_context"][1] == pytest.approx(0.1)
    assert err["per_context"][2] == pytest.approx((0.0 + 0.3 + 0.3) / 3)
    assert err["mae"] == pytest.approx((0.1 + 0.1 + 0.0 + 0.3 + 0.3) / 5)


def test_source_table_error_missing_context():
    with pytest.raises(ValueError, match="lacks context"):
        source_table_error({"1": {"scene": 1.0}}, {"1": {"scene": 1.0}, "3": {"scene": 1.0}})


def test_posterior_agreement():
    assert posterior_agreement(["scene", "face1", "face2"], ["scene", "face2", "face2"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        posterior_agreement(["scene"], [])


@pytest.mark.parametrize(
    "factors, kind",
    [
        ("BodyLanguage,FacialExpression", "face"),
        ("FacialExpression", "face"),
        ("Context,Staging", "scene"),
        ("BodyLanguage,Context", "scene"),
        ("Context,FacialExpression", None),  # both kinds: ambiguous
        ("BodyLanguage", None),
        ("Neutral", None),
        ("ConflictCtxtPerson", None),
        ("Undefined", None),
        (["facial expression", "body language"], "face"),
        ("the background scene", "scene"),
        (None, None),
        (float("nan"), None),
    ],
)
def test_dec_factor_kind(factors, kind):
    assert dec_factor_kind(factors) == kind


def test_dec_factor_agreement():
    posterior = [
        {"scene": 0.2, "face1": 0.5, "face2": 0.3},  # face   vs face  -> agree
        {"scene": 0.1, "face1": 0.1, "face2": 0.8},  # face   vs scene -> disagree
        {"scene": 0.9, "face1": 0.1},                # scene  vs scene -> agree
        {"scene": 0.9, "face1": 0.1},                # unmappable, skipped
    ]
    factors = ["FacialExpression", "Context", "Staging,BodyLanguage", "Neutral"]
    assert dec_factor_agreement(posterior, factors) == pytest.approx(2 / 3)
    assert dec_factor_agreement(posterior[:1], ["Neutral"]) is None


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # ddof=1
    assert mean_std([4.0]) == (4.0, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_aggregate_seeds_nested_and_missing():
    seeds = [
        {"metrics": {"accuracy": 0.5, "n": 10}, "mae": None, "tag": "x", "history": [1, 2],
         "drift": {"face": {"l2": 1.0}}},
        {"metrics": {"accuracy": 0.7, "n": 10}, "mae": None, "tag": "y", "history": [3],
         "drift": {"face": {"l2": 3.0}, "scene": {"l2": 2.0}}},
    ]
    agg = aggregate_seeds(seeds)
    assert agg["metrics"]["accuracy"]["mean"] == pytest.approx(0.6)
    assert agg["metrics"]["accuracy"]["std"] == pytest.approx(math.sqrt(0.02))
    assert agg["metrics"]["n"] == {"mean": 10.0, "std": 0.0, "n": 2}
    assert agg["drift"]["face"]["l2"]["mean"] == 2.0
    assert agg["drift"]["scene"]["l2"] == {"mean": 2.0, "std": 0.0, "n": 1}
    assert "mae" not in agg and "tag" not in agg and "history" not in agg
    with pytest.raises(ValueError, match="dict in some seeds"):
        aggregate_seeds([{"a": 1.0}, {"a": {"b": 1.0}}])

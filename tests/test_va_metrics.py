"""CCC, RMSE and Pearson against a hand computation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.va_metrics import ccc, pearson, rmse, va_metrics

TRUE = [1.0, 2.0, 3.0, 4.0]
PRED = [1.1, 1.9, 3.2, 3.8]
# By hand: both means 2.5; deviations t = (-1.5, -0.5, 0.5, 1.5), p = (-1.4, -0.6, 0.7, 1.3)
VAR_T = (2.25 + 0.25 + 0.25 + 2.25) / 4  # 1.25
VAR_P = (1.96 + 0.36 + 0.49 + 1.69) / 4  # 1.125
COV = (2.10 + 0.30 + 0.35 + 1.95) / 4  # 1.175
CCC = 2 * COV / (VAR_T + VAR_P + 0.0)  # 0.98947...
PEARSON = COV / math.sqrt(VAR_T * VAR_P)  # 0.99085...
RMSE = math.sqrt((0.01 + 0.01 + 0.04 + 0.04) / 4)  # 0.15811...


def test_hand_computation():
    assert ccc(PRED, TRUE) == pytest.approx(CCC, abs=1e-12)
    assert ccc(PRED, TRUE) == pytest.approx(0.9894736842, abs=1e-9)
    assert pearson(PRED, TRUE) == pytest.approx(PEARSON, abs=1e-12)
    assert rmse(PRED, TRUE) == pytest.approx(RMSE, abs=1e-12)


def test_ccc_penalises_bias_unlike_pearson():
    shifted = [p + 1 for p in PRED]  # mean difference 1 enters the CCC denominator
    assert pearson(shifted, TRUE) == pytest.approx(PEARSON)
    assert ccc(shifted, TRUE) == pytest.approx(2 * COV / (VAR_T + VAR_P + 1.0))


def test_constant_prediction():
    assert ccc([2.5] * 4, TRUE) == 0.0
    assert math.isnan(pearson([2.5] * 4, TRUE))
    assert rmse([2.5] * 4, TRUE) == pytest.approx(math.sqrt(VAR_T))


def test_per_dimension_table():
    pred = np.stack([PRED, [2.5] * 4], axis=1)
    true = np.stack([TRUE, TRUE], axis=1)
    m = va_metrics(pred, true)
    assert m["valence"]["ccc"] == pytest.approx(CCC) and m["arousal"]["ccc"] == 0.0
    assert m["mean_ccc"] == pytest.approx(CCC / 2) and m["n"] == 4


def test_bad_input():
    with pytest.raises(ValueError):
        ccc([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        va_metrics(np.zeros((3, 3)), np.zeros((3, 3)))

import random
from collections import Counter

import pytest

from neural.common import UserError
from pipelines.splits import DEFAULT_SPLIT_FRACTIONS, SplitError, assign_splits, check_fractions

FRACTIONS = {"pretrain": 0.35, "train": 0.35, "val": 0.1, "test": 0.2}


def _rows(n_per_label=(53, 41, 17, 8, 1)):
    ids, labels = [], []
    for label, n in enumerate(n_per_label):
        for k in range(n):
            ids.append(f"img-{label}-{k:03d}.jpg")
            labels.append(label)
    return ids, labels


def test_every_id_gets_a_split_from_the_fractions():
    ids, labels = _rows()
    out = assign_splits(ids, labels, FRACTIONS, seed=0)
    assert list(out) == ids
    assert set(out.values()) <= set(FRACTIONS)


def test_independent_of_row_order():
    ids, labels = _rows()
    reference = assign_splits(ids, labels, FRACTIONS, seed=3)
    rows = list(zip(ids, labels))
    for shuffle_seed in range(3):
        random.Random(shuffle_seed).shuffle(rows)
        shuffled = assign_splits([r[0] for r in rows], [r[1] for r in rows], FRACTIONS, seed=3)
        assert shuffled == reference


def test_fractions_respected_per_class_within_one():
    ids, labels = _rows()
    out = assign_splits(ids, labels, FRACTIONS, seed=1)
    per_class = Counter((lab, out[i]) for i, lab in zip(ids, labels))
    for label, n in Counter(labels).items():
        for split, f in FRACTIONS.items():
            assert abs(per_class[(label, split)] - f * n) < 1, (label, split)


def test_split_totals_stay_close_to_fractions():
    ids, labels = _rows((7,) * 20)  # 20 classes of 7: per-class rounding must not pile up
    out = assign_splits(ids, labels, FRACTIONS, seed=0)
    totals = Counter(out.values())
    for split, f in FRACTIONS.items():
        assert abs(totals[split] - f * len(ids)) <= 1, (split, totals)


def test_seed_changes_the_assignment_and_same_seed_repeats_it():
    ids, labels = _rows()
    a = assign_splits(ids, labels, FRACTIONS, seed=0)
    assert a == assign_splits(ids, labels, FRACTIONS, seed=0)
    assert a != assign_splits(ids, labels, FRACTIONS, seed=1)


def test_small_classes_still_fill_every_split():
    # 7 classes of 3: per class only 2 samples are placed by the fractions, the
    # leftovers are spread so that val and test are not empty.
    ids, labels = _rows((3,) * 7)
    totals = Counter(assign_splits(ids, labels, FRACTIONS, seed=0).values())
    for split, f in FRACTIONS.items():
        assert abs(totals[split] - f * len(ids)) <= 1, (split, totals)


def test_zero_fraction_gets_nothing_and_none_labels_are_a_group():
    ids = [f"s{i}" for i in range(30)]
    labels = [None] * 10 + ["a"] * 20
    out = assign_splits(ids, labels, {"train": 0.5, "val": 0.0, "test": 0.5}, seed=0)
    assert "val" not in out.values()
    assert Counter(out[i] for i in ids[:10]) == {"train": 5, "test": 5}


@pytest.mark.parametrize(
    "fractions, match",
    [
        ({"train": 0.5, "test": 0.4}, "sum to 1"),
        ({"train": 1.2, "test": -0.2}, ">= 0"),
        ({"train": "half", "test": 0.5}, "not a number"),
        ({}, "empty"),
    ],
)
def test_bad_fractions_are_user_errors(fractions, match):
    with pytest.raises(SplitError, match=match):
        assign_splits(["a", "b"], [0, 1], fractions, seed=0)


def test_duplicate_ids_and_length_mismatch_raise():
    with pytest.raises(UserError, match="duplicate sample id 'a'"):
        assign_splits(["a", "a"], [0, 0], FRACTIONS)
    with pytest.raises(ValueError, match="2 sample ids but 1 labels"):
        assign_splits(["a", "b"], [0], FRACTIONS)


def test_default_fractions_are_valid():
    assert check_fractions(DEFAULT_SPLIT_FRACTIONS) == DEFAULT_SPLIT_FRACTIONS

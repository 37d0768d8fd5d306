"""Stratified split: disjoint, covering, repeatable, and class shares kept in both parts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from domains.runtime import train_val_split
from domains.shared import TrainingError


def _check_partition(train: np.ndarray, val: np.ndarray, n: int) -> None:
    assert train.dtype == val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted, no repeats
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.union1d(train, val), np.arange(n))
    assert len(train) >= 1


@settings(max_examples=60, deadline=None)
@given(
    labels=hnp.arrays(np.int64, st.integers(1, 300), elements=st.integers(0, 4)),
    val_fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_train_val_split_partition_stratified(labels: np.ndarray, val_fraction: float, seed: int) -> None:
    train, val = train_val_split(labels, val_fraction=val_fraction, seed=seed)
    n = len(labels)
    _check_partition(train, val, n)
    if n >= 2:
        assert len(val) == min(n - 1, max(1, round(n * val_fraction)))
        for c in np.unique(labels):  # each class gets its share of the validation set, +-1
            share = np.sum(labels == c) * len(val) / n
            assert abs(np.sum(labels[val] == c) - share) < 1
    again = train_val_split(labels, val_fraction=val_fraction, seed=seed)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)


def test_train_val_split_keeps_class_shares() -> None:
    labels = np.array([0] * 70 + [1] * 30)
    train, val = train_val_split(labels, val_fraction=0.2, seed=0)
    assert len(val) == 20
    assert np.bincount(labels[val]).tolist() == [14, 6]
    assert np.bincount(labels[train]).tolist() == [56, 24]


def test_train_val_split_seed_changes_the_split() -> None:
    labels = np.arange(200) % 2
    a = train_val_split(labels, val_fraction=0.3, seed=0)[1]
    b = train_val_split(labels, val_fraction=0.3, seed=1)[1]
    assert not np.array_equal(a, b)


def test_train_val_split_multilabel_by_first_positive_or_none() -> None:
    labels = np.zeros((40, 3), np.uint8)
    labels[:10, 0] = 1
    labels[:10, 2] = 1  # key 0 (first positive wins)
    labels[10:20, 1] = 1  # key 1
    labels[20:30, 2] = 1  # key 2; rows 30..39 have no label: key "none"
    train, val = train_val_split(labels, val_fraction=0.5, seed=3)
    _check_partition(train, val, 40)
    assert [np.sum((val >= lo) & (val < lo + 10)) for lo in (0, 10, 20, 30)] == [5, 5, 5, 5]


def test_train_val_split_tiny_sets_keep_a_training_image() -> None:
    assert [len(p) for p in train_val_split(np.array([1]), val_fraction=0.9, seed=0)] == [1, 0]
    assert [len(p) for p in train_val_split(np.array([0, 1]), val_fraction=0.9, seed=0)] == [1, 1]
    assert [len(p) for p in train_val_split(np.arange(10), val_fraction=0.01, seed=0)] == [9, 1]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_train_val_split_fraction_outside_open_interval_refused(fraction: float) -> None:
    with pytest.raises(TrainingError, match=r"val_fraction must be in \(0, 1\)"):
        train_val_split(np.zeros(10, np.int64), val_fraction=fraction, seed=0)


@pytest.mark.parametrize("labels", [np.zeros(0, np.int64), np.zeros((2, 2, 2), np.int64)])
def test_train_val_split_bad_labels_refused(labels: np.ndarray) -> None:
    with pytest.raises(TrainingError, match="labels must be a non-empty"):
        train_val_split(labels, val_fraction=0.2, seed=0)

"""Simulated hospitals: every sample goes to exactly one hospital, the same way everywhere."""

from __future__ import annotations

import doctest
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import domains.data.partition
from domains.data.partition import (
    Partition,
    ShardSpec,
    class_keys,
    label_distribution,
    parse_partition,
    parse_shard,
    shard,
    shard_indices,
)
from domains.errors import MedsyftDomainError, PublishError, ShardSpecError

partitions = st.one_of(
    st.just(Partition("iid")),
    st.floats(0.01, 100.0).map(lambda alpha: Partition("dirichlet", alpha)),
)
class_labels = hnp.arrays(np.int64, st.integers(0, 120), elements=st.integers(0, 6))
multi_labels = st.integers(0, 80).flatmap(
    lambda n: hnp.arrays(np.int8, (n, 4), elements=st.integers(0, 1)))


def assert_is_partition(shards: list[np.ndarray], n: int, count: int) -> None:
    """The guarantees a publishing hospital relies on."""
    assert len(shards) == count
    for part in shards:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0), "each shard is sorted without repeats"
    joined = np.concatenate(shards)
    assert len(joined) == n, "shards are pairwise disjoint"
    assert np.array_equal(np.sort(joined), np.arange(n)), "together they are every sample"
    if n >= count:
        assert all(len(part) > 0 for part in shards), "no hospital is empty"


def mean_total_variation(labels: np.ndarray, shards: list[np.ndarray]) -> float:
    """Mean distance between each hospital's label mix and the global one (0 = identical)."""
    table = label_distribution(labels, shards).to_numpy(dtype=float)
    overall = table.sum(axis=0) / table.sum()
    local = table / table.sum(axis=1, keepdims=True)
    return float(0.5 * np.abs(local - overall).sum(axis=1).mean())


# -- --shard -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2/3", ShardSpec(2, 3)),
    (" 1/1 ", ShardSpec(1, 1)),
    ("12/12", ShardSpec(12, 12)),
    ("01/3", ShardSpec(1, 3)),
])
def test_parse_shard_valid(text: str, expected: ShardSpec) -> None:
    assert parse_shard(text) == expected


def test_parse_shard_out_of_range_message_says_how_to_fix() -> None:
    with pytest.raises(ShardSpecError) as info:
        parse_shard("4/3")
    assert str(info.value) == (
        "--shard 4/3: I must be between 1 and N (got I=4, N=3); e.g. --shard 1/3")
    assert isinstance(info.value, MedsyftDomainError)  # the CLI prints one line, exits 2


@pytest.mark.parametrize(("text", "names"), [
    ("0/3", "I must be between 1 and N (got I=0, N=3)"),
    ("1/0", "N must be at least 1 (got N=0)"),
    ("a/b", "expected I/N"),
    ("3", "expected I/N"),
    ("1/2/3", "expected I/N"),
    ("", "expected I/N"),
    ("-1/3", "expected I/N"),
    ("1.5/3", "expected I/N"),
    ("\u00b2/3", "expected I/N"),
])
def test_parse_shard_invalid(text: str, names: str) -> None:
    with pytest.raises(ShardSpecError) as info:
        parse_shard(text)
    assert names in str(info.value)
    assert "e.g. --shard 1/3" in str(info.value)


def test_shard_spec_validates_when_built_directly() -> None:
    with pytest.raises(ShardSpecError, match="between 1 and N"):
        ShardSpec(4, 3)
    assert str(ShardSpec(2, 5)) == "2/5"


# -- --partition -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("iid", Partition("iid", None)),
    (" IID ", Partition("iid", None)),
    ("dirichlet:0.5", Partition("dirichlet", 0.5)),
    ("dirichlet:1e3", Partition("dirichlet", 1000.0)),
    ("Dirichlet:2", Partition("dirichlet", 2.0)),
])
def test_parse_partition_valid(text: str, expected: Partition) -> None:
    assert parse_partition(text) == expected


@pytest.mark.parametrize("text", [
    "", "random", "iid:1", "dirichlet", "dirichlet:", "dirichlet:x", "dirichlet:0",
    "dirichlet:-1", "dirichlet:nan", "dirichlet:inf", "dirichlet:0.5:1",
])
def test_parse_partition_invalid_names_the_accepted_forms(text: str) -> None:
    with pytest.raises(ShardSpecError) as info:
        parse_partition(text)
    message = str(info.value)
    assert message.startswith(f"--partition {text}")
    assert "dirichlet:" in message
    assert "iid" in message or "> 0" in message


@pytest.mark.parametrize(("kind", "alpha"), [
    ("iid", 0.5), ("dirichlet", None), ("dirichlet", 0.0), ("dirichlet", float("inf")),
    ("uniform", None),
])
def test_partition_validates_when_built_directly(kind: str, alpha: float | None) -> None:
    with pytest.raises(ShardSpecError):
        Partition(kind, alpha)


@given(st.floats(min_value=1e-6, max_value=1e6))
def test_partition_text_round_trips(alpha: float) -> None:
    partition = Partition("dirichlet", alpha)
    assert parse_partition(str(partition)) == partition


# -- shard_indices invariants ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(class_labels, st.integers(1, 8), partitions, st.integers(0, 2**32 - 1))
def test_shard_indices_is_a_partition_of_all_samples(
    labels: np.ndarray, count: int, partition: Partition, seed: int
) -> None:
    shards = shard_indices(labels, count, partition, seed=seed)
    assert_is_partition(shards, len(labels), count)
    again = shard_indices(labels.copy(), count, partition, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))


@settings(max_examples=100, deadline=None)
@given(multi_labels, st.integers(1, 6), partitions, st.integers(0, 1000))
def test_shard_indices_multi_label_is_a_partition(
    labels: np.ndarray, count: int, partition: Partition, seed: int
) -> None:
    assert_is_partition(shard_indices(labels, count, partition, seed=seed), len(labels), count)


@settings(max_examples=100, deadline=None)
@given(class_labels, st.integers(1, 8), st.integers(0, 1000))
def test_shard_indices_iid_sizes_differ_by_at_most_one(
    labels: np.ndarray, count: int, seed: int
) -> None:
    sizes = [len(part) for part in shard_indices(labels, count, Partition("iid"), seed=seed)]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=50, deadline=None)
@given(st.integers(8, 40), st.integers(2, 8), st.integers(0, 1000))
def test_shard_indices_tiny_alpha_repairs_empty_hospitals(n: int, count: int, seed: int) -> None:
    labels = np.arange(n) % 2  # two classes: most hospitals would get nothing at alpha=0.001
    shards = shard_indices(labels, count, Partition("dirichlet", 0.001), seed=seed)
    assert_is_partition(shards, n, count)


def test_shard_indices_column_labels_split_like_flat_labels() -> None:
    labels = np.random.default_rng(0).integers(0, 5, 300)
    partition = Partition("dirichlet", 0.3)
    flat = shard_indices(labels, 4, partition, seed=7)
    column = shard_indices(labels.reshape(-1, 1), 4, partition, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(flat, column, strict=True))


def test_class_keys_multi_label_uses_first_positive_or_k() -> None:
    labels = np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0], [0, 0, 1]])
    assert class_keys(labels).tolist() == [1, 3, 0, 2]
    assert class_keys(np.array([7, 3, 7, 9])).tolist() == [1, 0, 1, 2]


def test_shard_indices_fewer_samples_than_hospitals() -> None:
    shards = shard_indices(np.array([0, 1]), 4, Partition("dirichlet", 0.5), seed=0)
    assert_is_partition(shards, 2, 4)
    assert [len(p) for p in shard_indices(np.array([], dtype=int), 3, Partition("iid"), seed=0)] \
        == [0, 0, 0]


def test_shard_indices_depends_on_the_seed() -> None:
    labels = np.arange(100) % 10
    a = shard_indices(labels, 3, Partition("iid"), seed=1)
    b = shard_indices(labels, 3, Partition("iid"), seed=2)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_shard_indices_same_in_another_process() -> None:
    code = (
        "import hashlib, numpy as np\n"
        "from domains.data.partition import shard_indices, parse_partition\n"
        "labels = np.arange(500) * 7 % 10\n"
        "h = hashlib.sha256()\n"
        "for p in ('iid', 'dirichlet:0.3'):\n"
        "    for part in shard_indices(labels, 5, parse_partition(p), seed=42):\n"
        "        h.update(part.tobytes())\n"
        "print(h.hexdigest())\n"
    )
    here = hashlib.sha256()
    labels = np.arange(500) * 7 % 10
    for text in ("iid", "dirichlet:0.3"):
        for part in shard_indices(labels, 5, parse_partition(text), seed=42):
            here.update(part.tobytes())
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        assert out.stdout.strip() == here.hexdigest()


@pytest.mark.parametrize(("count", "seed", "message"), [
    (0, 0, "N must be at least 1"),
    (3, -1, "seed must be a non-negative integer"),
])
def test_shard_indices_rejects_bad_arguments(count: int, seed: int, message: str) -> None:
    with pytest.raises(ShardSpecError, match=message):
        shard_indices(np.arange(10), count, Partition("iid"), seed=seed)


def test_shard_indices_rejects_labels_of_other_shapes() -> None:
    with pytest.raises(PublishError, match=r"\(n,\), \(n, 1\) or \(n, K\)"):
        shard_indices(np.zeros((4, 2, 2)), 2, Partition("iid"), seed=0)


def test_shard_picks_the_hospitals_share() -> None:
    labels = np.arange(90) % 3
    partition = parse_partition("dirichlet:0.5")
    every = shard_indices(labels, 3, partition, seed=5)
    for i in (1, 2, 3):
        assert np.array_equal(shard(labels, ShardSpec(i, 3), partition, seed=5), every[i - 1])


# -- label skew --------------------------------------------------------------------------------


def test_small_alpha_is_visibly_skewed_and_large_alpha_is_near_iid() -> None:
    labels = np.random.default_rng(0).integers(0, 10, 5000)

    def skew(partition: Partition) -> float:
        return float(np.mean([
            mean_total_variation(labels, shard_indices(labels, 5, partition, seed=seed))
            for seed in range(5)
        ]))

    iid, skewed, smooth = (skew(parse_partition(t))
                           for t in ("iid", "dirichlet:0.1", "dirichlet:1000"))
    assert iid < 0.05
    assert skewed > 0.4
    assert smooth < 0.05


def test_label_distribution_counts_each_hospitals_classes() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2])
    frame = label_distribution(labels, [np.array([0, 3]), np.array([1, 2, 4, 5])])
    assert frame.index.name == "hospital"
    assert frame.index.tolist() == [1, 2]
    assert frame.columns.tolist() == [0, 1, 2]
    assert frame.to_numpy().tolist() == [[1, 0, 1], [1, 1, 2]]


def test_label_distribution_multi_label_counts_positives_and_no_finding() -> None:
    labels = np.array([[1, 1], [0, 0], [0, 1], [0, 0]])
    frame = label_distribution(labels, [np.array([0, 1]), np.array([2, 3])])
    assert frame.columns.tolist() == [0, 1, 2]
    assert frame.to_numpy().tolist() == [[1, 1, 1], [0, 1, 1]]


def test_partition_docstring_examples_run() -> None:
    assert doctest.testmod(domains.data.partition).failed == 0

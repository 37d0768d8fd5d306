"""Weights as plain numpy: exact round trips, strict loading, and FedAvg that matches the maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from domains.runtime import build_model, fedavg, flatten, get_weights, set_weights, unflatten, weights_nbytes
from domains.shared import TrainingError

SHAPES = {"conv.weight": (2, 1, 3, 3), "conv.bias": (2,), "fc.weight": (3, 4)}
FLOATS = st.floats(-1e6, 1e6, allow_nan=False, width=32)


def _small(seed: int) -> nn.Module:
    return build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=seed)


def _weights_strategy() -> st.SearchStrategy[dict[str, np.ndarray]]:
    return st.fixed_dictionaries(
        {k: hnp.arrays(np.float32, shape, elements=FLOATS) for k, shape in SHAPES.items()}
    )


def test_get_weights_plain_float32_numpy() -> None:
    weights = get_weights(_small(0))
    assert weights and all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in weights.values())
    assert weights_nbytes(weights) == 4 * sum(p.numel() for p in _small(0).parameters())


def test_set_weights_round_trip_exact_and_same_predictions() -> None:
    source, target = _small(1), _small(2)
    set_weights(target, get_weights(source))
    back = get_weights(target)
    assert all(np.array_equal(back[k], v) for k, v in get_weights(source).items())
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(source.eval()(x), target.eval()(x))


def test_set_weights_missing_key_named() -> None:
    weights = get_weights(_small(0))
    del weights["0.weight"]
    with pytest.raises(TrainingError, match=r"missing keys \['0.weight'\]"):
        set_weights(_small(0), weights)


def test_set_weights_extra_key_named() -> None:
    weights = get_weights(_small(0)) | {"head.extra": np.zeros(1, np.float32)}
    with pytest.raises(TrainingError, match=r"unexpected keys \['head.extra'\]"):
        set_weights(_small(0), weights)


def test_set_weights_wrong_shape_named_and_model_untouched() -> None:
    model = _small(0)
    before = get_weights(model)
    three_classes = get_weights(build_model("small-cnn", in_channels=1, num_classes=3, image_size=28))
    with pytest.raises(TrainingError, match=r"weights\['.*'\] has shape \(3, 64\).*expects \(2, 64\)"):
        set_weights(model, three_classes)
    assert all(np.array_equal(get_weights(model)[k], v) for k, v in before.items())


def test_set_weights_keeps_integer_buffer_dtype() -> None:
    model = nn.BatchNorm1d(2)  # its num_batches_tracked is an int64 counter
    weights = get_weights(model)
    assert weights["num_batches_tracked"].dtype == np.int64
    set_weights(model, weights | {"num_batches_tracked": np.array(7)})
    assert model.num_batches_tracked.dtype == torch.int64 and int(model.num_batches_tracked) == 7


@settings(max_examples=40, deadline=None)
@given(
    updates=st.lists(_weights_strategy(), min_size=1, max_size=4),
    counts=st.lists(st.integers(0, 10_000), min_size=4, max_size=4).filter(lambda c: sum(c) > 0),
)
def test_fedavg_is_the_sample_weighted_mean(updates: list[dict[str, np.ndarray]], counts: list[int]) -> None:
    counts = counts[: len(updates)]
    if sum(counts) == 0:
        counts[0] = 1
    avg = fedavg(list(zip(updates, counts, strict=True)))
    for key in SHAPES:
        pairs = zip(updates, counts, strict=True)
        expected = sum(u[key].astype(np.float64) * n for u, n in pairs) / sum(counts)
        assert avg[key].dtype == np.float32
        np.testing.assert_allclose(avg[key], expected.astype(np.float32), rtol=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(update=_weights_strategy(), counts=st.lists(st.integers(1, 10**9), min_size=1, max_size=5))
def test_fedavg_identical_updates_returned_unchanged(
    update: dict[str, np.ndarray], counts: list[int]
) -> None:
    avg = fedavg([(update, n) for n in counts])
    assert all(np.array_equal(avg[k], update[k]) for k in update)


def test_fedavg_integer_buffers_take_first_update() -> None:
    a = {"w": np.array([1.0], np.float32), "steps": np.array(5, np.int64)}
    b = {"w": np.array([3.0], np.float32), "steps": np.array(9, np.int64)}
    avg = fedavg([(a, 1), (b, 1)])
    assert avg["w"].tolist() == [2.0] and avg["steps"].dtype == np.int64 and int(avg["steps"]) == 5


def test_fedavg_ignores_nan_from_empty_site() -> None:
    good = {"w": np.array([2.0], np.float32)}
    diverged = {"w": np.array([np.nan], np.float32)}
    assert fedavg([(good, 10), (diverged, 0)])["w"].tolist() == [2.0]


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ([], "at least one update"),
        ([({"w": np.ones(1, np.float32)}, 0)], "all sample counts are 0"),
        ([({"w": np.ones(1, np.float32)}, -1)], "sample count must be a number >= 0"),
        ([({"w": np.ones(1, np.float32)}, 1), ({"v": np.ones(1, np.float32)}, 1)], "different keys"),
        ([({"w": np.ones(1, np.float32)}, 1), ({"w": np.ones(2, np.float32)}, 1)], "'w' has shape"),
    ],
)
def test_fedavg_bad_updates_refused(updates: list, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        fedavg(updates)


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.text("abcdefgh._", min_size=1, max_size=8),
        hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
                   elements=FLOATS),
        max_size=5,
    )
)
def test_flatten_unflatten_round_trip(weights: dict[str, np.ndarray]) -> None:
    vector, layout = flatten(weights)
    assert vector.dtype == np.float32 and vector.ndim == 1
    assert vector.size == sum(a.size for a in weights.values())
    assert [k for k, _ in layout] == sorted(weights)
    back = unflatten(vector, layout)
    assert back.keys() == weights.keys()
    assert all(back[k].shape == weights[k].shape and np.array_equal(back[k], weights[k]) for k in weights)


def test_flatten_same_vector_whatever_the_dict_order() -> None:
    weights = get_weights(_small(0))
    reordered = dict(reversed(list(weights.items())))
    assert np.array_equal(flatten(weights)[0], flatten(reordered)[0])


def test_unflatten_wrong_length_refused() -> None:
    vector, layout = flatten({"w": np.ones((2, 2), np.float32)})
    with pytest.raises(TrainingError, match="3 values but the layout needs 4"):
        unflatten(vector[:3], layout)

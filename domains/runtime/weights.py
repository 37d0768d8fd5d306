"""Model weights as plain numpy arrays: what travels between the orchestrator and datasites.

Plain arrays, never pickled torch objects, so a datasite loads nothing that can run code, and
the same dict feeds federated averaging, DP noise and encrypted aggregation (via
:func:`flatten`). Floating tensors travel as float32; integer buffers keep their dtype.

A model's round trip through one vector, as an encrypted update makes it:

>>> model = nn.Linear(3, 2)
>>> vector, layout = flatten(get_weights(model))
>>> vector.shape, layout
((8,), [('bias', (2,)), ('weight', (2, 3))])
>>> set_weights(model, unflatten(np.zeros_like(vector), layout))
>>> float(model.weight.abs().sum())
0.0
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from domains.runtime.errors import TrainingError
from domains.shared.errors import CodecError
from domains.shared.plain_model import Layout, PlainModel

Weights = dict[str, np.ndarray]


def get_weights(model: nn.Module) -> Weights:
    """Copy the model's state (parameters and buffers) out as numpy arrays.

    >>> w = get_weights(nn.Linear(3, 2))
    >>> sorted(w), w["weight"].dtype, w["weight"].shape
    (['bias', 'weight'], dtype('float32'), (2, 3))
    """
    out: Weights = {}
    for key, tensor in model.state_dict().items():
        array = tensor.detach().cpu().numpy()
        out[key] = array.astype(np.float32) if tensor.is_floating_point() else array.copy()
    return out


def set_weights(model: nn.Module, weights: Weights) -> None:
    """Load ``weights`` into ``model`` in place, casting to each tensor's own dtype.

    Raises:
        TrainingError: naming the first missing, unexpected or wrongly shaped key, because a
            partial load would silently train a half-initialised network.
    """
    state = model.state_dict()
    missing = [k for k in state if k not in weights]
    extra = [k for k in weights if k not in state]
    if missing or extra:
        raise TrainingError(
            f"weights do not match the model: missing keys {missing[:5]}, unexpected keys "
            f"{extra[:5]}; build the model with the same name and shape as the sender"
        )
    for key, tensor in state.items():
        shape = tuple(np.shape(weights[key]))
        if shape != tuple(tensor.shape):
            raise TrainingError(
                f"weights[{key!r}] has shape {shape} but the model expects {tuple(tensor.shape)}; "
                "check in_channels, num_classes and image_size"
            )
    model.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in weights.items()}, strict=True)


def fedavg(updates: Sequence[tuple[Weights, int]]) -> Weights:
    """Average site updates weighted by their sample counts (FedAvg): Σ nᵢ·wᵢ / Σ nᵢ.

    Sums run in float64 so that many sites or large counts lose no precision; results are
    float32. Non-float buffers (step counters) cannot be averaged and take the first update's
    value.

    Raises:
        TrainingError: for no updates, a negative or non-numeric count, a zero total count,
            or updates whose keys or shapes differ.

    A site with 1 sample that sent 0.0 and one with 3 samples that sent 4.0 average to
    (1·0 + 3·4) / 4 = 3.0:

    >>> a, b = {"w": np.array([0.0], np.float32)}, {"w": np.array([4.0], np.float32)}
    >>> fedavg([(a, 1), (b, 3)])["w"]
    array([3.], dtype=float32)
    """
    if not updates:
        raise TrainingError("fedavg needs at least one update; collect results from a site first")
    counts = [_count(n, i) for i, (_, n) in enumerate(updates)]
    total = sum(counts)
    if total <= 0:
        raise TrainingError("fedavg: all sample counts are 0; at least one site must train on data")
    first = updates[0][0]
    for i, (w, _) in enumerate(updates[1:], start=1):
        check_same_layout(first, w, i)
    out: Weights = {}
    for key, ref in first.items():
        if not np.issubdtype(ref.dtype, np.floating):
            out[key] = ref.copy()
            continue
        acc = np.zeros(ref.shape, dtype=np.float64)
        for (w, _), n in zip(updates, counts, strict=True):
            if n == 0:  # an empty site adds nothing, not even a NaN from a diverged model
                continue
            acc += np.asarray(w[key], dtype=np.float64) * (n / total)
        out[key] = acc.astype(np.float32)
    return out


def _count(n: object, i: int) -> float:
    if isinstance(n, bool) or not isinstance(n, numbers.Real) or not np.isfinite(float(n)) or n < 0:
        raise TrainingError(f"update {i}: sample count must be a number >= 0 (got {n!r})")
    return float(n)


def check_same_layout(ref: Weights, other: Weights, i: int) -> None:
    """Update *i* has update 0's keys and shapes (every combining strategy needs one model)."""
    if ref.keys() != other.keys():
        diff = sorted(set(ref) ^ set(other))[:5]
        raise TrainingError(f"update {i} has different keys from update 0 ({diff}); use one model")
    for key, array in ref.items():
        if np.shape(other[key]) != array.shape:
            raise TrainingError(
                f"update {i}: {key!r} has shape {np.shape(other[key])}, update 0 has {array.shape}; "
                "every site must train the same model"
            )


def flatten(weights: Weights) -> tuple[np.ndarray, Layout]:
    """One float32 vector of all weights, keys in sorted order, and the layout to undo it.

    The encoding is :class:`~domains.shared.plain_model.PlainModel`'s (one place for it): sorting
    makes the layout independent of dict order, so every party builds the same vector (encrypted
    aggregation adds vectors element by element). Integer buffers become float32.

    >>> vec, layout = flatten({"b": np.ones(2, np.float32), "a": np.zeros((1, 2), np.float32)})
    >>> vec, layout
    (array([0., 0., 1., 1.], dtype=float32), [('a', (1, 2)), ('b', (2,))])
    """
    model = PlainModel.from_weights(weights)
    return model.vector, list(model.layout)


def unflatten(vector: np.ndarray, layout: Layout) -> Weights:
    """Split a vector from :func:`flatten` back into named float32 arrays (copies).

    Raises:
        TrainingError: when the vector length does not match the layout.

    >>> unflatten(np.arange(4, dtype=np.float32), [("a", (1, 2)), ("b", (2,))])
    {'a': array([[0., 1.]], dtype=float32), 'b': array([2., 3.], dtype=float32)}
    """
    try:
        return PlainModel(np.asarray(vector, dtype=np.float32).ravel(), tuple(layout)).to_weights()
    except CodecError as exc:
        raise TrainingError(f"{exc}; use the layout returned with this vector by flatten()") from exc


def layout_of(model: nn.Module) -> Layout:
    """The layout of *model*'s state (names sorted, shapes), read without copying a weight."""
    return [(key, tuple(int(d) for d in tensor.shape)) for key, tensor in sorted(model.state_dict().items())]


def load_plain(model: nn.Module, plain: PlainModel) -> None:
    """Load a plaintext model into *model*, once its layout is *model*'s (the one check, here).

    Raises:
        CodecError: naming the first tensor whose name or shape differs, before anything is loaded.
    """
    plain.check_layout(layout_of(model))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in plain.to_weights().items()}, strict=True)


def weights_nbytes(weights: Weights) -> int:
    """Bytes the arrays occupy, i.e. roughly what one transfer of ``weights`` costs."""
    return int(sum(np.asarray(a).nbytes for a in weights.values()))

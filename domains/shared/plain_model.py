"""A plaintext model as it travels and is stored: one float32 vector and the layout that names it.

PySyft serializes one large float32 array far faster than a dict of many small ones, so a model
travels as one vector; the layout (each tensor's name and shape, names sorted) travels beside it,
so that no party has to build a torch model to learn how to cut the vector up again. Sorting
makes the vector independent of dict order: every party builds the same one, which encrypted
aggregation needs (it adds vectors element by element). Integer buffers become float32.

>>> model = PlainModel.from_weights({"fc.weight": np.ones((2, 2), np.float32), "fc.bias": np.zeros(2)})
>>> model.vector.tolist(), model.layout
([0.0, 0.0, 1.0, 1.0, 1.0, 1.0], (('fc.bias', (2,)), ('fc.weight', (2, 2))))
>>> model.to_weights()["fc.weight"].shape
(2, 2)
>>> model.check_layout([("fc.bias", (2,)), ("fc.weight", (2, 3))])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
domains.shared.errors.CodecError: the model's 'fc.weight' has shape (2, 2) but the approved ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from domains.shared.errors import CodecError

MODEL_FORMAT = "medsyft-model/1"
Layout = Sequence[tuple[str, tuple[int, ...]]]
"""Each tensor's name and shape, in the vector's order (names sorted)."""
_Frozen = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True, eq=False)
class PlainModel:
    """A model's every parameter and buffer as one float32 vector, with its layout."""

    vector: np.ndarray
    layout: Layout  # kept as nested tuples, checked

    def __post_init__(self) -> None:
        vector = np.asarray(self.vector)
        if vector.ndim != 1 or vector.dtype.kind not in "fiu":
            raise CodecError(f"a plaintext model's vector must be one 1-D numeric array (got {vector.dtype} "
                             f"with shape {vector.shape})")
        layout = frozen_layout(self.layout)
        needed = sum(math.prod(shape) for _, shape in layout)
        if needed != vector.size:
            raise CodecError(f"vector has {vector.size} values but the layout needs {needed}; the vector is "
                             "truncated, or belongs to another model")
        object.__setattr__(self, "vector", vector.astype(np.float32, copy=False))
        object.__setattr__(self, "layout", layout)

    @classmethod
    def from_weights(cls, weights: Mapping[str, Any]) -> PlainModel:
        """The model of named arrays (``domains.runtime.weights.get_weights``), names sorted."""
        layout = tuple((str(k), tuple(int(d) for d in np.shape(weights[k]))) for k in sorted(weights))
        pieces = [np.asarray(weights[k], dtype=np.float32).ravel() for k, _ in layout]
        return cls(np.concatenate(pieces) if pieces else np.zeros(0, np.float32), layout)

    def to_weights(self) -> dict[str, np.ndarray]:
        """Named float32 arrays again (copies), in layout order."""
        out, start = {}, 0
        for name, shape in self.layout:
            size = math.prod(shape)
            out[name] = self.vector[start:start + size].reshape(shape).copy()
            start += size
        return out

    @property
    def params(self) -> int:
        """How many values the model holds."""
        return int(self.vector.size)

    @property
    def nbytes(self) -> int:
        """Bytes of the vector, i.e. what one transfer of the model costs."""
        return int(self.vector.nbytes)

    def check_layout(self, expected: Layout, *, of: str = "the approved model") -> None:
        """Refuse, naming the first difference, unless the layout is *expected* (names and shapes)."""
        mine, theirs = dict(self.layout), dict(frozen_layout(expected))
        missing, extra = [k for k in theirs if k not in mine], [k for k in mine if k not in theirs]
        if missing or extra:
            raise CodecError(f"the model's tensors do not match {of}'s: missing {missing[:3]}, unexpected "
                             f"{extra[:3]}; the sender built another model")
        for name, shape in theirs.items():
            if mine[name] != shape:
                raise CodecError(f"the model's {name!r} has shape {mine[name]} but {of}'s has {shape}; the "
                                 "sender built another model (check in_channels, num_classes and image_size)")

    def __eq__(self, other: object) -> bool:
        """Same layout and bit-identical values (NaN payloads included)."""
        if not isinstance(other, PlainModel):
            return NotImplemented
        return self.layout == other.layout and self.vector.tobytes() == other.vector.tobytes()

    __hash__ = None  # type: ignore[assignment]


def frozen_layout(layout: Any) -> _Frozen:
    """A layout as nested tuples, after checking it: unique string names, shapes of ints ≥ 0."""
    try:
        pairs = [(name, tuple(shape)) for name, shape in layout]
    except (TypeError, ValueError) as exc:
        raise CodecError(f"a layout must list (name, shape) pairs (got {type(layout).__name__})") from exc
    for name, shape in pairs:
        if not isinstance(name, str) or not all(isinstance(d, int | np.integer) and not isinstance(d, bool)
                                                and d >= 0 for d in shape):
            raise CodecError(f"a layout entry must be a name and a shape of sizes ≥ 0 (got {name!r}, "
                             f"{shape!r})")
    if len({name for name, _ in pairs}) != len(pairs):
        raise CodecError("a layout names a tensor twice")
    return tuple((name, tuple(int(d) for d in shape)) for name, shape in pairs)


def layout_to_json(layout: Layout) -> list[list[Any]]:
    """``[[name, [sizes...]], ...]``: the layout as JSON and PySyft carry it."""
    return [[name, list(shape)] for name, shape in layout]


def model_to_wire(model: PlainModel) -> dict[str, Any]:
    """``{"format": "medsyft-model/1", "layout": [...], "vector": float32 array}``."""
    return {"format": MODEL_FORMAT, "layout": layout_to_json(model.layout), "vector": model.vector}


def model_from_wire(wire: Mapping[str, Any]) -> PlainModel:
    """The model of :func:`model_to_wire`'s dict; :class:`CodecError` if it is not one."""
    if set(wire) != {"format", "layout", "vector"}:
        raise CodecError(f"a plaintext model must have exactly the keys format, layout and vector "
                         f"(got {sorted(map(str, wire))})")
    vector = wire["vector"]
    if not isinstance(vector, np.ndarray):
        raise CodecError(f"a plaintext model's vector must be a numpy array (got {type(vector).__name__})")
    return PlainModel(vector, frozen_layout(wire["layout"]))

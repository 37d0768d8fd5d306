"""The codec's value kinds, one per type, in a name-keyed registry: how each is stored and sent.

A :class:`Kind` says, for one value type, its stored form (``encode``: JSON-able metadata plus
flat numpy arrays, and ``decode``) and its wire form (``to_wire``: the dict PySyft carries, one
array per value, and ``from_wire``). The metadata and the wire dict carry the kind's ``format``
tag, which is how :mod:`domains.shared.codec` knows what it reads. The four built-in kinds:

=================  ==========================  ==========================  =========================
kind               value                       format tag                  arrays
=================  ==========================  ==========================  =========================
``plain-model``    :class:`PlainModel`         ``medsyft-model/1``         ``vector`` (float32)
``he-vector``      ``EncryptedVector``         ``medsyft-he-vector/2``     ``chunks`` (uint8)
``signed-part``    ``SignedPart``              ``medsyft-secagg-part/1``   ``chunks`` (uint8)
``signed-round``   :class:`SignedRound`        ``medsyft-signed-round/1``  ``chunks``: every part's
=================  ==========================  ==========================  =========================

``privacy/`` owns the ciphertext types and must not import ``domains/``, so their kinds live
here and call the types' own ``to_dict``/``from_dict``: a malformed ciphertext is refused by
privacy's own checks (``HEError``; a part's as ``AggregationRefused``, rule ``malformed``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from domains.shared.errors import CodecError
from domains.shared.plain_model import (
    MODEL_FORMAT,
    PlainModel,
    frozen_layout,
    layout_to_json,
    model_from_wire,
    model_to_wire,
)
from domains.shared.signed_round import SignedRound
from privacy.he import LEGACY_VECTOR_FORMAT, VECTOR_FORMAT, EncryptedVector
from privacy.secagg_messages import PART_FORMAT, MaskRecovery, SignedPart

ROUND_FORMAT = "medsyft-signed-round/1"
Meta = dict[str, Any]
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Kind:
    """How one type of value is stored (``encode``/``decode``) and sent (``to_wire``/``from_wire``)."""

    name: str
    type: type
    format: str  # the tag it writes
    encode: Callable[[Any], tuple[Meta, Arrays]]
    decode: Callable[[Meta, Mapping[str, np.ndarray]], Any]
    to_wire: Callable[[Any], dict[str, Any]]
    from_wire: Callable[[Mapping[str, Any]], Any]
    nbytes: Callable[[Any], int]
    reads: tuple[str, ...] = ()  # older tags it also reads


_KINDS: dict[str, Kind] = {}
_BY_FORMAT: dict[str, Kind] = {}


def register_kind(kind: Kind, *, force: bool = False) -> None:
    """Add a kind; a name or format tag already taken is refused unless *force*."""
    tags = (kind.format, *kind.reads)
    taken = [t for t in (kind.name, *tags) if (t in _KINDS or t in _BY_FORMAT) and not force]
    if taken:
        raise ValueError(f"codec kind {taken[0]!r} is already registered; pass force=True to replace it")
    _KINDS[kind.name] = kind
    _BY_FORMAT.update(dict.fromkeys(tags, kind))


def kind_of(value: Any) -> Kind:
    """The kind that stores and sends *value*."""
    for kind in _KINDS.values():
        if isinstance(value, kind.type):
            return kind
    raise CodecError(f"no codec kind stores a {type(value).__name__}; register one with register_kind")


def is_value(value: Any) -> bool:
    """Whether some kind stores *value* (it is decoded, not in a wire form)."""
    return any(isinstance(value, kind.type) for kind in _KINDS.values())


def kind_for(meta: Mapping[str, Any]) -> Kind:
    """The kind of a stored or wire form, by its ``format`` tag."""
    tag = meta.get("format") if isinstance(meta, Mapping) else None
    if not isinstance(tag, str) or tag not in _BY_FORMAT:
        raise CodecError(f"unknown value format {tag!r}: expected one of {', '.join(sorted(_BY_FORMAT))}")
    return _BY_FORMAT[tag]


def array(arrays: Mapping[str, np.ndarray], name: str, dtype: Any, what: str) -> np.ndarray:
    """Array *name* of a stored value, 1-D of *dtype*; :class:`CodecError` if missing or another."""
    found = arrays.get(name)
    if not isinstance(found, np.ndarray):
        raise CodecError(f"the {what} has no {name!r} array: the file or payload is truncated")
    if found.dtype != np.dtype(dtype) or found.ndim != 1:
        raise CodecError(f"the {what}'s {name!r} array must be 1-D {np.dtype(dtype)} (got {found.dtype} "
                         f"with shape {found.shape})")
    return found


# -- plain-model -----------------------------------------------------------------------------
def _model_decode(meta: Meta, arrays: Mapping[str, np.ndarray]) -> PlainModel:
    if set(meta) != {"format", "layout"}:
        raise CodecError(f"a stored plaintext model must have exactly the keys format and layout "
                         f"(got {sorted(meta)})")
    return PlainModel(array(arrays, "vector", np.float32, "plaintext model"), frozen_layout(meta["layout"]))


# -- he-vector ---------------------------------------------------------------------------------
def _vector_encode(vector: EncryptedVector) -> tuple[Meta, Arrays]:
    meta = vector.to_dict()
    return meta, {"chunks": meta.pop("chunks")}


def _vector_decode(meta: Meta, arrays: Mapping[str, np.ndarray]) -> EncryptedVector:
    chunks = array(arrays, "chunks", np.uint8, "encrypted vector")
    return EncryptedVector.from_dict({**meta, "chunks": chunks})


# -- signed-part --------------------------------------------------------------------------------
def _part_encode(part: SignedPart) -> tuple[Meta, Arrays]:
    meta = part.to_dict()
    vector = meta["vector"] = dict(meta["vector"])
    return meta, {"chunks": vector.pop("chunks")}


def _part_decode(meta: Meta, arrays: Mapping[str, np.ndarray]) -> SignedPart:
    if not isinstance(meta.get("vector"), dict):
        raise CodecError("a stored signed part needs its header and its vector's metadata")
    chunks = array(arrays, "chunks", np.uint8, "signed part")
    return SignedPart.from_dict({**meta, "vector": {**meta["vector"], "chunks": chunks}})


# -- signed-round --------------------------------------------------------------------------------
def _round_encode(signed: SignedRound) -> tuple[Meta, Arrays]:
    encoded = [_part_encode(p) for p in signed.parts]
    chunks = [a["chunks"] for _, a in encoded]
    meta = {"format": ROUND_FORMAT, "call": signed.call, "parts": [m for m, _ in encoded],
            "recoveries": [r.to_dict() for r in signed.recoveries]}
    return meta, {"chunks": np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)}


def _round_decode(meta: Meta, arrays: Mapping[str, np.ndarray]) -> SignedRound:
    records, packed = meta.get("parts"), array(arrays, "chunks", np.uint8, "signed round")
    if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("vector"), dict)
                                                for r in records):
        raise CodecError("a stored signed round must list its parts' headers")
    sizes = [_part_bytes(r["vector"]) for r in records]
    if sum(sizes) != packed.size:
        raise CodecError(f"a stored signed round's parts need {sum(sizes)} ciphertext bytes but it holds "
                         f"{packed.size}: the file is truncated")
    ends = np.cumsum(sizes).tolist()
    found = tuple(_part_decode(r, {"chunks": packed[end - n:end]}) for r, n, end in zip(records, sizes, ends,
                                                                                          strict=True))
    return _round(meta, found, meta.get("recoveries"))


def _part_bytes(vector: Mapping[str, Any]) -> int:
    sizes = vector.get("chunk_sizes")
    if not (isinstance(sizes, list) and all(isinstance(n, int) and n > 0 for n in sizes)):
        raise CodecError(f"a stored part's chunk_sizes must list positive ints (got {sizes!r})")
    return sum(sizes)


def _round_from_wire(wire: Mapping[str, Any]) -> SignedRound:
    parts, recoveries = wire.get("parts"), wire.get("recoveries")
    if not isinstance(parts, list | tuple):
        raise CodecError("a signed round must list its parts")
    return _round(wire, tuple(SignedPart.from_dict(p) for p in parts), recoveries)


def _round(meta: Mapping[str, Any], parts: tuple[SignedPart, ...], recoveries: Any) -> SignedRound:
    call = meta.get("call")
    if not (isinstance(call, int) and not isinstance(call, bool)) or not isinstance(recoveries, list | tuple):
        raise CodecError(f"a signed round needs its call number and a list of recoveries (got call {call!r})")
    return SignedRound(call=call, parts=parts,
                       recoveries=tuple(MaskRecovery.from_dict(r) for r in recoveries))


register_kind(Kind("plain-model", PlainModel, MODEL_FORMAT,
                   encode=lambda m: ({"format": MODEL_FORMAT, "layout": layout_to_json(m.layout)},
                                     {"vector": m.vector}),
                   decode=_model_decode, to_wire=model_to_wire, from_wire=model_from_wire,
                   nbytes=lambda m: m.nbytes))
register_kind(Kind("he-vector", EncryptedVector, VECTOR_FORMAT, encode=_vector_encode, decode=_vector_decode,
                   to_wire=lambda v: v.to_dict(), from_wire=EncryptedVector.from_dict,
                   nbytes=lambda v: v.nbytes, reads=(LEGACY_VECTOR_FORMAT,)))
register_kind(Kind("signed-part", SignedPart, PART_FORMAT, encode=_part_encode, decode=_part_decode,
                   to_wire=lambda p: p.to_dict(), from_wire=SignedPart.from_dict,
                   nbytes=lambda p: p.vector.nbytes))
register_kind(Kind("signed-round", SignedRound, ROUND_FORMAT, encode=_round_encode, decode=_round_decode,
                   to_wire=lambda r: {"format": ROUND_FORMAT, "call": r.call, **r.payload()},
                   from_wire=_round_from_wire, nbytes=lambda r: r.nbytes))

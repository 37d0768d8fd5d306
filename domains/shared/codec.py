"""One stored form and one wire form for every value the rooms exchange: models, ciphertexts, parts.

A plaintext model (:class:`~domains.shared.plain_model.PlainModel`), an encrypted vector
(:class:`privacy.he.EncryptedVector`), a signed part (:class:`privacy.secagg_messages.SignedPart`)
and a roster job's round (:class:`~domains.shared.signed_round.SignedRound`) each have one kind
(:mod:`domains.shared.kinds`), used everywhere the value is stored or sent:

- **stored**: :func:`encode` gives ``(meta, arrays)``, JSON-able metadata with the kind's format
  tag and flat numpy arrays; :func:`decode` takes them back. :func:`to_npz` writes one value (and
  any ``fields`` beside it) to an ``.npz`` file atomically, 0600; :func:`read_npz` and
  :func:`from_npz` read it. The call log (``DIR/jobs/JOB/call-N.npz``) and the orchestrator's
  checkpoints (``RUN_DIR/global-R.npz``) use them.
- **sent**: :func:`to_wire` gives the dict a PySyft payload or result carries: JSON-able fields
  and one array per value, which PySyft serializes far faster than many small objects;
  :func:`from_wire` takes it back, :func:`decode_update` reads the update of a call's result.

Older forms still read (:mod:`domains.shared.legacy`): the call log's ``w::``/``__flat__``/
``c::``/``packed::`` entries, the checkpoints' ``__encrypted__``/``chunk_i``,
``__signed_round__``/``part_i`` and plain ``{name: array}`` files, the list-of-bytes encrypted
vector, a dict of named arrays, and a bare float32 vector (the plaintext model of the previous
version, whose layout the receiver supplies). New writes use only the forms above.

>>> model = PlainModel.from_weights({"w": np.arange(3, dtype=np.float32)})
>>> meta, arrays = encode(model)
>>> meta, sorted(arrays)
({'format': 'medsyft-model/1', 'layout': [['w', [3]]]}, ['vector'])
>>> decode(meta, arrays) == model and from_wire(to_wire(model)) == model
True
>>> from_wire(np.ones(3, np.float32), layout=[("w", (3,))]).to_weights()
{'w': array([1., 1., 1.], dtype=float32)}
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from domains.shared import legacy
from domains.shared.errors import CodecError
from domains.shared.kinds import Arrays, Meta, is_value, kind_for, kind_of, register_kind
from domains.shared.plain_model import Layout, PlainModel
from privacy.durable import atomic_writer
from privacy.errors import AggregationRefused, PrivacyError
from privacy.he import EncryptedVector
from privacy.secagg_messages import SignedPart

__all__ = ["Layout", "PlainModel", "Stored", "as_value", "decode", "decode_update", "encode", "from_npz",
           "from_wire", "is_value", "join_part", "nbytes", "read_npz", "register_kind", "split_part",
           "to_npz", "to_wire", "wire_payload"]

NPZ_FORMAT = "medsyft-npz/1"
_HEADER = "__codec__"  # the JSON header: {"format", "value": meta or null, "fields"}
_VALUE = "value."  # the value's arrays
_FIELD = "field."  # array-valued fields beside it


def encode(value: Any) -> tuple[Meta, Arrays]:
    """The stored form of *value*: JSON-able metadata (with its format tag) and flat arrays."""
    return kind_of(value).encode(value)


def decode(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Any:
    """The value of :func:`encode`'s output; :class:`CodecError` for an unknown tag or a missing array."""
    if not isinstance(meta, Mapping):
        raise CodecError(f"a stored value's metadata must be a dict (got {type(meta).__name__})")
    return kind_for(meta).decode(dict(meta), arrays)


def to_wire(value: Any) -> Any:
    """What a PySyft payload or result carries for *value*; a bare vector (older form) as it is."""
    if isinstance(value, np.ndarray):
        return value
    return kind_of(value).to_wire(value)


def from_wire(wire: Any, *, layout: Layout | None = None) -> Any:
    """The value a wire form carries. *layout* reads a bare float32 vector, the previous version's
    plaintext model (the receiver knows the layout of the model it built or sent)."""
    if isinstance(wire, np.ndarray):
        if layout is None:
            raise CodecError("a bare vector carries no layout: send the model in its medsyft-model/1 form")
        return PlainModel(wire.ravel(), tuple(layout))
    if isinstance(wire, Mapping) and "format" in wire:
        return kind_for(wire).from_wire(wire)
    if isinstance(wire, Mapping) and wire and all(isinstance(v, np.ndarray) for v in wire.values()):
        return PlainModel.from_weights(wire)  # named arrays: the form before one vector
    raise CodecError(f"not a medsyft value: expected a dict with a format tag, or a float32 vector (got "
                     f"{type(wire).__name__})")


def as_value(value: Any, *, layout: Layout | None = None) -> Any:
    """*value* itself if it is already decoded, else :func:`from_wire` of it."""
    return value if is_value(value) else from_wire(value, layout=layout)


def wire_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A payload with every decoded value at its top level in its wire form, ready for PySyft."""
    return {k: to_wire(v) if is_value(v) else v for k, v in payload.items()}


def nbytes(value: Any) -> int:
    """Bytes of a value's arrays as it travels (ciphertext chunks, or float32 values)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return kind_of(value).nbytes(value)


# -- a signed part in a call's result: its header beside its ciphertext ---------------------
def split_part(part: SignedPart) -> tuple[dict[str, Any], EncryptedVector]:
    """``(header, ciphertext)``: a call returns them as ``part`` and ``weights``, so the call log
    stores and replays a part's ciphertext exactly as any encrypted update."""
    header = part.to_dict()
    del header["vector"]
    return header, part.vector


def join_part(header: Any, vector: Any) -> SignedPart:
    """The part of :func:`split_part`'s output (*vector* decoded or in its wire form);
    :class:`~privacy.errors.AggregationRefused` (rule ``malformed``) if it is not one."""
    if not isinstance(header, Mapping):
        raise AggregationRefused(f"a part's header must be a dict (got {type(header).__name__})",
                                 rule="malformed")
    wire = vector.to_dict() if isinstance(vector, EncryptedVector) else vector
    return SignedPart.from_dict({**header, "vector": wire})


def decode_update(result: Mapping[str, Any], *, layout: Layout | None = None) -> Any:
    """The update a call's result carries, decoded once: a :class:`PlainModel`, an
    ``EncryptedVector``, a ``SignedPart`` (``part`` beside ``weights``), or None (evaluation only).
    *layout* reads the bare vector an older datasite (or its replayed call log) returns."""
    sent = result.get("weights")
    if sent is None:
        return None
    if result.get("part") is not None:
        return join_part(result["part"], sent)
    return as_value(sent, layout=layout)


# -- files -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    """What an ``.npz`` of :func:`to_npz` holds: a value (None for none) and the fields beside it.

    From an older call log the value may be a bare float32 vector (no layout was stored).
    """

    value: Any
    fields: dict[str, Any] = field(default_factory=dict)


def to_npz(path: str | os.PathLike[str], value: Any, *, fields: Mapping[str, Any] | None = None) -> None:
    """Write *value* (None for none) and *fields* (JSON-able, or arrays) to *path*: atomic, 0600."""
    meta, arrays = encode(value) if value is not None else (None, {})
    fields = dict(fields or {})
    header = {"format": NPZ_FORMAT, "value": meta,
              "fields": {k: v for k, v in fields.items() if not isinstance(v, np.ndarray)}}
    members = {f"{_VALUE}{k}": v for k, v in arrays.items()}
    members.update({f"{_FIELD}{k}": v for k, v in fields.items() if isinstance(v, np.ndarray)})
    text = json.dumps(header, default=_json_scalar)
    with atomic_writer(path, mode=0o600) as fh:
        np.savez(fh, **{_HEADER: np.array(text)}, **members)


def read_npz(path: str | os.PathLike[str]) -> Stored:
    """The value and fields of :func:`to_npz`'s file, or of an older form; :class:`CodecError`
    naming the file if it is damaged or of no known form."""
    try:
        loaded = np.load(Path(path), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CodecError("it holds one array, not a medsyft .npz")
        with loaded as npz:
            if _HEADER not in npz.files:
                return Stored(*legacy.read(npz))
            header = json.loads(str(npz[_HEADER]))
            arrays = {k: npz[k] for k in npz.files if k != _HEADER}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, PrivacyError) as exc:
        raise CodecError(f"{path} is damaged or not a medsyft file ({exc})") from exc
    return _stored(path, header, arrays)


def from_npz(path: str | os.PathLike[str]) -> Any:
    """The value of :func:`to_npz`'s file (or of an older form)."""
    return read_npz(path).value


def _stored(path: str | os.PathLike[str], header: Any, arrays: dict[str, np.ndarray]) -> Stored:
    if not (isinstance(header, dict) and header.get("format") == NPZ_FORMAT
            and isinstance(header.get("fields"), dict)):
        raise CodecError(f"{path} is not a {NPZ_FORMAT} file: its header is {str(header)[:80]!r}")
    fields = dict(header["fields"])
    fields.update({k[len(_FIELD):]: v for k, v in arrays.items() if k.startswith(_FIELD)})
    meta = header.get("value")
    if meta is None:
        return Stored(None, fields)
    try:
        value = decode(meta, {k[len(_VALUE):]: v for k, v in arrays.items() if k.startswith(_VALUE)})
    except (ValueError, PrivacyError) as exc:  # CodecError is a ValueError
        raise CodecError(f"{path} is damaged ({exc})") from exc
    return Stored(value, fields)


def _json_scalar(value: Any) -> Any:
    """numpy scalars as Python numbers (a result's counts may be numpy ints or floats)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

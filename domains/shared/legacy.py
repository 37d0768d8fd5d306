"""The stored forms medsyft wrote before :mod:`domains.shared.codec`, still read; none is written.

Each decodes to the value its current form gives. Call log results (``call-N.npz``) held a
``__meta__`` JSON of the result's fields and:

- ``w::NAME`` arrays: the model as named arrays (read as a :class:`PlainModel`);
- ``w::__flat__``: the model as one bare float32 vector (read as that vector: no layout was
  stored; the orchestrator reads it with the layout of the model it sent);
- an ``encrypted`` entry in the metadata beside ``packed::`` (the ciphertexts packed into one
  uint8 array) or ``c::I`` (one array per ciphertext chunk): an encrypted update;
- ``a::NAME``: other array fields (a release share).

Checkpoints (``global-R.npz``) held an ``__encrypted__`` JSON and ``chunk_I`` arrays (the
encrypted sum), a ``__signed_round__`` JSON (call, each part's record, the recoveries) and
``part_I`` arrays (a roster round), or only the model's named arrays (plaintext).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from domains.shared.errors import CodecError
from domains.shared.kinds import kind_for
from domains.shared.plain_model import PlainModel
from domains.shared.signed_round import SignedRound
from privacy.he import EncryptedVector
from privacy.secagg_messages import MaskRecovery

_LEDGER = "__meta__"
_WEIGHT, _FLAT, _ARRAY, _CHUNK, _PACKED = "w::", "__flat__", "a::", "c::", "packed::"
_ENCRYPTED, _CHECKPOINT_CHUNK = "__encrypted__", "chunk_"
_SIGNED, _PART = "__signed_round__", "part_"


def read(npz: Any) -> tuple[Any, dict[str, Any]]:
    """``(value, fields)`` of an older ``.npz`` (an open ``NpzFile``); fields only from a call log."""
    files = set(npz.files)
    if _LEDGER in files:
        return _ledger_result(npz)
    if _ENCRYPTED in files:
        meta = _json(npz, _ENCRYPTED)
        count = sum(1 for k in files if k.startswith(_CHECKPOINT_CHUNK))
        chunks = [npz[f"{_CHECKPOINT_CHUNK}{i}"].tobytes() for i in range(count)]
        return EncryptedVector.from_dict({**meta, "chunks": chunks}), {}
    if _SIGNED in files:
        return _signed_round(npz), {}
    if not files:
        raise CodecError("it holds no arrays")
    return PlainModel.from_weights({k: npz[k] for k in npz.files}), {}


def _ledger_result(npz: Any) -> tuple[Any, dict[str, Any]]:
    fields = _json(npz, _LEDGER)
    weights = {k[len(_WEIGHT):]: npz[k] for k in npz.files if k.startswith(_WEIGHT)}
    fields.update({k[len(_ARRAY):]: npz[k] for k in npz.files if k.startswith(_ARRAY)})
    encrypted = fields.pop("encrypted", None)
    if encrypted is not None:
        if not isinstance(encrypted, dict):
            raise CodecError("its encrypted update has no metadata")
        chunks: Any = npz[_PACKED] if _PACKED in npz.files else [
            npz[k].tobytes() for k in sorted((k for k in npz.files if k.startswith(_CHUNK)),
                                             key=lambda k: int(k[len(_CHUNK):]))]
        return EncryptedVector.from_dict({**encrypted, "chunks": chunks}), fields
    if _FLAT in weights:
        return np.asarray(weights[_FLAT], dtype=np.float32), fields
    return (PlainModel.from_weights(weights) if weights else None), fields


def _signed_round(npz: Any) -> SignedRound:
    meta = _json(npz, _SIGNED)
    records, recoveries = meta.get("parts"), meta.get("recoveries")
    if not (isinstance(records, list) and isinstance(recoveries, list) and isinstance(meta.get("call"), int)):
        raise CodecError("its signed round lacks the call, the parts or the recoveries")
    found = tuple(kind_for(r).decode(r, {"chunks": npz[f"{_PART}{i}"]}) for i, r in enumerate(records))
    return SignedRound(call=int(meta["call"]), parts=found,
                       recoveries=tuple(MaskRecovery.from_dict(r) for r in recoveries))


def _json(npz: Any, key: str) -> dict[str, Any]:
    data = json.loads(str(npz[key]))
    if not isinstance(data, dict):
        raise CodecError(f"its {key} entry is not a JSON object")
    return data

"""The torch-free types both rooms share: what a hospital and a data scientist exchange and store.

``domains/`` is what a hospital runs and ``orchestrator/`` what a data scientist runs; the values
that cross between them live here, so that both can import them without torch and without the
orchestrator's room ever being imported by a datasite. (The job spec and the metric counts will
move here too.)

- :class:`PlainModel` - a plaintext model: one float32 vector and the layout that names its pieces
- :class:`SignedRound` - a roster job's global model: the signed parts of one call and recoveries
- :mod:`domains.shared.codec` - the one stored and one wire form of every value kind: plaintext
  models, :class:`privacy.he.EncryptedVector`, :class:`privacy.secagg_messages.SignedPart` and
  :class:`SignedRound` (``encode``/``decode``, ``to_wire``/``from_wire``, ``to_npz``/``from_npz``)
- :class:`CodecError` - a value in no form the codec reads

Names are imported on first use, so importing :mod:`domains.shared.errors` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CodecError": "domains.shared.errors",
    "Layout": "domains.shared.plain_model",
    "PlainModel": "domains.shared.plain_model",
    "SignedRound": "domains.shared.signed_round",
    "Stored": "domains.shared.codec",
    "decode": "domains.shared.codec",
    "encode": "domains.shared.codec",
    "from_npz": "domains.shared.codec",
    "from_wire": "domains.shared.codec",
    "read_npz": "domains.shared.codec",
    "to_npz": "domains.shared.codec",
    "to_wire": "domains.shared.codec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'domains.shared' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__

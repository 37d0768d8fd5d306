"""A PySyft 0.9.5 client-side speed-up: each distinct endpoint signature is deserialized once.

Every login downloads the user's whole API: about 780 endpoints, each with an
``inspect.Signature`` serialized on its own. Deserializing the signatures is about two thirds of
the 0.34 s of CPU that one API fetch costs the client here (measured with cProfile on a real
datasite), and every datasite of one PySyft version sends the same bytes for the same endpoint.
The orchestrator logs in to every site, and a demo or an owner's tool in one process logs in
several times: the same signatures are rebuilt again and again.

:func:`apply` puts a memo in front of PySyft's signature deserializer, keyed by the serialized
bytes. A signature and its parameters are immutable, so one object can stand for equal bytes
everywhere; a signature with a default value that could be changed in place (a list, say) is
not memoized. Nothing about what the server accepts changes: signatures only shape the client's
argument checks. ``MEDSYFT_SYFT_SPEEDUPS=0`` turns it off, as it does the datasite's.
"""

from __future__ import annotations

import enum
import inspect
import os
import threading
from collections.abc import Callable
from typing import Any

_CANONICAL_NAME = "inspect_Signature"
_DESERIALIZE = 2  # the deserializer's place in PySyft's serde tuple (syft.serde.recursive)
MAX_ENTRIES = 20_000  # far above one API's ~800 signatures; a bound, not a tuning knob
_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, frozenset, enum.Enum, type)

_lock = threading.Lock()
_applied = False


def apply() -> bool:
    """Memoize signature deserialization in this process (once); False when switched off or when
    PySyft's registry is not laid out as 0.9.5's."""
    global _applied
    if os.environ.get("MEDSYFT_SYFT_SPEEDUPS", "1") == "0":
        return False
    with _lock:
        if _applied:
            return True
        from syft.types.syft_object_registry import SyftObjectRegistry

        versions = SyftObjectRegistry.__object_serialization_registry__.get(_CANONICAL_NAME, {})
        if 1 not in versions or not callable(versions[1][_DESERIALIZE]):
            return False
        entry = versions[1]
        versions[1] = (*entry[:_DESERIALIZE], memoized(entry[_DESERIALIZE]), *entry[_DESERIALIZE + 1:])
        _applied = True
        return True


def memoized(deserialize: Callable[[bytes], inspect.Signature]) -> Callable[[bytes], inspect.Signature]:
    """*deserialize* behind a memo of the signatures it may share (see :func:`shareable`)."""
    cache: dict[bytes, inspect.Signature] = {}

    def deserialize_signature(blob: bytes) -> inspect.Signature:
        key = bytes(blob)
        hit = cache.get(key)
        if hit is not None:
            return hit
        signature = deserialize(blob)
        if shareable(signature) and len(cache) < MAX_ENTRIES:
            cache[key] = signature  # a dict store is atomic: threads logging in at once are fine
        return signature

    deserialize_signature.cache = cache  # type: ignore[attr-defined]  # for tests
    return deserialize_signature


def shareable(signature: inspect.Signature) -> bool:
    """Whether one object may stand for every copy: no default value that can change in place."""
    return all(_immutable(p.default) for p in signature.parameters.values())


def _immutable(value: Any) -> bool:
    if value is inspect.Parameter.empty or isinstance(value, _IMMUTABLE):
        return True
    return isinstance(value, tuple) and all(_immutable(v) for v in value)

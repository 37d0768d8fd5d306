"""Exact speed-ups of PySyft 0.9.5's per-call path, applied inside the datasite process only.

A federated round pays PySyft's fixed cost per call on every datasite, and on a loaded
machine that cost is a large part of the round (docs/performance.md). A profile of an idle
datasite serving approved calls put a quarter of PySyft's CPU in one function:
``ObjectStash.get_role``, which PySyft calls for nearly every stash read to learn the
caller's role, and which builds a generic query and deserializes the caller's whole
``User`` row (pydantic validation included) only to read its ``role`` field. Another tenth
went to printing numpy arrays in full: PySyft stores ``repr()`` and ``str()`` of every value it
wraps, and numpy prints up to 1000 elements before it summarizes (a labels asset of a few
hundred images is printed whole, twice, on every call).

A profile of a roster job's round (three signed parts, 1.2 MB, in the call's payload) then put
about 0.45 s of every call in ``attach_attribute_to_syft_object``: PySyft walks every service
result to stamp server and client ids onto the syft objects in it, and a payload comes back from
its blob store as a ``SyftObjectRetrieval`` whose ``syft_object`` field is the serialized payload
as ``bytes``: a ``Sequence``, so the walk tests every one of its 1.2 million bytes with a
pydantic ``isinstance``. It does so three times per call (the input policy's two checks and the
argument's resolution each read the payload).

Each change here returns exactly what PySyft would; none caches anything that could go
stale (a role change or a revoked approval takes effect on the very next call, as before).
They apply only to the PySyft version they were written against, and
``MEDSYFT_SYFT_SPEEDUPS=0`` turns them off (``benchmarks/syft_call_cost.py`` compares both
in one run).
"""

from __future__ import annotations

import logging
import os
from typing import Any

SUPPORTED_SYFT = "0.9.5"
PRINT_THRESHOLD = 64  # numpy summarizes longer arrays in repr/str (its default is 1000)
ENV_SWITCH = "MEDSYFT_SYFT_SPEEDUPS"

log = logging.getLogger(__name__)


def enabled() -> bool:
    """Whether the environment asks for the speed-ups (default: yes)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "false", "no", "off"}


def apply() -> list[str]:
    """Install the speed-ups into this process's PySyft; returns the names of those applied.

    Does nothing (and says why in the log) when switched off or under another PySyft version,
    since each change mirrors a 0.9.5 function body.
    """
    if not enabled():
        log.info("PySyft speed-ups off (%s=0)", ENV_SWITCH)
        return []
    import syft

    if syft.__version__ != SUPPORTED_SYFT:
        log.warning("PySyft %s is not %s: datasite speed-ups not applied", syft.__version__, SUPPORTED_SYFT)
        return []
    import numpy as np
    import syft.service.service as service_module
    import syft.types.syft_object as syft_object_module
    from syft.store.db.stash import ObjectStash

    np.set_printoptions(threshold=PRINT_THRESHOLD)
    if not getattr(ObjectStash.get_role, "_medsyft", False):
        ObjectStash.get_role = _fast_get_role(ObjectStash.get_role)
    if not getattr(syft_object_module.attach_attribute_to_syft_object, "_medsyft", False):
        fast = _fast_attach_attribute()
        # the recursion resolves the module global, and service.py imported the name itself
        syft_object_module.attach_attribute_to_syft_object = fast
        service_module.attach_attribute_to_syft_object = fast
    return ["numpy print threshold", "ObjectStash.get_role", "attach_attribute_to_syft_object"]


# Sequences whose items are ints or one-character strings, never a SyftBaseObject.
_FLAT = (bytes, bytearray, memoryview, str)


def _fast_attach_attribute() -> Any:
    """``attach_attribute_to_syft_object`` that does not iterate bytes or strings item by item.

    PySyft 0.9.5's body, unchanged but for its first line: an ``Ok``/``Err`` is unwrapped, a
    mapping's values, a sequence's items or the value itself are visited, and on every visited
    ``SyftBaseObject`` each attribute is set and each field is walked in turn. Iterating bytes,
    a bytearray, a memoryview or a string yields ints or one-character strings, on which the
    body does nothing; returning at once for them sets exactly the same attributes.
    """
    from collections.abc import Iterable, Mapping, Sequence

    from syft.types.result import Err, Ok
    from syft.types.syft_object import SyftBaseObject

    def attach_attribute_to_syft_object(result: Any, attr_dict: dict[str, Any]) -> None:
        if isinstance(result, _FLAT):
            return
        iterator: Iterable
        if isinstance(result, Ok):
            iterator = (result.ok(),)
        elif isinstance(result, Err):
            iterator = (result.err(),)
        elif isinstance(result, Mapping):
            iterator = result.values()
        elif isinstance(result, Sequence):
            iterator = result
        else:
            iterator = (result,)
        for _object in iterator:
            if isinstance(_object, SyftBaseObject):
                for attr_name, attr_value in attr_dict.items():
                    setattr(_object, attr_name, attr_value)
                for field in _object.model_fields:  # PySyft: model_fields.keys()
                    attach_attribute_to_syft_object(getattr(_object, field), attr_dict)

    attach_attribute_to_syft_object._medsyft = True  # type: ignore[attr-defined]
    return attach_attribute_to_syft_object


def _fast_get_role(original: Any) -> Any:
    """``ObjectStash.get_role`` reading only the ``role`` field of the caller's User row.

    SQLite stores only: on PostgreSQL PySyft's own ``get_role`` runs (*original*), since the
    select below, built as for SQLite, fails there (psycopg2 "can't adapt type").

    PySyft 0.9.5's body: if there is no User table the caller is a guest; otherwise select the
    User row whose ``verify_key`` equals the credentials (no permission filter), a guest if none,
    else ``row_as_obj(row).role``, i.e. ``deserialize_json(fields)`` of the whole row. The same
    select with the same filter, of the ``fields`` column, and ``ServiceRole[fields["role"]]``
    (how ``deserialize_json`` reads an enum) gives the same role without building a ``User``.
    """
    import sqlalchemy as sa
    from sqlalchemy.exc import DatabaseError
    from syft.serde.json_serde import deserialize_json
    from syft.service.user.user_roles import ServiceRole
    from syft.store.db.errors import StashDBException
    from syft.store.db.schema import SQLiteBase
    from syft.store.db.stash import with_session

    @with_session
    def get_role(self: Any, credentials: Any, session: Any = None) -> ServiceRole:
        if not self._is_sqlite():
            return original(self, credentials, session=session)
        base = SQLiteBase
        table = base.metadata.tables.get("User")
        if table is None:  # as PySyft: no User table (stashes made in tests) means a guest
            return ServiceRole.GUEST
        stmt = sa.select(table.c.fields).where(self._get_field_filter("verify_key", credentials, table=table))
        try:
            row = session.execute(stmt).first()
        except DatabaseError as e:  # as PySyft's Query.execute
            raise StashDBException.from_sqlalchemy_error(e) from e
        if row is None:
            return ServiceRole.GUEST
        return deserialize_json(row[0]["role"], ServiceRole)

    get_role._medsyft = True
    return get_role

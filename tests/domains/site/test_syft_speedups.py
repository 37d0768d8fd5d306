"""The datasite's PySyft speed-ups return exactly what PySyft 0.9.5 would.

Runs a real in-process PySyft server (``sy.orchestra.launch`` without a port) and compares
the replaced ``ObjectStash.get_role`` with PySyft's own on the same stash, for every kind of
caller, before and after a role change, and the replaced ``attach_attribute_to_syft_object`` with
PySyft's own on real syft objects (a blob retrieval of a serialized payload among them). Nothing
is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from domains.site import syft_speedups
from domains.site.quiet import quiet

APPLIED = ["numpy print threshold", "ObjectStash.get_role", "attach_attribute_to_syft_object"]


@pytest.fixture
def restored() -> Iterator[None]:
    """apply() changes process-wide state: give the other tests PySyft's and numpy's own back."""
    import syft.service.service as service_module
    import syft.types.syft_object as syft_object_module
    from syft.store.db.stash import ObjectStash

    original, printing = ObjectStash.get_role, np.get_printoptions()
    attach = syft_object_module.attach_attribute_to_syft_object
    yield
    ObjectStash.get_role = original
    syft_object_module.attach_attribute_to_syft_object = attach
    service_module.attach_attribute_to_syft_object = attach
    np.set_printoptions(**printing)


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    import syft as sy

    with quiet():
        server = sy.orchestra.launch(name="speedups-test", reset=True)
    yield server
    with quiet():
        server.land()


def test_fast_get_role_equals_pysyfts_own(server: Any, restored: None) -> None:
    from syft.server.credentials import SyftSigningKey
    from syft.service.user.user_roles import ServiceRole
    from syft.store.db.stash import ObjectStash

    with quiet():
        admin = server.login(email="info@openmined.org", password="changethis")
        admin.register(name="ds", email="ds@lab.example", password="pw-123456", password_verify="pw-123456")
        scientist = server.login(email="ds@lab.example", password="pw-123456")
    stash = server.python_server.services.user.stash
    original = ObjectStash.get_role
    assert syft_speedups.apply() == APPLIED
    fast = ObjectStash.get_role
    assert fast is not original

    def both(key: Any) -> tuple[ServiceRole, ServiceRole]:
        return original(stash, key), fast(stash, key)

    stranger = SyftSigningKey.generate().verify_key
    assert both(admin.credentials.verify_key) == (ServiceRole.ADMIN, ServiceRole.ADMIN)
    assert both(scientist.credentials.verify_key) == (ServiceRole.DATA_SCIENTIST,) * 2
    assert both(stranger) == (ServiceRole.GUEST, ServiceRole.GUEST)

    # a role change is seen on the very next lookup: nothing is cached
    with quiet():
        user = next(u for u in admin.users.get_all() if u.email == "ds@lab.example")
        admin.users.update(uid=user.id, role=ServiceRole.DATA_OWNER)
    assert both(scientist.credentials.verify_key) == (ServiceRole.DATA_OWNER,) * 2
    with quiet():
        admin.users.update(uid=user.id, role=ServiceRole.DATA_SCIENTIST)
    assert both(scientist.credentials.verify_key) == (ServiceRole.DATA_SCIENTIST,) * 2

    # logins after the swap get the API their role allows: PySyft builds it from get_role
    with quiet():
        admin_again = server.login(email="info@openmined.org", password="changethis")
        scientist_again = server.login(email="ds@lab.example", password="pw-123456")
        assert len(admin_again.api.services.user.get_all()) == 2
        with pytest.raises(AttributeError, match="permission"):
            scientist_again.api.services.user.get_all()
    assert syft_speedups.apply() == APPLIED  # idempotent
    assert ObjectStash.get_role is fast


def _stamped(tree: Any) -> list[tuple[str, Any, Any]]:
    """Every syft object reachable the way PySyft walks, with the two attributes it stamps.

    PySyft visits the items of the result and, inside syft objects, their fields; it does not
    descend into a list or dict that is itself an item.
    """
    from syft.types.syft_object import SyftBaseObject

    out: list[tuple[str, Any, Any]] = []

    def visit(value: Any) -> None:
        if isinstance(value, bytes | str):
            return
        if isinstance(value, dict):
            items = list(value.values())
        else:
            items = list(value) if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, SyftBaseObject):
                out.append((type(item).__name__, getattr(item, "syft_server_location", None),
                            getattr(item, "syft_client_verify_key", None)))
                for field in type(item).model_fields:
                    visit(getattr(item, field))

    visit(tree)
    return out


def _payload_tree() -> Any:
    """Syft objects nested as a service result nests them, one of them holding serialized bytes."""
    import syft as sy
    from syft.serde.serialize import _serialize
    from syft.store.blob_storage import SyftObjectRetrieval
    from syft.types.result import Ok
    from syft.types.uid import UID

    blob = _serialize({"parts": [np.arange(100_000, dtype=np.uint8).tobytes()]}, to_bytes=True)
    retrieval = SyftObjectRetrieval(syft_object=blob, file_name="payload")
    action = sy.ActionObject.from_obj({"call": 3, "weights": b"\x00" * 1000, "note": "text"})
    return [Ok(retrieval), [retrieval, action, UID(), "a string", b"bytes", {"not walked": action}],
            {"action": action, "text": "a string"}]


def test_fast_attach_attribute_stamps_exactly_what_pysyft_does(restored: None) -> None:
    import syft.service.service as service_module
    import syft.types.syft_object as syft_object_module
    from syft.server.credentials import SyftSigningKey
    from syft.types.uid import UID

    original = syft_object_module.attach_attribute_to_syft_object
    syft_speedups.apply()
    fast = syft_object_module.attach_attribute_to_syft_object
    assert fast is not original and service_module.attach_attribute_to_syft_object is fast
    attrs = {"syft_server_location": UID(), "syft_client_verify_key": SyftSigningKey.generate().verify_key}
    # PySyft's own walk first, then the fast one, each on a fresh tree of the same shape
    theirs, ours = _payload_tree(), _payload_tree()
    syft_object_module.attach_attribute_to_syft_object = original  # its recursion uses the global
    for result in theirs:
        original(result, attrs)
    syft_object_module.attach_attribute_to_syft_object = fast
    for result in ours:
        fast(result, attrs)
    stamped = [_stamped(result.ok() if i == 0 else result) for i, result in enumerate(ours)]
    assert stamped == [_stamped(result.ok() if i == 0 else result) for i, result in enumerate(theirs)]
    stamped = [row for rows in stamped for row in rows]
    names = {name for name, _, _ in stamped}
    assert "SyftObjectRetrieval" in names and any(n.endswith("ActionObject") for n in names)
    assert all(loc == attrs["syft_server_location"] for _, loc, _ in stamped)


def test_numpy_summarizes_long_arrays_after_apply(restored: None) -> None:
    syft_speedups.apply()
    assert "..." in repr(np.arange(500)) and len(repr(np.arange(500))) < 200
    assert repr(np.arange(10)) == "array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])"  # short ones unchanged


def test_switched_off_or_other_pysyft_changes_nothing(monkeypatch: pytest.MonkeyPatch,
                                                      restored: None) -> None:
    import syft
    from syft.store.db.stash import ObjectStash

    original = ObjectStash.get_role
    monkeypatch.setenv(syft_speedups.ENV_SWITCH, "0")
    assert syft_speedups.apply() == [] and ObjectStash.get_role is original
    monkeypatch.setenv(syft_speedups.ENV_SWITCH, "1")
    monkeypatch.setattr(syft, "__version__", "0.9.6")
    assert syft_speedups.apply() == [] and ObjectStash.get_role is original
    assert np.get_printoptions()["threshold"] == 1000

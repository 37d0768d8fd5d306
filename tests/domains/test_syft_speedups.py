"""The datasite's PySyft speed-ups return exactly what PySyft 0.9.5 would.

Runs a real in-process PySyft server (``sy.orchestra.launch`` without a port) and compares
the replaced ``ObjectStash.get_role`` with PySyft's own on the same stash, for every kind of
caller, before and after a role change. Nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from domains import syft_speedups
from domains.quiet import quiet


@pytest.fixture
def restored() -> Iterator[None]:
    """apply() changes process-wide state: give the other tests PySyft's and numpy's own back."""
    from syft.store.db.stash import ObjectStash

    original, printing = ObjectStash.get_role, np.get_printoptions()
    yield
    ObjectStash.get_role = original
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
    assert syft_speedups.apply() == ["numpy print threshold", "ObjectStash.get_role"]
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
    assert syft_speedups.apply() == ["numpy print threshold", "ObjectStash.get_role"]  # idempotent
    assert ObjectStash.get_role is fast


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

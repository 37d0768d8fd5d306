"""A guest, a stranger, a second scientist and a password guesser against a real datasite.

Each check is an attack that worked on PySyft 0.9.5 as it ships (issue 9): guests listed
datasets and mocks; anyone holding an output's id fetched its "mock" with ``get_pointer``,
which here is the approved code run on the mock inputs and so holds whatever the code read
itself (this code reads the datasite's environment); login errors told a missing email from
a wrong password, without limit; the datasite kept its admin password and signing key in
``os.environ``. The datasite is a real ``python -m domains.site.server`` process, deployed from a
shell that exports secrets of its own; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from support import deploy_site, login, run_cli, submit_code

from domains.data.metadata import datasite_metadata
from domains.site import syft_guard
from domains.site.connection import admin_client, quiet
from domains.site.server import SECRET_VARIABLES

pytestmark = pytest.mark.slow

SHELL_SECRET = "exported-by-the-deploying-shell"
# Approved code that reads what it can of the process: os.environ and the start-up environment.
SNOOP = '''
@sy.syft_function_single_use(images=asset)
def snoop(images):
    import os
    with open("/proc/self/environ", "rb") as fh:
        initial = fh.read().decode(errors="replace")
    return {"environ": dict(os.environ), "initial": initial, "n": len(images)}
'''


@dataclass
class Hostile:
    site: Any
    ana: Any  # the scientist whose approved call made the output
    bob: Any  # another scientist of the same datasite
    guest: Any  # an account with PySyft's GUEST role
    stranger: Any  # an unauthenticated client (PySyft's login_as_guest)
    output_id: Any
    asset_id: Any
    value: dict[str, Any]


def refused(call: Callable[[], Any]) -> str:
    """The message PySyft's client raises for a refused call (the test fails if it succeeds)."""
    with quiet(), pytest.raises(Exception) as caught:  # PySyft raises its own types
        call()
    return str(caught.value)


def login_error(url: str, email: str, password: str) -> str:
    return refused(lambda: login(url, email, password))


def add_account(site: Any, email: str, role: str) -> Any:
    """A logged-in client for a new account with PySyft's *role*, created by the admin."""
    from syft.service.user.user_roles import ServiceRole

    password = "Hostile-test-pw-1"
    with quiet():
        admin_client(site.data_dir).users.create(email=email, name=email.split("@")[0], password=password,
                                                 password_verify=password, role=ServiceRole[role])
    return login(site.url, email, password)


def approve_custom(site: Any, request_id: str) -> None:
    path = str(site.data_dir.path)
    assert run_cli("domain", "policy", "--data-dir", path, "--allow-custom-code", "on").code == 0
    approved = run_cli("domain", "approve", request_id, "--data-dir", path, "--allow-custom-code")
    assert approved.code == 0, approved.err


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    tmp = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as shell:
        shell.setenv("DEFAULT_ROOT_PASSWORD", SHELL_SECRET)
        shell.setenv("SERVER_PRIVATE_KEY", SHELL_SECRET)
        site = deploy_site(tmp / "site", "hostile")
    try:
        site.publish(name="xrays", synthetic_count=20)
        ana = add_account(site, "ana@uni.example", "DATA_SCIENTIST")
        request = submit_code(ana, SNOOP, dataset="xrays", function="snoop", tmp=tmp)
        approve_custom(site, str(request.id))
        with quiet():
            asset = ana.datasets["xrays"].assets["images"]
            output = ana.code.snoop(images=asset)
            value = output.get()
        yield Hostile(site, ana, add_account(site, "bob@uni.example", "DATA_SCIENTIST"),
                      add_account(site, "gus@uni.example", "GUEST"), _stranger(site.url),
                      output.id, asset.action_id, value)
    finally:
        site.stop()


def _stranger(url: str) -> Any:
    with quiet():
        import syft as sy

        return sy.login_as_guest(url=url)


def test_guests_and_strangers_see_server_metadata_only(hostile: Hostile) -> None:
    for client in (hostile.guest, hostile.stranger):
        action = client.api.services.action
        assert "datasets are visible to data scientists of this datasite only" in refused(
            client.api.services.dataset.get_all)
        for call in (partial(action.get_mock, uid=hostile.asset_id),
                     partial(action.get_pointer, uid=hostile.output_id),
                     partial(action.get_mock, uid=hostile.output_id),
                     partial(action.get, uid=hostile.output_id)):
            assert "data objects are visible to data scientists" in refused(call)
        assert "outputs are visible" in refused(client.api.services.output.get_all)
        assert "code requests are visible" in refused(client.api.services.code.get_all)
        with quiet():
            assert client.api.services.metadata.get_metadata().name == "hostile"
    assert (datasite_metadata(hostile.site.url) or {}).get("name") == "hostile"


def test_self_signup_stays_off(hostile: Hostile) -> None:
    outcome = refused(lambda: _register(hostile.stranger))
    assert "no permission to create an account" in outcome.lower()
    assert (datasite_metadata(hostile.site.url) or {}).get("signup_enabled") is False
    login_error(hostile.site.url, "eve@evil.example", "Password-123")


def _register(client: Any) -> Any:
    outcome = client.register(name="eve", email="eve@evil.example", password="Password-123",
                              password_verify="Password-123")
    if "no permission" in str(outcome).lower():  # PySyft returns some refusals instead of raising
        raise RuntimeError(str(outcome))
    return outcome


def test_scientist_still_sees_datasets_mocks_and_own_output(hostile: Hostile) -> None:
    with quiet():
        names = [d.name for d in hostile.ana.datasets]
        mock = hostile.ana.datasets["xrays"].assets["images"].mock
        again = hostile.ana.api.services.action.get_pointer(uid=hostile.output_id).syft_action_data
        requests = list(hostile.ana.requests)
    assert names == ["xrays"] and mock.shape == (20, 1, 28, 28)
    assert hostile.value["n"] == 20 and again["n"] == 20
    assert [r.code.service_func_name for r in requests] == ["snoop"]


def test_scientist_cannot_fetch_another_scientists_output(hostile: Hostile) -> None:
    from syft.service.action.action_object import Action, ActionType
    from syft.types.uid import LineageID

    action = hostile.bob.api.services.action
    refused(lambda: action.get(uid=hostile.output_id))  # PySyft's own read check: "not found"
    assert syft_guard.OWN_OUTPUTS_ONLY in refused(lambda: action.get_pointer(uid=hostile.output_id))
    keys = Action(path="builtins.dict", op="keys", remote_self=LineageID(hostile.output_id),
                  args=[], kwargs={}, action_type=ActionType.METHOD)
    assert syft_guard.READABLE_ONLY in refused(lambda: action.execute(action=keys))
    with quiet():
        assert list(hostile.bob.requests) == [] and hostile.bob.api.services.output.get_all() == []


def test_nobody_gets_an_outputs_mock(hostile: Hostile) -> None:
    from syft.service.action.action_object import TwinMode

    for client in (hostile.ana, hostile.bob):
        action = client.api.services.action
        assert syft_guard.ASSET_MOCKS_ONLY in refused(partial(action.get_mock, uid=hostile.output_id))
        for mode in (TwinMode.MOCK, TwinMode.NONE):
            assert syft_guard.ASSET_MOCKS_ONLY in refused(
                partial(action.get, uid=hostile.output_id, twin_mode=mode))
    with quiet():  # and the datasite did not keep it: the owner sees an empty mock
        twin = admin_client(hostile.site.data_dir).api.services.action.get(
            uid=hostile.output_id, twin_mode=TwinMode.NONE)
        assert twin.mock.syft_action_data is None and twin.private.syft_action_data["n"] == 20


def test_datasite_process_holds_no_secret_in_its_environment(hostile: Hostile) -> None:
    """The start-up environment of the process (``/proc``), and what approved code reads of its
    own (custom code now runs in a sandbox; ``os.environ`` of the datasite process itself is
    checked in tests/domains/site/test_syft_guard.py)."""
    data_dir = hostile.site.data_dir
    pid = int(data_dir.file("datasite.pid").read_text().split()[0])  # line 1: the pid
    secrets = [SHELL_SECRET, data_dir.read_credentials().password, data_dir.read_server_key()]
    initial = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    for seen in (initial, hostile.value["initial"], repr(hostile.value["environ"])):
        assert not any(name in seen for name in SECRET_VARIABLES)
        assert not any(secret in seen for secret in secrets)
    log = data_dir.file("datasite.log").read_text()
    assert "medsyft: PySyft access guards: guests see metadata only" in log


def test_login_errors_do_not_tell_a_missing_email_from_a_wrong_password(hostile: Hostile) -> None:
    url = hostile.site.url
    missing = login_error(url, "nobody@uni.example", "Wrong-password-1")
    wrong = login_error(url, "ana@uni.example", "Wrong-password-1")
    assert missing == wrong and "Invalid credentials" in wrong
    admin_email = hostile.site.data_dir.read_credentials().email
    with quiet():
        answers = {str(hostile.stranger.connection.forgot_password(email=e).message)
                   for e in ("nobody@uni.example", "ana@uni.example", admin_email)}
    assert answers == {syft_guard.RESET_BY_OWNER}


def test_repeated_failures_lock_out_even_the_right_password(hostile: Hostile) -> None:
    site = hostile.site
    add_account(site, "carol@uni.example", "DATA_SCIENTIST")
    for _ in range(syft_guard.MAX_FAILURES["email"]):
        assert "Invalid credentials" in login_error(site.url, "carol@uni.example", "Wrong-1")
    assert syft_guard.THROTTLED in login_error(site.url, "carol@uni.example", "Hostile-test-pw-1")
    assert login(site.url, "ana@uni.example", "Hostile-test-pw-1") is not None  # one account only
    audit = site.audit(sync=False)
    lockouts = audit[audit["event"] == "login-throttled"]
    assert list(lockouts["subject"]) == ["carol@uni.example"]
    assert list(lockouts["actor"]) == ["127.0.0.1"] and '"scope": "email"' in lockouts["details"].iloc[0]


def test_failures_from_one_address_lock_it_out(tmp_path: Path) -> None:
    """Its own datasite: the address locked here is the one every other test logs in from."""
    site = deploy_site(tmp_path / "site", "guessed")
    try:
        password = site.add_scientist("dee@uni.example")
        for i in range(syft_guard.MAX_FAILURES["address"]):
            assert "Invalid credentials" in login_error(site.url, f"guess{i}@uni.example", "Wrong-1")
        assert syft_guard.THROTTLED in login_error(site.url, "dee@uni.example", password)
        audit = site.audit(sync=False)
        lockouts = audit[audit["event"] == "login-throttled"]
        assert list(lockouts["subject"]) == ["127.0.0.1"]
        assert '"scope": "address"' in lockouts["details"].iloc[0]
    finally:
        site.stop()

"""The orchestrator's two PySyft client shortcuts, against a real datasite process.

- A second login deserializes no signature anew (``domains.shared.syft_client_speedups``), and
  the client it gives works.
- A requested function joins the client's API without a fetch of the whole API
  (``orchestrator.syft_api``): the endpoint equals the one PySyft's own fetch builds, and once
  the owner approves, the call through it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import Scientist, login, owner_images, run_cli

from domains.site.connection import quiet
from orchestrator.syft_api import add_code_endpoint

pytestmark = pytest.mark.slow

SOURCE = '''
@sy.syft_function_single_use(images=asset)
def brightest_pixel(images):
    return float(images.max())
'''


def _signature_memo() -> dict[bytes, Any]:
    from syft.types.syft_object_registry import SyftObjectRegistry

    deserialize = SyftObjectRegistry.__object_serialization_registry__["inspect_Signature"][1][2]
    memo: dict[bytes, Any] = deserialize.cache
    return memo


def test_a_second_login_rebuilds_no_signature(site: Any, scientist: Scientist) -> None:
    site.publish(name="memo-set", synthetic_count=20)
    memo = _signature_memo()  # the fixture's login applied it
    before = len(memo)
    assert before > 100  # one API's signatures
    again = login(site.url, scientist.email, scientist.password)
    assert len(memo) == before
    with quiet():
        assert "memo-set" in [d.name for d in again.datasets.get_all()]


def test_a_requested_function_is_callable_without_fetching_the_api(
        site: Any, scientist: Scientist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    site.publish(name="endpoint-set", synthetic_count=20)
    client = login(site.url, scientist.email, scientist.password)
    path = tmp_path / "scientist_brightest.py"
    path.write_text("import syft as sy\n" + SOURCE)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with quiet():
        module.asset = client.datasets["endpoint-set"].assets["images"]  # type: ignore[attr-defined]
        spec.loader.exec_module(module)
        function = module.brightest_pixel
        request = client.code.request_code_execution(function)

    fetches: list[int] = []
    monkeypatch.setattr(type(client), "_fetch_api", lambda *a, **k: fetches.append(1))
    with quiet():
        add_code_endpoint(client, request, function)
        ours = client.code.brightest_pixel
    assert fetches == []
    monkeypatch.undo()

    fresh = login(site.url, scientist.email, scientist.password)  # PySyft's own API fetch
    with quiet():
        theirs = fresh.code.brightest_pixel
    assert ours.user_code_id == theirs.user_code_id == request.code_id
    assert (ours.path, ours.pre_kwargs, ours.unwrap_on_success) == (
        theirs.path, theirs.pre_kwargs, theirs.unwrap_on_success)
    assert str(ours.signature) == str(theirs.signature)
    ep_ours = client.api.endpoints["code.call_brightest_pixel"]
    ep_theirs = fresh.api.endpoints["code.call_brightest_pixel"]
    fields = ("service_path", "module_path", "name", "pre_kwargs", "has_self", "doc_string")
    assert [getattr(ep_ours, f) for f in fields] == [getattr(ep_theirs, f) for f in fields]

    data_dir = str(site.data_dir.path)
    assert run_cli("domain", "policy", "--data-dir", data_dir, "--allow-custom-code", "on").code == 0
    try:
        approve = run_cli("domain", "approve", str(request.id)[:8], "--data-dir", data_dir,
                          "--allow-custom-code")
        assert approve.code == 0, approve.err
        with quiet():
            value = ours(images=client.datasets["endpoint-set"].assets["images"]).get()
    finally:
        run_cli("domain", "policy", "--data-dir", data_dir, "--allow-custom-code", "off")
    assert value == pytest.approx(float(owner_images(site, "endpoint-set").max()))

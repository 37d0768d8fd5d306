"""Fixtures: real datasite processes on 127.0.0.1 free ports.

Nothing here is mocked: a ``site`` is a ``python -m domains.site.server`` process started
through medsyft's own deploy path, with its own data directory. Plain helpers live in
``tests/support.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from support import Scientist, deploy_site, login

# Datasites a test starts do not warm their runtime (domains.runtime.warm): most never train, and a
# busy 2-core box would pay torch's imports for each. The demo's test turns it back on.
os.environ.setdefault("MEDSYFT_WARM_RUNTIME", "0")


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One running datasite shared by the workflow tests of a session."""
    site = deploy_site(tmp_path_factory.mktemp("sites") / "st-mary", "st-mary")
    yield site
    site.stop()


@pytest.fixture(scope="session")
def scientist(site: Any) -> Scientist:
    email = "ana@uni.example"
    password = site.add_scientist(email)
    return Scientist(email, password, login(site.url, email, password))

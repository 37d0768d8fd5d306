"""The datasite container (deploy/Dockerfile), built and run for real with Debian's dockerd.

No image registry is reachable here, so the image is built on a Debian bookworm base made offline
(``make base-image``: mmdebstrap, then ``docker import``) from the wheelhouse (``make wheelhouse``).
An image built by an earlier run, of the same wheelhouse, is reused. The container serves HTTPS with
its kit, mounted read-only, and keeps its data directory in a named volume. The scientist, on this
host, verifies it against the federation CA at the container's fixed address on a test network that
this test creates. After ``docker restart`` everything is still there.

Without docker (or without dockerd running) the test skips; under ``CI=true`` it fails instead
(``.ci/run`` installs docker.io and mmdebstrap and starts dockerd).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import REPO, run_cli

pytestmark = pytest.mark.slow

IMAGE, BASE = "medsyft:0.1.0", "medsyft-base:bookworm"
SUBNET, ADDRESS = "172.31.213.0/24", "172.31.213.10"
SCIENTIST = "ds@lab.example"


def _cannot(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the container test is needed under CI=true: {why}")
    pytest.skip(why)


def _run(*args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stderr[-2000:]}")
    return result


def _wheelhouse_digest() -> str:
    """The wheels' names (their versions), medsyft's own wheel and the Dockerfile, byte for byte."""
    h = hashlib.sha256((REPO / "deploy" / "Dockerfile").read_bytes())
    for wheel in sorted((REPO / "wheelhouse").glob("*.whl")):
        h.update(wheel.name.encode())
        if wheel.name.startswith("medsyft-"):
            h.update(wheel.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") is None or _run("docker", "info", check=False, timeout=60).returncode != 0:
        _cannot("no docker engine answers (install docker.io and start dockerd)")
    _run("make", "wheelhouse", timeout=900)
    digest = _wheelhouse_digest()
    label = '{{ index .Config.Labels "medsyft.wheelhouse" }}'
    labels = _run("docker", "image", "inspect", "--format", label, IMAGE, check=False)
    if labels.returncode == 0 and labels.stdout.strip() == digest:
        return IMAGE  # built by an earlier run from the same wheelhouse and code
    if _run("docker", "image", "inspect", BASE, check=False).returncode != 0:
        if shutil.which("mmdebstrap") is None:
            _cannot("no base image and no mmdebstrap to make one offline")
        _run("make", "base-image", timeout=900)
    _run("docker", "build", "-q", "-f", "deploy/Dockerfile", "--build-arg", f"BASE={BASE}",
         "--label", f"medsyft.wheelhouse={digest}", "-t", IMAGE, ".", timeout=1800)
    return IMAGE


@pytest.fixture(scope="module")
def container(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tag = f"medsyft-test-{os.getpid()}"
    root = tmp_path_factory.mktemp("container")
    made = run_cli("federation", "init", "--out", str(root / "fed"), "--site", f"st-mary={ADDRESS}:8443",
                   "--scientist", SCIENTIST)
    assert made.code == 0, made.err
    kit = root / "fed" / "st-mary"
    for path in (kit, *kit.iterdir()):  # the container's medsyft user (uid 10001) reads its kit
        os.chown(path, 10001, -1)
    _run("docker", "network", "create", "--subnet", SUBNET, tag)
    try:
        start = time.monotonic()
        _run("docker", "run", "-d", "--name", tag, "--network", tag, "--ip", ADDRESS,
             "-v", f"{kit}:/kit:ro", "-v", f"{tag}:/data", image)
        yield {"name": tag, "root": root, "fed": root / "fed", "start": start}
    finally:
        logs = _run("docker", "logs", tag, check=False).stdout
        (root / "container.log").write_text(logs)
        _run("docker", "rm", "-f", tag, check=False)
        _run("docker", "volume", "rm", "-f", tag, check=False)
        _run("docker", "network", "rm", tag, check=False)


def _wait_healthy(name: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _run("docker", "exec", name, "medsyft", "domain", "status", check=False, timeout=120)
        if status.returncode == 0:
            return status.stdout
        time.sleep(2)
    logs = _run("docker", "logs", name).stderr[-2000:]
    raise AssertionError(f"the datasite container did not answer: {logs}")


def test_the_datasite_container_serves_mutual_tls_and_keeps_its_volume(container: dict[str, Any]) -> None:
    from orchestrator.config import load_config
    from orchestrator.site import Site

    name = container["name"]
    status = _wait_healthy(name)
    assert "HTTPS, mutual TLS, certificate st-mary" in status
    published = _run("docker", "exec", name, "medsyft", "domain", "publish", "--count", "60",
                     "--name", "chest-xray")
    assert "chest-xray" in published.stdout
    added = _run("docker", "exec", name, "medsyft", "domain", "add-scientist", "--email", SCIENTIST)
    password = added.stdout.strip().rsplit(" ", 1)[-1]
    sci = container["fed"] / "scientist"
    (sci / "pw.txt").write_text(password + "\n")
    job = sci / "container.toml"
    job.write_text(f'[job]\ndataset = "chest-xray"\nrun_dir = "{container["root"] / "run"}"\n'
                   '[tls]\nca_file = "ca.crt"\nclient_cert = "client.crt"\nclient_key = "client.key"\n'
                   f'[[sites]]\nname = "st-mary"\nurl = "https://{ADDRESS}:8443"\nemail = "{SCIENTIST}"\n'
                   'password_file = "pw.txt"\n[privacy]\ndp = false\nhe = false\n')
    site = Site.connect(load_config(job).sites[0], sci)  # verified against the CA, for this IP
    assert site.server_name == "st-mary" and site.datasets()["dataset"].tolist() == ["chest-xray"]

    _run("docker", "restart", name, timeout=120)
    _wait_healthy(name)
    again = Site.connect(load_config(job).sites[0], sci)
    assert again.datasets()["dataset"].tolist() == ["chest-xray"]  # the named volume kept everything
    user = _run("docker", "exec", name, "id", "-u").stdout.strip()
    assert user == "10001"  # the datasite does not run as root

"""Custom code runs in the bubblewrap sandbox, through the real PySyft path of a real datasite.

One datasite on 127.0.0.1 with an HE key and a published dataset, custom code allowed by its
policy. The scientist submits functions; the owner approves each with ``--allow-custom-code``.
A benign function computes on the private asset; hostile ones try to read the data directory
and the secrets, the environment, the network, to write outside the sandbox, to run commands,
and to exceed the memory and time limits. Each hostile function returns what it managed to
learn, so the test sees both that it ran (inside the sandbox) and that it learned nothing.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import deploy_site, login, owner_images, run_cli, submit_code

from domains.site.connection import quiet
from domains.site.lifecycle import read_pid

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from privacy.he import init_keys

    root = tmp_path_factory.mktemp("sandbox")
    secret, _, _ = init_keys(root / "keys")
    site = deploy_site(root / "site", "sandboxed", he_key=secret)
    site.publish(name="chest", synthetic_count=24)
    password = site.add_scientist("ds@lab.example")
    data_dir = str(site.data_dir.path)
    # Generous for a busy 2-core machine, small enough that the hostile calls end soon.
    assert run_cli("domain", "policy", "--data-dir", data_dir, "--allow-custom-code", "on",
                   "--sandbox-memory-mb", "1024", "--sandbox-cpu-seconds", "10",
                   "--sandbox-wall-seconds", "120").code == 0
    yield {"site": site, "client": login(site.url, "ds@lab.example", password), "root": root,
           "dir": site.data_dir.path}
    site.stop()


def call(box: dict[str, Any], source: str, function: str) -> Any:
    """Submit *source* as the scientist, approve it as the owner, call it on the private images."""
    client = box["client"]
    request = submit_code(client, source, dataset="chest", function=function, tmp=box["root"])
    approved = run_cli("domain", "approve", "--data-dir", str(box["dir"]), str(request.id),
                       "--allow-custom-code")
    assert approved.code == 0, approved.err
    with quiet():
        return getattr(client.code, function)(images=client.datasets["chest"].assets["images"]).get()


def probe_source(function: str, body: str) -> str:
    """A custom function that records what each attempt gave, or the exception it raised."""
    lines = "\n".join(f"    {line}" for line in body.strip().splitlines())
    return (f"@sy.syft_function_single_use(images=asset)\ndef {function}(images):\n"
            "    import os, socket, subprocess\n    out = {}\n"
            "    def attempt(key, action):\n        try:\n            out[key] = action()\n"
            "        except Exception as exc:\n            out[key] = 'ERR ' + type(exc).__name__\n"
            f"{lines}\n    return out\n")


def secrets_of(box: dict[str, Any]) -> list[str]:
    creds = json.loads((box["dir"] / "credentials.json").read_text())
    return [creds["password"], (box["dir"] / "server.key").read_text().strip()]


def test_startup_log_says_the_sandbox_is_available(box: dict[str, Any]) -> None:
    log = (box["dir"] / "datasite.log").read_text()
    assert "custom code runs in a bubblewrap sandbox (bubblewrap " in log


def test_benign_custom_code_computes_on_the_private_asset(box: dict[str, Any]) -> None:
    source = ("@sy.syft_function_single_use(images=asset)\ndef image_stats(images):\n"
              "    return {'n': len(images), 'total': int(images.sum()), 'mean': images.mean(axis=0)}\n")
    result = call(box, source, "image_stats")
    private = owner_images(box["site"], "chest")
    assert result["n"] == len(private) and result["total"] == int(private.sum())
    np.testing.assert_allclose(result["mean"], private.mean(axis=0))


def test_reading_the_data_directory_learns_nothing(box: dict[str, Any]) -> None:
    root = box["dir"]
    targets = {name: str(root / name) for name in
               ("credentials.json", "server.key", "audit.key", "he-secret.medsyftkey", "policy.json",
                "datasets/chest.images.npy", "syft/db.sqlite")}
    assert all(Path(p).is_file() for p in targets.values())  # they are there, on the host
    body = "\n".join(f"attempt({k!r}, lambda: open({p!r}, 'rb').read()[:4000].decode('latin-1'))"
                     for k, p in targets.items())
    body += f"\nattempt('listing', lambda: os.listdir({str(root)!r}))"
    result = call(box, probe_source("read_dir", body), "read_dir")
    assert result == {key: "ERR FileNotFoundError" for key in [*targets, "listing"]}


def test_the_environment_holds_no_secrets(box: dict[str, Any]) -> None:
    pid = read_pid(box["site"].data_dir)
    assert pid is not None
    body = (f"attempt('env', lambda: dict(os.environ))\n"
            f"attempt('init', lambda: open('/proc/1/environ').read())\n"
            f"attempt('self', lambda: open('/proc/self/environ').read())\n"
            f"attempt('datasite', lambda: open('/proc/{pid}/environ').read())\n"
            f"attempt('datasite_cmdline', lambda: open('/proc/{pid}/cmdline').read())\n")
    result = call(box, probe_source("read_env", body), "read_env")
    text = json.dumps(result)
    for marker in ("DEFAULT_ROOT_PASSWORD", "SERVER_PRIVATE_KEY", "MEDSYFT_DATA_DIR", "SYFT_",
                   str(box["dir"]), *secrets_of(box)):
        assert marker not in text
    assert set(result["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "MPLCONFIGDIR", "PWD"}
    assert result["datasite"] == result["datasite_cmdline"] == "ERR FileNotFoundError"


def test_the_network_is_out_of_reach(box: dict[str, Any]) -> None:
    port = box["site"].config.port
    connect = "lambda: socket.create_connection(({!r}, {}), timeout=10) and 'open'"
    body = (f"attempt('datasite', {connect.format('127.0.0.1', port)})\n"
            f"attempt('outside', {connect.format('10.0.0.1', 80)})\n"
            "attempt('interfaces', lambda: [line.split(':')[0].strip()\n"
            "                               for line in open('/proc/net/dev').readlines()[2:]])\n")
    result = call(box, probe_source("reach_out", body), "reach_out")
    assert result["datasite"] == "ERR ConnectionRefusedError"
    assert result["outside"].startswith("ERR ")
    assert result["interfaces"] == ["lo"]  # the sandbox's own loopback, nothing else


def test_writes_outside_scratch_never_reach_the_host(box: dict[str, Any]) -> None:
    token = uuid.uuid4().hex
    into_dir, into_tmp = box["dir"] / f"pwned-{token}", Path(f"/tmp/medsyft-pwned-{token}")
    body = "\n".join(f"attempt({str(p)!r}, lambda: open({str(p)!r}, 'w').write('x'))"
                     for p in (into_dir, into_tmp, "/usr/pwned", f"/pwned-{token}", "/scratch/mine"))
    result = call(box, probe_source("write_out", body), "write_out")
    assert result[str(into_dir)] == "ERR FileNotFoundError"
    assert result["/usr/pwned"].startswith("ERR ") and result[f"/pwned-{token}"].startswith("ERR ")
    assert result["/scratch/mine"] == 1  # scratch is writable: the code did run
    assert not into_dir.exists() and not into_tmp.exists()  # /tmp in there is the sandbox's own


def test_commands_run_only_inside_the_sandbox(box: dict[str, Any]) -> None:
    root = box["dir"]
    body = (f"p = subprocess.run(['sh', '-c', 'id; ls {root}; cat {root}/credentials.json'], "
            "capture_output=True, text=True)\nout['stdout'], out['stderr'] = p.stdout, p.stderr\n")
    result = call(box, probe_source("shell_out", body), "shell_out")
    assert "uid=65534" in result["stdout"]
    assert "No such file" in result["stderr"]
    for secret in secrets_of(box):
        assert secret not in result["stdout"] + result["stderr"]


def test_memory_beyond_the_limit_fails_the_call(box: dict[str, Any]) -> None:
    source = ("@sy.syft_function_single_use(images=asset)\ndef hog_memory(images):\n"
              "    return len(bytearray(16 << 30))\n")
    with pytest.raises(Exception, match=r"ran out of memory \(its limit is 1024 MiB\)"):
        call(box, source, "hog_memory")


def test_time_beyond_the_limit_fails_the_call(box: dict[str, Any]) -> None:
    source = ("@sy.syft_function_single_use(images=asset)\ndef spin_forever(images):\n"
              "    while True:\n        pass\n")
    with pytest.raises(Exception, match=r"ran past its CPU-time limit \(10 s\)"):
        call(box, source, "spin_forever")
    # The datasite itself is unharmed and still runs custom code.
    again = ("@sy.syft_function_single_use(images=asset)\ndef image_count(images):\n"
             "    return len(images)\n")
    assert call(box, again, "image_count") == len(owner_images(box["site"], "chest"))



def test_code_with_its_own_policy_class_is_refused_at_approval(box: dict[str, Any],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """PySyft runs a submitted policy class in the datasite process: no sandbox reaches it."""
    (box["root"] / "counted_policy.py").write_text(  # PySyft needs the class's source file
        "import syft as sy\n\n\nclass CountedPolicy(sy.CustomOutputPolicy):\n"
        "    def __init__(self, n_calls=1):\n        self.n_calls = n_calls\n\n"
        "    def apply_to_output(self, context, outputs, update_policy=True):\n        return outputs\n")
    monkeypatch.syspath_prepend(str(box["root"]))
    source = ("from counted_policy import CountedPolicy\n\n\n"
              "@sy.syft_function(input_policy=sy.ExactMatch(images=asset),\n"
              "                  output_policy=CountedPolicy(n_calls=1))\n"
              "def own_policy(images):\n    return len(images)\n")
    request = submit_code(box["client"], source, dataset="chest", function="own_policy", tmp=box["root"])
    refused = run_cli("domain", "approve", "--data-dir", str(box["dir"]), str(request.id),
                      "--allow-custom-code")
    assert refused.code == 2 and "own input or output policy class" in refused.err
    assert refused.err.count("\n") == 1

"""The fixed cost of one PySyft call, on idle datasites, by what travels and by datasite setup.

Usage::

    .venv/bin/python benchmarks/syft_call_cost.py [--calls 8]

Deploys two datasites in one run, one with medsyft's PySyft speed-ups
(``domains/site/syft_speedups.py``) and one without (``MEDSYFT_SYFT_SPEEDUPS=0``), approves on
each a function with the same input policy as a medsyft job (labels asset, a constant, a
scientist-owned dict) that echoes the update it was sent, and times the three legs a round
pays per site: uploading the payload, executing the approved function, fetching the result.
The update travels as:

- a float32 vector of the small CNN's 47,170 parameters (plain FedAvg);
- its encryption, ~0.4 MB, as a list of ``bytes`` (medsyft's wire form before 2026-11-22);
- the same encryption packed into one uint8 array (the wire form now).

Medians of ``--calls`` calls per cell; the two datasites are measured alternately so that
machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CODE = '''
import syft as sy
from syft.service.policy.policy import OutputPolicyExecuteCount

@sy.syft_function(
    input_policy=sy.MixedInputPolicy(client=client, labels=labels, job=sy.Constant(val={"a": 1}),
                                     payload=dict),
    output_policy=OutputPolicyExecuteCount(limit=10000),
)
def echo(labels, job, payload):
    return {"weights": payload["weights"], "call": payload["call"]}
'''


def _updates() -> dict[str, Any]:
    from privacy.he import init_keys, load_context

    with tempfile.TemporaryDirectory() as keys:
        secret, _, _ = init_keys(Path(keys) / "k")
        vector = np.random.default_rng(0).normal(0, 0.1, 47_170).astype(np.float32)
        encrypted = load_context(secret).encrypt_weighted(vector, weight=0.5, bound=4.0)
    return {
        "float32 vector (plain)": vector,
        "HE, list of bytes (before)": {**encrypted.to_dict(), "chunks": list(encrypted.chunks)},
        "HE, packed uint8 (now)": encrypted.to_dict(),
    }


def _setup(tmp: Path, name: str, speedups: bool) -> tuple[Any, Any, Any]:
    import syft as sy

    from domains import Datasite
    from domains.site.lifecycle import free_ports
    from domains.site.quiet import quiet

    os.environ["MEDSYFT_SYFT_SPEEDUPS"] = "1" if speedups else "0"  # read by the datasite process
    try:
        site = Datasite.deploy(tmp / name, name=name, port=free_ports(1)[0])
    finally:
        os.environ.pop("MEDSYFT_SYFT_SPEEDUPS")
    site.publish(name="d", synthetic_count=800)
    password = site.add_scientist("bench@lab.example")
    with quiet():
        client = sy.login(url=site.url, email="bench@lab.example", password=password)
        labels = client.datasets["d"].assets["labels"]
        path = tmp / f"echo_{name}.py"
        path.write_text(CODE)
        spec = importlib.util.spec_from_file_location(f"echo_{name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        module.client, module.labels = client, labels  # type: ignore[attr-defined]
        spec.loader.exec_module(module)
        request = client.code.request_code_execution(module.echo)
    site.approve(str(request.id))
    return site, client, labels


def _one_call(client: Any, labels: Any, update: Any, call: int) -> dict[str, float]:
    import syft as sy

    from domains.site.quiet import quiet
    from orchestrator.transport import fetch

    with quiet():
        t0 = time.perf_counter()
        pointer = sy.ActionObject.from_obj({"call": call, "weights": update}).send(client)
        t1 = time.perf_counter()
        out = client.code.echo(labels=labels, payload=pointer)
        t2 = time.perf_counter()
        fetch(out)
        t3 = time.perf_counter()
    return {"upload_s": t1 - t0, "execute_s": t2 - t1, "get_s": t3 - t2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args()
    updates = _updates()
    with tempfile.TemporaryDirectory() as tmp:
        sites = {}
        try:
            for label, on in [("speed-ups on", True), ("speed-ups off", False)]:
                sites[label] = _setup(Path(tmp), "on" if on else "off", on)
            legs: dict[tuple[str, str], list[dict[str, float]]] = {}
            call = 0
            for _ in range(args.calls + 1):  # the first call per cell warms up and is dropped
                for what, update in updates.items():
                    for label, (_, client, labels) in sites.items():
                        call += 1
                        legs.setdefault((what, label), []).append(_one_call(client, labels, update, call))
        finally:
            for site, _, _ in sites.values():
                site.stop()
    rows = []
    for (what, label), samples in legs.items():
        medians = {k: statistics.median(s[k] for s in samples[1:]) for k in samples[0]}
        rows.append({"update": what, "datasite": label, **medians, "total_s": sum(medians.values())})
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    base = table.set_index(["update", "datasite"])["total_s"]
    before = base[("HE, list of bytes (before)", "speed-ups off")]
    now = base[("HE, packed uint8 (now)", "speed-ups on")]
    print(f"\nHE update, one call: {before:.3f} s before -> {now:.3f} s now ({now / before:.2f}x)")


if __name__ == "__main__":
    main()

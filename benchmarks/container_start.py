"""The datasite image: its size, and the time from `docker run` until the datasite answers over mutual TLS.

    make base-image && make image BASE=medsyft-base:bookworm
    .venv/bin/python benchmarks/container_start.py [--runs 3]

Each run starts a fresh container (a new named volume: a first deploy) and then restarts it (the
same volume: a restart), timing until ``/api/v2/metadata`` answers the federation's client
certificate. The numbers go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

IMAGE, SUBNET, ADDRESS = "medsyft:0.1.0", "172.31.214.0/24", "172.31.214.10"


def _sh(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True).stdout.strip()


def _until_up(ctx: ssl.SSLContext, timeout: float = 300) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(f"https://{ADDRESS}:8443/api/v2/metadata", context=ctx, timeout=2):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the container did not answer")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from medsyft.federation import init

    root = Path(tempfile.mkdtemp())
    init(root / "fed", [f"st-mary={ADDRESS}:8443"], "bench@lab.example")
    kit, sci = root / "fed" / "st-mary", root / "fed" / "scientist"
    for path in (kit, *kit.iterdir()):
        os.chown(path, 10001, -1)
    ctx = ssl.create_default_context(cafile=str(sci / "ca.crt"))
    ctx.load_cert_chain(sci / "client.crt", sci / "client.key")
    net = f"medsyft-bench-{os.getpid()}"
    _sh("docker", "network", "create", "--subnet", SUBNET, net)
    rows = []
    try:
        for run in range(args.runs):
            name = f"{net}-{run}"
            t0 = time.monotonic()
            _sh("docker", "run", "-d", "--name", name, "--network", net, "--ip", ADDRESS,
                "-v", f"{kit}:/kit:ro", "-v", f"{name}:/data", IMAGE)
            _until_up(ctx)
            first = time.monotonic() - t0
            t1 = time.monotonic()
            _sh("docker", "restart", name)
            _until_up(ctx)
            again = time.monotonic() - t1
            rows.append({"run": run + 1, "first deploy (s)": round(first, 1), "restart (s)": round(again, 1)})
            _sh("docker", "rm", "-f", name)
            _sh("docker", "volume", "rm", "-f", name)
    finally:
        subprocess.run(["docker", "network", "rm", net], capture_output=True)
    size = int(_sh("docker", "image", "inspect", "--format", "{{.Size}}", IMAGE)) / 1e9
    print(f"image {IMAGE}: {size:.2f} GB")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()

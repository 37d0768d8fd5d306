"""How long deploying a datasite and publishing a dataset take, and what the datasite weighs.

Usage::

    .venv/bin/python benchmarks/deploy_publish.py [--source ../shared/data/pneumoniamnist.npz]

Deploys a fresh datasite (cold: new data directory, new process), publishes the
source's train split, and reports the phases of publishing separately: load and
validate the source, build the mock, upload through PySyft. It then stops the
datasite and deploys it again (warm restart). Numbers go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "pneumoniamnist.npz"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default=str(DEFAULT_SOURCE))
    args = parser.parse_args()

    import socket

    from domains import Datasite
    from domains.data.mock import make_mock
    from domains.data.publish import PublishRequest, prepare
    from domains.site.connection import admin_client, quiet
    from domains.site.lifecycle import read_pid

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        site = Datasite.deploy(Path(tmp) / "bench", name="bench", port=port)
        rows.append(("deploy (cold, until the datasite answers)", time.perf_counter() - t))
        try:
            t = time.perf_counter()
            import monai.transforms  # noqa: F401 - first use pays the torch/MONAI import
            rows.append(("import torch + MONAI (once per process)", time.perf_counter() - t))
            req = PublishRequest(source=Path(args.source), split="train")
            t = time.perf_counter()
            _, images, _ = prepare(req)
            rows.append((f"load + validate {len(images)} images", time.perf_counter() - t))
            t = time.perf_counter()
            make_mock(images, seed=0)
            rows.append(("build the mock", time.perf_counter() - t))
            t = time.perf_counter()
            site.publish(source=args.source, split="train", name="timed")
            rows.append(("publish end to end (CLI path, incl. the two above)",
                         time.perf_counter() - t))
            pid = read_pid(site.data_dir)
            rows.append(("datasite RSS after publish (MB)", rss_mb(pid) if pid else float("nan")))
            t = time.perf_counter()
            with quiet():
                admin_client(site.data_dir).datasets["timed"].assets["images"].data  # noqa: B018
            rows.append(("owner reads the private images back", time.perf_counter() - t))
            site.stop()
            t = time.perf_counter()
            site = Datasite.deploy(Path(tmp) / "bench", name=None, port=port)
            rows.append(("deploy again (restart, same data dir)", time.perf_counter() - t))
        finally:
            site.stop()
    frame = pd.DataFrame(rows, columns=["step", "seconds"])
    print(frame.to_markdown(index=False, floatfmt=".1f") if _has_tabulate() else frame)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()

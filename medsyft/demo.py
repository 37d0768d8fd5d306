"""``medsyft demo``: a local federation on loopback with the default dataset.

Three hospital datasites start as real PySyft processes on free 127.0.0.1 ports,
each publishes its shard of one source (Dirichlet label skew, so hospitals
differ as real ones do), and their status is shown. By default the source is
the synthetic chest phantom set, so the demo needs no download; ``--source``
takes real data such as PneumoniaMNIST's ``.npz``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reset(workdir: Path) -> None:
    """Stop datasites a previous demo left running, then start from an empty folder."""
    from domains import lifecycle
    from domains.datadir import DataDir

    for name in HOSPITALS:
        data_dir = DataDir(workdir / name)
        if data_dir.is_initialized:
            lifecycle.stop(data_dir)
    shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    from domains import Datasite
    from domains.publish import PublishRequest

    workdir = Path(args.workdir).resolve()
    _reset(workdir)
    started = time.perf_counter()
    print(f"[1/3] deploying {len(HOSPITALS)} datasites on 127.0.0.1 (data in {workdir}) ...")
    with ThreadPoolExecutor(len(HOSPITALS)) as pool:
        sites = list(pool.map(
            lambda name: Datasite.deploy(workdir / name, name=name, port=free_port()), HOSPITALS
        ))
    for site in sites:
        print(f"      {site.config.name:<11} {site.url}")
    print(f"      ready in {time.perf_counter() - started:.1f} s")
    try:
        t0 = time.perf_counter()
        src = "synthetic chest phantoms" if args.source is None else args.source
        print(f"[2/3] publishing {src}, {args.partition} shards ...")
        rows = []
        for i, site in enumerate(sites, start=1):
            req = PublishRequest(
                source=Path(args.source) if args.source else None,
                shard=f"{i}/{len(sites)}", partition=args.partition, seed=args.seed,
                name="chest-xray", synthetic_count=args.count,
            )
            result = site.publish(**vars(req))
            rows.append({"hospital": site.config.name, "dataset": result.name,
                         "images": result.metadata["n"], **result.metadata["class_counts"]})
        print(pd.DataFrame(rows).to_string(index=False))
        print(f"      published in {time.perf_counter() - t0:.1f} s")
        print("[3/3] status")
        for site in sites:
            report = site.status()
            print(f"\n{report.name} at {report.url}: reachable={report.reachable}, "
                  f"pending requests={report.pending_requests}")
            print(report.datasets.to_string(index=False))
    finally:
        if args.keep_running:
            print(f"\ndatasites keep running; stop them with "
                  f"`medsyft domain stop --data-dir {workdir}/<hospital>`")
        else:
            for site in sites:
                site.stop()
            print("\ndatasites stopped (rerun with --keep-running to explore them)")
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run a local three-hospital federation on loopback",
                              description=__doc__)
    p.add_argument("--source", help="real data instead of the synthetic phantoms (e.g. an .npz)")
    p.add_argument("--partition", default="dirichlet:0.5", help="default dirichlet:0.5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=3000, help="synthetic images in total")
    p.add_argument("--workdir", default="demo-run", help="where the datasites keep their data")
    p.add_argument("--keep-running", action="store_true", help="leave the datasites up")
    p.set_defaults(handler=run)

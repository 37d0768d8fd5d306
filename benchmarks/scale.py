"""1, 3, 5 and 10 datasites in one run: start-up, round time and memory, side by side.

Usage::

    .venv/bin/python benchmarks/scale.py [--sites 1,3,5,10] [--per-site 600] [--rounds 3] [--he]
        [--launcher]

For each federation size N, one after the other on this machine: deploys N real datasite
processes in parallel (free 127.0.0.1 ports), publishes 600 synthetic phantoms on each (the same
work per site at every N) and makes the scientist's accounts: the **start-up**. Then one DP job
(small CNN, 2 local epochs, batch 64, σ = 1) runs ``--rounds`` rounds through the orchestrator:
the **steady round** is the median of rounds 2.. (round 1 pays the first imports). ``--he``
aggregates under HE as well (from N = 2; needs no roster). After the job it reads every datasite
process tree's resident memory (``/proc``, children included) and the orchestrator's own (this
process without its children, which the datasites are; it keeps what earlier sizes left), and the
datasites' proportional set size (PSS: a page that k processes share counts 1/k in each), which is
what they hold together. ``--launcher`` forks the datasites from one process that imported PySyft
and the runtime once (``domains.site.launcher``, as ``medsyft demo`` does); its children share the
pages they never wrote, so their PSS is below their RSS. On a
2-core machine every site's training shares the same two cores, so the round time of N sites is
bounded below by N × one site's training: the ratio to N = 1 says how far beyond that it grows.
Numbers go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd


def _rss_mb(pid: int, *, children: bool = True, pss: bool = False) -> float:
    """Resident memory of *pid* and (unless not *children*) all its descendants, in MB; with
    *pss* their proportional set size instead."""
    source, field = ("smaps_rollup", "Pss:") if pss else ("status", "VmRSS:")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/{source}").read_text()
            rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith(field))
            total += rss / 1024
            for task in Path(f"/proc/{current}/task").iterdir() if children else ():
                children = (task / "children").read_text().split()
                todo += [int(c) for c in children]
        except (OSError, StopIteration):
            continue
    return total


def one_size(n: int, root: Path, *, per_site: int, rounds: int, he: bool, launcher: bool) -> dict[str, Any]:
    from domains import Datasite
    from domains.site.launcher import Launcher
    from domains.site.lifecycle import free_ports, read_pid
    from orchestrator import FederatedJob, load_config
    from privacy.he import init_keys

    names = [f"site{i}" for i in range(1, n + 1)]
    he = he and n >= 2
    secret = public = None
    if he:
        secret, public, _ = init_keys(root / "keys")
    started = time.perf_counter()
    ports = free_ports(n)
    with Launcher() if launcher else contextlib.nullcontext() as forker, ThreadPoolExecutor(n) as pool:
        sites = list(pool.map(
            lambda a: Datasite.deploy(root / a[0], name=a[0], port=a[1], he_key_file=secret, launcher=forker),
            zip(names, ports, strict=True)))
    deployed = time.perf_counter() - started
    try:
        (root / "secrets").mkdir()
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda s: s.publish(name="chest", synthetic_count=per_site, seed=names.index(
                s.config.name)), sites))
        for site in sites:
            (root / "secrets" / f"{site.config.name}.txt").write_text(site.add_scientist("ds@lab.example"))
        startup = time.perf_counter() - started
        lines = ["[job]", 'dataset = "chest"', 'model = "small-cnn"', f"rounds = {rounds}",
                 "local_epochs = 2",
                 "batch_size = 64", "lr = 0.01", f"min_sites = {n}", "round_timeout = 900",
                 "approval_timeout = 120", 'run_dir = "run"', "", "[privacy]", "noise_multiplier = 1.0",
                 f'he_public_key = "{public}"' if he else "he = false"]
        for site in sites:
            lines += ["", "[[sites]]", f'name = "{site.config.name}"', f'url = "{site.url}"',
                      'email = "ds@lab.example"', f'password_file = "secrets/{site.config.name}.txt"']
        (root / "job.toml").write_text("\n".join(lines) + "\n")
        job = FederatedJob(load_config(root / "job.toml"))
        job.submit()
        from domains.review.requests import RequestBook

        for site in sites:
            book = RequestBook(site.data_dir)
            for row in book.table().itertuples():
                book.approve(row.id)
        job.wait_for_approval(timeout=120)
        t = time.perf_counter()
        result = job.run(progress=False)
        training = time.perf_counter() - t
        round_s = result.timing["round_s"].tolist()
        pids = [pid for pid in (read_pid(s.data_dir) for s in sites) if pid]
        per_site = [_rss_mb(pid) for pid in pids]
        pss = sum(_rss_mb(pid, pss=True) for pid in pids)
        steady = statistics.median(round_s[1:]) if len(round_s) > 1 else round_s[0]
        own = _rss_mb(os.getpid(), children=False)  # the datasites are this process's children
        return {"sites": n, "he": he, "launcher": launcher, "deploy_s": deployed, "startup_s": startup,
                "round1_s": round_s[0],
                "steady_round_s": steady, "training_s": training,
                "rss_per_site_mb": statistics.mean(per_site),
                "rss_sites_total_mb": sum(per_site), "pss_sites_total_mb": pss, "orchestrator_rss_mb": own}
    finally:
        for site in sites:
            site.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", default="1,3,5,10")
    parser.add_argument("--per-site", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--he", action="store_true", help="encrypted aggregation from 2 sites on")
    parser.add_argument("--launcher", action="store_true",
                        help="fork the datasites from one launcher process (as medsyft demo does)")
    args = parser.parse_args()
    os.environ.setdefault("MEDSYFT_TORCH_THREADS", "1")
    rows = []
    for n in (int(s) for s in args.sites.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"medsyft-scale-{n}-") as tmp:
            rows.append(one_size(n, Path(tmp), per_site=args.per_site, rounds=args.rounds, he=args.he,
                                 launcher=args.launcher))
        print({k: round(v, 2) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    frame = pd.DataFrame(rows)
    base = frame.iloc[0]
    frame["steady_round_vs_1"] = frame["steady_round_s"] / base["steady_round_s"]
    frame["steady_round_vs_linear"] = frame["steady_round_vs_1"] / (frame["sites"] / base["sites"])
    with pd.option_context("display.width", 250, "display.float_format", "{:.2f}".format):
        print(frame.to_string(index=False))


if __name__ == "__main__":
    main()

"""A/B in one run: what a round costs with two checkouts of medsyft, e.g. before and after a change.

Usage::

    git worktree add /tmp/before 2dbb2c9
    .venv/bin/python benchmarks/defence_cost.py --before /tmp/before --after . [--reps 2] \
        [--flags="--no-dp --no-he"] [--after-flags="--no-roster"]

Runs the plain demo job (``medsyft demo --no-dp --no-he``: three real datasites, 8 rounds; or the
demo with ``--flags``) from each checkout in turn, alternating, ``--reps`` times, and prints the
medians over rounds 2..R of the demo's ``timing.csv`` side by side. ``--before-flags`` and
``--after-flags`` add flags to one side only (the same checkout twice, with and without an
option, is an A/B too). Alternating runs on the same machine make the ratio
(round / training) comparable where absolute times are not. Numbers go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

COLUMNS = ["round_s", "train_s", "site_compute_s", "upload_s", "execute_s", "get_s", "round_per_train"]


def one_run(root: Path, workdir: Path, rounds: int, flags: list[str]) -> tuple[pd.Series, float]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the datasites it starts import the same checkout
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medsyft.cli", "demo", *flags, "--rounds",
                    str(rounds), "--workdir", str(workdir)], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    timing = pd.read_csv(workdir / "run" / "timing.csv")
    return timing[timing["round"] > 1][COLUMNS].median(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="checkout of the code before")
    parser.add_argument("--after", type=Path, default=Path("."), help="checkout of the code after")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--flags", default="--no-dp --no-he", help="demo flags for both sides")
    parser.add_argument("--before-flags", default="", help="demo flags for the before side only")
    parser.add_argument("--after-flags", default="", help="demo flags for the after side only")
    args = parser.parse_args()
    flags = {"before": (args.flags + " " + args.before_flags).split(),
             "after": (args.flags + " " + args.after_flags).split()}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="medsyft-ab-") as tmp:
        for rep in range(1, args.reps + 1):
            for label, root in (("before", args.before), ("after", args.after)):
                medians, wall = one_run(root.resolve(), Path(tmp) / f"{label}-{rep}", args.rounds,
                                        flags[label])
                rows[f"{label} #{rep}"] = {**medians.to_dict(), "demo_s": wall}
                print(f"{label} #{rep}: {wall:.0f} s", flush=True)
    print(pd.DataFrame(rows).T.round(3).to_string())


if __name__ == "__main__":
    main()

"""Where a federated round spends its time, three datasites on loopback.

Usage::

    .venv/bin/python benchmarks/round_breakdown.py [--rounds 8]

Runs the demo federation (three real datasites, synthetic phantoms, small CNN)
and reads the run's ``timing.csv``: per round, the slowest site's training and
evaluation time inside its datasite, and for that site's call the three legs of
the PySyft path as the orchestrator sees them (uploading the global model,
executing the approved function, fetching the result), plus aggregation.
Reports medians over rounds 2..R (round 1 also pays imports and data loading,
shown separately), for the default job (DP-SGD + encrypted aggregation) and, in the
same run, for the same job with both turned off. Numbers go to docs/performance.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workdir", default="/tmp/medsyft-bench")
    parser.add_argument("--image-size", type=int, default=28, help="phantom size (28 or 64)")
    parser.add_argument("--only-default", action="store_true", help="skip the plain comparison run")
    args = parser.parse_args()

    from medsyft.cli import build_parser
    from medsyft.demo import run

    cols = ["round_s", "train_s", "site_compute_s", "upload_s", "execute_s", "get_s",
            "aggregate_s", "round_per_train", "update_MB", "x_float32"]
    table = {}
    variants = [("DP + HE (default)", []), ("plain", ["--no-dp", "--no-he"])]
    for label, flags in variants[:1] if args.only_default else variants:
        workdir = Path(args.workdir) / label.split()[0].lower()
        run(build_parser().parse_args(["demo", "--rounds", str(args.rounds), "--workdir",
                                       str(workdir), "--image-size", str(args.image_size), *flags]))
        timing = pd.read_csv(workdir / "run" / "timing.csv")
        steady = timing[timing["round"] > 1]
        table[f"{label}: round 1"] = timing[cols].iloc[0]
        table[f"{label}: median 2..R"] = steady[cols].median()
    print("\n" + pd.DataFrame(table).round(3).to_string())


if __name__ == "__main__":
    main()

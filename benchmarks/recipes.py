"""Test-split accuracy of demo recipes over several seeds: mean ± std, the figures to quote.

Usage::

    .venv/bin/python benchmarks/recipes.py --source ../shared/data/pneumoniamnist.npz \
        [--seeds 0,1,2] [--recipe "plain=--no-dp --no-he" --recipe "plain-balanced=--no-dp --no-he \
        --class-weights balanced" ...] [--out /tmp/medsyft-recipes]

For every recipe (a name and ``medsyft demo`` flags) and seed, runs the demo (three real datasites
on loopback, ``--no-baseline``; IID shards unless the flags say otherwise), then scores the job's
final model exactly on the source's test split with :mod:`orchestrator.holdout`: the plaintext
global model, or under HE the model every owner released. Prints one row per recipe, test
accuracy and ROC-AUC as mean ± std over the seeds, the ε each hospital spent (DP jobs) and the
demo's wall time, and writes every run to ``recipes.csv`` in ``--out``. Numbers go to
docs/training.md beside the published ones.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPES = [
    "plain=--no-dp --no-he",
    "plain-balanced=--no-dp --no-he --class-weights balanced",
    "dp-he=",
    "dp-he-balanced=--class-weights balanced",
]


def one_run(source: Path, flags: list[str], seed: int, workdir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "medsyft.cli", "demo", "--source", str(source), "--partition", "iid",
           "--no-baseline", "--seed", str(seed), "--workdir", str(workdir), *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"demo failed ({' '.join(cmd)}): {done.stderr.strip().splitlines()[-1:]}")
    wall = time.perf_counter() - started
    return {**_score(workdir), "seed": seed, "demo_s": wall}


def _score(workdir: Path) -> dict[str, Any]:
    """The job's final model on the test split, as ``medsyft release`` or ``train`` reports it."""
    from orchestrator import holdout
    from orchestrator.checkpoint import RunDir
    from orchestrator.config import load_config
    from orchestrator.result import FederatedResult

    config = load_config(workdir / "job.toml")
    spec = RunDir(config.run_path).load_state().spec
    result = FederatedResult.load(config.run_path, spec)
    weights = result.weights
    if weights is None:  # an encrypted job: the model its owners released
        with np.load(config.run_path / "release" / "model.npz") as npz:
            weights = {k: npz[k] for k in npz.files}
    test, why = holdout.score_job(config, spec, weights)
    if test is None:
        raise SystemExit(f"no test score: {why}")
    eps = result.epsilon()
    spent = float(eps["job_epsilon_spent"].max()) if "job_epsilon_spent" in eps else float("nan")
    return {"test_accuracy": test.metrics.accuracy, "test_auc": test.metrics.auc, "n_test": test.metrics.n,
            "epsilon_spent": spent}


def _mean_std(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="an .npz with train and test splits")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--recipe", action="append", help="NAME=DEMO FLAGS (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/medsyft-recipes"))
    args = parser.parse_args()
    recipes = [r.split("=", 1) for r in (args.recipe or DEFAULT_RECIPES)]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name, flags in recipes:
        for seed in seeds:
            print(f"{name}, seed {seed} ...", flush=True)
            row = one_run(args.source.resolve(), shlex.split(flags), seed, args.out / f"{name}-{seed}")
            rows.append({"recipe": name, "flags": flags, **row})
            print(f"  test accuracy {row['test_accuracy']:.3f}, ROC-AUC {row['test_auc']:.3f}, "
                  f"{row['demo_s']:.0f} s", flush=True)
    runs = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.out / "recipes.csv", index=False)
    table = runs.groupby("recipe", sort=False).agg(
        seeds=("seed", "count"), test_accuracy=("test_accuracy", _mean_std), test_auc=("test_auc", _mean_std),
        epsilon=("epsilon_spent", "max"), demo_s=("demo_s", "median"))
    print("\n" + table.round(2).to_string())


if __name__ == "__main__":
    main()

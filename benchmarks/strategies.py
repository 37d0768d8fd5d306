"""Strategies against each other and the centralized model, IID and skewed, on PneumoniaMNIST's test split.

Usage::

    .venv/bin/python benchmarks/strategies.py [--source ../shared/data/pneumoniamnist.npz]
        [--strategies fedavg,fedprox,fedadam] [--seeds 0,1] [--rounds 15]
        [--partitions dirichlet:0.5] [--demo-flags "--class-weights balanced"]

For every partition (``iid`` or ``dirichlet:ALPHA`` of the source's *train* split over three
hospitals), strategy and partition seed, runs ``medsyft demo`` (three real datasites on
loopback), plaintext (``--no-dp --no-he``) so that only the strategy differs, then scores the final
global model exactly on the source's *test* split, which no site trained or tuned on; the demo's
centralized model (same model, hyperparameters and data, trained on the union) is scored the same
way and reported once per partition. Reports: test accuracy and ROC-AUC (mean over seeds) in one
table, and how much the pooled validation accuracy swings over the last five rounds (the
oscillation FedAvg shows under skew). Writes ``strategies.csv`` and ``strategies.png`` (pooled
validation accuracy per round, one line per run) into ``--out``. Numbers go to docs/training.md.
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

import pandas as pd


def one_run(source: Path, strategy: str, seed: int, rounds: int, partition: str, workdir: Path,
            flags: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "medsyft.cli", "demo", "--no-dp", "--no-he", "--source", str(source),
           "--partition", partition, "--seed", str(seed), "--rounds", str(rounds),
           "--strategy", strategy, "--workdir", str(workdir), *flags]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    run = workdir / "run"
    test = _score_on_test(source, run, rounds)
    pooled = pd.read_csv(run / "metrics.csv").query("site == 'pooled'").sort_values("model_round")
    last = pooled["accuracy"].to_numpy()[-5:]
    central = pd.read_csv(run / "baseline.csv").iloc[0]
    return {"partition": partition, "strategy": strategy, "seed": seed, "test_accuracy": test.accuracy,
            "test_auc": test.auc, "central_test_accuracy": central["test_accuracy"],
            "central_test_auc": central["test_auc"],
            "val_acc_swing_last5": float(last.max() - last.min()), "demo_s": wall,
            "curve": pooled["accuracy"].tolist()}


def _score_on_test(source: Path, run: Path, rounds: int) -> Any:
    """The final global model (a plaintext job's checkpoint), scored exactly on the test split."""
    from domains.data.formats.registry import load_source
    from domains.runtime.evaluation import evaluate_model
    from domains.runtime.models import build_model
    from domains.runtime.weights import set_weights
    from orchestrator.checkpoint import RunDir

    spec = RunDir(run).load_state().spec
    final = RunDir(run).load_global(rounds)
    weights = final.to_weights() if hasattr(final, "to_weights") else final
    data = load_source(source, split="test", image_size=spec.image_size)
    model = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                        image_size=spec.image_size)
    set_weights(model, weights)
    return evaluate_model(model, data.images, data.labels, multi_label=spec.multi_label)


ROOT = Path(__file__).resolve().parent.parent  # score with the same checkout the datasites ran


def main() -> None:
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("../shared/data/pneumoniamnist.npz"))
    parser.add_argument("--strategies", default="fedavg,fedprox,fedadam")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--partitions", default="dirichlet:0.5", help="comma-separated: iid, dirichlet:A")
    parser.add_argument("--demo-flags", default="", help="more `medsyft demo` flags for every run")
    parser.add_argument("--out", type=Path, default=Path("/tmp/medsyft-strategies"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    flags = shlex.split(args.demo_flags)
    for partition in args.partitions.split(","):
        for seed in map(int, args.seeds.split(",")):
            for strategy in args.strategies.split(","):
                row = one_run(args.source.resolve(), strategy, seed, args.rounds, partition,
                              args.out / f"{partition.replace(':', '-')}-{strategy}-{seed}", flags)
                print(f"{partition} {strategy} seed {seed}: test acc {row['test_accuracy']:.3f} auc "
                      f"{row['test_auc']:.3f}; centralized {row['central_test_accuracy']:.3f} / "
                      f"{row['central_test_auc']:.3f} ({row['demo_s']:.0f} s)", flush=True)
                rows.append(row)
    table = pd.DataFrame(rows)
    table.drop(columns="curve").to_csv(args.out / "strategies.csv", index=False)
    print("\n" + one_table(table).to_string(index=False))
    _plot(table, args.out / "strategies.png")


def one_table(table: pd.DataFrame) -> pd.DataFrame:
    """Partition x strategy, test ACC and AUC as mean ± std over seeds, and each partition's
    centralized model: every demo retrains it on the same union, so mean ± std over all its runs."""
    def cell(values: pd.Series) -> str:
        spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
        return f"{values.mean():.3f}{spread}"

    rows = []
    for partition, runs in table.groupby("partition", sort=False):
        for strategy, one in runs.groupby("strategy", sort=False):
            rows.append({"partition": partition, "training": strategy, "test ACC": cell(one["test_accuracy"]),
                         "test AUC": cell(one["test_auc"]),
                         "val ACC swing": f"{one['val_acc_swing_last5'].mean():.3f}"})
        rows.append({"partition": partition, "training": "centralized (the union)",
                     "test ACC": cell(runs["central_test_accuracy"]),
                     "test AUC": cell(runs["central_test_auc"]),
                     "val ACC swing": ""})
    return pd.DataFrame(rows)


def _plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for _, row in table.iterrows():
        ax.plot(range(len(row["curve"])), row["curve"], label=f"{row['strategy']} (seed {row['seed']})")
    ax.set_xlabel("model round")
    ax.set_ylabel("pooled validation accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()

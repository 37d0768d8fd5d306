"""medsyft, Flower and NVIDIA FLARE on the same federated job, one after the other, in one command.

Usage (from the checkout, with medsyft's venv)::

    .venv/bin/python benchmarks/peers/run.py [--source ../shared/data/pneumoniamnist.npz]
        [--rounds 15] [--systems medsyft,flower,nvflare-sim,nvflare-poc] [--he|--no-he]
        [--venvs ~/.cache/medsyft-peers] [--out /tmp/medsyft-peers]

The job (``bundle.Job``): 3 IID shards of the source's train split, each site holding out 20%
for validation, the same small CNN from the same initial weights, 1 local epoch of Adam at 0.01,
batch 64, FedAvg weighted by training images, 15 rounds. ``bundle.py`` writes it once, by
medsyft's own code; every peer reads it (``peer_common.py``) and trains as a medsyft site does.
The final model of every system is scored by one function on the official test split.

Each peer is installed into its own venv under ``--venvs`` with pinned versions (``PEERS``),
once; a peer that cannot be installed is reported and skipped, the others still run. Reported
per system: whole-job wall time from the command's start (a medsyft job includes deploying three
datasites, publishing, accounts, submission and review), the training rounds' time, the steady
seconds per round (median of rounds 2..R), test ACC/AUC, and bytes up and down per site per
round. ``--he`` adds the encrypted runs: medsyft's BFV (verifiable secure aggregation, its
default) against NVIDIA FLARE's CKKS filters in its real-process (POC) mode. Writes
``peers.csv`` and ``peers.md`` into ``--out``; the numbers go to benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bundle  # noqa: E402

# Each peer's pins: torch 2.13.0 is the CPU wheel these machines install in seconds.
PEERS: dict[str, list[str]] = {
    "flower": ["flwr[simulation]==1.42.0", "torch==2.13.0"],
    "nvflare": ["nvflare==2.9.0", "torch==2.13.0", "tenseal==0.3.18"],
}
SYSTEMS = ("medsyft", "flower", "nvflare-sim", "nvflare-poc")
# (system key, name, mode, script in this folder, its flags)
PEER_RUNS = [
    ("flower", "Flower", "simulation", "flower_job.py", []),
    ("nvflare-sim", "NVIDIA FLARE", "simulator", "nvflare_job.py", ["--env", "sim"]),
    ("nvflare-poc", "NVIDIA FLARE", "real processes (POC)", "nvflare_job.py", ["--env", "poc"]),
    ("nvflare-poc", "NVIDIA FLARE", "CKKS HE, real processes", "nvflare_job.py", ["--env", "poc", "--he"]),
]


@dataclass
class Outcome:
    """One system's run, in the units of the table."""

    system: str
    mode: str
    whole_job_s: float
    rounds_s: float
    steady_round_s: float
    test_acc: float
    test_auc: float
    up_MB: float
    down_MB: float
    note: str = ""


def ensure_venv(venvs: Path, peer: str, log: Callable[[str], None]) -> Path | None:
    """The peer's venv python, installed with its pins on first use; None (and why) if it fails."""
    pins = PEERS[peer]
    folder = venvs / peer
    stamp = folder / ".pins"
    python = folder / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == "\n".join(pins):
        return python
    log(f"installing {peer} ({', '.join(pins)}) into {folder} ...")
    shutil.rmtree(folder, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip>=24"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)
    except subprocess.CalledProcessError as exc:
        log(f"{peer} could not be installed ({exc}); skipping it")
        return None
    stamp.write_text("\n".join(pins))
    return python


def run_medsyft(source: Path, job: bundle.Job, he: bool, workdir: Path) -> tuple[Outcome, dict[str, Any]]:
    """``medsyft demo`` with the job's flags: three real datasites, DP off, HE as asked."""
    from orchestrator.checkpoint import RunDir

    cmd = [sys.executable, "-m", "medsyft.cli", "demo", "--no-dp", "--no-baseline", "--source", str(source),
           "--workdir", str(workdir), *job.demo_flags(), *([] if he else ["--no-he"])]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    whole = time.perf_counter() - started
    run = workdir / "run"
    timing = pd.read_csv(run / "timing.csv")
    # under HE, the model every owner released; in plaintext, the last checkpoint
    final = (_arrays(run / "release" / "model.npz") if he
             else RunDir(run).load_global(job.rounds).to_weights())
    params = int(timing["params"].iloc[0])
    down = (timing["download_MB"].median() if "download_MB" in timing else params * 4 / 2**20)
    outcome = Outcome("medsyft", "BFV HE" if he else "plaintext", whole, float(timing["round_s"].sum()),
                      float(timing["round_s"].iloc[1:].median()), *bundle.score(source, final),
                      float(timing["update_MB"].median()), float(down),
                      "3 datasite processes, deploy + publish + review included")
    steps = pd.read_csv(run / "steps.csv")  # where the demo's time went, step by step
    steps.to_csv(workdir.parent / f"{workdir.name}-steps.csv", index=False)
    print(steps.round(2).to_string(index=False), flush=True)
    initial = RunDir(run).load_global(0)
    return outcome, ({} if initial is None else initial.to_weights())


def run_peer(python: Path, script: str, args: list[str], out: Path, source: Path, mode: str,
             system: str, timeout: float) -> Outcome:
    """One peer script in its venv; its whole job is timed from here, its rounds from its stamps."""
    started = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    with (out.parent / f"{out.name}.log").open("w") as log:
        subprocess.run([str(python), str(HERE / script), "--out", str(out), *args], check=True,
                       timeout=timeout, stdout=subprocess.DEVNULL, stderr=log)
    whole = time.perf_counter() - started
    result = json.loads((out / "result.json").read_text())
    ends = np.array(result["round_ends"])
    periods = np.diff(np.concatenate([[result["rounds_start"]], ends]))
    final = _arrays(out / "final.npz")
    note = result.get("note", "")
    if result.get("up_ciphertext_bytes"):
        note += f"; its CKKS vectors alone {result['up_ciphertext_bytes'] / 2**20:.2f} MB up"
    return Outcome(system, mode, whole, float(ends[-1] - result["rounds_start"]),
                   float(np.median(periods[1:])), *bundle.score(source, final), result["up_bytes"] / 2**20,
                   result["down_bytes"] / 2**20, note)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def markdown(table: pd.DataFrame) -> str:
    """A GitHub table (pandas' to_markdown needs tabulate, which the venv does not carry)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def ratios(table: pd.DataFrame) -> list[str]:
    """The issue's goals as ratios measured in this one run."""
    def cell(system: str, mode: str, col: str) -> float | None:
        rows = table[(table.system == system) & (table["mode"] == mode)]
        return None if rows.empty else float(rows[col].iloc[0])

    lines = []
    for col, goal in (("steady_round_s", 0.6), ("whole_job_s", 1.0)):
        ours, theirs = cell("medsyft", "plaintext", col), cell("Flower", "simulation", col)
        if ours and theirs:
            lines.append(f"medsyft / Flower {col}: {ours / theirs:.2f} (goal <= {goal})")
    ours = cell("medsyft", "BFV HE", "up_MB")
    theirs = cell("NVIDIA FLARE", "CKKS HE, real processes", "up_MB")
    if ours and theirs:
        lines.append(f"medsyft BFV / NVIDIA FLARE CKKS bytes up: {ours / theirs:.3f} (goal <= 0.1)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "pneumoniamnist.npz")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated from {SYSTEMS}")
    parser.add_argument("--he", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the encrypted jobs (medsyft BFV, NVIDIA FLARE CKKS; default on)")
    parser.add_argument("--venvs", type=Path, default=Path.home() / ".cache" / "medsyft-peers")
    parser.add_argument("--out", type=Path, default=Path("/tmp/medsyft-peers"))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per peer run")
    args = parser.parse_args()
    systems = args.systems.split(",")
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or not args.source.is_file():
        parser.error(f"unknown systems {unknown}; choose from {SYSTEMS}" if unknown else
                     f"--source {args.source} is not a file; give a MedMNIST .npz with a test split")
    source = args.source.resolve()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    job = bundle.Job(rounds=args.rounds)

    def log(line: str) -> None:
        print(line, flush=True)

    log(f"job: {job}")
    runs = [run for run in PEER_RUNS if run[0] in systems and (args.he or "HE" not in run[2])]
    needed = sorted({key.split("-")[0] for key, *_ in runs})
    with ThreadPoolExecutor(max(1, len(needed))) as pool:  # before any timing: installs load the CPUs
        pythons = dict(zip(needed, pool.map(lambda peer: ensure_venv(args.venvs, peer, log), needed),
                           strict=True))
    skipped = [f"{peer}: could not be installed" for peer, python in pythons.items() if python is None]
    rows: list[Outcome] = []
    initial: dict[str, Any] = {}
    if "medsyft" in systems:
        for he in ([False, True] if args.he else [False]):
            log(f"medsyft {'BFV HE' if he else 'plaintext'} ...")
            row, first = run_medsyft(source, job, he, out / f"medsyft-{'he' if he else 'plain'}")
            initial = initial or first
            rows.append(row)
            log(f"  {row}")
    expected = bundle.initial_weights(source, job)
    if initial and any(not np.array_equal(initial[k], expected[k]) for k in expected):
        raise SystemExit("the bundle's initial weights differ from medsyft's round 0: "
                         "fix bundle.initial_weights")
    folder = bundle.write(out / "bundle", source, job, expected)
    log(f"bundle: {folder}")
    for key, system, mode, script, extra in runs:
        python = pythons[key.split("-")[0]]
        if python is None:
            continue
        log(f"{system} {mode} ...")
        run_out = out / f"{key}{'-he' if '--he' in extra else ''}"
        try:
            row = run_peer(python, script, ["--bundle", str(folder), *extra], run_out, source, mode, system,
                           args.timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log(f"  {system} {mode} failed ({exc}); see {run_out}.log")
            skipped.append(f"{system} {mode}: failed, see {run_out}.log")
            continue
        rows.append(row)
        log(f"  {row}")
    table = pd.DataFrame([vars(r) for r in rows])
    table.to_csv(out / "peers.csv", index=False)
    (out / "skipped.json").write_text(json.dumps(skipped) + "\n")
    text = (markdown(table) + "\n\n" + "\n".join(ratios(table)) + "\n"
            + "".join(f"skipped: {line}\n" for line in skipped))
    (out / "peers.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
